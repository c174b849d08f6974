"""leases that fit the work: workflows may set lease_seconds; each operation keeps its own lease length

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflows", sa.Column("lease_seconds", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_workflows_lease_seconds_positive"), "workflows", "lease_seconds IS NULL OR lease_seconds > 0"
    )
    op.add_column("operations", sa.Column("lease_seconds", sa.Integer(), nullable=True))
    # Operations made before this knew one global length; the last heartbeat tells what it was.
    op.execute(
        """
        UPDATE operations
        SET lease_seconds = greatest(1, round(extract(epoch FROM lease_expire_time - update_time)))::integer
        """
    )
    op.alter_column("operations", "lease_seconds", nullable=False)
    op.create_check_constraint(
        op.f("ck_operations_lease_seconds_positive"), "operations", "lease_seconds > 0"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_operations_lease_seconds_positive"), "operations", type_="check")
    op.drop_column("operations", "lease_seconds")
    op.drop_constraint(op.f("ck_workflows_lease_seconds_positive"), "workflows", type_="check")
    op.drop_column("workflows", "lease_seconds")
