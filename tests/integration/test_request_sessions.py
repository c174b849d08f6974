"""Every database session a request is given goes back once it is answered, whatever the request did: a read
that left its transaction open, a claim in autocommit, a change that committed, a domain error in the middle of
a transaction, a validation error before the handler ran (api/middleware.py `RequestSessions`)."""

from __future__ import annotations

import sqlalchemy as sa

from tests.integration.builders import create_job, create_workflow, register


def _held(client) -> tuple[int, int]:
    """Connections the app's two pools have lent out, and the app's server connections left in a transaction."""
    database = client.app.state.database
    with database.engine.connect() as conn:
        open_transactions = conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        )
    return database.engine.pool.checkedout() + database.autocommit_engine.pool.checkedout(), open_transactions


def test_each_kind_of_request_gives_its_session_back(client, admin_headers, site_headers):
    data_site = site_headers("site-d")
    exec_site = site_headers("site-e")
    create_workflow(client, admin_headers)
    resource = register(client, data_site)
    job = create_job(client, admin_headers, "assembly", [resource["id"]])
    answers = [
        client.get("/jobs?claimable=true", headers=exec_site).status_code,
        client.post(f"/jobs/{job['id']}:claim", headers=exec_site).status_code,
        client.post(f"/jobs/{job['id']}:claim", headers=exec_site).status_code,
        client.post("/jobs/no-such-job:claim", headers=exec_site).status_code,
        client.get("/jobs?page_size=0", headers=exec_site).status_code,
        client.get("/operations?done=false", headers=admin_headers).status_code,
    ]
    assert answers == [200, 201, 200, 404, 422, 200]
    try:
        assert _held(client) == (0, 0)
    finally:
        # Were any left open, their locks would stall the tables' emptying after the test: end them.
        with client.app.state.database.engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                )
            )
