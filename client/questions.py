"""Questions built from a JSON schema, asked one line at a time: what `run` and `watch`
ask a person at a terminal when a run waits for input.

    boolean          y/n
    integer, number  a number (asked again until it is one)
    string           the text as typed
    enum (or const)  numbered choices: the number or the value itself
    object           one question per property, required ones first; a default is shown
                     and taken on empty input; an optional one left empty is left out
    anything else    a JSON value (asked again until it parses); also for no schema

Only the shape is checked here; the server checks the rest (bounds, patterns) and its
`invalid_input` message is shown before asking again. No I/O of its own: lines come from
a `Lines` (the terminal, or anything else that gives lines), so it is tested with plain
text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

YES = frozenset({"y", "yes", "true", "t", "1"})
NO = frozenset({"n", "no", "false", "f", "0"})
LEAF_TYPES = frozenset({"boolean", "integer", "number", "string"})


class Lines(Protocol):
    """Where questions are shown and answers typed."""

    async def readline(self) -> str | None:
        """The next line typed, without its line end; None once input has ended (Ctrl-D)."""
        ...

    def write(self, text: str) -> None: ...


class EndOfInput(Exception):
    """The person closed the input (Ctrl-D) before answering."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # no default / nothing answered (None is a value: JSON null)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def kind_of(schema: Any) -> tuple[str, bool]:
    """How a schema is asked ("enum", "object", a leaf type, or "json") and whether null is allowed."""
    if not isinstance(schema, dict):
        return "json", False
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return "enum", None in schema["enum"]
    if "const" in schema:
        return "enum", schema["const"] is None
    types = schema.get("type")
    names = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    nullable = "null" in names
    kinds = [t for t in names if t != "null"]
    if len(kinds) != 1:
        return "json", nullable
    kind = kinds[0]
    if kind == "object":
        return ("object" if isinstance(schema.get("properties"), dict) and schema["properties"] else "json"), nullable
    return (kind if kind in LEAF_TYPES else "json"), nullable


@dataclass
class Question:
    """One line to answer: what is shown, and how the typed text becomes a value."""

    kind: str
    label: str = ""
    note: str = ""  # a property's title or description
    choices: tuple[Any, ...] = ()
    default: Any = MISSING
    optional: bool = False  # empty input leaves the property out
    nullable: bool = False  # empty input is null

    @property
    def hint(self) -> str:
        if self.kind == "boolean":
            return {True: "Y/n", False: "y/N"}.get(self.default, "y/n") if isinstance(self.default, bool) else "y/n"
        if self.kind == "enum":
            return f"1-{len(self.choices)}"
        return {"integer": "a whole number", "number": "a number", "json": "JSON"}.get(self.kind, "")

    def text(self) -> str:
        """The line shown before the answer is typed (choices, if any, on lines of their own)."""
        choices = "".join(f"    {i}) {_json(choice)}\n" for i, choice in enumerate(self.choices, 1))
        head = self.label + (f" ({self.note})" if self.note else "")
        extras = [self.hint] if self.hint else []
        if self.default is not MISSING:
            if self.kind != "boolean":  # y/n shows its default as Y/n or y/N
                extras.append(f"default {self._shown(self.default)}")
        elif self.optional:
            extras.append("optional, Enter skips")
        parts = [part for part in (head, f"[{', '.join(extras)}]" if extras else "") if part]
        return choices + "  " + " ".join(parts) + ": "

    def _shown(self, value: Any) -> str:
        if self.kind == "enum" and value in self.choices:
            return f"{self.choices.index(value) + 1} {_json(value)}"
        return value if self.kind == "string" and isinstance(value, str) else _json(value)

    def answer(self, text: str) -> Any:
        """The value for the typed text: MISSING for "leave it out"; ValueError says what is wrong."""
        empty = text == "" if self.kind == "string" else text.strip() == ""
        if empty:
            if self.default is not MISSING:
                return self.default
            if self.optional:
                return MISSING
            if self.nullable:
                return None
            if self.kind == "string":
                return ""
            raise ValueError("an answer is needed")
        parse = getattr(self, f"_{self.kind}")
        return parse(text if self.kind == "string" else text.strip())

    def _boolean(self, text: str) -> bool:
        if text.lower() in YES:
            return True
        if text.lower() in NO:
            return False
        raise ValueError("answer y or n")

    def _integer(self, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None

    def _number(self, text: str) -> int | float:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError("a number must be finite")
        return value

    def _string(self, text: str) -> str:
        return text

    def _enum(self, text: str) -> Any:
        if text.isdigit() and 1 <= int(text) <= len(self.choices):
            return self.choices[int(text) - 1]
        for choice in self.choices:
            if text == choice or text == _json(choice):
                return choice
        raise ValueError(f"choose a number from 1 to {len(self.choices)}")

    def _json(self, text: str) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f'not valid JSON ({exc}); quote text, e.g. "yes"') from None


def question(schema: Any, label: str = "", default: Any = MISSING, optional: bool = False) -> Question:
    """The question for a schema that is asked on one line (any kind but "object")."""
    kind, nullable = kind_of(schema)
    if kind == "object":
        kind = "json"
    spec = schema if isinstance(schema, dict) else {}
    if default is MISSING and "default" in spec:
        default = spec["default"]
    choices = tuple(spec["enum"]) if kind == "enum" and "enum" in spec else (spec.get("const"),)
    note = str(spec.get("title") or spec.get("description") or "")
    return Question(
        kind=kind,
        label=label,
        note=" ".join(note.split())[:120],
        choices=choices if kind == "enum" else (),
        default=default,
        optional=optional,
        nullable=nullable,
    )


async def ask(schema: Any, lines: Lines, default: Any = MISSING, *, label: str = "", optional: bool = False) -> Any:
    """The value for `schema`, asked through `lines`; `default` (e.g. the answer the server
    just refused) is offered for each question. MISSING if optional and left empty.
    Raises EndOfInput if the input ends first."""
    kind, _ = kind_of(schema)
    if kind == "object":
        if default is MISSING and isinstance(schema.get("default"), dict):
            default = schema["default"]  # the object's own default gives its properties theirs
        properties: dict[str, Any] = schema["properties"]
        required = [name for name in schema.get("required") or [] if name in properties]
        value: dict[str, Any] = {}
        for name in required + [name for name in properties if name not in required]:
            given = default.get(name, MISSING) if isinstance(default, dict) else MISSING
            answer = await ask(
                properties[name],
                lines,
                given,
                label=f"{label}.{name}" if label else name,
                optional=name not in required,
            )
            if answer is not MISSING:
                value[name] = answer
        return MISSING if optional and not value and default is MISSING else value
    one = question(schema, label, default, optional)
    while True:
        lines.write(one.text())
        text = await lines.readline()
        if text is None:
            raise EndOfInput
        try:
            return one.answer(text)
        except ValueError as exc:
            lines.write(f"  {exc}\n")


def example(schema: Any) -> Any:
    """A value of the schema's shape, for the `respond` command a non-interactive watch prints."""
    spec = schema if isinstance(schema, dict) else {}
    if "default" in spec:
        return spec["default"]
    kind, _ = kind_of(schema)
    match kind:
        case "enum":
            return spec["enum"][0] if "enum" in spec else spec.get("const")
        case "object":
            properties = spec["properties"]
            names = [name for name in spec.get("required") or [] if name in properties] or list(properties)
            return {name: example(properties[name]) for name in names}
        case "boolean":
            return True
        case "integer" | "number":
            return spec.get("minimum", 0)
        case "string":
            return "..."
    types = spec.get("type")
    return [] if types == "array" else {} if types == "object" else None
