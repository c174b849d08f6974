"""Keyset pagination over a table's `seq` column, with opaque page tokens bound to the list they came from.

A token says where the next page starts (`after` a keyset position) and, as a short fingerprint (`scope`),
which list it belongs to: the request path plus the filters. Without the fingerprint a token from
/data_resources would be taken by /jobs, and a token reused with other filters would silently start a
wrong page. The page size is not part of it: a client may change `max_page_size` between pages.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nmdc_runtime.domain.errors import InvalidInput

TOKEN_VERSION = 2
# Query parameters that do not change which list is walked: the position itself, and the page length.
UNSCOPED_PARAMS = frozenset({"page_token", "max_page_size"})


@dataclass(frozen=True)
class PageParams:
    """Where a page starts (`after` a keyset position) and how long it may be."""

    size: int
    after: int | None = None


@dataclass(frozen=True)
class ScopedPage(PageParams):
    """PageParams plus the fingerprint of the list being walked, which the next page's token carries."""

    scope: str = ""


def page_scope(path: str, params: Iterable[tuple[str, str]]) -> str:
    """A short fingerprint of a list: its path and its query parameters (sorted), but not the position or size.

    Truncated: it only has to tell lists apart when a client mixes tokens up, not resist forgery (a forged
    token can only ask for a page the caller may read anyway).
    """
    query = urlencode(sorted((k, v) for k, v in params if k not in UNSCOPED_PARAMS))
    digest = hashlib.blake2b(f"{path}?{query}".encode(), digest_size=6).digest()
    return base64.urlsafe_b64encode(digest).decode()


def encode_page_token(after: int, scope: str = "") -> str:
    """An opaque token for the page of list `scope` that starts after keyset position `after`."""
    raw = json.dumps({"v": TOKEN_VERSION, "after": after, "s": scope}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, scope: str = "") -> int:
    """The keyset position a token stands for; InvalidInput for anything we did not make for list `scope`."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = data["after"]
        if (
            data.get("v") != TOKEN_VERSION
            or not isinstance(after, int)
            or isinstance(after, bool)
            or after < 0
        ):
            raise ValueError
        token_scope = data["s"]
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        raise InvalidInput("page_token is not valid", field="page_token") from exc
    if token_scope != scope:
        raise InvalidInput(
            "page_token belongs to another list or to other filters: repeat the query it came from",
            field="page_token",
        )
    return after


def page_query(stmt: sa.Select, seq_column: Any, page: PageParams) -> sa.Select:
    """`stmt` limited to one page ordered by `seq_column`, plus one row that tells whether another follows."""
    if page.after is not None:
        stmt = stmt.where(seq_column > page.after)
    return stmt.order_by(seq_column).limit(page.size + 1)


def fetch_page(
    session: Session, stmt: sa.Select, seq_column: Any, page: PageParams
) -> tuple[Sequence[Any], str | None]:
    """Run `stmt` for one page ordered by `seq_column`; return the rows and the next page's token (or None)."""
    # One row more than asked tells whether another page follows, without a count.
    return page_of(session.scalars(page_query(stmt, seq_column, page)).all(), seq_column, page)


def page_of(rows: Sequence[Any], seq_column: Any, page: PageParams) -> tuple[Sequence[Any], str | None]:
    """The page in `rows` (at most one more than the page: the sign that another follows), and the next
    page's token (or None)."""
    if len(rows) <= page.size:
        return rows, None
    rows = rows[: page.size]
    # A plain PageParams (a caller outside the API) makes tokens of the empty scope.
    return rows, encode_page_token(_seq_of(rows[-1], seq_column), getattr(page, "scope", ""))


def _seq_of(row: Any, seq_column: Any) -> int:
    return getattr(row, seq_column.key)
