"""End-to-end fuzzing: hundreds of malformed frames while a run streams to a bystander."""

from __future__ import annotations

import json
import random
from typing import Any

import websockets

from .harness import Client, ServerProcess, assert_log

TYPES = ["start", "subscribe", "unsubscribe", "poll", "cancel", "list_workflows", "list_runs", "ping", "auth", "zap"]
FIELDS = ["workflow", "input", "run_id", "after", "limit", "before", "status", "subscribe", "batch", "token", "id"]


def odd_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice([None, True, False, 0, -1, 2**70, 1e308, -0.0])
    if kind == 1:
        return "".join(
            chr(rng.choice([0, 0x7F, 0x85, 0x2028, 0xFEFF, 0x1F600, rng.randrange(32, 0xD7FF)])) for _ in range(8)
        )
    if kind == 2:
        return "x" * rng.choice([0, 1, 65, 10_000])
    if kind == 3 and depth < 4:
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 4 and depth < 4:
        return {rng.choice([*FIELDS, "", "ü"]): odd_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if kind == 5:
        return rng.choice(["../../etc", "a" * 65, "id with space", "ok-id", "中文"])
    return rng.randrange(-5, 5)


def bad_frame(rng: random.Random) -> str | bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 50)))
    if kind == 1:
        return "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(1, 40)))  # text, rarely JSON
    if kind == 2:
        return "[" * rng.choice([10, 5000, 100_000]) + "]" * rng.choice([0, 10])  # deep nesting
    if kind == 3:
        return '{"type": "ping", "id": "\\ud800"}'  # a lone surrogate
    if kind == 4:
        return json.dumps(odd_value(rng))
    message = {"type": rng.choice(TYPES)}
    for _ in range(rng.randrange(5)):
        message[rng.choice(FIELDS)] = odd_value(rng)
    message.pop("subscribe", None)  # a valid start would subscribe this client: keep replies simple
    return json.dumps(message)


async def test_malformed_frames_get_errors_and_the_bystander_is_untouched(server: ServerProcess) -> None:
    rng = random.Random(20261125)
    bystander = await Client.connect(server.url)
    run_id = await bystander.start("count", {"n": 400, "delay": 0.005})
    fuzzer = await Client.connect(server.url)
    answered = closes = 0
    for i in range(400):
        frame = bad_frame(rng)
        await fuzzer.send(frame)
        await fuzzer.send({"type": "ping", "id": f"probe-{i}"})
        try:
            while True:  # every frame gets its replies; the probe's pong comes last
                reply = await fuzzer.next()
                if reply.get("id") == f"probe-{i}":
                    assert reply["type"] == "pong", reply
                    break
                assert reply["type"] in {
                    "error",
                    "started",
                    "subscribed",
                    "unsubscribed",
                    "run",
                    "runs",
                    "workflows",
                    "cancel_requested",
                    "authed",
                    "pong",
                    "event",
                    "events",
                }, reply
                if reply["type"] == "error":
                    assert reply["code"] and reply["message"], reply
                    answered += 1
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code in (1008, 1009), exc
            closes += 1
            fuzzer = await Client.connect(server.url)
    assert answered > 250, answered
    events = await bystander.until_terminal(run_id, timeout=60)
    assert_log(events)
    assert [e["data"]["current"] for e in events if e["event"] == "progress"] == list(range(1, 401))
    assert (await bystander.request({"type": "ping"}))["type"] == "pong"
