"""Figure J: the JavaScript client (js/, runcast-client) in Node, beside a bare reader.

    .venv/bin/python bench/js.py [--quick] [--json PATH]

One server on a fresh SQLite file holds a finished `count` run of 50,000 events. J1: events/s
a Node process gets from `client.events(runId)` (parsing each frame, exactly-once checks, an
async iterator) against a bare `ws` socket in Node that subscribes with `batch: true` and
only counts, in the same run, three rounds each. J2: the memory (RSS growth) of one Node
process following 1,000 runs at once with events(), per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
from pathlib import Path

import websockets
from common import ROOT, WS_KW, Report, Row, env_note, parser, run_script, start_runcast

READER = ROOT / "js" / "tests" / "bench-reader.mjs"


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


async def main(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    events, follow, rounds = (5_000, 100, 1) if args.quick else (50_000, 1_000, 3)
    server = await start_runcast(workdir, "js", "--max-running", "2000")  # every followed run running
    try:
        url = server.ws_url()
        run_id = await start(url, "count", {"n": events, "delay": 0}, wait=True)
        client, bare = [], []
        for _ in range(rounds):
            got = await asyncio.to_thread(node, "client", url, run_id)
            client.append(got["events"] / got["seconds"])
            base = await asyncio.to_thread(node, "bare", url, run_id)
            bare.append(base["events"] / base["seconds"])
        sleepers = [await start(url, "sleep", {"seconds": 600}, wait=False) for _ in range(follow)]
        memory = await asyncio.to_thread(node, "many", url, ",".join(sleepers))
    finally:
        server.stop()
    what = f"events/s of one finished {events:,}-event run, to a Node consumer of client.events()"
    report.rows.append(Row("J1", what, "events/s", client, "a bare ws reader in Node, batch frames", bare))
    per_run = memory["rss_kb"] / memory["runs"]
    what = f"Node RSS per run, following {follow:,} runs at once (no baseline: the figure itself)"
    report.rows.append(Row("J2", what, "KiB", [per_run], "-", [per_run], lower_is_better=True))
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    report.notes.append(f"figure J: node {version}; {env_note()}")


if __name__ == "__main__":
    raise SystemExit(run_script("js", parser(__doc__).parse_args(), main))
