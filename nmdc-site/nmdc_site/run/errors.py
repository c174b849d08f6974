"""Why work on a claimed job stops before its end: each tells the agent what to do with the claim."""

from __future__ import annotations


class OperationLost(Exception):
    """The operation ended or moved elsewhere (an admin's cancel, another site's claim): forget the job."""


class LeaseRanOut(OperationLost):
    """The API stayed unreachable until the lease ended: stop the command but keep the claim recorded, so
    the agent claims the job again (and carries on from its last step) once the API answers."""


class Interrupted(Exception):
    """The agent itself was asked to stop (Ctrl-C, SIGTERM); the claim is kept for the next start."""
