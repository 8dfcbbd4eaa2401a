"""People in the loop: steps that ask (`ctx.ask`), runs that wait holding nothing, and the
answers that come back over /ws and HTTP; on real servers and real sockets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server import Step, StepContext, StepInput, Workflow
from server.engine import Engine
from server.settings import Settings
from server.store.sqlite import SqliteStore

from .harness import BACKENDS, Client, ServerProcess, assert_log, events_over_http, http

FLOWS = str(Path(__file__).with_name("flows.py"))
both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")
NewServer = Callable[..., ServerProcess]


def asked(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "input_requested"]


async def waiting(c: Client, run_id: str, count: int = 1) -> dict[str, Any]:
    """The run's snapshot once its `count`-th request is there (the event is stored first)."""
    await c.wait(lambda m: m.get("run_id") == run_id and m.get("event") == "input_requested", timeout=15)
    for _ in range(count - 1):
        await c.wait(lambda m: m.get("run_id") == run_id and m.get("event") == "input_requested", timeout=15)
    run: dict[str, Any] = (await c.request({"type": "poll", "run_id": run_id}))["run"]
    return run


async def respond(c: Client, run_id: str, request_id: str, value: Any) -> dict[str, Any]:
    return await c.request({"type": "respond", "run_id": run_id, "request_id": request_id, "value": value})


@both_backends
async def test_an_async_step_asks_the_run_waits_and_an_answer_over_ws_finishes_it(new_server: NewServer) -> None:
    server = new_server("--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("approve", "AI trends")
        run = await waiting(c, run_id)
        request = asked(c.events(run_id))[0]
        assert request["step"] == "approve" and request["data"]["prompt"] == "Publish this?"
        assert request["data"]["schema"]["required"] == ["ok"]
        rid = request["data"]["request_id"]
        assert run["status"] == "waiting" and run["steps"][0]["status"] == "waiting"
        assert run["waiting_for"] == [{**request["data"], "step": "approve"}]
        listed = await c.request({"type": "list_runs", "status": "waiting"})
        assert [r["run_id"] for r in listed["runs"]] == [run_id]
        status, page = await asyncio.to_thread(http, "GET", server.http_url + "/api/runs?status=waiting")
        assert status == 200 and [r["run_id"] for r in page["runs"]] == [run_id]

        wrong = await respond(c, run_id, rid, {"ok": "yes"})
        assert wrong["type"] == "error" and wrong["code"] == "invalid_input", wrong
        assert "ok" in wrong["message"]
        assert (await c.request({"type": "poll", "run_id": run_id}))["run"]["status"] == "waiting"
        other = await respond(c, run_id, "no-such-request", {"ok": True})
        assert other["code"] == "conflict", other
        missing = await respond(c, "no-such-run", rid, {"ok": True})
        assert missing["code"] == "run_not_found", missing
        bad = await c.request({"type": "respond", "run_id": run_id, "request_id": rid})
        assert bad["code"] == "bad_request", bad

        answered = await respond(c, run_id, rid, {"ok": True})
        assert answered["type"] == "responded", answered
        assert answered["run"]["waiting_for"] == [] and answered["run"]["status"] in ("running", "completed")
        events = await c.until_terminal(run_id)
        assert_log(events)
        assert answered["run"]["last_seq"] == next(e["seq"] for e in events if e["event"] == "input_received")
        assert [e["event"] for e in events] == [
            "run_started",
            "step_started",
            "input_requested",
            "input_received",
            "step_completed",
            "run_completed",
        ]
        received = next(e for e in events if e["event"] == "input_received")
        assert (
            received["data"] == {"request_id": rid, "value": {"ok": True}, "by": None} and received["step"] == "approve"
        )
        assert events[-1]["data"]["output"] == {"ok": True, "topic": "AI trends"}
        again = await respond(c, run_id, rid, {"ok": False})
        assert again["code"] == "conflict", again
        final = (await c.request({"type": "poll", "run_id": run_id}))["run"]
        assert final["status"] == "completed" and final["waiting_for"] == []
        assert final["steps"][0]["status"] == "completed" and final["steps"][0]["attempts"] == 1
        assert events == await asyncio.to_thread(events_over_http, server.http_url, run_id)
    finally:
        server.stop()


async def test_a_plain_function_step_asks_and_is_answered_over_http(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("greet", None)
        run = await waiting(c, run_id)
        rid = run["waiting_for"][0]["request_id"]
        url = f"{server.http_url}/api/runs/{run_id}/respond"
        status, body = await asyncio.to_thread(http, "POST", url, {"request_id": rid, "value": 7})
        assert status == 422 and body["error"]["code"] == "invalid_input", body
        status, body = await asyncio.to_thread(http, "POST", url, {"request_id": "nope", "value": "Ada"})
        assert status == 409 and body["error"]["code"] == "conflict", body
        status, body = await asyncio.to_thread(
            http, "POST", f"{server.http_url}/api/runs/nope/respond", {"request_id": rid, "value": "Ada"}
        )
        assert status == 404 and body["error"]["code"] == "run_not_found", body
        status, body = await asyncio.to_thread(http, "POST", url, {"value": "Ada"})
        assert status == 400 and body["error"]["code"] == "bad_request", body
        status, body = await asyncio.to_thread(http, "POST", url, {"request_id": rid, "value": "Ada"})
        assert status == 200 and body["run_id"] == run_id and body["waiting_for"] == [], body
        events = await c.until_terminal(run_id)
        assert_log(events)
        assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == "hello Ada"
        status, body = await asyncio.to_thread(http, "POST", url, {"request_id": rid, "value": "Bob"})
        assert status == 409, body
    finally:
        server.stop()


async def test_waiting_runs_hold_no_running_slot(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--workflows", FLOWS, "--max-running", "1").start()
    try:
        c = await Client.connect(server.url)
        waiting_ids = [await c.start("greet", None) for _ in range(3)]
        for run_id in waiting_ids:
            await waiting(c, run_id)
        run_id = await c.start("echo", {"x": 1})
        events = await c.until_terminal(run_id, timeout=10)
        assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == {"x": 1}
        for name, run_id in zip("abc", waiting_ids, strict=True):
            rid = (await c.request({"type": "poll", "run_id": run_id}))["run"]["waiting_for"][0]["request_id"]
            assert (await respond(c, run_id, rid, name))["type"] == "responded"
        for name, run_id in zip("abc", waiting_ids, strict=True):
            events = await c.until_terminal(run_id, timeout=10)
            assert_log(events)
            assert events[-1]["data"]["output"] == f"hello {name}"
    finally:
        server.stop()


async def test_the_runs_feed_shows_a_run_go_waiting_and_on(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--workflows", FLOWS).start()
    try:
        watcher, c = await Client.connect(server.url), await Client.connect(server.url)
        assert (await watcher.request({"type": "subscribe_runs", "status": "waiting"}))["type"] == "runs_subscribed"
        run_id = await c.start("approve", None)
        frame = await watcher.wait(lambda m: m.get("type") == "run_changed" and m["run"]["run_id"] == run_id)
        assert frame["run"]["status"] == "waiting" and frame["run"]["current_step"] == "approve"
        assert [w["prompt"] for w in frame["run"]["waiting_for"]] == ["Publish this?"]
        rid = frame["run"]["waiting_for"][0]["request_id"]
        await respond(c, run_id, rid, {"ok": True})
        left = await watcher.wait(lambda m: m.get("type") == "run_changed" and m["run"]["run_id"] == run_id)
        assert left["run"]["status"] != "waiting" and left["run"]["waiting_for"] == []
    finally:
        server.stop()


async def test_a_waiting_plain_step_holds_no_worker_thread(tmp_path: Path) -> None:
    """In process, with one worker thread: three plain steps wait, a fourth still runs."""

    def ask_name(step_input: StepInput, ctx: StepContext) -> str:
        return f"hi {ctx.ask('Name?')}"

    def plain(step_input: StepInput) -> str:
        return "ran"

    store = SqliteStore(str(tmp_path / "runcast.db"))
    await store.open()
    workflows = [Workflow("ask", [Step("ask", ask_name)]), Workflow("plain", [Step("plain", plain)])]
    engine = Engine(store, workflows, Settings(step_threads=1))
    try:
        ids = [(await engine.start("ask", None))[0]["run_id"] for _ in range(3)]
        async with asyncio.timeout(5):
            for run_id in ids:
                while (await store.get_run(run_id) or {}).get("status") != "waiting":
                    await asyncio.sleep(0.01)
        plain_id = (await engine.start("plain", None))[0]["run_id"]
        async with asyncio.timeout(5):
            assert (await engine.wait(plain_id))["output"] == "ran"
        for run_id in ids:
            snapshot = await store.get_run(run_id)
            assert snapshot is not None
            await engine.respond(run_id, snapshot["waiting_for"][0]["request_id"], "Ada")
        async with asyncio.timeout(5):
            assert [(await engine.wait(r))["output"] for r in ids] == ["hi Ada"] * 3
    finally:
        await engine.shutdown()
        await store.close()


async def test_two_answers_at_once_on_one_server_one_wins(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--workflows", FLOWS).start()
    try:
        c, d = await Client.connect(server.url), await Client.connect(server.url)
        for _ in range(5):
            run_id = await c.start("greet", None)
            rid = (await waiting(c, run_id))["waiting_for"][0]["request_id"]
            replies = await asyncio.gather(respond(c, run_id, rid, "c"), respond(d, run_id, rid, "d"))
            kinds = sorted(r["type"] if r["type"] == "responded" else r["code"] for r in replies)
            assert kinds == ["conflict", "responded"], replies
            events = await c.until_terminal(run_id)
            assert_log(events)
            assert [e["event"] for e in events].count("input_received") == 1
    finally:
        server.stop()


@both_backends
async def test_kill_9_while_waiting_keeps_the_request_and_answered_asks_are_not_asked_again(
    new_server: NewServer,
) -> None:
    server = new_server("--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("two_asks", None)
        first = (await waiting(c, run_id))["waiting_for"][0]
        assert first["prompt"] == "First?"
        assert (await respond(c, run_id, first["request_id"], "a"))["type"] == "responded"
        second = (await waiting(c, run_id))["waiting_for"]
        assert [w["prompt"] for w in second] == ["Second, after a?"]
        server.kill()
        server.restart()
        d = await Client.connect(server.url)
        run = (await d.request({"type": "poll", "run_id": run_id}))["run"]
        assert run["status"] == "waiting" and run["waiting_for"] == second  # the same request, the same id
        await d.request({"type": "subscribe", "run_id": run_id})
        assert (await respond(d, run_id, second[0]["request_id"], "b"))["type"] == "responded"
        events = await d.until_terminal(run_id)
        assert_log(events)
        assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == ["a", "b"]
        assert [e["data"]["prompt"] for e in asked(events)] == ["First?", "Second, after a?"]
        assert [e["data"]["attempt"] for e in events if e["event"] == "step_started"] == [1]
        assert "run_resumed" not in [e["event"] for e in events]  # a waiting run is not an unfinished one
    finally:
        server.stop()


async def test_kill_9_after_an_answer_resumes_and_the_answered_ask_returns_at_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("two_asks", None)
        first = (await waiting(c, run_id))["waiting_for"][0]
        await respond(c, run_id, first["request_id"], "a")
        await waiting(c, run_id)
        server.kill()  # the run waits for its second answer: restart, answer, then kill again mid-run
        server.restart()
        d = await Client.connect(server.url)
        second = (await d.request({"type": "poll", "run_id": run_id}))["run"]["waiting_for"][0]
        await d.request({"type": "subscribe", "run_id": run_id})
        await respond(d, run_id, second["request_id"], "b")
        events = await d.until_terminal(run_id)
        assert [e["data"]["prompt"] for e in asked(events)] == ["First?", "Second, after a?"]
        assert events[-1]["data"]["output"] == ["a", "b"]
    finally:
        server.stop()


async def test_parallel_branches_ask_at_once_and_the_run_goes_on_when_both_are_answered(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("both_branches", None)
        run = await waiting(c, run_id, count=2)
        assert sorted((w["step"], w["prompt"]) for w in run["waiting_for"]) == [
            ("ask/left", "Left?"),
            ("ask/right", "Right?"),
        ]
        steps = {s["name"]: s["status"] for s in run["steps"]}
        assert steps == {"ask": "running", "ask/left": "waiting", "ask/right": "waiting", "ask/plain": "completed",
                         "after": "pending"}  # fmt: skip
        by_step = {w["step"]: w["request_id"] for w in run["waiting_for"]}
        one = await respond(c, run_id, by_step["ask/left"], "L")
        assert one["run"]["status"] == "waiting" and [w["step"] for w in one["run"]["waiting_for"]] == ["ask/right"]
        assert (await c.request({"type": "poll", "run_id": run_id}))["run"]["status"] == "waiting"
        two = await respond(c, run_id, by_step["ask/right"], "R")
        assert two["run"]["waiting_for"] == []
        events = await c.until_terminal(run_id)
        assert_log(events)
        assert events[-1]["data"]["output"] == {"left": "L", "right": "R", "plain": "p"}
        assert [e["step"] for e in events if e["event"] == "step_started"].count("ask/left") == 1
    finally:
        server.stop()


@both_backends
async def test_cancel_ends_a_waiting_run_at_once(new_server: NewServer) -> None:
    server = new_server("--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("approve", None)
        rid = (await waiting(c, run_id))["waiting_for"][0]["request_id"]
        reply = await c.request({"type": "cancel", "run_id": run_id})
        assert reply["type"] == "cancel_requested", reply
        events = await c.until_terminal(run_id, timeout=5)
        assert_log(events)
        assert events[-1]["event"] == "run_cancelled"
        run = (await c.request({"type": "poll", "run_id": run_id}))["run"]
        assert run["status"] == "cancelled" and run["waiting_for"] == []
        assert run["steps"][0]["status"] == "failed" and run["steps"][0]["error"] == "cancelled"
        assert (await respond(c, run_id, rid, {"ok": True}))["code"] == "conflict"
        assert (await c.request({"type": "cancel", "run_id": run_id}))["code"] == "conflict"
    finally:
        server.stop()


async def test_an_ask_that_times_out_takes_its_default_or_fails_the_step(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        with_default = await c.start("timed", {"timeout": 0.3, "default": "fallback"})
        without = await c.start("timed", {"timeout": 0.3})
        run = await waiting(c, with_default)
        assert run["waiting_for"][0]["timeout"] == 0.3 and run["waiting_for"][0]["default"] == "fallback"
        assert run["waiting_for"][0]["expires_at"] > time.time() - 1
        began = time.monotonic()
        events = await c.until_terminal(with_default, timeout=10)
        assert_log(events)
        assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == "fallback"
        received = next(e for e in events if e["event"] == "input_received")
        assert received["data"]["timed_out"] is True and received["data"]["value"] == "fallback"
        events = await c.until_terminal(without, timeout=10)
        assert time.monotonic() - began < 5
        assert_log(events)
        assert events[-1]["event"] == "run_failed"
        assert "no answer came within 0.3 s" in events[-1]["data"]["error"], events[-1]
        failed = next(e for e in events if e["event"] == "step_failed")
        assert failed["data"]["will_retry"] is False and "AskTimeout" in failed["data"]["error"]
    finally:
        server.stop()


async def test_a_timeout_still_fires_after_a_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("timed", {"timeout": 1.5, "default": "late"})
        await waiting(c, run_id)
        server.kill()
        server.restart()
        d = await Client.connect(server.url)
        await d.request({"type": "subscribe", "run_id": run_id})
        events = await d.until_terminal(run_id, timeout=10)
        assert_log(events)
        assert events[-1]["data"]["output"] == "late"
    finally:
        server.stop()


async def test_requires_confirmation_asks_first_and_no_skips_or_cancels(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runcast.db", "--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        yes, no, cancel = (
            await c.start("confirm", None),
            await c.start("confirm", None),
            await c.start("confirm_or_cancel", None),
        )
        for run_id, answer in ((yes, True), (no, False), (cancel, False)):
            request = (await waiting(c, run_id))["waiting_for"][0]
            assert request["schema"] == {"type": "boolean"} and request["kind"] == "confirmation"
            assert (await respond(c, run_id, request["request_id"], "yes"))["code"] == "invalid_input"
            assert (await respond(c, run_id, request["request_id"], answer))["type"] == "responded"
        events = await c.until_terminal(yes)
        assert_log(events)
        assert asked(events)[0]["data"]["prompt"] == "Deploy now?"
        assert events[-1]["data"]["output"] == "deployed"
        events = await c.until_terminal(no)
        assert_log(events)
        run = (await c.request({"type": "poll", "run_id": no}))["run"]
        assert [s["status"] for s in run["steps"]] == ["skipped", "completed"] and run["output"] is None
        events = await c.until_terminal(cancel)
        assert_log(events)
        assert events[-1]["event"] == "run_cancelled"
        run = (await c.request({"type": "poll", "run_id": cancel}))["run"]
        assert run["steps"][0]["status"] == "skipped"
    finally:
        server.stop()


# ---- a cluster ---------------------------------------------------------------------------


async def test_a_run_that_asks_on_one_node_is_answered_through_another(pg_url: str, tmp_path: Path) -> None:
    a = ServerProcess.node(pg_url, tmp_path, "a", "--workflows", FLOWS).start()
    b = ServerProcess.node(pg_url, tmp_path, "b", "--workflows", FLOWS).start()
    try:
        ca, cb = await Client.connect(a.url), await Client.connect(b.url)
        run_id = await ca.start("two_asks", None)
        first = (await waiting(ca, run_id))["waiting_for"][0]
        assert (await respond(cb, run_id, first["request_id"], "a"))["type"] == "responded"
        second = (await waiting(ca, run_id))["waiting_for"][0]
        status, body = await asyncio.to_thread(
            http, "POST", f"{a.http_url}/api/runs/{run_id}/respond", {"request_id": second["request_id"], "value": "b"}
        )
        assert status == 200, body
        events = await ca.until_terminal(run_id)
        assert_log(events)
        assert events[-1]["data"]["output"] == ["a", "b"]
        assert [e["data"]["prompt"] for e in asked(events)] == ["First?", "Second, after a?"]

        run_id = await cb.start("approve", None)
        rid = (await waiting(cb, run_id))["waiting_for"][0]["request_id"]
        assert (await ca.request({"type": "cancel", "run_id": run_id}))["type"] == "cancel_requested"
        events = await cb.until_terminal(run_id, timeout=5)
        assert_log(events)
        assert events[-1]["event"] == "run_cancelled"
        assert (await respond(ca, run_id, rid, {"ok": True}))["code"] == "conflict"
    finally:
        a.stop()
        b.stop()


async def test_two_racing_answers_through_two_nodes_one_wins(pg_url: str, tmp_path: Path) -> None:
    a = ServerProcess.node(pg_url, tmp_path, "a", "--workflows", FLOWS).start()
    b = ServerProcess.node(pg_url, tmp_path, "b", "--workflows", FLOWS).start()
    try:
        ca, cb = await Client.connect(a.url), await Client.connect(b.url)
        for round_ in range(5):
            run_id = await ca.start("greet", None)
            rid = (await waiting(ca, run_id))["waiting_for"][0]["request_id"]
            replies = await asyncio.gather(respond(ca, run_id, rid, "from a"), respond(cb, run_id, rid, "from b"))
            kinds = sorted(r["type"] if r["type"] == "responded" else r["code"] for r in replies)
            assert kinds == ["conflict", "responded"], (round_, replies)
            winner = "a" if replies[0]["type"] == "responded" else "b"
            events = await ca.until_terminal(run_id)
            assert_log(events)
            assert [e["event"] for e in events].count("input_received") == 1
            assert events[-1]["data"]["output"] == f"hello from {winner}"
    finally:
        a.stop()
        b.stop()


# ---- in process: how a step's code meets an ask ---------------------------------------------


class Engines:
    """An engine on a real SqliteStore, with every committed event kept per run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.events: dict[str, list[tuple[str, str | None, dict[str, Any]]]] = {}

    async def open(self, *workflows: Workflow) -> Engine:
        self.store = SqliteStore(self.path)
        await self.store.open()
        self.store.add_listener(self._heard)
        self.engine = Engine(self.store, workflows)
        await self.engine.recover()
        return self.engine

    def _heard(self, batch: Any) -> None:
        for event in batch:
            frame = json.loads(event.frame)
            self.events.setdefault(event.run_id, []).append((frame["event"], frame["step"], frame["data"]))

    async def until(self, run_id: str, status: str) -> dict[str, Any]:
        async with asyncio.timeout(5):
            while True:
                run = await self.store.get_run(run_id)
                if run is not None and run["status"] == status:
                    return run
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.engine.shutdown()
        await self.store.close()


async def test_an_ask_is_not_swallowed_by_except_exception_nor_a_step_timeout(tmp_path: Path) -> None:
    async def careful(step_input: StepInput, ctx: StepContext) -> str:
        try:
            answer = await ctx.ask("Go?")
        except Exception:  # the suspension is no Exception: it passes through
            return "swallowed"
        return f"got {answer}"

    env = Engines(tmp_path / "runcast.db")
    engine = await env.open(Workflow("careful", [Step("careful", careful, timeout_seconds=5)]))
    try:
        run_id = (await engine.start("careful", None))[0]["run_id"]
        run = await env.until(run_id, "waiting")
        await engine.respond(run_id, run["waiting_for"][0]["request_id"], "yes")
        assert (await engine.wait(run_id))["output"] == "got yes"
    finally:
        await env.close()


async def test_a_retry_after_an_ask_timed_out_asks_again(tmp_path: Path) -> None:
    async def patient(step_input: StepInput, ctx: StepContext) -> Any:
        return await ctx.ask("Still there?", timeout=0.2)

    env = Engines(tmp_path / "runcast.db")
    engine = await env.open(Workflow("patient", [Step("patient", patient, max_retries=1, retry_delay=0)]))
    try:
        run_id = (await engine.start("patient", None))[0]["run_id"]
        first = (await env.until(run_id, "waiting"))["waiting_for"][0]
        async with asyncio.timeout(5):
            while True:
                run = await env.store.get_run(run_id)
                assert run is not None
                if run["status"] == "waiting" and run["waiting_for"][0]["request_id"] != first["request_id"]:
                    break
                await asyncio.sleep(0.01)
        await engine.respond(run_id, run["waiting_for"][0]["request_id"], "here")
        assert (await engine.wait(run_id))["output"] == "here"
        kinds = [(event, data.get("attempt")) for event, _, data in env.events[run_id] if event.startswith("step_")]
        assert kinds == [("step_started", 1), ("step_failed", 1), ("step_started", 2), ("step_completed", None)]
    finally:
        await env.close()


async def test_a_bad_schema_or_prompt_fails_the_step_that_asks(tmp_path: Path) -> None:
    async def bad_schema(step_input: StepInput, ctx: StepContext) -> Any:
        return await ctx.ask("?", schema={"type": "no-such-type"})

    env = Engines(tmp_path / "runcast.db")
    engine = await env.open(Workflow("bad", [Step("bad", bad_schema)]))
    try:
        run_id = (await engine.start("bad", None))[0]["run_id"]
        run = await engine.wait(run_id)
        assert run["status"] == "failed" and "JSON Schema" in run["error"], run["error"]
    finally:
        await env.close()


async def test_the_python_api_answers_with_arespond(tmp_path: Path) -> None:
    from server import SqliteDb

    async def approve(step_input: StepInput, ctx: StepContext) -> Any:
        answer = await ctx.ask("Publish this?", schema={"type": "boolean"})
        return "published" if answer else "kept"

    db = SqliteDb(db_file=str(tmp_path / "api.db"))
    wf = Workflow("publish", [Step("approve", approve)], db=db)
    try:
        out = await wf.arun("draft", background=True)
        async with asyncio.timeout(5):
            while (run := await wf.aget_run(out.run_id)) is None or run.status != "waiting":
                await asyncio.sleep(0.01)
        request = run.waiting_for[0]
        assert request["prompt"] == "Publish this?" and request["step"] == "approve"
        answered = await wf.arespond(out.run_id, request["request_id"], True)
        assert answered.waiting_for == [] and answered.status in ("running", "completed")
        async with asyncio.timeout(5):
            while (run := await wf.aget_run(out.run_id)) is None or not run.has_completed():
                await asyncio.sleep(0.01)
        assert run.content == "published"
    finally:
        await db.close()


async def test_a_timeout_fires_on_another_node_when_the_asking_node_is_gone(pg_url: str, tmp_path: Path) -> None:
    a = ServerProcess.node(pg_url, tmp_path, "a", "--workflows", FLOWS).start()
    b = ServerProcess.node(pg_url, tmp_path, "b", "--workflows", FLOWS).start()
    try:
        ca = await Client.connect(a.url)
        run_id = await ca.start("timed", {"timeout": 1.0, "default": "nobody came"})
        await waiting(ca, run_id)
        a.kill()
        cb = await Client.connect(b.url)
        await cb.request({"type": "subscribe", "run_id": run_id})
        events = await cb.until_terminal(run_id, timeout=10)
        assert_log(events)
        assert events[-1]["data"]["output"] == "nobody came"
        assert "run_resumed" not in [e["event"] for e in events]
    finally:
        a.stop()
        b.stop()


# ---- pure parts ------------------------------------------------------------------------------


def test_respond_frames_are_parsed_and_checked() -> None:
    from server.protocol import ErrorCode, ParseError, Respond, parse_client_frame

    ok = parse_client_frame(json.dumps({"type": "respond", "id": 3, "run_id": "r", "request_id": "q", "value": None}))
    assert ok == Respond(3, "r", "q", None)
    for bad in (
        {"type": "respond", "run_id": "r", "request_id": "q"},
        {"type": "respond", "run_id": "r", "value": 1},
        {"type": "respond", "request_id": "q", "value": 1},
        {"type": "respond", "run_id": "r", "request_id": 5, "value": 1},
    ):
        parsed = parse_client_frame(json.dumps(bad))
        assert isinstance(parsed, ParseError) and parsed.code == ErrorCode.BAD_REQUEST, bad


def test_asks_are_matched_by_order_within_one_try() -> None:
    from server.engine.context import answered_asks

    history = [
        ("step_started", {"attempt": 1}),
        ("input_requested", {"request_id": "a", "prompt": "A?"}),
        ("input_received", {"request_id": "a", "value": 1}),
        ("step_failed", {"attempt": 1, "will_retry": True}),
        ("step_started", {"attempt": 2}),
        ("input_requested", {"request_id": "c", "prompt": "ok?", "kind": "confirmation"}),
        ("input_requested", {"request_id": "b", "prompt": "A?"}),
        ("input_received", {"request_id": "b", "value": 2}),
        ("input_requested", {"request_id": "d", "prompt": "B?"}),
        ("input_requested", {"request_id": "d", "prompt": "B?"}),  # stored again: one ask
    ]
    asked, answers = answered_asks(history)
    assert [a["request_id"] for a in asked] == ["b", "d"]
    assert answers["b"]["value"] == 2 and "d" not in answers


def test_a_snapshot_with_many_large_questions_still_fits_one_frame() -> None:
    from server.bounds import MAX_REPLY_BYTES, bounded_run, json_size

    asks = [{"request_id": f"q{i}", "prompt": "?" * 200_000, "schema": None, "step": f"s{i}"} for i in range(6)]
    run = {"run_id": "r", "status": "waiting", "input": None, "output": None, "error": None, "steps": []}
    bounded = bounded_run({**run, "waiting_for": asks})
    assert json_size(bounded) <= MAX_REPLY_BYTES
    assert any(name.startswith("waiting_for[") for name in bounded["truncated"])
    assert [w["request_id"] for w in bounded["waiting_for"]] == [f"q{i}" for i in range(6)]
    assert asks[0]["prompt"] == "?" * 200_000  # the run itself is untouched
