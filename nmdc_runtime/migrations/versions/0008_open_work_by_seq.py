"""open work listed by seq: each workflow's unclaimed jobs (ix_jobs_unclaimed_workflow), open operations of all
sites and of one (ix_operations_open_seq, ix_operations_site_open)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The claimable listing reads each workflow's first unclaimed jobs; by (workflow_id, seq) alone it would
    # walk the workflow's finished jobs first.
    op.create_index(
        "ix_jobs_unclaimed_workflow",
        "jobs",
        ["workflow_id", "seq"],
        postgresql_where=sa.text("status = 'unclaimed'"),
    )
    # `GET /operations?done=false` (and a site's own) walked every operation kept for retention in seq order
    # to find the open ones; these hold only the open ones.
    op.create_index("ix_operations_open_seq", "operations", ["seq"], postgresql_where=sa.text("NOT done"))
    op.create_index(
        "ix_operations_site_open", "operations", ["site_id", "seq"], postgresql_where=sa.text("NOT done")
    )


def downgrade() -> None:
    op.drop_index("ix_operations_site_open", table_name="operations")
    op.drop_index("ix_operations_open_seq", table_name="operations")
    op.drop_index("ix_jobs_unclaimed_workflow", table_name="jobs")
