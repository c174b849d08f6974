"""Domain exceptions. The API maps each class to one HTTP status in one place (`api/errors.py`)."""

from __future__ import annotations


class RuntimeDomainError(Exception):
    """Base of the runtime's domain errors; the docstring of each subclass is its default message."""

    def __init__(self, message: str | None = None, **details) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.details = details
        super().__init__(self.message)


class InvalidInput(RuntimeDomainError):
    """The request is not valid."""


class NotFound(RuntimeDomainError):
    """No such resource."""


class Forbidden(RuntimeDomainError):
    """The caller may not do this."""


class Conflict(RuntimeDomainError):
    """The request conflicts with the resource's current state."""


class AlreadyExists(Conflict):
    """A resource with this id already exists."""


class LeaseLost(Conflict):
    """The caller's claim on this job has ended (lease lapsed, released or canceled)."""


class SiteDrained(Conflict):
    """The site is drained: its last claims failed at the site, one after another, so it may claim no new job
    until staff or the site's admin lift the drain (`nmdc_runtime.domain.drains`)."""
