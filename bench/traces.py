"""What traces cost (issue 25 §2): runs/s of short runs with tracing off, against on
(exporting every span over OTLP/HTTP to a receiver in this process), in the same run.

    .venv/bin/python bench/traces.py [--runs 2000] [--rounds 3]      # ~30 s

Each measurement is a fresh process on a fresh SQLite file (`server.runtime.Runtime`,
engine.start then engine.wait for every run of a 3-step workflow of plain function steps),
after a warm-up; rounds alternate off and on. "On" exports to a local OTLP/HTTP receiver
that reads and answers each request (no decoding), with the SDK's default batch processor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import median

from common import ROOT  # noqa: F401 - puts this checkout first on sys.path


def receiver() -> str:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


async def child(runs: int, traced: bool) -> None:
    from server import Runtime, Settings, Step, Workflow, tracing

    if traced:
        tracing.start()
    chain = Workflow("chain3", [Step(f"s{i}", lambda si, i=i: i) for i in range(1, 4)])
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Runtime(str(Path(tmp) / "t.db"), [chain], Settings())
        await runtime.open()
        for _ in range(2):  # warm-up, then the measure
            began = time.perf_counter()
            ids = []
            for i in range(0, runs, 250):
                started = await asyncio.gather(
                    *(runtime.engine.start("chain3", n) for n in range(i, min(runs, i + 250)))
                )
                ids += [run["run_id"] for run, _ in started]
            await asyncio.gather(*(runtime.engine.wait(r) for r in ids))
            rate = runs / (time.perf_counter() - began)
        await runtime.close()
    tracing.stop()
    print(f"{rate:.1f}")


def measure(runs: int, traced: bool, endpoint: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if traced:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    cmd = [sys.executable, __file__, "--child", "on" if traced else "off", "--runs", str(runs)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["on", "off"])
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.runs, args.child == "on"))
        return
    endpoint = receiver()
    off, on = [], []
    for _ in range(args.rounds):
        off.append(measure(args.runs, False, endpoint))
        on.append(measure(args.runs, True, endpoint))
    ratios = [b / a for a, b in zip(off, on, strict=True)]
    print("| figure | tracing off | tracing on (OTLP/HTTP to a local receiver) | on / off |")
    print("|---|---|---|---|")
    shown = " ".join(f"{r:.2f}" for r in ratios)
    rates = f"{median(off):.0f} | {median(on):.0f}"
    print(f"| runs/s, {args.runs} runs of 3 steps | {rates} | {median(ratios):.2f}x ({shown}) |")


if __name__ == "__main__":
    main()
