"""Workflows that tests load into a real server with --workflows."""

import asyncio
import time

from server import Step, StepInput, Workflow


async def _wait_forever(step_input: StepInput) -> None:
    await asyncio.sleep(3600)


fragile = Workflow("fragile", [Step("hang", _wait_forever)], description="never resumes", on_crash="fail")


# ---- composition (tests/test_composition.py) -------------------------------------------

from server import StepContext, StepOutput  # noqa: E402
from server.workflow import Condition, Loop, Parallel, Router, Steps  # noqa: E402


def _text(value: str):
    def run(step_input: StepInput) -> str:
        return value

    return run


def _words(*words: str):
    async def run(step_input: StepInput):
        for word in words:
            await asyncio.sleep(0.01)
            yield word

    return run


def _summarize(step_input: StepInput) -> dict:
    return {"web": step_input.get_step_content("web"), "papers": step_input.get_step_content("papers")}


review = Workflow(
    "review",
    [Steps("review", [Step("draft", _text("a draft")), Step("polish", lambda si: si.previous_step_content.upper())])],
)

research = Workflow(
    "research",
    [
        Parallel(Step("web", _words("w1 ", "w2 ", "w3")), Step("papers", _words("p1 ", "p2")), name="gather"),
        Step("summarize", _summarize),
    ],
)

gate = Workflow(
    "gate",
    [
        Condition(
            "only_if_long", lambda si: len(si.input["text"]) > 5, [Step("shout", lambda si: si.input["text"].upper())]
        ),
        Step("end", lambda si: si.previous_step_content),
    ],
)


def _improve(step_input: StepInput) -> int:
    return (step_input.previous_step_content or 0) + 1


refine = Workflow(
    "refine",
    [Loop("refine", [Step("improve", _improve)], end_condition=lambda outs: outs[-1].content >= 3, max_iterations=5)],
)

route = Workflow(
    "route",
    [Router("pick", lambda si: si.input["kind"], [Step("text", _text("T")), Step("image", _text("I"))])],
)

_tries: dict[str, int] = {}


def _flaky(step_input: StepInput, ctx: StepContext) -> str:
    _tries[ctx.run_id] = _tries.get(ctx.run_id, 0) + 1
    if _tries[ctx.run_id] < 3:
        raise ConnectionError(f"flaky failure {_tries[ctx.run_id]}")
    return "third time lucky"


flaky = Workflow("flaky", [Step("flaky", _flaky, max_retries=3, retry_delay=0.01)])


async def _slow(step_input: StepInput) -> str:
    await asyncio.sleep(5)
    return "too late"


def _broken(step_input: StepInput) -> None:
    raise ValueError("optional step broke")


timeouts = Workflow("timeouts", [Step("slow", _slow, timeout_seconds=0.2)])
optional = Workflow(
    "optional",
    [
        Step("first", _text("one")),
        Step("optional", _broken, skip_on_failure=True),
        Step("after", lambda si: si.previous_step_content),
    ],
)
early = Workflow("early", [Step("first", lambda si: StepOutput(content="x", stop=True)), Step("never", _text("no"))])


# ---- people in the loop (tests/test_ask.py) ----------------------------------------------

_YES_NO = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}


async def _approve(step_input: StepInput, ctx: StepContext) -> dict:
    answer = await ctx.ask("Publish this?", schema=_YES_NO)
    return {"ok": answer["ok"], "topic": step_input.input}


def _greet(step_input: StepInput, ctx: StepContext) -> str:
    name = ctx.ask("Your name?", {"type": "string"})  # a plain function step: the answer itself
    return f"hello {name}"


async def _two_asks(step_input: StepInput, ctx: StepContext) -> list:
    first = await ctx.ask("First?")
    second = await ctx.ask(f"Second, after {first}?")
    return [first, second]


def _asker(prompt: str):
    async def run(step_input: StepInput, ctx: StepContext):
        return await ctx.ask(prompt)

    return run


async def _timed(step_input: StepInput, ctx: StepContext):
    given = {"default": step_input.input["default"]} if "default" in step_input.input else {}
    return await ctx.ask("Quick?", timeout=step_input.input["timeout"], **given)


approve = Workflow("approve", [Step("approve", _approve)])
greet = Workflow("greet", [Step("greet", _greet)])
two_asks = Workflow("two_asks", [Step("both", _two_asks)])
both_branches = Workflow(
    "both_branches",
    [
        Parallel(Step("left", _asker("Left?")), Step("right", _asker("Right?")), Step("plain", _text("p")), name="ask"),
        Step("after", lambda si: si.previous_step_content),
    ],
)
timed = Workflow("timed", [Step("quick", _timed)])
confirm = Workflow(
    "confirm",
    [
        Step("deploy", _text("deployed"), requires_confirmation=True, confirmation_message="Deploy now?"),
        Step("after", lambda si: si.previous_step_content),
    ],
)
confirm_or_cancel = Workflow(
    "confirm_or_cancel", [Step("deploy", _text("deployed"), requires_confirmation=True, on_reject="cancel")]
)


async def _hold(step_input: StepInput) -> object:
    await asyncio.sleep(float(step_input.input.get("seconds", 0.4)))
    return step_input.input.get("customer")


# Contract 8.2's concurrency keys: one run per customer at a time.
keyed = Workflow("keyed", [Step("work", _hold)], concurrency_key="customer", concurrency_limit=1)


# Contract 8.1's durable sleep: `nap` sleeps `seconds` (twice with `twice`) in an async
# step, `doze` in a plain function step, `naps` in two parallel branches; each counts the
# times its step began, so a test sees that a finished sleep is not slept again.
async def _nap(step_input: StepInput, ctx: StepContext) -> dict:
    seconds = float(step_input.input.get("seconds", 1))
    await ctx.sleep(seconds)
    if step_input.input.get("twice"):
        await ctx.sleep_until(time.time() + seconds)
    return {"slept": seconds}


def _doze(step_input: StepInput, ctx: StepContext) -> str:
    ctx.sleep(float(step_input.input.get("seconds", 1)))
    return "rested"


nap = Workflow("nap", [Step("nap", _nap), Step("after", lambda si: si.previous_step_content)])
doze = Workflow("doze", [Step("doze", _doze)])
naps = Workflow(
    "naps",
    [
        Parallel(Step("short", _nap), Step("asks", _asker("Awake?")), name="both"),
        Step("after", lambda si: si.previous_step_content),
    ],
)
