"""A workflow with a tool-calling agent, for tests/test_agent_tools_e2e.py: its model is
the OpenAI stub, found through OPENAI_BASE_URL, which the test sets."""

from server import Agent, OpenAIChat, Step, Toolkit, Workflow


def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


class Calculator(Toolkit):
    """Arithmetic beyond adding."""

    def multiply(self, a: float, b: float) -> float:
        """Multiply two numbers."""
        return a * b


calc = Workflow(
    "calc",
    [Step("think", agent=Agent("Calc", model=OpenAIChat("gpt-stub", max_retries=0), tools=[add, Calculator()]))],
)
