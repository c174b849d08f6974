"""What the database tells the API processes as it happens (PostgreSQL LISTEN/NOTIFY), on a connection of
their own (`nmdc_runtime.db.Database.listening_connection`).

`JOBS_UNCLAIMED` carries a workflow's id each time jobs of it become unclaimed: made, released, given back by
an error or a lapsed lease's end (the triggers of migration 0012 send it at the commit, whoever made the
change). A claim, a heartbeat or a finish that leaves its job claimed or final sends nothing. A lease that
lapses sends nothing either until something ends it: `workflows_with_leases_lapsed` in store/operations.py
finds those.
"""

from __future__ import annotations

from typing import Any

JOBS_UNCLAIMED = "nmdc_jobs_unclaimed"
"""The channel; its name is written in migration 0012's triggers too."""

_LISTEN = f"LISTEN {JOBS_UNCLAIMED}"
_CHECK = "SELECT 1"


def listen(connection: Any) -> None:
    """Start receiving `JOBS_UNCLAIMED` on a psycopg2 connection in autocommit (one round trip)."""
    with connection.cursor() as cursor:
        cursor.execute(_LISTEN)


def check(connection: Any) -> None:
    """One round trip on a listening connection: an error when it is broken (a silent peer included)."""
    with connection.cursor() as cursor:
        cursor.execute(_CHECK)


def received(connection: Any, *, read: bool = True) -> list[str]:
    """The payloads that arrived on a listening connection since the last call, oldest first, taken off it:
    reads what the socket holds first (without waiting) unless `read` is false. A broken connection raises
    psycopg2's OperationalError."""
    if read:
        connection.poll()
    payloads = [notice.payload for notice in connection.notifies]
    del connection.notifies[:]
    return payloads
