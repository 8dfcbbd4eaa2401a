"""runcast-client in real Chromium, on a page of another origin that the server allows with
--allow-origin (contract 7.1, 9): the package's own files, no build step."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from .browser import Console
from .harness import ServerProcess, http

JS = Path(__file__).resolve().parent.parent / "js"

PAGE = """<!doctype html><title>an app</title><link rel="icon" href="data:,"><script type="module">
import { RuncastClient } from './index.js';
window.follow = async (url) => {
  const client = new RuncastClient(url);
  const run = await client.start('count', { n: 5, delay: 0.01 });
  const events = [];
  for await (const event of client.events(run.run_id)) events.push([event.seq, event.event]);
  client.close();
  return events;
};
window.ready = true;
</script>"""


@pytest.fixture(autouse=True)
def close_clients() -> None:
    """No harness Clients here (sync Playwright; see test_dashboard.py)."""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def app_origin(tmp_path: Path) -> Iterator[str]:
    """Another origin serving the package's files and a page that uses them."""
    site = tmp_path / "site"
    site.mkdir()
    for name in ("index.js", "client.js", "fold.js"):
        shutil.copy(JS / name, site / name)
    (site / "page.html").write_text(PAGE)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_package_in_a_page_of_an_allowed_origin(
    tmp_path: Path, app_origin: str, page: Page, console: Console
) -> None:
    with ServerProcess(tmp_path / "allowed.db", "--allow-origin", app_origin) as allowed:
        page.goto(f"{app_origin}/page.html")
        page.wait_for_function("window.ready === true")
        events = page.evaluate("url => window.follow(url)", allowed.url)
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    assert events[0][1] == "run_started" and events[-1][1] == "run_completed"
    with ServerProcess(tmp_path / "closed.db") as closed:  # the same page, an origin not allowed
        console.allow(re.compile(r"WebSocket|403"))
        refused = page.evaluate(
            """url => Promise.race([window.follow(url).then(() => 'served'),
                                    new Promise((resolve) => setTimeout(() => resolve('refused'), 1500))])""",
            closed.url,
        )
    assert refused == "refused"


def test_a_react_app_on_use_run_in_strict_mode_sees_each_event_once(
    tmp_path: Path, app_origin: str, page: Page, console: Console, node: str
) -> None:
    console.allow(re.compile(r"ERR_CONNECTION_REFUSED"))  # its client reconnects while the server stops
    site = Path(tmp_path / "site")
    esbuild = JS / "node_modules" / ".bin" / "esbuild"
    bundle = [str(esbuild), str(JS / "tests" / "react-app.jsx"), "--bundle", "--format=esm", "--log-level=error"]
    bundle += [
        f"--outfile={site / 'app.js'}",
        "--define:process.env.NODE_ENV='development'",
    ]  # StrictMode's double effects
    subprocess.run(bundle, check=True, timeout=120)
    page_html = '<!doctype html><link rel="icon" href="data:,"><div id="root"></div>'
    (site / "react.html").write_text(page_html + '<script type="module" src="app.js"></script>')
    with ServerProcess(tmp_path / "react.db", "--allow-origin", app_origin) as server:
        status, run = http(
            "POST", server.http_url + "/api/runs", {"workflow": "count", "input": {"n": 8, "delay": 0.05}}
        )
        assert status == 202
        page.goto(f"{app_origin}/react.html")
        page.wait_for_function("typeof window.show === 'function'")
        page.evaluate("([url, runId]) => window.show(url, runId)", [server.url, run["run_id"]])
        page.wait_for_function("window.state && window.state.status === 'completed'", timeout=15_000)
        time.sleep(0.2)  # anything doubled would have come by now
        state = page.evaluate("window.state")
    assert state["seqs"] == list(range(1, len(state["seqs"]) + 1)), state  # each event once, in order
    assert state["folded"] == "completed" and state["runs"] == 1, state
