"""People in the loop: answers (`respond`), timeouts and cancels of runs that wait, which
hold no task: whichever node takes one of those up claims the run, records it, and goes
on with the run if it may. A part of `Engine` (its base class), kept apart as one idea."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .. import tracing
from ..bounds import EventTooLarge, check_event_size
from ..jsontext import to_json_value
from ..protocol import Conflict, ErrorCode, InvalidInput, RuncastError, RunNotFound
from ..store import RunStore
from ..store.base import wake_at
from ..vocabulary import SUSPENDED
from ..workflow import RunStatus, Workflow
from .asks import AnswerChecks, Deadlines, RunLocks, expired, not_waiting, open_request, slept_enough
from .cluster import Cluster
from .context import Request, Sleep
from .runs import ActiveRun, copy_run, record

log = logging.getLogger("runcast.engine")

T = TypeVar("T")
Still = Callable[[dict[str, Any]], bool]  # is what an event would close still open in this run?

HOLD_SLACK_SECONDS = 5.0  # past the takeover time, how long to wait for a waiting run another node holds


class Answering:
    """Answers, timeouts and cancels of waiting runs (see Engine)."""

    store: RunStore
    cluster: Cluster | None
    workflows: dict[str, Workflow]
    max_event_bytes: int
    _held: RunLocks
    _answer_check: AnswerChecks
    _background: set[asyncio.Task[Any]]
    _active: dict[str, ActiveRun]
    _stopping: bool

    _deadlines: Deadlines

    if TYPE_CHECKING:  # Engine's own

        def _launch(
            self, workflow: Workflow, row: dict[str, Any], *, resumed: bool, reason: str = ..., continued: bool = ...
        ) -> None: ...
        async def _end_here(
            self, row: dict[str, Any], status: RunStatus, *, error: str | None = None, by: str | None = None
        ) -> None: ...
        async def _end_unresumable(self, row: dict[str, Any], error: str) -> None: ...

    async def _suspend(self, run: ActiveRun, requests: list[Request | Sleep]) -> None:
        """The run has nothing left to do but wait for answers or times: store its requests
        and sleeps (each `input_requested` or `sleep_started` with the state so far, which
        makes the run `waiting` or `sleeping`) and end its task; it holds no slot and no
        thread, and in a cluster no owner."""
        row = run.row
        run_id = row["run_id"]
        now = time.time()
        committed: asyncio.Future[int] | None = None
        for request in requests:
            await self.store.backlog()
            kind = "sleep" if isinstance(request, Sleep) else "ask"
            with tracing.span(f"{kind} {request.step}", {"runcast.step": request.step}):
                pass  # (a mark in the trace: the run waits from here, holding nothing)
            if isinstance(request, Sleep):
                if not request.stored:
                    committed = record(self.store, row, "sleep_started", request.step, {"until": request.until})
                continue
            if request.timeout is not None and request.expires_at is None:
                request.expires_at = now + request.timeout
            committed = record(self.store, row, "input_requested", request.step, request.data())
        assert committed is not None, "a run waits only for what a step asked, or a sleep it began"
        await committed
        self.store.release(run_id)
        log.info(
            "run_id=%s workflow=%s status=%s requests=%d wake_at=%s",
            *(run_id, row["workflow"], row["status"], len(row["waiting_for"]), row.get("wake_at")),
        )
        if wake_at(row) is not None and not self._stopping:
            self._deadlines.start()  # (an engine used without recover() has not started it)
            self._deadlines.wake()

    async def respond(self, run_id: str, request_id: str, value: Any, by: str | None = None) -> dict[str, Any]:
        """Answer a request of a waiting run (`by`: the sub of who answers): RunNotFound,
        Conflict (it does not wait for that request), InvalidInput (the value does not fit
        the request's schema; it keeps waiting). Returns the snapshot with the answer
        recorded; once a run has all its answers it goes on, here."""
        value = to_json_value(value)
        try:
            check_event_size("the answer", value, self.max_event_bytes)
        except EventTooLarge as exc:
            raise InvalidInput(str(exc)) from None
        return await self._to_the_end(self._respond(run_id, request_id, value, by))

    async def _respond(self, run_id: str, request_id: str, value: Any, by: str | None) -> dict[str, Any]:
        async with self._held.hold(run_id):
            snapshot = await self._waiting_run(run_id)
            request = open_request(snapshot, request_id)
            if request is None:
                raise Conflict(not_waiting(snapshot, request_id))
            if request.get("schema") is not None:
                self._answer_check(request["schema"])(value)
            data = {"request_id": request_id, "value": value, "by": by}
            answered = await self._record_answer(snapshot, request_id, data)
        if answered is None:
            raise Conflict(f"run {run_id!r} is no longer waiting for request {request_id!r}")
        return answered

    async def _to_the_end(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` to its end even if the caller goes away (a client that disconnects
        mid-answer): a run taken or answered must also be released or continued."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._ended_alone)
        return await asyncio.shield(task)

    def _ended_alone(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:  # seen: its caller may be gone
            log.debug("an answer or cancel ended with %r", task.exception())

    async def _settled(self, run_id: str) -> None:
        """If this node's run is storing its requests right now, wait until it has."""
        run = self._active.get(run_id)
        if run is not None and run.row["status"] in SUSPENDED:
            await asyncio.shield(run.done)

    async def _waiting_run(self, run_id: str) -> dict[str, Any]:
        await self._settled(run_id)
        snapshot = await self.store.get_run(run_id)
        if snapshot is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        return snapshot

    async def _record_answer(
        self, snapshot: dict[str, Any], request_id: str, data: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Store `input_received` (the request no longer open) and go on with the run here
        if it may; None if, in a cluster, another node closed the request first."""
        request = open_request(snapshot, request_id)
        assert request is not None
        still = lambda row: open_request(row, request_id) is not None  # noqa: E731
        answered = await self._close(snapshot, "input_received", request["step"], data, still)
        if answered is not None:
            how = " (timed out)" if data.get("timed_out") else ""
            log.info("run_id=%s request %s answered%s", answered["run_id"], request_id, how)
        return answered

    async def _close(
        self, snapshot: dict[str, Any], event: str, step: str, data: dict[str, Any], still: Still
    ) -> dict[str, Any] | None:
        """Store `event`, which closes one request or sleep of a suspended run (while
        `still(run)` says it is open), with the run's new state (with nothing else open,
        `running` again), and go on with the run here if it may. None if, in a cluster,
        another node closed it first."""
        run_id = snapshot["run_id"]
        if self.cluster is not None:
            held = await self._claim_waiting(run_id, still)
            if held is None:
                return None
            snapshot = held
        state = snapshot
        try:
            await self.store.backlog()
            seq = await record(self.store, state, event, step, data)
        except BaseException:
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    await self.cluster.coordination.release(run_id)
            raise
        state["last_seq"] = seq
        closed = copy_run(state)
        if state["status"] in SUSPENDED:
            self.store.release(run_id)
            if self.cluster is not None:
                self.cluster.coordination.forget(run_id)  # that write let go of it (see PostgresBackend)
        else:
            await self._go_on(state)
        return closed

    async def _go_on(self, row: dict[str, Any]) -> None:
        """Continue a run that has had all its answers (this node holds it)."""
        workflow = self.workflows.get(row["workflow"])
        if self._stopping:
            return  # stored `running`: it resumes at the next start (or on another node)
        if workflow is not None:
            self._launch(workflow, row, resumed=False, continued=True)
            return
        if self.cluster is not None:  # a node that has its workflow takes it up, as after a restart
            await self.cluster.coordination.release(row["run_id"])
            self.cluster.nudge_others()
            return
        task = asyncio.create_task(
            self._end_unresumable(row, f"interrupted: workflow {row['workflow']!r} is not registered")
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _claim_waiting(self, run_id: str, still: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """In a cluster: take a waiting run for this node, so that one node at a time writes
        it (the store's fencing makes a loser's write fail). Waits while another node holds
        it (answering it too), bounded; None once it no longer passes `still`."""
        assert self.cluster is not None
        coordination = self.cluster.coordination
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cluster.takeover_seconds + HOLD_SLACK_SECONDS
        while True:
            row = await coordination.claim_waiting(run_id, self.cluster.takeover_seconds)
            if row is not None:
                self.store.release(run_id)  # its last seq is read afresh: another node wrote since
                if still(row):
                    return row
                await coordination.release(run_id)
                return None
            snapshot = await self.store.get_run(run_id)
            if snapshot is None or snapshot["status"] not in SUSPENDED or not still(snapshot):
                return None
            if loop.time() > deadline:
                raise RuncastError(f"run {run_id!r} is busy on another node; try again", ErrorCode.OVERLOADED)
            await asyncio.sleep(0.05)

    async def _cancel_waiting(self, run_id: str, by: str | None) -> dict[str, Any] | None:
        """End a waiting or sleeping run cancelled, here and now; None if it is no longer
        suspended (it went on meanwhile: cancel it as a running run)."""
        async with self._held.hold(run_id):
            row = await self._waiting_run(run_id)
            if row["status"] not in SUSPENDED:
                return None
            if self.cluster is not None:
                held = await self._claim_waiting(run_id, lambda _row: True)
                if held is None:
                    return None
                row = held
            await self._end_here(row, RunStatus.CANCELLED, by=by)
            return copy_run(row)

    async def _expire(self, run_id: str) -> None:
        """Close what is due in one suspended run: its expired requests (each as if
        answered) and its ended sleeps (each with `sleep_ended`)."""
        async with self._held.hold(run_id):
            snapshot: dict[str, Any] | None = await self._waiting_run(run_id)
            while snapshot is not None and snapshot["status"] in SUSPENDED:
                now = time.time()
                request = next((w for w in snapshot["waiting_for"] if expired(w, now)), None)
                if request is not None:
                    data = {"request_id": request["request_id"], "value": request.get("default"), "by": None}
                    snapshot = await self._record_answer(snapshot, request["request_id"], {**data, "timed_out": True})
                    continue
                step = next((st for st in snapshot["steps"] if slept_enough(st, now)), None)
                if step is None:
                    return
                path, until = step["name"], step["wake_at"]
                snapshot = await self._close(snapshot, "sleep_ended", path, {}, functools.partial(sleeps, path, until))
                if snapshot is not None:
                    log.info("run_id=%s step %s woke (it slept until %s)", run_id, path, until)


def sleeps(path: str, until: str, run: dict[str, Any]) -> bool:
    """True while step `path` of `run` still sleeps until `until`."""
    return any(st["name"] == path and st.get("wake_at") == until for st in run["steps"])
