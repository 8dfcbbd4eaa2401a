"""A welcome now and a follow-up three days later: a durable sleep (contract 8.1).

The run sleeps in the database, not in memory: stop this program (or the server) while it
sleeps and the follow-up still goes out on time once it runs again; a sleep that fell due
meanwhile ends at once. The step runs again from its start after the sleep, so the email
is sent after it, and only once.

    .venv/bin/python examples/follow_up.py            # the real thing: three days
    .venv/bin/python examples/follow_up.py --in 2     # the same, in 2 seconds
"""

from __future__ import annotations

import argparse
import asyncio

from server import SqliteDb, Step, StepContext, StepInput, Workflow

THREE_DAYS = 3 * 24 * 3600


def send_welcome(step_input: StepInput) -> str:
    return f"welcome sent to {step_input.input['email']}"


async def follow_up(step_input: StepInput, ctx: StepContext) -> str:
    await ctx.sleep(step_input.input.get("after", THREE_DAYS))  # holds no worker while it sleeps
    return f"follow-up sent to {step_input.input['email']}"  # after the sleep: sent once


onboarding = Workflow(
    name="onboarding",
    description="A welcome now, a follow-up three days later",
    steps=[Step("welcome", send_welcome), Step("follow_up", follow_up)],
    db=SqliteDb(db_file="tmp/examples.db"),
)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in", dest="after", type=float, default=THREE_DAYS, help="seconds until the follow-up")
    args = parser.parse_args()
    run = await onboarding.arun(input={"email": "ada@example.com", "after": args.after}, background=True)
    while not run.has_completed():
        await asyncio.sleep(0.2)
        latest = await onboarding.aget_run(run.run_id)
        if latest is None:
            continue
        if latest.status == "sleeping" and run.status != "sleeping":
            print(f"{run.run_id}: {latest.steps[0]['output']}; sleeping until {latest.wake_at}")
        run = latest
    print(f"{run.status}: {run.content}")


if __name__ == "__main__":
    asyncio.run(main())
