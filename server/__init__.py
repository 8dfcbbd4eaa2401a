"""runcast: run long workflows in the background and stream their progress in real time.

The Python API uses the words of the background-workflow docs users know::

    from server import Workflow, Step, SqliteDb
    wf = Workflow(name="Content", steps=[Step(name="research", executor=fn)],
                  db=SqliteDb(db_file="tmp/workflow.db"))
    out = await wf.arun(input="AI trends", background=True)
    run = wf.get_run(out.run_id)
    run.has_completed()
"""

__version__ = "0.1.0"

from .agents import Agent, Team
from .display import pprint_run_response
from .engine import Engine, RunOutput, RunStatus, StepStatus
from .models import ModelError, OfflineModel, OpenAIChat, default_model
from .protocol import (
    BadRequest,
    Conflict,
    ErrorCode,
    InvalidInput,
    RuncastError,
    RunNotFound,
    UnknownWorkflow,
)
from .runtime import Runtime, SqliteDb
from .steps import Condition, Loop, Parallel, Router, Steps
from .workflow import Step, StepContext, StepInput, StepOutput, Workflow

__all__ = [
    "Agent",
    "BadRequest",
    "Condition",
    "Conflict",
    "Engine",
    "ErrorCode",
    "InvalidInput",
    "Loop",
    "ModelError",
    "OfflineModel",
    "OpenAIChat",
    "Parallel",
    "Router",
    "RunNotFound",
    "RunOutput",
    "RunStatus",
    "RuncastError",
    "Runtime",
    "SqliteDb",
    "Step",
    "StepContext",
    "StepInput",
    "StepOutput",
    "StepStatus",
    "Steps",
    "Team",
    "UnknownWorkflow",
    "Workflow",
    "__version__",
    "default_model",
    "pprint_run_response",
]
