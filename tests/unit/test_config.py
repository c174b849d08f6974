"""Settings and database URL resolution."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from nmdc_runtime.config import CHECKOUT, MIN_JWT_SECRET_BYTES, Settings, default_home, settings_problem
from nmdc_runtime.db import DatabaseURLs, database_name, normalize_url, resolve_urls, with_database


def test_defaults_match_the_readme(monkeypatch, tmp_path):
    for name in ("NMDC_HOME", "NMDC_DATABASE_URL", "NMDC_DAGSTER_DATABASE_URL", "NMDC_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    # A checkout's own .nmdc, whatever the working directory.
    assert settings.home == CHECKOUT / ".nmdc" and (CHECKOUT / "pyproject.toml").exists()
    assert settings.database_url is None and settings.dagster_database_url is None
    assert settings.database_timeout_seconds == 1.5
    assert (settings.claim_lease_seconds, settings.operation_retention_seconds, settings.max_attempts) == (
        300,
        30 * 24 * 3600,
        3,
    )
    assert (settings.api_port, settings.dagster_port, settings.api_workers) == (8000, 3000, 2)


def test_environment_overrides_with_the_nmdc_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("NMDC_CLAIM_LEASE_SECONDS", "7")
    monkeypatch.setenv("NMDC_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("NMDC_HOME", str(tmp_path / "state"))
    settings = Settings()
    assert (settings.claim_lease_seconds, settings.max_attempts, settings.home) == (7, 5, tmp_path / "state")


def test_outside_a_checkout_the_default_home_is_the_users_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_home(tmp_path) == tmp_path / "data" / "nmdc-runtime"
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')
    assert default_home(tmp_path) == tmp_path / "data" / "nmdc-runtime"
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "nmdc-runtime"\n')
    assert default_home(tmp_path) == tmp_path / ".nmdc"


def test_a_relative_home_is_resolved_once_against_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NMDC_HOME", "state")
    settings = Settings()
    monkeypatch.chdir("/")
    assert settings.home == tmp_path / "state"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:p@h/db",
        "sqlite:///x.db",
        "postgresql+psycopg://u@h/db",
        "nonsense",
        "postgresql://u@h:port/db",
    ],
)
def test_database_urls_other_than_postgresql_with_psycopg2_are_refused_without_echoing_them(url):
    with pytest.raises(ValidationError) as refused:
        Settings(database_url="postgresql://u@h/db", dagster_database_url=url)
    assert [error["loc"] for error in refused.value.errors()] == [("dagster_database_url",)]
    assert all(url not in error["msg"] for error in refused.value.errors())


def test_an_empty_database_url_means_unset():
    assert Settings(database_url="", dagster_database_url="").database_url is None


def test_nonsense_values_are_refused(monkeypatch):
    monkeypatch.setenv("NMDC_CLAIM_LEASE_SECONDS", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_jwt_secret_is_generated_once_and_kept_private(tmp_path: Path):
    settings = Settings(home=tmp_path)
    key = settings.jwt_key()
    assert len(key) >= 32
    assert Settings(home=tmp_path).jwt_key() == key
    mode = stat.S_IMODE((tmp_path / "jwt_secret").stat().st_mode)
    assert mode == 0o600


def test_configured_jwt_secret_wins(tmp_path: Path):
    key = "from-the-environment-" + "k" * 11
    assert Settings(home=tmp_path, jwt_secret=key).jwt_key() == key
    assert not (tmp_path / "jwt_secret").exists()


def test_a_signing_key_shorter_than_32_bytes_or_monotonous_is_refused_by_name_without_echoing_it(monkeypatch):
    # Bytes, not characters: sixteen varied two-byte characters are long enough, 31 ASCII ones are not.
    varied = "éèêëàâäôöûüùçîïœ"
    assert Settings(jwt_secret=varied).jwt_key() == varied
    # Hex, the least varied of the usual random keys, has 16 values: well above the bound.
    assert Settings(jwt_secret="0123456789abcdef" * 2).jwt_key() == "0123456789abcdef" * 2
    long_but_dull = [
        "x" * 64,  # one byte repeated
        "é" * 16,  # 32 bytes, two values
        "abcdefg" * 5,  # 35 bytes, seven values: one short of the bound
    ]
    lines = set()
    for weak in ("tiny-key", "x" * (MIN_JWT_SECRET_BYTES - 1), varied[:15], *long_but_dull):
        monkeypatch.setenv("NMDC_JWT_SECRET", weak)
        with pytest.raises(ValidationError) as caught:
            Settings()
        line = settings_problem(caught.value)
        assert line.startswith("NMDC_JWT_SECRET: must be at least 32 bytes")
        assert "\n" not in line
        assert weak not in str(caught.value)
        lines.add(line)
    assert len(lines) == 1  # short or dull, the same message


@pytest.mark.parametrize("kept", ["short", "z" * 48], ids=["short", "monotonous"])
def test_a_weak_key_kept_in_nmdc_home_is_refused(tmp_path: Path, kept: str):
    (tmp_path / "jwt_secret").write_text(kept + "\n")
    with pytest.raises(RuntimeError, match="shorter than 32 bytes or of fewer than 8 different values"):
        Settings(home=tmp_path).jwt_key()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg2://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
    ],
)
def test_urls_are_pinned_to_psycopg2(given, expected):
    assert normalize_url(given) == expected


def test_dagster_database_is_derived_from_the_runtime_url_on_the_same_server():
    settings = Settings(database_url="postgresql://u:p@db.example:5433/runtime?sslmode=require")
    urls = resolve_urls(settings, create=False)
    assert urls == DatabaseURLs(
        runtime="postgresql+psycopg2://u:p@db.example:5433/runtime?sslmode=require",
        dagster="postgresql+psycopg2://u:p@db.example:5433/runtime_dagster?sslmode=require",
    )


def test_explicit_dagster_url_is_kept():
    settings = Settings(database_url="postgresql://h/a", dagster_database_url="postgresql://other/b")
    assert resolve_urls(settings, create=False).dagster == "postgresql+psycopg2://other/b"


def test_socket_urls_keep_their_host_parameter():
    url = "postgresql+psycopg2://postgres:@/nmdc?host=/srv/.nmdc/pg"
    assert (
        with_database(url, "nmdc_dagster")
        == "postgresql+psycopg2://postgres:@/nmdc_dagster?host=/srv/.nmdc/pg"
    )
    assert database_name(url) == "nmdc"
