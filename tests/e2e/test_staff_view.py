"""What staff see in Dagster, checked through the Dagster GraphQL API the UI itself reads, and in a real browser.

One stack for the module: the API and `dagster dev` (webserver, daemon, code server) on this run's runtime
database and a Dagster database of its own (sensor cursors kept by other tests' daemons would skip this
module's rows). The story, in two acts. A healthy stack (`stack`): a data site registers three tables of the
`stats` workflow, the sensor makes their jobs, an executing site finishes one with a result; nothing is wrong,
and nothing may look wrong. Then (`story`) the site's run of a second job fails: it records a failed execution
and finishes the operation with an error; jobs have one attempt (NMDC_MAX_ATTEMPTS=1), so that job is failed
for good. The third job waits. The health sensor ticks every 5 s. Tests that need only the healthy stack come
first in the module, so that they see it before the failure.

The browser test drives Debian's Chromium (`apt-get install chromium`) with playwright, without downloading
a browser, and is skipped where there is none. `make screenshots` runs it with SCREENSHOTS_DIR=docs/img to
refresh the README's pictures; otherwise the pictures go to a temporary folder.

Cost, in full runs of `make test` (three workers, two cores): 29-35 s to start the stack and tell the first
act, 39 s for the browser; the rest a few seconds. The whole module runs on one worker (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from nmdc_runtime.db import Database, database_name, ensure_database, with_database
from nmdc_runtime.models import Workflow
from nmdc_runtime.services import accounts as accounts_service
from nmdc_site.client import NmdcClient
from tests.conftest import empty_tables
from tests.processes import live_api, live_dagster, wait_for

pytestmark = pytest.mark.e2e

WORKFLOW = "stats"
DATA_TYPE = "table"
LOCATION = "nmdc_runtime"
REPOSITORY = "__repository__"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT = 60.0


@dataclass(frozen=True)
class Stack:
    dagster: str
    api: str
    exec_site: NmdcClient
    succeeded_job: str
    succeeded_operation: str
    succeeded_execution: str
    failing_job: str
    waiting_job: str


@dataclass(frozen=True)
class Story:
    dagster: str
    api: str
    succeeded_job: str
    succeeded_operation: str
    failed_job: str
    failed_operation: str
    failed_execution: str
    waiting_job: str


def graphql(dagster: str, query: str, **variables: Any) -> dict[str, Any]:
    """One query to the webserver's /graphql, as the UI sends it; the `data`, or an assertion error."""
    response = httpx.post(dagster + "/graphql", json={"query": query, "variables": variables}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


TICKS = """
query Ticks($sensor: String!) {
  sensorOrError(sensorSelector: {repositoryLocationName: "nmdc_runtime", repositoryName: "__repository__",
                                 sensorName: $sensor}) {
    ... on Sensor { sensorState { ticks(limit: 100) { tickId status skipReason cursor } } }
  }
}
"""

ENTRIES = """
  label
  ... on TextMetadataEntry { text }
  ... on BoolMetadataEntry { boolValue }
  ... on IntMetadataEntry { intValue }
"""

OBSERVATIONS = f"""
query Observations {{
  assetOrError(assetKey: {{path: ["operations"]}}) {{
    ... on Asset {{ assetObservations(limit: 20) {{ partition description metadataEntries {{ {ENTRIES} }} }} }}
  }}
}}
"""

MATERIALIZATIONS = f"""
query Materializations {{
  assetOrError(assetKey: {{path: ["executions"]}}) {{
    ... on Asset {{ assetMaterializations(limit: 50) {{ description metadataEntries {{ {ENTRIES} }} }} }}
  }}
}}
"""

CHECKS = """
query Checks($asset: [String!]!) {
  assetNodeOrError(assetKey: {path: $asset}) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name description } } } }
  }
}
"""

ASSET_STATUS = """
query AssetStatus($asset: [String!]!) {
  assetNodeOrError(assetKey: {path: $asset}) {
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions }
      assetChecksOrError { ... on AssetChecks { checks { name } } }
    }
  }
}
"""

CHECK_EXECUTIONS = f"""
query CheckExecutions($asset: [String!]!, $check: String!, $limit: Int!) {{
  assetCheckExecutions(assetKey: {{path: $asset}}, checkName: $check, limit: $limit) {{
    runId
    status
    evaluation {{ success severity description metadataEntries {{ {ENTRIES} }} }}
  }}
}}
"""

ASSETS = ("jobs", "executions", "operations", "runtime_status")
OUTCOME_CHECKS = (("executions", "execution_succeeded"), ("operations", "operation_succeeded"))
FAILED_SHARE = ("operations", "failed_operations_share")


def ticks(dagster: str, sensor: str) -> list[dict[str, Any]]:
    return graphql(dagster, TICKS, sensor=sensor)["sensorOrError"]["sensorState"]["ticks"]


def _with_metadata(event: dict[str, Any]) -> dict[str, Any]:
    event["metadata"] = {
        entry["label"]: entry.get("text", entry.get("boolValue", entry.get("intValue")))
        for entry in event.pop("metadataEntries")
    }
    return event


def observations(dagster: str) -> list[dict[str, Any]]:
    """The `operations` observations, each with its metadata as a dict."""
    events = graphql(dagster, OBSERVATIONS)["assetOrError"]["assetObservations"]
    return [_with_metadata(event) for event in events]


def materializations(dagster: str) -> list[dict[str, Any]]:
    """The `executions` materializations, each with its metadata as a dict."""
    events = graphql(dagster, MATERIALIZATIONS)["assetOrError"]["assetMaterializations"]
    return [_with_metadata(event) for event in events]


def check_history(dagster: str, asset: str, check: str, limit: int = 20) -> list[dict[str, Any]]:
    """The check's latest results, latest first, each evaluation's metadata as a dict."""
    executions = graphql(dagster, CHECK_EXECUTIONS, asset=[asset], check=check, limit=limit)
    for execution in executions["assetCheckExecutions"]:
        if execution["evaluation"]:
            _with_metadata(execution["evaluation"])
    return executions["assetCheckExecutions"]


def latest_check(dagster: str, asset: str, check: str) -> dict[str, Any] | None:
    executions = check_history(dagster, asset, check, limit=1)
    return executions[0] if executions else None


def _site(database: Database, site_id: str, capabilities: list[str]) -> tuple[str, str]:
    with database.sessionmaker() as session:
        _, credentials = accounts_service.create_site(
            session,
            site_id=site_id,
            name=site_id,
            capabilities=capabilities,
            actor="tests",
            with_credentials=True,
        )
    client, secret = credentials
    return client.client_id, secret


@pytest.fixture(scope="module")
def stack(settings, database: Database, server_url: str, drop_at_exit, tmp_path_factory) -> Iterator[Stack]:
    """The healthy first act: jobs made, one finished with a succeeded execution, all of it seen by Dagster."""
    home = tmp_path_factory.mktemp("staff_view")
    dagster_db = database_name(settings.database_url) + "_ui"
    ensure_database(server_url, dagster_db)
    drop_at_exit(dagster_db)
    try:
        with contextlib.ExitStack() as stack:
            api = stack.enter_context(live_api(settings, home / "api"))
            with database.session() as session:
                session.add(
                    Workflow(
                        id=WORKFLOW,
                        name="Column statistics",
                        version="1.0.0",
                        data_types=[DATA_TYPE],
                        required_capabilities=["stats"],
                        config={"columns": ["depth", "gc_content"]},
                    )
                )
            data_id, data_secret = _site(database, "site-d", [])
            exec_id, exec_secret = _site(database, "site-e", ["stats"])
            data_site = stack.enter_context(NmdcClient(api, client_id=data_id, client_secret=data_secret))
            exec_site = stack.enter_context(NmdcClient(api, client_id=exec_id, client_secret=exec_secret))
            # Registered before Dagster starts, so that one sensor tick makes the three jobs.
            for i in range(3):
                data_site.create_data_resource(
                    name=f"samples-{i}.tsv",
                    url=f"https://site-d.example.org/samples-{i}.tsv",
                    data_type=DATA_TYPE,
                    size=1000 + i,
                    checksums=[{"type": "sha256", "checksum": f"{i}" * 64}],
                )
            dagster = stack.enter_context(
                live_dagster(
                    settings,
                    home / "dagster",
                    NMDC_DAGSTER_DATABASE_URL=with_database(server_url, dagster_db),
                    NMDC_HEALTH_INTERVAL_SECONDS="5",
                    NMDC_MAX_ATTEMPTS="1",
                )
            )
            jobs = wait_for(
                lambda: len(found := list(exec_site.list_jobs(claimable=True))) == 3 and found,
                TIMEOUT,
                "three claimable jobs",
            )
            done, failing, waiting = sorted(jobs, key=lambda job: job.id)
            now = datetime.now(UTC).isoformat()
            won = exec_site.claim_job(done.id).operation
            execution = exec_site.create_execution(
                done.id, operation_id=won.id, status="succeeded", started_at=now, ended_at=now
            )
            exec_site.finish_operation(won.id, execution_id=execution.id)

            def recorded() -> bool:
                passing = [latest_check(dagster, *check) for check in OUTCOME_CHECKS]
                return all(check and check["evaluation"]["success"] for check in passing)

            wait_for(recorded, TIMEOUT, "the success in Dagster", interval=1)
            yield Stack(dagster, api, exec_site, done.id, won.id, execution.id, failing.id, waiting.id)
    finally:
        empty_tables(database)


@pytest.fixture(scope="module")
def story(stack: Stack) -> Story:
    """The second act: a run that fails, its job failed for good, all of it seen by Dagster."""
    exec_site = stack.exec_site
    lost = exec_site.claim_job(stack.failing_job).operation
    now = datetime.now(UTC).isoformat()
    failed = exec_site.create_execution(
        stack.failing_job, operation_id=lost.id, status="failed", started_at=now, ended_at=now
    )
    exec_site.finish_operation(
        lost.id, error={"code": "INTERNAL", "message": "the stats command exited with status 1"}
    )

    def recorded() -> bool:
        checks = [latest_check(stack.dagster, *check) for check in (*OUTCOME_CHECKS, FAILED_SHARE)]
        return all(check and not check["evaluation"]["success"] for check in checks)

    wait_for(recorded, TIMEOUT, "the failure in Dagster", interval=1)
    return Story(
        stack.dagster,
        stack.api,
        stack.succeeded_job,
        stack.succeeded_operation,
        stack.failing_job,
        lost.id,
        failed.id,
        stack.waiting_job,
    )


def test_a_healthy_stack_shows_nothing_wrong(stack: Stack):
    # Every check that has a result passes, and no asset has a partition without a materialization: in the
    # catalog, nothing red and nothing missing.
    for asset in ASSETS:
        node = graphql(stack.dagster, ASSET_STATUS, asset=[asset])["assetNodeOrError"]
        stats = node["partitionStats"]
        assert stats is None or stats["numMaterialized"] == stats["numPartitions"], (asset, stats)
        for check in node["assetChecksOrError"]["checks"]:
            latest = latest_check(stack.dagster, asset, check["name"])
            assert latest is None or latest["evaluation"]["success"], (asset, check["name"], latest)
    # Executions and operations are not partitioned (observations never count towards a partition).
    assert [
        a
        for a in ASSETS
        if graphql(stack.dagster, ASSET_STATUS, asset=[a])["assetNodeOrError"]["partitionStats"]
    ] == ["jobs"]


# `make screenshots` (SCREENSHOTS_DIR set) must fail without a browser rather than pass with no pictures.
@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK) and not os.environ.get("SCREENSHOTS_DIR"),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)",
)
def test_staff_see_it_in_a_browser(stack: Stack, request: pytest.FixtureRequest, tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    out = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    # The UI greets a new browser on 127.0.0.1 with a newsletter dialog over every page; say it was seen.
    graphql(stack.dagster, "mutation { setNuxSeen }")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            # Nothing leaves the machine: the API's /docs page asks a CDN for Swagger UI, which is served
            # from the swagger-ui-bundle-v2 package (the same Swagger UI 5) instead; anything else is refused.
            page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), _offline)
            # The healthy stack first; then the failure (the `story` fixture), seen in the same browser.
            shots = capture(page, stack, lambda: request.getfixturevalue("story"), out)
        finally:
            browser.close()
    assert sorted(path.name for path in out.glob("*.png")) >= sorted(shots)


def _offline(route) -> None:
    from swagger_ui_bundle import swagger_ui_path

    path = swagger_ui_path / route.request.url.rsplit("/", 1)[-1]
    if "swagger-ui-dist@5/" in route.request.url and path.is_file():
        route.fulfill(path=str(path))
    else:
        route.abort()


def capture(page, stack: Stack, fail: Callable[[], Story], out: Path) -> list[str]:
    """Open each page staff look at, check that it shows this story's data, and take its picture: the catalog
    of the healthy stack, then, after `fail`, the failure where staff look for it."""
    from playwright.sync_api import expect

    shots: list[str] = []

    def shot(name: str) -> None:
        page.wait_for_timeout(500)  # let charts and fonts settle
        page.screenshot(path=str(out / name))
        shots.append(name)

    def visit(path: str) -> None:
        # Within the UI, as its own links do: loading the whole application again for each page takes
        # seconds on a busy machine.
        page.evaluate(
            "path => { history.pushState({}, '', path); dispatchEvent(new PopStateEvent('popstate')); }", path
        )

    def status_icon(asset: str, icon: str):
        """The asset's status in the catalog, drawn with this icon (Dagster's: check_passed, check_failed)."""
        # The catalog is a virtualized table of divs, one row an asset (Dagster 1.13's class names).
        row = page.locator("[class*=VirtualizedTable_row]", has=page.locator(f'a[href="/assets/{asset}"]'))
        return row.locator(f"[role=img][aria-label={icon}]")

    def catalog(**icons: str) -> None:
        """The catalog, once every asset named shows the icon given (its status may come a poll later)."""
        for _ in range(12):
            page.goto(f"{stack.dagster}/assets")
            page.get_by_role("link", name="runtime_status").first.wait_for()
            try:
                for asset, icon in icons.items():
                    expect(status_icon(asset, icon)).to_have_count(1)
                return
            except AssertionError:
                continue
        for asset, icon in icons.items():
            expect(status_icon(asset, icon)).to_have_count(1)

    # The catalog of a healthy stack: nothing red, nothing missing.
    catalog(executions="check_passed", runtime_status="check_passed")
    assert page.locator("[role=img][aria-label=check_failed]").count() == 0
    assert page.get_by_text(re.compile("Never materialized|Missing")).count() == 0
    shot("dagster-catalog-healthy.png")

    story = fail()

    # The sensor: every tick is "0 runs requested" (SKIPPED); the one that made jobs also created the
    # workflow's partition, and its details say what it made.
    page.goto(f"{story.dagster}/locations/{REPOSITORY}@{LOCATION}/sensors/data_resources_sensor")
    made = page.locator("tr", has_text="1 partition created")
    page.get_by_role("button", name="View logs").first.wait_for()
    for _ in range(5):  # 25 ticks a page: under load the first tick may be on an older page
        if made.count():
            break
        page.get_by_role("button", name="Older").click()
        page.wait_for_timeout(1000)
    made.get_by_role("button", name="0 runs requested").last.click()
    page.get_by_text("made 3 jobs of stats for 3 data resources").wait_for()
    shot("dagster-sensor-tick.png")

    # The jobs asset, the workflow's partition: what the tick made.
    visit(f"/assets/jobs?view=partitions&partition={WORKFLOW}")
    page.get_by_text("jobs_created").wait_for()
    page.get_by_text(story.failed_job).first.wait_for()
    shot("dagster-jobs-partition.png")

    def failed_check(asset: str, check: str, *texts: str, icon: str = "cancel") -> None:
        """The check's page: its latest result names the failure, and it is drawn as one (Dagster's icon for
        a failed result: `cancel`, red; `warning_outline`, yellow, for a warning), in the list and on the badge."""
        visit(f"/assets/{asset}?view=checks&checkDetail={check}")
        for text in texts:
            page.get_by_text(text).first.wait_for()

        def icons() -> list[str]:
            return page.evaluate(
                """([icon, check]) => Array.from(document.querySelectorAll(`[role=img][aria-label=${icon}]`))
                    .map(i => i.parentElement.parentElement.innerText.replace(/\\s+/g, " ").trim())""",
                [icon, check],
            )

        # The list of checks may be drawn after the result's text (seen on a loaded machine): wait for it.
        for _ in range(20):
            drawn = icons()
            if f"{check} {check} Failed" in drawn:
                break
            page.wait_for_timeout(500)
        assert f"{check} {check} Failed" in drawn, drawn  # its entry in the list of checks
        assert "Failed" in drawn, drawn  # the badge of its latest result

    # The failed execution: red on the executions asset's Checks tab, naming the execution.
    failed_check(
        "executions",
        "execution_succeeded",
        f"FAILED: execution {story.failed_execution} of job {story.failed_job}",
    )
    shot("dagster-execution-failed.png")

    # The job failed for good: the operation's result says so first, with the execution that failed.
    failed_check(
        "operations",
        "operation_succeeded",
        f"JOB FAILED: job {story.failed_job} has no attempt left",
        "the stats command exited with status 1",
    )
    page.get_by_text(story.failed_execution).first.wait_for()
    shot("dagster-job-failed.png")

    # One click from the jobs asset: its check warns, naming the job and the execution.
    failed_check(
        "jobs",
        "jobs_failed_for_good",
        f"{story.failed_job} (execution {story.failed_execution})",
        icon="warning_outline",
    )
    shot("dagster-checks.png")

    # The catalog now: red exactly where something went wrong ("Never materialized", in red, for operations).
    catalog(executions="check_failed", operations="check_failed", runtime_status="check_passed")

    # runtime_status: fresh figures, plotted.
    visit("/assets/runtime_status")
    plots = page.get_by_role("button", name="Plots")
    plots.click()
    page.get_by_text("failed_operations_share_last_hour").first.wait_for()
    page.locator("canvas").first.wait_for()
    plots.evaluate("button => button.scrollIntoView({block: 'start'})")
    shot("dagster-runtime-status-plots.png")

    # The API's OpenAPI pages.
    page.goto(f"{story.api}/docs")
    page.get_by_text("/data_resources").first.wait_for()
    shot("api-docs.png")
    return shots


def test_the_tick_that_made_jobs_says_so_and_differs_from_an_idle_one(story: Story):
    history = ticks(story.dagster, "data_resources_sensor")
    made = [t for t in history if t["skipReason"] == "made 3 jobs of stats for 3 data resources"]
    idle = [t for t in history if (t["skipReason"] or "").startswith("idle: no new data resources")]
    assert len(made) == 1, history
    assert idle, history
    # Dagster 1.13 gives a tick without a run request the status SKIPPED, whatever it did: the text tells.
    assert made[0]["status"] == idle[0]["status"] == "SKIPPED"
    assert made[0]["cursor"] != idle[0]["cursor"] or made[0]["tickId"] != idle[0]["tickId"]
    assert all(t["skipReason"] != "Sensor function returned an empty result" for t in history)

    outcomes = [t["skipReason"] for t in ticks(story.dagster, "operations_sensor")]
    assert any(
        text and text.startswith("recorded ") and f"JOB FAILED, no attempt left: {story.failed_job}" in text
        for text in outcomes
    ), outcomes


def test_a_failed_run_is_red_and_names_its_execution(story: Story):
    # The failed execution: a failing check result that names it, and no materialization does.
    (failed,) = [
        e
        for e in check_history(story.dagster, "executions", "execution_succeeded")
        if e["status"] == "FAILED"
    ]
    evaluation = failed["evaluation"]
    assert failed["runId"] == "" and evaluation["severity"] == "ERROR"
    assert evaluation["metadata"]["execution_id"] == story.failed_execution
    assert evaluation["metadata"]["job_id"] == story.failed_job
    assert evaluation["description"].startswith(f"FAILED: execution {story.failed_execution}")
    named = [event["metadata"]["execution_id"] for event in materializations(story.dagster)]
    assert story.failed_execution not in named and len(named) == 1

    # The job failed for good: the operation's failing result says so, with the execution that failed.
    operation = latest_check(story.dagster, "operations", "operation_succeeded")
    assert operation["status"] == "FAILED"
    description = operation["evaluation"]["description"]
    assert description.startswith(f"JOB FAILED: job {story.failed_job} has no attempt left")
    metadata = operation["evaluation"]["metadata"]
    assert (metadata["operation_id"], metadata["site_id"], metadata["attempt"]) == (
        story.failed_operation,
        "site-e",
        1,
    )
    assert (metadata["state"], metadata["error_code"]) == ("failed", "INTERNAL")
    assert metadata["error_message"] == "the stats command exited with status 1"
    assert metadata["execution_id"] == story.failed_execution
    assert metadata["job_failed_for_good"] is True
    # Only the operation that went well is an event (an observation, shown green).
    assert [e["metadata"]["operation_id"] for e in observations(story.dagster)] == [story.succeeded_operation]

    # From the jobs asset, its check names the job and the execution.
    warning = latest_check(story.dagster, "jobs", "jobs_failed_for_good")["evaluation"]
    assert warning["severity"] == "WARN" and not warning["success"]
    assert f"{story.failed_job} (execution {story.failed_execution})" in warning["description"]


def test_asset_checks_exist_and_the_failed_share_is_red(story: Story):
    names = {
        asset: {
            check["name"]: check["description"]
            for check in graphql(story.dagster, CHECKS, asset=[asset])["assetNodeOrError"][
                "assetChecksOrError"
            ]["checks"]
        }
        for asset in ("jobs", "executions", "operations")
    }
    assert set(names["operations"]) == {
        "lapsed_leases_reaped",
        "failed_operations_share",
        "operation_succeeded",
        "sites_not_drained",
    }
    assert set(names["executions"]) == {"execution_succeeded"}
    assert set(names["jobs"]) == {
        "unclaimed_jobs_claimed",
        "data_resources_matched",
        "groups_complete",
        "jobs_failed_for_good",
    }
    # Each check's description says what to do.
    assert "operations_reaper" in names["operations"]["lapsed_leases_reaped"]

    share = latest_check(story.dagster, "operations", "failed_operations_share")
    # Evaluated by the sensor: no run behind it.
    assert share["runId"] == "" and share["status"] == "FAILED"
    assert share["evaluation"]["severity"] == "ERROR"
    assert share["evaluation"]["description"].startswith("FAILED: 50% of the operations")
    assert latest_check(story.dagster, "jobs", "jobs_failed_for_good")["evaluation"]["severity"] == "WARN"
    assert latest_check(story.dagster, "operations", "lapsed_leases_reaped")["evaluation"]["success"] is True
