"""The engine runs workflows in the background and is the one place a run changes state.

Every change is recorded through the store (which numbers the events and commits them
in batches); nothing here talks to sockets. On start it continues the runs a crash left
unfinished. A run whose steps asked for input waits with no task at all (`waiting`):
an answer (`respond`), a cancel or a timeout takes it up again, on whichever node
(answering.py, its base class). A run as data is in runs.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..bounds import clip_error
from ..jsontext import to_json_value
from ..protocol import (
    RUN_ID_PATTERN,
    BadRequest,
    Conflict,
    ErrorCode,
    InvalidInput,
    RuncastError,
    RunNotFound,
    UnknownWorkflow,
)
from ..settings import Settings
from ..store import RunExists, RunLost, RunStore
from ..vocabulary import SUSPENDED, TERMINAL_EVENT
from ..workflow import FINISHED, Node, RunStatus, Step, StepStatus, Workflow, walk
from .answering import Answering
from .asks import AnswerChecks, Deadlines, RunLocks
from .cluster import Cluster
from .context import History, Suspended
from .runner import Rejected, StepFailure, StepRunner, error_text, is_cancel
from .runs import AT_ONCE, ActiveRun, Order, align_steps, new_run, new_run_id, record, run_trace, step_history, the_same
from .slots import Turns, seconds_until
from .threads import StepThreads

log = logging.getLogger("runcast.engine")


class Engine(Answering):
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
        self._turns = Turns(max_running)
        self._threads = StepThreads(settings.step_threads)
        self._active: dict[str, ActiveRun] = {}
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

    async def start(
        self,
        name: str,
        input: Any = None,
        run_id: str | None = None,
        owner: str | None = None,
        order: Order = AT_ONCE,
    ) -> tuple[dict[str, Any], bool]:
        """Create a run (started by `owner`, a sub) and start it in the background once it
        is stored, and due, in priority order, when its concurrency key (`order`'s, or the
        workflow's) has room. Returns (snapshot, existing): with a caller-given run_id that
        names the same workflow and input of the same owner, that run and True (no start).
        """
        if self._stopping:
            raise RuntimeError("the engine is shutting down")
        if self.store.degraded is not None:
            raise RuncastError(f"not starting runs now: {self.store.degraded}; try again later", ErrorCode.OVERLOADED)
        workflow = self.workflows.get(name)
        if workflow is None:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise UnknownWorkflow(f"no workflow named {name!r}; known workflows: {known}")
        checked = workflow.checked_input(input)
        steps = workflow.steps_for(checked)
        key = workflow.key_for(checked) if order.concurrency_key is None else order.concurrency_key
        if key is not None:  # the workflow's limit holds for a key given on start too
            order = replace(order, concurrency_key=key, concurrency_limit=workflow.concurrency_limit)
        input = to_json_value(input)
        if run_id is None:  # a fresh id of ours: nothing to look up
            row = new_run(new_run_id(), workflow, input, steps, owner, order)
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
                return the_same(existing, name, input, owner), True
            row = new_run(run_id, workflow, input, steps, owner, order)
            try:
                await self._create(workflow, row, launch=False)
            except RunExists:  # started through another node at the same moment: the database chose that one
                existing = await self.store.get_run(run_id)
                if existing is None:  # deleted since (retention): a start that raced a prune
                    raise Conflict(f"run {run_id!r} was being created and deleted at once; try again") from None
                return the_same(existing, name, input, owner), True
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
        later = seconds_until(row.get("scheduled_for"))
        if self.cluster is not None and later > 0:  # claimed when due (by this node, or another)
            asyncio.get_running_loop().call_later(later, self.cluster.fall_due)
        elif self.cluster is not None and row.get("concurrency_key") is not None:
            self.cluster.fall_due()  # claimed like a delayed run: keys are counted by the claims
        elif self.cluster is not None and self.cluster.free_slots_now() > 0:
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
        run = ActiveRun(workflow, row, resumed, reason, continued=continued)
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
        await self._end_here(row, RunStatus.FAILED, error=error)

    async def _end_here(
        self, row: dict[str, Any], status: RunStatus, *, error: str | None = None, by: str | None = None
    ) -> None:
        """End a run that no task of this node runs (it cannot resume, or it waits); its
        workflow plays no part in that. `by`: who cancelled it."""
        try:
            run = ActiveRun(Workflow(row["workflow"], []), row, resumed=True, cancelled_by=by)
            await self._finish(run, status, error=error)
        finally:
            self._forget(row["run_id"])

    # ---- running ---------------------------------------------------------------------

    async def _execute(self, run: ActiveRun) -> None:
        run_id = run.row["run_id"]
        run.began = True
        try:
            if run.cancel_requested:  # cancelled before its task ever ran
                raise asyncio.CancelledError
            async with self._turns.taken(run.row):  # due, its key has room, a slot is free
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
            self._forget(run_id, run.row.get("concurrency_key"))

    def _forget(self, run_id: str, key: str | None = None) -> None:
        if self.cluster is not None and not self._stopping:
            self.cluster.coordination.forget(run_id)
            self.cluster.freed(key)  # a slot is free (and a key's room): take the next waiting run

    async def _fail_inside(self, run: ActiveRun, exc: BaseException) -> None:
        log.error("run %s failed outside its steps", run.row["run_id"], exc_info=exc)
        await self._finish(run, RunStatus.FAILED, error=f"internal error: {error_text(exc)}")

    async def _record(self, run: ActiveRun, event: str, step: str | None, data: Any) -> None:
        await self.store.backlog()
        record(self.store, run.row, event, step, data)

    def _emit_from_step(self, run: ActiveRun, step: str, event: str, data: dict[str, Any]) -> None:
        if run.row["status"] == RunStatus.RUNNING:  # a late thread message after the end is dropped
            self.store.emit(run.row["run_id"], event, step, data)

    async def _run_steps(self, run: ActiveRun) -> None:
        row, workflow = run.row, run.workflow
        try:
            checked = workflow.checked_input(row["input"])
        except InvalidInput as exc:
            await self._finish(run, RunStatus.FAILED, error=exc.message)
            return
        plan = workflow.steps_for(checked)
        nodes = list(walk(plan))
        steps = row["steps"] = align_steps([path for path, _ in nodes], row["steps"])
        traced = await run_trace(self.store, row["run_id"], workflow.name, fresh=not (run.continued or run.resumed))
        if run.continued:
            pass  # its last input_received (stored with this state) marks where it goes on
        elif run.resumed:
            data = {"reason": run.reason, "from_step": _first_unfinished(nodes, steps)}
            await self._record(run, "run_resumed", None, data)
        else:
            await self._record(run, "run_started", None, {"workflow": workflow.name, "input": row["input"], **traced})

        async def stream_delta(step: str, delta: str) -> None:
            await self.store.backlog()
            self.store.emit(row["run_id"], "step_output", step, {"delta": delta})

        runner = StepRunner(
            run_id=row["run_id"],
            input=checked,
            plan=plan,
            states=steps,
            record=functools.partial(self._record, run),
            emit=functools.partial(self._emit_from_step, run),
            stream_delta=stream_delta,
            store=self.store,
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

    async def step_history(self, run_id: str, path: str) -> History:
        """What step `path` of a run had done before it is run again (see runs.step_history)."""
        return await step_history(self.store, run_id, path)

    async def _finish(self, run: ActiveRun, status: RunStatus, *, output: Any = None, error: str | None = None) -> None:
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
        self, run: ActiveRun, status: RunStatus, *, output: Any = None, error: str | None = None
    ) -> None:
        row = run.row
        error = clip_error(error) if error is not None else None
        data: dict[str, Any] = {"by": run.cancelled_by}
        if status == RunStatus.COMPLETED:
            data = {"output": output}
        elif status == RunStatus.FAILED:
            data = {"error": error}
        log.info("run_id=%s workflow=%s status=%s error=%s", row["run_id"], row["workflow"], status.value, error)
        # Queued in the same breath as the state change, so a cancel cannot split them.
        committed = record(self.store, row, TERMINAL_EVENT[status], None, data)
        row["last_seq"] = await asyncio.shield(committed)

    # ---- control ---------------------------------------------------------------------

    async def cancel(self, run_id: str, by: str | None = None) -> dict[str, Any]:
        """Ask a run to stop (`by`: the sub of who asks); it then ends with run_cancelled.
        Returns the snapshot (a waiting run ends at once: the snapshot is the cancelled run)."""
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
            if run is None and snapshot["status"] in SUSPENDED:
                cancelled = await self._to_the_end(self._cancel_waiting(run_id, by))
                return cancelled if cancelled is not None else await self.cancel(run_id, by)
            if run is None and self.cluster is not None:
                return await self._cancel_elsewhere(snapshot, by)
            return snapshot
        run.cancel_requested = True
        run.cancelled_by = by
        for context in run.contexts:
            context._cancel()
        if run.task is not None and run.began:  # not yet begun: it sees cancel_requested first thing
            run.task.cancel()
        snapshot = await self.store.get_run(run_id)
        assert snapshot is not None
        return snapshot

    async def _cancel_elsewhere(self, snapshot: dict[str, Any], by: str | None) -> dict[str, Any]:
        """Cancel a run this node does not run: take it if no live node has it (and end it
        here), else ask its owner, who hears of it within a beat."""
        assert self.cluster is not None
        run_id = snapshot["run_id"]
        claimed = await self.cluster.coordination.claim_run(run_id, self.cluster.takeover_seconds)
        if claimed is None:
            await self.cluster.coordination.request_cancel(run_id, by)
            return snapshot
        row, takeover = claimed
        self._adopt(row, takeover)
        run = self._active.get(run_id)
        if run is not None:
            run.cancel_requested = True
            run.cancelled_by = by  # its task sees this first thing and ends the run cancelled
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
            if snapshot["status"] in FINISHED or (self.cluster is None and snapshot["status"] not in SUSPENDED):
                return snapshot
            await asyncio.sleep(0.1)  # run by another node (or waiting for a free one, or for answers)

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


def _first_unfinished(nodes: list[tuple[str, Node]], steps: list[dict[str, Any]]) -> str | None:
    """Where a resumed run goes on: the first step (not group) that had not completed."""
    for (path, node), st in zip(nodes, steps, strict=True):
        if isinstance(node, Step) and st["status"] != StepStatus.COMPLETED:
            return path
    return None
