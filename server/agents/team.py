"""Teams: agents that work together on one step, in one of two modes.

``mode="sequential"`` (the default): the members answer one after another, each building
on the text of the one before, each streamed under a "## name" heading::

    desk = Team("desk", [Agent("researcher", ...), Agent("writer", ...)])

``mode="coordinate"``: a leader model (the team's `model`) delegates to the members
through tools, one per member (``delegate_to_<name>``, taking a `task`), several at once
when it asks for several; each member runs its own model and tools on its task, and its
answer is the tool's result. The leader's text is the step's output; a member's text
streams as `step_output` deltas named by `agent` (and `parent_call_id`, the leader's call
it works on), and its tool events are named the same way::

    desk = Team("desk", [researcher, writer], mode="coordinate", model=OpenAIChat("gpt-4o-mini"))

Both are durable as agents are (see agent.py): a member's finished work, a member call of
the leader's that had completed, a tool call that had completed: none is done again.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

from ..workflow import StepInput
from .agent import DEFAULT_MAX_TOOL_ROUNDS, Agent, Scope, ToolCallContext, _lines
from .models import Model, closing
from .offline import default_model, default_tool_model
from .replay import TOOL_EVENTS, Entry, Past, conversation, rebuild
from .tools import Tool

if TYPE_CHECKING:
    from ..engine.context import History, StepContext

TeamMode = Literal["sequential", "coordinate"]
DEFAULT_MEMBER_TIMEOUT = 600.0  # seconds a member may take on one task of the leader's
_NOT_IN_A_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]+")


class Team:
    """Agents that work on one step together, usable as a step executor (`team.stream`).

    Sequential (the default): the first member builds on whatever the step received (the
    run's input or the previous step's output); each next member builds on the text of
    the member before it. Each member's part is streamed under a "## name" heading, and
    the step's output is the whole text, headings included. `instructions` are given to
    every member; `model` is used by members that have none of their own.

    Coordinate: the team is a leader, named as the team, whose model (`model`, or the
    default tool model) is given the step's input, the team's `instructions`, and one tool
    per member; `max_tool_rounds` bounds its rounds of delegation and `member_timeout` one
    member's task. Members use their own model, or the default one. The step's output is
    the leader's text.
    """

    def __init__(
        self,
        name: str,
        members: list[Agent],
        instructions: str | list[str] = "",
        model: Model | None = None,
        *,
        mode: TeamMode = "sequential",
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        member_timeout: float = DEFAULT_MEMBER_TIMEOUT,
    ) -> None:
        if not name:
            raise ValueError("a team needs a name")
        if not members:
            raise ValueError(f"team {name!r} needs at least one member")
        if mode not in ("sequential", "coordinate"):
            raise ValueError(f"team {name!r}: mode must be 'sequential' or 'coordinate', not {mode!r}")
        self.name = name
        self.members = list(members)
        self.instructions = _lines(instructions)
        self.model = model
        self.mode = mode
        self.leader: Agent | None = None
        if mode == "coordinate":
            names = [m.name for m in self.members]
            if len(set(names)) != len(names) or name in names:
                raise ValueError(f"team {name!r}: in coordinate mode, members need distinct names, not the team's")
            tools = [_member_tool(self, m, member_timeout) for m in self.members]
            self.leader = Agent(
                name,
                model,
                [*_roster(self.members, tools), self.instructions],
                "the leader of a team",
                tools=tools,
                max_tool_rounds=max_tool_rounds,
            )

    def __repr__(self) -> str:
        return f"Team({self.name!r}, members={[m.name for m in self.members]}, mode={self.mode!r})"

    async def stream(self, step_input: StepInput, ctx: StepContext | None = None) -> AsyncIterator[str]:
        """The step executor: the members' work streamed as the team's mode says."""
        if self.leader is not None:
            model = self.model or default_tool_model()
            answer = self.leader.respond(model, self.leader.messages(step_input), ctx)
        else:
            answer = self._in_turn(step_input, ctx)
        async with closing(answer) as deltas:
            async for delta in deltas:
                yield delta

    async def _in_turn(self, step_input: StepInput, ctx: StepContext | None) -> AsyncIterator[str]:
        """Every member's answer in turn, each under its heading. Run again, it streams the
        text kept so far again first, in one delta: the members that had finished (their
        next member's heading was stored) are not asked again, the member that was cut off
        goes on from its own stored events, the rest run."""
        scope = await Scope.of(ctx, self.name)
        reached = self._segments(scope.history)
        pasts = self._pasts(reached)
        kept = self._kept(pasts)
        if kept:
            yield kept
        previous = step_input.previous_step_content
        for index, member in enumerate(self.members):
            past = pasts[index] if index < len(pasts) else None
            if past is not None and index < len(pasts) - 1:
                previous = past.text + past.tail  # finished before the interruption
                continue
            if past is None:
                yield _heading(index, member)
            member_input = StepInput(step_input.input, previous, dict(step_input.previous_step_outputs))
            model = member.model or self.model or default_model()
            messages = member.messages(member_input, team_instructions=self.instructions)
            parts = [past.text] if past is not None else []
            async with closing(member.answer(model, messages, scope.named(member.name), past)) as deltas:
                async for delta in deltas:
                    parts.append(delta)
                    yield delta
            previous = "".join(parts)

    def _pasts(self, reached: list[list[Entry]]) -> list[Past]:
        """What each member reached had done, from its part of the stored events."""
        return [rebuild(conversation(seg, self.members[i].name), replayed=False) for i, seg in enumerate(reached)]

    def _kept(self, pasts: list[Past]) -> str:
        """The text a try going on from `pasts` (one per member reached) keeps: the headings
        and whole answers of the members that had finished, then the last one's heading and
        the text of its rounds of calls."""
        parts: list[str] = []
        for index, past in enumerate(pasts):
            finished = index < len(pasts) - 1
            parts += [_heading(index, self.members[index]), past.text + (past.tail if finished else "")]
        return "".join(parts)

    def _segments(self, history: History) -> list[list[Entry]]:
        """The team's stored events cut at each member's heading: one list per member
        reached, the heading left out, and so is the kept text a new try streamed first."""
        headings = [_heading(i, m) for i, m in enumerate(self.members)]
        found: list[list[Entry]] = []
        replay: str | None = None
        for event, data in history:
            if event == "step_output" and "agent" not in data:
                delta, (expected, replay) = data.get("delta"), (replay, None)
                if delta == expected:
                    continue
                if len(found) < len(headings) and delta == headings[len(found)]:
                    found.append([])
                    continue
            elif event == "step_started":
                replay = self._kept(self._pasts(found)) or None
            elif event in TOOL_EVENTS:
                replay = None
            if found:
                found[-1].append((event, data))
        return found

    async def _delegate(self, member: Agent, call: ToolCallContext, task: str) -> str:
        """A member's answer to one task of the leader's, its text streamed under its name;
        a task that was cut off goes on from the member's own stored events, streaming the
        text it keeps again first."""
        scope = call.scope.member(member.name, call.call_id)
        past = rebuild(conversation(scope.history, member.name, call.tries)) if scope.history else Past()
        parts = [past.text]
        if past.text:
            await scope.say(past.text)
        messages = member.messages(StepInput(task))
        async with closing(member.answer(member.model or default_model(), messages, scope, past)) as deltas:
            async for delta in deltas:
                parts.append(delta)
                await scope.say(delta)
        return "".join(parts)


def _heading(index: int, member: Agent) -> str:
    return f"## {member.name}\n\n" if index == 0 else f"\n\n## {member.name}\n\n"


def _member_tool(team: Team, member: Agent, timeout: float) -> Tool:
    """The leader's tool that gives `member` a task."""

    async def delegate(call: ToolCallContext, task: str) -> str:
        return await team._delegate(member, call, task)

    about = f"{member.name}, {member.role}" if member.role else member.name
    return Tool(
        delegate,
        "delegate_to_" + _NOT_IN_A_TOOL_NAME.sub("_", member.name)[:52],
        f"Give a task to {about}; returns its answer.",
        {
            "type": "object",
            "properties": {"task": {"type": "string", "description": "What the member should do, self-contained."}},
            "required": ["task"],
            "additionalProperties": False,
        },
        timeout,
        takes_context=True,
    )


def _roster(members: list[Agent], tools: list[Tool]) -> list[str]:
    """The leader's standing instructions: who is on the team and how to ask them."""
    lines = ["Your team's members, each asked through a tool:"]
    for member, t in zip(members, tools, strict=True):
        lines.append(f"- {t.name}: {member.name}" + (f", {member.role}" if member.role else ""))
    return [*lines, "Delegate the work to the members who fit it, then answer with what they found."]
