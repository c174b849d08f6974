"""The numbers the rules run on, passed explicitly to every service (never read from a global)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Policy:
    """Lease, retention and attempt limits; `Settings.policy()` makes one from the `NMDC_*` settings."""

    claim_lease_seconds: int
    """How long a claim lasts without a heartbeat, unless its workflow or the claim says otherwise."""
    max_lease_seconds: int
    """The longest lease a workflow may give its claims."""
    operation_retention_seconds: int
    """How long a finished operation is kept before it may be deleted."""
    idempotency_retention_seconds: int
    """How long an Idempotency-Key is remembered."""
    max_attempts: int
    """Claims a job may use up before it is marked failed."""
    site_drain_after: int = 3
    """Faults in a row (`domain.drains`) that drain a site."""
    cancel_grace_seconds: int = 60
    """The longest an operation's lease lasts after a cancel request: heartbeats no longer renew it."""
    grant_seconds: int = 300
    """The longest an access grant lasts."""
    max_executions_per_operation: int = 10
    """Executions one claim may record."""
    max_metadata_bytes: int = 64 * 1024
    """The most bytes of an operation's site-supplied metadata and of an execution's details
    (`NMDC_MAX_METADATA_BYTES`)."""

    @classmethod
    def of(cls, source: object) -> Policy:
        """The policy whose numbers are `source`'s attributes of the same names (the settings, a resource)."""
        return cls(**{field.name: getattr(source, field.name) for field in fields(cls)})
