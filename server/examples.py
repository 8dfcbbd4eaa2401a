"""The built-in workflows of the contract (section 6); always registered."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from .protocol import InvalidInput
from .steps import Node
from .workflow import Step, StepContext, StepInput, Workflow


def _fields(workflow: str, value: Any, spec: dict[str, tuple[float, float, float, type]]) -> dict[str, Any]:
    """Check a JSON object of numbers against {field: (default, low, high, int or float)}."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        example = ", ".join(f'"{key}": {default}' for key, (default, *_) in spec.items())
        raise InvalidInput(f"{workflow} takes a JSON object like {{{example}}}")
    out = dict(value)
    for key, (default, low, high, kind) in spec.items():
        item = value.get(key, default)
        wants_int = kind is int
        ok_type = isinstance(item, int) if wants_int else isinstance(item, int | float)
        if isinstance(item, bool) or not ok_type or (isinstance(item, float) and not math.isfinite(item)):
            what = "an integer" if wants_int else "a number"
            raise InvalidInput(f"{workflow}: field '{key}' must be {what}, got {item!r}")
        if not low <= item <= high:
            raise InvalidInput(f"{workflow}: field '{key}' must be between {low:g} and {high:g}, got {item!r}")
        out[key] = item
    return out


def _text_field(workflow: str, value: Any, key: str, default: str) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{workflow} takes a JSON object like {{'{key}': '...'}}")
    item = value.get(key, default)
    if not isinstance(item, str):
        raise InvalidInput(f"{workflow}: field '{key}' must be a string, got {item!r}")
    return {**value, key: item}


# ---- echo --------------------------------------------------------------------------


def _echo(step_input: StepInput) -> Any:
    return step_input.input


echo = Workflow(
    "echo",
    [Step("echo", _echo)],
    description="Outputs its input unchanged.",
)


# ---- count -------------------------------------------------------------------------


async def _count(step_input: StepInput, ctx: StepContext) -> dict[str, int]:
    n, delay = step_input.input["n"], step_input.input["delay"]
    for current in range(1, n + 1):
        await asyncio.sleep(delay)
        ctx.progress(current=current, total=n)
    return {"count": n}


count = Workflow(
    "count",
    [Step("count", _count)],
    description='Reports progress n times, delay seconds apart. Input {"n": 3, "delay": 0.05}.',
    validate_input=lambda v: _fields("count", v, {"n": (3, 0, 1_000_000, int), "delay": (0.05, 0, 3600, float)}),
)


# ---- chain -------------------------------------------------------------------------


class _Chain(Workflow):
    """N steps s1..sN; how many depends on the input, so the plan is made per run."""

    def steps_for(self, input: Any) -> list[Node]:
        n = input["n"] if isinstance(input, dict) else 3
        return [
            Step(f"s{i}", _chain_step(i, input["delay"] if isinstance(input, dict) else 0.05)) for i in range(1, n + 1)
        ]


def _chain_step(number: int, delay: float) -> Any:
    async def step(step_input: StepInput) -> int:
        await asyncio.sleep(delay)
        return number

    return step


chain = _Chain(
    "chain",
    [Step(f"s{i}", _chain_step(i, 0.05)) for i in range(1, 4)],
    description='N steps s1..sN, each sleeps delay and outputs its number. Input {"n": 3, "delay": 0.05}.',
    validate_input=lambda v: _fields("chain", v, {"n": (3, 1, 1000, int), "delay": (0.05, 0, 3600, float)}),
)


# ---- sleep -------------------------------------------------------------------------


async def _sleep(step_input: StepInput) -> dict[str, Any]:
    seconds = step_input.input["seconds"]
    await asyncio.sleep(seconds)
    return {"slept": seconds}


sleep = Workflow(
    "sleep",
    [Step("sleep", _sleep)],
    description='Waits, then outputs how long. Cancellable at once. Input {"seconds": 60}.',
    validate_input=lambda v: _fields("sleep", v, {"seconds": (60, 0, 86_400, float)}),
)


# ---- fail --------------------------------------------------------------------------


def _ok(step_input: StepInput) -> str:
    return "ok"


def _boom(step_input: StepInput) -> None:
    raise RuntimeError(step_input.input["message"])


fail = Workflow(
    "fail",
    [Step("ok", _ok), Step("boom", _boom)],
    description='Step ok completes, step boom raises the message; the run fails. Input {"message": "boom"}.',
    validate_input=lambda v: _text_field("fail", v, "message", "boom"),
)


# ---- content -----------------------------------------------------------------------

WORD_DELAY = 0.03  # seconds between streamed words: fast enough to finish in seconds, slow enough to watch


async def _stream_words(text: str) -> AsyncIterator[str]:
    words = text.split(" ")
    for i, word in enumerate(words):
        await asyncio.sleep(WORD_DELAY)
        yield word if i == 0 else " " + word


def _research_text(topic: str) -> str:
    return (
        f"Notes on {topic}: people want to start long work and get on with their day; "
        f"they want to see progress as it happens; and they never want to lose a result."
    )


def _plan_text(topic: str) -> str:
    return f"Plan: 1. Why {topic} matters. 2. What changes for users. 3. What to do next."


def _written_text(topic: str) -> str:
    return (
        f"{topic.capitalize()} matter because work no longer fits in a request. "
        f"Users start a run, close the tab, and come back to a finished result, or watch it "
        f"stream live, step by step. The next move is simple: start small, measure, and keep "
        f"every event, so that nothing is ever lost."
    )


async def _research(step_input: StepInput) -> AsyncIterator[str]:
    async for piece in _stream_words(_research_text(step_input.input["topic"])):
        yield piece


async def _plan(step_input: StepInput) -> AsyncIterator[str]:
    async for piece in _stream_words(_plan_text(step_input.input["topic"])):
        yield piece


async def _write(step_input: StepInput) -> AsyncIterator[str]:
    async for piece in _stream_words(_written_text(step_input.input["topic"])):
        yield piece


content = Workflow(
    "content",
    [Step("research", _research), Step("plan", _plan), Step("write", _write)],
    description='The demo: research, plan and write about a topic, streaming text. Input {"topic": "AI trends"}.',
    validate_input=lambda v: _text_field("content", v, "topic", "background workflows"),
)


BUILT_IN: list[Workflow] = [echo, count, chain, sleep, fail, content]
