"""The engine runs workflows in the background and is the one place a run changes state.

Every change is recorded through the store (which numbers the events and commits them
in batches); nothing here talks to sockets. On start it continues the runs a crash left
unfinished. A run whose steps asked for input waits with no task at all (`waiting`):
an answer (`respond`), a cancel or a timeout takes it up again, on whichever node.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from ..bounds import EventTooLarge, check_event_size, clip_error
from ..protocol import (
    RUN_ID_PATTERN,
    BadRequest,
    Conflict,
    ErrorCode,
    InvalidInput,
    RuncastError,
    RunNotFound,
    UnknownWorkflow,
    canonical_json,
    to_json_value,
    utc_now,
)
from ..settings import Settings
from ..store import RunExists, RunLost, RunStore
from ..vocabulary import TERMINAL_EVENT
from ..workflow import FINISHED, Node, RunStatus, Step, StepStatus, Workflow, walk
from .asks import AnswerChecks, Deadlines, RunLocks, expired, not_waiting, open_request
from .cluster import Cluster
from .context import History, Request, StepContext, Suspended
from .runner import Rejected, StepFailure, StepRunner, error_text, is_cancel
from .threads import StepThreads

log = logging.getLogger("runcast.engine")

T = TypeVar("T")

HOLD_SLACK_SECONDS = 5.0  # past the takeover time, how long to wait for a waiting run another node holds


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


def _new_run(run_id: str, workflow: Workflow, input: Any, steps: Sequence[Node]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "workflow": workflow.name,
        "status": RunStatus.PENDING.value,
        "input": input,
        "output": None,
        "error": None,
        "created_at": utc_now(),
        "started_at": None,
        "finished_at": None,
        "last_seq": 0,
        "steps": [_new_step(path) for path, _ in walk(steps)],
        "waiting_for": [],
    }


def _new_step(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "status": StepStatus.PENDING.value,
        "output": None,
        "error": None,
        "attempts": 0,
        "started_at": None,
        "finished_at": None,
    }


@dataclass
class _ActiveRun:
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
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Engine:
    """Starts, runs, cancels and resumes runs; records every change through the store."""

    def __init__(
        self,
        store: RunStore,
        workflows: Iterable[Workflow] = (),
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings()
        max_running, takeover_seconds = settings.max_running, settings.takeover_seconds
        self.store = store
        self.max_event_bytes = settings.limits.max_event_bytes
        self.workflows: dict[str, Workflow] = {}
        for wf in workflows:
            self.register(wf)
        self.max_running = max_running
        self._slots = asyncio.Semaphore(max_running)
        self._threads = StepThreads(settings.step_threads)
        self._active: dict[str, _ActiveRun] = {}
        self._creating: dict[str, asyncio.Future[None]] = {}
        self._taking: set[str] = set()  # new runs this node took a slot for, not yet launched
        self._stopping = False
        self._background: set[asyncio.Task[Any]] = set()
        self._held = RunLocks()  # waiting runs being answered, cancelled or expired here
        self._answer_check = AnswerChecks()
        self.cluster: Cluster | None = None
        if store.coordination is not None:  # a shared database: runs are claimed, not just started
            self.cluster = Cluster(
                store.coordination,
                takeover_seconds=takeover_seconds,
                free_slots=lambda: self.max_running - len(self._active) - len(self._taking),
                workflows=lambda: list(self.workflows),
                adopt=self._adopt,
                cancel=self.cancel,
            )
            store.add_lost_listener(self._lost)
        self._deadlines = Deadlines(store, lambda: list(self.workflows), self._expire)
        if self.cluster is not None:
            self._deadlines.every = self.cluster.beat_seconds

    def register(self, workflow: Workflow) -> None:
        """Make a workflow startable by name; a second one with the same name replaces it."""
        self.workflows[workflow.name] = workflow

    @property
    def active_count(self) -> int:
        return len(self._active)

    def status_counts(self) -> dict[str, int]:
        """How many runs in memory are pending and how many running."""
        counts = {RunStatus.PENDING.value: 0, RunStatus.RUNNING.value: 0}
        for run in self._active.values():
            status = run.row["status"]
            if status in counts:
                counts[status] += 1
        return counts

    # ---- starting --------------------------------------------------------------------

    async def start(self, name: str, input: Any = None, run_id: str | None = None) -> tuple[dict[str, Any], bool]:
        """Create a run and start it in the background once it is stored.

        Returns (snapshot, existing): with a caller-given run_id that already names the
        same workflow and input, the existing run and True, and nothing is started.
        """
        if self._stopping:
            raise RuntimeError("the engine is shutting down")
        if self.store.degraded is not None:
            raise RuncastError(f"not starting runs now: {self.store.degraded}; try again later", ErrorCode.OVERLOADED)
        workflow = self.workflows.get(name)
        if workflow is None:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise UnknownWorkflow(f"no workflow named {name!r}; known workflows: {known}")
        steps = workflow.steps_for(workflow.checked_input(input))
        input = to_json_value(input)
        if run_id is None:  # a fresh id of ours: nothing to look up
            row = _new_run(new_run_id(), workflow, input, steps)
            await self._create(workflow, row)
            return dict(row), False
        if not RUN_ID_PATTERN.fullmatch(run_id):
            raise BadRequest("run_id must be 1 to 64 characters of A-Z a-z 0-9 _ - . :")
        while run_id in self._creating:  # the same id in flight: wait, then compare
            await asyncio.shield(self._creating[run_id])
        creating: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._creating[run_id] = creating
        try:
            existing = await self.store.get_run(run_id)
            if existing is not None:
                return _the_same(existing, name, input), True
            row = _new_run(run_id, workflow, input, steps)
            try:
                await self._create(workflow, row, launch=False)
            except RunExists:  # started through another node at the same moment: the database chose that one
                existing = await self.store.get_run(run_id)
                if existing is None:  # deleted since (retention): a start that raced a prune
                    raise Conflict(f"run {run_id!r} was being created and deleted at once; try again") from None
                return _the_same(existing, name, input), True
        finally:
            del self._creating[run_id]
            creating.set_result(None)
        self._begin(workflow, row)
        log.debug("run_id=%s workflow=%s status=pending", run_id, name)
        return dict(row), False

    async def _create(self, workflow: Workflow, row: dict[str, Any], *, launch: bool = True) -> None:
        """Store a new run; in a cluster this node owns it only if it has a free slot (else
        it waits `pending` for whichever node has one)."""
        run_id = row["run_id"]
        if self.cluster is not None and self.cluster.free_slots_now() > 0:
            # Counted at once: starts that overlap while this one is stored must not take the same slot.
            self.cluster.coordination.take_new(run_id)
            self._taking.add(run_id)
        try:
            await self.store.create_run(row)
        except BaseException:
            if run_id in self._taking:
                self._taking.discard(run_id)
                if run_id not in self._active:  # not the run of that id this node runs already
                    self._forget(run_id)
            raise
        if launch:
            self._begin(workflow, row)

    def _begin(self, workflow: Workflow, row: dict[str, Any]) -> None:
        if self.cluster is None or self.cluster.coordination.owns(row["run_id"]):
            self._launch(workflow, row, resumed=False)
        else:
            self.cluster.nudge_others()

    def _adopt(self, row: dict[str, Any], takeover: bool) -> None:
        """A run this node claimed: continue it as after a restart (or a takeover)."""
        workflow = self.workflows.get(row["workflow"])
        if row["run_id"] in self._active:
            return
        if workflow is None or workflow.on_crash == "fail":
            error = "interrupted" if workflow else f"interrupted: workflow {row['workflow']!r} is not registered"
            task = asyncio.create_task(self._end_unresumable(row, error))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        self._launch(workflow, row, resumed=row["last_seq"] > 0, reason="takeover" if takeover else "restart")

    def _lost(self, run_ids: set[str]) -> None:
        """Another node owns these runs now: stop them here, writing nothing more."""
        for run_id in run_ids:
            run = self._active.get(run_id)
            if run is not None and run.task is not None:
                log.warning("run %s is owned by another node now; stopping it here", run_id)
                run.lost = True
                for context in run.contexts:
                    context._cancel()
                run.task.cancel()

    def _launch(
        self,
        workflow: Workflow,
        row: dict[str, Any],
        *,
        resumed: bool,
        reason: str = "restart",
        continued: bool = False,
    ) -> None:
        self._taking.discard(row["run_id"])
        run = _ActiveRun(workflow, row, resumed, reason, continued=continued)
        self._active[row["run_id"]] = run
        run.task = asyncio.create_task(self._execute(run), name=f"runcast-run-{row['run_id']}")

    async def recover(self, only: set[str] | None = None) -> int:
        """Continue every run a crash left pending or running (of the `only` workflows,
        if given); returns how many. In a cluster: take what this node has room for, and
        keep taking (free runs, and the runs of nodes that went silent)."""
        self._deadlines.start()
        self._deadlines.wake()  # a workflow registered since: its expired requests too
        if self.cluster is not None:
            count = await self.cluster.claim_now()
            self.cluster.start()
            return count
        count = 0
        for row in await self.store.unfinished_runs():
            if row["run_id"] in self._active or (only is not None and row["workflow"] not in only):
                continue
            count += 1
            workflow = self.workflows.get(row["workflow"])
            if workflow is None:
                await self._end_unresumable(row, f"interrupted: workflow {row['workflow']!r} is not registered")
            elif workflow.on_crash == "fail":
                await self._end_unresumable(row, "interrupted")
            else:
                self._launch(workflow, row, resumed=row["last_seq"] > 0)
        if count:
            log.info("recovered %d unfinished run(s)", count)
        return count

    async def _end_unresumable(self, row: dict[str, Any], error: str) -> None:
        for st in row["steps"]:
            if st["status"] == StepStatus.RUNNING:
                st.update(status=StepStatus.FAILED.value, error=error, finished_at=utc_now())
        await self._end_here(row, RunStatus.FAILED, error=error)

    async def _end_here(self, row: dict[str, Any], status: RunStatus, *, error: str | None = None) -> None:
        """End a run that no task of this node runs (it cannot resume, or it waits); its
        workflow plays no part in that."""
        try:
            await self._finish(_ActiveRun(Workflow(row["workflow"], []), row, resumed=True), status, error=error)
        finally:
            self._forget(row["run_id"])

    # ---- running ---------------------------------------------------------------------

    async def _execute(self, run: _ActiveRun) -> None:
        run_id = run.row["run_id"]
        run.began = True
        try:
            if run.cancel_requested:  # cancelled before its task ever ran
                raise asyncio.CancelledError
            async with self._slots:
                await self._run_steps(run)
        except asyncio.CancelledError as exc:
            if run.lost:
                return
            if run.cancel_requested:
                await self._finish(run, RunStatus.CANCELLED)
            elif is_cancel(exc):
                raise  # shutting down: the run stays unfinished and resumes on restart
            else:
                await self._fail_inside(run, exc)
        except RunLost:
            pass  # another node took it over (see _lost): it goes on there
        except BaseException as exc:  # whatever a workflow's code raises, the run ends and the server stays up
            await self._fail_inside(run, exc)
        finally:
            self._active.pop(run_id, None)
            if not run.done.done():
                run.done.set_result(None)
            self._forget(run_id)

    def _forget(self, run_id: str) -> None:
        if self.cluster is not None and not self._stopping:
            self.cluster.coordination.forget(run_id)
            self.cluster.wake()  # a slot is free: take the next waiting run

    async def _fail_inside(self, run: _ActiveRun, exc: BaseException) -> None:
        log.error("run %s failed outside its steps", run.row["run_id"], exc_info=exc)
        await self._finish(run, RunStatus.FAILED, error=f"internal error: {error_text(exc)}")

    def _state(self, run: _ActiveRun) -> dict[str, Any]:
        # A copy: the writer encodes it later, and the run moves on meanwhile.
        return _copy(run.row)

    async def _record(self, run: _ActiveRun, event: str, step: str | None, data: Any, *, changed: bool = True) -> None:
        await self.store.backlog()
        self.store.emit(run.row["run_id"], event, step, data, self._state(run) if changed else None)

    def _emit_from_step(self, run: _ActiveRun, step: str, event: str, data: dict[str, Any]) -> None:
        if run.row["status"] == RunStatus.RUNNING:  # a late thread message after the end is dropped
            self.store.emit(run.row["run_id"], event, step, data)

    async def _run_steps(self, run: _ActiveRun) -> None:
        row, workflow = run.row, run.workflow
        try:
            checked = workflow.checked_input(row["input"])
        except InvalidInput as exc:
            await self._finish(run, RunStatus.FAILED, error=exc.message)
            return
        plan = workflow.steps_for(checked)
        nodes = list(walk(plan))
        steps = row["steps"] = _align_steps([path for path, _ in nodes], row["steps"])
        row["status"] = RunStatus.RUNNING.value
        if run.continued:
            pass  # its last input_received (stored with this state) marks where it goes on
        elif run.resumed:
            # The first step (not group) that had not completed is where the run goes on.
            from_step = next(
                (
                    path
                    for (path, node), st in zip(nodes, steps, strict=True)
                    if isinstance(node, Step) and st["status"] != StepStatus.COMPLETED
                ),
                None,
            )
            await self._record(run, "run_resumed", None, {"reason": run.reason, "from_step": from_step})
        else:
            row["started_at"] = utc_now()
            await self._record(run, "run_started", None, {"workflow": workflow.name, "input": row["input"]})

        async def record(event: str, step: str | None, data: Any) -> None:
            await self._record(run, event, step, data)

        async def stream_delta(step: str, delta: str) -> None:
            await self.store.backlog()
            self.store.emit(row["run_id"], "step_output", step, {"delta": delta})

        runner = StepRunner(
            run_id=row["run_id"],
            input=checked,
            plan=plan,
            states=steps,
            record=record,
            emit=functools.partial(self._emit_from_step, run),
            stream_delta=stream_delta,
            backlog=self.store.backlog,
            threads=self._threads,
            contexts=run.contexts,
            max_event_bytes=self.max_event_bytes,
            earlier=functools.partial(self.step_history, row["run_id"]),
            continued=run.continued,
        )
        try:
            outcome = await runner.run()
        except StepFailure as failure:
            await self._finish(run, RunStatus.FAILED, error=str(failure))
            return
        except Suspended:
            await self._suspend(run, runner.requests)
            return
        except Rejected as rejected:
            log.info("run_id=%s step %s was not confirmed: cancelling the run", row["run_id"], rejected.path)
            await self._finish(run, RunStatus.CANCELLED)
            return
        await self._finish(run, RunStatus.COMPLETED, output=outcome.content)

    async def _suspend(self, run: _ActiveRun, requests: list[Request]) -> None:
        """The run has nothing left to do but wait for answers: store its requests (each
        `input_requested` with the state so far, the first making the run `waiting`) and
        end its task; it holds no slot and no thread, and in a cluster no owner."""
        row = run.row
        run_id = row["run_id"]
        row["status"] = RunStatus.WAITING.value
        waiting: list[dict[str, Any]] = list(row.get("waiting_for") or [])
        row["waiting_for"] = waiting
        now = time.time()
        committed: asyncio.Future[int] | None = None
        for request in requests:
            if request.timeout is not None and request.expires_at is None:
                request.expires_at = now + request.timeout
            data = request.data()
            if all(w["request_id"] != request.request_id for w in waiting):
                waiting.append({**data, "step": request.step})
            await self.store.backlog()
            committed = self.store.append_nowait(run_id, "input_requested", request.step, data, self._state(run))
        assert committed is not None, "a run waits only for what a step asked"
        await committed
        self.store.release(run_id)
        log.info("run_id=%s workflow=%s status=waiting requests=%d", run_id, row["workflow"], len(waiting))
        if any(w.get("expires_at") is not None for w in waiting):
            self._deadlines.wake()

    async def step_history(self, run_id: str, path: str) -> History:
        """The stored events of step `path` of a run since it last completed, as (event,
        data), oldest first: what a step that is run again had done before."""
        await self.store.flush()  # what this node queued counts too
        found: History = []
        after = 0
        while page := await self.store.read_events(run_id, after, 1000):
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

    async def _finish(
        self, run: _ActiveRun, status: RunStatus, *, output: Any = None, error: str | None = None
    ) -> None:
        """End a run: its final state and its one terminal event, committed together. If
        that cannot be stored (not a passing fault, which the writer outlasts), the run ends
        failed, saying why: a run is never left unfinished with no task working on it."""
        if run.row["status"] in FINISHED:  # already ended (e.g. a cancel that came too late)
            return
        try:
            await self._store_end(run, status, output=output, error=error)
        except (RunLost, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("run %s: its end (%s) could not be stored; ending it failed", run.row["run_id"], status.value)
            await self._store_end(
                run, RunStatus.FAILED, error=f"internal error: the run's end could not be stored: {error_text(exc)}"
            )

    async def _store_end(
        self, run: _ActiveRun, status: RunStatus, *, output: Any = None, error: str | None = None
    ) -> None:
        row = run.row
        error = clip_error(error) if error is not None else None
        now = utc_now()
        for st in row["steps"]:
            if st["status"] in (StepStatus.RUNNING, StepStatus.WAITING):
                st.update(status=StepStatus.FAILED.value, error=error or status.value, finished_at=now)
            elif st["status"] == StepStatus.PENDING:
                st["status"] = StepStatus.SKIPPED.value
        row.update(status=status.value, output=output, error=error, finished_at=now, waiting_for=[])
        data: dict[str, Any] = {}
        if status == RunStatus.COMPLETED:
            data = {"output": output}
        elif status == RunStatus.FAILED:
            data = {"error": error}
        log.info("run_id=%s workflow=%s status=%s error=%s", row["run_id"], row["workflow"], status.value, error)
        # Queued in the same breath as the state change, so a cancel cannot split them.
        committed = self.store.append_nowait(row["run_id"], TERMINAL_EVENT[status], None, data, self._state(run))
        row["last_seq"] = await asyncio.shield(committed)

    # ---- control ---------------------------------------------------------------------

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """Ask a run to stop; it then ends with run_cancelled. Returns the snapshot (a
        waiting run ends at once: the snapshot is the cancelled run)."""
        await self._settled(run_id)
        run = self._active.get(run_id)
        if run is not None and run.row["status"] in FINISHED:
            raise Conflict(f"run {run_id!r} has already {run.row['status']}; nothing to cancel")
        if run is None or run.cancel_requested:
            snapshot = await self.store.get_run(run_id)
            if snapshot is None:
                raise RunNotFound(f"no run with id {run_id!r}")
            if snapshot["status"] in FINISHED:
                raise Conflict(f"run {run_id!r} has already {snapshot['status']}; nothing to cancel")
            if run is None and snapshot["status"] == RunStatus.WAITING:
                cancelled = await self._to_the_end(self._cancel_waiting(run_id))
                return cancelled if cancelled is not None else await self.cancel(run_id)
            if run is None and self.cluster is not None:
                return await self._cancel_elsewhere(snapshot)
            return snapshot
        run.cancel_requested = True
        for context in run.contexts:
            context._cancel()
        if run.task is not None and run.began:  # not yet begun: it sees cancel_requested first thing
            run.task.cancel()
        snapshot = await self.store.get_run(run_id)
        assert snapshot is not None
        return snapshot

    async def _cancel_elsewhere(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """Cancel a run this node does not run: take it if no live node has it (and end it
        here), else ask its owner, who hears of it within a beat."""
        assert self.cluster is not None
        run_id = snapshot["run_id"]
        claimed = await self.cluster.coordination.claim_run(run_id, self.cluster.takeover_seconds)
        if claimed is None:
            await self.cluster.coordination.request_cancel(run_id)
            return snapshot
        row, takeover = claimed
        self._adopt(row, takeover)
        run = self._active.get(run_id)
        if run is not None:
            run.cancel_requested = True  # its task sees this first thing and ends the run cancelled
        return row

    async def wait(self, run_id: str) -> dict[str, Any]:
        """Wait for a run to finish; returns its final snapshot."""
        while True:
            run = self._active.get(run_id)
            if run is not None:
                await asyncio.shield(run.done)
            snapshot = await self.store.get_run(run_id)
            if snapshot is None:
                raise RunNotFound(f"no run with id {run_id!r}")
            if snapshot["status"] in FINISHED or (self.cluster is None and snapshot["status"] != RunStatus.WAITING):
                return snapshot
            await asyncio.sleep(0.1)  # run by another node (or waiting for a free one, or for answers)

    # ---- people in the loop ------------------------------------------------------------

    async def respond(self, run_id: str, request_id: str, value: Any) -> dict[str, Any]:
        """Answer a request of a waiting run: RunNotFound, Conflict (it does not wait for
        that request), InvalidInput (the value does not fit the request's schema; it keeps
        waiting). Returns the snapshot with the answer recorded; once a run has all its
        answers it goes on, here."""
        value = to_json_value(value)
        try:
            check_event_size("the answer", value, self.max_event_bytes)
        except EventTooLarge as exc:
            raise InvalidInput(str(exc)) from None
        return await self._to_the_end(self._respond(run_id, request_id, value))

    async def _respond(self, run_id: str, request_id: str, value: Any) -> dict[str, Any]:
        async with self._held.hold(run_id):
            snapshot = await self._waiting_run(run_id)
            request = open_request(snapshot, request_id)
            if request is None:
                raise Conflict(not_waiting(snapshot, request_id))
            if request.get("schema") is not None:
                self._answer_check(request["schema"])(value)
            answered = await self._record_answer(snapshot, request_id, {"request_id": request_id, "value": value})
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
        if run is not None and run.row["status"] == RunStatus.WAITING:
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
        """Store `input_received` with the run's new state (the request no longer open; with
        none left, the run `running` again) and go on with the run here if it may. None if,
        in a cluster, another node closed the request first."""
        run_id = snapshot["run_id"]
        if self.cluster is not None:
            held = await self._claim_waiting(run_id, lambda row: open_request(row, request_id) is not None)
            if held is None:
                return None
            snapshot = held
        state = snapshot
        request = open_request(state, request_id)
        assert request is not None
        state["waiting_for"] = [w for w in state["waiting_for"] if w["request_id"] != request_id]
        if not state["waiting_for"]:
            state["status"] = RunStatus.RUNNING.value
            for st in state["steps"]:
                if st["status"] == StepStatus.WAITING:
                    st["status"] = StepStatus.RUNNING.value
        try:
            await self.store.backlog()
            seq = await self.store.append_nowait(run_id, "input_received", request["step"], data, _copy(state))
        except BaseException:
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    await self.cluster.coordination.release(run_id)
            raise
        state["last_seq"] = seq
        answered = _copy(state)
        log.info("run_id=%s request %s answered%s", run_id, request_id, " (timed out)" if data.get("timed_out") else "")
        if state["status"] == RunStatus.WAITING:
            self.store.release(run_id)
            if self.cluster is not None:
                self.cluster.coordination.forget(run_id)  # that write let go of it (see PostgresBackend)
        else:
            await self._go_on(state)
        return answered

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
            if snapshot is None or snapshot["status"] != RunStatus.WAITING or not still(snapshot):
                return None
            if loop.time() > deadline:
                raise RuncastError(f"run {run_id!r} is busy on another node; try again", ErrorCode.OVERLOADED)
            await asyncio.sleep(0.05)

    async def _cancel_waiting(self, run_id: str) -> dict[str, Any] | None:
        """End a waiting run cancelled, here and now; None if it is no longer waiting (it
        went on meanwhile: cancel it as a running run)."""
        async with self._held.hold(run_id):
            row = await self._waiting_run(run_id)
            if row["status"] != RunStatus.WAITING:
                return None
            if self.cluster is not None:
                held = await self._claim_waiting(run_id, lambda _row: True)
                if held is None:
                    return None
                row = held
            await self._end_here(row, RunStatus.CANCELLED)
            return _copy(row)

    async def _expire(self, run_id: str) -> None:
        """Close the expired requests of one waiting run (each as if answered)."""
        async with self._held.hold(run_id):
            snapshot: dict[str, Any] | None = await self._waiting_run(run_id)
            while snapshot is not None and snapshot["status"] == RunStatus.WAITING:
                now = time.time()
                request = next((w for w in snapshot["waiting_for"] if expired(w, now)), None)
                if request is None:
                    return
                data = {"request_id": request["request_id"], "value": request.get("default"), "timed_out": True}
                snapshot = await self._record_answer(snapshot, request["request_id"], data)
                if snapshot is None:
                    return

    def abandon(self) -> None:
        """Stop at once without waiting for anything (the loop is going away)."""
        self._stopping = True
        self._deadlines.cancel()
        for run in self._active.values():
            for context in run.contexts:
                context._cancel()
            if run.task is not None:
                run.task.cancel()
        self._threads.shutdown()

    async def shutdown(self) -> None:
        """Stop every run where it is, writing nothing: they resume on the next start (in a
        cluster, on another node as soon as this one has left)."""
        self._stopping = True
        await self._deadlines.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        runs = list(self._active.values())
        for run in runs:
            for context in run.contexts:
                context._cancel()
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in runs if r.task is not None), return_exceptions=True)
        self._threads.shutdown()


def _the_same(existing: dict[str, Any], workflow: str, input: Any) -> dict[str, Any]:
    """The existing run, if a start of `workflow` with `input` would have made the same one
    (inputs compared as JSON: `true` is not `1`, `1.0` is not `1`, key order aside); else Conflict."""
    if existing["workflow"] != workflow or canonical_json(existing["input"]) != canonical_json(input):
        raise Conflict(f"run {existing['run_id']!r} exists with a different workflow or input")
    return existing


def _copy(row: dict[str, Any]) -> dict[str, Any]:
    """A copy that the run's own later changes do not reach."""
    out = dict(row)
    out["steps"] = [dict(s) for s in row["steps"]]
    out["waiting_for"] = list(row.get("waiting_for") or [])
    return out


def _align_steps(paths: list[str], stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored step states in the plan's order (a step added since starts fresh)."""
    by_name = {st["name"]: st for st in stored}
    return [by_name.get(path) or _new_step(path) for path in paths]
