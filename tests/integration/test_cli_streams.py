"""`nmdc-runtime` as a real process: standard output carries only results, standard error names the database,
an expected failure is one line and exit 1, and NMDC_HOME is the same folder from any working directory."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from nmdc_runtime.config import CHECKOUT, Settings
from nmdc_runtime.db import Database
from tests.integration.test_cli import CLI, run_process


def _named(settings: Settings) -> str:
    """How the CLI names this run's database on standard error (the test URLs carry no password)."""
    return f"database: {settings.database_url}"


@pytest.fixture
def url_env(settings: Settings, clean_database: Database) -> dict[str, str]:
    """This run's databases by URL, and no NMDC_HOME: the CLI finds its state folder on its own."""
    return {
        "NMDC_DATABASE_URL": settings.database_url,
        "NMDC_DAGSTER_DATABASE_URL": settings.dagster_database_url,
    }


def _run_in(folder: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NMDC_")}
    return subprocess.run(
        CLI + args, cwd=folder, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def test_commands_name_their_database_on_stderr_and_print_only_results(url_env, settings):
    upgraded = run_process(["db", "upgrade"], url_env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout == ""
    assert _named(settings) in upgraded.stderr

    created = run_process(["sites", "create", "site-e"], url_env)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["site_id"] == "site-e"  # the whole of standard output is one object
    assert _named(settings) in created.stderr


def test_env_output_can_be_evaluated_from_another_folder_and_names_the_checkouts_home(
    url_env, settings, tmp_path
):
    """Run from an unrelated folder without NMDC_HOME, the CLI still uses the checkout's .nmdc."""
    script = f'eval "$({shlex.join(CLI)} env)" && echo "$NMDC_HOME" && echo "$NMDC_DATABASE_URL"'
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NMDC_")}
    result = subprocess.run(
        ["sh", "-c", script],
        cwd=tmp_path,
        env={**clean, **url_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(CHECKOUT / ".nmdc"), settings.database_url]
    assert _named(settings) in result.stderr


def test_a_relative_nmdc_home_means_the_folder_it_was_given_in(url_env, tmp_path):
    result = _run_in(tmp_path, ["env"], {**url_env, "NMDC_HOME": "state"})
    assert result.returncode == 0, result.stderr
    assert f"export NMDC_HOME='{tmp_path / 'state'}'" in result.stdout.splitlines()
    assert f"export DAGSTER_HOME='{tmp_path / 'state' / 'dagster'}'" in result.stdout.splitlines()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"NMDC_DATABASE_URL": "postgresql://nobody:s3cret-pw@127.0.0.1:1/nmdc"},
            "error: cannot reach the database: ",
        ),
        (
            {"NMDC_DATABASE_URL": "mysql://nobody:s3cret-pw@127.0.0.1/nmdc"},
            "error: invalid settings: NMDC_DATABASE_URL",
        ),
        ({"NMDC_CLAIM_LEASE_SECONDS": "0"}, "error: invalid settings: NMDC_CLAIM_LEASE_SECONDS"),
    ],
    ids=["unreachable", "not-postgresql", "bad-setting"],
)
def test_expected_failures_are_one_line_on_stderr_and_exit_1(env, expected, tmp_path):
    result = run_process(["sites", "create", "site-e"], {"NMDC_HOME": str(tmp_path), **env})
    # Settings the environment gets wrong are bad usage (2); a database that does not answer is a failure (1).
    assert result.returncode == (2 if "invalid settings" in expected else 1), result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected), result.stderr
    assert "s3cret-pw" not in result.stderr
