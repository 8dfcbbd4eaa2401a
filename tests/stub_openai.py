"""A local stand-in for the OpenAI chat completions API, speaking its streaming wire format.

It is a bare ASGI app served by uvicorn in a background thread on 127.0.0.1, so the
client under test talks real HTTP (chunked `text/event-stream`) to it. The path picks
the behaviour: `POST /{scenario}/v1/chat/completions`, so a client is pointed at one with
`base_url=stub.url("fail-once")`. Every request is recorded in `stub.requests`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

STALL_CAP = 5.0  # seconds a stalled answer waits for the client to give up before ending anyway


def reply_chunks(model: str) -> list[str]:
    """The content deltas the stub streams for `model` (UTF-8 beyond ASCII on purpose)."""
    return ["Hello", " from ", model, ":", " caf", "é ☕", " all", " good."]


def reply_text(model: str) -> str:
    """What a client should put together from the stub's answer."""
    return "".join(reply_chunks(model))


# scenario -> the calls of its tool turn: (index, id, tool, the arguments in pieces, a chunk each)
TOOL_SCENARIOS: dict[str, list[tuple[int, str, str, list[str]]]] = {
    "tools-split": [(0, "call_a", "add", ['{"', 'a": ', "2", ', "b"', ": 3", "}"])],
    "tools-parallel": [(0, "call_a", "add", ['{"a": 1,', ' "b": 2}']), (1, "call_b", "add", ['{"a": 3,', ' "b": 4}'])],
    "tools-same-index": [(0, "call_a", "add", ['{"a": 1, "b": 2}']), (0, "call_b", "add", ['{"a": 5, "b": 5}'])],
    "tools-raises": [(0, "call_a", "boom", ["{}"])],
    "tools-unknown": [(0, "call_a", "nope", ['{"x": 1}'])],
    "tools-bad-json": [(0, "call_a", "add", ['{"a": 2,'])],
    "tools-forever": [(0, "call_{n}", "add", ['{"a": 1, "b": 1}'])],
}


def tool_answer(results: list[str]) -> str:
    """The stub's text answer once it has the tool results."""
    return "Results: " + " | ".join(results)


# "every-tool": the arguments it gives a tool, by parameter type (a team's task: TASK)
EVERY_TOOL_ARGS: dict[str, Any] = {"string": "AI trends", "integer": 2, "number": 1.5, "boolean": True}
EVERY_TOOL_TASK = "Research this for the team"


def every_tool_answer(model: str, asked: str, results: int) -> str:
    """The "every-tool" scenario's text answer: who answered, to what, after how many tool results."""
    return f"{model} answers {asked[:40]!r} after {results} tool results."


def every_tool_chunks(model: str, asked: str, results: int) -> list[str]:
    """The pieces "every-tool" streams its answer in (they join to `every_tool_answer`)."""
    text = every_tool_answer(model, asked, results)
    return [text[i : i + 12] for i in range(0, len(text), 12)]


@dataclass
class Recorded:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class StubOpenAI:
    """The ASGI app. Scenarios (the first path segment):

    ok                 role chunk, content chunks, finish chunk, [DONE], one event per write
    fragmented         the same stream cut into 5-byte writes (events and UTF-8 split)
    extras             a keep-alive comment, a tool-call chunk and a usage chunk mixed in
    json               ignores "stream" and answers one JSON completion
    unauthorized       401 with an OpenAI error body that quotes the key it was given
    fail-once          500 the first time, then ok
    always-500         500 every time
    rate-limited-once  429 (Retry-After: 0) the first time, then ok
    stall              the first content chunk, then nothing until the client leaves
    stall-headers      nothing at all until the client leaves
    error-in-stream    a content chunk, then an error event inside the 200 stream
    no-done            content chunks, then the end of the body with no finish and no [DONE]
    tools-*            the calls of TOOL_SCENARIOS while no tool result was sent, then
                       "Results: " and the tool results' contents joined by " | "
    every-tool         a model that uses what it is offered: calls each offered tool once
                       (a team leader's delegate_task_to_member once per member listed in
                       the system prompt), one call per turn, arguments by parameter type
                       (EVERY_TOOL_ARGS), then answers `every_tool_answer`
    stream-fail-once   the first time a content chunk and then an error event; then ok
    stall-once         the first time as "stall"; then ok
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.hits: collections.Counter[str] = collections.Counter()
        self.disconnects = 0  # stalled answers that ended because the client left
        self.port = 0

    def url(self, scenario: str) -> str:
        """The base_url for a client that should meet `scenario`."""
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    def reset(self) -> None:
        self.requests.clear()
        self.hits.clear()
        self.disconnects = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = json.loads(raw) if raw else None
        self.requests.append(Recorded(scope["method"], scope["path"], headers, body))
        parts = scope["path"].strip("/").split("/")
        scenario = parts[0] if parts[1:] == ["v1", "chat", "completions"] else ""
        if scope["method"] != "POST" or not scenario:
            await _json(send, 404, {"error": {"message": f"no route {scope['path']}", "type": "invalid_request_error"}})
            return
        self.hits[scenario] += 1
        first = self.hits[scenario] == 1
        model = str(body["model"]) if isinstance(body, dict) else ""
        chunks = reply_chunks(model)

        if scenario == "unauthorized":
            key = headers.get("authorization", "").removeprefix("Bearer ")
            await _json(
                send,
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {key}. You can find your API key in your account.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            )
        elif scenario == "always-500" or (scenario == "fail-once" and first):
            await _json(send, 500, {"error": {"message": "The server had an error while processing your request."}})
        elif scenario == "rate-limited-once" and first:
            await _json(
                send, 429, {"error": {"message": "Rate limit reached.", "type": "requests"}}, [(b"retry-after", b"0")]
            )
        elif scenario == "json":
            completion = {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply_text(model)}}],
            }
            await _json(send, 200, completion)
        elif scenario in TOOL_SCENARIOS:
            await _start_stream(send)
            messages = body.get("messages", []) if isinstance(body, dict) else []
            results = [str(m.get("content")) for m in messages if m.get("role") == "tool"]
            if results and scenario != "tools-forever":
                events = _stream_events(model, [tool_answer(results)[:9], tool_answer(results)[9:]])
            else:
                events = _tool_events(model, TOOL_SCENARIOS[scenario], self.hits[scenario])
            for event in events:
                await _body(send, _event(event))
            await _body(send, b"data: [DONE]\n\n")
            await _body(send, b"", more=False)
        elif scenario == "every-tool":
            messages = body.get("messages", []) if isinstance(body, dict) else []
            call = _next_tool_call(body if isinstance(body, dict) else {}, messages)
            users = [m for m in messages if m.get("role") == "user"]
            asked = _text(users[-1].get("content")) if users else ""
            results = sum(m.get("role") == "tool" for m in messages)
            tool_call = None
            if call is not None:
                name, args = call
                function = {"name": name, "arguments": json.dumps(args)}
                tool_call = {"id": f"call_{self.hits[scenario]}", "type": "function", "function": function}
            if isinstance(body, dict) and not body.get("stream"):  # a client that does not stream
                message: dict[str, Any] = {"role": "assistant", "content": None}
                if tool_call is None:
                    message["content"] = every_tool_answer(model, asked, results)
                else:
                    message["tool_calls"] = [tool_call]
                completion = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": "stop" if tool_call is None else "tool_calls"}
                    ],
                }
                await _json(send, 200, completion)
                return
            await _start_stream(send)
            if tool_call is not None:
                events = [_chunk(model, {"role": "assistant", "content": None})]
                events.append(_chunk(model, {"tool_calls": [{"index": 0, **tool_call}]}))
                events.append(_chunk(model, {}, finish="tool_calls"))
            else:
                events = _stream_events(model, every_tool_chunks(model, asked, results))
            for event in events:
                await _body(send, _event(event))
            await _body(send, b"data: [DONE]\n\n")
            await _body(send, b"", more=False)
        elif scenario == "stream-fail-once" and first:
            await _start_stream(send)
            await _body(send, _event(_chunk(model, {"role": "assistant", "content": ""})))
            await _body(send, _event(_chunk(model, {"content": chunks[0]})))
            await _body(send, _event({"error": {"message": "The model overloaded mid-answer.", "type": "server"}}))
            await _body(send, b"", more=False)
        elif scenario == "stall-once" and first:
            await _start_stream(send)
            await _body(send, _event(_chunk(model, {"role": "assistant", "content": ""})))
            await _body(send, _event(_chunk(model, {"content": chunks[0]})))
            await self._until_client_leaves(receive)
        elif scenario == "stall-headers":
            await self._until_client_leaves(receive)
        else:
            await _start_stream(send)
            if scenario == "fragmented":
                whole = b"".join(_event(e) for e in _stream_events(model, chunks)) + b"data: [DONE]\n\n"
                for i in range(0, len(whole), 5):
                    await _body(send, whole[i : i + 5])
            elif scenario == "stall":
                await _body(send, _event(_chunk(model, {"role": "assistant", "content": ""})))
                await _body(send, _event(_chunk(model, {"content": chunks[0]})))
                await self._until_client_leaves(receive)
                return
            elif scenario == "error-in-stream":
                await _body(send, _event(_chunk(model, {"content": chunks[0]})))
                await _body(send, _event({"error": {"message": "The model overloaded mid-answer.", "type": "server"}}))
            elif scenario == "no-done":
                for piece in chunks:
                    await _body(send, _event(_chunk(model, {"content": piece})))
            else:
                events = _stream_events(model, chunks)
                if scenario == "extras":
                    await _body(send, b": keep-alive\n\n")
                    tool = {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}
                    events.insert(1, _chunk(model, {"content": None, **tool}))
                    events.append({**_chunk(model, {}), "choices": [], "usage": {"total_tokens": 9}})
                for event in events:
                    await _body(send, _event(event))
                await _body(send, b"data: [DONE]\n\n")
            await _body(send, b"", more=False)

    async def _until_client_leaves(self, receive: Receive) -> None:
        # Once the body is read, the next message uvicorn delivers is http.disconnect.
        with contextlib.suppress(TimeoutError):
            message = await asyncio.wait_for(receive(), STALL_CAP)
            if message["type"] == "http.disconnect":
                self.disconnects += 1


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "system_fingerprint": "fp_stub",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _stream_events(model: str, chunks: list[str]) -> list[dict[str, Any]]:
    """What OpenAI sends: a role-only chunk, the content, then an empty delta with finish_reason."""
    events = [_chunk(model, {"role": "assistant", "content": "", "refusal": None})]
    events += [_chunk(model, {"content": piece}) for piece in chunks]
    events.append(_chunk(model, {}, finish="stop"))
    return events


def _tool_events(model: str, calls: list[tuple[int, str, str, list[str]]], n: int) -> list[dict[str, Any]]:
    """A tool turn as OpenAI streams it: the first fragment of a call has its id and name,
    the rest only index and a piece of the arguments; the calls' fragments interleave."""
    per_call = []
    for index, call_id, name, pieces in calls:
        head = {
            "index": index,
            "id": call_id.format(n=n),
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        per_call.append([head] + [{"index": index, "function": {"arguments": p}} for p in pieces])
    events = [_chunk(model, {"role": "assistant", "content": None})]
    if all(index == 0 for index, *_ in calls):  # calls sharing an index can only come one after another
        events += [_chunk(model, {"tool_calls": [f]}) for fragments in per_call for f in fragments]
    else:
        for row in range(max(len(f) for f in per_call)):
            events += [_chunk(model, {"tool_calls": [f[row]]}) for f in per_call if row < len(f)]
    events.append(_chunk(model, {}, finish="tool_calls"))
    return events


def _text(content: Any) -> str:
    """A message's content as text (OpenAI allows a list of parts)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _next_tool_call(body: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The "every-tool" scenario's next call: the first offered tool (or team member) not called yet."""
    made = [
        (c["function"]["name"], c["function"].get("arguments", ""))
        for m in messages
        if m.get("role") == "assistant"
        for c in m.get("tool_calls") or []
    ]
    system = "".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    for offered in body.get("tools") or []:
        function = offered.get("function", {})
        name = function.get("name", "")
        if name == "delegate_task_to_member":
            for member in re.findall(r'<member id="([^"]+)"', system):
                args = {"member_id": member, "task": EVERY_TOOL_TASK}
                if (name, json.dumps(args)) not in made:
                    return name, args
            continue
        if any(done == name for done, _ in made):
            continue
        properties = function.get("parameters", {}).get("properties", {})
        return name, {k: EVERY_TOOL_ARGS.get(str(v.get("type")), "x") for k, v in properties.items()}
    return None


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def _start_stream(send: Send) -> None:
    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _body(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _json(send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await _body(send, json.dumps(payload).encode(), more=False)


@contextlib.contextmanager
def serving(stub: StubOpenAI) -> Iterator[StubOpenAI]:
    """Serve `stub` on a free 127.0.0.1 port in a background thread until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    stub.port = sock.getsockname()[1]
    config = uvicorn.Config(
        stub,
        http="h11",
        ws="none",  # no websocket implementation: nothing to import, nothing to warn
        lifespan="off",
        log_config=None,  # leave the test process's logging alone
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    # A thread (not the test's loop), so the stub keeps answering while a test blocks,
    # and its own loop means one server can serve every test of the module.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="stub-openai", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the stub OpenAI server did not start")
            time.sleep(0.01)
        yield stub
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
