"""The background-workflow example from Agno's docs, as Agno code, served by runcast.

Serve it (it needs `pip install 'runcast[agno]'`):

    python -m server --workflows examples/agno_workflow.py

and start "Content Creation Workflow" from the dashboard or `python -m client`: each
Agno step is a runcast step, its model text streamed, its tool calls seen, and a run
interrupted by a crash goes on from the step it was in. Run it without runcast, as
the docs do, with `python examples/agno_workflow.py`.

With no key it runs offline. With OPENAI_API_KEY set (or OPENAI_BASE_URL, for any
OpenAI-compatible server; the openai library reads both) the agents ask the real model;
without either, they ask runcast's offline stand-in (server/agents/offline_openai.py),
answered in this process: it calls every tool it is offered once (the team leader
delegates to each member), then writes a short answer naming what the tools returned.

Four changes from the docs: the model (`chat_model` below: offline without a key); the
workflow is defined at the module's top level (where `--workflows` looks for it) instead
of inside main(); the team's model is named like its agents' (Agno's default for a team
is OpenAI's Responses API, which the offline model does not speak); and the tools are
local stand-ins with the same shape (marked LOCAL STAND-IN below): the docs give the
agents HackerNewsTools and a web search, which reach the network; these return fixed
stories and results. Set RUNCAST_POLL_SECONDS to poll faster than every 5 s.
"""

import asyncio
import json
import os

from agno.agent import Agent
from agno.db.sqlite import SqliteDb
from agno.models.openai import OpenAIChat
from agno.team import Team
from agno.tools import Toolkit
from agno.utils.pprint import pprint_run_response
from agno.workflow.step import Step
from agno.workflow.workflow import Workflow

from server.agents.offline_openai import offline_http_client

POLL_SECONDS = float(os.environ.get("RUNCAST_POLL_SECONDS", "5"))


def chat_model(id: str) -> OpenAIChat:
    """OpenAIChat, as in the docs; without OPENAI_API_KEY or OPENAI_BASE_URL, answered offline."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        return OpenAIChat(id=id)
    return OpenAIChat(id=id, api_key="offline", http_client=offline_http_client())


# LOCAL STAND-IN for Agno's HackerNewsTools: the same tool, fixed stories, no network.
class HackerNewsTools(Toolkit):
    STORIES = [
        {"title": "Show HN: Background jobs that stream their progress", "score": 412, "comments": 118},
        {"title": "Small models are getting good at calling tools", "score": 377, "comments": 203},
        {"title": "What we learned running agents in production for a year", "score": 295, "comments": 96},
    ]

    def __init__(self, **kwargs):
        super().__init__(name="hackernews", tools=[self.get_top_hackernews_stories], **kwargs)

    def get_top_hackernews_stories(self, num_stories: int = 3) -> str:
        """Get the top stories on Hacker News.

        Args:
            num_stories: How many stories to return.
        """
        return json.dumps(self.STORIES[: max(0, num_stories)])


# LOCAL STAND-IN for Agno's web search tools: fixed results that name the query, no network.
class WebSearchTools(Toolkit):
    def __init__(self, **kwargs):
        super().__init__(name="websearch", tools=[self.web_search], **kwargs)

    def web_search(self, query: str, max_results: int = 2) -> str:
        """Search the web for a query.

        Args:
            query: What to search for.
            max_results: At most this many results.
        """
        results = [
            {"title": f"{query}: the year in review", "url": "https://example.com/review"},
            {"title": f"Five trends in {query}", "url": "https://example.com/trends"},
        ]
        return json.dumps(results[: max(0, max_results)])


# Define agents
hackernews_agent = Agent(
    name="Hackernews Agent",
    model=chat_model("gpt-5-mini"),
    tools=[HackerNewsTools()],
    role="Extract key insights and content from Hackernews posts",
)
web_agent = Agent(
    name="Web Agent",
    model=chat_model("gpt-5-mini"),
    tools=[WebSearchTools()],
    role="Search the web for the latest news and trends",
)

# Define research team for complex analysis
research_team = Team(
    name="Research Team",
    model=chat_model("gpt-5-mini"),
    members=[hackernews_agent, web_agent],
    instructions="Research tech topics from Hackernews and the web",
)

content_planner = Agent(
    name="Content Planner",
    model=chat_model("gpt-5-mini"),
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

content_creation_workflow = Workflow(
    name="Content Creation Workflow",
    description="Automated content creation from blog posts to social media",
    db=SqliteDb(session_table="workflow_session", db_file="tmp/workflow.db"),
    steps=[research_step, content_planning_step],
)


async def main():
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
