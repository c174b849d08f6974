"""Statements built once per process (nmdc_runtime/store/statements.py) come out whole when requests build
and first compile them together, as they do when a fresh API process meets a burst."""

import threading

from sqlalchemy.dialects.postgresql import psycopg2

from nmdc_runtime.store import jobs as jobs_store
from nmdc_runtime.store.pages import PageParams

ROUNDS = 40
THREADS = 8


def _deep_weighed_page() -> str:
    stmt, _, _ = jobs_store.claimable_page_query(
        site_id="site", drain_after=3, page=PageParams(size=20, after=5, max_bytes=4 << 20)
    )
    return str(stmt.compile(dialect=psycopg2.dialect()))


def test_the_claimable_listing_built_by_many_requests_at_once_joins_jobs_only_where_it_should():
    """It failed 1 round in 8 to 15 before: a page joined to the whole `jobs` table, with no condition."""
    broken = 0
    for _ in range(ROUNDS):
        jobs_store._claimable_statement.cache_clear()
        start = threading.Barrier(THREADS)
        compiled: list[str] = []

        def request(start: threading.Barrier = start, compiled: list[str] = compiled) -> None:
            start.wait()
            compiled.append(_deep_weighed_page())

        threads = [threading.Thread(target=request) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(compiled) == THREADS
        broken += sum("AS weighed, jobs" in sql for sql in compiled)
    assert broken == 0
