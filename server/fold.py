"""How a run's events make its snapshot: `fold(run, event)`, the one place a run or a step
changes status. Pure (no I/O, no clock: times come from the events) and free of the rest
of runcast, so the engine, the Python client and the tests share it; the dashboard's copy
(js/fold.js) is tested against the same cases. The rules, in words, are in
docs/protocol.md ("How events make a snapshot").

The engine never sets a status itself: it decides what happened, makes the event, folds it
into the run it holds, and stores the event with the new snapshot. So a snapshot is always
the fold of its run's events, from the state a run is created in (`new_run`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .vocabulary import CURRENT_STEP_STATUSES, Event, RunStatus, StepStatus

Run = dict[str, Any]  # a snapshot, as `poll` answers it
Step = dict[str, Any]  # one entry of its `steps`

_LIVE_STEP = (StepStatus.RUNNING.value, StepStatus.WAITING.value, StepStatus.SLEEPING.value)
_HELD_STEP = (StepStatus.WAITING.value, StepStatus.SLEEPING.value)  # suspended until the run goes on


def new_step(name: str) -> Step:
    """A step as a run is created with it: pending, never tried."""
    return {
        "name": name,
        "status": StepStatus.PENDING.value,
        "output": None,
        "error": None,
        "attempts": 0,
        "started_at": None,
        "finished_at": None,
    }


def new_run(
    run_id: str,
    workflow: str,
    input: Any,
    steps: Iterable[str],
    created_at: str | None,
    owner: str | None = None,
    *,
    scheduled_for: str | None = None,
    priority: int = 0,
    concurrency_key: str | None = None,
    concurrency_limit: int | None = None,
) -> Run:
    """A run as it is created (before any event): pending, every step pending; `owner` is
    the sub of the identity that started it; it may not start before `scheduled_for` (a
    wire time; None: at once), starts before runs of lower `priority`, and not while
    `concurrency_limit` runs with its `concurrency_key` run."""
    return {
        "run_id": run_id,
        "workflow": workflow,
        "status": RunStatus.PENDING.value,
        "input": input,
        "output": None,
        "error": None,
        "created_at": created_at,
        "started_at": None,
        "finished_at": None,
        "last_seq": 0,
        "steps": [new_step(name) for name in steps],
        "waiting_for": [],
        "wake_at": None,
        "owner": owner,
        "scheduled_for": scheduled_for,
        "priority": priority,
        "concurrency_key": concurrency_key,
        "concurrency_limit": concurrency_limit,
    }


def fold(run: Run, event: Mapping[str, Any]) -> Run:
    """Apply one event (a frame's `event`, `step`, `ts`, `data` and, once stored, `seq`) to
    `run`, in place, and return it. Step entries are changed in place, never replaced, so
    whoever holds one sees the change. Unknown events change nothing but `last_seq`."""
    name, path, ts = event["event"], event.get("step"), event.get("ts")
    data = event.get("data") or {}
    if event.get("seq") is not None:
        run["last_seq"] = event["seq"]
    if name in _RUN_RULES:
        _RUN_RULES[name](run, data, ts)
        return run
    step = _step(run, path)
    if step is None:
        return run
    if name == Event.STEP_STARTED:
        attempt = data.get("attempt")
        step.update(status=StepStatus.RUNNING.value, started_at=ts, finished_at=None, error=None)
        step["attempts"] = attempt if isinstance(attempt, int) else step["attempts"] + 1
    elif name == Event.STEP_COMPLETED:
        step.update(status=StepStatus.COMPLETED.value, output=data.get("output"), finished_at=ts)
    elif name == Event.STEP_FAILED:
        step.update(status=StepStatus.FAILED.value, error=data.get("error"), finished_at=ts)
    elif name == Event.STEP_SKIPPED:
        step.update(status=StepStatus.SKIPPED.value, finished_at=ts)
        for child in _children(run, path):
            if child["status"] == StepStatus.PENDING:
                child["status"] = StepStatus.SKIPPED.value
    elif name == Event.PROGRESS:
        _next_iteration(run, step, data)
    elif name == Event.INPUT_REQUESTED:
        _requested(run, step, path, data)
    elif name == Event.INPUT_RECEIVED:
        _received(run, data)
    elif name == Event.SLEEP_STARTED:
        step.update(status=StepStatus.SLEEPING.value, wake_at=data.get("until"))
        _settle(run)
    elif name == Event.SLEEP_ENDED:
        step.pop("wake_at", None)
        _settle(run)
    return run


def fold_all(run: Run, events: Iterable[Mapping[str, Any]]) -> Run:
    """`fold` each event in turn."""
    for event in events:
        fold(run, event)
    return run


# ---- the run's own events ------------------------------------------------------------


def _started(run: Run, data: Mapping[str, Any], ts: str | None) -> None:
    run.update(status=RunStatus.RUNNING.value, started_at=ts)


def _resumed(run: Run, data: Mapping[str, Any], ts: str | None) -> None:
    run["status"] = RunStatus.RUNNING.value


def _ended(status: RunStatus, *, output: bool = False, error: bool = False) -> Any:
    def rule(run: Run, data: Mapping[str, Any], ts: str | None) -> None:
        why = data.get("error") if error else None
        for step in run["steps"]:
            step.pop("wake_at", None)
            if step["status"] in _LIVE_STEP:
                step.update(status=StepStatus.FAILED.value, error=why or status.value, finished_at=ts)
            elif step["status"] == StepStatus.PENDING:
                step["status"] = StepStatus.SKIPPED.value
        run.update(status=status.value, finished_at=ts, waiting_for=[], wake_at=None)
        run["output"] = data.get("output") if output else None
        run["error"] = why

    return rule


_RUN_RULES = {
    Event.RUN_STARTED.value: _started,
    Event.RUN_RESUMED.value: _resumed,
    Event.RUN_COMPLETED.value: _ended(RunStatus.COMPLETED, output=True),
    Event.RUN_FAILED.value: _ended(RunStatus.FAILED, error=True),
    Event.RUN_CANCELLED.value: _ended(RunStatus.CANCELLED),
}


# ---- steps ---------------------------------------------------------------------------


def _step(run: Run, path: str | None) -> Step | None:
    if path is None:
        return None
    return next((st for st in run["steps"] if st["name"] == path), None)


def _children(run: Run, path: str | None) -> list[Step]:
    """Every step nested in `path` (at any depth)."""
    prefix = f"{path}/"
    return [st for st in run["steps"] if st["name"].startswith(prefix)]


def _next_iteration(run: Run, step: Step, data: Mapping[str, Any]) -> None:
    """A Loop's `progress` (`iteration`, on a step that has steps inside): a new iteration
    counts as an attempt and sets the steps inside back to pending. Progress of a step
    with nothing inside changes no state, whatever fields it has."""
    iteration, inside = data.get("iteration"), _children(run, step["name"])
    if not inside or not isinstance(iteration, int) or iteration <= step["attempts"]:
        return
    step["attempts"] = iteration
    for child in inside:
        child.update(status=StepStatus.PENDING.value, output=None, error=None)


def _requested(run: Run, step: Step, path: str | None, data: Mapping[str, Any]) -> None:
    step["status"] = StepStatus.WAITING.value
    waiting = run["waiting_for"] = list(run.get("waiting_for") or [])
    if all(w.get("request_id") != data.get("request_id") for w in waiting):
        waiting.append({**data, "step": path})
    _settle(run)


def _received(run: Run, data: Mapping[str, Any]) -> None:
    request_id = data.get("request_id")
    run["waiting_for"] = [w for w in run.get("waiting_for") or [] if w.get("request_id") != request_id]
    _settle(run)


def _settle(run: Run) -> None:
    """A suspended run's status once one of its asks or sleeps opens or closes: `waiting`
    while anything it asked is open, else `sleeping` (with `wake_at`, the earliest time a
    step sleeps until) while any step sleeps; once neither, it goes on (`running`) and so
    do its held steps. A run goes on only when all its branches may."""
    sleeps = [st["wake_at"] for st in run["steps"] if st.get("wake_at") is not None]
    run["wake_at"] = None
    if run.get("waiting_for"):
        run["status"] = RunStatus.WAITING.value
    elif sleeps:
        run.update(status=RunStatus.SLEEPING.value, wake_at=min(sleeps))
    else:
        run["status"] = RunStatus.RUNNING.value
        for step in run["steps"]:
            if step["status"] in _HELD_STEP:
                step["status"] = StepStatus.RUNNING.value


# ---- a run in brief --------------------------------------------------------------------


def run_progress(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """What a run's steps say in brief, added to snapshots without steps (`run_changed`,
    `list_runs`): `current_step`, the path of the last step in the snapshot's order
    (parents before children, declared order) that is running or waiting for input, so
    the deepest one, and of parallel branches the last declared (a group shows only in
    the moment between its children), or null; `steps_done` and `steps_total`, the leaf
    steps (not groups) completed or skipped, and all of them."""
    current = None
    done = total = 0
    for i, st in enumerate(steps):
        status = st.get("status")
        if status in CURRENT_STEP_STATUSES:
            current = st["name"]
        if i + 1 < len(steps) and steps[i + 1]["name"].startswith(st["name"] + "/"):
            continue  # a group: its children follow it
        total += 1
        done += status in (StepStatus.COMPLETED, StepStatus.SKIPPED)
    return {"current_step": current, "steps_done": done, "steps_total": total}
