"""Workflows with inputs by role, and groups of data: the rules the API and the sensor share.

A workflow may name its inputs by role (`{"contigs": {"data_type": "contigs"}, "reads": {...}}`) instead of
listing data types. Its jobs are then made per *group* (the sample, or data generation, that data resources
belong to, whichever site hosts them): one job per (workflow, group) once the group has a data resource of
every required role's data type, the first registered of each winning. Its `data_types` are its roles' (read
only). The sensor applies these rules in SQL (`nmdc_runtime.store.pipeline`); what a request sends is checked
here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from nmdc_runtime.domain.errors import InvalidInput

ROLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
"""A role is an identifier: it names an input in `config.inputs` and in a command template (`{inputs.ROLE}`)."""
MAX_ROLES = 64
MAX_GROUP_LENGTH = 256
"""The longest group name (characters)."""


def check_roles(inputs: Mapping[str, Mapping[str, Any]]) -> None:
    """ValueError unless the roles are identifiers of distinct data types, at least one of them required.

    One required role at least: a job whose inputs are all optional would be made from whatever arrived
    first, its inputs a matter of timing.
    """
    if not inputs:
        raise ValueError("name at least one role, or leave `inputs` out")
    bad = [role for role in inputs if not re.fullmatch(ROLE_PATTERN, role)]
    if bad:
        raise ValueError(f"role names are identifiers (letters, digits, _; not starting with a digit): {bad}")
    seen: dict[str, str] = {}
    for role, spec in inputs.items():
        other = seen.setdefault(spec["data_type"], role)
        if other != role:
            raise ValueError(f"roles {other!r} and {role!r} have the same data type {spec['data_type']!r}")
    if all(spec.get("optional") for spec in inputs.values()):
        raise ValueError("at least one role must be required (optional: false)")


def data_types_of(inputs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The data types a workflow with these roles accepts: its (read-only) `data_types`."""
    return sorted({spec["data_type"] for spec in inputs.values()})


def check_workflow_change(*, has_inputs: bool, changes: Mapping[str, Any]) -> None:
    """InvalidInput when a change sets `data_types` of a workflow whose roles decide them."""
    keeps_inputs = changes["inputs"] is not None if "inputs" in changes else has_inputs
    if keeps_inputs and "data_types" in changes:
        raise InvalidInput(
            "data_types are those of the workflow's inputs: change `inputs` instead",
            field="data_types",
            location="body",
        )


def check_job_inputs(
    *,
    roles: Mapping[str, Mapping[str, Any]] | None,
    given: Mapping[str, str],
    data_types: Mapping[str, str],
) -> None:
    """InvalidInput unless `given` (role → data resource id) fills the workflow's `roles`: every role known,
    every required one given, each data resource (`data_types`: id → its data type) of its role's type."""
    if not given:
        return
    if not roles:
        raise InvalidInput("this workflow has no inputs by role", field="inputs", location="body")
    unknown = sorted(set(given) - set(roles))
    if unknown:
        raise InvalidInput(
            f"not a role of this workflow: {unknown} (its roles: {sorted(roles)})",
            field="inputs",
            location="body",
        )
    missing = sorted(role for role, spec in roles.items() if not spec.get("optional") and role not in given)
    if missing:
        raise InvalidInput(f"required roles missing: {missing}", field="inputs", location="body")
    for role, data_resource_id in given.items():
        expected, actual = roles[role]["data_type"], data_types[data_resource_id]
        if actual != expected:
            raise InvalidInput(
                f"role {role!r} takes data type {expected!r}; {data_resource_id} is {actual!r}",
                field=f"inputs.{role}",
                location="body",
            )


def shared_group(groups: Iterable[str | None]) -> str | None:
    """The group every input belongs to; None when they belong to none, to several, or there are none."""
    found = set(groups)
    return next(iter(found)) if len(found) == 1 else None


def job_group(*, given: str | None, input_groups: Iterable[str | None]) -> str | None:
    """A job made by hand belongs to the group given, else to the group its inputs share, else to none."""
    return given if given is not None else shared_group(input_groups)
