"""The background-workflow example from the agent-framework docs, ported to runcast.

Only the imports changed, and the tools: the docs give the agents HackerNewsTools and a
web search, which reach the network; here two local stand-ins with the same shape return
fixed stories and results (marked LOCAL STAND-IN below), so the tool calls are real but
nothing leaves the machine. With no OPENAI_API_KEY the agents use runcast's offline model
that calls tools, so this runs anywhere:

    .venv/bin/python examples/background_poll.py

Set RUNCAST_POLL_SECONDS to poll faster than every 5 s (the tests do).
"""

import asyncio
import os

from server import Agent, OfflineToolModel, OpenAIChat, SqliteDb, Step, Team, Toolkit, Workflow, pprint_run_response

POLL_SECONDS = float(os.environ.get("RUNCAST_POLL_SECONDS", "5"))
# The docs use OpenAIChat(id="gpt-5-mini"); without a key, runcast's offline model that
# calls tools stands in.
MODEL = OpenAIChat(id="gpt-5-mini") if os.environ.get("OPENAI_API_KEY") else OfflineToolModel()


# LOCAL STAND-IN for the docs' HackerNewsTools: the same kind of tool, fixed stories, no network.
class HackerNewsTools(Toolkit):
    """Top Hacker News stories (local stand-in: a fixed list, no network)."""

    STORIES = [
        {"title": "Show HN: Background jobs that stream their progress", "score": 412, "comments": 118},
        {"title": "Small models are getting good at calling tools", "score": 377, "comments": 203},
        {"title": "What we learned running agents in production for a year", "score": 295, "comments": 96},
    ]

    def get_top_hackernews_stories(self, num_stories: int = 3) -> list[dict[str, object]]:
        """Get the top stories on Hacker News.

        Args:
            num_stories: How many stories to return.
        """
        return self.STORIES[: max(0, num_stories)]


# LOCAL STAND-IN for the docs' web search tools: fixed results that name the query, no network.
class WebSearchTools(Toolkit):
    """Search the web (local stand-in: fixed results, no network)."""

    def web_search(self, query: str, max_results: int = 2) -> list[dict[str, str]]:
        """Search the web for a query.

        Args:
            query: What to search for.
            max_results: At most this many results.
        """
        results = [
            {"title": f"{query}: the year in review", "url": "https://example.com/review"},
            {"title": f"Five trends in {query}", "url": "https://example.com/trends"},
        ]
        return results[: max(0, max_results)]


# Define agents
hackernews_agent = Agent(
    name="Hackernews Agent",
    model=MODEL,
    tools=[HackerNewsTools()],
    role="Extract key insights and content from Hackernews posts",
)
web_agent = Agent(
    name="Web Agent",
    model=MODEL,
    tools=[WebSearchTools()],
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
