"""Agents and teams as step executors: a model answering with instructions, streamed.

An agent's `stream` is an async generator taking a `StepInput`, which is exactly what a
step executor may be, so its answer streams as `step_output` deltas and the whole text
becomes the step's output::

    writer = Agent("writer", instructions="Write three short paragraphs.", role="a technical writer")
    wf = Workflow("agentic", [Step("write", writer.stream)])

    team = Team("desk", [Agent("researcher", ...), Agent("writer", ...)])
    wf = Workflow("desk", [Step("draft", team.stream)])

With no model given, `default_model()` is used when the step runs: OpenAI when
OPENAI_API_KEY is set, the offline model otherwise.

An agent with `tools=` (functions, Tools, Toolkits; see tools.py) lets its model call
them: the calls of a turn run at once, each streamed as `tool_call_started` and then
`tool_call_completed` or `tool_call_failed`, and their results go back to the model
until it answers in text, for at most `max_tool_rounds` rounds of calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..bounds import EventTooLarge, clip_error
from ..protocol import dumps
from ..workflow import StepInput
from .models import Message, Model, ToolCall, ToolModel, closing, default_model
from .tools import Tool, ToolCallFailed, as_tools

if TYPE_CHECKING:
    from ..engine.context import StepContext, ToolEvent

DEFAULT_MAX_TOOL_ROUNDS = 10


class AgentError(Exception):
    """An agent could not finish its answer, e.g. its model kept calling tools."""


def _lines(instructions: str | list[str]) -> str:
    """Instructions as one text; a list is one instruction a line."""
    return instructions if isinstance(instructions, str) else "\n".join(instructions)


def as_text(value: Any) -> str:
    """A step value as prompt text: strings as they are, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class Agent:
    """A named model with instructions and a role, usable as a step executor (`agent.stream`).

    It answers the run's input, or, when an earlier step produced something, builds on
    that output (and is told the original request too).
    """

    def __init__(
        self,
        name: str,
        model: Model | None = None,
        instructions: str | list[str] = "",
        role: str = "",
        *,
        tools: list[Any] | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
    ) -> None:
        if not name:
            raise ValueError("an agent needs a name")
        if max_tool_rounds < 0:
            raise ValueError(f"agent {name!r}: max_tool_rounds must be >= 0")
        self.tools: dict[str, Tool] = as_tools(tools or [])
        self.max_tool_rounds = max_tool_rounds
        self.name = name
        self.model = model
        self.instructions = _lines(instructions)
        self.role = role

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, model={self.model!r})"

    def messages(self, step_input: StepInput, *, team_instructions: str = "") -> list[Message]:
        """The chat messages this agent sends for `step_input`.

        system: who the agent is and its role, then the team's and its own instructions
        (the agent's own last, so they are what it reads last).
        user: the run's input; or, after a step with output, that output, headed by the
        original request.
        """
        intro = f"You are {self.name}, {self.role}." if self.role else f"You are {self.name}."
        system = "\n".join(part for part in (intro, team_instructions.strip(), self.instructions.strip()) if part)
        request = as_text(step_input.input) or "(no input given)"
        previous = as_text(step_input.previous_step_content)
        user = f"Original request: {request}\n\nPrevious step output:\n{previous}" if previous else request
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    async def stream(self, step_input: StepInput, ctx: StepContext | None = None) -> AsyncIterator[str]:
        """Stream the model's answer to `step_input` as text deltas (the step executor);
        tool calls are reported through `ctx`, when given."""
        async with closing(self.answer(self.model or default_model(), self.messages(step_input), ctx)) as deltas:
            async for delta in deltas:
                yield delta

    async def answer(self, model: Model, messages: list[Message], ctx: StepContext | None) -> AsyncIterator[str]:
        """`model`'s text deltas for `messages`, calling this agent's tools as it asks."""
        if not self.tools:
            async with closing(model.stream(messages)) as deltas:
                async for delta in deltas:
                    yield delta
            return
        if not isinstance(model, ToolModel):
            raise AgentError(f"agent {self.name!r}: model {model!r} cannot call tools")
        specs = [t.spec() for t in self.tools.values()]
        messages = list(messages)
        for rounds in range(self.max_tool_rounds + 1):
            text: list[str] = []
            calls: list[ToolCall] = []
            async with closing(model.turn(messages, specs)) as items:
                async for item in items:
                    if isinstance(item, ToolCall):
                        calls.append(item)
                    else:
                        text.append(item)
                        yield item
            if not calls:
                return
            if rounds == self.max_tool_rounds:
                raise AgentError(
                    f"agent {self.name!r}: the model still called tools after {self.max_tool_rounds} rounds "
                    "(max_tool_rounds)"
                )
            messages.append(
                {"role": "assistant", "content": "".join(text) or None, "tool_calls": [c.message() for c in calls]}
            )
            for call in calls:
                _report(ctx, "tool_call_started", {"call_id": call.id, "tool": call.name, "args": _args(call)})
            results = await asyncio.gather(*(self._call(call, ctx) for call in calls))
            messages += [
                {"role": "tool", "tool_call_id": c.id, "content": r} for c, r in zip(calls, results, strict=True)
            ]

    async def _call(self, call: ToolCall, ctx: StepContext | None) -> str:
        """Run one call and report how it ended; return what the model is told."""
        found = self.tools.get(call.name)
        try:
            if found is None:
                raise ToolCallFailed(f"unknown tool {call.name!r}; the tools are {', '.join(self.tools)}")
            result = await found.run(call.arguments)
            _report(ctx, "tool_call_completed", {"call_id": call.id, "tool": call.name, "result": result})
        except (ToolCallFailed, EventTooLarge) as exc:
            error = clip_error(str(exc))
            _report(ctx, "tool_call_failed", {"call_id": call.id, "tool": call.name, "error": error})
            return dumps({"error": error})
        return result if isinstance(result, str) else dumps(result)


class Team:
    """Agents that work one after another on the same request, usable as a step executor
    (`team.stream`).

    The first member builds on whatever the step received (the run's input or the
    previous step's output); each next member builds on the text of the member before it.
    Each member's part is streamed under a "## name" heading, and the step's output is
    the whole streamed text, headings included. `instructions` are given to every member;
    `model` is used by members that have none of their own.
    """

    def __init__(
        self, name: str, members: list[Agent], instructions: str | list[str] = "", model: Model | None = None
    ) -> None:
        if not name:
            raise ValueError("a team needs a name")
        if not members:
            raise ValueError(f"team {name!r} needs at least one member")
        self.name = name
        self.members = list(members)
        self.instructions = _lines(instructions)
        self.model = model

    def __repr__(self) -> str:
        return f"Team({self.name!r}, members={[m.name for m in self.members]})"

    async def stream(self, step_input: StepInput, ctx: StepContext | None = None) -> AsyncIterator[str]:
        """Stream every member's answer in turn, each under a heading (the step executor)."""
        previous = step_input.previous_step_content
        for index, member in enumerate(self.members):
            yield f"## {member.name}\n\n" if index == 0 else f"\n\n## {member.name}\n\n"
            member_input = StepInput(step_input.input, previous, dict(step_input.previous_step_outputs))
            model = member.model or self.model or default_model()
            parts: list[str] = []
            messages = member.messages(member_input, team_instructions=self.instructions)
            async with closing(member.answer(model, messages, ctx)) as deltas:
                async for delta in deltas:
                    parts.append(delta)
                    yield delta
            previous = "".join(parts)


def _args(call: ToolCall) -> Any:
    """The call's arguments parsed, or the raw text when they are not valid JSON."""
    try:
        return json.loads(call.arguments)
    except ValueError:
        return call.arguments


def _report(ctx: StepContext | None, event: ToolEvent, data: dict[str, Any]) -> None:
    if ctx is not None:  # called outside the engine (a test, a script): nobody to tell
        ctx.tool_event(event, data)
