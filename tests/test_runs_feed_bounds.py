"""The runs feed's bounds and pure parts, on a real SQLite store (no server, no sockets), and
the client's bookkeeping of it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from client.runs import RunsFollower, feed_filters
from server.fold import run_progress
from server.live import runs_feed
from server.live.runs_feed import RunsFeed, RunsWatch
from server.store import ANY_RUN, open_store

from .harness import run_row


def state(run_id: str, status: str, steps: list[tuple[str, str]]) -> dict[str, Any]:
    step_rows = [
        {"name": n, "status": s, "output": None, "error": None, "attempts": 0, "started_at": None} for n, s in steps
    ]
    return run_row(run_id, status=status, steps=step_rows)


def test_current_step_is_the_deepest_last_running_step_and_progress_counts_leaves() -> None:
    steps = [
        {"name": "a", "status": "completed"},
        {"name": "par", "status": "running"},
        {"name": "par/x", "status": "running"},
        {"name": "par/y", "status": "running"},
        {"name": "par/y/deep", "status": "running"},
        {"name": "par/z", "status": "skipped"},
        {"name": "b", "status": "pending"},
    ]
    assert run_progress(steps) == {"current_step": "par/y/deep", "steps_done": 2, "steps_total": 5}
    steps[4]["status"] = "waiting"  # a step that asked for input is where the run is, too
    assert run_progress(steps)["current_step"] == "par/y/deep"
    assert run_progress([{"name": "a", "status": "completed"}])["current_step"] is None
    assert run_progress([]) == {"current_step": None, "steps_done": 0, "steps_total": 0}


class Reader:
    """A connection's outbound side that takes frames only when let."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.reading = asyncio.Event()
        self.too_slow = False

    async def send(self, frames: list[str]) -> None:
        await self.reading.wait()
        self.frames += [orjson.loads(f)["run"] for f in frames]

    async def drained(self, _frames: int) -> None:
        return None

    def slow(self) -> None:
        self.too_slow = True


async def test_a_reader_far_behind_holds_bounded_frames_and_gets_each_runs_newest_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_feed, "MAX_PENDING_RUNS", 5)
    monkeypatch.setattr(runs_feed, "SEND_CHUNK", 2)
    store = open_store(str(tmp_path / "runcast.db"))
    await store.open()
    try:
        feed = RunsFeed(store)
        reader = Reader()
        watch = RunsWatch(feed, reader.send, reader.drained, ANY_RUN, on_too_slow=reader.slow)
        watch.start()
        ids = [f"r{i}" for i in range(30)]
        for run_id in ids:
            await store.create_run(state(run_id, "pending", [("s", "pending")]))
        for step_status in ("running", "completed"):
            for run_id in ids:
                run_state = state(run_id, "running", [("s", step_status)])
                await store.append(run_id, f"step_{step_status}", "s", {}, run_state)
            await store.flush()  # a commit each: a state and its change are not folded in one batch
        # 90 changes of 30 runs: at most 5 frames wait (and 2 on their way); the rest are ids.
        assert len(watch._pending) <= 5 and watch.pending <= 30
        assert feed.frames == 90 and not reader.too_slow
        reader.reading.set()
        while watch.pending or watch._task is not None:
            await asyncio.sleep(0.01)
        newest: dict[str, dict[str, Any]] = {}
        for run in reader.frames:
            before = newest.get(run["run_id"])
            assert before is None or before["last_seq"] < run["last_seq"], (before, run)
            newest[run["run_id"]] = run
        assert set(newest) == set(ids)
        assert all(r["last_seq"] == 2 and r["steps_done"] == 1 for r in newest.values()), newest
        assert len(reader.frames) < 90
    finally:
        await store.close()


async def test_a_reader_behind_on_too_many_runs_is_let_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs_feed, "MAX_PENDING_RUNS", 5)
    monkeypatch.setattr(runs_feed, "MAX_STALE_RUNS", 10)
    store = open_store(str(tmp_path / "runcast.db"))
    await store.open()
    try:
        feed = RunsFeed(store)
        reader, other = Reader(), Reader()
        watch = RunsWatch(feed, reader.send, reader.drained, ANY_RUN, on_too_slow=reader.slow)
        watch.start()
        fine = RunsWatch(feed, other.send, other.drained, ANY_RUN, on_too_slow=other.slow)
        fine.start()
        other.reading.set()
        for i in range(20):
            await store.create_run(state(f"r{i}", "pending", []))
        assert reader.too_slow and watch.stopped and watch.pending == 0
        while fine.pending:
            await asyncio.sleep(0.01)
        assert not other.too_slow and {r["run_id"] for r in other.frames} == {f"r{i}" for i in range(20)}
        assert feed.watcher_count == 1
    finally:
        await store.close()


# ---- the client's side: pure bookkeeping --------------------------------------------


def test_a_client_iterator_keeps_the_highest_last_seq_and_the_newest_state_per_run() -> None:
    follower = RunsFollower(None, "running")
    follower.offer({"run_id": "a", "workflow": "w", "status": "pending", "last_seq": 0})  # not in the filter
    follower.offer({"run_id": "a", "workflow": "w", "status": "running", "last_seq": 2})
    follower.offer({"run_id": "a", "workflow": "w", "status": "running", "last_seq": 4})
    follower.offer({"run_id": "a", "workflow": "w", "status": "running", "last_seq": 3})  # older: a late list
    follower.offer({"run_id": "b", "workflow": "w", "status": "completed", "last_seq": 9})  # never had it
    assert list(follower.waiting.values()) == [{"run_id": "a", "workflow": "w", "status": "running", "last_seq": 4}]
    follower.waiting.clear()
    follower.offer({"run_id": "a", "workflow": "w", "status": "completed", "last_seq": 8})  # it leaves: told
    follower.offer({"run_id": "a", "workflow": "w", "status": "completed", "last_seq": 8})  # the list says it again
    assert [r["last_seq"] for r in follower.waiting.values()] == [8]
    # One server-side feed per connection: the iterators' filters if they agree, else wider.
    assert feed_filters([RunsFollower("w", "running"), RunsFollower("w", "running")]) == {
        "workflow": "w",
        "status": "running",
    }
    assert feed_filters([RunsFollower("w", "running"), RunsFollower("w", None)]) == {"workflow": "w"}
    assert feed_filters([RunsFollower("w", None), RunsFollower("v", None)]) == {}
