"""A nightly batch, one run per customer, never two at once for one customer (contract 8.3, 8.2).

Each customer has a schedule at 03:00 Paris time; the workflow's concurrency key is the
customer, so a customer's nightly run never overlaps with another run of theirs (an
on-demand one started by hand, or yesterday's still going), while other customers' runs
go on. Every tick starts exactly one run, `sched:<name>:<tick>`, however many servers
serve this file.

    .venv/bin/python -m server --workflows examples/nightly_batch.py   # serve it: 03:00 each night
    .venv/bin/python examples/nightly_batch.py --every 2 --for 5      # try it: every 2 s, for 5 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from server import Runtime, Schedule, Step, StepContext, StepInput, Workflow
from server.store import RunFilter

CUSTOMERS = ("acme", "globex", "initech")


async def invoice(step_input: StepInput, ctx: StepContext) -> str:
    customer = step_input.input["customer"]
    for i in range(3):  # the day's orders, billed one by one
        ctx.progress(current=i + 1, total=3, message=f"billing {customer}")
        await asyncio.sleep(0.1)
    return f"invoiced {customer}"


def batch(every: float | None = None) -> Workflow:
    """The workflow and its schedules: nightly at 03:00 in Paris, or every `every` seconds."""
    when = {"every": every} if every else {"cron": "0 3 * * *", "timezone": "Europe/Paris"}
    return Workflow(
        "nightly_invoices",
        [Step("invoice", invoice)],
        description="A customer's invoices, one run per customer per night",
        concurrency_key="customer",  # at most one run per customer at a time
        concurrency_limit=1,
        schedules=[Schedule(f"invoices-{c}", input={"customer": c}, catchup="latest", **when) for c in CUSTOMERS],
    )


nightly_invoices = batch()  # what `python -m server --workflows examples/nightly_batch.py` serves


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=2, help="tick every this many seconds (instead of nightly)")
    parser.add_argument("--for", dest="seconds", type=float, default=5, help="run for this many seconds")
    args = parser.parse_args()
    os.makedirs("tmp", exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove("tmp/nightly.db")  # a demo starts afresh (a server keeps its schedules' history)
    runtime = Runtime("tmp/nightly.db", [batch(args.every)])
    await runtime.open()
    await asyncio.sleep(args.seconds)
    await runtime.scheduler.stop()  # no more ticks; let the last ones finish
    which = RunFilter(workflow="nightly_invoices")
    runs, _ = await runtime.store.list_runs(which, 500, None)
    runs = list(await asyncio.gather(*(runtime.engine.wait(r["run_id"]) for r in runs)))
    await runtime.close()
    for run in sorted(runs, key=lambda r: r["run_id"]):
        print(f"{run['run_id']:<40} {run['status']:<10} {run['output']}")
    print(f"{len(runs)} runs for {len(CUSTOMERS)} customers")


if __name__ == "__main__":
    asyncio.run(main())
