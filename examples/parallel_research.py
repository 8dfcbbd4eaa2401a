"""Research a topic from three sources at once, then summarize: a Parallel step, streamed.

    .venv/bin/python examples/parallel_research.py "AI trends"

Each source streams its notes as they come; the summary step reads all three.
"""

from __future__ import annotations

import asyncio
import sys

from server import Parallel, SqliteDb, Step, StepInput, Workflow


def source(name: str, pace: float):
    async def read(step_input: StepInput):
        for i in range(1, 4):
            await asyncio.sleep(pace)
            yield f"{name} note {i} on {step_input.input}. "

    return read


def summarize(step_input: StepInput) -> str:
    found = step_input.previous_step_content  # {"web": ..., "papers": ..., "forums": ...}
    lines = [f"- {name}: {len(text.split('. ')) - 1} notes" for name, text in sorted(found.items())]
    return "Summary\n" + "\n".join(lines)


research = Workflow(
    name="parallel-research",
    description="Three sources at once, then a summary",
    steps=[
        Parallel(
            Step("web", source("web", 0.05)),
            Step("papers", source("papers", 0.08)),
            Step("forums", source("forums", 0.03)),
            name="gather",
        ),
        Step("summarize", summarize),
    ],
    db=SqliteDb(db_file="tmp/examples.db"),
)


async def main(topic: str) -> None:
    run = await research.arun(input=topic)  # without background: waits for the end
    for step in run.steps:
        print(f"{step['name']:<16} {step['status']}")
    print(run.content)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "AI trends"))
