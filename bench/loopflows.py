"""Workflows of bench/loop.py, loaded into the server with `--workflows bench/loopflows.py`.

- `asks`: one async step that asks (`ctx.ask`), then sends one `progress` event and ends:
  the path of an answer. `tells` is the same step without the ask: its baseline.
- `questions`: one async step that asks `n` times in a row: each answer runs the step again
  from its start, past every ask answered so far.
- `emits`: one async step that sends `n` progress events: the events of an agent's tool
  rounds without the rounds.
- `tools`: an agent step whose model (`QuietToolModel`, the offline tool model with no delay)
  calls each of its `TOOLS` trivial tools once, all in one turn, then answers "done".
- `rounds`: an agent step whose model (`RoundsModel`) makes `rounds` rounds of one tool call
  each, a one-letter text before each; with `"fail": true` its first try fails after the
  last round and the step is tried again at once, rebuilding the rounds from the stored
  events. The model times that and puts it in its answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from server import Step, StepContext, StepInput, Workflow
from server.agents import Agent, Message, OfflineToolModel, ToolCall, tool

TOOLS = 10  # tools of the `tools` agent: one round of this many calls per run
OUTPUT_MARK = "|"  # RoundsModel's answer: the kept text, then this, then its timings as JSON


async def _asks(step_input: StepInput, ctx: StepContext) -> Any:
    value = await ctx.ask("Go on?")
    ctx.progress(answered=True)
    return value


async def _tells(step_input: StepInput, ctx: StepContext) -> Any:
    ctx.progress(answered=True)
    return step_input.input


async def _questions(step_input: StepInput, ctx: StepContext) -> int:
    n = int(step_input.input["n"])
    for i in range(n):
        await ctx.ask(f"Question {i + 1}?")
    return n


async def _emits(step_input: StepInput, ctx: StepContext) -> int:
    n = int(step_input.input["n"])
    for i in range(n):
        ctx.progress(i=i)
    return n


def lookup(q: str) -> str:
    """Give the query back (a trivial tool).

    Args:
        q: What to look up.
    """
    return q


class QuietToolModel(OfflineToolModel):
    """OfflineToolModel with no delay and a one-word answer, so that a run's events are its
    tool calls' (and one delta)."""

    def __init__(self) -> None:
        super().__init__("bench-tools", delay=0)

    def answer(self, messages: list[Message], results: list[tuple[str, str]]) -> str:
        return "done"


class RoundsModel(OfflineToolModel):
    """Makes `rounds` rounds (the run's input) of one call of the first tool, streaming "r"
    before each; then answers. With `fail`, the first try raises once the rounds are done,
    and the retry's answer says, in ms, how long the rounds took live (`live_ms`, first turn
    to the failure) and how long from the failure to this turn (`resume_ms`: the step
    failed, tried again, its stored events read back and its conversation rebuilt)."""

    def __init__(self) -> None:
        super().__init__("bench-rounds", delay=0)
        self.began: dict[str, float] = {}
        self.failed: dict[str, float] = {}

    async def turn(self, messages: list[Message], tools: list[dict[str, Any]]) -> AsyncIterator[str | ToolCall]:
        now = time.perf_counter()
        cfg = json.loads(next(m["content"] for m in messages if m.get("role") == "user"))
        key, rounds = str(cfg["key"]), int(cfg["rounds"])
        self.began.setdefault(key, now)
        done = sum(1 for m in messages if m.get("role") == "tool")
        if done < rounds:
            yield "r"
            yield ToolCall(f"call_{done + 1}", tools[0]["function"]["name"], '{"q": "x"}')
            return
        if cfg.get("fail") and key not in self.failed:
            self.failed[key] = time.perf_counter()
            raise RuntimeError("planned failure: the step is tried again")
        timings: dict[str, float] = {}
        if key in self.failed:
            failed = self.failed.pop(key)
            timings = {"live_ms": (failed - self.began[key]) * 1e3, "resume_ms": (now - failed) * 1e3}
        self.began.pop(key, None)
        yield OUTPUT_MARK + json.dumps(timings)


asks = Workflow("asks", [Step("ask", _asks)], description="asks, then one progress event")
tells = Workflow("tells", [Step("tell", _tells)], description="one progress event (asks without the ask)")
questions = Workflow("questions", [Step("ask", _questions)], description='{"n"}: asks n times in a row')
emits = Workflow("emits", [Step("emit", _emits)], description='{"n"}: n progress events')
tools = Workflow(
    "tools",
    [Step("agent", agent=Agent("caller", QuietToolModel(), tools=[tool(name=f"t{i}")(lookup) for i in range(TOOLS)]))],
    description=f"an agent calling {TOOLS} trivial tools in one round",
)
rounds = Workflow(
    "rounds",
    [
        Step(
            "agent",
            agent=Agent("looper", RoundsModel(), tools=[lookup], max_tool_rounds=100_000),
            max_retries=1,
            retry_delay=0,
        )
    ],
    description='{"rounds", "key", "fail"}: an agent making that many rounds of one tool call',
)
