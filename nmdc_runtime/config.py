"""Settings: one class, read from `NMDC_*` environment variables."""

from __future__ import annotations

import os
import secrets
import time
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nmdc_runtime.domain.policy import Policy

MIN_JWT_SECRET_BYTES = 32
"""The shortest signing key accepted: HS256 wants a key at least as long as its 256-bit hash."""


class Settings(BaseSettings):
    """Runtime settings. Every field is `NMDC_<FIELD>` in the environment."""

    # Refused values stay out of error messages and logs: a rejected key or URL may still be someone's secret.
    model_config = SettingsConfigDict(
        env_prefix="NMDC_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    home: Path = Field(Path(".nmdc"), description="State folder: embedded PostgreSQL data, JWT secret, logs.")
    database_url: str | None = Field(
        None, description="External PostgreSQL for the runtime. Unset: the embedded server under NMDC_HOME."
    )
    dagster_database_url: str | None = Field(
        None,
        description="Dagster's own storage. Unset: a database named `<runtime db>_dagster` on the same server.",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="Key that signs access tokens, at least 32 bytes. Unset: generated once and kept in "
        "NMDC_HOME (mode 0600).",
    )
    claim_lease_seconds: int = Field(
        300, gt=0, description="How long a claim lasts without a heartbeat, for workflows that set none."
    )
    max_lease_seconds: int = Field(
        86400, gt=0, description="The longest lease a workflow may give its claims (`lease_seconds`)."
    )
    operation_retention_seconds: int = Field(
        30 * 24 * 3600, ge=0, description="How long a finished operation is kept before it may be deleted."
    )
    idempotency_retention_seconds: int = Field(
        24 * 3600, ge=0, description="How long an Idempotency-Key is remembered; a later repeat runs afresh."
    )
    max_attempts: int = Field(3, ge=1, description="Claims a job may use up before it is marked failed.")
    token_expire_seconds: int = Field(3600, gt=0, description="Lifetime of an access token.")
    api_port: int = Field(8000, gt=0, lt=65536, description="Port of the REST API under `make dev`.")
    api_workers: int = Field(
        2, ge=1, le=64, description="uvicorn worker processes of the API under `make dev`."
    )
    dagster_port: int = Field(3000, gt=0, lt=65536, description="Port of the Dagster UI under `make dev`.")
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="Largest request body the API accepts.")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Dagster subprocesses and uvicorn workers may run elsewhere; fix the folder once.
        return value.expanduser().resolve()

    @field_validator("jwt_secret")
    @classmethod
    def _long_signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        # A short key can be found by brute force offline from any one token, and then forges them all.
        if value is not None and len(value.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(
                f"must be at least {MIN_JWT_SECRET_BYTES} bytes; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        return value

    def policy(self) -> Policy:
        """The numbers the rules run on."""
        return Policy(
            claim_lease_seconds=self.claim_lease_seconds,
            max_lease_seconds=self.max_lease_seconds,
            operation_retention_seconds=self.operation_retention_seconds,
            idempotency_retention_seconds=self.idempotency_retention_seconds,
            max_attempts=self.max_attempts,
        )

    def jwt_key(self) -> str:
        """The token signing key: the configured one, else one kept in NMDC_HOME."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        path = self.home / "jwt_secret"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            # O_EXCL: when two processes race on first start, one writes and both read the same key.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
        key = ""
        for _ in range(50):
            # A racing first writer may not have written yet.
            key = path.read_text().strip()
            if key:
                break
            time.sleep(0.02)
        if len(key.encode()) < MIN_JWT_SECRET_BYTES:
            raise RuntimeError(
                f"{path} holds a key shorter than {MIN_JWT_SECRET_BYTES} bytes: delete it or set NMDC_JWT_SECRET"
            )
        return key


def settings_problem(error: ValidationError) -> str:
    """One line naming each environment variable whose value the settings refuse, and why."""
    problems = []
    for item in error.errors():
        name = "NMDC_" + "_".join(str(part) for part in item["loc"]).upper()
        problems.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment: for entry points only (the CLI, `api.main:app`,
    the Dagster definitions), which pass them down explicitly."""
    return Settings()
