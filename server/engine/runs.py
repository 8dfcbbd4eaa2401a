"""A run as data: its first state, its steps', a copy that its later changes do not reach,
and the in-memory record of a run this node executes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import fold, tracing
from ..jsontext import canonical_json
from ..protocol import Conflict
from ..store import RunStore
from ..wire import utc_now
from ..workflow import Node, Workflow, walk
from .context import History, StepContext

_id_clock = {"ms": 0, "n": 0}


def new_run_id() -> str:
    """A unique id that sorts by creation time (milliseconds, a counter, then randomness)."""
    ms = time.time_ns() // 1_000_000
    if ms <= _id_clock["ms"]:
        ms = _id_clock["ms"]
        _id_clock["n"] += 1
    else:
        _id_clock["ms"], _id_clock["n"] = ms, 0
    return f"{ms:012x}{_id_clock['n']:04x}{os.urandom(3).hex()}"


@dataclass(frozen=True, slots=True)
class Order:
    """When and in which order a run may start (contract 8.2)."""

    scheduled_for: str | None = None  # not before (a wire time); None: at once
    priority: int = 0  # among due pending runs, higher first
    concurrency_key: str | None = None  # at most `concurrency_limit` running with one key
    concurrency_limit: int | None = None


AT_ONCE = Order()  # no delay, priority 0, no key


def new_run(
    run_id: str, workflow: Workflow, input: Any, steps: Sequence[Node], owner: str | None = None, order: Order = AT_ONCE
) -> dict[str, Any]:
    paths = [path for path, _ in walk(steps)]
    return fold.new_run(
        run_id,
        workflow.name,
        input,
        paths,
        utc_now(),
        owner,
        scheduled_for=order.scheduled_for,
        priority=order.priority,
        concurrency_key=order.concurrency_key,
        concurrency_limit=order.concurrency_limit,
    )


@dataclass
class ActiveRun:
    workflow: Workflow
    row: dict[str, Any]
    resumed: bool
    reason: str = "restart"  # of its run_resumed: "restart", or "takeover" from another node
    task: asyncio.Task[None] | None = None
    contexts: set[StepContext] = field(default_factory=set)  # of the steps running now
    cancel_requested: bool = False
    lost: bool = False  # another node owns it now
    began: bool = False  # its task has started running (a task cancelled before that runs nothing)
    continued: bool = False  # it goes on after the answers it waited for (no run_started/run_resumed)
    cancelled_by: str | None = None  # the sub of who cancelled it (its run_cancelled's `by`)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def record(store: RunStore, row: dict[str, Any], event: str, step: str | None, data: Any) -> asyncio.Future[int]:
    """The one way a run changes: fold the event into `row` (fold.py says how) and queue it
    with a copy of the new state, at once (no await between, so nothing else is folded in
    between). Returns the future of its seq."""
    ts = utc_now()
    fold.fold(row, {"event": event, "step": step, "ts": ts, "data": data})
    return store.append_nowait(row["run_id"], event, step, data, copy_run(row), ts=ts)


def the_same(existing: dict[str, Any], workflow: str, input: Any, owner: str | None) -> dict[str, Any]:
    """The existing run, if a start of `workflow` with `input` by `owner` would have made the
    same one (inputs compared as JSON: `true` is not `1`, `1.0` is not `1`, key order aside);
    else Conflict (a run id another owner's run has is taken, whatever its input)."""
    if existing.get("owner") != owner:
        raise Conflict(f"run id {existing['run_id']!r} is taken; choose another")
    if existing["workflow"] != workflow or canonical_json(existing["input"]) != canonical_json(input):
        raise Conflict(f"run {existing['run_id']!r} exists with a different workflow or input")
    return existing


def copy_run(row: dict[str, Any]) -> dict[str, Any]:
    """A copy that the run's own later changes do not reach."""
    out = dict(row)
    out["steps"] = [dict(s) for s in row["steps"]]
    out["waiting_for"] = list(row.get("waiting_for") or [])
    return out


def align_steps(paths: list[str], stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored step states in the plan's order (a step added since starts fresh)."""
    by_name = {st["name"]: st for st in stored}
    return [by_name.get(path) or fold.new_step(path) for path in paths]


async def step_history(store: RunStore, run_id: str, path: str) -> History:
    """The stored events of step `path` of a run since it last completed, as (event,
    data), oldest first: what a step that is run again had done before."""
    await store.flush()  # what this node queued counts too
    found: History = []
    after = 0
    while page := await store.read_events(run_id, after, 1000):
        for event in page:
            frame = orjson.loads(event.frame)
            if frame.get("step") != path:
                continue
            if event.event == "step_completed":
                found = []
            else:
                found.append((event.event, frame.get("data") or {}))
        after = page[-1].seq
    return found


async def run_trace(store: RunStore, run_id: str, workflow: str, *, fresh: bool) -> dict[str, Any]:
    """With tracing on, put the run's task in the run's trace: a fresh run's new one (its
    `traceparent` returned as `run_started`'s `trace` field), or, for a run going on, the one
    its `run_started` stored. {} when tracing is off (and then nothing is read)."""
    if not tracing.on():
        return {}
    if fresh:
        traceparent = tracing.begin_run(run_id, workflow)
        tracing.enter_run(traceparent, run_id)
        return {"trace": traceparent} if traceparent else {}
    first = await store.read_events(run_id, 0, 1)
    if first and first[0].event == "run_started":
        tracing.enter_run((orjson.loads(first[0].frame).get("data") or {}).get("trace"), run_id)
    return {}
