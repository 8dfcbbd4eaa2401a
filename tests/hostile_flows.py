"""Workflows whose steps raise what a well-behaved step never should (tests/test_hostile_steps.py)."""

import asyncio
import threading

from server import Parallel, Step, StepInput, Workflow


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _raiser(what: str) -> BaseException:
    return {
        "system_exit": SystemExit(3),
        "keyboard_interrupt": KeyboardInterrupt(),
        "generator_exit": GeneratorExit(),
        "cancelled": asyncio.CancelledError(),
        "unprintable": Unprintable(),
    }[what]


async def _async_step(step_input: StepInput) -> None:
    raise _raiser(step_input.input["raise"])


def _thread_step(step_input: StepInput) -> None:
    assert threading.current_thread() is not threading.main_thread()
    raise _raiser(step_input.input["raise"])


def _gen_step(step_input: StepInput):
    yield "a piece "
    raise _raiser(step_input.input["raise"])


async def _ok(step_input: StepInput) -> str:
    await asyncio.sleep(0.05)
    return "fine"


hostile_async = Workflow("hostile_async", [Step("boom", _async_step)])
hostile_thread = Workflow("hostile_thread", [Step("boom", _thread_step)])
hostile_gen = Workflow("hostile_gen", [Step("boom", _gen_step)])
hostile_timed = Workflow("hostile_timed", [Step("boom", _async_step, timeout_seconds=5)])
hostile_parallel = Workflow("hostile_parallel", [Parallel(Step("ok", _ok), Step("boom", _async_step), name="both")])
hostile_retry = Workflow("hostile_retry", [Step("boom", _thread_step, max_retries=1, retry_delay=0.01)])


# ---- sizes (tests/test_sizes.py) -------------------------------------------------------


def _big(step_input: StepInput, ctx) -> str:
    size, where = step_input.input["bytes"], step_input.input["where"]
    if where == "delta":
        ctx.output("x" * size)
    elif where == "progress":
        ctx.progress(blob=["y" * 1000] * (size // 1000))
    return "x" * size if where == "output" else "small"


async def _big_async(step_input: StepInput, ctx) -> str:
    return _big(step_input, ctx)


def _chunk(n: int):
    def run(step_input: StepInput) -> str:
        return str(n) * step_input.input["bytes"]

    return run


big_thread = Workflow("big_thread", [Step("make", _big)])
big_async = Workflow("big_async", [Step("make", _big_async)])
# six steps of ~200 KB each: every event fits, but the whole snapshot does not fit one frame
big_steps = Workflow("big_steps", [Step(f"s{i}", _chunk(i)) for i in range(6)])
