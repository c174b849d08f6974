"""`nmdc-runtime ... list`: each help text names the columns the table prints, both from the read schema's
`list_columns` (the integration tests, tests/integration/test_cli.py, print the tables from a database)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from nmdc_runtime.cli import _cell, _print, app
from nmdc_runtime.schemas.accounts import SiteClientRead, SiteRead
from nmdc_runtime.schemas.data import JobRead, WorkflowRead
from nmdc_runtime.schemas.operations import OperationRead


@pytest.mark.parametrize(
    ("command", "model"),
    [
        (["workflows", "list"], WorkflowRead),
        (["sites", "list"], SiteRead),
        (["sites", "clients"], SiteClientRead),
        (["jobs", "list"], JobRead),
        (["operations", "list"], OperationRead),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value.__name__,
)
def test_the_help_names_the_columns_the_table_prints(command, model, capsys):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    named = re.search(r"one tab-separated line each: ([^.]+)\.", text)
    assert named, text
    _print(model, [], as_json=False)
    header = capsys.readouterr().out.rstrip("\n")
    assert named[1] == header.replace("\t", ", ")
    assert "--json" in text


def test_cells_are_readable_and_never_split_the_line():
    assert _cell(["tsv", "fastq"]) == "tsv, fastq"
    assert _cell([]) == ""
    assert _cell(None) == ""
    assert (_cell(True), _cell(False)) == ("true", "false")
    assert _cell({"a": 1}) == '{"a": 1}'
    assert _cell("two\tcolumns\nand lines") == "two columns and lines"
