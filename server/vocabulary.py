"""The contract's words, declared once: run and step statuses, event names, which events
end a run, and the close codes. Every other module (and the SQL) takes them from here;
the dashboard's copy is static/format.js. Imports nothing of runcast's own."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # a step asked for input and has not had it; the run holds no worker
    SLEEPING = "sleeping"  # (8.1) every suspended branch sleeps until a time; no worker either
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SLEEPING = "sleeping"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


RUN_STATUSES = tuple(s.value for s in RunStatus)
FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
FINISHED_STATUSES = tuple(s.value for s in RunStatus if s in FINISHED)
UNFINISHED_STATUSES = (RunStatus.PENDING.value, RunStatus.RUNNING.value)  # what a node runs, or takes over
SUSPENDED = frozenset({RunStatus.WAITING, RunStatus.SLEEPING})  # no task: an answer, a time or a cancel goes on
SUSPENDED_STATUSES = (RunStatus.WAITING.value, RunStatus.SLEEPING.value)
CURRENT_STEP_STATUSES = (StepStatus.RUNNING.value, StepStatus.WAITING.value, StepStatus.SLEEPING.value)


class Event(StrEnum):
    """The `event` of an event frame."""

    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_OUTPUT = "step_output"
    PROGRESS = "progress"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    STEP_SKIPPED = "step_skipped"  # (1.2) a step that will not run: `reason` says why
    RUN_RESUMED = "run_resumed"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    TOOL_CALL_STARTED = "tool_call_started"
    TOOL_CALL_COMPLETED = "tool_call_completed"
    TOOL_CALL_FAILED = "tool_call_failed"
    INPUT_REQUESTED = "input_requested"
    INPUT_RECEIVED = "input_received"
    SLEEP_STARTED = "sleep_started"  # (8.1) `until`: a step sleeps until then, holding nothing
    SLEEP_ENDED = "sleep_ended"  # (8.1) that time has come


TERMINAL_EVENT = {  # the one event that ends a run of each finished status
    RunStatus.COMPLETED: Event.RUN_COMPLETED,
    RunStatus.FAILED: Event.RUN_FAILED,
    RunStatus.CANCELLED: Event.RUN_CANCELLED,
}
TERMINAL_EVENTS = frozenset(e.value for e in TERMINAL_EVENT.values())


class CloseCode(IntEnum):
    """The WebSocket close codes of the contract."""

    GOING_AWAY = 1001  # the server is shutting down
    POLICY_VIOLATION = 1008  # an auth failure, or a client that reads nothing
    MESSAGE_TOO_BIG = 1009  # a frame over --max-frame-bytes, or a message in too many frames
    TRY_AGAIN_LATER = 1013  # too many connections


def sql_list(values: tuple[str, ...]) -> str:
    """Values as an SQL list of string literals (`'a', 'b'`), for statuses in queries."""
    return ", ".join(f"'{v}'" for v in values)
