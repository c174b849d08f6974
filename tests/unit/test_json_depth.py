"""The checks on a JSON body before any route reads it: UTF-8, readable, and at most so deep, with the field
named, at any depth and without recursion."""

from __future__ import annotations

import json

import pytest

from api.middleware import json_body_problem

DEEP = "JSON nested deeper than 32 levels"


def nested(depth: int) -> str:
    """A JSON object `depth` levels deep under the key `details` (the body itself is level 1)."""
    return '{"details": ' + '{"a": ' * (depth - 2) + "{}" + "}" * (depth - 2) + "}"


@pytest.mark.parametrize("text", ["{}", "[]", '"text"', "7", nested(2), nested(31), nested(32)])
def test_bodies_up_to_the_bound_pass(text):
    json.loads(text)
    assert json_body_problem(text.encode(), 32) is None


@pytest.mark.parametrize("depth", [33, 300, 5000, 400_000])
def test_deeper_bodies_name_their_field_at_any_depth(depth):
    assert json_body_problem(nested(depth).encode(), 32) == (["body", "details"], DEEP, "json_too_deep")


def test_the_field_named_is_the_one_that_nests():
    shallow_first = '{"a": [1, {"b": 2}], "z": ' + "[" * 40 + "]" * 40 + "}"
    assert json_body_problem(shallow_first.encode(), 32)[0] == ["body", "z"]
    array = "[1, [2], " + "[" * 40 + "]" * 40 + "]"
    assert json_body_problem(array.encode(), 32)[0] == ["body", 2]
    # Too deep for the parser itself (a scan of the text finds the field then).
    array = "[1, [2], " + "[" * 5000 + "]" * 5000 + "]"
    assert json_body_problem(array.encode(), 32)[0] == ["body", 2]
    assert json_body_problem(b"[" * 1_000_000, 32) == (["body", 0], DEEP, "json_too_deep")


def test_brackets_and_escaped_quotes_inside_strings_do_not_count():
    text = '{"k\\"{[": "[[[[{{{{\\"", "deep": ' + "[" * 30 + "]" * 30 + "}"
    json.loads(text)
    assert json_body_problem(text.encode(), 31) is None
    assert json_body_problem(text.encode(), 30)[0] == ["body", "deep"]
    scanned = '{"k\\"{[": "[[[[{{{{\\"", "deep": ' + "[" * 5000 + "]" * 5000 + "}"
    assert json_body_problem(scanned.encode(), 30)[0] == ["body", "deep"]


def test_a_body_that_is_not_utf8_or_that_the_parser_refuses_is_named_as_the_body():
    assert json_body_problem(b'{"name": "caf\xe9"}', 32) == (
        ["body"],
        "the body is not UTF-8 (byte 13)",
        "json_invalid",
    )
    # Valid JSON, but an integer longer than the parser reads.
    loc, message, kind = json_body_problem(b'{"size": 1' + b"0" * 5000 + b"}", 32)
    assert (loc, kind) == (["body"], "json_invalid")
    assert "4300 digits" in message


def test_text_that_is_not_json_is_left_to_the_route():
    for text in (b"", b"{", b'{"a": [}', b"not json"):
        assert json_body_problem(text, 32) is None
