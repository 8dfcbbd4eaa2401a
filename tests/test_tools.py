"""Tools: schemas from signatures and docstrings, decorators, toolkits, checked calls."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Literal

import pytest

from server.agents import Tool, Toolkit, tool
from server.agents.tools import ToolCallFailed, as_tools, parse_docstring, type_schema


def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


def search(
    query: str,
    limit: int = 10,
    tags: list[str] | None = None,
    mode: Literal["fast", "full"] = "fast",
    score: float | None = None,
    exact: bool = False,
    extra: dict[str, Any] | None = None,
) -> list[str]:
    """Search the notes
    for a query.

    Only notes one may read are searched.

    Args:
        query: What to look for.
        limit (int): At most this many
            results are returned.
        tags: Only notes with all of these tags.

    Returns:
        The matching notes.
    """
    return [query] * limit


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    t = Tool.from_function(search)

    assert t.name == "search"
    assert t.description == "Search the notes for a query."
    assert t.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for."},
            "limit": {"type": "integer", "description": "At most this many results are returned.", "default": 10},
            "tags": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "description": "Only notes with all of these tags.",
                "default": None,
            },
            "mode": {"type": "string", "enum": ["fast", "full"], "default": "fast"},
            "score": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
            "exact": {"type": "boolean", "default": False},
            "extra": {"anyOf": [{"type": "object"}, {"type": "null"}], "default": None},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    assert t.spec() == {
        "type": "function",
        "function": {"name": "search", "description": t.description, "parameters": t.parameters},
    }


@pytest.mark.parametrize(
    ("hint", "schema"),
    [
        (int, {"type": "integer"}),
        (list, {"type": "array"}),
        (dict, {"type": "object"}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (Literal[1, 2], {"type": "integer", "enum": [1, 2]}),
        (Literal["a", 1], {"enum": ["a", 1]}),
        (Any, {}),
    ],
)
def test_type_hints(hint: Any, schema: dict[str, Any]) -> None:
    assert type_schema(hint) == schema


def test_a_docstring_without_sections() -> None:
    assert parse_docstring("Add two whole numbers.") == ("Add two whole numbers.", {})
    assert parse_docstring("") == ("", {})


def test_the_decorator_names_and_describes() -> None:
    @tool(name="plus", description="Sum of a and b.", timeout=5)
    def add_them(a: int, b: int = 1) -> int:
        """Ignored."""
        return a + b

    assert isinstance(add_them, Tool)
    assert (add_them.name, add_them.description, add_them.timeout) == ("plus", "Sum of a and b.", 5)
    assert add_them(2, 3) == 5  # still callable as the function
    assert tool(add).name == "add"


class Calculator(Toolkit):
    """Arithmetic."""

    def multiply(self, a: float, b: float) -> float:
        """Multiply two numbers."""
        return a * b

    @tool(name="div", timeout=2)
    def divide(self, a: float, b: float) -> float:
        """Divide a by b."""
        return a / b

    def _helper(self) -> None: ...


class Custom:
    def tools(self) -> list[Any]:
        return [add]


def test_toolkits_and_objects_with_tools() -> None:
    tools = as_tools([Calculator(), Custom()])

    assert list(tools) == ["multiply", "div", "add"]
    assert "self" not in tools["div"].parameters["properties"]
    assert tools["div"].timeout == 2
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        as_tools([add, Custom()])


async def test_a_call_is_checked_then_run_in_a_thread() -> None:
    threads: list[int] = []

    def where(n: int) -> int:
        threads.append(threading.get_ident())
        return n

    t = Tool.from_function(where)
    assert await t.run('{"n": 3}') == 3
    assert threads != [threading.get_ident()]
    assert await Tool.from_function(search).run('{"query": "x", "limit": 2}') == ["x", "x"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [('{"a": 1,', "not valid JSON"), ('{"a": "one", "b": 2}', "invalid arguments"), ('{"a": 1}', "invalid")],
)
async def test_bad_arguments_are_refused_before_the_call(arguments: str, message: str) -> None:
    with pytest.raises(ToolCallFailed, match=message):
        await Tool.from_function(add).run(arguments)


async def test_a_raising_tool_and_a_slow_one() -> None:
    def boom() -> None:
        raise RuntimeError("no luck")

    async def slow() -> None:
        await asyncio.sleep(5)

    with pytest.raises(ToolCallFailed, match="RuntimeError: no luck"):
        await Tool.from_function(boom).run("{}")
    started = time.monotonic()
    with pytest.raises(ToolCallFailed, match=r"timed out after 0\.1 s"):
        await Tool.from_function(slow, timeout=0.1).run("")
    assert time.monotonic() - started < 2
