"""Workflows for tests/test_contract_11.py: an agent whose model asks, in one round, for a
tool call that works, one whose tool raises, and one whose arguments are not JSON; then
answers. Deterministic and offline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from server import Agent, Step, Workflow
from server.agents import Message, ToolCall

BROKEN_ARGUMENTS = '{"a": 1, "b":'  # what a model cut off mid-call sends


def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def explode(reason: str) -> str:
    """Always fails.

    Args:
        reason: Why.
    """
    raise RuntimeError(f"exploded: {reason}")


class MixedCallsModel:
    """First turn: three calls (add 2+3, explode, add with broken arguments); once the
    results are back: "done: " and what it was told of each call."""

    id = "mixed-calls"

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        async for item in self.turn(messages, []):
            if isinstance(item, str):
                yield item

    async def turn(self, messages: list[Message], tools: list[dict[str, Any]]) -> AsyncIterator[str | ToolCall]:
        await asyncio.sleep(0)
        if tools and not any(m["role"] == "tool" for m in messages):
            yield ToolCall("c1", "add", '{"a": 2, "b": 3}')
            yield ToolCall("c2", "explode", '{"reason": "on purpose"}')
            yield ToolCall("c3", "add", BROKEN_ARGUMENTS)
            return
        yield "done: " + " | ".join(str(m["content"]) for m in messages if m["role"] == "tool")


mixed_tools = Workflow(
    "mixed_tools", [Step("act", agent=Agent("Mixer", model=MixedCallsModel(), tools=[add, explode]))]
)
