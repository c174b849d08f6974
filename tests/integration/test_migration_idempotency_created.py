"""Migration 0010 on a database with keys: each stored answer becomes the rows it named, which a repeat gets."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from nmdc_runtime.migrations import alembic_config, upgrade
from nmdc_runtime.models import DataResource, Execution
from nmdc_runtime.store import idempotency as idempotency_store

SETUP = [
    "INSERT INTO sites (id, name) VALUES ('site-d', 'D')",
    "INSERT INTO workflows (id, name, version) VALUES ('wf', 'wf', '1')",
    "INSERT INTO jobs (id, workflow_id, max_attempts) VALUES ('job-1', 'wf', 3)",
    """INSERT INTO data_resources (id, site_id, name, url, data_type, size)
       VALUES ('dr-1', 'site-d', 'reads', 'https://data.example.org/reads', 'fastq', 1),
              ('dr-out', 'site-d', 'contigs', 'https://data.example.org/contigs', 'fna', 2)""",
    """INSERT INTO executions (id, job_id, site_id, operation_id, workflow_id, status, started_at, ended_at,
                               output_ids)
       VALUES ('exec-1', 'job-1', 'site-d', 'op-1', 'wf', 'succeeded', now(), now(), '{dr-out}')""",
    """INSERT INTO idempotency_keys (principal, key, endpoint, request_hash, status_code, response) VALUES
       ('site_client:c', 'k-dr', 'POST /data_resources', 'h', 201, '{"id": "dr-1", "name": "reads"}'),
       ('site_client:c', 'k-ex', 'POST /jobs/job-1/executions', 'h', 201, '{"id": "exec-1"}'),
       ('site_client:c', 'k-gone', 'POST /data_resources', 'h', 201, '{"id": "dr-unknown"}')""",
]


def test_stored_answers_become_the_rows_they_named(fresh_database_url: str):
    upgrade(fresh_database_url, "0009")
    engine = sa.create_engine(fresh_database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for statement in SETUP:
                conn.execute(sa.text(statement))
        upgrade(fresh_database_url, "0010")
        with engine.begin() as conn:
            created = dict(conn.execute(sa.text("SELECT key, created FROM idempotency_keys")).tuples().all())
        assert set(created) == {"k-dr", "k-ex"}  # a key naming nothing is dropped
        resource = idempotency_store.row_from_document(DataResource, created["k-dr"])
        assert (resource.id, resource.name, resource.size) == ("dr-1", "reads", 1)
        assert resource.created_at.tzinfo is not None and resource.created_at <= datetime.now(UTC)
        execution = idempotency_store.row_from_document(Execution, created["k-ex"]["execution"])
        outputs = [idempotency_store.row_from_document(DataResource, o) for o in created["k-ex"]["outputs"]]
        assert (execution.id, execution.output_ids, [o.id for o in outputs]) == (
            "exec-1",
            ["dr-out"],
            ["dr-out"],
        )
        command.downgrade(alembic_config(fresh_database_url), "0009")
        with engine.begin() as conn:
            rows = conn.execute(sa.text("SELECT key, status_code, response ->> 'id' FROM idempotency_keys"))
            assert sorted(rows.tuples().all()) == [("k-dr", 201, "dr-1"), ("k-ex", 201, "exec-1")]
    finally:
        engine.dispose()
