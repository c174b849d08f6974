"""idempotency keys remember the id of what the first request created, not its HTTP answer: resource_id

The API shapes a repeat's answer from the resource itself, so the store holds no status codes or bodies. Every
stored answer was a resource with its `id` at the top (a data resource, an execution): that id is kept.

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
    op.add_column("idempotency_keys", sa.Column("resource_id", sa.Text(), nullable=True))
    op.execute("UPDATE idempotency_keys SET resource_id = response ->> 'id'")
    op.drop_column("idempotency_keys", "response")
    op.drop_column("idempotency_keys", "status_code")


def downgrade() -> None:
    # The answers themselves are gone: a repeat after the downgrade gets `{"id"}` only, as 201.
    op.add_column(
        "idempotency_keys",
        sa.Column("status_code", sa.Integer(), server_default="201", nullable=False),
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
    op.execute("UPDATE idempotency_keys SET response = jsonb_build_object('id', resource_id)")
    op.alter_column("idempotency_keys", "status_code", server_default=None)
    op.alter_column("idempotency_keys", "response", server_default=None)
    op.drop_column("idempotency_keys", "resource_id")
