"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 01:17:15.649936
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("principal", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"], unique=False)
    op.create_table(
        "sites",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("capabilities", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
    )
    op.create_table(
        "users",
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("admin", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_users")),
    )
    op.create_table(
        "workflows",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("data_types", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("required_capabilities", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("backfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
        sa.UniqueConstraint("seq", name=op.f("uq_workflows_seq")),
    )
    op.create_index(
        op.f("ix_workflows_data_types"), "workflows", ["data_types"], unique=False, postgresql_using="gin"
    )
    op.create_table(
        "data_resources",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("site_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("data_type", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("checksums", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("execution_id", sa.Text(), nullable=True),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("size >= 0", name=op.f("ck_data_resources_size_non_negative")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_data_resources_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_resources")),
        sa.UniqueConstraint("seq", name=op.f("uq_data_resources_seq")),
    )
    op.create_index(
        op.f("ix_data_resources_data_type_seq"), "data_resources", ["data_type", "seq"], unique=False
    )
    op.create_index(op.f("ix_data_resources_execution_id"), "data_resources", ["execution_id"], unique=False)
    op.create_index(op.f("ix_data_resources_site_id_seq"), "data_resources", ["site_id", "seq"], unique=False)
    op.create_index(
        "ix_data_resources_unmatched",
        "data_resources",
        ["seq"],
        unique=False,
        postgresql_where=sa.text("matched_at IS NULL"),
    )
    op.create_table(
        "site_clients",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("site_id", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_site_clients_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_site_clients")),
    )
    op.create_index(op.f("ix_site_clients_site_id"), "site_clients", ["site_id"], unique=False)
    op.create_table(
        "user_site_admins",
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("site_id", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_user_site_admins_site_id_sites"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["username"],
            ["users.username"],
            name=op.f("fk_user_site_admins_username_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("username", "site_id", name=op.f("pk_user_site_admins")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("status", sa.Text(), server_default="unclaimed", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("trigger_data_resource_id", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('unclaimed', 'claimed', 'succeeded', 'failed', 'canceled')",
            name=op.f("ck_jobs_status_valid"),
        ),
        sa.CheckConstraint("attempts >= 0 AND max_attempts >= 1", name=op.f("ck_jobs_attempts_valid")),
        sa.ForeignKeyConstraint(
            ["trigger_data_resource_id"],
            ["data_resources.id"],
            name=op.f("fk_jobs_trigger_data_resource_id_data_resources"),
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name=op.f("fk_jobs_workflow_id_workflows")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("seq", name=op.f("uq_jobs_seq")),
    )
    op.create_index(op.f("ix_jobs_status_seq"), "jobs", ["status", "seq"], unique=False)
    op.create_index(
        "ix_jobs_unclaimed", "jobs", ["seq"], unique=False, postgresql_where=sa.text("status = 'unclaimed'")
    )
    op.create_index(op.f("ix_jobs_workflow_id_seq"), "jobs", ["workflow_id", "seq"], unique=False)
    op.create_index(
        "uq_jobs_workflow_trigger",
        "jobs",
        ["workflow_id", "trigger_data_resource_id"],
        unique=True,
        postgresql_where=sa.text("trigger_data_resource_id IS NOT NULL"),
    )
    op.create_table(
        "executions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("site_id", sa.Text(), nullable=False),
        sa.Column("operation_id", sa.Text(), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("output_ids", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('succeeded', 'failed')", name=op.f("ck_executions_status_valid")),
        sa.CheckConstraint("ended_at >= started_at", name=op.f("ck_executions_ends_after_start")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_executions_job_id_jobs")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_executions_site_id_sites")),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name=op.f("fk_executions_workflow_id_workflows")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executions")),
        sa.UniqueConstraint("seq", name=op.f("uq_executions_seq")),
    )
    op.create_index(op.f("ix_executions_job_id_seq"), "executions", ["job_id", "seq"], unique=False)
    op.create_index(op.f("ix_executions_operation_id"), "executions", ["operation_id"], unique=False)
    op.create_table(
        "job_inputs",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("data_resource_id", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["data_resource_id"],
            ["data_resources.id"],
            name=op.f("fk_job_inputs_data_resource_id_data_resources"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_inputs_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "data_resource_id", name=op.f("pk_job_inputs")),
    )
    op.create_index(op.f("ix_job_inputs_data_resource_id"), "job_inputs", ["data_resource_id"], unique=False)
    op.create_table(
        "operations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("site_id", sa.Text(), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), server_default="running", nullable=False),
        sa.Column("done", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("result_execution_id", sa.Text(), nullable=True),
        sa.Column("error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("lease_expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "done = (state IN ('canceled', 'expired', 'failed', 'succeeded'))",
            name=op.f("ck_operations_done_matches_state"),
        ),
        sa.CheckConstraint(
            "state IN ('running', 'paused', 'succeeded', 'failed', 'canceled', 'expired')",
            name=op.f("ck_operations_state_valid"),
        ),
        sa.CheckConstraint(
            "NOT done OR ((result_execution_id IS NULL) <> (error IS NULL))",
            name=op.f("ck_operations_done_has_result_or_error"),
        ),
        sa.CheckConstraint(
            "done OR (result_execution_id IS NULL AND error IS NULL)",
            name=op.f("ck_operations_open_has_no_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_operations_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_operations_site_id_sites")),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name=op.f("fk_operations_workflow_id_workflows")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operations")),
        sa.UniqueConstraint("seq", name=op.f("uq_operations_seq")),
    )
    op.create_index(
        "ix_operations_expire_time",
        "operations",
        ["expire_time"],
        unique=False,
        postgresql_where=sa.text("done"),
    )
    op.create_index(op.f("ix_operations_job_id_seq"), "operations", ["job_id", "seq"], unique=False)
    op.create_index(
        "ix_operations_open_lease",
        "operations",
        ["lease_expire_time"],
        unique=False,
        postgresql_where=sa.text("NOT done"),
    )
    op.create_index(op.f("ix_operations_site_id_seq"), "operations", ["site_id", "seq"], unique=False)
    op.create_index(op.f("ix_operations_workflow_id_seq"), "operations", ["workflow_id", "seq"], unique=False)
    op.create_index(
        "uq_operations_open_job", "operations", ["job_id"], unique=True, postgresql_where=sa.text("NOT done")
    )
    # Cycles between tables: added once both sides exist.
    op.create_foreign_key(
        op.f("fk_data_resources_execution_id_executions"),
        "data_resources",
        "executions",
        ["execution_id"],
        ["id"],
    )
    op.create_foreign_key(
        op.f("fk_operations_result_execution_id_executions"),
        "operations",
        "executions",
        ["result_execution_id"],
        ["id"],
    )
    # Claims and lease ends churn rows through partial indexes (unclaimed jobs, open operations, unmatched
    # data resources): vacuum these tables long before the default 20% of dead rows.
    for table in ("jobs", "operations", "data_resources"):
        op.execute(
            f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,"
            " autovacuum_analyze_scale_factor = 0.02)"
        )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_operations_result_execution_id_executions"), "operations", type_="foreignkey")
    op.drop_constraint(
        op.f("fk_data_resources_execution_id_executions"), "data_resources", type_="foreignkey"
    )
    op.drop_index("uq_operations_open_job", table_name="operations", postgresql_where=sa.text("NOT done"))
    op.drop_index(op.f("ix_operations_workflow_id_seq"), table_name="operations")
    op.drop_index(op.f("ix_operations_site_id_seq"), table_name="operations")
    op.drop_index("ix_operations_open_lease", table_name="operations", postgresql_where=sa.text("NOT done"))
    op.drop_index(op.f("ix_operations_job_id_seq"), table_name="operations")
    op.drop_index("ix_operations_expire_time", table_name="operations", postgresql_where=sa.text("done"))
    op.drop_table("operations")
    op.drop_index(op.f("ix_job_inputs_data_resource_id"), table_name="job_inputs")
    op.drop_table("job_inputs")
    op.drop_index(op.f("ix_executions_operation_id"), table_name="executions")
    op.drop_index(op.f("ix_executions_job_id_seq"), table_name="executions")
    op.drop_table("executions")
    op.drop_index(
        "uq_jobs_workflow_trigger",
        table_name="jobs",
        postgresql_where=sa.text("trigger_data_resource_id IS NOT NULL"),
    )
    op.drop_index(op.f("ix_jobs_workflow_id_seq"), table_name="jobs")
    op.drop_index("ix_jobs_unclaimed", table_name="jobs", postgresql_where=sa.text("status = 'unclaimed'"))
    op.drop_index(op.f("ix_jobs_status_seq"), table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("user_site_admins")
    op.drop_index(op.f("ix_site_clients_site_id"), table_name="site_clients")
    op.drop_table("site_clients")
    op.drop_index(
        "ix_data_resources_unmatched",
        table_name="data_resources",
        postgresql_where=sa.text("matched_at IS NULL"),
    )
    op.drop_index(op.f("ix_data_resources_site_id_seq"), table_name="data_resources")
    op.drop_index(op.f("ix_data_resources_execution_id"), table_name="data_resources")
    op.drop_index(op.f("ix_data_resources_data_type_seq"), table_name="data_resources")
    op.drop_table("data_resources")
    op.drop_index(op.f("ix_workflows_data_types"), table_name="workflows", postgresql_using="gin")
    op.drop_table("workflows")
    op.drop_table("users")
    op.drop_table("sites")
    op.drop_index(op.f("ix_idempotency_keys_created_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
