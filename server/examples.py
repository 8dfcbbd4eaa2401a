"""The built-in workflows of the contract (section 6); always registered."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

from .agents import Agent, OfflineToolModel
from .engine import StepContext
from .workflow import Node, Step, StepInput, Workflow


def _object(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def _number(default: float, low: float, high: float, kind: str = "number") -> dict[str, Any]:
    return {"type": kind, "default": default, "minimum": low, "maximum": high}


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
        if delay or current % 256 == 0:  # with no delay, yield to the loop now and then, not per event
            await asyncio.sleep(delay)
        ctx.progress(current=current, total=n)
        await ctx.drain()  # n may be large and delay 0: never outrun the store
    return {"count": n}


count = Workflow(
    "count",
    [Step("count", _count)],
    description='Reports progress n times, delay seconds apart. Input {"n": 3, "delay": 0.05}.',
    input_schema=_object(n=_number(3, 0, 1_000_000, "integer"), delay=_number(0.05, 0, 3600)),
)


# ---- chain -------------------------------------------------------------------------


class _Chain(Workflow):
    """N steps s1..sN; how many depends on the input, so the plan is made per run."""

    def steps_for(self, input: Any) -> list[Node]:
        n, delay = (input["n"], input["delay"]) if isinstance(input, dict) else (3, 0.05)
        return list(_chain_plan(n, delay))


@functools.lru_cache(maxsize=64)
def _chain_plan(n: int, delay: float) -> tuple[Step, ...]:
    # A plan is made for every run, and building Steps inspects functions: keep the common ones.
    return tuple(Step(f"s{i}", _chain_step(i, delay)) for i in range(1, n + 1))


def _chain_step(number: int, delay: float) -> Any:
    async def step(step_input: StepInput) -> int:
        await asyncio.sleep(delay)
        return number

    return step


chain = _Chain(
    "chain",
    [Step(f"s{i}", _chain_step(i, 0.05)) for i in range(1, 4)],
    description='N steps s1..sN, each sleeps delay and outputs its number. Input {"n": 3, "delay": 0.05}.',
    input_schema=_object(n=_number(3, 1, 1000, "integer"), delay=_number(0.05, 0, 3600)),
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
    input_schema=_object(seconds=_number(60, 0, 86_400)),
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
    input_schema=_object(message={"type": "string", "default": "boom"}),
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
        f"{topic[:1].upper() + topic[1:]} matter because work no longer fits in a request. "
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
    input_schema=_object(topic={"type": "string", "default": "background workflows", "maxLength": 500}),
)


# ---- tools -------------------------------------------------------------------------

NOTES = (
    "Background workflows let people start long work and close the tab.",
    "A run streams its events live: steps, progress, text and tool calls.",
    "Every event is stored before it is shown, so a result is never lost.",
    "Agents call tools, typed and documented Python functions, and use what they return.",
    "A tool call that fails is told to the model; the step goes on.",
    "Runs survive a server restart and resume from the step they were in.",
)


def word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text to count the words of.
    """
    return len(text.split())


def search_notes(query: str, limit: int = 3) -> list[str]:
    """Search the built-in notes for the words of a query, best matches first.

    Args:
        query: Words to look for.
        limit: At most this many notes.
    """
    words = {w.strip(".,!?").lower() for w in query.split() if len(w) > 2}

    def score(note: str) -> int:
        return sum(w.strip(".,:").lower() in words for w in note.split())

    ranked = sorted(NOTES, key=score, reverse=True)  # stable: ties keep the notes' order
    return ranked[: max(0, limit)]


tools = Workflow(
    "tools",
    [
        Step(
            "research",
            agent=Agent(
                "Researcher",
                model=OfflineToolModel(),
                role="a researcher who looks things up in local notes before answering",
                tools=[word_count, search_notes],
            ),
        )
    ],
    description='An offline agent calls local tools (word_count, search_notes), then answers. Input {"topic": "..."}.',
    input_schema=_object(topic={"type": "string", "default": "background workflows", "maxLength": 500}),
)


BUILT_IN: list[Workflow] = [echo, count, chain, sleep, fail, content, tools]
