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
