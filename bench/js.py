"""Figure J: the JavaScript client (js/, runcast-client) in Node, beside a bare reader.

    .venv/bin/python bench/js.py [--quick] [--json PATH]

One server on a fresh SQLite file holds a finished `count` run of 50,000 events. J1: events/s
a Node process gets from `client.events(runId)` (parsing each frame, exactly-once checks, an
async iterator) against a bare `ws` socket in Node that subscribes with `batch: true` and
only counts, in the same run, five rounds each after one to warm up; both clocks start
before connecting. J2:
the memory (RSS growth) of one Node process following 1,000 runs at once with events(), per
run. J3: as J1, in a page of headless Chromium (the system's) on the server's own origin:
the package imported from /js/client.js, beside the page's own bare WebSocket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import websockets
from common import ROOT, WS_KW, Report, Row, env_note, parser, run_script, start_runcast

READER = ROOT / "js" / "tests" / "bench-reader.mjs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]

# J3's two readers, run in the page (page.evaluate): each returns {events, seconds}.
PAGE_CLIENT = """async ([url, runId]) => {
  const { RuncastClient } = await import('/js/client.js');
  const began = performance.now();
  const client = new RuncastClient(url);
  let events = 0;
  for await (const event of client.events(runId)) events += event.seq > 0 ? 1 : 0;
  const seconds = (performance.now() - began) / 1000;
  client.close();
  return { events, seconds };
}"""
PAGE_BARE = """([url, runId]) => new Promise((resolve) => {
  const began = performance.now();
  const ws = new WebSocket(url);
  let events = 0;
  ws.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === 'welcome') {
      ws.send(JSON.stringify({ type: 'subscribe', run_id: runId, after: 0, batch: true, id: 1 }));
    } else if (frame.type === 'events') {
      events += frame.events.length;
      if (frame.events.some((e) => e.event === 'run_completed')) {
        ws.close();
        resolve({ events, seconds: (performance.now() - began) / 1000 });
      }
    }
  };
})"""


def node(*args: str) -> dict[str, float]:
    done = subprocess.run(["node", "--expose-gc", str(READER), *args], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def start(url: str, workflow: str, input: object, wait: bool) -> str:
    async with websockets.connect(url, **WS_KW) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "start", "workflow": workflow, "input": input, "subscribe": wait, "id": 1}))
        run_id = ""
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "started":
                run_id = frame["run"]["run_id"]
                if not wait:
                    return run_id
            if frame.get("event") == "run_completed":
                return run_id


async def in_chromium(http_url: str, url: str, run_id: str, rounds: int) -> tuple[list[float], list[float]]:
    """J3: events/s to the package in a page, and to the page's bare WebSocket, alternating."""
    from playwright.async_api import async_playwright

    client: list[float] = []
    bare: list[float] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(http_url + "/healthz")  # any page of the server's origin
            for round in range(rounds + 1):  # the first round warms up (module loaded, code compiled)
                for script, rates in ((PAGE_CLIENT, client), (PAGE_BARE, bare)):
                    got: dict[str, Any] = await page.evaluate(script, [url, run_id])
                    if round > 0:
                        rates.append(got["events"] / got["seconds"])
        finally:
            await browser.close()
    return client, bare


async def main(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    events, follow, rounds = (5_000, 100, 1) if args.quick else (50_000, 1_000, 5)
    server = await start_runcast(workdir, "js", "--max-running", "2000")  # every followed run running
    try:
        url = server.ws_url()
        run_id = await start(url, "count", {"n": events, "delay": 0}, wait=True)
        client, bare = [], []
        for round in range(rounds + 1):  # the first round warms up (the server's caches)
            got = await asyncio.to_thread(node, "client", url, run_id)
            base = await asyncio.to_thread(node, "bare", url, run_id)
            if round > 0:
                client.append(got["events"] / got["seconds"])
                bare.append(base["events"] / base["seconds"])
        page = await in_chromium(f"http://127.0.0.1:{server.port}", url, run_id, rounds) if CHROMIUM else None
        sleepers = [await start(url, "sleep", {"seconds": 600}, wait=False) for _ in range(follow)]
        memory = await asyncio.to_thread(node, "many", url, ",".join(sleepers))
    finally:
        server.stop()
    what = f"events/s of one finished {events:,}-event run, to a Node consumer of client.events()"
    report.rows.append(Row("J1", what, "events/s", client, "a bare ws reader in Node, batch frames", bare))
    per_run = memory["rss_kb"] / memory["runs"]
    what = f"Node RSS per run, following {follow:,} runs at once (no baseline: the figure itself)"
    report.rows.append(Row("J2", what, "KiB", [per_run], "-", [per_run], lower_is_better=True))
    if page is not None:
        what = "events/s of the same run to client.events() in a page of headless Chromium"
        report.rows.append(Row("J3", what, "events/s", page[0], "the page's own bare WebSocket, batch frames", page[1]))
    else:
        report.notes.append("figure J3 not measured: no chromium on PATH (make browser installs it)")
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    report.notes.append(f"figure J: node {version}; {env_note()}")


if __name__ == "__main__":
    raise SystemExit(run_script("js", parser(__doc__).parse_args(), main))
