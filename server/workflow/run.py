"""Run and step status values, and a run as the Python API returns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..vocabulary import FINISHED, RunStatus, StepStatus

__all__ = ["FINISHED", "RunOutput", "RunStatus", "StepStatus"]


@dataclass
class RunOutput:
    """A run as the Python API returns it (the snapshot of the contract, as an object)."""

    run_id: str
    workflow: str
    status: RunStatus
    input: Any = None
    content: Any = None
    error: Any = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    last_seq: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    waiting_for: list[dict[str, Any]] = field(default_factory=list)
    wake_at: str | None = None  # while the run sleeps: when it wakes (8.1)
    scheduled_for: str | None = None  # a delayed run: when it may start (8.2)

    @classmethod
    def from_snapshot(cls, run: dict[str, Any]) -> RunOutput:
        return cls(
            run_id=run["run_id"],
            workflow=run["workflow"],
            status=RunStatus(run["status"]),
            input=run.get("input"),
            content=run.get("output"),
            error=run.get("error"),
            created_at=run.get("created_at"),
            started_at=run.get("started_at"),
            finished_at=run.get("finished_at"),
            last_seq=run.get("last_seq", 0),
            steps=run.get("steps") or [],
            waiting_for=run.get("waiting_for") or [],
            wake_at=run.get("wake_at"),
            scheduled_for=run.get("scheduled_for"),
        )

    def has_completed(self) -> bool:
        """True once the run has ended: completed, failed or cancelled."""
        return self.status in FINISHED
