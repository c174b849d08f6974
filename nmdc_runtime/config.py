"""Settings: one class, read from `NMDC_*` environment variables."""

from __future__ import annotations

import ipaddress
import os
import secrets
import time
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from nmdc_runtime.domain.policy import Policy

PROJECT = "nmdc-runtime"
POSTGRESQL_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")
CHECKOUT = Path(__file__).resolve().parents[1]
"""The folder holding the `nmdc_runtime` package: the project root when the runtime runs from a checkout."""


def default_home(root: Path = CHECKOUT) -> Path:
    """NMDC_HOME when it is not set, the same whatever the working directory: `.nmdc` in the project root when
    `root` is a checkout of this project (it holds this project's pyproject.toml), else the user's data folder
    (`~/.local/share/nmdc-runtime` on Linux)."""
    try:
        name = tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        name = None
    return root / ".nmdc" if name == PROJECT else platformdirs.user_data_path(PROJECT)


MIN_JWT_SECRET_BYTES = 32
"""The shortest signing key accepted: HS256 wants a key at least as long as its 256-bit hash."""
MIN_JWT_SECRET_DISTINCT_BYTES = 8
"""The fewest distinct byte values a signing key may have: 32 bytes of one or two repeated values (`xxxx…`,
`abab…`) are as guessable as a short key. Any random key has far more (hex alone has 16)."""
WEAK_JWT_SECRET = (
    f"must be at least {MIN_JWT_SECRET_BYTES} bytes, of at least {MIN_JWT_SECRET_DISTINCT_BYTES} different "
    "values; make one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
)


def weak_signing_key(key: str) -> bool:
    """Whether a signing key is too short, or has too little variety to be a secret."""
    data = key.encode()
    return len(data) < MIN_JWT_SECRET_BYTES or len(set(data)) < MIN_JWT_SECRET_DISTINCT_BYTES


class Settings(BaseSettings):
    """Runtime settings. Every field is `NMDC_<FIELD>` in the environment."""

    # Refused values stay out of error messages and logs: a rejected key or URL may still be someone's secret.
    model_config = SettingsConfigDict(
        env_prefix="NMDC_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    home: Path = Field(
        default_factory=default_home,
        description="State folder: embedded PostgreSQL data, JWT secret, logs. Unset: `default_home()`.",
    )
    database_url: str | None = Field(
        None, description="External PostgreSQL for the runtime. Unset: the embedded server under NMDC_HOME."
    )
    dagster_database_url: str | None = Field(
        None,
        description="Dagster's own storage. Unset: a database named `<runtime db>_dagster` on the same server.",
    )
    listen_database_url: str | None = Field(
        None,
        description="Where each API process LISTENs for jobs becoming claimable: a session connection to the "
        "runtime's database (not PgBouncer's transaction mode). Unset: NMDC_DATABASE_URL (or the embedded one).",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="Key that signs access tokens, at least 32 bytes of 8 different values. Unset: generated "
        "once and kept in NMDC_HOME (mode 0600).",
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
    site_drain_after: int = Field(
        3,
        ge=1,
        le=1000,
        description="A site whose last this many judged operations in a row each failed at the site is drained: "
        "it claims no new job until staff or its admin lift it.",
    )
    cancel_grace_seconds: int = Field(
        60,
        ge=0,
        description="The longest an operation's lease lasts after a cancel is requested: heartbeats no longer "
        "renew it, and its access grants are refused at once.",
    )
    grant_seconds: int = Field(
        300, gt=0, description="The longest an access grant lasts (never past the holder's lease)."
    )
    max_executions_per_operation: int = Field(
        10, ge=1, description="Executions one claim (operation) may record; more get 409."
    )
    max_page_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="A list page ends early once its items reach this many bytes; next_page_token continues.",
    )
    max_metadata_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="The most bytes (compact UTF-8 JSON) of an operation's site-supplied metadata and of an "
        "execution's details.",
    )
    token_expire_seconds: int = Field(3600, gt=0, description="Lifetime of an access token.")
    token_issuer: str = Field(
        "nmdc-runtime", min_length=1, description="`iss` of the access tokens; the same on every replica."
    )
    revocation_refresh_seconds: float = Field(
        15.0,
        gt=0,
        le=60,
        description="How often each API process reloads revoked clients and disabled accounts: the longest "
        "an existing token keeps working after a revocation made through another process.",
    )
    login_max_failures: int = Field(
        10, ge=1, description="Failed POST /token attempts per (client id or username, address) per window."
    )
    login_max_failures_per_address: int = Field(
        100, ge=1, description="Failed POST /token attempts per source address per window."
    )
    login_failure_window_seconds: int = Field(
        300, ge=1, description="The window over which failed POST /token attempts are counted."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks (comma-separated) of proxies whose X-Forwarded-For is believed.",
    )
    hash_concurrency: int = Field(
        2,
        ge=1,
        le=64,
        description="Password and secret checks (64 MiB of argon2 each) run at once per process.",
    )
    login_queue_limit: int = Field(
        32, ge=0, description="POST /token requests that may wait for a check; more get 429 at once."
    )
    max_waiters: int = Field(
        1000,
        ge=0,
        description="Requests that may wait at once in each API process (POST /jobs:claimNext with a "
        "wait_seconds, GET /operations/{op_id}:wait); past it they get 429.",
    )
    max_waiters_per_site: int = Field(
        16,
        ge=0,
        description="Of those, the requests one site (or one user) may have waiting at once in each API "
        "process; past it they get 429.",
    )
    api_port: int = Field(8000, gt=0, lt=65536, description="Port of the REST API under `make dev`.")
    api_workers: int = Field(
        2, ge=1, le=64, description="uvicorn worker processes of the API under `make dev`."
    )
    dagster_port: int = Field(3000, gt=0, lt=65536, description="Port of the Dagster UI under `make dev`.")
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="Largest request body the API accepts.")
    database_timeout_seconds: float = Field(
        1.5,
        gt=0,
        description="Longest an API request waits on the database in any one step (a pooled connection, "
        "connecting, a statement); past it the request answers 503 and the connection is discarded.",
    )
    health_interval_seconds: int = Field(
        60,
        ge=5,
        le=3600,
        description="How often Dagster records runtime_status and evaluates the asset checks.",
    )
    check_lapsed_lease_seconds: int = Field(
        60,
        gt=0,
        description="Check lapsed_leases_reaped fails when an open operation's lease lapsed longer ago than this.",
    )
    check_unclaimed_job_seconds: int = Field(
        6 * 3600,
        gt=0,
        description="Check unclaimed_jobs_claimed fails when the oldest unclaimed job is older than this.",
    )
    check_unmatched_data_resource_seconds: int = Field(
        300,
        gt=0,
        description="Check data_resources_matched fails when a data resource has waited longer for the sensor.",
    )
    check_incomplete_group_seconds: int = Field(
        24 * 3600,
        gt=0,
        description="Check groups_complete fails when a group has had some but not all required inputs of an "
        "enabled workflow for longer than this.",
    )
    check_failed_operations_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Check failed_operations_share fails when a larger share of the last hour's operations failed.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as plain text or JSON objects."
    )
    log_requests: bool = Field(True, description="One log line per API request (`make dev` turns it off).")
    metrics_token: SecretStr | None = Field(
        None,
        description="A bearer token that may read GET /metrics only, for Prometheus (admins' tokens may too).",
    )
    grant_keys: SecretStr | None = Field(
        None,
        description="Keys that sign access grants: a JSON Web Key Set of private Ed25519 or P-256 keys, each "
        "with a `kid`; the first signs, all are published. Unset: one generated once into NMDC_HOME.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # ValueError names a malformed entry
        return value

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # A relative NMDC_HOME means the folder of the process it was given to; fixed here, once, since Dagster
        # subprocesses and uvicorn workers may run elsewhere.
        return value.expanduser().resolve()

    @field_validator("database_url", "dagster_database_url", "listen_database_url")
    @classmethod
    def _postgresql_url(cls, value: str | None) -> str | None:
        # The messages never repeat the URL: it may hold a password. Set but empty is unset (compose files).
        if not value:
            return None
        if value.partition("://")[0] not in POSTGRESQL_SCHEMES:
            raise ValueError("must be a postgresql:// URL, e.g. postgresql://user:password@host:5432/nmdc")
        try:
            make_url(value)
        except (ArgumentError, ValueError) as exc:
            raise ValueError(f"is not a valid URL ({type(exc).__name__})") from None
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _long_signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        # A short or monotonous key can be found by brute force offline from any one token, and then forges
        # them all. One message for both: the fix is the same.
        if value is not None and weak_signing_key(value.get_secret_value()):
            raise ValueError(WEAK_JWT_SECRET)
        return value

    def policy(self) -> Policy:
        """The numbers the rules run on."""
        return Policy.of(self)

    def uvicorn_proxy_options(self) -> list[str]:
        """uvicorn's options for forwarded headers, matching NMDC_TRUSTED_PROXIES: with proxies named, their
        `X-Forwarded-For` and `X-Forwarded-Proto` are believed (networks written as uvicorn reads them);
        with none, nobody's. uvicorn's own default believes any request from the loopback address, so a
        local client could pick its address with each request and dodge the per-address login limits."""
        if not self.trusted_proxies:
            return ["--no-proxy-headers"]
        networks = ",".join(str(ipaddress.ip_network(item, strict=False)) for item in self.trusted_proxies)
        return ["--proxy-headers", "--forwarded-allow-ips", networks]

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
        if weak_signing_key(key):
            raise RuntimeError(
                f"{path} holds a key shorter than {MIN_JWT_SECRET_BYTES} bytes or of fewer than "
                f"{MIN_JWT_SECRET_DISTINCT_BYTES} different values: delete it or set NMDC_JWT_SECRET"
            )
        return key


def settings_problem(error: ValidationError) -> str:
    """One line naming each environment variable whose value the settings refuse, and why."""
    problems = []
    for item in error.errors():
        name = f"NMDC_{item['loc'][0]}".upper() if item["loc"] else "the settings"
        problems.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment: for entry points only (the CLI, `api.main:app`,
    the Dagster definitions), which pass them down explicitly."""
    return Settings()
