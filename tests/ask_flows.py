"""Workflows whose steps wait for a person (`ctx.ask`), for the client's tests
(tests/test_client_respond.py), loaded into a real server with --workflows."""

from typing import Any

from server import Step, StepContext, StepInput, Workflow
from server.workflow import Parallel

PUBLISH = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
FORM = {
    "type": "object",
    "required": ["name", "copies"],
    "properties": {
        "name": {"type": "string", "description": "who signs"},
        "copies": {"type": "integer", "minimum": 1},
        "color": {"enum": ["red", "green", "blue"], "default": "green"},
        "note": {"type": "string"},
    },
}


async def _publish(step_input: StepInput, ctx: StepContext) -> Any:
    return await ctx.ask("Publish this?", schema=PUBLISH)


async def _form(step_input: StepInput, ctx: StepContext) -> Any:
    return await ctx.ask("Fill in the order", schema=FORM)


def _asks(prompt: str, schema: dict[str, Any]):
    async def run(step_input: StepInput, ctx: StepContext) -> Any:
        return await ctx.ask(prompt, schema=schema)

    return run


approval = Workflow("approval", [Step("approve", _publish)], description="asks one yes/no question")
order = Workflow("order", [Step("order", _form)], description="asks for an object of several fields")
two_reviews = Workflow(
    "two_reviews",
    [Parallel(Step("legal", _asks("Legal ok?", PUBLISH)), Step("style", _asks("Style ok?", PUBLISH)), name="review")],
    description="two branches ask at once",
)
one_then_another = Workflow(
    "one_then_another",
    [Step("first", _asks("First?", {"type": "integer"})), Step("second", _asks("Second?", {"type": "integer"}))],
    description="two asks, one after the other",
)

# Six open requests whose schemas are 200 kB each: the run's snapshot cuts them short.
BIG_NUMBER = {"type": "integer", "description": "a whole number, explained at length: " + "x" * 200_000}
six_big_asks = Workflow(
    "six_big_asks",
    [Parallel(*[Step(f"ask{i}", _asks(f"Number {i}?", BIG_NUMBER)) for i in range(6)], name="asks")],
    description="six asks too big for one snapshot",
)


async def _quick(step_input: StepInput, ctx: StepContext) -> Any:
    return await ctx.ask("How many?", {"type": "integer"}, timeout=300, default=5)


timed_ask = Workflow("timed_ask", [Step("quick", _quick)], description="an ask with a deadline and a default")
