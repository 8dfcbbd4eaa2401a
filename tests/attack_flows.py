"""Workflows for tests/test_attacks.py: steps that count their executions in files under
RUNCAST_ATTACK_DIR (which the test sets), and steps that hand the server text it cannot
store as it is."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server import Agent, Step, StepContext, StepInput, Workflow, tool
from server.agents import Message, ToolCall


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


class OneCallModel:
    """A model that asks for one tool call with the given raw arguments, then answers with
    what the tool gave back (or the error it was told)."""

    def __init__(self, tool: str, arguments: str) -> None:
        self.id = f"one-call-{tool}"
        self.tool, self.arguments = tool, arguments

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        async for item in self.turn(messages, []):
            if isinstance(item, str):
                yield item

    async def turn(self, messages: list[Message], tools: list[dict[str, Any]]) -> AsyncIterator[str | ToolCall]:
        results = [str(m["content"]) for m in messages if m["role"] == "tool"]
        if not results:
            yield ToolCall("call_1", self.tool, self.arguments)
            return
        yield "told: " + "; ".join(results)


def takes_anything(x: Any = None) -> str:
    """Takes whatever it is given."""
    return "took it"


DEEP = '{"x": ' + "[" * 3000 + "]" * 3000 + "}"
deep_args = Workflow(
    "deep_args",
    [Step("think", agent=Agent("deep", model=OneCallModel("takes_anything", DEEP), tools=[takes_anything]))],
)


@tool(timeout=0.5)
def never_answers(x: Any = None) -> str:
    """Waits for a reply on a socket that never gets one."""
    mine, theirs = socket.socketpair()
    try:
        mine.recv(1)  # blocks for good: nobody writes to `theirs`
    finally:
        mine.close()
        theirs.close()
    return "never"


hang = Workflow(
    "hang", [Step("think", agent=Agent("hang", model=OneCallModel("never_answers", "{}"), tools=[never_answers]))]
)
quick = Workflow(
    "quick", [Step("think", agent=Agent("quick", model=OneCallModel("takes_anything", "{}"), tools=[takes_anything]))]
)


# A pattern a workflow's author may well write, that backtracks catastrophically on a
# long run of `a` followed by a `b` (29 characters: 15 s in Python's `re`).
patterned = Workflow(
    "patterned",
    [Step("echo", lambda si: si.input)],
    input_schema={"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a|aa)+$"}}},
)


def _chatty(step_input: StepInput, ctx: StepContext) -> str:
    """`pieces` deltas of `size` characters each."""
    for _ in range(step_input.input["pieces"]):
        ctx.output("y" * step_input.input["size"])
    return "said it all"


chatty = Workflow("chatty", [Step("talk", _chatty)])
