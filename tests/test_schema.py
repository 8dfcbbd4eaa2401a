"""Input schemas: defaults filled in, and errors that name the field and the reason."""

from __future__ import annotations

import pytest

from server import InvalidInput, Step, Workflow
from server.examples import count
from server.schema import checker, validate

ORDER = {
    "type": "object",
    "required": ["item"],
    "additionalProperties": False,
    "properties": {
        "item": {"type": "string", "minLength": 1, "maxLength": 10},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
        "size": {"enum": ["S", "M", "L"], "default": "M"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "gift": {"type": ["boolean", "null"]},
    },
}


def test_defaults_are_filled_in() -> None:
    assert validate(ORDER, {"item": "tea"}) == {"item": "tea", "quantity": 1, "size": "M"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({}, "field 'item' is required"),
        ({"item": 7}, "field 'item' must be a string, got 7"),
        ({"item": ""}, "field 'item' must have at least 1 characters"),
        ({"item": "tea", "quantity": 9}, "field 'quantity' must be at most 5, got 9"),
        ({"item": "tea", "quantity": True}, "field 'quantity' must be an integer, got True"),
        ({"item": "tea", "size": "XL"}, "field 'size' must be one of ['S', 'M', 'L'], got 'XL'"),
        ({"item": "tea", "tags": ["a", 2]}, "field 'tags[1]' must be a string, got 2"),
        ({"item": "tea", "tags": ["a", "b", "c"]}, "field 'tags' must have at most 2 items"),
        ({"item": "tea", "gift": "yes"}, "field 'gift' must be a boolean or a null, got 'yes'"),
        ({"item": "tea", "colour": "red"}, "the input has unknown fields ['colour']"),
        ([1], "the input must be an object, got [1]"),
    ],
)
def test_errors_name_the_field_and_why(value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate(ORDER, value)
    assert message in info.value.message


def test_nested_paths_and_null_input() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "number"}}}}}
    with pytest.raises(InvalidInput, match=r"field 'a\.b' must be a number"):
        validate(schema, {"a": {"b": "x"}})
    with pytest.raises(InvalidInput, match="must be a number"):
        validate(schema, {"a": {"b": float("nan")}})
    assert checker({"type": "object", "properties": {"n": {"default": 3}}})(None) == {"n": 3}


def test_workflow_declares_its_schema() -> None:
    wf = Workflow("order", [Step("s", lambda si: si.input)], input_schema=ORDER)
    assert wf.describe()["input_schema"] == ORDER
    assert wf.checked_input({"item": "tea"})["quantity"] == 1
    with pytest.raises(InvalidInput, match="'item' is required"):
        wf.checked_input({})
    assert count.describe()["input_schema"]["properties"]["n"]["default"] == 3
