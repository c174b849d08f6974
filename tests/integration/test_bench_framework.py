"""`python -m bench.framework` at toy sizes, so that the tool behind bench/README.md's bounds keeps working: every
app variant answers its route, and every way of sending a statement gets its row. The figures mean nothing here."""

from __future__ import annotations

from bench import framework


def test_every_app_and_every_way_of_sending_a_statement_is_measured(clean_database):
    apps = framework._fastapi(requests=20, rounds=1)
    statements = framework._statements(clean_database, statements=20, rounds=1)
    assert len(apps) == 8 and all(value > 0 for value in apps.values())
    assert set(statements) == {"psycopg2_cursor", "sqlalchemy_exec_driver_sql", "sqlalchemy_session_execute"}
    assert all(value > 0 for value in statements.values())
