"""Figure A: what identities cost (contract 7.2), beside the same figures without them.

    .venv/bin/python bench/auth.py [--quick] [--json PATH]

Two servers on fresh SQLite files in the same run: one with `--auth-secret` (each client a
signed token, HS256), one without tokens. On each, 2,000 runs of `echo` by 4 owners.
- A1: connect to /ws and be ready to send: with a signed token in the handshake's
  Authorization header (checked by PyJWT) vs no token at all; p50 of 300 connects.
- A2: one `list_runs` page of 50: as an owner (the `started_by` filter, its index) vs
  the whole table on the open server; p50 of 300 calls.
- A3: the runs feed: 4 owners start 200 runs; one owner's runs seen completed by a watcher
  whose feed shows that owner's runs only vs, on the open server, every run; runs/s.
- A4: `poll` of a run another owner has (answered `run_not_found`) vs `poll` of a run id
  that does not exist, on the signed server: an identity must not learn which runs exist
  from how long the answer takes; p50 of 300 each, interleaved.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from statistics import median

import jwt
import orjson
import websockets
from common import WS_KW, Report, Row, env_note, parser, run_script, start_runcast

SECRET = "b" * 40
OWNERS = ("alice", "bob", "carol", "dave")


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + 3600)}, SECRET, algorithm="HS256")


async def connect(url: str, tok: str | None) -> websockets.ClientConnection:
    headers = {"Authorization": f"Bearer {tok}"} if tok else None
    ws = await websockets.connect(url, additional_headers=headers, **WS_KW)
    await ws.recv()  # welcome
    if tok:
        await ws.recv()  # authed
    return ws


async def request(ws: websockets.ClientConnection, message: dict[str, object]) -> dict[str, object]:
    await ws.send(orjson.dumps(message).decode())
    while True:
        reply = orjson.loads(await ws.recv())
        if reply.get("id") == message.get("id"):
            return dict(reply)


async def connects(url: str, tok: str | None, n: int) -> float:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        ws = await connect(url, tok)
        times.append(time.perf_counter() - began)
        await ws.close()
    return median(times) * 1000


async def fill(url: str, toks: dict[str, str | None], runs: int) -> None:
    sockets = {sub: await connect(url, tok) for sub, tok in toks.items()}
    for i in range(runs):
        ws = sockets[OWNERS[i % len(OWNERS)]]
        await request(ws, {"type": "start", "workflow": "echo", "input": i, "subscribe": False, "id": i})
    for ws in sockets.values():
        await ws.close()


async def lists(url: str, tok: str | None, n: int) -> float:
    ws = await connect(url, tok)
    times = []
    for i in range(n):
        began = time.perf_counter()
        reply = await request(ws, {"type": "list_runs", "limit": 50, "id": i})
        times.append(time.perf_counter() - began)
        assert reply["type"] == "runs", reply
    await ws.close()
    return median(times) * 1000


async def polls(url: str, tok: str, theirs: str, n: int) -> tuple[float, float]:
    """p50 ms of polling another owner's run, and of polling an id nobody has (interleaved)."""
    ws = await connect(url, tok)
    times: dict[str, list[float]] = {"theirs": [], "unknown": []}
    for i in range(n):
        for kind, run_id in (("theirs", theirs), ("unknown", f"no-such-run-{i}")):
            began = time.perf_counter()
            reply = await request(ws, {"type": "poll", "run_id": run_id, "id": f"{kind}{i}"})
            times[kind].append(time.perf_counter() - began)
            assert reply.get("code") == "run_not_found", reply
    await ws.close()
    return median(times["theirs"]) * 1000, median(times["unknown"]) * 1000


async def feed(url: str, toks: dict[str, str | None], runs: int, watcher: str) -> float:
    """Runs/s of one owner's runs seen completed through a runs feed, while 4 owners start runs:
    the feed shows that owner's runs only (signed tokens), or every run (no tokens)."""
    watch = await connect(url, toks[watcher])
    await request(watch, {"type": "subscribe_runs", "id": "w"})
    starters = {sub: await connect(url, tok) for sub, tok in toks.items()}
    mine = set()
    began = time.perf_counter()
    for i in range(runs):
        sub = OWNERS[i % len(OWNERS)]
        reply = await request(starters[sub], {"type": "start", "workflow": "echo", "subscribe": False, "id": i})
        if sub == watcher:
            mine.add(reply["run"]["run_id"])  # type: ignore[index]
    done: set[str] = set()
    while not mine <= done:
        frame = orjson.loads(await watch.recv())
        run = frame.get("run") or {}
        if frame.get("type") == "run_changed" and run.get("status") == "completed":
            done.add(run["run_id"])
    seconds = time.perf_counter() - began
    for ws in (watch, *starters.values()):
        await ws.close()
    return len(mine) / seconds


async def main(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    n, runs, feed_runs = (50, 200, 40) if args.quick else (300, 2000, 200)
    signed = await start_runcast(
        workdir, "auth-signed", "--auth-secret", SECRET, "--connections-per-identity", "100000"
    )
    open_ = await start_runcast(workdir, "auth-open")
    signed_toks: dict[str, str | None] = {sub: token(sub) for sub in OWNERS}
    open_toks: dict[str, str | None] = dict.fromkeys(OWNERS)
    try:
        await fill(signed.ws_url(), signed_toks, runs)
        await fill(open_.ws_url(), open_toks, runs)
        a1 = (await connects(signed.ws_url(), token("alice"), n), await connects(open_.ws_url(), None, n))
        a2 = (await lists(signed.ws_url(), token("alice"), n), await lists(open_.ws_url(), None, n))
        bobs = await connect(signed.ws_url(), token("bob"))
        theirs = await request(bobs, {"type": "start", "workflow": "echo", "subscribe": False, "id": "b"})
        await bobs.close()
        a4 = await polls(signed.ws_url(), token("alice"), str(theirs["run"]["run_id"]), n)  # type: ignore[index]
        a3 = (
            await feed(signed.ws_url(), signed_toks, feed_runs, "alice"),
            await feed(open_.ws_url(), open_toks, feed_runs, "alice"),
        )
    finally:
        signed.stop()
        open_.stop()
    report.rows.append(
        Row(
            "A1",
            "connect to /ws, ready: signed token checked (p50)",
            "ms",
            [a1[0]],
            "no token",
            [a1[1]],
            lower_is_better=True,
        )
    )
    report.rows.append(
        Row(
            "A2",
            "list_runs page of 50 as one owner of 4 (p50)",
            "ms",
            [a2[0]],
            "every run, no tokens",
            [a2[1]],
            lower_is_better=True,
        )
    )
    report.rows.append(
        Row(
            "A3",
            "runs feed: an owner's runs seen completed, 4 owners starting",
            "runs/s",
            [a3[0]],
            "every run, no tokens",
            [a3[1]],
        )
    )
    report.rows.append(
        Row(
            "A4",
            "poll of another owner's run (run_not_found, p50)",
            "ms",
            [a4[0]],
            "poll of an id nobody has",
            [a4[1]],
            lower_is_better=True,
        )
    )
    report.notes.append(f"figure A: {runs:,} runs by 4 owners on each server; {env_note()}")


if __name__ == "__main__":
    raise SystemExit(run_script("auth", parser(__doc__).parse_args(), main))
