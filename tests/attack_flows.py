"""Workflows for tests/test_attacks.py: steps that count their executions in files under
RUNCAST_ATTACK_DIR (which the test sets), and steps that hand the server text it cannot
store as it is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from server import Step, StepContext, StepInput, Workflow


def record_file(tag: str) -> Path:
    return Path(os.environ["RUNCAST_ATTACK_DIR"]) / f"{tag}.runs"


async def _record(step_input: StepInput) -> Any:
    """Appends a line for each execution to the file named by the input's tag."""
    tag = step_input.input["tag"]
    with record_file(tag).open("a") as f:
        f.write("ran\n")
    return tag


once = Workflow("once", [Step("record", _record)], description="counts its executions")


LONE = "\ud83d"  # half of an emoji: what a model's stream split in two, or os.fsdecode of a bad byte, gives


def _lone(step_input: StepInput, ctx: StepContext) -> Any:
    where = step_input.input["where"]
    if where == "delta":
        ctx.output(f"half {LONE} an emoji")
    elif where == "progress":
        ctx.progress(message=f"at {LONE}", current=1)
    elif where == "error":
        raise ValueError(f"bad byte {LONE}")
    elif where == "key":
        return {f"key {LONE}": 1}
    return f"output {LONE}" if where == "output" else "fine"


lone_surrogates = Workflow("lone_surrogates", [Step("write", _lone)])
