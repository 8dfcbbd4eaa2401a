"""Retention deletes old finished runs with their events, and nothing else (on both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.store import Store, retention
from server.store.sqlite import SqliteStore

from .harness import BACKENDS
from .pg import PgStore


def _run(run_id: str, status: str, finished_days_ago: float | None) -> dict:
    finished = None
    if finished_days_ago is not None:
        moment = datetime.now(UTC) - timedelta(days=finished_days_ago)
        finished = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "run_id": run_id,
        "workflow": "echo",
        "status": status,
        "input": None,
        "created_at": "2026-01-01T00:00:00.000Z",
        "finished_at": finished,
        "steps": [],
    }


@pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")
async def test_prune_deletes_only_old_finished_runs(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "PRUNE_BATCH", 3)  # several small transactions
    store: Store = (
        SqliteStore(str(tmp_path / "r.db")) if backend == "sqlite" else PgStore(request.getfixturevalue("pg_url"))
    )
    await store.open()
    try:
        old = [f"old-{i}" for i in range(7)]
        for run_id in old:
            await store.create_run(_run(run_id, "completed", 10))
            await store.append(run_id, "run_completed", None, {"output": 1})
        await store.create_run(_run("recent", "failed", 1))
        await store.create_run(_run("waiting", "waiting", 10))  # waits for a person: never old enough
        await store.create_run(_run("running", "running", None))
        await store.append("running", "run_started", None, {})
        await store.flush()
        batches_before = store.stats.batches
        assert await retention.prune_once(store, 7) == 7
        for run_id in old:
            assert await store.get_run(run_id) is None
            assert await store.read_events(run_id, 0, 10) == []
        assert (await store.get_run("recent")) is not None
        assert (await store.get_run("waiting")) is not None
        assert [e.seq for e in await store.read_events("running", 0, 10)] == [1]
        assert store.stats.batches - batches_before == 3  # 3 + 3 + 1 runs
        assert await retention.prune_once(store, 7) == 0
    finally:
        await store.close()


def test_cutoff_is_in_the_store_time_format() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert retention.cutoff(7, now) == "2026-11-18T12:00:00.000Z"
