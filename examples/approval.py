"""An approval workflow: draft a text, ask a person whether to publish it, then publish or revise.

    python -m server --workflows examples/approval.py
    python -m client run approval --input '{"topic": "background workflows"}'

The run streams its draft, then waits (status `waiting`) for an answer to "Publish this
draft?": open the dashboard (http://127.0.0.1:8000/), tick "approve" (or leave a note) and
send; or answer over the wire with `respond`. A waiting run holds no worker and survives a
restart of the server with the same question; the draft is not written again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from server import Router, Step, StepContext, StepInput, Workflow

WORD_DELAY = 0.02  # seconds between streamed words

REVIEW_SCHEMA = {
    "type": "object",
    "required": ["approve"],
    "properties": {
        "approve": {"type": "boolean", "title": "Approve", "description": "Publish the draft as it is."},
        "note": {"type": "string", "title": "Note", "description": "What to change, if not approved."},
    },
}


def draft_text(topic: str) -> str:
    return f"{topic[:1].upper() + topic[1:]}: start the work, close the tab, and come back to a finished result."


async def draft(step_input: StepInput) -> AsyncIterator[str]:
    """Stream the draft word by word (its output is the whole text)."""
    for i, word in enumerate(draft_text(step_input.input["topic"]).split(" ")):
        await asyncio.sleep(WORD_DELAY)
        yield word if i == 0 else " " + word


async def review(step_input: StepInput, ctx: StepContext) -> dict[str, Any]:
    """Ask a person; the run waits (holding no worker) until someone answers."""
    answer: dict[str, Any] = await ctx.ask("Publish this draft?", schema=REVIEW_SCHEMA)
    return answer


def publish(step_input: StepInput) -> dict[str, Any]:
    return {"published": step_input.get_step_content("draft")}


def revise(step_input: StepInput) -> dict[str, Any]:
    note = (step_input.get_step_content("review") or {}).get("note") or "no note"
    return {"revised": f"{step_input.get_step_content('draft')} (revised: {note})"}


def decide(step_input: StepInput) -> str:
    return "publish" if step_input.get_step_content("review")["approve"] else "revise"


approval = Workflow(
    name="approval",
    description='Draft, ask a person to approve, then publish or revise. Input {"topic": "..."}.',
    steps=[
        Step("draft", draft),
        Step("review", review),
        Router("decide", decide, [Step("publish", publish), Step("revise", revise)]),
    ],
    input_schema={
        "type": "object",
        "properties": {"topic": {"type": "string", "default": "background workflows", "maxLength": 500}},
    },
)
