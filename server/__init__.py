"""runcast: run long workflows in the background and stream their progress in real time.

The Python API uses the words of the background-workflow docs users know::

    from server import Workflow, Step, SqliteDb
    wf = Workflow(name="Content", steps=[Step(name="research", executor=fn)],
                  db=SqliteDb(db_file="tmp/workflow.db"))
    out = await wf.arun(input="AI trends", background=True)
    run = wf.get_run(out.run_id)
    run.has_completed()
"""

from .agents import (
    Agent,
    ModelError,
    OfflineModel,
    OfflineToolModel,
    OpenAIChat,
    Team,
    Tool,
    Toolkit,
    default_model,
    tool,
)
from .display import pprint_run_response
from .engine import AskTimeout, Engine, StepContext
from .protocol import VERSION as __version__
from .protocol import (
    BadRequest,
    Conflict,
    ErrorCode,
    InvalidInput,
    RuncastError,
    RunNotFound,
    UnknownWorkflow,
)
from .runtime import PostgresDb, Runtime, SqliteDb
from .settings import Limits, Settings
from .workflow import (
    Condition,
    Loop,
    Parallel,
    Router,
    RunOutput,
    RunStatus,
    Step,
    StepInput,
    StepOutput,
    Steps,
    StepStatus,
    Workflow,
)

__all__ = [
    "Agent",
    "AskTimeout",
    "BadRequest",
    "Condition",
    "Conflict",
    "Engine",
    "ErrorCode",
    "InvalidInput",
    "Limits",
    "Loop",
    "ModelError",
    "OfflineModel",
    "OfflineToolModel",
    "OpenAIChat",
    "Parallel",
    "PostgresDb",
    "Router",
    "RunNotFound",
    "RunOutput",
    "RunStatus",
    "RuncastError",
    "Runtime",
    "Settings",
    "SqliteDb",
    "Step",
    "StepContext",
    "StepInput",
    "StepOutput",
    "StepStatus",
    "Steps",
    "Team",
    "Tool",
    "Toolkit",
    "UnknownWorkflow",
    "Workflow",
    "__version__",
    "default_model",
    "pprint_run_response",
    "tool",
]
