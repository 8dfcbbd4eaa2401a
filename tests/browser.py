"""Real Chromium (Debian's package, driven by Playwright) for the dashboard tests.

The fixtures (`browser`, `page`, `console`) are in conftest.py; a page fails its test on a
console error or an uncaught page error, except those a test says it expects (`allow`).
Screenshots go to artifacts/ (git-ignored).
"""

from __future__ import annotations

import re
import shutil
import time
from typing import Any

from playwright.sync_api import ConsoleMessage, Page

from .harness import ROOT, ServerProcess, http

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "artifacts"
WAIT_MS = 15_000
# What Chromium logs for each refused reconnect while the server is down (restart tests only).
WS_REFUSED = re.compile(r"^WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws' failed")


class Console:
    """Console errors and uncaught exceptions of one page; `allow` names the expected ones."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")

    def allow(self, pattern: re.Pattern[str]) -> None:
        self.allowed.append(pattern)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


def post_run(server: ServerProcess, workflow: str, input: Any) -> dict[str, Any]:
    status, run = http("POST", server.http_url + "/api/runs", {"workflow": workflow, "input": input})
    assert status == 202, run
    return dict(run)


def get_run(server: ServerProcess, run_id: str) -> dict[str, Any]:
    status, run = http("GET", f"{server.http_url}/api/runs/{run_id}")
    assert status == 200, run
    return dict(run)


def wait_status(server: ServerProcess, run_id: str, statuses: set[str], timeout: float = 15) -> dict[str, Any]:
    """Poll the run over HTTP until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while (run := get_run(server, run_id))["status"] not in statuses:
        assert time.monotonic() < deadline, f"run {run_id} is still {run['status']}, not {statuses}"
        time.sleep(0.02)
    return run


def wait_finished(server: ServerProcess, run_id: str, timeout: float = 15) -> dict[str, Any]:
    return wait_status(server, run_id, {"completed", "failed", "cancelled"}, timeout)
