"""Agents and teams as step executors: a model answering with instructions, streamed.

An agent's `stream` is an async generator taking a `StepInput`, which is exactly what a
step executor may be, so its answer streams as `step_output` deltas and the whole text
becomes the step's output::

    writer = Agent("writer", instructions="Write three short paragraphs.", role="a technical writer")
    wf = Workflow("agentic", [Step("write", writer.stream)])

With no model given, `default_model()` is used when the step runs: OpenAI when
OPENAI_API_KEY is set, the offline model otherwise.

An agent with `tools=` (functions, Tools, Toolkits; see tools.py) lets its model call
them: the calls of a turn run at once, each streamed as `tool_call_started` and then
`tool_call_completed` or `tool_call_failed`, and their results go back to the model
until it answers in text, for at most `max_tool_rounds` rounds of calls.

The loop is durable: the step's stored events are its checkpoint (see replay.py). Run
again after a crash, a restart, a takeover or a failed try, the agent rebuilds its
conversation from them: a call that had ended is not made again (its stored result is
told), a call cut off is reported "interrupted" and made again, a turn cut off is asked
again. Teams (team.py) are built on the same loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import tracing
from ..bounds import EventTooLarge, clip_error
from ..workflow import StepInput
from .models import Message, Model, ToolCall, ToolModel, closing
from .offline import default_model
from .replay import (
    INTERRUPTED,
    UNKNOWN_OUTCOME,
    Past,
    PastCall,
    PastRound,
    conversation,
    rebuild,
    told_error,
    told_result,
)
from .tools import Tool, ToolCallFailed, ToolCallInfo, as_tools

if TYPE_CHECKING:
    from ..engine.context import History, StepContext, ToolEvent

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
        tool calls are reported through `ctx`, when given. Run again after an interruption,
        it goes on from the step's stored events (see `respond`)."""
        async with closing(self.respond(self.model or default_model(), self.messages(step_input), ctx)) as deltas:
            async for delta in deltas:
                yield delta

    async def respond(self, model: Model, messages: list[Message], ctx: StepContext | None) -> AsyncIterator[str]:
        """`answer` as a step: first its conversation is rebuilt from what the step had
        stored (nothing on a first try), so tool calls that had completed are not made
        again. A try that goes on from earlier rounds streams their text again first, in
        one delta, then only what is new: the step's text is still its whole answer."""
        scope = await Scope.of(ctx, self.name)
        past = rebuild(conversation(scope.history, self.name)) if scope.history and self.tools else Past()
        if past.text:
            yield past.text
        async with closing(self.answer(model, messages, scope, past)) as deltas:
            async for delta in deltas:
                yield delta

    async def answer(
        self, model: Model, messages: list[Message], scope: Scope, past: Past | None = None
    ) -> AsyncIterator[str]:
        """`model`'s new text deltas for `messages`, calling this agent's tools as it asks.

        Given the `past` rounds of an interrupted try, it first puts them back into the
        messages: a call that had ended is told as it was; a call cut off is reported
        `tool_call_failed` "interrupted" and made again (`<id>~2`); then the model goes on.
        """
        if not self.tools:
            async with closing(model.stream(messages)) as deltas:
                async for delta in deltas:
                    yield delta
            return
        if not isinstance(model, ToolModel):
            raise AgentError(f"agent {self.name!r}: model {model!r} cannot call tools")
        specs = [t.spec() for t in self.tools.values()]
        messages = list(messages)
        past = past or Past()
        for cut in past.cut:  # a round stored only in part: its turn is asked again below
            for c in cut.calls:
                _interrupted(c, scope, cut.number, self._has_side_effects(c.call.name))
        for past_round in past.rounds:
            messages += await self._finish(past_round, scope)
        number = past.next_round  # the round the next turn would be
        used = {i for r in (*past.rounds, *past.cut) for c in r.calls for i in c.ids}
        while True:
            text: list[str] = []
            calls: list[ToolCall] = []
            async with closing(_traced_turn(model, messages, specs, number)) as items:
                async for item in items:
                    if isinstance(item, ToolCall):
                        calls.append(_unique(item, used, number))
                    else:
                        text.append(item)
                        yield item
            if not calls:
                return
            if number > self.max_tool_rounds:
                raise AgentError(
                    f"agent {self.name!r}: the model still called tools after {self.max_tool_rounds} rounds "
                    "(max_tool_rounds)"
                )
            messages.append(
                {"role": "assistant", "content": "".join(text) or None, "tool_calls": [c.message() for c in calls]}
            )
            # Every start of the round is stored before any call runs: a resumed try finds
            # the whole round together.
            for call in calls:
                data = {"call_id": call.id, "tool": call.name, "args": _args(call), "round_calls": len(calls)}
                scope.report("tool_call_started", data, number)
            if scope.ctx is not None and any(self._has_side_effects(c.name) for c in calls):
                await scope.ctx.stored()  # a call with side effects starts on record: never made blindly
            results = await asyncio.gather(
                *(self._call(call, scope, number, [call.id], i) for i, call in enumerate(calls))
            )
            messages += [
                {"role": "tool", "tool_call_id": c.id, "content": r} for c, r in zip(calls, results, strict=True)
            ]
            number += 1

    async def _finish(self, done: PastRound, scope: Scope) -> list[Message]:
        """The messages of a round an earlier try had asked, its cut-off calls made again
        (one with side effects only as its tool's `on_unknown` says)."""
        again: list[tuple[int, PastCall]] = []
        for i, c in enumerate(done.calls):
            if c.told is None:
                _interrupted(c, scope, done.number, self._has_side_effects(c.call.name))
                c.told = await self._unknown(c, scope)  # None: to be made again
                if c.told is None:
                    again.append((i, c))
        tries = [ToolCall(c.next_id(), c.call.name, c.call.arguments) for _, c in again]
        for (_, c), t in zip(again, tries, strict=True):
            data = {"call_id": t.id, "tool": t.name, "args": _args(t), "retry_of": c.call.id}
            scope.report("tool_call_started", data, done.number)
            c.ids.append(t.id)
        if scope.ctx is not None and any(self._has_side_effects(t.name) for t in tries):
            await scope.ctx.stored()
        runs = [self._call(t, scope, done.number, c.ids, i) for (i, c), t in zip(again, tries, strict=True)]
        results = await asyncio.gather(*runs)
        for (_, c), told in zip(again, results, strict=True):
            c.told = told
        calls = [c.call.message() for c in done.calls]
        assistant = {"role": "assistant", "content": done.text or None, "tool_calls": calls}
        return [assistant, *({"role": "tool", "tool_call_id": c.call.id, "content": c.told} for c in done.calls)]

    def _has_side_effects(self, name: str) -> bool:
        found = self.tools.get(name)
        return found is not None and found.side_effects

    async def _unknown(self, cut: PastCall, scope: Scope) -> str | None:
        """What the model is told of a call with side effects that a crash cut off, as its
        tool's `on_unknown` says; None: make it again (with the same idempotency key)."""
        found = self.tools.get(cut.call.name)
        if found is None or not found.side_effects or found.on_unknown == "retry":
            return None
        if found.on_unknown == "ask" and scope.ctx is not None:
            prompt = (
                f"A call of {cut.call.name}({cut.call.arguments}) was cut off by a crash before its end was "
                "recorded. Did it happen? (yes: it is not made again; no: it is made again)"
            )
            if not await scope.ctx.ask(prompt, {"type": "boolean"}):
                return None
            return told_error(
                f"{cut.call.name} was cut off by a crash; a person says it did happen: do not make it again"
            )
        return told_error(UNKNOWN_OUTCOME)

    async def _call(self, call: ToolCall, scope: Scope, number: int, tries: list[str], index: int) -> str:
        """Run one call (the `index`-th of round `number`) and report how it ended; return
        what the model is told. `tries` are the call_ids this call of the model's was made
        under, this one last."""
        found = self.tools.get(call.name)
        attributes = {"runcast.tool": call.name, "runcast.call_id": call.id}
        with tracing.span(f"tool {call.name}", attributes) as span:
            try:
                if found is None:
                    raise ToolCallFailed(f"unknown tool {call.name!r}; the tools are {', '.join(self.tools)}")
                context = ToolCallContext(scope, call.id, tuple(tries)) if found.takes_context else None
                info = ToolCallInfo(scope.key(number, index), call.id, call.name, *scope.where())
                result = await found.run(call.arguments, context, info)
                scope.report("tool_call_completed", {"call_id": call.id, "tool": call.name, "result": result}, number)
            except (ToolCallFailed, EventTooLarge) as exc:
                error = clip_error(str(exc))
                scope.report("tool_call_failed", {"call_id": call.id, "tool": call.name, "error": error}, number)
                tracing.mark_failed(span, error)
                return told_error(error)
        return told_result(result)


@dataclass(frozen=True)
class Scope:
    """Where a conversation happens: the step's context (None outside the engine), the
    step's stored events as read when the step began, and who speaks: `agent`, and for a
    coordinating team's member, `parent_call_id`, the leader's call it works on."""

    ctx: StepContext | None
    history: History
    agent: str
    parent_call_id: str | None = None

    @classmethod
    async def of(cls, ctx: StepContext | None, agent: str) -> Scope:
        return cls(ctx, await ctx.history() if ctx is not None else [], agent)

    def member(self, agent: str, parent_call_id: str) -> Scope:
        """The scope of a member working on the leader's call `parent_call_id`."""
        return Scope(self.ctx, self.history, agent, parent_call_id)

    def named(self, agent: str) -> Scope:
        return Scope(self.ctx, self.history, agent, self.parent_call_id)

    def where(self) -> tuple[str | None, str | None]:
        """(run_id, step path), outside the engine (None, None)."""
        return (self.ctx.run_id, self.ctx.step) if self.ctx is not None else (None, None)

    def key(self, number: int, index: int) -> str:
        """The idempotency key of the `index`-th call of round `number` of this agent's
        conversation: the same each time that call of the model's is made, whatever crash,
        takeover or retry came between (a call is known by where it is, not by its id,
        which a model asked again may change)."""
        run_id, path = self.where()
        parts = (run_id or "", path or "", self.agent, self.parent_call_id or "", str(number), str(index))
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]

    def report(self, event: ToolEvent, data: dict[str, Any], number: int, *, under: str | None = None) -> None:
        """Send a tool event of round `number`, named by who made it (`under`: the leader's
        call it belongs to, when not the one this scope works on)."""
        if self.ctx is None:  # called outside the engine (a test, a script): nobody to tell
            return
        data = {**data, "round": number, "agent": self.agent}
        if (under or self.parent_call_id) is not None:
            data["parent_call_id"] = under or self.parent_call_id
        self.ctx.tool_event(event, data)

    async def say(self, delta: str) -> None:
        """Stream a member's text as `step_output` named by the member (a step's own text
        is yielded instead, and becomes its output)."""
        if self.ctx is None:
            return
        fields = {"agent": self.agent}
        if self.parent_call_id is not None:
            fields["parent_call_id"] = self.parent_call_id
        self.ctx.output(delta, **fields)
        await self.ctx.drain()


@dataclass(frozen=True)
class ToolCallContext:
    """What a tool that `takes_context` is given: the calling agent's `scope`, this try's
    `call_id`, and `tries`, every call_id the model's call was made under (this one last)."""

    scope: Scope
    call_id: str
    tries: tuple[str, ...]


async def _traced_turn(
    model: ToolModel, messages: list[Message], specs: list[dict[str, Any]], number: int
) -> AsyncIterator[str | ToolCall]:
    """The model's turn (its text deltas, then its calls), within a `model <id>` span when
    tracing is on (a span not made current: it lives across this generator's yields)."""
    turn = tracing.open_span(f"model {getattr(model, 'id', type(model).__name__)}", {"runcast.round": number})
    try:
        async with closing(model.turn(messages, specs)) as items:
            async for item in items:
                yield item
    except Exception as exc:
        tracing.close_span(turn, exc)
        raise
    except BaseException:  # closed early (a cancel): the span ends all the same
        tracing.close_span(turn)
        raise
    tracing.close_span(turn)


def _unique(call: ToolCall, used: set[str], number: int) -> ToolCall:
    """The call with an id no other call of this conversation has: some servers number
    their calls afresh each turn (or send none), and a resumed agent must tell them apart.
    The model is given the call back under this id, so it stays consistent."""
    call_id, n = call.id or "call", number
    while call_id in used:
        call_id, n = f"{call.id or 'call'}-{n}", n + 1
    used.add(call_id)
    return call if call_id == call.id else ToolCall(call_id, call.name, call.arguments)


def _interrupted(call: PastCall, scope: Scope, number: int, side_effects: bool = False) -> None:
    """End a call cut off by an interruption (if its last try had not ended), under the
    same leader's call as its start; one with side effects has an unknown `outcome`."""
    if call.open:
        data = {"call_id": call.ids[-1], "tool": call.call.name, "error": INTERRUPTED}
        if side_effects:
            data["outcome"] = "unknown"
        scope.report("tool_call_failed", data, number, under=call.parent_call_id)
        call.open = False


def _args(call: ToolCall) -> Any:
    """The call's arguments parsed, or the raw text when they are not valid JSON."""
    try:
        return json.loads(call.arguments)
    except (ValueError, RecursionError):  # the call then fails, and the model is told why
        return call.arguments
