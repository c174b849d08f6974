"""Asset checks: red or green in the UI for what staff must act on.

Each check compares one figure of `runtime_status` (`runtime_status_figures`) with a threshold from the
runtime settings (`Settings`, which the `RuntimeDatabase` resource carries). The `runtime_health` sensor evaluates them on every
tick and records the results without a run (`AssetCheckEvaluation`s in `SensorResult.asset_events`);
`runtime_health_checks` is the same evaluation as an executable check, so "Execute" in the UI re-evaluates
them at once (in a run). Checks apply to a whole asset, not to one workflow's partition.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations (resources) as real types.

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    ResourceParam,
    multi_asset_check,
)

from nmdc_runtime.config import Settings
from nmdc_runtime.dagster.assets import JOBS, OPERATIONS, WINDOW, runtime_status_figures
from nmdc_runtime.dagster.resources import RuntimeDatabase
from nmdc_runtime.store import pipeline as pipeline_store

LAPSED_LEASES_REAPED = AssetCheckSpec(
    "lapsed_leases_reaped",
    asset=OPERATIONS,
    description=(
        "Fails when an open operation's lease lapsed more than NMDC_CHECK_LAPSED_LEASE_SECONDS ago and nobody "
        "has ended it. The operations_reaper sensor ends lapsed leases every 10 s, so it is not running or its "
        "ticks fail: open Automation → operations_reaper, start it if it is stopped, and read the error of "
        "its failed ticks (a database outage shows there)."
    ),
)
FAILED_OPERATIONS_SHARE = AssetCheckSpec(
    "failed_operations_share",
    asset=OPERATIONS,
    description=(
        "Fails when more than NMDC_CHECK_FAILED_OPERATIONS_SHARE of the operations that ended in the last "
        "hour failed or expired (canceled ones are not counted). Open the execution history of the check "
        "operation_succeeded: each failure's site_id, workflow_id and error_code tell whether one site (ask its "
        "staff for its logs), one workflow (its config or required capabilities) or the inputs (DATA_LOSS: a "
        "data site's checksums) are at fault."
    ),
)
UNCLAIMED_JOBS_CLAIMED = AssetCheckSpec(
    "unclaimed_jobs_claimed",
    asset=JOBS,
    description=(
        "Fails when the oldest unclaimed job has waited longer than NMDC_CHECK_UNCLAIMED_JOB_SECONDS: no "
        "executing site takes jobs of its workflow. Check that a site with the workflow's "
        "required_capabilities runs `nmdc-site run --workflow <id>` and can reach the API (GET "
        "/jobs?claimable=true as that site), or disable the workflow if nobody should run it."
    ),
)
DATA_RESOURCES_MATCHED = AssetCheckSpec(
    "data_resources_matched",
    asset=JOBS,
    description=(
        "Fails when a registered data resource has waited longer than "
        "NMDC_CHECK_UNMATCHED_DATA_RESOURCE_SECONDS for the data_resources_sensor, which matches new data "
        "resources every few seconds: open Automation → data_resources_sensor, start it if it is stopped, "
        "and read the error of its failed ticks."
    ),
)
GROUPS_COMPLETE = AssetCheckSpec(
    "groups_complete",
    asset=JOBS,
    description=(
        "Fails when a group has had some but not all required inputs of an enabled workflow with inputs by role "
        "for longer than NMDC_CHECK_INCOMPLETE_GROUP_SECONDS: its job waits for data that has not come. The "
        "result names the groups (oldest first) and the roles they miss. Find who should register that data "
        "(GET /data_resources?group=<group> shows what the group has): a data site that has not registered "
        "it, or the workflow that makes it, whose jobs of the group may have failed (GET /jobs?group=<group>). "
        "A job can also be made by hand (POST /jobs with its inputs by role)."
    ),
)
JOBS_FAILED_FOR_GOOD = AssetCheckSpec(
    "jobs_failed_for_good",
    asset=JOBS,
    description=(
        "Warns when a job ended failed after its last attempt in the last hour: nobody will run it again. Its "
        "result names the jobs and the executions that failed (job_ids, execution_ids); the operations asset's "
        "check operation_succeeded has each one's error ('JOB FAILED'). Fix the cause, then make the job again "
        "(POST /jobs with its workflow and data resources)."
    ),
)

SITES_NOT_DRAINED = AssetCheckSpec(
    "sites_not_drained",
    asset=OPERATIONS,
    description=(
        "Fails when a site is drained: its last NMDC_SITE_DRAIN_AFTER judged operations in a row each failed "
        "at the site (expired, failed with a code other than DATA_LOSS or UNAVAILABLE, or released with "
        "SITE_FAULT), so it claims no new job. GET /sites/<id> names those operations: read their errors, ask "
        "the site's staff to fix its configuration, then lift the drain (`nmdc-runtime sites undrain <id>`, "
        "or POST /sites/<id>:undrain)."
    ),
)

FAILED_FOR_GOOD_NAMED = 20
"""Jobs failed for good that the check's result names; past this, the count only."""

SPECS = [
    LAPSED_LEASES_REAPED,
    FAILED_OPERATIONS_SHARE,
    UNCLAIMED_JOBS_CLAIMED,
    DATA_RESOURCES_MATCHED,
    GROUPS_COMPLETE,
    JOBS_FAILED_FOR_GOOD,
    SITES_NOT_DRAINED,
]


@dataclass(frozen=True)
class Finding:
    """One check's outcome: whether it passed, what was found, and the figure against its threshold."""

    spec: AssetCheckSpec
    passed: bool
    description: str
    metadata: dict[str, Any]
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR

    def _fields(self) -> dict[str, Any]:
        return {
            "asset_key": self.spec.asset_key,
            "check_name": self.spec.name,
            "passed": self.passed,
            "metadata": self.metadata,
            "severity": self.severity,
            "description": self.description,
        }

    def evaluation(self) -> AssetCheckEvaluation:
        """The result as recorded without a run."""
        return AssetCheckEvaluation(**self._fields())

    def result(self) -> AssetCheckResult:
        """The result as an executed check yields it."""
        return AssetCheckResult(**self._fields())


def _at_most(spec: AssetCheckSpec, value: float, threshold: float, found: str, **extra: Any) -> Finding:
    passed = value <= threshold
    return Finding(
        spec,
        passed,
        ("OK: " if passed else "FAILED: ") + found,
        {"value": value, "threshold": threshold, **extra},
    )


def evaluate(
    figures: Mapping[str, Any], settings: Settings, named: Sequence[pipeline_store.FailedForGood] = ()
) -> list[Finding]:
    """Every check of `SPECS` on the figures of `runtime_status_figures`, with the settings' thresholds;
    `named` are the last jobs failed for good that the figures count."""
    overdue = figures["lapsed_leases_overdue"]
    unclaimed_age = figures["oldest_unclaimed_job_age_seconds"]
    unmatched_age = figures["oldest_unmatched_data_resource_age_seconds"]
    ended, failed = figures["operations_ended_last_hour"], figures["operations_failed_last_hour"]
    share = figures["failed_operations_share_last_hour"]
    drained = figures["drained_sites"]
    overdue_groups = figures["incomplete_groups_overdue"]
    waiting_named = figures["incomplete_groups_overdue_named"].value
    return [
        _at_most(
            LAPSED_LEASES_REAPED,
            overdue,
            0,
            f"{overdue} open operation(s) whose lease lapsed more than "
            f"{settings.check_lapsed_lease_seconds} s ago",
            lapsed_leases=figures["lapsed_leases"],
        ),
        _at_most(
            FAILED_OPERATIONS_SHARE,
            share,
            settings.check_failed_operations_share,
            f"{share:.0%} of the operations that ran to an end in the last hour failed or expired "
            f"({failed} of them; {ended} ended in all); threshold {settings.check_failed_operations_share:.0%}",
            operations_failed=failed,
            operations_ended=ended,
        ),
        _at_most(
            UNCLAIMED_JOBS_CLAIMED,
            unclaimed_age,
            settings.check_unclaimed_job_seconds,
            f"the oldest unclaimed job has waited {unclaimed_age:.0f} s "
            f"(threshold {settings.check_unclaimed_job_seconds} s; {figures['jobs_unclaimed']} unclaimed)",
            jobs_unclaimed=figures["jobs_unclaimed"],
        ),
        _at_most(
            DATA_RESOURCES_MATCHED,
            unmatched_age,
            settings.check_unmatched_data_resource_seconds,
            f"the oldest data resource waiting for the sensor has waited {unmatched_age:.0f} s "
            f"(threshold {settings.check_unmatched_data_resource_seconds} s; "
            f"{figures['unmatched_data_resources']} waiting)",
            unmatched_data_resources=figures["unmatched_data_resources"],
        ),
        _at_most(
            GROUPS_COMPLETE,
            overdue_groups,
            0,
            f"{overdue_groups} group(s) have waited longer than {settings.check_incomplete_group_seconds} s "
            f"for inputs ({figures['incomplete_groups']} waiting in all)"
            + "".join(
                f"; {g['group']} (workflow {g['workflow_id']}) misses {', '.join(g['missing'])}"
                for g in waiting_named
            )
            + (" ..." if overdue_groups > len(waiting_named) else ""),
            incomplete_groups=figures["incomplete_groups"],
            groups=MetadataValue.json(waiting_named),
        ),
        _failed_for_good(figures["jobs_failed_for_good_last_hour"], named),
        _at_most(
            SITES_NOT_DRAINED,
            drained,
            0,
            f"{drained} drained site(s)" + (f": {figures['drained_site_ids']}" if drained else ""),
            sites=figures["drained_site_ids"],
        ),
    ]


def _failed_for_good(count: int, named: Sequence[pipeline_store.FailedForGood]) -> Finding:
    text = f"{count} job(s) ended failed after their last attempt in the last hour"
    if named:
        text += ": " + ", ".join(
            f"{job.job_id} (execution {job.execution_id})"
            if job.execution_id
            else f"{job.job_id} (no execution)"
            for job in named
        )
    return Finding(
        JOBS_FAILED_FOR_GOOD,
        count == 0,
        ("OK: " if count == 0 else "WARNING: ") + text,
        {
            "value": count,
            "threshold": 0,
            "job_ids": MetadataValue.json([job.job_id for job in named]),
            "execution_ids": MetadataValue.json([job.execution_id for job in named]),
        },
        severity=AssetCheckSeverity.WARN,
    )


def health(runtime: RuntimeDatabase, *, now: datetime) -> tuple[dict[str, Any], list[Finding]]:
    """The queue's figures (`runtime_status_figures`) and every check of `SPECS` on them."""
    figures = runtime_status_figures(runtime, now=now)
    named: list[pipeline_store.FailedForGood] = []
    if figures["jobs_failed_for_good_last_hour"]:
        with runtime.session() as session:
            named = pipeline_store.jobs_failed_for_good(
                session, since=now - WINDOW, limit=FAILED_FOR_GOOD_NAMED
            )
    return figures, evaluate(figures, runtime.settings, named)


# can_subset: each check can be executed on its own from the UI (otherwise Dagster asks to materialize the
# external assets with them, which nothing can).
@multi_asset_check(specs=SPECS, name="runtime_health_checks", can_subset=True)
def runtime_health_checks(
    context: AssetCheckExecutionContext, runtime: ResourceParam[RuntimeDatabase]
) -> Iterator[AssetCheckResult]:
    """The checks of the runtime_health sensor, evaluated now in a run (the UI's "Execute")."""
    selected = context.selected_asset_check_keys
    _, findings = health(runtime, now=datetime.now(UTC))
    for finding in findings:
        if AssetCheckKey(finding.spec.asset_key, finding.spec.name) in selected:
            yield finding.result()
