"""The background-workflow example from the agent-framework docs, ported to runcast.

Only the imports changed (and the tools, which runcast does not call: the agents answer
from their model alone). With no OPENAI_API_KEY the agents use the offline writer, so
this runs anywhere:

    .venv/bin/python examples/background_poll.py

Set RUNCAST_POLL_SECONDS to poll faster than every 5 s (the tests do).
"""

import asyncio
import os

from server import Agent, OpenAIChat, SqliteDb, Step, Team, Workflow, default_model, pprint_run_response

POLL_SECONDS = float(os.environ.get("RUNCAST_POLL_SECONDS", "5"))
# The docs use OpenAIChat(id="gpt-5-mini"); without a key, runcast's offline writer stands in.
MODEL = OpenAIChat(id="gpt-5-mini") if os.environ.get("OPENAI_API_KEY") else default_model()

# Define agents
hackernews_agent = Agent(
    name="Hackernews Agent",
    model=MODEL,
    role="Extract key insights and content from Hackernews posts",
)
web_agent = Agent(
    name="Web Agent",
    model=MODEL,
    role="Search the web for the latest news and trends",
)

# Define research team for complex analysis
research_team = Team(
    name="Research Team",
    members=[hackernews_agent, web_agent],
    instructions="Research tech topics from Hackernews and the web",
)

content_planner = Agent(
    name="Content Planner",
    model=MODEL,
    instructions=[
        "Plan a content schedule over 4 weeks for the provided topic and research content",
        "Ensure that I have posts for 3 posts per week",
    ],
)

# Define steps
research_step = Step(
    name="Research Step",
    team=research_team,
)

content_planning_step = Step(
    name="Content Planning Step",
    agent=content_planner,
)


async def main():
    content_creation_workflow = Workflow(
        name="Content Creation Workflow",
        description="Automated content creation from blog posts to social media",
        db=SqliteDb(session_table="workflow_session", db_file="tmp/workflow.db"),
        steps=[research_step, content_planning_step],
    )

    print("Starting Async Background Workflow Test")

    # Start background execution (async)
    bg_response = await content_creation_workflow.arun(input="AI trends in 2024", background=True)
    print(f"Initial Response: {bg_response.status} - {bg_response.content}")
    print(f"Run ID: {bg_response.run_id}")

    # Poll every POLL_SECONDS until completion
    poll_count = 0

    while True:
        poll_count += 1
        print(f"\nPoll #{poll_count} (every {POLL_SECONDS:g}s)")

        result = content_creation_workflow.get_run(bg_response.run_id)

        if result is None:
            print("Workflow not found yet, still waiting...")
            if poll_count > 50:
                print(f"Timeout after {poll_count} attempts")
                break
            await asyncio.sleep(POLL_SECONDS)
            continue

        if result.has_completed():
            break

        if poll_count > 200:
            print(f"Timeout after {poll_count} attempts")
            break

        await asyncio.sleep(POLL_SECONDS)

    final_result = content_creation_workflow.get_run(bg_response.run_id)

    print("\nFinal Result:")
    print("=" * 50)
    pprint_run_response(final_result, markdown=True)


if __name__ == "__main__":
    asyncio.run(main())
