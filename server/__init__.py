"""runcast: run long workflows in the background and stream their progress in real time.

The Python API uses the words of the background-workflow docs users know::

    from server import Workflow, Step, SqliteDb
    wf = Workflow(name="Content", steps=[Step(name="research", executor=fn)],
                  db=SqliteDb(db_file="tmp/workflow.db"))
    out = await wf.arun(input="AI trends", background=True)
    run = wf.get_run(out.run_id)
    run.has_completed()
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agents import (
        Agent,
        ModelError,
        OfflineModel,
        OfflineToolModel,
        OpenAIChat,
        Team,
        Tool,
        Toolkit,
        current_tool_call,
        default_model,
        tool,
    )
    from .databases import PostgresDb, SqliteDb
    from .display import pprint_run_response
    from .engine import AskTimeout, Engine, StepContext
    from .identities import mint_token
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
    from .runtime import Runtime
    from .schedules import Schedule
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

# Where each public name lives: imported on first use, so that `import server.fold` (the
# client library does) does not load the whole server.
_WHERE = {
    **dict.fromkeys(
        ("Agent", "ModelError", "OfflineModel", "OfflineToolModel", "OpenAIChat", "Team", "Tool", "Toolkit"), "agents"
    ),
    "default_model": "agents",
    "current_tool_call": "agents",
    "tool": "agents",
    "pprint_run_response": "display",
    "mint_token": "identities",
    **dict.fromkeys(("AskTimeout", "Engine", "StepContext"), "engine"),
    **dict.fromkeys(
        ("BadRequest", "Conflict", "ErrorCode", "InvalidInput", "RuncastError", "RunNotFound", "UnknownWorkflow"),
        "protocol",
    ),
    **dict.fromkeys(("PostgresDb", "SqliteDb"), "databases"),
    "Runtime": "runtime",
    "Schedule": "schedules",
    **dict.fromkeys(("Limits", "Settings"), "settings"),
    **dict.fromkeys(
        ("Condition", "Loop", "Parallel", "Router", "RunOutput", "RunStatus", "Step", "StepInput", "StepOutput"),
        "workflow",
    ),
    **dict.fromkeys(("Steps", "StepStatus", "Workflow"), "workflow"),
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return importlib.import_module(".protocol", __name__).VERSION
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "Schedule",
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
    "current_tool_call",
    "default_model",
    "mint_token",
    "pprint_run_response",
    "tool",
]
