"""docs/asyncapi.yaml describes /ws as the server speaks it.

- The AsyncAPI parser accepts the document (js/tests/asyncapi.mjs, in Node).
- Every frame any end-to-end test receives through tests/harness.Client is validated against
  it in Python (tests/frames.py); here a session that makes the server send every kind of
  frame it has is validated once more with ajv, in Node, and must meet them all.
- The TypeScript declarations (js/index.d.ts) name the fields the schemas name.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from . import frames
from .harness import ROOT, Client, ServerProcess

ASK_FLOWS = Path(__file__).with_name("ask_flows.py")


async def every_kind_of_frame(server: ServerProcess) -> list[dict[str, Any]]:
    """One admin session that makes the server send each frame the document describes."""
    c = await Client.connect(server.url)
    try:
        await c.request({"type": "auth", "token": "s3cret"})
        await c.request({"type": "ping"})
        await c.request({"type": "list_workflows"})
        await c.request({"type": "subscribe_runs"})
        counted = (await c.request({"type": "start", "workflow": "count", "input": {"n": 3, "delay": 0}}))["run"]
        await c.wait(lambda m: m.get("event") == "run_completed" and m["run_id"] == counted["run_id"])
        await c.request({"type": "subscribe", "run_id": counted["run_id"], "batch": True})
        await c.wait(lambda m: m["type"] == "events")
        await c.request({"type": "poll", "run_id": counted["run_id"]})
        await c.request({"type": "list_runs", "limit": 5})
        asked = (await c.request({"type": "start", "workflow": "approval", "input": {"topic": "x"}}))["run"]
        question = await c.wait(lambda m: m.get("event") == "input_requested")
        answer = {"run_id": asked["run_id"], "request_id": question["data"]["request_id"], "value": {"ok": True}}
        await c.request({"type": "respond", **answer})
        await c.wait(lambda m: m.get("event") == "run_completed" and m["run_id"] == asked["run_id"])
        sleeper = (await c.request({"type": "start", "workflow": "sleep", "input": {"seconds": 30}}))["run"]
        await c.request({"type": "cancel", "run_id": sleeper["run_id"]})
        await c.wait(lambda m: m.get("event") == "run_cancelled")
        await c.request({"type": "unsubscribe", "run_id": sleeper["run_id"]})
        await c.request({"type": "unsubscribe_runs"})
        await c.request({"type": "mint_token", "sub": "alice", "scope": "read", "ttl": 60})
        await c.request({"type": "create_schedule", "name": "yearly", "workflow": "echo", "cron": "0 0 1 1 *"})
        await c.request({"type": "list_schedules"})
        await c.request({"type": "delete_schedule", "name": "yearly"})
        await c.request({"type": "no_such_type"})
        for _ in range(12):  # --starts-per-second 5: the burst meets rate_limited
            await c.request({"type": "start", "workflow": "echo", "input": 1, "subscribe": False})
        await asyncio.sleep(0.2)
        return c.inbox
    finally:
        await c.close()


def test_the_server_sends_what_docs_asyncapi_yaml_describes(node: str, tmp_path: Path) -> None:
    flags = ("--token", "s3cret", "--auth-secret", "x" * 40, "--workflows", str(ASK_FLOWS), "--starts-per-second", "5")
    server = ServerProcess(tmp_path / "a.db", *flags).start()
    try:
        inbox = asyncio.run(every_kind_of_frame(server))
    finally:
        server.stop()
    welcome = {"type": "welcome", "protocol": 1, "server": "runcast/0.1.0"}  # Client.connect takes it
    sent = [welcome, *inbox]
    assert any(m["type"] == "error" and m["code"] == "rate_limited" and "retry_after" in m for m in sent)
    unmet = frames.server_types() - {m["type"] for m in sent}
    assert not unmet, f"frames of these kinds were not met: {unmet}"
    path = tmp_path / "frames.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in sent))
    done = subprocess.run(
        [node, "tests/asyncapi.mjs", str(frames.DOC), str(path)],
        cwd=ROOT / "js",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["checked"] == len(sent) and not report["errors"], report
    assert set(report["types"]) == frames.server_types()


def test_a_frame_the_document_does_not_describe_is_caught() -> None:
    """The check bites: an unknown type, a new field, a wrong value."""
    event = {"type": "event", "run_id": "r", "seq": 1, "event": "run_cancelled", "step": None}
    event |= {"ts": "2026-12-07T10:00:00.000Z", "data": {"by": None}}
    frames.check(event)
    for bad in (
        {"type": "hello"},
        {**event, "extra": 1},
        {**event, "seq": 0},
        {**event, "event": "run_exploded"},
        {**event, "data": {}},  # run_cancelled carries `by`
        {"type": "error", "code": "oops", "message": "m"},
    ):
        with pytest.raises(AssertionError):
            frames.check(bad)


def test_the_document_names_what_the_code_declares() -> None:
    """The messages the server parses, the event names, error codes and statuses: the same
    sets in docs/asyncapi.yaml as in server/ (protocol.py, vocabulary.py)."""
    import re

    from server.protocol import ErrorCode
    from server.vocabulary import Event, RunStatus, StepStatus

    spec = frames.document()
    received = {ref["$ref"].rsplit("/", 1)[-1] for ref in spec["operations"]["receiveClientMessages"]["messages"]}
    source = (ROOT / "server" / "protocol.py").read_text()
    build = source[source.index("def _build(") : source.index('raise RuncastError(f"unknown message type')]
    parsed = {name for case in re.findall(r"case ([^:]+):", build) for name in re.findall(r'"(\w+)"', case)}
    assert received == parsed
    schemas = spec["components"]["schemas"]
    assert set(schemas["EventName"]["enum"]) == {e.value for e in Event}
    assert set(schemas["ErrorCode"]["enum"]) == {c.value for c in ErrorCode}
    assert set(schemas["RunStatus"]["enum"]) == {s.value for s in RunStatus}
    assert set(schemas["StepStatus"]["enum"]) == {s.value for s in StepStatus}
