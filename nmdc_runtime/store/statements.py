"""Statements built once per process and kept: those whose building costs more than running them."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.dialects.postgresql import psycopg2
from sqlalchemy.sql import ClauseElement

T = TypeVar("T")

_building = threading.RLock()  # a builder may call another


def built_once(build: Callable[..., T]) -> Callable[..., T]:
    """`functools.cache` for a statement builder, building and compiling once, one thread at a time.

    SQLAlchemy works a new statement's structure out on its first compile and keeps it on the shared
    objects, which is not safe to do in two threads at once: requests that built or first ran the claimable
    listing's weighed page together now and then got a statement that joined `jobs` once more with no
    condition, every item of the page repeated once per job in the table (1 run in 8 of eight threads,
    `tests/unit/test_statements.py`)."""
    cached = functools.cache(build)

    @functools.wraps(build)
    def once(*args, **kwargs):
        with _building:
            new = cached.cache_info().currsize
            built = cached(*args, **kwargs)
            if cached.cache_info().currsize != new:
                for part in built if isinstance(built, tuple) else (built,):
                    if isinstance(part, ClauseElement):
                        part.compile(dialect=psycopg2.dialect())
            return built

    once.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return once
