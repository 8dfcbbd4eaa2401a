"""A run's events as a Server-Sent Events stream: `id:` is the seq, `event:` the event name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson

from ..live import Broker, Subscription

HEARTBEAT_SECONDS = 15.0  # a comment line now and then keeps proxies from closing a quiet stream
_END: list[str] = []  # the end of the stream (compared by identity)


def sse_message(frame: str) -> str:
    """One event frame as an SSE message."""
    event = orjson.loads(frame)
    return f"id: {event['seq']}\nevent: {event['event']}\ndata: {frame}\n\n"


async def event_stream(broker: Broker, run_id: str, after: int) -> AsyncIterator[str]:
    """Every event with seq > after, then live ones; ends after the terminal event."""
    frames: asyncio.Queue[list[str]] = asyncio.Queue(256)
    closing: set[asyncio.Task[None]] = set()

    def ended(_: Subscription) -> None:
        try:
            frames.put_nowait(_END)
        except asyncio.QueueFull:  # wait behind the frames already queued
            closing.add(asyncio.get_running_loop().create_task(frames.put(_END)))

    sub = Subscription(broker, run_id, after, frames.put)
    broker.subscribe(sub, ended)
    try:
        yield "retry: 1000\n\n"
        while True:
            try:
                chunk = await asyncio.wait_for(frames.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if chunk is _END:
                return
            yield "".join(sse_message(frame) for frame in chunk)
    finally:
        sub.stop()
        for task in closing:
            task.cancel()
