"""An approval workflow: draft a text, ask a person whether to publish it, then publish or revise.

    .venv/bin/python -m server --workflows examples/approval.py
    .venv/bin/python -m client run approval --input '{"topic": "background workflows"}'

The run streams its draft, then waits (status `waiting`) for an answer to "Publish this
draft?": open the dashboard (http://127.0.0.1:8000/), tick "Approve" (or leave a note) and
send; or answer over the wire with `respond`. A waiting run holds no worker and survives a
restart of the server with the same question; the draft is not written again.

Without a server, the Python API plays the person (`--revise NOTE` answers no, with a note):

    .venv/bin/python examples/approval.py [--revise "shorter, please"]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from server import Router, RunOutput, SqliteDb, Step, StepContext, StepInput, Workflow

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
    db=SqliteDb(db_file="tmp/examples.db"),  # for the Python API below; a server keeps its own --db
)


async def poll(run_id: str, until: Callable[[RunOutput], bool]) -> RunOutput:
    """Read the run every 50 ms until `until(run)` holds."""
    while (run := await approval.aget_run(run_id)) is None or not until(run):
        await asyncio.sleep(0.05)
    return run


async def main(note: str | None) -> None:
    started = await approval.arun(input={"topic": "background workflows"}, background=True)
    run = await poll(started.run_id, lambda r: bool(r.waiting_for))  # the draft streams first
    question = run.waiting_for[0]
    print(f"{run.status}: {question['prompt']}")
    answer = {"approve": True} if note is None else {"approve": False, "note": note}
    await approval.arespond(run.run_id, question["request_id"], answer)
    run = await poll(run.run_id, RunOutput.has_completed)
    print(f"{run.status}: {run.content}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Draft, ask, then publish or revise.")
    parser.add_argument("--revise", metavar="NOTE", help="answer no, with this note")
    asyncio.run(main(parser.parse_args().revise))
