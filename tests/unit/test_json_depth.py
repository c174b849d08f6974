"""The depth scan of JSON bodies: where a body first nests deeper than the bound, without recursion."""

from __future__ import annotations

import json

import pytest

from api.middleware import too_deep


def nested(depth: int) -> str:
    """A JSON object `depth` levels deep under the key `details` (the body itself is level 1)."""
    return '{"details": ' + '{"a": ' * (depth - 2) + "{}" + "}" * (depth - 2) + "}"


@pytest.mark.parametrize("depth", [1, 2, 31, 32])
def test_bodies_up_to_the_bound_pass(depth):
    text = nested(depth) if depth > 1 else "{}"
    assert json.loads(text) is not None
    assert too_deep(text, 32) is None


def test_the_first_level_past_the_bound_is_found_with_its_path():
    assert too_deep(nested(33), 32) == ["details"] + ["a"] * 31
    assert too_deep('{"a": {"b": {"c": {}}}, "z": 1}', 3) == ["a", "b", "c"]
    assert too_deep('{"a": {"b": 1}, "z": [[0, [[]]]]}', 3) == ["z", 0, 1]
    assert too_deep("[" * 40 + "]" * 40, 32) == [0] * 32


def test_brackets_and_escaped_quotes_inside_strings_do_not_count():
    text = '{"k\\"{[": "[[[[{{{{\\"", "deep": ' + "[" * 30 + "]" * 30 + "}"
    assert json.loads(text)
    assert too_deep(text, 31) is None
    assert too_deep(text, 30) == ["deep"] + [0] * 29


def test_any_depth_is_measured_without_recursion():
    assert too_deep("[" * 1_000_000, 32) == [0] * 32
    assert too_deep('{"x": ' + "[" * 1_000_000, 32) == ["x"] + [0] * 31
