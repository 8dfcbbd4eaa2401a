"""Every frame a test receives from a server is checked against docs/asyncapi.yaml.

`check(frame)` validates one frame (a parsed JSON object) against the payload schema of the
server message of its `type` (compiled once with fastjsonschema), so that the description
cannot drift from the server: a new field, a new type or a changed shape fails the test
that met it, naming the frame. tests/harness.Client calls it on everything it receives.
tests/test_asyncapi.py also checks the document itself with the AsyncAPI parser, and
frames with ajv, in Node."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import yaml

DOC = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"


@cache
def document() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(DOC.read_text())
    return spec


@cache
def _validators() -> dict[str, Callable[[Any], Any]]:
    """A compiled validator per server message `type`. The Event schema's per-event rules
    (`allOf` of if/then on `event`) are split off into _data_rules: the same rules, applied
    by looking the event name up instead of trying sixteen `if`s (6x faster per event, and
    the suite receives hundreds of thousands)."""
    spec = document()
    components = copy.deepcopy(spec["components"])
    components["schemas"]["Event"].pop("allOf")
    validators = {}
    for ref in spec["operations"]["sendServerFrames"]["messages"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        root = {"$ref": f"#/components/messages/{name}/payload", "components": components}
        payload = components["messages"][name]["payload"]
        if "$ref" in payload:  # `event`: the Event schema
            payload = components["schemas"][payload["$ref"].rsplit("/", 1)[-1]]
        validators[payload["properties"]["type"]["const"]] = fastjsonschema.compile(root)
    return validators


@cache
def _data_rules() -> dict[str, Callable[[Any], Any]]:
    """Event name -> the `then` of the Event schema's rule for it."""
    rules = document()["components"]["schemas"]["Event"]["allOf"]
    return {rule["if"]["properties"]["event"]["const"]: fastjsonschema.compile(rule["then"]) for rule in rules}


def server_types() -> set[str]:
    """The `type` of every message the server may send, as the document says."""
    return set(_validators())


def check(frame: Any) -> None:
    """Raise AssertionError unless `frame` is a server message the document describes."""
    kind = frame.get("type") if isinstance(frame, dict) else None
    validate = _validators().get(kind) if isinstance(kind, str) else None
    if validate is None:
        raise AssertionError(f"docs/asyncapi.yaml has no server message of type {kind!r}: {str(frame)[:500]}") from None
    try:
        validate(frame)
        rules = _data_rules()
        for event in frame["events"] if kind == "events" else [frame] if kind == "event" else []:
            rule = rules.get(event["event"])
            if rule is not None:
                rule(event)
    except fastjsonschema.JsonSchemaValueException as exc:
        why = f"a {kind!r} frame does not match docs/asyncapi.yaml ({exc.message})"
        raise AssertionError(f"{why}: {str(frame)[:500]}") from None
