"""The runs feed on the client side: each iterator of `Client.subscribe_runs` keeps, for
every run, the newest state it has seen (by `last_seq`) and yields each newer one once.

After a reconnect the client follows the contract's recipe: `subscribe_runs` first, then
`list_runs`; what either says is offered here, and only states newer than what this
iterator already has come out. So a change made while the connection was down is not
lost (the list has it), and nothing comes out twice or older than before. At most one
state per run waits to be yielded (a newer one replaces it in place).

Pure bookkeeping: snapshots go in, snapshots come out; no I/O here.
"""

from __future__ import annotations

import asyncio
from typing import Any

Run = dict[str, Any]


class RunsFollower:
    """One `subscribe_runs` iterator: its filters, the newest seq of each run, what waits."""

    def __init__(self, workflow: str | None, status: str | None) -> None:
        self.workflow = workflow
        self.status = status
        self.seen: dict[str, tuple[int, Any]] = {}  # run id -> (the highest last_seq taken, its status)
        self.waiting: dict[str, Run] = {}  # run id -> the newest state not yet yielded
        self.error: BaseException | None = None
        self._wake = asyncio.Event()

    @property
    def filters(self) -> tuple[str | None, str | None]:
        return self.workflow, self.status

    def offer(self, run: Run) -> None:
        """Take a run's state (from a `run_changed` frame, or listed by `list_runs`) if it
        is newer than what this iterator has and matches its filters, or leaves the status
        filter (told once, as the server does). The filters are checked here too, for a
        connection whose server-side feed is wider than this iterator."""
        if self.workflow is not None and run.get("workflow") != self.workflow:
            return
        run_id = str(run["run_id"])
        last_seq = int(run.get("last_seq") or 0)
        known = self.seen.get(run_id)
        if known is not None and last_seq <= known[0]:
            return
        status = run.get("status")
        if self.status is not None and status != self.status and (known is None or known[1] != self.status):
            return  # neither in the filter nor leaving it
        self.seen[run_id] = (last_seq, status)
        self.waiting.pop(run_id, None)
        self.waiting[run_id] = run
        self._wake.set()

    def know(self, run: Run) -> None:
        """Take a run's state as already known, without yielding it: what was there before
        the iterator began, so that a relist after a reconnect yields only what changed."""
        run_id, last_seq = str(run["run_id"]), int(run.get("last_seq") or 0)
        if last_seq > self.seen.get(run_id, (-1, None))[0]:
            self.seen[run_id] = (last_seq, run.get("status"))

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._wake.set()

    async def get(self) -> Run:
        """The next state to yield, oldest change first; raises the error once nothing waits."""
        while not self.waiting:
            if self.error is not None:
                raise self.error
            self._wake.clear()
            await self._wake.wait()
        run_id = next(iter(self.waiting))
        return self.waiting.pop(run_id)


def feed_filters(followers: list[RunsFollower]) -> dict[str, str]:
    """The filters of the connection's one server-side runs feed: the iterators' own when
    they all agree, else the workflow they share (if any), and each iterator filters the
    rest itself."""
    shared = {f.filters for f in followers}
    if len(shared) == 1:
        workflow, status = next(iter(shared))
    else:
        workflows = {f.workflow for f in followers}
        workflow, status = (next(iter(workflows)) if len(workflows) == 1 else None), None
    message: dict[str, str] = {}
    if workflow is not None:
        message["workflow"] = workflow
    if status is not None:
        message["status"] = status
    return message
