"""Input schemas: defaults filled in, and errors that name the field and the reason."""

from __future__ import annotations

import pytest

from server import InvalidInput, Step, Workflow
from server.examples import count
from server.workflow.schema import checker, validate

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
        ({"item": ""}, "field 'item' must be longer than or equal to 1 characters"),
        ({"item": "tea", "quantity": 9}, "field 'quantity' must be smaller than or equal to 5, got 9"),
        ({"item": "tea", "quantity": True}, "field 'quantity' must be an integer, got True"),
        ({"item": "tea", "size": "XL"}, "field 'size' must be one of ['S', 'M', 'L'], got 'XL'"),
        ({"item": "tea", "tags": ["a", 2]}, "field 'tags[1]' must be a string, got 2"),
        ({"item": "tea", "tags": ["a", "b", "c"]}, "field 'tags' must contain less than or equal to 2 items"),
        ({"item": "tea", "gift": "yes"}, "field 'gift' must be a boolean or a null, got 'yes'"),
        ({"item": "tea", "colour": "red"}, "the input must not contain {'colour'} properties"),
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
    nested = {"type": "object", "required": ["a"], "properties": {"a": {"type": "object", "required": ["b"]}}}
    with pytest.raises(InvalidInput, match=r"field 'a\.b' is required"):
        validate(nested, {"a": {}})
    assert checker({"type": "object", "properties": {"n": {"default": 3}}})(None) == {"n": 3}


def test_the_callers_value_is_not_changed() -> None:
    value = {"item": "tea"}
    assert validate(ORDER, value)["quantity"] == 1
    assert value == {"item": "tea"}


def test_a_schema_that_is_not_json_schema_is_refused_when_the_workflow_is_made() -> None:
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        Workflow("w", [Step("s", lambda si: None)], input_schema={"type": "no-such-type"})


def test_workflow_declares_its_schema() -> None:
    wf = Workflow("order", [Step("s", lambda si: si.input)], input_schema=ORDER)
    assert wf.describe()["input_schema"] == ORDER
    assert wf.checked_input({"item": "tea"})["quantity"] == 1
    with pytest.raises(InvalidInput, match="'item' is required"):
        wf.checked_input({})
    assert count.describe()["input_schema"]["properties"]["n"]["default"] == 3
