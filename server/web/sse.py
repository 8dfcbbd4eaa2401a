"""A run's events as a Server-Sent Events stream: `id:` is the seq, `event:` the event name.

A stream holds what a WebSocket connection holds: at most STREAM_BYTES of frames waiting
for the socket (its subscription waits, then refills from the store), and a client that
takes nothing for `stuck_seconds` while events wait has its stream ended."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from ..live import Broker, Subscription

log = logging.getLogger("runcast.sse")

HEARTBEAT_SECONDS = 15.0  # a comment line now and then keeps proxies from closing a quiet stream
STREAM_BYTES = 1024 * 1024  # frames waiting for one stream's socket (one chunk always fits)


def sse_message(frame: str) -> str:
    """One event frame as an SSE message."""
    event = orjson.loads(frame)
    return f"id: {event['seq']}\nevent: {event['event']}\ndata: {frame}\n\n"


class FrameQueue:
    """Chunks of frames for a stream, bounded in bytes: `put` waits while it is full."""

    def __init__(self) -> None:
        self._chunks: deque[list[str] | None] = deque()  # None: the end
        self._bytes = 0
        self._changed = asyncio.Event()

    async def put(self, frames: list[str]) -> None:
        size = sum(map(len, frames))
        while self._bytes and self._bytes + size > STREAM_BYTES:
            self._changed.clear()
            await self._changed.wait()
        self._chunks.append(frames)
        self._bytes += size
        self._changed.set()

    def end(self) -> None:
        self._chunks.append(None)
        self._changed.set()

    async def get(self, timeout: float | None) -> list[str] | None:
        """The next chunk (None at the end); TimeoutError if none came in `timeout` (None: no limit)."""
        while not self._chunks:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), timeout)
        chunk = self._chunks.popleft()
        if chunk is not None:
            self._bytes -= sum(map(len, chunk))
            self._changed.set()
        return chunk


async def event_stream(broker: Broker, run_id: str, after: int) -> AsyncIterator[str]:
    """Every event with seq > after, then live ones; ends after the terminal event."""
    waiting = FrameQueue()
    sub = Subscription(broker, run_id, after, waiting.put)
    broker.subscribe(sub, lambda _sub: waiting.end())
    try:
        yield "retry: 1000\n\n"
        while True:
            try:
                chunk = await waiting.get(HEARTBEAT_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if chunk is None:
                return
            yield "".join(sse_message(frame) for frame in chunk)
    finally:
        sub.stop()


class EventStreamResponse(StreamingResponse):
    """A stream that ends when its client takes nothing for `stuck_seconds` (each write
    waits for the socket to take the one before), and is in `open_streams` while it is open."""

    def __init__(self, content: AsyncIterator[str], stuck_seconds: float, open_streams: set[Any]) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self.stuck_seconds = stuck_seconds
        self.open_streams = open_streams  # this one is in it while it streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.open_streams.add(self)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.open_streams.discard(self)

    async def stream_response(self, send: Send) -> None:
        async def send_or_give_up(message: Message) -> None:
            await asyncio.wait_for(send(message), self.stuck_seconds)

        try:
            await super().stream_response(send_or_give_up)
        except TimeoutError:
            log.info("ending an event stream whose client read nothing for %g s", self.stuck_seconds)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()  # its subscription ends now, not when it is collected
