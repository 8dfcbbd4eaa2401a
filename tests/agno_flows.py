"""Agno workflows for tests/test_agno.py, plain Agno code: served by `--workflows`.

Each agent's model talks to the stub OpenAI server at AGNO_STUB (its scenario in the path).
"""

from __future__ import annotations

import os
import time

from agno.agent import Agent
from agno.models.openai import OpenAIChat
from agno.workflow import Parallel, Step, Steps, Workflow
from agno.workflow.types import StepInput, StepOutput
from pydantic import BaseModel

STUB = os.environ.get("AGNO_STUB", "http://127.0.0.1:9")
FLAG = os.environ.get("AGNO_FLAG", "")  # wait_for_flag returns once this file exists


def model(scenario: str, id: str) -> OpenAIChat:
    return OpenAIChat(id=id, base_url=f"{STUB}/{scenario}/v1", api_key="sk-stub")


def fine(step_input: StepInput) -> StepOutput:
    return StepOutput(content=f"fine with {step_input.input}")


def says_no(step_input: StepInput) -> StepOutput:
    return StepOutput(content="nothing", success=False, error=f"the step said no to {step_input.previous_step_content}")


def shout(step_input: StepInput) -> StepOutput:
    return StepOutput(content=str(step_input.previous_step_content).upper())


def right(step_input: StepInput) -> StepOutput:
    return StepOutput(content=f"right of {step_input.input}")


def branches(step_input: StepInput) -> StepOutput:
    return StepOutput(content=step_input.get_step_content("both"))


def wait_for_flag() -> str:
    """Wait until the test lets this call finish (at most 10 s)."""
    deadline = time.monotonic() + 10
    while not (FLAG and os.path.exists(FLAG)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "the flag is up" if FLAG and os.path.exists(FLAG) else "no flag"


failing = Workflow(
    name="agno-fail", steps=[Step(name="ok", executor=fine), Step(name="no", executor=says_no, max_retries=0)]
)

flaky = Workflow(
    name="agno-retry",
    steps=[Step(name="flaky", agent=Agent(name="Flaky", model=model("stream-fail-once", "flaky-1")), max_retries=1)],
)

two_steps = Workflow(
    name="agno-two",
    steps=[
        Step(name="first", agent=Agent(name="First", model=model("ok", "first-1"))),
        Step(name="second", agent=Agent(name="Second", model=model("stall-once", "second-1"))),
        Step(name="shout", executor=shout),
    ],
)


def wait_here(step_input: StepInput) -> StepOutput:
    return StepOutput(content=wait_for_flag())


blocking = Workflow(name="agno-blocking", steps=[Step(name="wait", executor=wait_here)])

waiting = Workflow(
    name="agno-wait",
    steps=[
        Step(name="slow", agent=Agent(name="Slow", model=model("every-tool", "slow-1"), tools=[wait_for_flag])),
        Step(name="loud", executor=shout),
    ],
)

groups = Workflow(
    name="agno-groups",
    steps=[
        Parallel(Step(name="left", executor=fine), Step(name="right", executor=right), name="both"),
        Step(name="branches", executor=branches),  # Agno's view of the Parallel before it
        Steps(name="then", steps=[Step(name="again", executor=fine), Step(name="loud", executor=shout)]),
        Step(name="after", executor=shout),  # sees the last inner step's content
    ],
)


class Topic(BaseModel):
    topic: str
    weeks: int = 4


def plan(step_input: StepInput) -> StepOutput:
    topic = step_input.input  # the model instance, as under Agno
    return StepOutput(content=Topic(topic=f"plan for {topic.topic}", weeks=topic.weeks * 2))


typed = Workflow(name="agno-typed", input_schema=Topic, steps=[Step(name="plan", executor=plan)])
typed_again = typed  # the same workflow under two names is served once
