"""Unit tests of server.engine.Engine and the Python API, on a real SqliteStore (no server, no sockets)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server import (
    BadRequest,
    Conflict,
    Engine,
    InvalidInput,
    RunNotFound,
    RunStatus,
    SqliteDb,
    Step,
    StepContext,
    StepInput,
    StepOutput,
    UnknownWorkflow,
    Workflow,
)
from server.examples import BUILT_IN
from server.protocol import RUN_ID_PATTERN
from server.settings import Settings
from server.store import RunFilter, StoredEvent
from server.store.sqlite import SqliteStore
from server.vocabulary import TERMINAL_EVENTS

TIMEOUT = 5.0


class Recorder:
    """A store listener: every committed event, per run and in global commit order."""

    def __init__(self, store: SqliteStore) -> None:
        self.by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.order: list[tuple[str, str]] = []
        self._changed = asyncio.Event()
        store.add_listener(self)

    def __call__(self, batch: list[StoredEvent]) -> None:
        for event in batch:
            self.by_run[event.run_id].append(json.loads(event.frame))
            self.order.append((event.run_id, event.event))
        self._changed.set()

    async def wait_for(self, run_id: str, event: str, step: str | None = None, count: int = 1) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                found = [e for e in self.by_run[run_id] if e["event"] == event and (step is None or e["step"] == step)]
                if len(found) >= count:
                    return found[count - 1]
                self._changed.clear()
                await self._changed.wait()


class Env:
    """Stores and engines on one file, all closed at the end of the test."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._open: list[tuple[SqliteStore, Engine]] = []

    async def open(self, *workflows: Workflow, **kw: Any) -> tuple[SqliteStore, Engine, Recorder]:
        store = SqliteStore(self.path)
        await store.open()
        engine = Engine(store, workflows, Settings(**kw))
        self._open.append((store, engine))
        return store, engine, Recorder(store)

    async def stop(self, store: SqliteStore, engine: Engine) -> None:
        """What a crash leaves behind: runs stop where they are, nothing more is written."""
        await engine.shutdown()
        await store.close()

    async def close(self) -> None:
        for store, engine in reversed(self._open):
            await engine.shutdown()
            await store.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path / "engine.db")
    try:
        yield e
    finally:
        await e.close()


async def events_of(store: SqliteStore, run_id: str) -> list[dict[str, Any]]:
    return [json.loads(e.frame) for e in await store.read_events(run_id, 0, 100_000)]


async def barrier(store: SqliteStore) -> None:
    """Return once everything queued before is committed (batches commit in order)."""
    await store.create_run(
        {"run_id": f"barrier-{time.monotonic_ns()}", "workflow": "-", "status": "completed", "created_at": "-"}
    )


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def assert_log(events: list[dict[str, Any]]) -> None:
    """seq 1..n without gaps, one terminal event and it is the last."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    terminal = [e for e in events if e["event"] in TERMINAL_EVENTS]
    assert len(terminal) == 1, names(events)
    assert events[-1] is terminal[0]


async def run_to_end(engine: Engine, name: str, input: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    snapshot, existing = await engine.start(name, input)
    assert existing is False
    async with asyncio.timeout(TIMEOUT):
        final = await engine.wait(snapshot["run_id"])
    events = await events_of(engine.store, snapshot["run_id"])
    assert_log(events)
    assert final["last_seq"] == len(events)
    return final, events


def gate() -> tuple[Callable[..., Awaitable[Any]], asyncio.Event, asyncio.Event]:
    """An async step that signals `started`, then waits for `release`; returns the run's input."""
    started, release = asyncio.Event(), asyncio.Event()

    async def step(step_input: StepInput) -> Any:
        started.set()
        await release.wait()
        return step_input.input

    return step, started, release


# ---- executor kinds ----------------------------------------------------------------


async def test_sync_executor_runs_in_a_worker_thread(env: Env) -> None:
    threads: list[int] = []

    def work(step_input: StepInput) -> dict[str, Any]:
        threads.append(threading.get_ident())
        return {"got": step_input.input}

    _, engine, _ = await env.open(Workflow("w", [Step("work", work)]))
    final, events = await run_to_end(engine, "w", {"x": 1})
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()
    assert final["status"] == "completed"
    assert final["output"] == {"got": {"x": 1}}
    assert names(events) == ["run_started", "step_started", "step_completed", "run_completed"]
    assert events[0]["data"] == {"workflow": "w", "input": {"x": 1}} and events[0]["step"] is None
    assert events[1]["data"] == {"index": 0, "attempt": 1} and events[1]["step"] == "work"
    assert events[2]["data"] == {"output": {"got": {"x": 1}}} and events[2]["step"] == "work"
    assert events[3]["data"] == {"output": {"got": {"x": 1}}} and events[3]["step"] is None
    step = final["steps"][0]
    assert (step["name"], step["status"], step["output"], step["error"], step["attempts"]) == (
        "work",
        "completed",
        {"got": {"x": 1}},
        None,
        1,
    )
    assert final["started_at"] and final["finished_at"] and step["started_at"] and step["finished_at"]
    assert final["error"] is None


async def test_async_executor_runs_on_the_loop_with_context(env: Env) -> None:
    seen: list[tuple[int, str, str, int]] = []

    async def work(step_input: StepInput, ctx: StepContext) -> str:
        seen.append((threading.get_ident(), ctx.run_id, ctx.step, ctx.attempt))
        await asyncio.sleep(0)
        return f"hello {step_input.input}"

    _, engine, _ = await env.open(Workflow("w", [Step("greet", work)]))
    final, events = await run_to_end(engine, "w", "world")
    assert seen == [(threading.get_ident(), final["run_id"], "greet", 1)]
    assert final["output"] == "hello world"
    assert names(events) == ["run_started", "step_started", "step_completed", "run_completed"]


async def test_async_generator_streams_deltas(env: Env) -> None:
    async def write(step_input: StepInput) -> AsyncIterator[str]:
        for word in ["Once", " upon", " a", " time"]:
            await asyncio.sleep(0)
            yield word

    _, engine, _ = await env.open(Workflow("w", [Step("write", write)]))
    final, events = await run_to_end(engine, "w")
    assert names(events) == ["run_started", "step_started", *["step_output"] * 4, "step_completed", "run_completed"]
    outputs = [e for e in events if e["event"] == "step_output"]
    assert [e["data"] for e in outputs] == [{"delta": w} for w in ["Once", " upon", " a", " time"]]
    assert all(e["step"] == "write" for e in outputs)
    assert events[-2]["data"] == {"output": "Once upon a time"}
    assert final["output"] == "Once upon a time"


async def test_async_generator_final_non_text_item_is_the_output(env: Env) -> None:
    async def work(step_input: StepInput) -> AsyncIterator[Any]:
        yield "a"
        yield {"result": 42}

    _, engine, _ = await env.open(Workflow("w", [Step("work", work)]))
    final, events = await run_to_end(engine, "w")
    assert [e["data"] for e in events if e["event"] == "step_output"] == [{"delta": "a"}]
    assert final["output"] == {"result": 42}


async def test_sync_generator_streams_deltas_from_a_thread(env: Env) -> None:
    threads: list[int] = []

    def write(step_input: StepInput) -> Iterator[str]:
        threads.append(threading.get_ident())
        for i in range(30):
            yield f"w{i} "

    _, engine, _ = await env.open(Workflow("w", [Step("write", write)]))
    final, events = await run_to_end(engine, "w")
    assert threads and threads[0] != threading.get_ident()
    deltas = [e["data"]["delta"] for e in events if e["event"] == "step_output"]
    assert deltas == [f"w{i} " for i in range(30)]
    assert names(events)[-2:] == ["step_completed", "run_completed"]
    assert names(events)[:2] == ["run_started", "step_started"]
    assert final["output"] == "".join(f"w{i} " for i in range(30))


async def test_progress_from_a_thread_step_arrives_in_order(env: Env) -> None:
    def fetch(step_input: StepInput, ctx: StepContext) -> str:
        for i in range(1, 101):
            ctx.progress(current=i, total=100, message=f"item {i}")
        return "fetched"

    _, engine, _ = await env.open(Workflow("w", [Step("fetch", fetch)]))
    final, events = await run_to_end(engine, "w")
    assert names(events) == ["run_started", "step_started", *["progress"] * 100, "step_completed", "run_completed"]
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["data"] for e in progress] == [
        {"current": i, "total": 100, "message": f"item {i}"} for i in range(1, 101)
    ]
    assert all(e["step"] == "fetch" for e in progress)
    assert final["output"] == "fetched"


async def test_progress_and_output_from_an_async_step(env: Env) -> None:
    async def work(step_input: StepInput, ctx: StepContext) -> str:
        ctx.progress(current=1)
        ctx.output("x")
        await asyncio.sleep(0)
        ctx.progress(current=2)
        return "done"

    _, engine, _ = await env.open(Workflow("w", [Step("work", work)]))
    _, events = await run_to_end(engine, "w")
    assert [(e["event"], e["data"]) for e in events[2:5]] == [
        ("progress", {"current": 1}),
        ("step_output", {"delta": "x"}),
        ("progress", {"current": 2}),
    ]


# ---- step inputs -------------------------------------------------------------------


async def test_step_input_carries_earlier_outputs(env: Env) -> None:
    seen: dict[str, StepInput] = {}

    def first(step_input: StepInput) -> Any:
        seen["first"] = step_input
        return (1, "a")  # a tuple: later steps see what a client sees, a list

    async def second(step_input: StepInput) -> str:
        seen["second"] = step_input
        return "two"

    def third(step_input: StepInput) -> dict[str, Any]:
        seen["third"] = step_input
        return {"from_first": step_input.get_step_content("first"), "prev": step_input.previous_step_content}

    wf = Workflow("w", [Step("first", first), Step("second", second), Step("third", third)])
    _, engine, _ = await env.open(wf)
    final, _ = await run_to_end(engine, "w", {"topic": "t"})
    assert seen["first"].input == {"topic": "t"}
    assert seen["first"].previous_step_content is None
    assert seen["first"].previous_step_outputs == {}
    assert seen["second"].input == {"topic": "t"}
    assert seen["second"].previous_step_content == [1, "a"]
    assert seen["second"].previous_step_outputs == {"first": [1, "a"]}
    assert seen["second"].get_step_content("first") == [1, "a"]
    assert seen["second"].get_step_content("third") is None
    assert seen["third"].previous_step_content == "two"
    assert seen["third"].previous_step_outputs == {"first": [1, "a"], "second": "two"}
    assert final["output"] == {"from_first": [1, "a"], "prev": "two"}
    assert [s["output"] for s in final["steps"]] == [[1, "a"], "two", {"from_first": [1, "a"], "prev": "two"}]


# ---- stop, failure -----------------------------------------------------------------


async def test_stop_ends_the_run_early(env: Env) -> None:
    calls: list[str] = []

    def one(step_input: StepInput) -> str:
        calls.append("one")
        return "1"

    def two(step_input: StepInput) -> StepOutput:
        calls.append("two")
        return StepOutput(content="early", stop=True)

    def three(step_input: StepInput) -> str:
        calls.append("three")
        return "3"

    _, engine, _ = await env.open(Workflow("w", [Step("one", one), Step("two", two), Step("three", three)]))
    final, events = await run_to_end(engine, "w")
    assert calls == ["one", "two"]
    assert final["status"] == "completed"
    assert final["output"] == "early"
    assert [s["status"] for s in final["steps"]] == ["completed", "completed", "skipped"]
    assert [s["attempts"] for s in final["steps"]] == [1, 1, 0]
    assert names(events) == [
        "run_started",
        "step_started",
        "step_completed",
        "step_started",
        "step_completed",
        "run_completed",
    ]
    assert events[4]["data"] == {"output": "early"}
    assert events[-1]["data"] == {"output": "early"}


def _fail_with_output(step_input: StepInput) -> StepOutput:
    return StepOutput(content="partial", success=False, error="quota exceeded")


def _fail_with_output_no_error(step_input: StepInput) -> StepOutput:
    return StepOutput(success=False)


def _raise_sync(step_input: StepInput) -> None:
    raise ValueError("bad value 7")


async def _raise_async(step_input: StepInput) -> None:
    await asyncio.sleep(0)
    raise KeyError("missing")


async def _raise_in_gen(step_input: StepInput) -> AsyncIterator[str]:
    yield "half"
    raise RuntimeError("stream broke")


def _raise_empty(step_input: StepInput) -> None:
    raise RuntimeError


@pytest.mark.parametrize(
    ("executor", "error"),
    [
        (_fail_with_output, "quota exceeded"),
        (_fail_with_output_no_error, "step reported failure"),
        (_raise_sync, "ValueError: bad value 7"),
        (_raise_async, "KeyError: 'missing'"),
        (_raise_in_gen, "RuntimeError: stream broke"),
        (_raise_empty, "RuntimeError"),
    ],
)
async def test_failed_step_fails_the_run(env: Env, executor: Callable[..., Any], error: str) -> None:
    after: list[str] = []
    wf = Workflow(
        "w",
        [Step("ok", lambda si: "fine"), Step("bad", executor), Step("after", lambda si: after.append("ran"))],
    )
    _, engine, _ = await env.open(wf)
    final, events = await run_to_end(engine, "w")
    assert after == []
    assert final["status"] == "failed"
    assert final["error"] == f"step 'bad' failed: {error}"
    assert final["output"] is None
    failed = [e for e in events if e["event"] == "step_failed"]
    assert len(failed) == 1
    assert failed[0]["step"] == "bad"
    assert failed[0]["data"] == {"error": error, "attempt": 1, "will_retry": False}
    assert names(events)[-2:] == ["step_failed", "run_failed"]
    assert events[-1]["data"] == {"error": f"step 'bad' failed: {error}"}
    assert "run_completed" not in names(events)
    assert [s["status"] for s in final["steps"]] == ["completed", "failed", "skipped"]
    assert final["steps"][1]["error"] == error


async def test_builtin_fail_workflow(env: Env) -> None:
    _, engine, _ = await env.open(*BUILT_IN)
    final, events = await run_to_end(engine, "fail", {"message": "kaboom"})
    assert final["status"] == "failed"
    assert "kaboom" in final["error"]
    assert final["steps"][0]["output"] == "ok"
    assert names(events)[-2:] == ["step_failed", "run_failed"]


async def test_step_output_with_tuple_keys_completes(env: Env) -> None:
    _, engine, _ = await env.open(Workflow("w", [Step("s", lambda si: {(1, 2): "pair"})]))
    final, _ = await run_to_end(engine, "w")
    assert final["status"] == "completed"
    assert final["output"] == {"(1, 2)": "pair"}


# ---- cancel ------------------------------------------------------------------------


async def test_cancel_an_async_step(env: Env) -> None:
    step, started, _ = gate()
    after: list[str] = []
    _, engine, _ = await env.open(Workflow("w", [Step("wait", step), Step("after", lambda si: after.append("x"))]))
    snapshot, _ = await engine.start("w")
    run_id = snapshot["run_id"]
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    t0 = time.monotonic()
    answer = await engine.cancel(run_id)
    assert answer["run_id"] == run_id
    async with asyncio.timeout(1.0):
        final = await engine.wait(run_id)
    assert time.monotonic() - t0 < 1.0
    assert final["status"] == "cancelled"
    assert after == []
    events = await events_of(engine.store, run_id)
    assert_log(events)
    assert names(events) == ["run_started", "step_started", "run_cancelled"]
    assert events[-1]["data"] == {"by": None}  # who cancelled it: nobody with an identity
    assert [s["status"] for s in final["steps"]] == ["failed", "skipped"]
    assert final["finished_at"] is not None


async def test_cancel_an_async_generator_step(env: Env) -> None:
    started = asyncio.Event()

    async def stream(step_input: StepInput) -> AsyncIterator[str]:
        yield "first"
        started.set()
        await asyncio.Event().wait()
        yield "never"

    _, engine, _ = await env.open(Workflow("w", [Step("stream", stream)]))
    snapshot, _ = await engine.start("w")
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    await engine.cancel(snapshot["run_id"])
    async with asyncio.timeout(1.0):
        final = await engine.wait(snapshot["run_id"])
    assert final["status"] == "cancelled"
    events = await events_of(engine.store, snapshot["run_id"])
    assert_log(events)
    assert names(events) == ["run_started", "step_started", "step_output", "run_cancelled"]


async def test_cancel_a_thread_step_sets_ctx_cancelled(env: Env) -> None:
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    saw: asyncio.Future[tuple[bool, bool, bool]] = loop.create_future()

    def work(step_input: StepInput, ctx: StepContext) -> str:
        before = ctx.cancelled
        loop.call_soon_threadsafe(started.set)
        woke = ctx.wait_cancelled(TIMEOUT)
        ctx.progress(late=True)  # after the end: must be dropped
        loop.call_soon_threadsafe(saw.set_result, (before, woke, ctx.cancelled))
        return "finished anyway"

    store, engine, _ = await env.open(Workflow("w", [Step("work", work)]))
    snapshot, _ = await engine.start("w")
    run_id = snapshot["run_id"]
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    t0 = time.monotonic()
    await engine.cancel(run_id)
    async with asyncio.timeout(1.0):
        final = await engine.wait(run_id)
        before, woke, cancelled = await saw
    assert time.monotonic() - t0 < 1.0
    assert (before, woke, cancelled) == (False, True, True)
    assert final["status"] == "cancelled"
    await barrier(store)
    events = await events_of(store, run_id)
    assert_log(events)
    assert names(events) == ["run_started", "step_started", "run_cancelled"]


async def test_cancel_finished_or_unknown_run(env: Env) -> None:
    _, engine, _ = await env.open(*BUILT_IN)
    final, _ = await run_to_end(engine, "echo", 1)
    with pytest.raises(Conflict):
        await engine.cancel(final["run_id"])
    failed, _ = await run_to_end(engine, "fail", None)
    with pytest.raises(Conflict):
        await engine.cancel(failed["run_id"])
    with pytest.raises(RunNotFound):
        await engine.cancel("no-such-run")
    with pytest.raises(RunNotFound):
        await engine.wait("no-such-run")


async def test_cancel_while_the_step_cleans_up(env: Env) -> None:
    started, cleaning, done_cleaning = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def step(step_input: StepInput) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await done_cleaning.wait()
            raise
        return "never"

    store, engine, recorder = await env.open(Workflow("w", [Step("wait", step)]))
    snapshot, _ = await engine.start("w")
    run_id = snapshot["run_id"]
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    await recorder.wait_for(run_id, "step_started")
    await engine.cancel(run_id)
    async with asyncio.timeout(TIMEOUT):
        await cleaning.wait()
    # asked again while the step still cleans up: answered with the snapshot, nothing new
    again = await engine.cancel(run_id)
    assert again["run_id"] == run_id
    assert again["status"] == "running"
    done_cleaning.set()
    async with asyncio.timeout(1.0):
        final = await engine.wait(run_id)
    assert final["status"] == "cancelled"
    with pytest.raises(Conflict):
        await engine.cancel(run_id)
    events = await events_of(store, run_id)
    assert_log(events)
    assert names(events) == ["run_started", "step_started", "run_cancelled"]


async def test_cancel_right_after_start(env: Env) -> None:
    step, _, _ = gate()
    store, engine, _ = await env.open(Workflow("w", [Step("s", step)]))
    snapshot, _ = await engine.start("w")
    await engine.cancel(snapshot["run_id"])
    async with asyncio.timeout(0.5):
        final = await engine.wait(snapshot["run_id"])
    assert final["status"] == "cancelled"
    assert names(await events_of(store, snapshot["run_id"])) == ["run_cancelled"]


# ---- starting ----------------------------------------------------------------------


async def test_unknown_workflow(env: Env) -> None:
    store, engine, _ = await env.open(*BUILT_IN)
    with pytest.raises(UnknownWorkflow, match="nope"):
        await engine.start("nope", {})
    assert await store.list_runs(RunFilter(), 10, None) == ([], None)


def _check_topic(value: Any) -> Any:
    if not isinstance(value, dict) or not isinstance(value.get("topic"), str):
        raise ValueError("needs a topic")
    return value


@pytest.mark.parametrize(
    ("name", "input"),
    [
        ("checked", {"topic": 3}),
        ("checked", "text"),
        ("count", {"n": "three"}),
        ("count", {"n": -1}),
        ("count", [1, 2]),
        ("chain", {"n": 0}),
        ("sleep", {"seconds": True}),
        ("content", {"topic": 5}),
    ],
)
async def test_invalid_input_creates_no_run(env: Env, name: str, input: Any) -> None:
    calls: list[Any] = []
    wf = Workflow("checked", [Step("s", calls.append)], validate_input=_check_topic)
    store, engine, recorder = await env.open(wf, *BUILT_IN)
    with pytest.raises(InvalidInput):
        await engine.start(name, input, run_id="the-run")
    assert await store.get_run("the-run") is None
    assert await store.list_runs(RunFilter(), 10, None) == ([], None)
    assert calls == []
    assert engine.active_count == 0
    assert recorder.order == []


async def test_validate_input_fills_defaults_for_steps(env: Env) -> None:
    _, engine, _ = await env.open(*BUILT_IN)
    final, events = await run_to_end(engine, "count", {"n": 2, "delay": 0})
    assert final["output"] == {"count": 2}
    assert [e["data"] for e in events if e["event"] == "progress"] == [
        {"current": 1, "total": 2},
        {"current": 2, "total": 2},
    ]
    final, _ = await run_to_end(engine, "chain", {"n": 4, "delay": 0})
    assert final["output"] == 4
    assert [s["name"] for s in final["steps"]] == ["s1", "s2", "s3", "s4"]
    assert final["input"] == {"n": 4, "delay": 0}


async def test_idempotent_start_with_run_id(env: Env) -> None:
    calls: list[Any] = []

    def work(step_input: StepInput) -> Any:
        calls.append(step_input.input)
        return step_input.input

    store, engine, _ = await env.open(Workflow("w", [Step("s", work)]), Workflow("other", [Step("s", work)]))
    first, existing = await engine.start("w", {"a": [1, 2]}, run_id="job:1")
    assert existing is False
    assert first["run_id"] == "job:1"
    async with asyncio.timeout(TIMEOUT):
        await engine.wait("job:1")
    again, existing = await engine.start("w", {"a": [1, 2]}, run_id="job:1")
    assert existing is True
    assert again["run_id"] == "job:1"
    assert again["status"] == "completed"
    assert again["output"] == {"a": [1, 2]}
    with pytest.raises(Conflict):
        await engine.start("w", {"a": [1, 3]}, run_id="job:1")
    with pytest.raises(Conflict):
        await engine.start("other", {"a": [1, 2]}, run_id="job:1")
    with pytest.raises(BadRequest):
        await engine.start("w", None, run_id="bad id")
    assert calls == [{"a": [1, 2]}]
    runs, _ = await store.list_runs(RunFilter(), 10, None)
    assert [r["run_id"] for r in runs] == ["job:1"]
    assert len(await events_of(store, "job:1")) == 4


async def test_idempotent_start_concurrent_same_id(env: Env) -> None:
    step, _, release = gate()
    store, engine, _ = await env.open(Workflow("w", [Step("s", step)]))
    results = await asyncio.gather(*(engine.start("w", {"k": 1}, run_id="same") for _ in range(5)))
    assert sorted(existing for _, existing in results) == [False, True, True, True, True]
    assert {snap["run_id"] for snap, _ in results} == {"same"}
    release.set()
    async with asyncio.timeout(TIMEOUT):
        final = await engine.wait("same")
    assert final["status"] == "completed"
    assert names(await events_of(store, "same")).count("run_started") == 1


async def test_generated_run_ids_are_unique_and_sorted(env: Env) -> None:
    _, engine, _ = await env.open(*BUILT_IN)
    ids = [(await engine.start("echo", i))[0]["run_id"] for i in range(50)]
    assert len(set(ids)) == 50
    assert ids == sorted(ids)
    assert all(RUN_ID_PATTERN.fullmatch(i) for i in ids)
    async with asyncio.timeout(TIMEOUT):
        finals = [await engine.wait(i) for i in ids]
    assert [f["output"] for f in finals] == list(range(50))


async def test_max_running_keeps_the_next_run_pending(env: Env) -> None:
    releases: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
    started: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def step(step_input: StepInput) -> str:
        started[step_input.input].set()
        await releases[step_input.input].wait()
        return step_input.input

    store, engine, recorder = await env.open(Workflow("w", [Step("s", step)]), max_running=1)
    a, _ = await engine.start("w", "a")
    b, _ = await engine.start("w", "b")
    async with asyncio.timeout(TIMEOUT):
        await started["a"].wait()
    for _ in range(20):  # give b every chance to start if the limit were broken
        await asyncio.sleep(0)
    assert not started["b"].is_set()
    await store.flush()  # a's `running` is committed (reads see only what is)
    b_now = await store.get_run(b["run_id"])
    assert b_now is not None and b_now["status"] == "pending"
    assert await store.read_events(b["run_id"], 0, 10) == []
    assert (await store.get_run(a["run_id"]) or {})["status"] == "running"
    releases["b"].set()  # b may finish at once when it gets its turn
    releases["a"].set()
    async with asyncio.timeout(TIMEOUT):
        final_a = await engine.wait(a["run_id"])
        final_b = await engine.wait(b["run_id"])
    assert (final_a["output"], final_b["output"]) == ("a", "b")
    order = recorder.order
    assert order.index((a["run_id"], "run_completed")) < order.index((b["run_id"], "run_started"))


async def test_cancel_a_pending_run(env: Env) -> None:
    step, started, release = gate()
    store, engine, _ = await env.open(Workflow("w", [Step("s", step)]), max_running=1)
    a, _ = await engine.start("w", 1)
    b, _ = await engine.start("w", 2)
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    for _ in range(5):  # let b's task begin and queue for a slot
        await asyncio.sleep(0)
    await engine.cancel(b["run_id"])
    async with asyncio.timeout(1.0):
        final_b = await engine.wait(b["run_id"])
    assert final_b["status"] == "cancelled"
    assert [s["status"] for s in final_b["steps"]] == ["skipped"]
    events = await events_of(store, b["run_id"])
    assert_log(events)
    assert names(events) == ["run_cancelled"]
    release.set()
    async with asyncio.timeout(TIMEOUT):
        assert (await engine.wait(a["run_id"]))["status"] == "completed"


# ---- the Python API ----------------------------------------------------------------


async def test_arun_background_returns_at_once(tmp_path: Path) -> None:
    step, started, release = gate()
    db = SqliteDb(db_file=str(tmp_path / "api" / "workflow.db"))
    wf = Workflow("Content", [Step("research", step)], description="demo", db=db)
    try:
        async with asyncio.timeout(TIMEOUT):
            out = await wf.arun(input="AI trends", background=True)
        assert out.status in (RunStatus.PENDING, RunStatus.RUNNING)
        assert RUN_ID_PATTERN.fullmatch(out.run_id)
        assert out.workflow == "Content"
        assert out.input == "AI trends"
        assert out.content is None
        assert not out.has_completed()

        run = wf.get_run(out.run_id)  # sync, from inside the running loop
        assert run is not None
        assert run.run_id == out.run_id
        assert run.status in ("pending", "running")
        assert not run.has_completed()
        arun = await wf.aget_run(out.run_id)
        assert arun is not None and arun.run_id == out.run_id and not arun.has_completed()
        assert wf.get_run("unknown-run") is None
        assert await wf.aget_run("unknown-run") is None

        async with asyncio.timeout(TIMEOUT):
            await started.wait()
        release.set()
        engine = await db.engine_for(wf)
        async with asyncio.timeout(TIMEOUT):
            await engine.wait(out.run_id)
        done = wf.get_run(out.run_id)
        assert done is not None
        assert done.has_completed()
        assert done.status == RunStatus.COMPLETED
        assert done.content == "AI trends"
        assert [s["status"] for s in done.steps] == ["completed"]
        adone = await wf.aget_run(out.run_id)
        assert adone is not None and adone.has_completed() and adone.content == "AI trends"
    finally:
        await db.close()


async def test_arun_waits_for_the_result(tmp_path: Path) -> None:
    async def research(step_input: StepInput) -> AsyncIterator[str]:
        yield "notes on "
        yield step_input.input

    def write(step_input: StepInput) -> str:
        return step_input.previous_step_content.upper()

    db = SqliteDb(db_file=str(tmp_path / "workflow.db"))
    wf = Workflow("Content", [Step("research", research), Step("write", write)], db=db)
    try:
        async with asyncio.timeout(TIMEOUT):
            out = await wf.arun(input="ai")
        assert out.status == RunStatus.COMPLETED
        assert out.has_completed()
        assert out.content == "NOTES ON AI"
        assert out.last_seq == 8
        assert [s["output"] for s in out.steps] == ["notes on ai", "NOTES ON AI"]
        assert out.finished_at is not None

        failing = Workflow("Broken", [Step("x", _raise_sync)], db=db)
        bad = await failing.arun(input=None)
        assert bad.status == RunStatus.FAILED
        assert bad.has_completed()
        assert "bad value 7" in bad.error
    finally:
        await db.close()


async def _release(runtimes: list[Any]) -> None:
    """Stop what a runtime left open in a loop that has ended (connection threads, file lock)."""
    for runtime in {id(r): r for r in runtimes if r is not None}.values():
        runtime.store.backend.abandon()
        runtime.engine._threads.shutdown(wait=True)


def test_arun_in_two_asyncio_runs(tmp_path: Path) -> None:
    db = SqliteDb(db_file=str(tmp_path / "two.db"))
    wf = Workflow("w", [Step("s", lambda si: si.input * 2)], db=db)
    runtimes: list[Any] = []

    async def once(value: int) -> Any:
        try:
            return await wf.arun(value)
        finally:
            runtimes.append(db._runtime)

    try:
        assert asyncio.run(once(1)).content == 2
        assert asyncio.run(once(2)).content == 4
    finally:
        asyncio.run(_release(runtimes))


def test_get_run_without_db_or_file(tmp_path: Path) -> None:
    wf = Workflow("w", [Step("s", lambda si: None)])
    with pytest.raises(RuntimeError, match="no db"):
        wf.get_run("x")
    wf.db = SqliteDb(db_file=str(tmp_path / "never-created.db"))
    assert wf.get_run("x") is None


# ---- recovery ----------------------------------------------------------------------


def crashy_workflow(calls: dict[str, int], attempts: list[int], started: asyncio.Event, **kw: Any) -> Workflow:
    """s1, s2, s3; s2 blocks forever on its first call (a crash will catch it there)."""

    async def s1(step_input: StepInput) -> str:
        calls["s1"] += 1
        return f"one({step_input.input})"

    async def s2(step_input: StepInput, ctx: StepContext) -> str:
        calls["s2"] += 1
        attempts.append(ctx.attempt)
        if calls["s2"] == 1:
            started.set()
            await asyncio.Event().wait()
        return step_input.previous_step_content + "+two"

    def s3(step_input: StepInput) -> str:
        calls["s3"] += 1
        return step_input.previous_step_content + "+three"

    return Workflow("crashy", [Step("s1", s1), Step("s2", s2), Step("s3", s3)], **kw)


async def _crash_in_step_two(env: Env, wf: Workflow, started: asyncio.Event) -> str:
    store, engine, _ = await env.open(wf)
    snapshot, _ = await engine.start("crashy", "x")
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    await env.stop(store, engine)
    return str(snapshot["run_id"])


async def test_recover_resumes_from_the_unfinished_step(env: Env) -> None:
    calls = {"s1": 0, "s2": 0, "s3": 0}
    attempts: list[int] = []
    started = asyncio.Event()
    wf = crashy_workflow(calls, attempts, started)
    run_id = await _crash_in_step_two(env, wf, started)

    store, engine, _ = await env.open(wf)
    crashed = await store.get_run(run_id)
    assert crashed is not None
    assert crashed["status"] == "running"
    assert [s["status"] for s in crashed["steps"]] == ["completed", "running", "pending"]
    assert names(await events_of(store, run_id)) == ["run_started", "step_started", "step_completed", "step_started"]

    assert await engine.recover() == 1
    assert await engine.recover() == 0  # already running: not launched twice
    async with asyncio.timeout(TIMEOUT):
        final = await engine.wait(run_id)
    assert calls == {"s1": 1, "s2": 2, "s3": 1}
    assert attempts == [1, 2]
    assert final["status"] == "completed"
    assert final["output"] == "one(x)+two+three"
    assert [s["attempts"] for s in final["steps"]] == [1, 2, 1]
    assert [s["status"] for s in final["steps"]] == ["completed", "completed", "completed"]
    events = await events_of(store, run_id)
    assert_log(events)
    assert names(events) == [
        "run_started",
        "step_started",
        "step_completed",
        "step_started",
        "run_resumed",
        "step_started",
        "step_completed",
        "step_started",
        "step_completed",
        "run_completed",
    ]
    assert events[4]["data"] == {"reason": "restart", "from_step": "s2"}
    assert events[4]["step"] is None
    assert (events[5]["step"], events[5]["data"]) == ("s2", {"index": 1, "attempt": 2})
    assert (events[7]["step"], events[7]["data"]) == ("s3", {"index": 2, "attempt": 1})
    assert events[-1]["data"] == {"output": "one(x)+two+three"}
    assert final["started_at"] == crashed["started_at"]


async def test_recover_with_on_crash_fail(env: Env) -> None:
    calls = {"s1": 0, "s2": 0, "s3": 0}
    attempts: list[int] = []
    started = asyncio.Event()
    wf = crashy_workflow(calls, attempts, started, on_crash="fail")
    run_id = await _crash_in_step_two(env, wf, started)

    store, engine, _ = await env.open(wf)
    assert await engine.recover() == 1
    async with asyncio.timeout(TIMEOUT):
        final = await engine.wait(run_id)
    assert calls == {"s1": 1, "s2": 1, "s3": 0}
    assert final["status"] == "failed"
    assert final["error"] == "interrupted"
    assert [s["status"] for s in final["steps"]] == ["completed", "failed", "skipped"]
    assert final["steps"][1]["error"] == "interrupted"
    events = await events_of(store, run_id)
    assert_log(events)
    assert names(events) == ["run_started", "step_started", "step_completed", "step_started", "run_failed"]
    assert events[-1]["data"] == {"error": "interrupted"}
    assert await store.unfinished_runs() == []


async def test_recover_unregistered_workflow_fails_the_run(env: Env) -> None:
    calls = {"s1": 0, "s2": 0, "s3": 0}
    started = asyncio.Event()
    run_id = await _crash_in_step_two(env, crashy_workflow(calls, [], started), started)
    store, engine, _ = await env.open()  # the workflow is gone
    assert await engine.recover() == 1
    final = await engine.wait(run_id)
    assert final["status"] == "failed"
    assert final["error"].startswith("interrupted")
    assert "crashy" in final["error"]
    assert_log(await events_of(store, run_id))


async def test_recover_pending_and_running_runs(env: Env) -> None:
    calls = {"s1": 0, "s2": 0, "s3": 0}
    started = asyncio.Event()
    wf = crashy_workflow(calls, [], started)
    store, engine, _ = await env.open(wf, max_running=1)
    first, _ = await engine.start("crashy", "a")
    second, _ = await engine.start("crashy", "b")  # waits for a slot
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    await env.stop(store, engine)

    store, engine, _ = await env.open(wf)
    assert [r["run_id"] for r in await store.unfinished_runs()] == [first["run_id"], second["run_id"]]
    assert await engine.recover() == 2
    async with asyncio.timeout(TIMEOUT):
        final_first = await engine.wait(first["run_id"])
        final_second = await engine.wait(second["run_id"])
    assert final_first["output"] == "one(a)+two+three"
    assert final_second["output"] == "one(b)+two+three"
    first_events = await events_of(store, first["run_id"])
    second_events = await events_of(store, second["run_id"])
    assert_log(first_events)
    assert_log(second_events)
    assert names(first_events).count("run_resumed") == 1
    # the pending run had never started: it starts now, once, and is not "resumed"
    assert names(second_events)[0] == "run_started"
    assert "run_resumed" not in names(second_events)
    assert names(second_events).count("run_started") == 1
    assert calls == {"s1": 2, "s2": 3, "s3": 2}
    assert await store.unfinished_runs() == []


async def test_shutdown_writes_nothing_and_refuses_new_runs(env: Env) -> None:
    step, started, _ = gate()
    store, engine, recorder = await env.open(Workflow("w", [Step("s", step)]))
    snapshot, _ = await engine.start("w")
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    await recorder.wait_for(snapshot["run_id"], "step_started")
    before = await store.get_run(snapshot["run_id"])
    await engine.shutdown()
    with pytest.raises(RuntimeError, match="shutting down"):
        await engine.start("w")
    await barrier(store)
    after = await store.get_run(snapshot["run_id"])
    assert before is not None and after is not None
    assert after["status"] == "running"
    assert after["last_seq"] == before["last_seq"] == 2


async def test_wait_returns_the_final_state_of_many_concurrent_runs(env: Env) -> None:
    """engine.wait() must never hand back a stale snapshot (reads share one connection)."""

    async def quick(step_input: StepInput) -> int:
        await asyncio.sleep(0)
        return 1

    _, engine, _ = await env.open(Workflow("q", [Step("a", quick), Step("b", quick), Step("c", quick)]))
    started = await asyncio.gather(*(engine.start("q", i) for i in range(300)))
    finals = await asyncio.gather(*(engine.wait(snapshot["run_id"]) for snapshot, _ in started))
    assert {f["status"] for f in finals} == {"completed"}
    assert {f["last_seq"] for f in finals} == {8}


# ---- a step's history ----------------------------------------------------------------


async def test_history_is_empty_on_a_first_try_and_holds_earlier_tries(env: Env) -> None:
    seen: list[list[tuple[str, Any]]] = []

    async def flaky(step_input: StepInput, ctx: StepContext) -> int:
        seen.append([(event, data.get("n")) for event, data in await ctx.history()])
        ctx.progress(n=ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("again")
        return ctx.attempt

    def threaded(step_input: StepInput, ctx: StepContext) -> int:
        return len(ctx.history_sync())

    _, engine, _ = await env.open(
        Workflow("w", [Step("flaky", flaky, max_retries=2, retry_delay=0), Step("count", threaded)])
    )
    final, _ = await run_to_end(engine, "w")
    assert seen[0] == []
    assert seen[2] == [
        ("step_started", None),
        ("progress", 1),
        ("step_failed", None),
        ("step_started", None),
        ("progress", 2),
        ("step_failed", None),
        ("step_started", None),
    ]
    assert final["output"] == 0  # a step's first try sees nothing, whatever ran before it


async def test_history_starts_after_the_step_last_completed(env: Env) -> None:
    from server import Loop

    seen: list[int] = []

    async def body(step_input: StepInput, ctx: StepContext) -> int:
        seen.append(len(await ctx.history()))
        return ctx.attempt

    _, engine, _ = await env.open(Workflow("w", [Loop("again", [Step("body", body)], max_iterations=3)]))
    await run_to_end(engine, "w")
    assert seen == [0, 1, 1]  # each iteration sees only its own step_started


async def test_a_run_whose_end_cannot_be_stored_ends_failed_saying_why(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, engine, _ = await env.open(Workflow("w", [Step("s", lambda si: "done")]))
    real = store.append_nowait

    def refuse_completion(run_id: str, event: str, *args: Any, **kwargs: Any) -> asyncio.Future[int]:
        if event == "run_completed":  # not a passing fault: the writer will not outlast it
            failed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            failed.set_exception(ValueError("cannot encode this"))
            return failed
        return real(run_id, event, *args, **kwargs)

    monkeypatch.setattr(store, "append_nowait", refuse_completion)
    snapshot, _ = await engine.start("w")
    async with asyncio.timeout(TIMEOUT):
        final = await engine.wait(snapshot["run_id"])
    assert final["status"] == "failed" and "the run's end could not be stored" in final["error"], final
    assert_log(await events_of(store, snapshot["run_id"]))
