"""Workflows that tests load into a real server with --workflows."""

import asyncio

from server import Step, StepInput, Workflow


async def _wait_forever(step_input: StepInput) -> None:
    await asyncio.sleep(3600)


fragile = Workflow("fragile", [Step("hang", _wait_forever)], description="never resumes", on_crash="fail")
