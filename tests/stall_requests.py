"""A request for every route of the API, the hot writes on both their paths, on a small world made through the
API itself: what the tests of a stalled database send, in process (tables locked) or to a live API (its
database's processes stopped), to show that each answers 503 with `Retry-After`, never 500."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from nmdc_runtime.config import Settings
from nmdc_runtime.domain.principals import Principal
from tests.integration.claim_world import data_resource_body, execution_body, headers_for, site_principal

_names = itertools.count()

NO_DATABASE = frozenset({("GET", "/users/me"), ("GET", "/.well-known/jwks.json")})
"""Routes that answer without the database, whatever state it is in."""
ANSWERS_WITHOUT_ITS_FIGURES = frozenset({("GET", "/metrics")})
"""Routes that answer 200 all the same: /metrics then says `nmdc_database_up 0` and leaves the queue's out."""


@dataclass(frozen=True)
class Request:
    """One request: `route` is its OpenAPI path template (what the coverage check compares), `reads` whether
    it only reads (it may succeed while writes are blocked)."""

    method: str
    route: str
    path: str
    headers: dict[str, str]
    reads: bool = False
    json: Any = None
    data: dict[str, str] | None = None

    def send(self, client) -> httpx.Response:
        return client.request(self.method, self.path, headers=self.headers, json=self.json, data=self.data)


@dataclass
class Stage:
    """What the requests act on, made through the API by `build`."""

    admin: dict[str, str]
    site_d: dict[str, str]
    site_e: dict[str, str]
    admin_login: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)


def build(client, *, settings: Settings, admin_login: dict[str, str]) -> Stage:
    """Sites D (data), E (executes) and F, a workflow, jobs and the operations of site E's claims on them, an
    execution, a user and site E's credentials, made through `client` (a TestClient or an httpx.Client) by an
    admin whose login is `admin_login` (the password grant's form; the admin user exists already)."""
    admin = headers_for(settings, Principal(kind="user", name=admin_login["username"], admin=True))
    stage = Stage(
        admin=admin,
        site_d=headers_for(settings, site_principal("site-d")),
        site_e=headers_for(settings, site_principal("site-e")),
        admin_login=admin_login,
    )

    def ok(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code in (200, 201), response.text
        return response.json()

    for site_id in ("site-d", "site-e", "site-f"):
        ok(client.post("/sites", json={"id": site_id}, headers=admin))
    ok(
        client.post(
            "/workflows",
            json={"id": "wf", "name": "wf", "version": "1", "data_types": ["fastq"]},
            headers=admin,
        )
    )
    ids = stage.ids
    ids["data_resource"] = ok(
        client.post("/data_resources", json=data_resource_body(), headers=stage.site_d)
    )["id"]

    def job() -> str:
        return ok(
            client.post(
                "/jobs",
                json={"workflow_id": "wf", "data_resource_ids": [ids["data_resource"]]},
                headers=admin,
            )
        )["id"]

    for name in ("unclaimed", "to_cancel"):
        ids[name] = job()
    for name in ("held", "beating", "finishing", "executing", "administered", "paused", "released"):
        ids[f"{name}_job"] = job()
        ids[name] = ok(client.post(f"/jobs/{ids[f'{name}_job']}:claim", headers=stage.site_e))["id"]
    ok(client.post(f"/operations/{ids['paused']}:pause", headers=admin))
    ids["execution"] = ok(
        client.post(
            f"/jobs/{ids['executing_job']}/executions",
            json=execution_body(ids["executing"]),
            headers=stage.site_e,
        )
    )["id"]
    ids["client"] = ok(client.post("/sites/site-e:generateCredentials", headers=admin))["client_id"]
    ok(client.post("/users", json={"username": "stall-user", "password": "stall-password-1"}, headers=admin))
    return stage


def requests(stage: Stage) -> list[Request]:
    """A request for every route (the claim, PATCH and execution on both their paths), the same every time."""
    ids, admin, site_e = stage.ids, stage.admin, stage.site_e

    def req(method: str, route: str, headers: dict[str, str], reads: bool = False, **kwargs: Any) -> Request:
        path = route
        for name, value in (
            ("{job_id}", kwargs.pop("job_id", None)),
            ("{op_id}", kwargs.pop("op_id", None)),
            ("{exec_id}", ids["execution"]),
            ("{site_id}", "site-e"),
            ("{client_id}", ids["client"]),
            ("{username}", "stall-user"),
            ("{data_resource_id}", ids["data_resource"]),
            ("{workflow_id}", "wf"),
        ):
            if value is not None:
                path = path.replace(name, value)
        return Request(method, route, path, headers, reads, **kwargs)

    executions = "/jobs/{job_id}/executions"
    return [
        # Claims: the fast path (an unclaimed job), the general one (the holder's retry), release, cancel.
        req("POST", "/jobs/{job_id}:claim", site_e, job_id=ids["unclaimed"]),
        req("POST", "/jobs/{job_id}:claim", site_e, job_id=ids["held_job"]),
        req("POST", "/jobs/{job_id}:release", site_e, job_id=ids["released_job"]),
        req("POST", "/jobs:claimNext", site_e, json={"wait_seconds": 0}),
        req("POST", "/jobs/{job_id}:cancel", admin, job_id=ids["to_cancel"]),
        # PATCH: the holder's heartbeat and finish (fast), an admin's (general).
        req("PATCH", "/operations/{op_id}", site_e, op_id=ids["beating"], json={"metadata": {"progress": 5}}),
        req(
            "PATCH",
            "/operations/{op_id}",
            site_e,
            op_id=ids["finishing"],
            json={"done": True, "error": {"code": "UNKNOWN", "message": "m"}},
        ),
        req(
            "PATCH", "/operations/{op_id}", admin, op_id=ids["administered"], json={"metadata": {"note": "n"}}
        ),
        req("POST", "/operations/{op_id}:cancel", admin, op_id=ids["administered"]),
        req("POST", "/operations/{op_id}:pause", admin, op_id=ids["beating"]),
        req("POST", "/operations/{op_id}:resume", admin, op_id=ids["paused"]),
        req("GET", "/operations", admin, reads=True),
        req("GET", "/operations/{op_id}", admin, reads=True, op_id=ids["held"]),
        Request(
            "GET",
            "/operations/{op_id}:wait",
            f"/operations/{ids['held']}:wait?timeout_seconds=0",
            admin,
            True,
        ),
        # Executions: the holder's (fast), one naming another job's operation (the general path decides).
        req("POST", executions, site_e, job_id=ids["executing_job"], json=execution_body(ids["executing"])),
        req("POST", executions, site_e, job_id=ids["executing_job"], json=execution_body(ids["held"])),
        req("GET", executions, admin, reads=True, job_id=ids["executing_job"]),
        req("GET", executions + "/{exec_id}", admin, reads=True, job_id=ids["executing_job"]),
        req(
            "PATCH",
            executions + "/{exec_id}",
            site_e,
            job_id=ids["executing_job"],
            json={"details": {"x": 1}},
        ),
        req(
            "POST",
            "/jobs",
            admin,
            json={"workflow_id": "wf", "data_resource_ids": [ids["data_resource"]]},
        ),
        req("GET", "/jobs", admin, reads=True),
        Request("GET", "/jobs", "/jobs?claimable=true", site_e, reads=True),
        req("GET", "/jobs/{job_id}", admin, reads=True, job_id=ids["held_job"]),
        req("POST", "/token", {}, reads=True, data={"grant_type": "password", **stage.admin_login}),
        req("POST", "/sites", admin, json={"id": f"stall-site-{next(_names)}"}),
        req("GET", "/sites", admin, reads=True),
        req("GET", "/sites/{site_id}", admin, reads=True),
        req("POST", "/sites/{site_id}:generateCredentials", admin),
        req("POST", "/sites/{site_id}:undrain", admin),
        req("GET", "/sites/{site_id}/clients", admin, reads=True),
        req("DELETE", "/sites/{site_id}/clients/{client_id}", admin),
        req("POST", "/sites/{site_id}:disable", admin),
        req("POST", "/sites/{site_id}:enable", admin),
        req(
            "POST",
            "/users",
            admin,
            json={"username": f"stall-{next(_names)}", "password": "stall-password-2"},
        ),
        req("GET", "/users/me", admin, reads=True),
        req("POST", "/users/{username}:disable", admin),
        req("POST", "/users/{username}:enable", admin),
        req("POST", "/data_resources", stage.site_d, json=data_resource_body()),
        req("GET", "/data_resources", admin, reads=True),
        req("GET", "/data_resources/{data_resource_id}", admin, reads=True),
        req("POST", "/data_resources/{data_resource_id}:access", admin, reads=True),
        req("POST", "/workflows", admin, json={"id": f"wf-{next(_names)}", "name": "w", "version": "1"}),
        req("GET", "/workflows", admin, reads=True),
        req("GET", "/workflows/{workflow_id}", admin, reads=True),
        req("PATCH", "/workflows/{workflow_id}", admin, json={"name": "renamed"}),
        req("GET", "/health", {}, reads=True),
        req("GET", "/metrics", admin, reads=True),
        req("GET", "/.well-known/jwks.json", {}, reads=True),
    ]


def uncovered(openapi: dict[str, Any], sent: list[Request]) -> set[tuple[str, str]]:
    """The routes of the OpenAPI document no request in `sent` is for."""
    routes = {(method.upper(), path) for path, item in openapi["paths"].items() for method in item}
    return routes - {(request.method, request.route) for request in sent}


def problems(
    answers: list[tuple[Request, httpx.Response]], *, expected: Callable[[Request], int]
) -> list[str]:
    """What is wrong with each answer: its status is not `expected(request)`, or a 503 without `Retry-After`."""
    wrong = []
    for request, response in answers:
        want = expected(request)
        if response.status_code != want or (want == 503 and "Retry-After" not in response.headers):
            wrong.append(
                f"{request.method} {request.path}: {response.status_code} (want {want}) {response.text[:200]}"
            )
    return wrong


def when_stopped(request: Request) -> int:
    """The status every request gets while the database does not answer at all."""
    key = (request.method, request.route)
    if key in NO_DATABASE or key in ANSWERS_WITHOUT_ITS_FIGURES:
        return 200
    return 503
