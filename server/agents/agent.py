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
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from ..workflow import StepInput
from .models import Message, Model, closing, default_model

log = logging.getLogger("runcast.agents")


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
    ) -> None:
        if not name:
            raise ValueError("an agent needs a name")
        if tools:  # accepted so that agents written for other frameworks load; runcast calls no tools yet
            log.warning("agent %r: tools are not supported and are ignored", name)
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

    async def stream(self, step_input: StepInput) -> AsyncIterator[str]:
        """Stream the model's answer to `step_input` as text deltas (the step executor)."""
        model = self.model or default_model()
        async with closing(model.stream(self.messages(step_input))) as deltas:
            async for delta in deltas:
                yield delta


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

    async def stream(self, step_input: StepInput) -> AsyncIterator[str]:
        """Stream every member's answer in turn, each under a heading (the step executor)."""
        previous = step_input.previous_step_content
        for index, member in enumerate(self.members):
            yield f"## {member.name}\n\n" if index == 0 else f"\n\n## {member.name}\n\n"
            member_input = StepInput(step_input.input, previous, dict(step_input.previous_step_outputs))
            model = member.model or self.model or default_model()
            parts: list[str] = []
            messages = member.messages(member_input, team_instructions=self.instructions)
            async with closing(model.stream(messages)) as deltas:
                async for delta in deltas:
                    parts.append(delta)
                    yield delta
            previous = "".join(parts)
