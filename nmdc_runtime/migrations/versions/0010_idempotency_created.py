"""idempotency keys remember the rows the first request created, not its HTTP answer: created

The API shapes a repeat's answer from those rows, as it shapes the first, so the store holds no status codes or
bodies. A key stored before this migration remembers its resource as it is at the upgrade (every stored answer
named it by `id`: a data resource, or an execution with its outputs).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("created", postgresql.JSONB(astext_type=sa.Text())))
    op.execute(
        """
        UPDATE idempotency_keys k SET created = to_jsonb(d)
        FROM data_resources d
        WHERE k.endpoint = 'POST /data_resources' AND d.id = k.response ->> 'id'
        """
    )
    op.execute(
        """
        UPDATE idempotency_keys k SET created = jsonb_build_object(
            'execution', to_jsonb(e),
            'outputs', coalesce(
                (SELECT jsonb_agg(to_jsonb(d) ORDER BY u.ord)
                 FROM unnest(e.output_ids) WITH ORDINALITY AS u(id, ord) JOIN data_resources d ON d.id = u.id),
                '[]'::jsonb))
        FROM executions e
        WHERE k.endpoint LIKE 'POST /jobs/%/executions' AND e.id = k.response ->> 'id'
        """
    )
    # Nothing else was ever stored; a key whose resource is unknown could not be replayed.
    op.execute("DELETE FROM idempotency_keys WHERE created IS NULL")
    op.drop_column("idempotency_keys", "response")
    op.drop_column("idempotency_keys", "status_code")


def downgrade() -> None:
    # The answers themselves are gone: a repeat after the downgrade gets the resource's columns, as 201.
    op.add_column(
        "idempotency_keys", sa.Column("status_code", sa.Integer(), server_default="201", nullable=False)
    )
    op.add_column(
        "idempotency_keys",
        sa.Column(
            "response",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.execute(
        "UPDATE idempotency_keys SET response = coalesce(created -> 'execution', created, '{}'::jsonb)"
    )
    op.alter_column("idempotency_keys", "status_code", server_default=None)
    op.alter_column("idempotency_keys", "response", server_default=None)
    op.drop_column("idempotency_keys", "created")
