"""An offline OpenAI: the Chat Completions API answered in this process, so that code written
for the openai library (Agno's `OpenAIChat` among it) runs with no key and no network.

    from agno.models.openai import OpenAIChat
    from server.agents.offline_openai import offline_http_client

    model = OpenAIChat(id="gpt-5-mini", api_key="offline", http_client=offline_http_client())

It behaves like `OfflineToolModel`: a model that uses what it is offered. Each turn it calls
the first tool it has not called yet (a team leader's `delegate_task_to_member` once per
member), with arguments made from the tool's parameter types, and once every tool was
called it streams a short answer that names the question and what the tools returned.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

ARGS_BY_TYPE: dict[str, Any] = {"string": "AI trends", "integer": 3, "number": 1.5, "boolean": True}
WORD_DELAY = 0.02  # seconds between streamed pieces: the answer is seen arriving
DELEGATE = "delegate_task_to_member"  # an Agno team leader's tool: called once per member


def offline_http_client() -> httpx.AsyncClient:
    """An httpx client whose requests are answered here, as OpenAI's API would answer them."""
    return httpx.AsyncClient(transport=httpx.MockTransport(_answer), base_url="https://offline.invalid/v1")


async def _answer(request: httpx.Request) -> httpx.Response:
    if not request.url.path.endswith("/chat/completions"):
        error = {"error": {"message": f"the offline model answers chat completions only, not {request.url.path}"}}
        return httpx.Response(404, json=error)
    body = json.loads(request.content or b"{}")
    model = str(body.get("model", "offline"))
    call = next_call(body)
    if not body.get("stream"):
        return httpx.Response(200, json=_completion(model, body, call))
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_stream(model, body, call))


def next_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool call of this turn (as OpenAI writes one), or None when it is time to answer."""
    messages = body.get("messages") or []
    made = [c.get("function", {}) for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or []]
    called = {str(f.get("name")) for f in made}
    delegated = {_member(f) for f in made if f.get("name") == DELEGATE}
    system = "".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    for offered in body.get("tools") or []:
        function = offered.get("function", {})
        name = str(function.get("name", ""))
        if name == DELEGATE:
            members = [m for m in re.findall(r'<member id="([^"]+)"', system) if m not in delegated]
            if members:
                return _call(name, {"member_id": members[0], "task": _asked(messages)})
        elif name not in called:
            properties = function.get("parameters", {}).get("properties", {})
            return _call(name, {k: ARGS_BY_TYPE.get(str(v.get("type")), "x") for k, v in properties.items()})
    return None


def _call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """A tool call as OpenAI writes one, with an id unique as OpenAI's are."""
    function = {"name": name, "arguments": json.dumps(args)}
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": function}


def _member(function: dict[str, Any]) -> str:
    try:
        return str(json.loads(function.get("arguments") or "{}").get("member_id"))
    except (ValueError, AttributeError):
        return ""


def _text(content: Any) -> str:
    """A message's content as text (OpenAI allows a list of parts)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _asked(messages: list[dict[str, Any]]) -> str:
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    return _cut(users[-1], 200) if users else ""


def answer_text(body: dict[str, Any]) -> str:
    """What the offline model says once it has called every tool: what it was asked, and
    the beginning of each tool's result."""
    messages = body.get("messages") or []
    results = [_cut(_text(m.get("content")), 100) for m in messages if m.get("role") == "tool"]
    said = f"Offline answer ({body.get('model', 'offline')}, no model was asked) to: {_cut(_asked(messages), 60)}"
    return said + "".join(f"\n- a tool said: {result}" for result in results)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _completion(model: str, body: dict[str, Any], call: dict[str, Any] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if call else answer_text(body)}
    if call:
        message["tool_calls"] = [call]
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}
    return {"id": "chatcmpl-offline", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice]}  # fmt: skip


async def _stream(model: str, body: dict[str, Any], call: dict[str, Any] | None) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        payload = {"id": "chatcmpl-offline", "object": "chat.completion.chunk", "created": int(time.time()),
                   "model": model, "choices": [choice]}  # fmt: skip
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    yield chunk({"role": "assistant", "content": None if call else ""})
    if call:
        yield chunk({"tool_calls": [{"index": 0, **call}]})
    else:
        for word in re.findall(r"\S+\s*", answer_text(body)):
            await asyncio.sleep(WORD_DELAY)
            yield chunk({"content": word})
    yield chunk({}, "tool_calls" if call else "stop")
    yield b"data: [DONE]\n\n"
