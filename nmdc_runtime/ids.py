"""Opaque, server-made ids: a short kind prefix and random hex."""

from __future__ import annotations

import uuid


def new_id(prefix: str) -> str:
    """A new id such as `job-3f0c...`; sortable order is not promised (lists order by `seq`)."""
    return f"{prefix}-{uuid.uuid4().hex}"
