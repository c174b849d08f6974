"""Keyset pagination over a table's `seq` column, with opaque page tokens bound to the list they came from.

A token says where the next page starts (`after` a keyset position) and, as a short fingerprint (`scope`),
which list it belongs to: the request path plus the filters. Without the fingerprint a token from
/data_resources would be taken by /jobs, and a token reused with other filters would silently start a
wrong page. The page size is not part of it: a client may change `max_page_size` between pages.

A page is bounded by bytes as well as by count (`PageParams.max_bytes`): the database weighs each item of the
page as JSON (`row_bytes`, plus what the answer shows with it, such as an execution's outputs) and sends only
the items up to the bound (at least one), so neither the answer nor what the API process reads for it grows
with what sites stored; the next page starts after the last item sent.
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
from sqlalchemy.orm import Session, aliased

from nmdc_runtime.domain.errors import InvalidInput

TOKEN_VERSION = 2
# Query parameters that do not change which list is walked: the position itself, and the page length.
UNSCOPED_PARAMS = frozenset({"page_token", "max_page_size"})


@dataclass(frozen=True)
class PageParams:
    """Where a page starts (`after` a keyset position) and how long it may be: `size` items at most, and,
    unless `max_bytes` is None, no more items than fit in `max_bytes` (at least one)."""

    size: int
    after: int | None = None
    max_bytes: int | None = None


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


def row_bytes(rows: sa.FromClause) -> sa.ColumnElement[int]:
    """What a row of `rows` (a table, or a subquery of one) weighs in a page: its JSON, field names included, in
    bytes: about what the API shows of it."""
    return sa.func.octet_length(sa.cast(sa.func.to_jsonb(rows.table_valued()), sa.Text))


FETCHED = "page_fetched"
"""The column of a bounded page's statement (`weighed_page`) that says how many items the count's limit let
through, before the byte bound."""


def weighed_page(
    limited: sa.Select,
    seq_column: Any,
    *,
    weight: sa.ColumnElement[int],
    size: int | sa.ColumnElement[int],
    max_bytes: int | sa.ColumnElement[int],
) -> sa.Select:
    """A page statement (`limited`: one entity, ordered by `seq_column` and limited to `size` + 1 items) cut
    by bytes too, in one statement: the items, each weighing `weight` (an expression over `limited`'s rows),
    while their running total stays within `max_bytes` (the first one whatever it weighs), at most `size`
    (`bytes_cut` in SQL); with each, the column `FETCHED`. The database weighs the items; only those kept are
    sent. Costly to build (milliseconds of SQLAlchemy's work): for a statement built once, as the claimable
    listing's is."""
    entity = sa.inspect(limited.column_descriptions[0]["entity"]).mapper.class_
    items = limited.add_columns(weight.label("page_item_bytes")).subquery("page_items")
    order = items.c[seq_column.key]
    weighed = sa.select(
        items,
        sa.func.sum(items.c.page_item_bytes).over(order_by=order).label("page_bytes"),
        sa.func.row_number().over(order_by=order).label("page_position"),
        sa.func.count().over().label(FETCHED),
    ).subquery("weighed")
    return (
        sa.select(aliased(entity, weighed), weighed.c[FETCHED])
        .where(
            sa.or_(weighed.c.page_bytes <= max_bytes, weighed.c.page_position == 1),
            weighed.c.page_position <= size,
        )
        .order_by(weighed.c[seq_column.key])
    )


def fetch_page(
    session: Session,
    stmt: sa.Select,
    seq_column: Any,
    page: PageParams,
    *,
    weight: sa.ColumnElement[int] | None = None,
) -> tuple[Sequence[Any], str | None]:
    """Run `stmt` for one page ordered by `seq_column`; return the rows and the next page's token (or None).

    With `page.max_bytes`, two statements: the first weighs the page's items (`weight`, default their rows',
    `row_bytes`; only their `seq` and weight are sent), the second fetches those that fit (`bytes_cut`). Built
    for each request, one statement nesting the page in subqueries would cost the API more (milliseconds of
    SQLAlchemy's work on every list) than the second round trip does."""
    if page.max_bytes is None:
        # One row more than asked tells whether another page follows, without a count.
        return page_of(session.scalars(page_query(stmt, seq_column, page)).all(), seq_column, page)
    if weight is None:
        weight = row_bytes(seq_column.expression.table)
    weights = session.execute(page_query(stmt.with_only_columns(seq_column, weight), seq_column, page)).all()
    kept = bytes_cut([item_bytes for _, item_bytes in weights], page)
    if not kept:
        return [], None
    last = weights[kept - 1][0]
    rows = page_of(
        session.scalars(page_query(stmt.where(seq_column <= last), seq_column, page)).all(), seq_column, page
    )[0]
    if len(weights) == kept:
        return rows, None
    # A row that committed between the two statements may stand in for the last one: the token follows what
    # was sent (or the cut, when what was weighed has gone since).
    end = _seq_of(rows[-1], seq_column) if rows else last
    return rows, encode_page_token(end, getattr(page, "scope", ""))


def bytes_cut(weights: Sequence[int], page: PageParams) -> int:
    """How many of a page's items (of `weights` bytes each, in order: `page.size` + 1 at most) the page holds:
    as many as fit in `page.max_bytes` together, at least one, at most `page.size` (the SQL form is
    `weighed_page`'s)."""
    total = kept = 0
    for item_bytes in weights[: page.size]:
        total += item_bytes
        if kept and total > page.max_bytes:
            break
        kept += 1
    return kept


def page_of(rows: Sequence[Any], seq_column: Any, page: PageParams) -> tuple[Sequence[Any], str | None]:
    """The page in `rows` (at most one more than the page: the sign that another follows), and the next
    page's token (or None)."""
    if len(rows) <= page.size:
        return rows, None
    rows = rows[: page.size]
    # A plain PageParams (a caller outside the API) makes tokens of the empty scope.
    return rows, encode_page_token(_seq_of(rows[-1], seq_column), getattr(page, "scope", ""))


def weighed_page_of(
    rows: Sequence[Any], seq_column: Any, page: PageParams
) -> tuple[Sequence[Any], str | None]:
    """The page of a `weighed_page` statement's `rows` (each an item and `FETCHED`), and the next page's token:
    another page follows when the count's limit let more items through than the page kept."""
    items = [row[0] for row in rows]
    if not rows or rows[0][1] <= len(items):
        return items, None
    return items, encode_page_token(_seq_of(items[-1], seq_column), getattr(page, "scope", ""))


def _seq_of(row: Any, seq_column: Any) -> int:
    return getattr(row, seq_column.key)
