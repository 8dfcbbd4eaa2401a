"""A step that fails twice before it succeeds: retries with backoff, each attempt visible.

.venv/bin/python examples/flaky_retry.py
"""

from __future__ import annotations

import asyncio

from server import SqliteDb, Step, StepContext, StepInput, Workflow

attempts: dict[str, int] = {}


def call_flaky_service(step_input: StepInput, ctx: StepContext) -> str:
    attempts[ctx.run_id] = attempts.get(ctx.run_id, 0) + 1
    if attempts[ctx.run_id] < 3:
        raise ConnectionError(f"service unavailable (attempt {ctx.attempt})")
    return f"answer after {ctx.attempt} attempts"


flaky = Workflow(
    name="flaky",
    description="A step that needs three tries",
    steps=[Step("call", call_flaky_service, max_retries=3, retry_delay=0.1)],
    db=SqliteDb(db_file="tmp/examples.db"),
)


async def main() -> None:
    run = await flaky.arun(input=None)
    step = run.steps[0]
    print(f"{run.status}: {run.content} ({step['attempts']} attempts)")


if __name__ == "__main__":
    asyncio.run(main())
