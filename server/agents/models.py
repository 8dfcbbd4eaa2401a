"""Models that agents talk to, and an OpenAI-compatible chat client.

A model takes chat messages (``{"role": "system" | "user" | "assistant", "content": ...}``)
and streams its answer as text deltas::

    model = OpenAIChat("gpt-4o-mini")            # key from OPENAI_API_KEY
    async for delta in model.stream([{"role": "user", "content": "Hi"}]):
        print(delta, end="")

A model that can call tools also has `turn(messages, tools)`: one turn of the chat, its
text deltas as they come and then the `ToolCall`s the model asked for, if any. Messages
stay plain data in the OpenAI format (an assistant message with `tool_calls`, then one
`{"role": "tool", "tool_call_id": ..., "content": ...}` per call).

The offline stand-ins, and `default_model()`, which picks between them and `OpenAIChat`,
are in offline.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:  # imported when a model is first called: a server with no model calls starts faster
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
        import httpx

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
    import httpx

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
