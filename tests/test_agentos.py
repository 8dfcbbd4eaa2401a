"""Contract 10: `/workflows/ws` speaks Agno's AgentOS protocol. The clients here are written
to the shapes AgentOS's own code and cookbook clients use (`start-workflow`, `reconnect`
with `last_event_index`, `continue-workflow`; `catch_up`, `replay`, `subscribed`,
`event_index`), against a real runcast, with a kill -9 between disconnect and reconnect,
and through the other node of a two-node cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from .harness import BACKENDS, ServerProcess

both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)
FLOWS = str(Path(__file__).with_name("flows.py"))
ENDS = ("WorkflowCompleted", "WorkflowError", "WorkflowCancelled")


def agentos_url(server: ServerProcess) -> str:
    return server.url.removesuffix("/ws") + "/workflows/ws"


class AgnoClient:
    """What an AgentOS WebSocket client does: read frames as JSON, send actions."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, server: ServerProcess) -> AgnoClient:
        client = cls(await websockets.connect(agentos_url(server)))
        hello = await client.next()
        assert hello["event"] == "connected" and isinstance(hello["requires_auth"], bool), hello
        return client

    async def send(self, **action: Any) -> None:
        await self.ws.send(json.dumps(action))

    async def next(self, timeout: float = 15) -> dict[str, Any]:
        message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.received.append(message)
        return dict(message)

    async def until(self, stop: Callable[[dict[str, Any]], bool], count: int = 100_000) -> list[dict[str, Any]]:
        got = []
        while len(got) < count:
            message = await self.next()
            got.append(message)
            if stop(message):
                break
        return got

    async def close(self) -> None:
        await self.ws.close()


def indexes(events: list[dict[str, Any]]) -> list[int]:
    return [e["event_index"] for e in events if "event_index" in e]


@both_backends
async def test_an_agno_client_reconnects_after_a_kill_and_misses_nothing(
    new_server: Callable[..., ServerProcess],
) -> None:
    server = new_server("--workflows", FLOWS).start()
    try:
        first = await AgnoClient.connect(server)
        await first.send(
            action="start-workflow", workflow_id="count", message={"n": 40, "delay": 0.05}, session_id="s1"
        )
        seen = await first.until(lambda m: m.get("event") in ENDS, count=20)
        run_id = next(m["run_id"] for m in seen if "run_id" in m)
        assert seen[0]["event"] == "WorkflowStarted" and seen[0]["workflow_id"] == "count"
        assert indexes(seen) == list(range(20))
        last = seen[-1]["event_index"]
        await first.close()
        server.kill()  # kill -9 between the disconnect and the reconnect
        server.start()
        again = await AgnoClient.connect(server)
        await again.send(action="reconnect", run_id=run_id, last_event_index=last, workflow_id="count", session_id="s1")
        rest = await again.until(lambda m: m.get("event") in ENDS)
        kinds = [m["event"] for m in rest if "event_index" not in m]
        assert kinds in (["catch_up", "subscribed"], ["replay"], ["subscribed"]), kinds
        assert indexes(rest) == list(range(last + 1, last + 1 + len(indexes(rest)))), indexes(rest)  # once each, no gap
        assert rest[-1]["event"] == "WorkflowCompleted" and rest[-1]["content"] == {"count": 40}
        assert all(m["run_id"] == run_id for m in rest if m.get("event", "").startswith(("Workflow", "Step")))
        # A finished run replays what is after last_event_index, from the store.
        await again.send(action="reconnect", run_id=run_id, last_event_index=5)
        replay = await again.until(lambda m: m.get("event") in ENDS)
        assert replay[0]["event"] == "replay" and replay[0]["status"] == "COMPLETED"
        assert replay[0]["total_events"] == rest[-1]["event_index"] + 1
        assert indexes(replay) == list(range(6, rest[-1]["event_index"] + 1))
        await again.close()
    finally:
        server.stop()


async def test_an_agno_client_reconnects_through_the_other_node(postgres: Any, tmp_path: Path) -> None:
    url = postgres.new_database()
    flags = ("--workflows", FLOWS, "--takeover-seconds", "1")
    a, b = (ServerProcess.node(url, tmp_path, name, *flags).start() for name in ("a", "b"))
    try:
        first = await AgnoClient.connect(a)
        await first.send(action="start-workflow", workflow_id="count", message={"n": 40, "delay": 0.05})
        seen = await first.until(lambda m: m.get("event") in ENDS, count=20)
        run_id, last = seen[0]["run_id"], seen[-1]["event_index"]
        await first.close()
        a.kill()  # its runs go on on b after a takeover
        other = await AgnoClient.connect(b)
        await other.send(action="reconnect", run_id=run_id, last_event_index=last)
        rest = await other.until(lambda m: m.get("event") in ENDS)
        assert indexes(rest) == list(range(last + 1, last + 1 + len(indexes(rest))))
        assert rest[-1]["event"] == "WorkflowCompleted"
        await other.close()
    finally:
        a.stop()
        b.stop()


async def test_tokens_pings_questions_answers_and_errors(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "os.db", "--workflows", FLOWS, "--token", "s3cret").start()
    try:
        client = AgnoClient(await websockets.connect(agentos_url(server)))
        hello = await client.next()
        assert hello["requires_auth"] is True
        await client.send(action="ping")
        assert (await client.next())["event"] == "auth_required"
        await client.send(action="authenticate", token="wrong")
        assert (await client.next())["event"] == "auth_error"
        await client.send(action="authenticate", token="s3cret")
        assert (await client.next())["event"] == "authenticated"
        await client.send(action="ping")
        assert (await client.next()) == {"event": "pong"}
        await client.ws.send("{not json")
        assert (await client.next())["event"] == "error"
        await client.send(action="start-workflow", workflow_id="no-such-thing", message=None)
        missing = await client.next()
        assert missing["event"] == "error" and "no-such-thing" in missing["error"] and "count" in missing["error"]
        await client.send(action="start-workflow", workflow_id="approve", message="the launch")
        paused = (await client.until(lambda m: m.get("event") == "StepPaused"))[-1]
        assert paused["requires_user_input"] is True and paused["user_input_message"] == "Publish this?"
        need = {"step_id": paused["step_id"], "step_name": "approve", "user_input": {"ok": True}}
        await client.send(
            action="continue-workflow", workflow_id="approve", run_id=paused["run_id"], step_requirements=[need]
        )
        done = await client.until(lambda m: m.get("event") in ENDS)
        assert done[-1]["event"] == "WorkflowCompleted" and done[-1]["content"] == {"ok": True, "topic": "the launch"}
        assert "StepContinued" in [m["event"] for m in done]
        assert indexes(client.received) == sorted(set(indexes(client.received)))  # in order, once each
        await client.close()
    finally:
        server.stop()


async def test_the_agentos_door_keeps_runcast_s_rules(tmp_path: Path) -> None:
    """Origins are checked, and --starts-per-second and --max-connections hold, as on /ws."""
    flags = ("--workflows", FLOWS, "--starts-per-second", "2", "--max-connections", "2")
    server = ServerProcess(tmp_path / "rules.db", *flags).start()
    try:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(agentos_url(server), origin=websockets.Origin("https://elsewhere.example"))
        assert refused.value.response.status_code == 403
        client = await AgnoClient.connect(server)
        for _ in range(6):
            await client.send(action="start-workflow", workflow_id="echo", message=1)
        errors = await client.until(
            lambda m: m.get("event") == "error" and "starts per second" in m["error"], count=200
        )
        assert errors[-1]["event"] == "error"
        await client.close()
    finally:
        server.stop()
