"""Running: the engine (the one place a run changes state), the step runner, worker
threads and the step context."""

from .context import AskTimeout, StepContext
from .engine import Engine
from .runs import new_run_id
from .threads import StepThreads

__all__ = ["AskTimeout", "Engine", "StepContext", "StepThreads", "new_run_id"]
