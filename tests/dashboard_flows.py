"""Workflows for the dashboard's browser tests (tests/test_dashboard_live.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from server import Step, StepContext, StepInput, Workflow

_tries: dict[str, int] = {}


def _fetch(step_input: StepInput, ctx: StepContext) -> str:
    _tries[ctx.run_id] = _tries.get(ctx.run_id, 0) + 1
    if _tries[ctx.run_id] == 1:
        raise ConnectionError("the service hung up")
    return "fetched"


async def _report(step_input: StepInput) -> str:
    await asyncio.sleep(0.05)
    return f"report on {step_input.previous_step_content}"


retry_once = Workflow(
    "retry_once",
    [Step("fetch", _fetch, max_retries=1, retry_delay=0.05), Step("report", _report)],
    description="fetch fails once and is tried again; then report",
)


async def _announce(step_input: StepInput, ctx: StepContext) -> str:
    # An event no version of the contract names, as a newer server might send: the dashboard
    # must show it, not drop it. (Steps have no public way to send one; tests reach in.)
    ctx._send("deploy_note", {"region": "eu-west", "replicas": 3})
    await asyncio.sleep(0.01)
    return "announced"


novel = Workflow("novel", [Step("announce", _announce)], description="a step that sends an unknown event")

RATING = {"type": "integer", "minimum": 1, "maximum": 5, "description": "1 (poor) to 5 (great)"}


async def _rate(step_input: StepInput, ctx: StepContext) -> Any:
    return await ctx.ask("How many stars?", schema=RATING)


rate = Workflow("rate", [Step("rate", _rate)], description="asks for a rating from 1 to 5")

EVERY_KIND = {
    "type": "object",
    "required": ["ship", "count", "name", "size"],
    "properties": {
        "ship": {"type": "boolean", "title": "Ship it"},
        "count": {"type": "integer", "title": "Count"},
        "ratio": {"type": "number", "title": "Ratio"},
        "name": {"type": "string", "title": "Name"},
        "size": {"enum": ["S", "M", "L"], "title": "Size"},
        "color": {"enum": ["red", "green", "blue", "cyan", "magenta", "yellow"], "title": "Color"},
        "owner": {
            "type": "object",
            "title": "Owner",
            "properties": {"email": {"type": "string"}, "admin": {"type": "boolean"}},
        },
        "tags": {"type": "array", "items": {"type": "string"}, "title": "Tags"},
    },
}


async def _ask_everything(step_input: StepInput, ctx: StepContext) -> Any:
    return await ctx.ask("Fill in everything", schema=EVERY_KIND)


every_kind = Workflow("every_kind", [Step("form", _ask_everything)], description="asks with every kind of field")

confirm = Workflow(
    "confirm",
    [
        Step("deploy", lambda si: "deployed", requires_confirmation=True, confirmation_message="Deploy to production?"),
        Step("notify", lambda si: f"told everyone: {si.previous_step_content}"),
    ],
    description="deploy only once a person says yes",
)


async def _ship(step_input: StepInput, ctx: StepContext) -> Any:
    return await ctx.ask("Ship it?", schema={"type": "boolean"}, timeout=600, default=False)


deadline = Workflow("deadline", [Step("ship", _ship)], description="a question with a timeout and a default")
