"""Models that agents talk to: an OpenAI-compatible chat client, and an offline stand-in.

A model takes chat messages (``{"role": "system" | "user" | "assistant", "content": ...}``)
and streams its answer as text deltas::

    model = OpenAIChat("gpt-4o-mini")            # key from OPENAI_API_KEY
    async for delta in model.stream([{"role": "user", "content": "Hi"}]):
        print(delta, end="")

A model that can call tools also has `turn(messages, tools)`: one turn of the chat, its
text deltas as they come and then the `ToolCall`s the model asked for, if any. Messages
stay plain data in the OpenAI format (an assistant message with `tool_calls`, then one
`{"role": "tool", "tool_call_id": ..., "content": ...}` per call).

`OfflineToolModel` is the same stand-in made to call the tools it is offered, once, and
then answer with their results. `default_model()` picks `OpenAIChat` when OPENAI_API_KEY is set and `OfflineModel`
otherwise, so the demo works with no account and no network.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import ssl
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import httpx

log = logging.getLogger("runcast.models")

Message = dict[str, Any]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL_ID = "gpt-4o-mini"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0  # seconds: a server asking for longer is treated as an error rather than a stall


@runtime_checkable
class Model(Protocol):
    """Anything that streams a chat answer: an `id` and `stream(messages)`.

    Implementations write `stream` as an async generator (`async def ... yield`);
    the protocol declares it as a plain method returning an async iterator because
    that is the type such a generator function has.
    """

    id: str

    def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        """Yield the answer to `messages` as text deltas, in order."""
        ...


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for: its `id`, the tool's `name`, and `arguments` as the
    model wrote them (JSON text, not yet parsed: it may not be valid)."""

    id: str
    name: str
    arguments: str

    def message(self) -> dict[str, Any]:
        """The call as it appears in an assistant message's `tool_calls`."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@runtime_checkable
class ToolModel(Model, Protocol):
    """A model that can call tools: `turn` streams one turn's text, then its tool calls."""

    def turn(self, messages: list[Message], tools: list[dict[str, Any]]) -> AsyncIterator[str | ToolCall]:
        """Yield the turn's text deltas, then the ToolCalls it ended with (none if it answered)."""
        ...


class ModelError(Exception):
    """A model call failed. `status` is the HTTP status, or None when no answer came
    (timeout, connection failure, broken stream); `message` says why."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status is not None else self.message


T = TypeVar("T")


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close an async generator on leaving the block, even when iteration stopped early,
    so its connection or file is released now rather than whenever it is collected.
    (`contextlib.aclosing` does this but its type does not accept a plain AsyncIterator.)"""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


# ---- OpenAI-compatible chat completions ----------------------------------------------


class OpenAIChat:
    """A client for the OpenAI chat completions API, streaming, over httpx.

    Works with any server that speaks the same wire format (set `base_url`). `api_key`
    defaults to OPENAI_API_KEY and `base_url` to OPENAI_BASE_URL or the OpenAI API; with
    no key at all no Authorization header is sent (local servers often need none).

    `timeout` bounds connecting and each wait for more of the answer, not the whole answer,
    so a long answer that keeps streaming is never cut off. A 429, a 5xx or a connection
    failure is retried up to `max_retries` times, `backoff` * 2**n seconds apart (or as the
    server's Retry-After says), but only while nothing has been streamed: once a delta has
    gone out, retrying would repeat it. Timeouts are not retried.
    """

    def __init__(
        self,
        id: str = DEFAULT_MODEL_ID,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        *,
        backoff: float = 0.5,
    ) -> None:
        self.id = id
        # Private and left out of repr, so the key never ends up in logs or step errors.
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff

    def __repr__(self) -> str:
        return f"OpenAIChat(id={self.id!r}, base_url={self.base_url!r})"

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        """Yield the answer's text deltas; raise ModelError when the call fails."""
        async with closing(self.turn(messages, [])) as items:
            async for item in items:
                if isinstance(item, str):
                    yield item

    async def turn(self, messages: list[Message], tools: list[dict[str, Any]]) -> AsyncIterator[str | ToolCall]:
        """Yield one turn's text deltas, then the ToolCalls it asked for (`tools` in the
        OpenAI format; none given, none sent); raise ModelError when the call fails."""
        url = f"{self.base_url}/chat/completions"
        body: dict[str, Any] = {"model": self.id, "messages": messages, "stream": True}
        if tools:
            body["tools"] = tools
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        # A client per call: an httpx client belongs to one event loop, and a step may run on
        # any; the costly part, the TLS context, is made once and shared.
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), verify=_tls_context()) as client:
            attempt = 0
            while True:
                streamed = False
                try:
                    async with client.stream("POST", url, json=body, headers=headers) as response:
                        if response.is_success:
                            async for item in self._items(response):
                                streamed = True
                                yield item
                            return
                        error = ModelError(response.status_code, self._redact(await _error_message(response)))
                        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
                            raise error
                        delay = _retry_after(response) or self.backoff * 2**attempt
                        if delay > MAX_RETRY_AFTER:
                            raise error
                except httpx.TimeoutException as exc:  # before TransportError: it is one
                    raise ModelError(
                        None, f"model {self.id!r} timed out: {self.base_url} sent nothing for {self.timeout:g}s"
                    ) from exc
                except httpx.TransportError as exc:
                    error = ModelError(None, f"could not reach model {self.id!r} at {self.base_url}: {_describe(exc)}")
                    if streamed or attempt >= self.max_retries:
                        raise error from exc
                    delay = self.backoff * 2**attempt
                attempt += 1
                log.warning("model %s: %s; retry %d of %d in %.2fs", self.id, error, attempt, self.max_retries, delay)
                await asyncio.sleep(delay)

    async def _items(self, response: httpx.Response) -> AsyncIterator[str | ToolCall]:
        """The text deltas of a successful response, event by event, then its tool calls."""
        calls = _ToolCallAssembler()
        if "text/event-stream" not in response.headers.get("content-type", ""):
            # Some compatible servers ignore "stream": true and answer with one JSON completion.
            payload = _loads(await response.aread())
            text = _completion_text(payload)
            if text:
                yield text
            for fragment in _completion_tool_calls(payload):
                calls.add(fragment)
            for call in calls.done():
                yield call
            return
        finished = False
        async with closing(_event_data(response)) as events:
            async for data in events:
                if data == "[DONE]":
                    break
                text, done = self._chunk(data, calls)
                finished = finished or done
                if text:
                    yield text
            else:
                if not finished:
                    # The connection closed cleanly but the answer never said it was complete.
                    raise ModelError(None, f"model {self.id!r}: the stream ended before the answer was complete")
        for call in calls.done():
            yield call

    def _chunk(self, data: str, calls: _ToolCallAssembler) -> tuple[str, bool]:
        """One `data:` payload: (its text, whether it carries a finish_reason); its tool-call
        fragments go to `calls`."""
        chunk = _loads(data.encode())
        if not isinstance(chunk, dict):
            raise ModelError(None, f"model {self.id!r} sent an event that is not a JSON object: {data[:200]!r}")
        if "error" in chunk:  # errors can arrive inside a 200 stream
            raise ModelError(None, self._redact(_error_text(chunk) or "the stream reported an error"))
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return "", False  # e.g. the usage chunk, whose choices are empty
        choice = choices[0]
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        fragments = delta.get("tool_calls") if isinstance(delta, dict) else None
        for fragment in fragments if isinstance(fragments, list) else ():
            calls.add(fragment)
        # Role-only and tool-call chunks have no (or null) content: nothing to stream.
        return (content if isinstance(content, str) else ""), bool(choice.get("finish_reason"))

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


class _ToolCallAssembler:
    """Puts streamed tool-call fragments together. A fragment continues the call at its
    `index`; one with a new `id` starts a new call even at a used index (some servers
    send every call at index 0)."""

    def __init__(self) -> None:
        self._calls: list[dict[str, str]] = []
        self._at: dict[int, dict[str, str]] = {}  # index -> the call fragments there continue

    def add(self, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            return
        index = fragment.get("index", 0)
        index = index if isinstance(index, int) else 0
        call_id = fragment.get("id")
        current = self._at.get(index)
        if current is None or (isinstance(call_id, str) and call_id and call_id != current["id"]):
            current = {"id": "", "name": "", "arguments": ""}
            self._calls.append(current)
            self._at[index] = current
        if isinstance(call_id, str) and call_id:
            current["id"] = call_id
        function = fragment.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str) and function["name"]:
                current["name"] = function["name"]  # set, not appended: some servers repeat it
            if isinstance(function.get("arguments"), str):
                current["arguments"] += function["arguments"]

    def done(self) -> list[ToolCall]:
        """The calls, in the order they began; one with no id gets one."""
        return [ToolCall(c["id"] or f"call_{n}", c["name"], c["arguments"]) for n, c in enumerate(self._calls, 1)]


def _completion_tool_calls(payload: Any) -> list[Any]:
    """The tool calls of a non-streamed chat completion, as fragments with their index."""
    try:
        calls = payload["choices"][0]["message"].get("tool_calls") or []
    except (KeyError, IndexError, TypeError, AttributeError):
        return []
    return [{**c, "index": n} for n, c in enumerate(calls) if isinstance(c, dict)]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), built once:
    loading the certificates takes tens of milliseconds, too long to pay on every call."""
    return httpx.create_ssl_context()


class _EventDecoder:
    """Turns `text/event-stream` lines into the data of each event (server-sent events:
    `data:` lines accumulate, a blank line ends the event, `:` lines are comments)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """Take one line; return an event's data when the line completes one."""
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data.strip()
        if line.startswith(":"):  # keep-alive comments, e.g. ": PROCESSING"
            return None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value.removeprefix(" "))
        return None  # event:, id:, retry: carry nothing a chat answer needs


async def _event_data(response: httpx.Response) -> AsyncIterator[str]:
    """The data of each server-sent event of a response, the last one included even when
    no blank line follows it."""
    decoder = _EventDecoder()
    async with closing(response.aiter_lines()) as lines:
        async for line in lines:
            data = decoder.feed(line)
            if data is not None:
                yield data
    data = decoder.feed("")
    if data is not None:
        yield data


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ModelError(None, f"the model server sent something that is not JSON: {raw[:200]!r}") from exc
    except RecursionError:
        raise ModelError(None, "the model server sent JSON nested too deeply to read") from None


def _completion_text(payload: Any) -> str:
    """The text of a non-streamed chat completion."""
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelError(None, "the model server's answer has no choices[0].message.content") from exc
    return content if isinstance(content, str) else ""


def _error_text(payload: Any) -> str | None:
    """The message of an OpenAI-style error body ({"error": {"message": ...}}), if any."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    for key in ("message", "detail"):
        if isinstance(payload.get(key), str):
            return str(payload[key])
    return None


async def _error_message(response: httpx.Response) -> str:
    raw = await response.aread()
    try:
        message = _error_text(json.loads(raw))
    except ValueError:
        message = None
    if message:
        return message
    text = raw.decode("utf-8", errors="replace").strip()
    return text[:300] or response.reason_phrase or "request failed"


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds when given as a number (the form APIs use)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _describe(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


# ---- offline ---------------------------------------------------------------------------


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
