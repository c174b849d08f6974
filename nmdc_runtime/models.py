"""The runtime's tables (SQLAlchemy 2). The database itself guards the invariants the API relies on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from nmdc_runtime.domain.states import ExecutionStatus, JobStatus, OperationState

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


JOB_ID_DEFAULT = "'job-' || replace(gen_random_uuid()::text, '-', '')"
"""SQL for a new job id: the shape `nmdc_runtime.ids.new_id("job")` gives other kinds of ids."""


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


def _now():
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=sa.func.now())


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONB, list[str]: ARRAY(Text), datetime: DateTime(timezone=True)}


class Site(Base):
    """An organisation that hosts data and/or executes workflows."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    name: Mapped[str] = mapped_column(Text)
    capabilities: Mapped[list[str]] = mapped_column(server_default="{}")
    # Set while an admin has disabled the site: its clients get no token, and their tokens stop working.
    disabled_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = _now()


class SiteClient(Base):
    """Credentials a site acts through; only the secret's hash is kept."""

    __tablename__ = "site_clients"

    client_id: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(Text)
    # Set when revoked, for good: the secret gets no token, and tokens issued with it stop working.
    revoked_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = _now()


class User(Base):
    """A person; `admin` users are runtime staff."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(Text, primary_key=True)
    password_hash: Mapped[str] = mapped_column(Text)
    admin: Mapped[bool] = mapped_column(Boolean, server_default=sa.false())
    # Set while an admin has disabled the user: no token, and existing tokens stop working.
    disabled_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = _now()


class UserSiteAdmin(Base):
    """A user who administers a site (may generate its credentials)."""

    __tablename__ = "user_site_admins"

    username: Mapped[str] = mapped_column(ForeignKey("users.username", ondelete="CASCADE"), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)


class DataResource(Base):
    """Data a site hosts and registers; the sensor turns new ones into jobs."""

    __tablename__ = "data_resources"
    __table_args__ = (
        CheckConstraint("size >= 0", name="size_non_negative"),
        Index(None, "site_id", "seq"),
        Index(None, "data_type", "seq"),
        # The sensor's queue: data resources not yet matched against the workflows.
        Index("ix_data_resources_unmatched", "seq", postgresql_where=sa.text("matched_at IS NULL")),
        # A group's inputs by data type, first registered first: how the sensor finds a group's roles.
        Index(
            "ix_data_resources_group",
            "group",
            "data_type",
            "seq",
            postgresql_where=sa.text('"group" IS NOT NULL'),
        ),
        CheckConstraint('char_length("group") <= 256', name="group_length"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    name: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    data_type: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    checksums: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    description: Mapped[str | None] = mapped_column(Text)
    # Its data site serves it only to callers with an access grant (POST /data_resources/{id}:access).
    requires_grant: Mapped[bool] = mapped_column(Boolean, server_default=sa.false())
    # The sample (or data generation) it belongs to, across sites: workflows with inputs by role make one job
    # per group.
    group: Mapped[str | None] = mapped_column(Text)
    # Set when an execution's output registered this data resource.
    execution_id: Mapped[str | None] = mapped_column(ForeignKey("executions.id", use_alter=True), index=True)
    # Set by the sensor once jobs have been made for every matching workflow.
    matched_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = _now()


class Workflow(Base):
    """What to run on which data types, and what an executing site needs to run it."""

    __tablename__ = "workflows"
    __table_args__ = (
        Index(None, "data_types", postgresql_using="gin"),
        CheckConstraint("lease_seconds IS NULL OR lease_seconds > 0", name="lease_seconds_positive"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    name: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(Text)
    data_types: Mapped[list[str]] = mapped_column(server_default="{}")
    required_capabilities: Mapped[list[str]] = mapped_column(server_default="{}")
    config: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=sa.true())
    # How long its claims last without a heartbeat; None: NMDC_CLAIM_LEASE_SECONDS.
    lease_seconds: Mapped[int | None] = mapped_column(Integer)
    # Its inputs by role (`{role: {"data_type", "optional"}}`), or None: one job per data resource of its
    # data types. With inputs, `data_types` is theirs (kept for the matcher's look-up) and jobs are per group.
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    # When the sensor last made jobs for the data resources that existed before this workflow matched them.
    backfilled_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Job(Base):
    """A configured unit of work: a workflow over data resources, claimed and executed later by a site."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JobStatus), name="status_valid"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts_valid"),
        # The sensor makes one job per (workflow, data resource); jobs made by hand have no trigger.
        Index(
            "uq_jobs_workflow_trigger",
            "workflow_id",
            "trigger_data_resource_id",
            unique=True,
            postgresql_where=sa.text("trigger_data_resource_id IS NOT NULL"),
        ),
        # ... and one per (workflow, group) of a workflow with inputs by role.
        Index(
            "uq_jobs_workflow_trigger_group",
            "workflow_id",
            "trigger_group",
            unique=True,
            postgresql_where=sa.text("trigger_group IS NOT NULL"),
        ),
        CheckConstraint('trigger_group IS NULL OR trigger_group = "group"', name="trigger_group_is_group"),
        Index("ix_jobs_group", "group", "seq", postgresql_where=sa.text('"group" IS NOT NULL')),
        Index("ix_jobs_unclaimed", "seq", postgresql_where=sa.text("status = 'unclaimed'")),
        # The claimable listing: each workflow's unclaimed jobs in seq order.
        Index(
            "ix_jobs_unclaimed_workflow",
            "workflow_id",
            "seq",
            postgresql_where=sa.text("status = 'unclaimed'"),
        ),
        Index(None, "workflow_id", "seq"),
        Index(None, "status", "seq"),
    )

    # Made by the database, whoever inserts the job (POST /jobs or the sensor's batches): one definition.
    id: Mapped[str] = mapped_column(Text, primary_key=True, server_default=sa.text(JOB_ID_DEFAULT))
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id"))
    config: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    status: Mapped[str] = mapped_column(Text, server_default=JobStatus.UNCLAIMED.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer)
    trigger_data_resource_id: Mapped[str | None] = mapped_column(ForeignKey("data_resources.id"))
    # The group its inputs belong to (config.group): its outputs inherit it.
    group: Mapped[str | None] = mapped_column(Text)
    # Set when the sensor made it for a group (a workflow with inputs by role): the group.
    trigger_group: Mapped[str | None] = mapped_column(Text)
    # Who made it: a Dagster run or sensor tick ("dagster:tick:<id>"), or a user ("user:<name>").
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class JobInput(Base):
    """The data resources a job reads (for the `data_resource_id` filters)."""

    __tablename__ = "job_inputs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    data_resource_id: Mapped[str] = mapped_column(
        ForeignKey("data_resources.id"), primary_key=True, index=True
    )


class WaitingGroup(Base):
    """A group that has some but not all required inputs of a workflow with inputs by role, since `since` (its
    first such input's registration); written by the sensor, deleted once the group is complete.

    It keeps the incomplete groups findable without reading every group ever complete (the asset check
    `groups_complete` reads it, and judges each row again as it reads it).
    """

    __tablename__ = "waiting_groups"
    __table_args__ = (Index(None, "since"),)

    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id"), primary_key=True)
    group: Mapped[str] = mapped_column(Text, primary_key=True)
    since: Mapped[datetime] = mapped_column()


class Operation(Base):
    """The long-running operation a claim returns: the site's promise to finish the job."""

    __tablename__ = "operations"
    __table_args__ = (
        CheckConstraint(_in("state", OperationState), name="state_valid"),
        CheckConstraint(
            f"done = ({_in('state', sorted(s.value for s in OperationState if s.done))})",
            name="done_matches_state",
        ),
        CheckConstraint(
            "NOT done OR ((result_execution_id IS NULL) <> (error IS NULL))", name="done_has_result_or_error"
        ),
        CheckConstraint(
            "done OR (result_execution_id IS NULL AND error IS NULL)", name="open_has_no_outcome"
        ),
        CheckConstraint("lease_seconds > 0", name="lease_seconds_positive"),
        # At most one unfinished operation per job: the last word on claim exclusivity.
        Index("uq_operations_open_job", "job_id", unique=True, postgresql_where=sa.text("NOT done")),
        # The lease reaper scans open operations by lease end (and the claimable listing finds lapsed claims).
        Index("ix_operations_open_lease", "lease_expire_time", postgresql_where=sa.text("NOT done")),
        # Open operations in seq order, of all sites and of one: the `done=false` lists.
        Index("ix_operations_open_seq", "seq", postgresql_where=sa.text("NOT done")),
        Index("ix_operations_site_open", "site_id", "seq", postgresql_where=sa.text("NOT done")),
        Index("ix_operations_expire_time", "expire_time", postgresql_where=sa.text("done")),
        # The health check on the last hour's outcomes: a done operation's update_time is when it ended.
        Index("ix_operations_ended", "update_time", postgresql_where=sa.text("done")),
        Index(None, "job_id", "seq"),
        Index(None, "site_id", "seq"),
        Index(None, "workflow_id", "seq"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(Text, server_default=OperationState.RUNNING.value)
    done: Mapped[bool] = mapped_column(Boolean, server_default=sa.false())
    result_execution_id: Mapped[str | None] = mapped_column(ForeignKey("executions.id", use_alter=True))
    error: Mapped[dict[str, Any] | None] = mapped_column()
    # Site-supplied metadata (progress, message, anything else); the fixed keys are columns.
    extra_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", server_default="{}")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=sa.false())
    lease_expire_time: Mapped[datetime] = mapped_column()
    # The claim's lease length: every heartbeat by the holder renews the lease by this much.
    lease_seconds: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = _now()
    update_time: Mapped[datetime] = _now()
    # Set when done: end time plus the retention period; past it the operation may be deleted.
    expire_time: Mapped[datetime | None] = mapped_column()
    # Numbered by the database (trigger `operations_number_ending`, sequence `operations_end_seq`) when the
    # operation becomes done: the order operations ended in, which the Dagster operations sensor follows.
    end_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    # Executions recorded under it, counted by the statements that record them: the cap's check holds under
    # concurrent requests only on a value of this row, which a waiting statement reads again once it has the lock.
    execution_count: Mapped[int] = mapped_column(Integer, server_default="0")

    @hybrid_property
    def paused(self) -> bool:
        """Derived from `state`, in Python and in SQL alike, so the two can never disagree."""
        return self.state == OperationState.PAUSED.value


class SiteEnding(Base):
    """A judged ending of a site's operation (`domain.drains.ending_kind`: a fault or a success), or an undrain
    (no operation).

    Appended by the trigger `operations_note_site_ending` as each operation ends (migration 0013), whichever
    code ends it, and by an undrain; never updated, so the transactions that end operations never wait on each
    other for a row of their site. A site's streak is its faults after its last other row
    (`store.rules.fault_streak`); the reaper deletes what lies before that.
    """

    __tablename__ = "site_endings"
    __table_args__ = (
        Index(None, "site_id", "seq"),
        # Where each site's streak starts: its last success or undrain.
        Index("ix_site_endings_resets", "site_id", "seq", postgresql_where=sa.text("NOT fault")),
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    site_id: Mapped[str] = mapped_column(Text)
    # A fault (counts toward draining the site); else a success or an undrain (ends its streak).
    fault: Mapped[bool] = mapped_column(Boolean)
    # None for an undrain.
    operation_id: Mapped[str | None] = mapped_column(Text)
    ended_at: Mapped[datetime] = _now()


class Execution(Base):
    """What an executing site did for a job; kept after its operation is gone."""

    __tablename__ = "executions"
    __table_args__ = (
        CheckConstraint(_in("status", ExecutionStatus), name="status_valid"),
        CheckConstraint("ended_at >= started_at", name="ends_after_start"),
        Index(None, "job_id", "seq"),
        Index(None, "operation_id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    # No foreign key: operations are deleted after retention, executions are kept.
    operation_id: Mapped[str] = mapped_column(Text)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id"))
    status: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime] = mapped_column()
    output_ids: Mapped[list[str]] = mapped_column(server_default="{}")
    details: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class IdempotencyKey(Base):
    """What the first POST sent with an `Idempotency-Key` created, as it was, given again to repeats."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index(None, "created_at"),)

    principal: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    endpoint: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[str] = mapped_column(Text)
    # The rows the first request created, as documents (`store.idempotency.row_document`); NULL only inside
    # that request's own transaction.
    created: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class Tally(Base):
    """How many rows a table holds (`jobs.<status>`, `executions`), as of the last fold of `tally_changes`.

    Counting every job and execution ever made costs a scan that grows with history; the health figures
    read these few rows plus the changes not folded yet (migration 0009 has the triggers).
    """

    __tablename__ = "tallies"

    counted: Mapped[str] = mapped_column(Text, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


# The changes to a tally, appended by the triggers of migration 0009 (never updated in place, so the
# transactions that change jobs never wait on each other for a counter row) and folded into `tallies`
# by the reaper. A heap without a key: rows are only appended, summed and deleted.
tally_changes = sa.Table(
    "tally_changes",
    Base.metadata,
    sa.Column("counted", Text, nullable=False),
    sa.Column("n", BigInteger, nullable=False),
)
