"""Jobs as resources: made (by hand, or by the sensor's batches in store/pipeline.py), read and listed.

A job's config is fixed when the job is made, and it is made in SQL only, by `job_config()`, wherever the job
comes from: the workflow's config, overridden by the config given by hand, plus `data_resources`, the input data
resources in full as the API shows them (`data_resource_document()`), `inputs`, those of them that fill a role
of the workflow, by role, and `group`, the group the job belongs to (its outputs inherit it). Job ids come from the column's
default (`nmdc_runtime.models.JOB_ID_DEFAULT`). Claims, releases and cancels change jobs too; they live with
the operations (store/operations.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, aggregate_order_by
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.util import ClauseAdapter

from nmdc_runtime.domain.errors import NotFound
from nmdc_runtime.domain.states import JobStatus
from nmdc_runtime.models import DataResource, Job, JobInput, Operation, Workflow
from nmdc_runtime.store.pages import PageParams, fetch_page, page_of, row_bytes, weighed_page, weighed_page_of
from nmdc_runtime.store.rules import (
    capable_workflows,
    claimed_under_lapsed_lease,
    lapsed_lease,
    site_drained,
    unclaimed,
)
from nmdc_runtime.store.statements import built_once


def data_resource_document(d: sa.FromClause) -> sa.ColumnElement[Any]:
    """A data resource row of `d` (`data_resources` or a CTE of its rows) as the API shows it (`DataResourceRead`,
    whose JSON drops a zero fraction of `created_at` too)."""
    created_utc = sa.func.timezone("UTC", d.c.created_at)
    fraction = sa.case(
        (sa.cast(sa.func.date_part("microseconds", d.c.created_at), sa.BigInteger) % 1000000 == 0, ""),
        else_=sa.func.to_char(created_utc, ".US"),
    )
    created_at = sa.func.to_char(created_utc, 'YYYY-MM-DD"T"HH24:MI:SS', type_=sa.Text) + fraction + "Z"
    fields = (
        "id",
        "site_id",
        "name",
        "url",
        "data_type",
        "size",
        "checksums",
        "description",
        "requires_grant",
        "group",
    )
    pairs = [part for name in fields for part in (sa.literal(name), d.c[name])]
    return sa.func.jsonb_build_object(*pairs, sa.literal("created_at"), created_at, type_=JSONB)


def job_config(
    workflow: sa.FromClause,
    *,
    documents: sa.ColumnElement[Any],
    group: sa.ColumnElement[Any] | None = None,
    inputs: sa.ColumnElement[Any] | None = None,
    extra: sa.ColumnElement[Any] | None = None,
) -> sa.ColumnElement[Any]:
    """A new job's config, for a row of `workflow`: its config, overridden by `extra`, plus `data_resources`:
    `documents`, a JSON array of `data_resource_document`s; `inputs`: a JSON object of them by role (none:
    `{}`); and `group` (text; none: null)."""
    config = workflow.c.config
    if extra is not None:
        config = config.op("||", return_type=JSONB)(extra)
    return config.op("||", return_type=JSONB)(
        sa.func.jsonb_build_object(
            "data_resources",
            documents,
            "inputs",
            sa.func.jsonb_build_object() if inputs is None else inputs,
            "group",
            sa.cast(sa.null() if group is None else group, sa.Text),
            type_=JSONB,
        )
    )


def _create_job_statement() -> sa.Insert:
    """The statement of `create_job`, built once: a job of workflow `:workflow_id` over `:data_resource_ids`
    (their documents in the order given), `:inputs` of them by role (JSON text, role → id), `:extra` (JSON
    text) overriding the workflow's config, of group `:group`."""
    workflow = Workflow.__table__.alias("w")
    given = (
        sa.func.unnest(sa.cast(sa.bindparam("data_resource_ids"), ARRAY(sa.Text)))
        .table_valued("id", with_ordinality="ord")
        .render_derived(name="u")
    )
    d = DataResource.__table__.alias("d")
    documents = (
        sa.select(sa.func.jsonb_agg(aggregate_order_by(data_resource_document(d), given.c.ord)))
        .select_from(given.join(d, d.c.id == given.c.id))
        .scalar_subquery()
    )
    role = (
        sa.func.jsonb_each_text(sa.cast(sa.bindparam("inputs", type_=sa.Text), JSONB))
        .table_valued("key", "value")
        .render_derived(name="r")
    )
    by_role = (
        sa.select(sa.func.jsonb_object_agg(role.c.key, data_resource_document(d)))
        .select_from(role.join(d, d.c.id == role.c.value))
        .scalar_subquery()
    )
    group = sa.bindparam("group", type_=sa.Text)
    config = job_config(
        workflow,
        documents=sa.func.coalesce(documents, sa.func.jsonb_build_array()),
        inputs=sa.func.coalesce(by_role, sa.func.jsonb_build_object()),
        group=group,
        extra=sa.cast(sa.bindparam("extra", type_=sa.Text), JSONB),
    )
    row = sa.select(
        workflow.c.id,
        config,
        sa.bindparam("max_attempts", type_=sa.Integer),
        group,
        sa.bindparam("created_by", type_=sa.Text),
    ).where(workflow.c.id == sa.bindparam("workflow_id"))
    return (
        sa.insert(Job)
        .from_select([Job.workflow_id, Job.config, Job.max_attempts, Job.group, Job.created_by], row)
        .returning(*Job.__table__.c)
    )


_CREATE_JOB = _create_job_statement()


def create_job(
    session: Session,
    *,
    workflow_id: str,
    data_resource_ids: Sequence[str],
    config: dict[str, Any] | None,
    max_attempts: int,
    created_by: str,
    inputs: Mapping[str, str] | None = None,
    group: str | None = None,
) -> Job:
    """Insert an unclaimed job of a workflow over data resources (`inputs`: those of them that fill its roles,
    role → id), of a group (or none), and its inputs; the caller checked they exist and fit (see
    `nmdc_runtime.services.catalog.create_job`)."""
    ids = list(dict.fromkeys(data_resource_ids))
    job = session.execute(
        sa.select(Job).from_statement(_CREATE_JOB),
        {
            "workflow_id": workflow_id,
            "extra": json.dumps(config or {}),
            "inputs": json.dumps(dict(inputs or {})),
            "group": group,
            "data_resource_ids": ids,
            "max_attempts": max_attempts,
            "created_by": created_by,
        },
    ).scalar_one()
    if ids:
        session.execute(sa.insert(JobInput), [{"job_id": job.id, "data_resource_id": id_} for id_ in ids])
    return job


def get_job(session: Session, *, job_id: str) -> Job:
    """One job, or NotFound."""
    row = session.get(Job, job_id)
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    return row


def _conditions(
    status: JobStatus | sa.BindParameter | None,
    workflow_id: str | sa.BindParameter | None,
    data_resource_id: str | sa.BindParameter | None,
    group: str | sa.BindParameter | None = None,
) -> list[sa.ColumnElement[bool]]:
    """The filters of `list_jobs`, on `jobs`, for those given."""
    conditions = []
    if status is not None:
        conditions.append(Job.status == status)
    if workflow_id is not None:
        conditions.append(Job.workflow_id == workflow_id)
    if data_resource_id is not None:
        conditions.append(
            Job.id.in_(sa.select(JobInput.job_id).where(JobInput.data_resource_id == data_resource_id))
        )
    if group is not None:
        conditions.append(Job.group == group)
    return conditions


@built_once
def _claimable_statement(
    *,
    status: bool,
    workflow_id: bool,
    data_resource_id: bool,
    group: bool,
    after: bool,
    now: bool,
    workflow_ids: bool = False,
    weighed: bool = False,
) -> tuple[sa.Select, Any]:
    """A page of the jobs `rules.claimable_by` keeps, for the filters named (as bound parameters: `site_key`,
    `drain_after`, `filter_*`, `after`, `page_limit`, `now` when given, else the database's clock, and, when
    `weighed`, `page_size` and `page_bytes` for `pages.weighed_page`; `workflow_ids`: jobs of any of the
    workflows `filter_workflow_ids` names): built so that a page costs what the open work costs, not every job
    ever made, as the union of the two parts of `rules.open_for_claim`, each from an index of its own, merged in
    `seq` order. A drained site's capable workflows are none (`rules.site_drained`, decided once, before the
    rest): its page is empty.

    - unclaimed jobs: for each workflow the site may run, its first unclaimed jobs after the page's start
      (at most a page of them, from `ix_jobs_unclaimed_workflow`);
    - claims under a lapsed lease: open operations whose lease lapsed (`ix_operations_open_lease`), then
      their jobs.

    Built once for each set of filters (and kept): building it costs more than running it.
    """
    clock = sa.bindparam("now", type_=sa.DateTime(timezone=True)) if now else sa.func.now()
    site_id = sa.bindparam("site_key")
    conditions = _conditions(
        sa.bindparam("filter_status") if status else None,
        sa.bindparam("filter_workflow_id") if workflow_id else None,
        sa.bindparam("filter_data_resource_id") if data_resource_id else None,
        sa.bindparam("filter_group") if group else None,
    )
    if workflow_ids:
        conditions.append(
            Job.workflow_id == sa.any_(sa.bindparam("filter_workflow_ids", type_=ARRAY(sa.Text)))
        )
    if after:
        conditions.append(Job.seq > sa.bindparam("after"))
    limit = sa.bindparam("page_limit", type_=sa.Integer)
    not_drained = sa.not_(site_drained(site_id, sa.bindparam("drain_after", type_=sa.Integer)))
    runnable = capable_workflows(site_id).where(not_drained)
    capable = runnable.subquery("capable")
    # Ordered as `ix_jobs_unclaimed_workflow` is, with the workflow as a range of one rather than an equality: by
    # seq alone (or with `=`, which makes the workflow a constant of the order) the planner may walk
    # `ix_jobs_unclaimed` in seq order past every other workflow's unclaimed jobs, guessing they are spread
    # evenly (measured: 300 ms behind 324,000 of them, bench/README.md); this order only that index gives.
    waiting = (
        sa.select(Job)
        .where(Job.workflow_id.between(capable.c.id, capable.c.id), unclaimed(), *conditions)
        .order_by(Job.workflow_id, Job.seq)
        .limit(limit)
        .lateral("waiting")
    )
    # The jobs of the lapsed leases, worked out first (`= ANY(ARRAY(...))`: a list, not a join the planner
    # could start from the jobs' side), so this part reads the few lapsed operations, not every claimed job.
    # Only the lapsed leases of workflows the site may run: the others' (a fleet of silent sites' claims, until
    # the reaper ends them) are not its business and cost a look each.
    lapsed_jobs = (
        sa.select(Operation.job_id)
        .where(lapsed_lease(clock), Operation.workflow_id.in_(runnable))
        .scalar_subquery()
    )
    # Fetched by id alone, then judged (a materialized CTE): with the rule's `status = 'claimed'` in the same
    # scan, the planner read every claimed job through `ix_jobs_status_seq` whenever its statistics had not
    # seen that status (as `store.operations._job_locked_if` says for the holder's writes).
    fetched = (
        sa.select(Job)
        .where(Job.id == sa.any_(sa.func.array(lapsed_jobs)))
        .cte("lapsed_jobs")
        .prefix_with("MATERIALIZED")
    )
    candidate = aliased(Job, fetched)
    on_fetched = ClauseAdapter(fetched).traverse
    lapsed = (
        sa.select(candidate)
        .join(Operation, Operation.job_id == candidate.id)
        .where(
            on_fetched(claimed_under_lapsed_lease(clock)),
            candidate.workflow_id.in_(runnable),
            *(on_fetched(condition) for condition in conditions),
        )
    )
    # The parts differ in status, and a job has at most one open operation (uq_operations_open_job): no job
    # comes twice.
    union = sa.union_all(sa.select(waiting).select_from(capable.join(waiting, sa.true())), lapsed)
    claimable = union.subquery("claimable")
    job = aliased(Job, claimable)
    stmt = sa.select(job).order_by(job.seq).limit(limit)
    if weighed:
        stmt = weighed_page(
            stmt,
            job.seq,
            weight=row_bytes(claimable),
            size=sa.bindparam("page_size", type_=sa.Integer),
            max_bytes=sa.bindparam("page_bytes", type_=sa.Integer),
        )
    return stmt, job.seq


def claimable_first_page(*, workflow_ids: bool) -> sa.Select:
    """The claimable listing's first page as a statement to build on (`store.operations.lock_next_claimable`):
    its parameters are `claimable_page_query`'s (`now` included; `filter_workflow_ids` when `workflow_ids`)."""
    return _claimable_statement(
        status=False,
        workflow_id=False,
        data_resource_id=False,
        group=False,
        after=False,
        now=True,
        workflow_ids=workflow_ids,
    )[0]


def claimable_page_query(
    *,
    site_id: str,
    drain_after: int,
    page: PageParams,
    status: JobStatus | None = None,
    workflow_id: str | None = None,
    data_resource_id: str | None = None,
    group: str | None = None,
    workflow_ids: Sequence[str] | None = None,
    now: datetime | None = None,
) -> tuple[sa.Select, dict[str, Any], Any]:
    """The statement of one page of the claimable listing (one row more than the page, which tells whether
    another follows; with `page.max_bytes`, a `pages.weighed_page`), its parameters, and the `seq` it is
    ordered by. `workflow_ids` keeps the jobs of any of those workflows. `drain_after`: the faults in a row that
    drain a site (`Policy.site_drain_after`)."""
    stmt, seq = _claimable_statement(
        status=status is not None,
        workflow_id=workflow_id is not None,
        data_resource_id=data_resource_id is not None,
        group=group is not None,
        after=page.after is not None,
        now=now is not None,
        workflow_ids=workflow_ids is not None,
        weighed=page.max_bytes is not None,
    )
    params = {
        "site_key": site_id,
        "drain_after": drain_after,
        "page_limit": page.size + 1,
        "after": page.after,
        "now": now,
        "page_size": page.size,
        "page_bytes": page.max_bytes,
    }
    params.update(
        filter_status=status.value if status is not None else None,
        filter_workflow_id=workflow_id,
        filter_data_resource_id=data_resource_id,
        filter_group=group,
        filter_workflow_ids=list(workflow_ids) if workflow_ids is not None else None,
    )
    return stmt, {k: v for k, v in params.items() if v is not None}, seq


def list_jobs(
    session: Session,
    *,
    page: PageParams,
    status: JobStatus | None = None,
    workflow_id: str | None = None,
    data_resource_id: str | None = None,
    group: str | None = None,
    claimable_by_site: str | None = None,
    drain_after: int | None = None,
    now: datetime | None = None,
) -> tuple[Sequence[Job], str | None]:
    """One page of jobs matching every given filter, in creation order.

    `claimable_by_site` (a site id) keeps the jobs that site could claim at `now` (default: the database's
    clock), as `nmdc_runtime.store.rules.claimable_by` says (in the form `_claimable_statement` gives it),
    `drain_after` faults in a row draining a site. Only the claim itself is authoritative: another site may
    claim a listed job first.
    """
    if claimable_by_site is None:
        stmt = sa.select(Job).where(
            *_conditions(status and status.value, workflow_id, data_resource_id, group)
        )
        return fetch_page(session, stmt, Job.seq, page)
    if drain_after is None:
        raise ValueError("the claimable listing needs drain_after (Policy.site_drain_after)")
    stmt, params, seq = claimable_page_query(
        site_id=claimable_by_site,
        drain_after=drain_after,
        page=page,
        status=status,
        workflow_id=workflow_id,
        data_resource_id=data_resource_id,
        group=group,
        now=now,
    )
    if page.max_bytes is None:
        return page_of(session.scalars(stmt, params).all(), seq, page)
    return weighed_page_of(session.execute(stmt, params).all(), seq, page)
