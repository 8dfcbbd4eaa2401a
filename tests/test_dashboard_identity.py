"""Who may do what, in real Chromium: a tab signed in from its address sees only what its
identity reaches, and a page from another origin can start, read, cancel and answer
nothing (contract 7.1, 7.3)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from playwright.sync_api import Page, expect

from .browser import Console
from .harness import ServerProcess, http

SECRET = "d" * 40
ASK_FLOWS = Path(__file__).with_name("ask_flows.py")


@pytest.fixture(autouse=True)
def close_clients() -> None:
    """No harness Clients here (sync Playwright; see test_dashboard.py)."""


def token(sub: str, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + 300), **claims}, SECRET, algorithm="HS256")


def start(server: ServerProcess, tok: str, workflow: str, input: Any) -> str:
    status, run = http(
        "POST",
        server.http_url + "/api/runs",
        {"workflow": workflow, "input": input},
        {"Authorization": f"Bearer {tok}"},
    )
    assert status == 202, run
    return str(run["run_id"])


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[ServerProcess]:
    """Requested before `page`, so it outlives the page."""
    with ServerProcess(tmp_path / "who.db", "--auth-secret", SECRET, "--workflows", str(ASK_FLOWS)) as server:
        yield server


def test_a_tab_signs_in_from_its_address_and_sees_only_its_runs(signed: ServerProcess, page: Page) -> None:
    alice, bob = token("alice"), token("bob")
    mine = start(signed, alice, "echo", {"who": "alice"})
    start(signed, bob, "echo", {"who": "bob"})
    page.goto(f"{signed.http_url}/#token={alice}")
    expect(page.locator("#identity")).to_have_text("Signed in as alice")
    expect(page.locator("#runs-body tr")).to_have_count(1)
    expect(page.locator(f'#runs-body tr[data-run-id="{mine}"]')).to_be_visible()
    assert "token" not in page.url  # taken out of the address at once
    assert page.evaluate("sessionStorage.getItem('runcast.token')") == alice


class _Blank(BaseHTTPRequestHandler):
    """Serves an empty page: another origin for the attacks to run from."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>elsewhere</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


# What a hostile page tries: a start, a read, a cancel and an answer over HTTP (text/plain,
# which a browser sends without asking first), and a start over /ws.
ATTACKS = """async ([target, run, req]) => {
  const results = {};
  async function attempt(name, path, body) {
    try {
      const r = await fetch(target + path, { method: body === undefined ? 'GET' : 'POST', body,
                                             headers: { 'Content-Type': 'text/plain' } });
      results[name] = 'read ' + r.status + ' ' + (await r.text());
    } catch (e) { results[name] = 'blocked'; }
  }
  await attempt('start', '/api/runs', JSON.stringify({ workflow: 'echo', input: 'evil' }));
  await attempt('list', '/api/runs');
  await attempt('cancel', `/api/runs/${run}/cancel`, '{}');
  await attempt('respond', `/api/runs/${run}/respond`, JSON.stringify({ request_id: req, value: { ok: true } }));
  results.ws = await new Promise((resolve) => {
    const ws = new WebSocket(target.replace('http', 'ws') + '/ws');
    ws.onmessage = () => ws.send(JSON.stringify({ type: 'start', workflow: 'echo', input: 'evil' }));
    ws.onclose = (e) => resolve('closed ' + e.code);
  });
  return results;
}"""


def test_a_page_from_another_origin_can_do_nothing(tmp_path: Path, page: Page, console: Console) -> None:
    with ServerProcess(tmp_path / "open.db", "--workflows", str(ASK_FLOWS)) as server:
        status, waiting = http("POST", server.http_url + "/api/runs", {"workflow": "approval", "input": {}})
        assert status == 202
        run_id = waiting["run_id"]
        request_id = _wait_for_request(server, run_id)
        elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), _Blank)
        threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
        console.allow(re.compile(r"CORS|Failed to load resource|WebSocket|net::ERR_FAILED|403"))
        try:
            page.goto(f"http://127.0.0.1:{elsewhere.server_address[1]}/")
            results = page.evaluate(ATTACKS, [server.http_url, run_id, request_id])
        finally:
            elsewhere.shutdown()
            elsewhere.server_close()
        assert results["ws"].startswith("closed") and results["ws"] != "closed 1000", results
        for name in ("start", "list", "cancel", "respond"):
            assert results[name] == "blocked", results  # nothing readable came back
        _, runs = http("GET", server.http_url + "/api/runs")
        assert [r["run_id"] for r in runs["runs"]] == [run_id]  # nothing was started
        _, run = http("GET", f"{server.http_url}/api/runs/{run_id}")
        assert run["status"] == "waiting" and run["waiting_for"][0]["request_id"] == request_id  # nor answered


def _wait_for_request(server: ServerProcess, run_id: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, run = http("GET", f"{server.http_url}/api/runs/{run_id}")
        if run.get("waiting_for"):
            return str(run["waiting_for"][0]["request_id"])
        time.sleep(0.05)
    raise AssertionError("the run never asked")
