"""Status values of jobs, operations and executions, and which moves between them are allowed."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job stands."""

    UNCLAIMED = "unclaimed"
    """Waiting for a site to claim it."""
    CLAIMED = "claimed"
    """A site holds an active claim (an unfinished operation)."""
    SUCCEEDED = "succeeded"
    """An operation finished with a result."""
    FAILED = "failed"
    """Attempts ran out: `attempts` reached `max_attempts`."""
    CANCELED = "canceled"
    """An admin canceled the job."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class OperationState(StrEnum):
    """Where an operation (the promise returned by a claim) stands."""

    RUNNING = "running"
    """The holding site is working; its lease must be renewed by PATCH."""
    PAUSED = "paused"
    """An admin paused it; the lease does not lapse while paused."""
    SUCCEEDED = "succeeded"
    """Done with a result (an execution)."""
    FAILED = "failed"
    """Done with an error reported by the site."""
    CANCELED = "canceled"
    """Done with error code CANCELLED (released by the site, or canceled on request)."""
    EXPIRED = "expired"
    """Done with error code DEADLINE_EXCEEDED: the lease lapsed."""

    @property
    def done(self) -> bool:
        return self in DONE_OPERATION_STATES


DONE_OPERATION_STATES = frozenset(
    {OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELED, OperationState.EXPIRED}
)


class ExecutionStatus(StrEnum):
    """What the executing site reports about its run."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ErrorCode(StrEnum):
    """Error codes of finished operations (google.rpc.Code names, as in long-running operations)."""

    CANCELLED = "CANCELLED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    EXECUTION_FAILED = "EXECUTION_FAILED"
    """Finished by `done: true` alone, and the latest execution under the operation failed."""
    UNKNOWN = "UNKNOWN"
    DATA_LOSS = "DATA_LOSS"
    """An input could not be read whole or did not match its size or checksums: the data's fault."""
    UNAVAILABLE = "UNAVAILABLE"
    """An input's data site could not be reached: its fault, not the executing site's."""


class ReleaseCode(StrEnum):
    """Why a holding site gives a job back (`POST /jobs/{id}:release`'s optional reason), kept in the
    operation's `error.details.reason`."""

    SITE_FAULT = "SITE_FAULT"
    """The failure was the executing site's own (its configuration, its resources), not the job's or the data's."""
    SHUTDOWN = "SHUTDOWN"
    """A graceful give-back: the site is stopping (as a release without a reason)."""
