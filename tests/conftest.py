from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import pg
from .harness import OPEN_CLIENTS, ServerProcess
from .pg import Postgres

JS_DIR = Path(__file__).resolve().parent.parent / "js"


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    """Every test's sockets are closed after it, whatever it did."""
    yield
    while OPEN_CLIENTS:
        client = OPEN_CLIENTS.pop()
        with contextlib.suppress(Exception):
            await client.ws.close()


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """The database the servers of a test run on: "sqlite" unless parametrized with
    harness.BACKENDS (`pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")`)."""
    return str(getattr(request, "param", "sqlite"))


def server_on(backend: str, request: pytest.FixtureRequest, folder: Path, *args: str) -> ServerProcess:
    """A server (not started) on a fresh database: a SQLite file in `folder`, or a new database
    on the session's PostgreSQL with a fixed --node-id (so that a restart takes its runs back)."""
    if backend == "sqlite":
        return ServerProcess(folder / "runcast.db", *args)
    postgres: Postgres = request.getfixturevalue("postgres")
    return ServerProcess.node(postgres.new_database(), folder, "n1", *args)


@pytest.fixture
def new_server(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., ServerProcess]:
    """`new_server(*flags)`: a server (not started) on a fresh database of the test's backend."""
    return lambda *args: server_on(backend, request, tmp_path, *args)


@pytest.fixture
def server(new_server: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    """A fresh real server (uvicorn, SQLite file or PostgreSQL) on a free port, stopped after the test."""
    proc = new_server().start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright, for one test module. In CI it must be there
    (`make browser` installs it); only elsewhere may the dashboard tests skip."""
    from playwright.sync_api import sync_playwright

    from .browser import CHROMIUM, CHROMIUM_ARGS

    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no chromium executable on PATH; in CI, make test must install it (make browser)")
        pytest.skip("no chromium executable on PATH: install Debian's chromium (make browser)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console() -> Any:
    from .browser import Console

    return Console()


@pytest.fixture
def page(browser: Any, console: Any) -> Iterator[Any]:
    """A fresh browser tab; its test fails on any console or page error it did not expect."""
    from .browser import WAIT_MS

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    yield page
    context.close()
    assert console.unexpected() == [], "errors in the browser console"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One throwaway PostgreSQL server for the session (see tests/pg.py). In CI it must be
    there: `make test` installs it; only elsewhere may these tests skip."""
    if not pg.available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed; in CI, make test must install it")
        pytest.skip("PostgreSQL is not installed (make test installs Debian's postgresql when root)")
    # Not under pytest's temp folder: that one is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="runcast-pg-"))
    server = Postgres(base).start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """A fresh database on the session's PostgreSQL, for one test."""
    return postgres.new_database()


@pytest.fixture(scope="session")
def node() -> str:
    """Node, with js/'s npm packages installed (ws, and esbuild, React and TypeScript for the
    tests). In CI it must be there: make test installs it (make node)."""
    found = shutil.which("node")
    if found is None or shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no node or npm on PATH; in CI, make test must install them (make node)")
        pytest.skip("Node is not installed")
    if not (JS_DIR / "node_modules" / "esbuild").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR, check=True)
    return found
