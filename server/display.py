"""Printing a finished run in a terminal, as the background-workflow docs do."""

from __future__ import annotations

import json

from .workflow import RunOutput


def pprint_run_response(run: RunOutput | None, markdown: bool = False) -> None:
    """Print a run's status, steps and content (text as is, anything else as JSON)."""
    if run is None:
        print("(no run)")
        return
    print(f"Run {run.run_id} ({run.workflow}): {run.status.value}")
    for step in run.steps:
        print(f"  {step['name']:<28} {step['status']}")
    if run.error:
        print(f"Error: {run.error}")
    content = run.content
    print(content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False))
