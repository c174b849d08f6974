"""The API against its own OpenAPI document: schemathesis generates requests for every operation, valid and
invalid, sends them in-process as an admin and as a site, and checks that every answer is documented: no
server error, a documented status code and content type, a body that matches the documented schema.

Bounded to run in seconds: `EXAMPLES_PER_OPERATION` generated requests per operation and caller, from a fixed
seed (the same requests every run, so a failure reproduces). Schemathesis's coverage phase, which enumerates
boundary cases with no bound on their number, is off; the fuzzing phase's negative cases (wrong types,
missing fields, bodies that are not UTF-8) are what found the undocumented answers this test guards against.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database
from nmdc_runtime.services import accounts as accounts_service
from tests.conftest import empty_tables
from tests.integration.claim_world import World, claimed, make_world, post_execution
from tests.integration.conftest import ADMIN_PASSWORD, bearer

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 5

# The OpenAPI document depends on no setting: it is read from an app that is never started, at import,
# because schemathesis makes one test per operation when pytest collects this module.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(database_url="postgresql://openapi.invalid/unused")).openapi(),
    config=schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True, "database": "none"},
            "phases": {"coverage": {"enabled": False}},
        }
    ),
)


@pytest.fixture(scope="module")
def world(settings: Settings, database: Database) -> Iterator[World]:
    """An admin (with a token from POST /token), sites, a workflow, a job claimed by site E and its
    execution, so that some requests reach real rows; emptied when the module is done."""
    with TestClient(create_app(settings)) as client:
        with database.session() as session:
            accounts_service.create_user(
                session, username="admin", password=ADMIN_PASSWORD, admin=True, actor="tests"
            )
        admin = bearer(client, grant_type="password", username="admin", password=ADMIN_PASSWORD)
        world = make_world(client, database, admin, settings)
        assert post_execution(world, claimed(world)).status_code == 201
        yield world
    empty_tables(database)


@pytest.fixture(scope="module")
def fuzzed_app(settings: Settings, world: World) -> FastAPI:
    """The app the requests go to, on this run's database (schemathesis runs its lifespan)."""
    return create_app(settings)


@pytest.mark.parametrize("caller", ["admin", "site"])
@schema.parametrize()
def test_every_answer_is_documented(case, caller: str, world: World, fuzzed_app: FastAPI):
    headers = world.admin if caller == "admin" else world.site_e
    # A valid wait would hold the request for up to a minute with nothing to wait for: what is answered is the
    # same after none (tests/integration/test_claim_next.py times the waits).
    if (
        isinstance(case.body, dict)
        and type(case.body.get("wait_seconds")) is int
        and 0 < case.body["wait_seconds"] <= 60
    ):
        case.body["wait_seconds"] = 0
    timeout = str((case.query or {}).get("timeout_seconds", ""))
    if timeout.isdigit() and int(timeout) <= 60:
        case.query["timeout_seconds"] = 0
    case.call_and_validate(app=fuzzed_app, headers=headers, checks=CHECKS)
