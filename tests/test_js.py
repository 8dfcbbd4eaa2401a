"""The JavaScript client (js/, `runcast-client`): its own tests (`node --test js/tests/`)
against real servers, run from here so that they get this session's throwaway PostgreSQL
for the cluster case. In CI, Node must be there (make test installs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .harness import ServerProcess
from .pg import Postgres

JS = Path(__file__).resolve().parent.parent / "js"


def test_the_javascript_client_against_real_servers(node: str, postgres: Postgres) -> None:
    env = {**os.environ, "RUNCAST_PYTHON": sys.executable, "RUNCAST_TEST_PG": postgres.new_database()}
    done = subprocess.run([node, "--test", "tests/"], cwd=JS, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    summary = done.stdout[-2000:]
    assert "# fail 0" in summary and "# pass 10" in summary and "# skipped 0" in summary, summary


def test_the_type_declarations_describe_the_api(node: str) -> None:
    """js/tests/typed-example.ts uses every call of the package; tsc --strict accepts it."""
    tsc = JS / "node_modules" / ".bin" / "tsc"
    flags = ["--noEmit", "--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext"]
    done = subprocess.run(
        [str(tsc), *flags, "--skipLibCheck", "tests/typed-example.ts"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_npm_pack_makes_a_package_a_new_project_can_use(node: str, tmp_path: Path) -> None:
    """The README's Node quick start, as a new user runs it: npm pack, npm install the
    tarball in an empty project, import `runcast-client`, start a run and read its events."""
    packed = subprocess.run(
        ["npm", "pack", "--pack-destination", str(tmp_path), "--loglevel=error"],
        cwd=JS,
        capture_output=True,
        text=True,
        check=True,
    )
    tarball = tmp_path / packed.stdout.strip().splitlines()[-1]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}')
    install = ["npm", "install", str(tarball), "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"]
    subprocess.run(install, cwd=app, check=True, timeout=120)
    quick_start = """
        import { RuncastClient } from "runcast-client";
        const client = new RuncastClient(process.argv[1]);
        const run = await client.start("count", { n: 5 });
        for await (const event of client.events(run.run_id)) console.log(event.seq, event.event);
        client.close();
    """
    with ServerProcess(tmp_path / "pack.db") as server:
        done = subprocess.run(
            [node, "--input-type=module", "-e", quick_start, server.url], cwd=app, capture_output=True, text=True
        )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "1 run_started" and lines[-1].endswith("run_completed"), lines


def test_the_dashboard_speaks_only_through_the_package() -> None:
    """One implementation of reconnecting and resume: no page script opens a socket or follows
    a run's events itself; the dashboard imports the package's client from /js/."""
    static = JS.parent / "static"
    for script in static.glob("*.js"):
        text = script.read_text()
        for own in ("new WebSocket", "'subscribe'", '"subscribe"', "type: 'auth'"):
            assert own not in text, f"{script.name} has its own {own}"
    assert "from '/js/client.js'" in (static / "app.js").read_text()
