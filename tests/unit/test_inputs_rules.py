"""The rules of inputs by role and groups (`nmdc_runtime.domain.inputs`): every allowed and refused case."""

from __future__ import annotations

import pytest

from nmdc_runtime.domain import inputs as inputs_rules
from nmdc_runtime.domain.errors import InvalidInput

ROLES = {
    "contigs": {"data_type": "contigs", "optional": False},
    "mapping": {"data_type": "bam", "optional": False},
    "annotation": {"data_type": "gff", "optional": True},
}
TYPES = {"dr-c": "contigs", "dr-b": "bam", "dr-g": "gff"}


def test_roles_that_are_identifiers_of_distinct_data_types_with_one_required_are_accepted():
    inputs_rules.check_roles(ROLES)
    inputs_rules.check_roles({"_x9": {"data_type": "a"}})
    assert inputs_rules.data_types_of(ROLES) == ["bam", "contigs", "gff"]


@pytest.mark.parametrize(
    ("roles", "says"),
    [
        ({}, "at least one role"),
        ({"9lives": {"data_type": "a"}}, "identifiers"),
        ({"a-b": {"data_type": "a"}}, "identifiers"),
        ({"a" * 65: {"data_type": "a"}}, "identifiers"),
        ({"a": {"data_type": "t"}, "b": {"data_type": "t"}}, "same data type"),
        ({"a": {"data_type": "t", "optional": True}}, "must be required"),
    ],
)
def test_refused_roles_say_why(roles, says):
    with pytest.raises(ValueError, match=says):
        inputs_rules.check_roles(roles)


def test_data_types_are_read_only_while_a_workflow_has_inputs():
    allowed = [
        (False, {"data_types": ["x"]}),
        (True, {"inputs": None, "data_types": ["x"]}),
        (True, {"inputs": ROLES}),
        (True, {"name": "n"}),
    ]
    for has_inputs, changes in allowed:
        inputs_rules.check_workflow_change(has_inputs=has_inputs, changes=changes)
    for has_inputs, changes in [
        (True, {"data_types": ["x"]}),
        (False, {"inputs": ROLES, "data_types": ["x"]}),
    ]:
        with pytest.raises(InvalidInput) as refused:
            inputs_rules.check_workflow_change(has_inputs=has_inputs, changes=changes)
        assert refused.value.details["field"] == "data_types"


def test_inputs_by_role_fill_the_roles_with_data_of_their_types():
    for given in (
        {"contigs": "dr-c", "mapping": "dr-b"},
        {"contigs": "dr-c", "mapping": "dr-b", "annotation": "dr-g"},
    ):
        inputs_rules.check_job_inputs(roles=ROLES, given=given, data_types=TYPES)
    # None given: unchecked, as data_resource_ids are, whatever the workflow.
    inputs_rules.check_job_inputs(roles=None, given={}, data_types={})


@pytest.mark.parametrize(
    ("roles", "given", "field", "says"),
    [
        (None, {"contigs": "dr-c"}, "inputs", "no inputs by role"),
        (ROLES, {"contigs": "dr-c", "mapping": "dr-b", "reads": "dr-g"}, "inputs", "not a role"),
        (
            ROLES,
            {"contigs": "dr-c", "annotation": "dr-g"},
            "inputs",
            "required roles missing: \\['mapping'\\]",
        ),
        (ROLES, {"contigs": "dr-b", "mapping": "dr-b"}, "inputs.contigs", "takes data type 'contigs'"),
    ],
)
def test_inputs_that_do_not_fit_are_refused_naming_the_field(roles, given, field, says):
    with pytest.raises(InvalidInput, match=says) as refused:
        inputs_rules.check_job_inputs(roles=roles, given=given, data_types=TYPES)
    assert refused.value.details["field"] == field


def test_a_hand_made_job_s_group_is_the_one_given_else_the_one_its_inputs_share():
    assert inputs_rules.job_group(given="g9", input_groups=["g1", "g1"]) == "g9"
    assert inputs_rules.job_group(given=None, input_groups=["g1", "g1"]) == "g1"
    assert inputs_rules.job_group(given=None, input_groups=["g1", "g2"]) is None
    assert inputs_rules.job_group(given=None, input_groups=["g1", None]) is None
    assert inputs_rules.job_group(given=None, input_groups=[]) is None
