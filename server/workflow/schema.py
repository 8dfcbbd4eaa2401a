"""Input schemas: JSON Schema (draft 7), checked by fastjsonschema.

fastjsonschema fills in `default`s as it validates, which the workflows' inputs rely on
(`{"n": 3}` is what `count` sees when the input is `{}`), and it compiles each schema
once to plain Python, so a check costs microseconds. Errors name the failing field.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import fastjsonschema
import regex

from ..protocol import InvalidInput

Schema = dict[str, Any]
Check = Callable[[Any], Any]

PATTERN_SECONDS = 0.1  # what a schema's patterns may take, together, to check one value

_ARTICLE = {"object": "an object", "array": "an array", "integer": "an integer"}
_SHOW_VALUE = {"type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "format"}


def _reason(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """'field 'a.b' must be string, got 7': the path in the input, the rule, the value."""
    name = exc.name or "data"
    rest = exc.message[len(name) :].strip() if exc.message.startswith(name) else exc.message
    path = name.removeprefix("data").lstrip(".")
    if exc.rule == "required" and isinstance(exc.value, dict):
        missing = [n for n in exc.rule_definition if n not in exc.value]
        return ", ".join(f"field '{path + '.' if path else ''}{n}' is required" for n in missing)
    where = f"field '{path}'" if path else "the input"
    if exc.rule == "type":  # "must be an integer", not the library's "must be integer"
        kinds = exc.rule_definition if isinstance(exc.rule_definition, list) else [exc.rule_definition]
        rest = "must be " + " or ".join(_ARTICLE.get(k, f"a {k}") for k in kinds)
    if exc.rule in _SHOW_VALUE:
        rest += f", got {exc.value!r:.80}"
    return f"{where} {rest}"


class _BoundedPattern:
    """A schema's `pattern` run by the `regex` module within what is left of the check's
    time: a pattern that backtracks catastrophically (`^(a|aa)+$` on 30 characters takes
    `re` seconds, holding the event loop) fails the value instead."""

    def __init__(self, compiled: re.Pattern[str]) -> None:
        self.pattern = compiled.pattern
        self._regex = regex.compile(compiled.pattern, compiled.flags & ~re.UNICODE)

    def search(self, text: str) -> Any:
        return self._regex.search(text, timeout=_time_left())

    def match(self, text: str) -> Any:
        return self._regex.match(text, timeout=_time_left())


_deadline = threading.local()  # when the check under way on this thread must end (see compile_schema)


def _time_left() -> float:
    left = _deadline.at - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def compile_schema(schema: Schema) -> Check:
    """A function that returns the value with defaults filled in, or raises InvalidInput.
    A schema that is not valid JSON Schema is a ValueError here, when the workflow is made.
    Its patterns, all together, may take PATTERN_SECONDS per value checked."""
    try:
        check = fastjsonschema.compile(schema)
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise ValueError(f"not a valid JSON Schema: {exc}") from exc
    patterns = check.__globals__.get("REGEX_PATTERNS", {})  # the compiled code's own table of them
    for key, compiled in list(patterns.items()):
        patterns[key] = _BoundedPattern(compiled)

    def validate(value: Any) -> Any:
        _deadline.at = time.monotonic() + PATTERN_SECONDS
        try:
            return check(copy.deepcopy(value))  # defaults are filled in place: not in the caller's value
        except fastjsonschema.JsonSchemaValueException as exc:
            raise InvalidInput(_reason(exc)) from None
        except TimeoutError:
            raise InvalidInput(
                f"checking the value against the schema's patterns took over {PATTERN_SECONDS:g} s "
                "(a pattern that backtracks too much, or a very long value); send a shorter value"
            ) from None

    return validate


def validate(schema: Schema, value: Any) -> Any:
    """Check `value` once against `schema` (compiling it): defaults filled in, or InvalidInput."""
    return compile_schema(schema)(value)


def checker(schema: Schema) -> Check:
    """A `validate_input` function for a Workflow; `null` input counts as `{}` for object schemas."""
    check = compile_schema(schema)
    is_object = schema.get("type") == "object"

    def checked(value: Any) -> Any:
        return check({} if value is None and is_object else value)

    return checked
