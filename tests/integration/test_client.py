"""`nmdc_site.client` against the real API (in-process, through TestClient's transport) on real PostgreSQL,
plus its retry and token behaviour against scripted transports."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from nmdc_runtime.config import Settings
from nmdc_runtime.db import Database
from nmdc_runtime.services import accounts as accounts_service
from nmdc_site import __version__
from nmdc_site.client import (
    Conflict,
    Forbidden,
    NmdcClient,
    NotFound,
    RetryNotice,
    RetryPolicy,
    ServerError,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnexpectedAnswer,
    ValidationError,
)
from nmdc_site.run.heartbeat import heartbeat_interval, lease_seconds
from tests.integration.conftest import ADMIN_PASSWORD, make_site

FAST = RetryPolicy(attempts=4, initial=0.01, maximum=0.02)


@pytest.fixture
def admin(client: TestClient, clean_database: Database) -> NmdcClient:
    with clean_database.session() as session:
        accounts_service.create_user(
            session, username="admin", password=ADMIN_PASSWORD, admin=True, actor="tests"
        )
    return NmdcClient(http=client, username="admin", password=ADMIN_PASSWORD)


@pytest.fixture
def site(client: TestClient, clean_database: Database):
    """A factory: `site("site-e", ["gpu"])` creates the site and returns a client acting for it."""

    def make(site_id: str, capabilities: list[str] = ()) -> NmdcClient:
        creds = make_site(clean_database, site_id, list(capabilities))
        return NmdcClient(http=client, client_id=creds["client_id"], client_secret=creds["client_secret"])

    return make


def register(api: NmdcClient, name: str, *, data_type: str = "table", key: str | None = None):
    return api.create_data_resource(
        name=name,
        url=f"http://127.0.0.1:9/{name}",
        data_type=data_type,
        size=10,
        checksums=[{"type": "sha256", "checksum": hashlib.sha256(name.encode()).hexdigest()}],
        idempotency_key=key,
    )


# ---- against the API --------------------------------------------------------------------------------------


def test_identity_and_typed_sites(admin: NmdcClient, site, client: TestClient):
    d = site("site-d")
    assert d.me().site_id == "site-d" and d.me().kind == "site_client"
    assert admin.me().admin is True
    created = admin.create_site("site-x", name="X", capabilities=["gpu"])
    assert created.capabilities == ["gpu"]
    creds = admin.generate_credentials("site-x")
    x = NmdcClient(http=client, client_id=creds.client_id, client_secret=creds.client_secret)
    assert x.me().site_id == "site-x"
    assert {s.id for s in admin.list_sites()} == {"site-d", "site-x"}


def test_errors_are_typed_and_carry_the_server_detail(admin: NmdcClient, site, client: TestClient):
    with pytest.raises(NotFound) as not_found:
        admin.get_job("no-such-job")
    assert not_found.value.status_code == 404 and not_found.value.detail
    with pytest.raises(Unauthorized):
        NmdcClient(http=client, username="admin", password="wrong-password").me()
    with pytest.raises(Forbidden):
        site("site-d").create_workflow("w")
    admin.create_site("dup")
    with pytest.raises(Conflict):
        admin.create_site("dup")
    with pytest.raises(ValidationError) as invalid:
        site("site-e").create_data_resource(
            name="x",
            url="ftp://nope",
            data_type="t",
            size=-1,
            checksums=[{"type": "sha256", "checksum": "zz"}],
        )
    assert invalid.value.status_code == 422
    assert isinstance(invalid.value.detail, list)  # FastAPI's field list, kept as sent
    assert "url" in str(invalid.value)


def test_lists_are_followed_across_pages(site):
    d = site("site-d")
    ids = [register(d, f"f{i}.tsv").id for i in range(7)]
    assert [r.id for r in d.list_data_resources(site_id="site-d", page_size=3)] == ids
    assert list(d.list_data_resources(site_id="nobody")) == []


def test_the_same_idempotency_key_registers_once(site):
    d = site("site-d")
    first = register(d, "a.tsv", key="file-a")
    again = register(d, "a.tsv", key="file-a")
    assert again.id == first.id
    assert len(list(d.list_data_resources(site_id="site-d"))) == 1
    # Without a chosen key every call is its own logical call.
    assert register(d, "a.tsv").id != register(d, "a.tsv").id


def test_a_whole_job_through_the_client(admin: NmdcClient, site):
    d, e, other = site("site-d"), site("site-e", ["stats"]), site("site-o", ["stats"])
    admin.create_workflow("stats", data_types=["table"], required_capabilities=["stats"], config={"k": 1})
    resource = register(d, "a.tsv")
    job = admin.create_job("stats", [resource.id])
    assert job.config["k"] == 1 and [r.id for r in job.data_resources] == [resource.id]
    assert [j.id for j in e.list_jobs(claimable=True, workflow_id="stats")] == [job.id]
    assert list(site("site-weak").list_jobs(claimable=True)) == []

    claim = e.claim_job(job.id)
    assert claim.new and claim.operation.metadata.state == "running"
    again = e.claim_job(job.id)
    assert not again.new and again.operation.id == claim.operation.id
    with pytest.raises(Conflict):
        other.claim_job(job.id)

    op = e.heartbeat(claim.operation.id, progress=50, message="half")
    assert op.metadata.progress == 50 and op.metadata.message == "half" and not op.metadata.cancel_requested
    with pytest.raises(Forbidden):
        other.heartbeat(claim.operation.id)

    def record() -> object:
        return e.create_execution(
            job.id,
            operation_id=op.id,
            status="succeeded",
            started_at="2024-05-01T10:00:00Z",
            ended_at="2024-05-01T10:01:00Z",
            outputs=[
                {
                    "name": "a.stats.json",
                    "url": "http://127.0.0.1:9/a.stats.json",
                    "data_type": "table.stats",
                    "size": 3,
                    "checksums": [{"type": "sha256", "checksum": "0" * 64}],
                }
            ],
            details={"exit_code": 0},
            idempotency_key="exec-1",
        )

    execution = record()
    assert execution.site_id == "site-e"
    # The same key again: the first answer, nothing new.
    repeat = record()
    assert repeat.id == execution.id

    done = e.finish_operation(op.id, execution_id=execution.id)
    assert done.done and done.result.id == execution.id and done.metadata.state == "succeeded"
    with pytest.raises(Conflict):
        e.heartbeat(op.id)
    assert [o.id for o in d.list_operations(data_resource_id=resource.id)] == [op.id]
    assert e.get_execution(job.id, execution.id).outputs[0]["site_id"] == "site-e"
    assert [x.id for x in d.list_executions(job.id)] == [execution.id]
    assert admin.get_job(job.id).status == "succeeded"


def test_cancel_pause_and_release(admin: NmdcClient, site):
    d, e = site("site-d"), site("site-e")
    admin.create_workflow("w", data_types=["table"])
    job = admin.create_job("w", [register(d, "a.tsv").id])
    op = e.claim_job(job.id).operation
    assert admin.pause_operation(op.id).metadata.paused
    assert e.heartbeat(op.id).metadata.paused
    assert not admin.resume_operation(op.id).metadata.paused
    released = e.release_job(job.id)
    assert released.status == "unclaimed"
    assert e.get_operation(op.id).error.code == "CANCELLED"
    assert e.get_operation(op.id).error.details == {}

    faulty = e.claim_job(job.id).operation
    assert e.release_job(job.id, reason="SITE_FAULT", message="no space left").attempts == 0
    error = e.get_operation(faulty.id).error
    assert error.code == "CANCELLED"
    assert error.details == {"reason": {"code": "SITE_FAULT", "message": "no space left"}}

    op2 = e.claim_job(job.id).operation
    admin.cancel_job(job.id)
    assert e.heartbeat(op2.id).metadata.cancel_requested
    finished = e.finish_operation(op2.id, error={"code": "CANCELLED", "message": "stopped"})
    assert finished.metadata.state == "canceled"
    with pytest.raises(ValueError):
        e.finish_operation(op2.id)


def test_the_server_receives_the_user_agent_and_a_claim_body_only_when_a_lease_is_asked(
    settings: Settings, clean_database: Database
):
    """What reaches the real app: `User-Agent: nmdc-site/<version>` on every request, the token's included,
    and a claim's `{"lease_seconds": N}` body only when the caller asks for a lease."""
    app = create_app(settings)
    seen: list[tuple[str, str, str | None, bytes]] = []

    @app.middleware("http")
    async def record(request, call_next):
        seen.append(
            (request.method, request.url.path, request.headers.get("user-agent"), await request.body())
        )
        return await call_next(request)

    with clean_database.session() as session:
        accounts_service.create_user(
            session, username="admin", password=ADMIN_PASSWORD, admin=True, actor="tests"
        )
    creds = make_site(clean_database, "site-e")
    with TestClient(app) as http:
        admin = NmdcClient(http=http, username="admin", password=ADMIN_PASSWORD)
        e = NmdcClient(http=http, client_id=creds["client_id"], client_secret=creds["client_secret"])
        d_creds = make_site(clean_database, "site-d")
        d = NmdcClient(http=http, client_id=d_creds["client_id"], client_secret=d_creds["client_secret"])
        workflow = admin.create_workflow("w", data_types=["table"])
        assert workflow.lease_seconds is None  # sent only when given, so today's server takes the workflow
        first = admin.create_job("w", [register(d, "a.tsv").id])
        e.claim_job(first.id)
        second = admin.create_job("w", [register(d, "b.tsv").id])
        # Short enough for any server: one that knows the body allows up to the workflow's lease.
        e.claim_job(second.id, lease_seconds=2)
    assert seen and {agent for _, _, agent, _ in seen} == {f"nmdc-site/{__version__}"}
    assert any(path == "/token" for _, path, _, _ in seen)
    claims = [body for method, path, _, body in seen if method == "POST" and path.endswith(":claim")]
    assert claims[0] == b""
    assert json.loads(claims[1]) == {"lease_seconds": 2}
    workflow_body = next(body for method, path, _, body in seen if (method, path) == ("POST", "/workflows"))
    assert "lease_seconds" not in json.loads(workflow_body)


def test_a_workflow_s_lease_reaches_the_claim_and_sets_the_heartbeat_cadence(admin: NmdcClient, site):
    d, e = site("site-d"), site("site-e")
    workflow = admin.create_workflow("assembly", data_types=["reads"], lease_seconds=3600)
    assert workflow.lease_seconds == 3600
    first = admin.create_job("assembly", [register(d, "a.fq", data_type="reads").id])
    op = e.claim_job(first.id).operation
    assert lease_seconds(op) == 3600 and heartbeat_interval(lease_seconds(op)) == 30
    second = admin.create_job("assembly", [register(d, "b.fq", data_type="reads").id])
    with pytest.raises(ValidationError) as too_long:
        e.claim_job(second.id, lease_seconds=7200)
    assert too_long.value.status_code == 422
    short = e.claim_job(second.id, lease_seconds=6).operation
    assert lease_seconds(short) == 6 and heartbeat_interval(lease_seconds(short)) == 2
    # A heartbeat renews by the operation's own length.
    renewed = e.heartbeat(short.id)
    assert (renewed.metadata.lease_expire_time - renewed.update_time).total_seconds() == pytest.approx(6)


# ---- retries, idempotency keys and tokens, against scripted transports ------------------------------------


def _token(expires_in: int = 3600) -> httpx.Response:
    return httpx.Response(
        200, json={"access_token": f"t{time.monotonic()}", "token_type": "bearer", "expires_in": expires_in}
    )


def _resource(body: dict) -> dict:
    return {**body, "id": "dr-1", "site_id": "site-d", "created_at": "2024-05-01T10:00:00Z"}


class Script:
    """A transport answering from a list of callables, recording every request."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/token":
            return _token()
        answer = self.answers.pop(0)
        return answer(request)

    def client(self) -> NmdcClient:
        return NmdcClient(
            "http://api.test",
            client_id="c",
            client_secret="s",
            transport=httpx.MockTransport(self),
            retry=FAST,
        )

    def api_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/token"]


def test_5xx_and_connection_errors_are_retried_with_the_same_idempotency_key():
    def refused(request):
        raise httpx.ConnectError("connection refused", request=request)

    script = Script(
        lambda r: httpx.Response(503, json={"detail": "database unavailable"}),
        refused,
        lambda r: httpx.Response(502, text="bad gateway"),
        lambda r: httpx.Response(201, json=_resource(json.loads(r.content))),
    )
    with script.client() as api:
        resource = register(api, "a.tsv")
    assert resource.id == "dr-1"
    keys = {r.headers["Idempotency-Key"] for r in script.api_requests()}
    assert len(script.api_requests()) == 4 and len(keys) == 1


def test_each_logical_post_gets_its_own_key_and_a_chosen_key_is_sent_as_is():
    script = Script(*[lambda r: httpx.Response(201, json=_resource(json.loads(r.content)))] * 3)
    with script.client() as api:
        register(api, "a.tsv")
        register(api, "a.tsv")
        register(api, "a.tsv", key="mine")
    keys = [r.headers["Idempotency-Key"] for r in script.api_requests()]
    assert keys[0] != keys[1] and keys[2] == "mine"


def test_retries_end_in_typed_errors():
    script = Script(*[lambda r: httpx.Response(503, json={"detail": "database unavailable"})] * 4)
    with script.client() as api, pytest.raises(ServerError) as err:
        api.get_job("j")
    assert err.value.status_code == 503 and err.value.detail == "database unavailable"
    assert len(script.api_requests()) == FAST.attempts

    def refused(request):
        raise httpx.ConnectError("connection refused", request=request)

    with Script(*[refused] * 4).client() as api, pytest.raises(TransportError):
        api.get_job("j")


def test_client_errors_are_not_retried():
    script = Script(lambda r: httpx.Response(409, json={"detail": "claimed by another site"}))
    with script.client() as api, pytest.raises(Conflict) as err:
        api.claim_job("j")
    assert err.value.detail == "claimed by another site"
    assert len(script.api_requests()) == 1


def test_the_token_is_renewed_before_it_expires():
    issued = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            issued.append(request)
            return httpx.Response(
                200, json={"access_token": f"tok{len(issued)}", "token_type": "bearer", "expires_in": 2}
            )
        return httpx.Response(
            200,
            json={
                "kind": "site_client",
                "client_id": "c",
                "site_id": "s",
                "admin": False,
                "seen": request.headers["Authorization"],
            },
        )

    with NmdcClient(
        "http://api.test", client_id="c", client_secret="s", transport=httpx.MockTransport(handler)
    ) as api:
        assert api.me().model_extra["seen"] == "Bearer tok1"
        assert api.me().model_extra["seen"] == "Bearer tok1"  # still fresh: no new token
        time.sleep(1.7)  # past the renewal point (80 % of the lifetime), before the expiry
        assert api.me().model_extra["seen"] == "Bearer tok2"
    assert len(issued) == 2


def test_a_401_fetches_a_new_token_once():
    calls = {"api": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return _token()
        calls["api"] += 1
        if calls["api"] == 1:
            return httpx.Response(401, json={"detail": "token expired"})
        return httpx.Response(200, json={"kind": "user", "username": "u", "admin": False})

    with NmdcClient(
        "http://api.test", username="u", password="p", transport=httpx.MockTransport(handler)
    ) as api:
        assert api.me().username == "u"
    assert calls["api"] == 2


def test_each_retry_is_announced_with_its_number_and_reason():
    def refused(request):
        raise httpx.ConnectError("connection refused", request=request)

    notices: list[RetryNotice] = []
    policy = RetryPolicy(attempts=3, initial=0.01, maximum=0.02, on_retry=notices.append)
    script = Script(refused, lambda r: httpx.Response(503, json={"detail": "database unavailable"}), refused)
    api = NmdcClient(
        "http://api.test",
        client_id="c",
        client_secret="s",
        transport=httpx.MockTransport(script),
        retry=policy,
    )
    with api, pytest.raises(TransportError) as err:
        api.get_job("j")
    assert [(n.number, n.retries, n.status) for n in notices] == [(1, 2, None), (2, 2, 503)]
    assert [n.trouble for n in notices] == ["API unreachable", "API answered 503"]
    assert "connection refused" in notices[0].reason and notices[0].path == "/jobs/j"
    assert "3 attempts" in str(err.value) and "http://api.test" in str(err.value)


def test_a_deadline_bounds_the_retries_and_a_thread_may_use_its_own_policy():
    def refused(request):
        raise httpx.ConnectError("connection refused", request=request)

    tries: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return _token()
        tries[request.url.path] = tries.get(request.url.path, 0) + 1
        return refused(request)

    api = NmdcClient(
        "http://api.test",
        client_id="c",
        client_secret="s",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=2, initial=0.01, maximum=0.01),
    )
    end = time.monotonic() + 0.6
    held = RetryPolicy(attempts=None, initial=0.05, maximum=0.1, deadline=lambda: end)

    def elsewhere() -> None:
        with pytest.raises(TransportError):
            api.get_job("other-thread")

    with api:
        with api.retry_policy(held):
            thread = threading.Thread(target=elsewhere)
            thread.start()
            thread.join()
            started = time.monotonic()
            with pytest.raises(TransportError):
                api.get_job("held")
            finished = time.monotonic()
        with pytest.raises(TransportError):
            api.get_job("after")
    # No limit on attempts, but none after the deadline (and no wait past it).
    assert tries["/jobs/held"] >= 4 and end - 0.05 <= finished < end + 0.3, (tries, finished - started)
    # The other thread, and this one after the block, kept the client's own policy: two attempts.
    assert tries["/jobs/other-thread"] == 2 and tries["/jobs/after"] == 2


def test_429_is_retried_after_its_retry_after_on_the_token_and_on_every_call():
    """A burst of 429s, on the token request as on any call, is waited out: each retry no sooner than the
    answer's Retry-After (here far longer than the policy's own backoff), then the call succeeds."""
    seen: list[tuple[str, float]] = []
    bursts = {"/token": 1, "/users/me": 1}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, time.monotonic()))
        if bursts.get(request.url.path, 0) > 0:
            bursts[request.url.path] -= 1
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"detail": "slow down"})
        if request.url.path == "/token":
            return _token()
        return httpx.Response(200, json={"kind": "user", "username": "u", "admin": False})

    notices: list[RetryNotice] = []
    policy = RetryPolicy(attempts=3, initial=0.01, maximum=0.02, on_retry=notices.append)
    with NmdcClient(
        "http://api.test",
        username="u",
        password="p",
        transport=httpx.MockTransport(handler),
        retry=policy,
    ) as api:
        assert api.me().username == "u"
    assert [path for path, _ in seen] == ["/token"] * 2 + ["/users/me"] * 2
    times = [at for _, at in seen]
    waits = [times[1] - times[0], times[3] - times[2]]
    assert all(wait >= 0.95 for wait in waits), waits
    assert [n.status for n in notices] == [429] * 2
    assert notices[0].trouble == "API answered 429" and notices[0].delay >= 1


def test_429s_past_the_retries_end_in_a_typed_error_with_the_retry_after():
    busy = [lambda r: httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "busy"})] * 4
    script = Script(*busy)
    with script.client() as api, pytest.raises(TooManyRequests) as err:
        api.get_job("j")
    assert (err.value.status_code, err.value.retry_after, err.value.detail) == (429, 0, "busy")
    assert len(script.api_requests()) == FAST.attempts


def test_an_answer_that_is_not_json_is_a_clear_error():
    script = Script(lambda r: httpx.Response(200, text="<html>a web page</html>"))
    with script.client() as api, pytest.raises(UnexpectedAnswer) as err:
        api.get_job("j")
    assert "is http://api.test the NMDC Runtime API?" in str(err.value)
