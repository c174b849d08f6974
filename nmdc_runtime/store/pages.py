"""Keyset pagination over a table's `seq` column, with opaque page tokens."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import InvalidInput
from nmdc_runtime.schemas.common import PageParams


def encode_page_token(after: int) -> str:
    """An opaque token for the page that starts after keyset position `after`."""
    raw = json.dumps({"v": 1, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The keyset position a token stands for; InvalidInput for anything we did not make."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = data["after"]
        if data.get("v") != 1 or not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise ValueError
        return after
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        raise InvalidInput("page_token is not valid", field="page_token") from exc


def fetch_page(
    session: Session, stmt: sa.Select, seq_column: Any, page: PageParams
) -> tuple[Sequence[Any], str | None]:
    """Run `stmt` for one page ordered by `seq_column`; return the rows and the next page's token (or None)."""
    if page.after is not None:
        stmt = stmt.where(seq_column > page.after)
    # One row more than asked tells whether another page follows, without a count.
    rows = session.scalars(stmt.order_by(seq_column).limit(page.size + 1)).all()
    if len(rows) <= page.size:
        return rows, None
    rows = rows[: page.size]
    return rows, encode_page_token(_seq_of(rows[-1], seq_column))


def _seq_of(row: Any, seq_column: Any) -> int:
    return getattr(row, seq_column.key)
