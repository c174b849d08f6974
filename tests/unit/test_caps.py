"""The one cap rule on site-stored JSON objects, as execution details use it (operation metadata's own
cases are in test_operation_rules.py)."""

from __future__ import annotations

import functools

import pytest

from nmdc_runtime.domain import executions as executions_rules
from nmdc_runtime.domain.caps import check_cap, json_size
from nmdc_runtime.domain.errors import InvalidInput

MAX_BYTES = 64 * 1024
_check_details = functools.partial(executions_rules.check_details, max_bytes=MAX_BYTES)
_merged_details = functools.partial(executions_rules.merged_details, max_bytes=MAX_BYTES)


def test_json_size_counts_compact_utf8_bytes():
    assert json_size({}) == 2
    assert json_size({"a": [1, 2]}) == len('{"a":[1,2]}')
    assert json_size({"a": "é"}) == len('{"a":""}') + 2


def test_a_cap_refuses_growth_past_it_and_names_the_field():
    check_cap("thing", {}, {"a": 1, "b": 2}, max_keys=2, max_bytes=100)
    with pytest.raises(InvalidInput) as caught:
        check_cap("thing", {}, {"a": 1, "b": 2, "c": 3}, max_keys=2, max_bytes=100)
    assert caught.value.details == {"field": "thing", "location": "body"}
    assert "3 keys; at most 2" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        check_cap("thing", {}, {"a": "x" * 100}, max_keys=2, max_bytes=100)
    assert "at most 100 are allowed" in caught.value.message


def test_a_change_that_leaves_an_object_over_a_cap_no_bigger_is_accepted():
    big = {"a": "x" * 200, "b": 1, "c": 2}
    check_cap("thing", big, big, max_keys=2, max_bytes=100)
    check_cap("thing", big, {"a": "x" * 150, "b": 1}, max_keys=2, max_bytes=100)
    with pytest.raises(InvalidInput):
        check_cap("thing", big, {"a": "x" * 201, "b": 1, "c": 2}, max_keys=2, max_bytes=100)
    with pytest.raises(InvalidInput):
        check_cap("thing", big, {"a": "x", "b": 1, "c": 2, "d": 3}, max_keys=2, max_bytes=100)


def test_new_execution_details_are_capped_in_keys_and_bytes():
    _check_details({f"k{i}": i for i in range(executions_rules.MAX_DETAILS_KEYS)})
    with pytest.raises(InvalidInput) as caught:
        _check_details({f"k{i}": i for i in range(executions_rules.MAX_DETAILS_KEYS + 1)})
    assert caught.value.details["field"] == "details"
    fits = "x" * (MAX_BYTES - len('{"log":""}'))
    _check_details({"log": fits})
    with pytest.raises(InvalidInput):
        _check_details({"log": fits + "x"})


def test_corrections_are_capped_on_the_merge_and_may_always_shrink():
    half = "x" * (MAX_BYTES // 2)
    stored = _merged_details({}, {"a": half})
    # Each correction is small enough; the merge is not.
    with pytest.raises(InvalidInput) as caught:
        _merged_details(stored, {"b": half})
    assert caught.value.details["field"] == "details"
    assert _merged_details(stored, {"a": None, "b": half}) == {"b": half}
    over = {"a": half, "b": half, "c": half}
    assert _merged_details(over, {"c": None}) == {"a": half, "b": half}
    with pytest.raises(InvalidInput):
        _merged_details(over, {"d": 1})
