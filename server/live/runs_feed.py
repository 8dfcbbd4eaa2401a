"""The runs feed: a `run_changed` frame for each change of a run, to every connection that
watches runs (`subscribe_runs`).

After each commit the writer hands over the latest state of each run it wrote (no
database read). The engine stores a run's state with nearly every event, so a run whose
status and step statuses are what its last frame said is passed over after one tuple
compare; a real change (or a new run) gets its frame built and encoded once, and the same
frame is offered to every watcher whose filters it matches. What the feed remembers per
run (its last seq and statuses) is kept for unfinished runs only, and only while someone
watches.

Each watcher holds at most one pending frame per run, replaced in place by a newer one,
so that a slow reader gets the newest state of each run and nothing in between. Pending
frames are bounded in number and bytes per watcher; past that, the oldest are traded for
their run ids, whose current state is read from the store when the reader catches up.
A reader so far behind that even those ids pass their bound is closed as a stuck reader.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..bounds import MAX_REPLY_BYTES, bounded_run
from ..fold import run_progress
from ..store import RunStore
from ..store.base import Batch, RunFilter
from ..vocabulary import FINISHED_STATUSES
from ..wire import run_changed_frame
from .frames import WriteNow

log = logging.getLogger("runcast.runs_feed")

MAX_PENDING_RUNS = 10_000  # frames waiting per watcher (one per run) before the oldest become ids
MAX_PENDING_BYTES = 8 * 1024 * 1024  # the same, by the frames' size
MAX_STALE_RUNS = 100_000  # run ids to read again per watcher; past it the reader is too slow
SEND_CHUNK = 64  # frames handed to the connection at a time: the rest stay replaceable
RECENTLY_FINISHED = 4096  # finished runs remembered, so that a late re-read sends no second last frame

Send = Callable[[list[str]], Awaitable[None]]  # frames, in order, to one client
Drained = Callable[[int], Awaitable[None]]  # returns once at most that many frames wait to be written


@dataclass(slots=True)
class RunChange:
    """One `run_changed` frame, built once and shared by every watcher."""

    run_id: str
    workflow: str
    status: str
    before: str | None  # the status of the run's previous frame, when that was another
    last_seq: int
    frame: str
    owner: str | None = None  # the sub that started the run
    wire: bytes | None = field(default=None, repr=False)  # the transport's bytes of it, once framed

    @property
    def size(self) -> int:
        return len(self.frame)


def run_change(state: dict[str, Any], last_seq: int, before: str | None = None) -> RunChange:
    """The frame of a run's state: the snapshot without steps, with the given `last_seq`,
    plus `current_step`, `steps_done` and `steps_total`."""
    steps = state.get("steps") or []
    run = {k: v for k, v in state.items() if k != "steps"}
    run["last_seq"] = last_seq
    run.update(run_progress(steps))
    frame = run_changed_frame(run)
    if len(frame) > MAX_REPLY_BYTES // 4 and len(frame.encode()) > MAX_REPLY_BYTES:  # huge input or output
        frame = run_changed_frame(bounded_run(run))
    status = str(run["status"])
    return RunChange(run["run_id"], str(run["workflow"]), status, before, last_seq, frame, run.get("owner"))


Signature = tuple[int, str, tuple[str, ...]]  # last seq, status, step statuses


class RunsFeed:
    """Turns committed run states into `run_changed` frames for the watchers."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._watchers: set[RunsWatch] = set()
        self._seen: dict[str, Signature] = {}  # unfinished runs, as their last frame said
        self._finished: OrderedDict[str, int] = OrderedDict()  # run id -> last seq
        self.frames = 0  # run_changed frames built
        store.add_run_listener(self.committed)

    @property
    def watched(self) -> bool:
        """True while some connection watches runs."""
        return bool(self._watchers)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    @property
    def pending(self) -> int:
        """Runs with a change waiting, summed over the watchers (for metrics)."""
        return sum(w.pending for w in self._watchers)

    @property
    def unfinished(self) -> list[str]:
        """The runs the feed knows as unfinished."""
        return list(self._seen)

    def add(self, watch: RunsWatch) -> None:
        self._watchers.add(watch)

    def remove(self, watch: RunsWatch) -> None:
        self._watchers.discard(watch)
        if not self._watchers:  # nobody watches: remember nothing
            self._seen.clear()
            self._finished.clear()

    def committed(self, batch: Batch) -> None:
        """The writer's listener: the states of one commit."""
        if not self._watchers:
            return
        for run_id, state in batch.runs.items():
            self.offer(state, batch.seqs.get(run_id, 0))

    def offer(self, state: dict[str, Any], last_seq: int) -> RunChange | None:
        """A run's committed state (from this node's writer, or read back from the store
        for another node's commit): a frame for the watchers if it says something new."""
        run_id = state["run_id"]
        status = str(state["status"])
        finished = self._finished.get(run_id)
        if finished is not None and last_seq <= finished:
            return None  # a late re-read of a run whose end was sent
        steps = state.get("steps") or ()
        signature = (last_seq, status, tuple(str(s["status"]) for s in steps))
        seen = self._seen.get(run_id)
        if seen is not None:
            if last_seq <= seen[0]:
                return None  # not newer than what was sent (a re-read, or a notice overtaken)
            if seen[1:] == signature[1:]:
                self._seen[run_id] = signature  # only its seq moved: no frame
                return None
        before = seen[1] if seen is not None and seen[1] != status else None
        if status in FINISHED_STATUSES:
            self._seen.pop(run_id, None)
            self._finished[run_id] = last_seq
            if len(self._finished) > RECENTLY_FINISHED:
                self._finished.popitem(last=False)
        else:
            self._seen[run_id] = signature
        change = run_change(state, last_seq, before)
        self.frames += 1
        for watch in tuple(self._watchers):
            if watch.wants(change):
                watch.offer(change)
        return change


class RunsWatch:
    """One connection's runs feed: its filters and its pending frames, at most one per run.

    A pump task exists only while frames wait; it hands them to the connection a few at a
    time, and only once the connection's outbox has (almost) drained, so that the rest stay
    replaceable while the client reads slowly. One pump per watcher and one pending frame
    per run keep each run's frames in seq order."""

    def __init__(
        self,
        feed: RunsFeed,
        send: Send,
        drained: Drained,
        which: RunFilter,
        *,
        on_too_slow: Callable[[], None],
        write_now: WriteNow | None = None,
    ) -> None:
        self.feed = feed
        self.which = which  # the runs this reader reaches, and its filters
        self._send = send
        self._drained = drained
        self._write_now = write_now
        self._on_too_slow = on_too_slow
        self._pending: dict[str, RunChange] = {}  # oldest first
        self._bytes = 0
        self._stale: dict[str, None] = {}  # runs whose frames were let go: read them again
        self._task: asyncio.Task[None] | None = None
        self.stopped = False
        self.sent = 0

    @property
    def pending(self) -> int:
        """Runs with a change waiting for this reader (as frames or as ids)."""
        return len(self._pending) + len(self._stale)

    def wants(self, change: RunChange) -> bool:
        """True if the change matches the filters, or the run just left the status filter
        (so that the reader learns it left)."""
        which = self.which
        if which.workflow is not None and change.workflow != which.workflow:
            return False
        if which.owner is not None and change.owner != which.owner:
            return False
        if which.run_ids is not None and change.run_id not in which.run_ids:
            return False
        return which.status is None or change.status == which.status or change.before == which.status

    def start(self) -> None:
        self.feed.add(self)

    def stop(self) -> None:
        self.stopped = True
        self.feed.remove(self)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._pending.clear()
        self._stale.clear()
        self._bytes = 0

    def offer(self, change: RunChange) -> None:
        """Take a change; never blocks: it replaces the run's pending frame, if any."""
        if self.stopped:
            return
        old = self._pending.pop(change.run_id, None)
        if old is not None:
            self._bytes -= old.size
        self._stale.pop(change.run_id, None)
        self._pending[change.run_id] = change
        self._bytes += change.size
        while len(self._pending) > MAX_PENDING_RUNS or self._bytes > MAX_PENDING_BYTES:
            run_id, oldest = next(iter(self._pending.items()))
            del self._pending[run_id]
            self._bytes -= oldest.size
            self._stale[run_id] = None
        if len(self._stale) > MAX_STALE_RUNS:
            log.warning("a runs feed reader fell %d runs behind; closing it", len(self._stale))
            self.stop()
            self._on_too_slow()
            return
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name="runcast-runs-feed")

    async def _pump(self) -> None:
        try:
            while not self.stopped and (self._stale or self._pending):
                await self._drained(SEND_CHUNK)
                while self._stale and len(self._pending) < SEND_CHUNK and not self.stopped:
                    await self._read_stale()
                chunk: list[RunChange] = []
                while self._pending and len(chunk) < SEND_CHUNK:
                    run_id = next(iter(self._pending))
                    change = self._pending.pop(run_id)
                    self._bytes -= change.size
                    chunk.append(change)
                if chunk and not self.stopped:
                    self.sent += len(chunk)
                    # Straight to the socket when nothing waits before them; else queued.
                    if self._write_now is None or not self._write_now(chunk):
                        await self._send([c.frame for c in chunk])
        except asyncio.CancelledError:
            raise
        except Exception:  # a dead socket ends the feed; anything else is a bug to see
            log.exception("runs feed ended by an error")
            self.stop()
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _read_stale(self) -> None:
        """Read the current state of one run whose frame was let go, and make it pending.

        Through the feed, so that it remembers this seq (a re-read of an older state can
        then never follow it); if the feed has nothing new to say, this reader still gets
        the state it missed."""
        run_id = next(iter(self._stale))
        del self._stale[run_id]
        state = await self.feed.store.get_run(run_id, steps=True)
        if state is None or self.stopped:
            return  # pruned meanwhile
        last_seq = state["last_seq"]
        self.feed.offer(state, last_seq)
        pending = self._pending.get(run_id)
        if pending is None or pending.last_seq < last_seq:
            self.offer(run_change(state, last_seq))
