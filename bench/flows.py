"""Workflows of the benchmarks, loaded into the server with `--workflows bench/flows.py`.

- `chain3`: three plain (sync) function steps, the workflow of figure 1 (the Python API
  figure builds the same steps in-process from the functions here).
- `emit`: one async step that waits for a go file to exist (so that every subscriber is in
  place first), then sends `n` progress events at `rate` per second (0: as fast as the store
  takes them), each carrying `t` for latency: the server's time.time() at which the event was
  due (its slot in the schedule, so that a server too busy to emit on time cannot hide that
  delay from the latency: no coordinated omission), or when it was emitted, at rate 0.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from server import Step, StepContext, StepInput, Workflow


def s1(step_input: StepInput) -> int:
    return 1


def s2(step_input: StepInput) -> int:
    return 2


def s3(step_input: StepInput) -> int:
    return 3


CHAIN3_STEPS = (("s1", s1), ("s2", s2), ("s3", s3))

chain3 = Workflow("chain3", [Step(name, fn) for name, fn in CHAIN3_STEPS], description="three plain function steps")


async def wait_for_go(go: str | None) -> None:
    """Wait (at most 60 s) until the go file exists: every subscriber is in place."""
    deadline = time.monotonic() + 60
    while go and not os.path.exists(go) and time.monotonic() < deadline:
        await asyncio.sleep(0.001)


async def schedule(n: int, rate: float, *, yield_each: bool = False) -> AsyncIterator[tuple[int, float]]:
    """The emitter's schedule, shared by runcast's `emit` and the bare endpoint: (i, due time)
    for i in 1..n at `rate` per second; at rate 0, as fast as possible (with `yield_each`,
    giving the loop a turn between events)."""
    began = time.time()
    for i in range(1, n + 1):
        if rate:
            due = began + i / rate
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        else:
            if yield_each:
                await asyncio.sleep(0)
            due = time.time()
        yield i, due


async def _emit(step_input: StepInput, ctx: StepContext) -> dict[str, Any]:
    cfg = step_input.input
    n = int(cfg["n"])
    await wait_for_go(cfg.get("go"))
    async for i, due in schedule(n, float(cfg.get("rate", 0))):
        ctx.progress(i=i, t=due)
        await ctx.drain()
    return {"n": n}


emit = Workflow("emit", [Step("emit", _emit)], description='{"n", "rate", "go"}: n timed progress events')
