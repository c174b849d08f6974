"""Caps on the free-form JSON objects a site stores (an operation's metadata, an execution's details).

One rule for each of them: the object, once a change is merged, holds at most `max_keys` top-level keys and
`max_bytes` bytes as compact UTF-8 JSON (one setting for both, `NMDC_MAX_METADATA_BYTES`, through the
`Policy`), else InvalidInput on its field. A change that leaves it no bigger than
it was (in keys and bytes) is always accepted, so an object stored over a cap (before the cap, or under an
older, larger one) can still be rewritten and shrink.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nmdc_runtime.domain.errors import InvalidInput


def json_size(value: Mapping[str, Any]) -> int:
    """The size in bytes of `value` as compact UTF-8 JSON (what a cap's `max_bytes` limits)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_cap(
    field: str, before: Mapping[str, Any], after: Mapping[str, Any], *, max_keys: int, max_bytes: int
) -> None:
    """InvalidInput on `field` when `after` exceeds a cap and is bigger than `before`."""
    size_after = json_size(after)
    if len(after) <= max_keys and size_after <= max_bytes:
        return
    if len(after) <= len(before) and size_after <= json_size(before):
        return
    if len(after) > max_keys:
        reason = f"{len(after)} keys; at most {max_keys} are allowed"
    else:
        reason = (
            f"{size_after} bytes as compact JSON; at most {max_bytes} are allowed (NMDC_MAX_METADATA_BYTES)"
        )
    raise InvalidInput(f"{field} would hold {reason}", field=field, location="body")
