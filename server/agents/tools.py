"""Tools: plain or async Python functions an agent's model may call.

A tool's name, description and JSON Schema parameters come from the function itself,
as agent frameworks take them: the name from ``__name__``, the description from the
docstring's first paragraph, each parameter's type from its hint, its description from
the docstring's Google-style ``Args:`` section, and whether it is required from its
default::

    def add(a: int, b: int) -> int:
        \"\"\"Add two whole numbers.

        Args:
            a: The first number.
            b: The second number.
        \"\"\"
        return a + b

    Agent("calc", tools=[add])                      # a function
    Agent("calc", tools=[tool(name="plus")(add)])   # renamed, or with a timeout
    Agent("calc", tools=[Calculator()])             # a Toolkit: its public methods

Plain functions run in the tools' own threads (tool_threads.py), never on the event loop;
every call has a timeout, and its arguments are checked against the schema before it runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union, overload

from ..bounds import MAX_JSON_DEPTH, json_depth_exceeds
from ..jsontext import to_json_value
from ..protocol import InvalidInput
from ..workflow.schema import compile_schema
from .tool_threads import ToolsHung, tool_threads

DEFAULT_TOOL_TIMEOUT = 60.0  # seconds a tool call may take before the model is told it timed out
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # what the OpenAI API accepts as a function name
_SECTIONS = ("args:", "arguments:", "parameters:", "params:")
_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


OnUnknown = Literal["ask", "fail", "retry"]
ON_UNKNOWN = ("ask", "fail", "retry")


@dataclass(frozen=True)
class ToolCallInfo:
    """The call a tool is in, as `current_tool_call()` gives it to the tool: `idempotency_key`
    is the same each time this call of the model's is made (after a crash, a takeover, a
    retry of the step, a model asked again): pass it to an API that takes one."""

    idempotency_key: str
    call_id: str
    tool: str
    run_id: str | None
    step: str | None


_CURRENT: contextvars.ContextVar[ToolCallInfo | None] = contextvars.ContextVar("runcast_tool_call", default=None)


def current_tool_call() -> ToolCallInfo:
    """The call the running tool is in (in an async tool, or in a plain one's thread)."""
    call = _CURRENT.get()
    if call is None:
        raise RuntimeError("current_tool_call() is for a tool that an agent is calling")
    return call


class ToolCallFailed(Exception):
    """A tool call could not give a result; its message is what the model is told."""


@dataclass
class Tool:
    """A function the model may call: `name`, `description`, JSON Schema `parameters`,
    and a per-call `timeout` in seconds. Calling the Tool calls the function.

    With `takes_context`, the function is given the agent's context of the call first, then
    the model's arguments (a team's member tools learn so which call they work on).

    `side_effects=True` says a call does something that must not happen twice (a payment, an
    email): one cut off by a crash is never made again blindly, its outcome being unknown;
    `on_unknown` says what then: "ask" a person whether it happened (the run waits), "fail"
    (the model is told the outcome is unknown), or "retry" (made again, with the same
    idempotency key, for an API that takes one). See docs/python.md, "Tools with side effects"."""

    fn: Callable[..., Any]
    name: str
    description: str
    parameters: dict[str, Any]
    timeout: float = DEFAULT_TOOL_TIMEOUT
    takes_context: bool = False
    side_effects: bool = False
    on_unknown: OnUnknown = "ask"
    _check: Callable[[Any], Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r}: use 1 to 64 letters, digits, '_' or '-'")
        if self.timeout <= 0:
            raise ValueError(f"tool {self.name!r}: timeout must be > 0")
        if self.on_unknown not in ON_UNKNOWN:
            raise ValueError(f"tool {self.name!r}: on_unknown must be one of {', '.join(ON_UNKNOWN)}")
        self._check = compile_schema(self.parameters)

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = DEFAULT_TOOL_TIMEOUT,
        side_effects: bool = False,
        on_unknown: OnUnknown = "ask",
    ) -> Tool:
        """A Tool described by `fn`'s signature, type hints and docstring."""
        summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
        return cls(
            fn,
            name or str(getattr(fn, "__name__", type(fn).__name__)),
            summary if description is None else description,
            parameters_schema(fn, arg_docs),
            timeout,
            side_effects=side_effects,
            on_unknown=on_unknown,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def spec(self) -> dict[str, Any]:
        """The tool in the OpenAI chat API's `tools` format."""
        function = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": function}

    async def run(self, arguments: str, context: Any = None, call: ToolCallInfo | None = None) -> Any:
        """Parse `arguments` (the model's JSON text), check them, call the function within
        the timeout (given `context` first when it `takes_context`), and return its result
        as JSON; raise ToolCallFailed saying why not."""
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            raise ToolCallFailed(f"the arguments are not valid JSON: {exc}") from None
        except RecursionError:
            raise ToolCallFailed("the arguments nest too deeply to be read; send flatter arguments") from None
        if json_depth_exceeds(args):
            raise ToolCallFailed(f"the arguments nest deeper than {MAX_JSON_DEPTH} levels; send flatter arguments")
        try:
            args = self._check(args)
        except InvalidInput as exc:
            raise ToolCallFailed(f"invalid arguments: {exc}") from None
        first = (context,) if self.takes_context else ()
        token = _CURRENT.set(call)
        try:
            if inspect.iscoroutinefunction(self.fn):
                result = await asyncio.wait_for(self.fn(*first, **args), self.timeout)
            else:  # in the tools' own threads; the timeout counts from when the call runs there
                result = await tool_threads().call(self.fn, first, args, self.timeout)
        except TimeoutError:
            raise ToolCallFailed(f"timed out after {self.timeout:g} s") from None
        except ToolsHung as exc:
            raise ToolCallFailed(str(exc)) from None
        except Exception as exc:
            raise ToolCallFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            _CURRENT.reset(token)
        return to_json_value(result)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float = DEFAULT_TOOL_TIMEOUT,
    side_effects: bool = False,
    on_unknown: OnUnknown = "ask",
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float = DEFAULT_TOOL_TIMEOUT,
    side_effects: bool = False,
    on_unknown: OnUnknown = "ask",
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function a Tool, as `@tool` or `@tool(name=..., description=..., timeout=...,
    side_effects=True, on_unknown="ask")`; what is not given comes from the function."""

    def make(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(
            f, name=name, description=description, timeout=timeout, side_effects=side_effects, on_unknown=on_unknown
        )

    return make(fn) if fn is not None else make


class Toolkit:
    """A group of tools: every public method of a subclass is one (a method made with
    `@tool` keeps its options). Any object with a `tools()` method returning functions or
    Tools may be given to an agent the same way."""

    def tools(self) -> list[Any]:
        """The bound public methods defined by subclasses, in definition order."""
        found: list[Any] = []
        for klass in reversed(type(self).__mro__):
            if klass in (Toolkit, object):
                continue
            for attr, value in vars(klass).items():
                if attr.startswith("_") or attr == "tools":
                    continue
                if isinstance(value, Tool):  # @tool on a method: bind it to this object
                    bound = types.MethodType(value.fn, self)
                    found.append(
                        Tool.from_function(bound, name=value.name, description=value.description, timeout=value.timeout)
                    )
                elif inspect.isfunction(value):
                    found.append(getattr(self, attr))
        return found


def as_tools(items: Iterable[Any]) -> dict[str, Tool]:
    """Tools by name from functions, Tools, Toolkits and objects with `tools()`."""
    by_name: dict[str, Tool] = {}
    for item in items:
        if isinstance(item, Tool):
            found = [item]
        elif callable(getattr(item, "tools", None)) and not inspect.isroutine(item):
            found = list(as_tools(item.tools()).values())
        elif callable(item):
            found = [Tool.from_function(item)]
        else:
            raise TypeError(f"not a tool: {item!r} (give a function, a Tool or a Toolkit)")
        for t in found:
            if t.name in by_name:
                raise ValueError(f"two tools are named {t.name!r}")
            by_name[t.name] = t
    return by_name


# ---- schemas from signatures -------------------------------------------------------------


def parameters_schema(fn: Callable[..., Any], descriptions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The JSON Schema of `fn`'s keyword-callable parameters (an object)."""
    descriptions = descriptions or {}
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError) as exc:  # a hint naming something not importable here
        raise TypeError(f"tool {getattr(fn, '__name__', fn)!r}: cannot read its type hints: {exc}") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            continue  # the model passes arguments by name only
        schema = type_schema(hints.get(param.name, Any))
        if param.name in descriptions:
            schema["description"] = descriptions[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif param.default is not None or _nullable(schema):
            schema["default"] = to_json_value(param.default)
        properties[param.name] = schema
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of one type hint; `Any` or an unknown class allows anything."""
    if hint is None or hint is type(None):
        return {"type": "null"}
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [to_json_value(m.value) for m in hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        values = [to_json_value(a) for a in args]
        kinds = {_JSON_TYPES.get(type(v)) for v in values}
        return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 and None not in kinds else {"enum": values}
    if origin in (Union, types.UnionType):
        options = [type_schema(a) for a in args]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if hint in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset, typing.Sequence):
        item = args[0] if args else Any  # tuple[X, ...] and list[X] alike; fixed tuples are rare in tools
        return {"type": "array", "items": type_schema(item)} if item is not Any else {"type": "array"}
    if hint is dict or origin in (dict, typing.Mapping):
        value = args[1] if len(args) == 2 else Any
        return (
            {"type": "object", "additionalProperties": type_schema(value)} if value is not Any else {"type": "object"}
        )
    return {}


def _nullable(schema: dict[str, Any]) -> bool:
    return any(option.get("type") == "null" for option in schema.get("anyOf", ()))


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(the first paragraph on one line, {parameter: description} from an `Args:` section)."""
    lines = doc.strip().splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or line.strip().lower() in _SECTIONS:
            break
        summary.append(line.strip())
    args: dict[str, str] = {}
    current: str | None = None
    in_args, indent, entry_depth = False, 0, 0
    for line in lines:
        stripped = line.strip()
        if stripped.lower() in _SECTIONS:
            in_args, current, indent = True, None, len(line) - len(line.lstrip())
            continue
        if not in_args or not stripped:
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= indent:  # the next section (Returns:, Raises:, ...) ends this one
            in_args = False
            continue
        match = re.match(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", stripped)
        if match and (current is None or depth <= entry_depth):
            current, entry_depth = match.group(1), depth
            args[current] = match.group(2).strip()
        elif current is not None:  # a continuation line of the current entry
            args[current] = f"{args[current]} {stripped}".strip()
    return " ".join(summary), args
