"""Why work on a claimed job stops before its end: each tells the agent what to do with the claim."""

from __future__ import annotations


class OperationLost(Exception):
    """The operation ended or moved elsewhere (an admin's cancel, another site's claim): forget the job."""


class LeaseRanOut(OperationLost):
    """The API stayed unreachable until the lease ended: stop the command but keep the claim recorded, so
    the agent claims the job again (and carries on from its last step) once the API answers."""


class Interrupted(Exception):
    """The agent itself was asked to stop (Ctrl-C, SIGTERM); the claim is kept for the next start."""


class SiteFault(Exception):
    """The failure is the executing site's own (its configuration, its resources: an executable that is missing
    or not executable, no space left, the agent's own crash), not
    the job's or its data's. The claim is released with reason ``SITE_FAULT``, which gives the attempt back,
    and the agent stops: the next job would fail the same way.

    `str()` goes into the release's reason, which every token reads; `detail` says more, for the agent's log.
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message
