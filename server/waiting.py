"""Waiting on an event with a time limit, without losing a cancel.

`asyncio.wait_for` in Python 3.11 can turn a cancel that arrives as its timeout fires into
a TimeoutError; a loop that takes that as "time's up" then never stops. `asyncio.timeout`
counts cancels and tells the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` have passed; True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancelled(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel these tasks (None ones aside) and wait until each has ended."""
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
