"""What the API's database deadline costs per query: `SELECT 1` through an engine with and without it.

    .venv/bin/python -m bench.query_deadline                # 5,000 queries a round, 6 rounds of each kind
    .venv/bin/python -m bench.query_deadline --queries 2000 --rounds 4

The database is the one the settings resolve (the embedded server under NMDC_HOME, started if need be, or
NMDC_DATABASE_URL's). Each round runs in a fresh process, since psycopg2's wait callback serves the whole
process once it is set; rounds of the plain and the bounded engine alternate, so that the load of a shared
machine falls on both alike. Three figures per engine, in microseconds per query: `held`, the wall time of
statements on one connection (the wait itself); `held cpu`, the client's CPU time for them (what the
callback's Python loop adds, and less at the mercy of a busy machine than wall time); and `checkout`, the wall
time of a pool checkout, the statement and the return (what a request pays, the return's rollback included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import sqlalchemy as sa

from nmdc_runtime.db import Database

SELECT_1 = sa.text("SELECT 1")
FIGURES = ("held", "held cpu", "checkout")


def _round(url: str, bounded: bool, queries: int) -> dict[str, float]:
    """Microseconds per query for one engine, in this process."""
    database = Database(url, deadline_seconds=1.5 if bounded else None)
    try:
        with database.engine.connect() as conn:
            for _ in range(200):  # warm up: first connection, statement cache
                conn.execute(SELECT_1)
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(queries):
                conn.execute(SELECT_1)
            held, held_cpu = time.perf_counter() - started, time.process_time() - cpu
        started = time.perf_counter()
        for _ in range(queries):
            with database.engine.connect() as conn:
                conn.execute(SELECT_1)
        checkout = time.perf_counter() - started
    finally:
        database.dispose()
    seconds = dict(zip(FIGURES, (held, held_cpu, checkout), strict=True))
    return {what: total / queries * 1e6 for what, total in seconds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.query_deadline", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--queries", type=int, default=5000, help="queries per round and figure")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each engine")
    parser.add_argument("--one-round", choices=["plain", "bounded"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        print(json.dumps(_round(args.url, args.one_round == "bounded", args.queries)))
        return 0

    from nmdc_runtime.config import Settings
    from nmdc_runtime.db import resolve_urls

    url = resolve_urls(Settings()).runtime  # keeps an embedded server running for the rounds
    figures: dict[str, list[dict[str, float]]] = {"plain": [], "bounded": []}
    for _ in range(args.rounds):
        for kind in figures:
            command = [sys.executable, "-m", "bench.query_deadline", "--one-round", kind, "--url", url]
            out = subprocess.run(
                [*command, "--queries", str(args.queries)], capture_output=True, text=True, check=True
            )
            figures[kind].append(json.loads(out.stdout))
    print(f"{args.rounds} rounds of {args.queries} SELECT 1 per engine; median of the rounds, µs per query")
    medians = {
        kind: {what: statistics.median(r[what] for r in rounds) for what in FIGURES}
        for kind, rounds in figures.items()
    }
    for kind, figure in medians.items():
        print(f"  {kind:8}" + "".join(f"   {what} {figure[what]:7.1f}" for what in FIGURES))
    for what in FIGURES:
        extra = medians["bounded"][what] - medians["plain"][what]
        print(f"  deadline costs {extra:+.1f} µs per query ({what})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
