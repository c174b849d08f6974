"""workflows with inputs by role, and groups: data resources' and jobs' group, one sensor job per (workflow,
group), and the groups still waiting for inputs

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns without a default: PostgreSQL adds them without rewriting the tables.
    op.add_column("data_resources", sa.Column("group", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_data_resources_group_length"), "data_resources", 'char_length("group") <= 256'
    )
    op.create_index(
        "ix_data_resources_group",
        "data_resources",
        ["group", "data_type", "seq"],
        postgresql_where=sa.text('"group" IS NOT NULL'),
    )
    op.add_column("workflows", sa.Column("inputs", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("jobs", sa.Column("group", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("trigger_group", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_jobs_trigger_group_is_group"), "jobs", 'trigger_group IS NULL OR trigger_group = "group"'
    )
    op.create_index(
        "uq_jobs_workflow_trigger_group",
        "jobs",
        ["workflow_id", "trigger_group"],
        unique=True,
        postgresql_where=sa.text("trigger_group IS NOT NULL"),
    )
    op.create_index(
        "ix_jobs_group", "jobs", ["group", "seq"], postgresql_where=sa.text('"group" IS NOT NULL')
    )
    op.create_table(
        "waiting_groups",
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("group", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name=op.f("fk_waiting_groups_workflow_id_workflows")
        ),
        sa.PrimaryKeyConstraint("workflow_id", "group", name=op.f("pk_waiting_groups")),
    )
    op.create_index(op.f("ix_waiting_groups_since"), "waiting_groups", ["since"])


def downgrade() -> None:
    op.drop_index(op.f("ix_waiting_groups_since"), table_name="waiting_groups")
    op.drop_table("waiting_groups")
    op.drop_index("ix_jobs_group", table_name="jobs")
    op.drop_index("uq_jobs_workflow_trigger_group", table_name="jobs")
    op.drop_constraint(op.f("ck_jobs_trigger_group_is_group"), "jobs", type_="check")
    op.drop_column("jobs", "trigger_group")
    op.drop_column("jobs", "group")
    op.drop_column("workflows", "inputs")
    op.drop_index("ix_data_resources_group", table_name="data_resources")
    op.drop_constraint(op.f("ck_data_resources_group_length"), "data_resources", type_="check")
    op.drop_column("data_resources", "group")
