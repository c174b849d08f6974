"""operations.paused is derived from state (the column goes); job ids are made by the database

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JOB_ID_DEFAULT = "'job-' || replace(gen_random_uuid()::text, '-', '')"


def upgrade() -> None:
    # `paused` was kept equal to `state = 'paused'` by the code alone; the state is the one truth now.
    op.drop_column("operations", "paused")
    op.alter_column("jobs", "id", server_default=sa.text(JOB_ID_DEFAULT))


def downgrade() -> None:
    op.alter_column("jobs", "id", server_default=None)
    op.add_column("operations", sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute("UPDATE operations SET paused = (state = 'paused')")
