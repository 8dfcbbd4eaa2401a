"""Offline stand-ins for a model: `OfflineModel` writes a plausible answer from the request
alone, word by word, with no account and no network; `OfflineToolModel` first calls the
tools it is offered, once, then answers with their results. `default_model()` picks
`OpenAIChat` when OPENAI_API_KEY is set and these otherwise, so the demo always works."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import zlib
from collections.abc import AsyncIterator
from typing import Any

from .models import DEFAULT_MODEL_ID, Message, Model, OpenAIChat, ToolCall, ToolModel, closing


class OfflineModel:
    """A stand-in that needs no network and no key: it composes a short, plausible answer
    from the system instructions and the last user message, always the same for the same
    messages, and streams it word by word `delay` seconds apart."""

    def __init__(self, id: str = "offline-writer", delay: float = 0.03) -> None:
        self.id = id
        self.delay = delay

    def __repr__(self) -> str:
        return f"OfflineModel(id={self.id!r})"

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        """Yield `reply(messages)` word by word."""
        for i, word in enumerate(self.reply(messages).split(" ")):
            await asyncio.sleep(self.delay)  # sleep(0) too: lets a cancel land between words
            yield word if i == 0 else " " + word

    async def turn(self, messages: list[Message], tools: list[dict[str, Any]]) -> AsyncIterator[str | ToolCall]:
        """The same answer as `stream`: the offline model never calls a tool."""
        async with closing(self.stream(messages)) as deltas:
            async for delta in deltas:
                yield delta

    def reply(self, messages: list[Message]) -> str:
        """The whole answer, 2 to 4 sentences.

        The first paragraph of the last user message is taken as the request and what
        follows as material to build on; the last line of the system message, unless it
        introduces the speaker ("You are ..."), as the brief.
        """
        system = "\n".join(m.get("content", "") for m in messages if m.get("role") == "system")
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        paragraphs = [p.strip() for p in user.split("\n\n") if p.strip()]
        subject = _subject(paragraphs[0] if paragraphs else "")
        brief_lines = [line.strip() for line in system.splitlines() if line.strip()]
        brief = brief_lines[-1] if brief_lines and not brief_lines[-1].startswith("You are") else ""
        pick = zlib.crc32(user.encode())  # stable across processes, unlike hash()
        openers = (
            "{S} is worth a closer look.",
            "Here is a short take on {s}.",
            "{S} comes down to a few clear points.",
        )
        closers = (
            "The practical next step with {s} is to start small, measure, and keep what works.",
            "In short, {s} rewards clear goals and steady iteration.",
            "What matters most about {s} is what changes for the people who use it.",
        )
        sentences = [openers[pick % 3]]
        if brief:
            sentences.append(f"As asked, this aims to {_clause(_first_sentence(brief))}.")
        if len(paragraphs) > 1:
            # Headings such as "Previous step output:" are not material worth quoting.
            lines = [ln for ln in "\n".join(paragraphs[1:]).splitlines() if ln.strip() and not ln.endswith(":")]
            excerpt = " ".join(_first_sentence(" ".join(lines)).split()[:8])
            if excerpt:
                sentences.append(f'Building on the earlier notes ("{excerpt}..."), it keeps what held up.')
        sentences.append(closers[(pick // 3) % 3])
        text = " ".join(sentences)
        return text.replace("{S}", subject[:1].upper() + subject[1:]).replace("{s}", subject)


class OfflineToolModel(OfflineModel):
    """An offline stand-in that calls tools, as predictably as `OfflineModel` answers.

    Offered tools and not yet given any results since the last user message, it asks, in
    one turn, for every tool whose required parameters are all strings, each filled with
    the request's subject (a tool needing anything else is left alone), ids
    ``call_<8 hex>_<n>`` stable for the same messages. Once the `tool` messages have come
    back, it answers in text: `OfflineModel`'s reply, then one sentence per result. With no
    tool it can fill, it just answers.
    """

    def __init__(self, id: str = "offline-researcher", delay: float = 0.03) -> None:
        super().__init__(id, delay)

    def __repr__(self) -> str:
        return f"OfflineToolModel(id={self.id!r})"

    async def turn(self, messages: list[Message], tools: list[dict[str, Any]]) -> AsyncIterator[str | ToolCall]:
        """Tool calls when tools are offered and none has answered yet; else the text answer."""
        results = _tool_results(messages)
        if tools and not results:
            calls = self.calls(messages, tools)
            if calls:
                await asyncio.sleep(self.delay)  # a cancel may land here too
                for call in calls:
                    yield call
                return
        for i, word in enumerate(self.answer(messages, results).split(" ")):
            await asyncio.sleep(self.delay)
            yield word if i == 0 else " " + word

    def calls(self, messages: list[Message], tools: list[dict[str, Any]]) -> list[ToolCall]:
        """The calls asked for first: each tool whose required parameters are strings."""
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        subject = _subject(user.split("\n\n", 1)[0])
        stamp = zlib.crc32("\n".join(str(m.get("content") or "") for m in messages).encode())
        calls: list[ToolCall] = []
        for spec in tools:
            function = spec.get("function") or {}
            parameters = function.get("parameters") or {}
            properties = parameters.get("properties") or {}
            required = parameters.get("required") or []
            if not all((properties.get(name) or {}).get("type") == "string" for name in required):
                continue
            arguments = json.dumps({name: subject for name in required}, ensure_ascii=False)
            calls.append(ToolCall(f"call_{stamp:08x}_{len(calls) + 1}", str(function.get("name", "")), arguments))
        return calls

    def answer(self, messages: list[Message], results: list[tuple[str, str]]) -> str:
        """`reply(messages)`, then "Tool <name> gave <result>." per result, clipped."""
        names = {
            call.get("id"): (call.get("function") or {}).get("name", "a tool")
            for m in messages
            if m.get("role") == "assistant"
            for call in m.get("tool_calls") or []
        }
        found = [f"Tool {names.get(call_id, 'a tool')} gave {_clip(content)}." for call_id, content in results]
        return " ".join([self.reply(messages), *found])


def _tool_results(messages: list[Message]) -> list[tuple[str, str]]:
    """(tool_call_id, content) of the `tool` messages after the last user message."""
    results: list[tuple[str, str]] = []
    for m in messages:
        if m.get("role") == "user":
            results = []
        elif m.get("role") == "tool":
            results.append((str(m.get("tool_call_id")), str(m.get("content") or "")))
    return results


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _subject(request: str) -> str:
    """A short noun phrase for the request: a leading "Label:" dropped, a JSON object's first
    text value, clipped to 12 words; "the subject" when nothing is left."""
    text = request.strip()
    label, colon, rest = text.partition(":")
    if colon and rest.strip() and len(label.split()) <= 3 and "{" not in label:
        text = rest.strip()
    with contextlib.suppress(ValueError, RecursionError):
        value = json.loads(text)
        if isinstance(value, dict):
            text = next((v for v in value.values() if isinstance(v, str) and v.strip()), "")
        elif isinstance(value, str):
            text = value
    if text.startswith("(") and text.endswith(")"):  # a placeholder such as "(no input given)"
        text = ""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    subject = " ".join(first_line.split()[:12]).strip(" .!?;,")
    return subject or "the subject"


def _first_sentence(text: str) -> str:
    for end in (". ", "! ", "? "):
        text = text.split(end, 1)[0]
    return text.strip().rstrip(".!?")


def _clause(text: str) -> str:
    """A sentence made to follow "this aims to": lower-case first letter unless an acronym."""
    if len(text) > 1 and text[1].isupper():
        return text
    return text[:1].lower() + text[1:]


# ---- choosing ------------------------------------------------------------------------


def default_model() -> Model:
    """OpenAIChat (model OPENAI_MODEL or gpt-4o-mini) when OPENAI_API_KEY is set, else OfflineModel."""
    if os.environ.get("OPENAI_API_KEY"):
        return OpenAIChat(id=os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL_ID)
    return OfflineModel()


def default_tool_model() -> ToolModel:
    """`default_model()` for an agent that must call tools: OpenAIChat with a key, else
    OfflineToolModel (the offline writer never calls any)."""
    if os.environ.get("OPENAI_API_KEY"):
        return OpenAIChat(id=os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL_ID)
    return OfflineToolModel()
