"""What users compose: workflows, steps, composition kinds, input schemas, run status values.

Nothing here runs anything: `Workflow.arun` reaches the runtime through `RunDatabase`.
"""

from .composition import Condition, Group, Loop, Node, Parallel, Router, Steps, walk
from .run import FINISHED, RunOutput, RunStatus, StepStatus
from .step import Executor, Step, StepInput, StepOutput
from .workflow import RunDatabase, Workflow

__all__ = [
    "FINISHED",
    "Condition",
    "Executor",
    "Group",
    "Loop",
    "Node",
    "Parallel",
    "Router",
    "RunDatabase",
    "RunOutput",
    "RunStatus",
    "Step",
    "StepInput",
    "StepOutput",
    "StepStatus",
    "Steps",
    "Workflow",
    "walk",
]
