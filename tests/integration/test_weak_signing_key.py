"""A signing key shorter than 32 bytes, or of 32 bytes with little variety, stops the CLI and the API before they
start anything, the embedded database included (real processes: `nmdc-runtime`, `uvicorn api.main:app`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.processes import BIN, REPO

WEAK = ["weak-signing-key", "k" * 32]
"""Too short; long enough but one byte repeated."""


def environment(home: Path, key: str) -> dict[str, str]:
    """No database URL: a process that got as far as the database would start the embedded server in `home`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NMDC_")}
    return {**clean, "NMDC_HOME": str(home), "NMDC_JWT_SECRET": key}


@pytest.mark.parametrize("key", WEAK, ids=["short", "monotonous"])
def test_the_cli_prints_one_line_and_exits_2(tmp_path: Path, key: str):
    home = tmp_path / "home"
    result = subprocess.run(
        [str(BIN / "nmdc-runtime"), "db", "upgrade"],
        env=environment(home, key),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: invalid settings: NMDC_JWT_SECRET: must be at least 32 bytes, of at least 8 different values; "
        "make one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
    ]
    assert not home.exists()


def test_the_api_does_not_start(tmp_path: Path):
    # The same check of the settings as the CLI's: one weak key shows it runs before the API starts anything.
    home, key = tmp_path / "home", WEAK[0]
    result = subprocess.run(
        [str(BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO,
        env=environment(home, key),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "jwt_secret" in result.stderr and "at least 32 bytes" in result.stderr
    assert key not in result.stderr + result.stdout
    assert not home.exists()
