"""`NmdcClient`: a synchronous, typed client for the NMDC Runtime API.

Behaviour worth knowing:

* Tokens are fetched on first use and renewed shortly before they expire (and once more on a 401, in case
  the server restarted with another key or the clock drifted).
* Connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff and jitter, never
  sooner than the answer's ``Retry-After``, as the `RetryPolicy` says: a number of attempts, or until a
  deadline (a site holding a claim retries for as long as its lease lasts); ``on_retry`` hears of each retry,
  so a program can say that the API is unreachable. Token requests are retried the same way.
  ``with client.retry_policy(policy):`` changes the policy for the calling thread only.
* Every POST carries an ``Idempotency-Key``: one key per logical call, reused by its retries, so a retried
  ``POST /data_resources`` or ``POST /jobs/{id}/executions`` cannot create twice. Pass ``idempotency_key=`` to
  choose it yourself (e.g. derived from what is being registered, to be safe across process restarts too).
* List methods return iterators that follow ``next_page_token`` until it is null.
* Error answers raise `ApiError` subclasses carrying the server's ``detail``.

The client is thread-safe: the site agent heartbeats from one thread while another downloads.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import tenacity
from pydantic import BaseModel

from nmdc_site import __version__
from nmdc_site.client.errors import (
    ApiError,
    ServerError,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnexpectedAnswer,
    error_for,
)
from nmdc_site.client.models import (
    AccessUrl,
    Credentials,
    DataResource,
    Execution,
    Job,
    Operation,
    Page,
    Principal,
    Site,
    Token,
    User,
    Workflow,
)

M = TypeVar("M", bound=BaseModel)

USER_AGENT = f"nmdc-site/{__version__}"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: the operation, and whether this call created it (201) or found ours (200)."""

    operation: Operation
    new: bool


@dataclass(frozen=True)
class RetryNotice:
    """One retry about to happen: the request failed on the way (no answer, a 429 or a 5xx) and is tried
    again."""

    number: int
    """1 for the first retry."""
    retries: int | None
    """How many retries the policy allows in all; None when only a deadline bounds them."""
    delay: float
    """Seconds until the retry."""
    method: str
    path: str
    status: int | None
    """The 429 or 5xx status, or None when the API could not be reached at all."""
    reason: str

    @property
    def trouble(self) -> str:
        """ "API unreachable", or "API answered 503": what went wrong, in a few words."""
        return "API unreachable" if self.status is None else f"API answered {self.status}"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a request that failed on the way: connection errors, timeouts, 429, 500/502/503/504.

    `attempts` counts every try, the first included (None: no limit, `deadline` alone bounds them);
    `initial` and `maximum` bound the exponential backoff, in seconds; an answer's `Retry-After` lengthens a
    wait past `maximum` if it asks for more. `deadline`, when given, is read before each retry and returns the
    `time.monotonic()` after which no retry starts (and no wait lasts past it). `on_retry` is called before
    each wait, `sleep` does the waiting (an `Event.wait` makes it interruptible). `timeout`, when given,
    replaces the client's own timeout for each try, in seconds.
    """

    attempts: int | None = 6
    initial: float = 0.5
    maximum: float = 10.0
    deadline: Callable[[], float] | None = None
    on_retry: Callable[[RetryNotice], None] | None = None
    sleep: Callable[[float], object] = time.sleep
    timeout: float | None = None

    @property
    def retries(self) -> int | None:
        """Retries after the first try, when the count bounds them."""
        return None if self.attempts is None else self.attempts - 1


def _reason(exc: BaseException) -> str:
    """One line on why a request failed on the way."""
    if isinstance(exc, ApiError):
        return f"{exc.status_code} {exc.detail}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


class NmdcClient:
    """A client for one API, acting as one principal (a site client, a user, or a fixed token)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        username: str | None = None,
        password: str | None = None,
        access_token: str | None = None,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        """`http` lets tests pass FastAPI's `TestClient`; `transport` lets them pass an `httpx.MockTransport`."""
        if client_id and client_secret:
            self._grant: dict[str, str] | None = {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            }
        elif username and password:
            self._grant = {"grant_type": "password", "username": username, "password": password}
        else:
            self._grant = None
        self._owns_http = http is None
        self._http = http or httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
        )
        self.retry = retry or RetryPolicy()
        # Per-thread policy overrides (`retry_policy()`): a heartbeat thread may retry differently.
        self._local = threading.local()
        self._token_lock = threading.Lock()
        self._token: str | None = access_token
        # monotonic() deadline after which the token is renewed; a given token is never renewed.
        self._renew_at: float = float("inf") if access_token else 0.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> NmdcClient:
        """A client from NMDC_API_URL and NMDC_CLIENT_ID/NMDC_CLIENT_SECRET (or NMDC_USERNAME/NMDC_PASSWORD)."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("NMDC_API_URL", "http://127.0.0.1:8000"),
            client_id=env.get("NMDC_CLIENT_ID"),
            client_secret=env.get("NMDC_CLIENT_SECRET"),
            username=env.get("NMDC_USERNAME"),
            password=env.get("NMDC_PASSWORD"),
            **kwargs,
        )

    @property
    def base_url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    def close(self) -> None:
        """Close the connection pool (only when this client made it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> NmdcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- tokens -------------------------------------------------------------------------------------

    def fetch_token(self) -> Token:
        """Exchange the configured credentials for a new token (and use it from now on)."""
        if self._grant is None:
            raise Unauthorized(
                401, "no credentials configured: pass client_id/client_secret or username/password"
            )
        body = self._send("POST", "/token", data=self._grant, authenticate=False)
        token = Token.model_validate(body)
        lifetime = max(token.expires_in, 1)
        # Renew early enough that a request in flight never carries an expired token, even for short lifetimes.
        margin = min(60.0, lifetime * 0.2)
        with self._token_lock:
            self._token = token.access_token
            self._renew_at = time.monotonic() + lifetime - margin
        return token

    def _bearer(self, *, force: bool = False) -> str | None:
        with self._token_lock:
            fresh = self._token is not None and time.monotonic() < self._renew_at
            if fresh and not force:
                return self._token
            if self._grant is None:
                return self._token
        self.fetch_token()
        return self._token

    # ---- transport ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def retry_policy(self, policy: RetryPolicy) -> Iterator[RetryPolicy]:
        """Use `policy` for the requests the calling thread makes inside the block (other threads keep theirs)."""
        previous = getattr(self._local, "retry", None)
        self._local.retry = policy
        try:
            yield policy
        finally:
            self._local.retry = previous

    def _policy(self) -> RetryPolicy:
        return getattr(self._local, "retry", None) or self.retry

    def _retrying(self, method: str, path: str) -> tenacity.Retrying:
        policy = self._policy()

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, httpx.TransportError):
                return True
            return isinstance(exc, ServerError | TooManyRequests) and exc.status_code in RETRYABLE_STATUS

        def past_deadline(_state: tenacity.RetryCallState) -> bool:
            return policy.deadline is not None and time.monotonic() >= policy.deadline()

        backoff = tenacity.wait_exponential_jitter(initial=policy.initial, max=policy.maximum)

        def wait(state: tenacity.RetryCallState) -> float:
            delay = backoff(state)
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, ApiError) and exc.retry_after is not None:
                delay = max(delay, exc.retry_after)  # the server said when: not sooner
            if policy.deadline is not None:
                delay = min(delay, max(0.0, policy.deadline() - time.monotonic()))
            return delay

        def announce(state: tenacity.RetryCallState) -> None:
            if policy.on_retry is None or state.outcome is None or state.next_action is None:
                return
            exc = state.outcome.exception()
            policy.on_retry(
                RetryNotice(
                    number=state.attempt_number,
                    retries=policy.retries,
                    delay=state.next_action.sleep,
                    method=method,
                    path=path,
                    status=exc.status_code if isinstance(exc, ApiError) else None,
                    reason=_reason(exc),
                )
            )

        stop = tenacity.stop_any(
            tenacity.stop_after_attempt(policy.attempts) if policy.attempts else tenacity.stop_never,
            past_deadline,
        )
        return tenacity.Retrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(retryable),
            before_sleep=announce,
            sleep=policy.sleep,
            reraise=True,
        )

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        authenticate: bool = True,
        idempotency_key: str | None = None,
        response_hook: list[httpx.Response] | None = None,
    ) -> Any:
        # Per request, not per connection pool: a pool passed in (FastAPI's TestClient) would not carry it.
        headers: dict[str, str] = {"User-Agent": USER_AGENT}
        if method == "POST" and authenticate:
            # One key per logical call: every retry below repeats it.
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        query = {
            k: ("true" if v is True else "false" if v is False else v) for k, v in (params or {}).items()
        }
        query = _drop_none(query)

        tries = 0
        policy = self._policy()
        # httpx's own default ("use the client's") is a sentinel that cannot be passed on explicitly.
        timeout = {} if policy.timeout is None else {"timeout": policy.timeout}

        def attempt() -> httpx.Response:
            nonlocal tries
            tries += 1
            if authenticate:
                token = self._bearer()
                if token:
                    headers["Authorization"] = f"Bearer {token}"
            response = self._http.request(
                method, path, params=query, json=json, data=data, headers=headers, **timeout
            )
            if response.status_code == 401 and authenticate and self._grant is not None:
                # The token may have been revoked by a key change or clock skew: one fresh token, one retry.
                headers["Authorization"] = f"Bearer {self._bearer(force=True)}"
                response = self._http.request(
                    method, path, params=query, json=json, data=data, headers=headers, **timeout
                )
            if response.status_code >= 400:
                raise error_for(response)
            return response

        try:
            response = self._retrying(method, path)(attempt)
        except httpx.TransportError as exc:
            tried = f"{tries} attempts" if tries > 1 else "1 attempt"
            raise TransportError(
                f"API unreachable at {self.base_url} ({method} {path}, {tried}): {_reason(exc)}"
            ) from exc
        if response_hook is not None:
            response_hook.append(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise UnexpectedAnswer(
                f"{method} {self.base_url}{path} answered {response.status_code} with something other than "
                f"JSON: is {self.base_url} the NMDC Runtime API?"
            ) from exc

    def _get(self, path: str, model: type[M], **params: Any) -> M:
        return model.model_validate(self._send("GET", path, params=params))

    def _paginate(self, path: str, model: type[M], page_size: int = 100, **params: Any) -> Iterator[M]:
        token: str | None = None
        while True:
            body = self._send("GET", path, params={**params, "max_page_size": page_size, "page_token": token})
            page = Page.model_validate(body)
            for item in page.resources:
                yield model.model_validate(item)
            if page.next_page_token is None:
                return
            token = page.next_page_token

    # ---- service and identity -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """`GET /health` (no token); raises `ServerError` on 503 once retries are spent."""
        return self._send("GET", "/health", authenticate=False)

    def me(self) -> Principal:
        """Who this client's token belongs to."""
        return self._get("/users/me", Principal)

    # ---- sites and users ----------------------------------------------------------------------------

    def create_site(
        self, site_id: str, name: str | None = None, capabilities: list[str] | None = None
    ) -> Site:
        body = {"id": site_id, "name": name or site_id, "capabilities": capabilities or []}
        return Site.model_validate(self._send("POST", "/sites", json=body))

    def list_sites(self, *, page_size: int = 100) -> Iterator[Site]:
        return self._paginate("/sites", Site, page_size)

    def get_site(self, site_id: str) -> Site:
        return self._get(f"/sites/{site_id}", Site)

    def generate_credentials(self, site_id: str) -> Credentials:
        """New client credentials for a site (admin, or an admin of that site). The secret is shown once."""
        return Credentials.model_validate(self._send("POST", f"/sites/{site_id}:generateCredentials"))

    def create_user(
        self, username: str, password: str, *, admin: bool = False, site_admin_of: list[str] | None = None
    ) -> User:
        body = {
            "username": username,
            "password": password,
            "admin": admin,
            "site_admin_of": site_admin_of or [],
        }
        return User.model_validate(self._send("POST", "/users", json=body))

    # ---- data resources -----------------------------------------------------------------------------

    def create_data_resource(
        self,
        *,
        name: str,
        url: str,
        data_type: str,
        size: int,
        checksums: list[dict[str, str]],
        description: str | None = None,
        requires_grant: bool = False,
        group: str | None = None,
        idempotency_key: str | None = None,
    ) -> DataResource:
        """Register a data resource of the caller's site (`requires_grant`: served only with a grant; `group`:
        the sample or data generation it belongs to)."""
        body = _drop_none(
            {
                "name": name,
                "url": url,
                "data_type": data_type,
                "size": size,
                "checksums": checksums,
                "description": description,
                # Sent only when set: servers that predate grants keep accepting the registration.
                "requires_grant": True if requires_grant else None,
                "group": group,
            }
        )
        return DataResource.model_validate(
            self._send("POST", "/data_resources", json=body, idempotency_key=idempotency_key)
        )

    def list_data_resources(
        self, *, site_id: str | None = None, data_type: str | None = None, page_size: int = 100
    ) -> Iterator[DataResource]:
        return self._paginate(
            "/data_resources", DataResource, page_size, site_id=site_id, data_type=data_type
        )

    def get_data_resource(self, data_resource_id: str) -> DataResource:
        return self._get(f"/data_resources/{data_resource_id}", DataResource)

    def access(self, data_resource_id: str) -> AccessUrl:
        """An access grant for a data resource: its URL and the headers its data site asks for (for the holder
        of an active claim on a job that reads it, the site that owns it, or an admin)."""
        return AccessUrl.model_validate(self._send("POST", f"/data_resources/{data_resource_id}:access"))

    def jwks(self) -> dict[str, Any]:
        """The public keys access grants are signed with (`GET /.well-known/jwks.json`, no token)."""
        return self._send("GET", "/.well-known/jwks.json", authenticate=False)

    # ---- workflows ----------------------------------------------------------------------------------

    def create_workflow(
        self,
        workflow_id: str,
        *,
        name: str | None = None,
        version: str = "1",
        data_types: list[str] | None = None,
        required_capabilities: list[str] | None = None,
        config: dict[str, Any] | None = None,
        enabled: bool = True,
        lease_seconds: int | None = None,
        inputs: dict[str, dict[str, Any]] | None = None,
    ) -> Workflow:
        """Create a workflow (admin); `lease_seconds` (sent only when given) is how long its claims may last;
        `inputs` names its inputs by role (`{role: {"data_type", "optional"?}}`), which decide its data types."""
        body = _drop_none(
            {
                "id": workflow_id,
                "name": name or workflow_id,
                "version": version,
                # A workflow's inputs decide its data types: the two are never sent together.
                "data_types": (data_types or []) if inputs is None else None,
                "inputs": inputs,
                "required_capabilities": required_capabilities or [],
                "config": config or {},
                "enabled": enabled,
                "lease_seconds": lease_seconds,
            }
        )
        return Workflow.model_validate(self._send("POST", "/workflows", json=body))

    def list_workflows(self, *, page_size: int = 100) -> Iterator[Workflow]:
        return self._paginate("/workflows", Workflow, page_size)

    def get_workflow(self, workflow_id: str) -> Workflow:
        return self._get(f"/workflows/{workflow_id}", Workflow)

    def update_workflow(self, workflow_id: str, **changes: Any) -> Workflow:
        """`PATCH /workflows/{id}`, e.g. ``update_workflow("w", enabled=False)``."""
        return Workflow.model_validate(self._send("PATCH", f"/workflows/{workflow_id}", json=changes))

    # ---- jobs ---------------------------------------------------------------------------------------

    def create_job(
        self,
        workflow_id: str,
        data_resource_ids: list[str] | None = None,
        config: dict[str, Any] | None = None,
        *,
        inputs: dict[str, str] | None = None,
        group: str | None = None,
    ) -> Job:
        """Make a job by hand (admin), over data resources and (`inputs`) data resources by role."""
        body = _drop_none(
            {
                "workflow_id": workflow_id,
                # Left out when only inputs by role are given (servers before roles require the field).
                "data_resource_ids": data_resource_ids or ([] if inputs is None else None),
                "inputs": inputs,
                "group": group,
                "config": config,
            }
        )
        return Job.model_validate(self._send("POST", "/jobs", json=body))

    def list_jobs(
        self,
        *,
        status: str | None = None,
        workflow_id: str | None = None,
        data_resource_id: str | None = None,
        group: str | None = None,
        claimable: bool | None = None,
        page_size: int = 100,
    ) -> Iterator[Job]:
        """Jobs; ``claimable=True`` gives those the calling site could claim now."""
        return self._paginate(
            "/jobs",
            Job,
            page_size,
            status=status,
            workflow_id=workflow_id,
            data_resource_id=data_resource_id,
            group=group,
            claimable=True if claimable else None,
        )

    def get_job(self, job_id: str) -> Job:
        return self._get(f"/jobs/{job_id}", Job)

    def claim_job(self, job_id: str, *, lease_seconds: int | None = None) -> Claim:
        """Claim a job. Safe to repeat: the holder gets the same operation back (`Claim.new` is then False).

        `lease_seconds` asks for a lease of that length (up to the workflow's `lease_seconds`); the body
        ``{"lease_seconds": N}`` is sent only when it is given.
        """
        responses: list[httpx.Response] = []
        body = None if lease_seconds is None else {"lease_seconds": lease_seconds}
        body = self._send("POST", f"/jobs/{job_id}:claim", json=body, response_hook=responses)
        return Claim(operation=Operation.model_validate(body), new=responses[-1].status_code == 201)

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a job (admin); an active operation gets `cancel_requested`."""
        return Job.model_validate(self._send("POST", f"/jobs/{job_id}:cancel"))

    def release_job(self, job_id: str, *, reason: str | None = None, message: str = "") -> Job:
        """Give a claimed job back; the release does not count as a failed attempt.

        `reason` says why (``SITE_FAULT``: the failure was this site's own; ``SHUTDOWN``: it is stopping) and
        is kept, with `message`, in the operation's ``error.details.reason``; the body is sent only with it.
        """
        body = None if reason is None else {"reason": {"code": reason, "message": message}}
        return Job.model_validate(self._send("POST", f"/jobs/{job_id}:release", json=body))

    # ---- operations ---------------------------------------------------------------------------------

    def list_operations(
        self,
        *,
        job_id: str | None = None,
        site_id: str | None = None,
        workflow_id: str | None = None,
        data_resource_id: str | None = None,
        done: bool | None = None,
        page_size: int = 100,
    ) -> Iterator[Operation]:
        return self._paginate(
            "/operations",
            Operation,
            page_size,
            job_id=job_id,
            site_id=site_id,
            workflow_id=workflow_id,
            data_resource_id=data_resource_id,
            done=done,
        )

    def get_operation(self, operation_id: str) -> Operation:
        return self._get(f"/operations/{operation_id}", Operation)

    def update_operation(
        self,
        operation_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        done: bool | None = None,
        execution_id: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> Operation:
        """PATCH an operation: renews the lease; merges `metadata`; finishes it with a result or an error.

        The answer's ``metadata.cancel_requested`` and ``metadata.paused`` tell the holder what staff asked for.
        """
        body = _drop_none(
            {
                "metadata": metadata,
                "done": done,
                "result": {"execution_id": execution_id} if execution_id else None,
                "error": error,
            }
        )
        return Operation.model_validate(self._send("PATCH", f"/operations/{operation_id}", json=body))

    def heartbeat(
        self, operation_id: str, *, progress: float | None = None, message: str | None = None
    ) -> Operation:
        """Renew the lease, reporting progress (a percentage) and a message."""
        return self.update_operation(
            operation_id, metadata=_drop_none({"progress": progress, "message": message})
        )

    def finish_operation(
        self,
        operation_id: str,
        *,
        execution_id: str | None = None,
        error: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Operation:
        """Finish with a result (an execution of this job by this site) or with an error `{code, message}`;
        `metadata` (e.g. the last progress and message) is merged in the same PATCH."""
        if (execution_id is None) == (error is None):
            raise ValueError("finish an operation with exactly one of execution_id and error")
        return self.update_operation(
            operation_id, metadata=metadata, done=True, execution_id=execution_id, error=error
        )

    def cancel_operation(self, operation_id: str) -> Operation:
        return Operation.model_validate(self._send("POST", f"/operations/{operation_id}:cancel"))

    def pause_operation(self, operation_id: str) -> Operation:
        return Operation.model_validate(self._send("POST", f"/operations/{operation_id}:pause"))

    def resume_operation(self, operation_id: str) -> Operation:
        return Operation.model_validate(self._send("POST", f"/operations/{operation_id}:resume"))

    # ---- executions ---------------------------------------------------------------------------------

    def create_execution(
        self,
        job_id: str,
        *,
        operation_id: str,
        status: str,
        started_at: str,
        ended_at: str,
        outputs: list[dict[str, Any]] | None = None,
        details: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Execution:
        """Record what this site did for a job; each output becomes a data resource of this site."""
        body = _drop_none(
            {
                "operation_id": operation_id,
                "status": status,
                "started_at": started_at,
                "ended_at": ended_at,
                "outputs": _dump(outputs or []),
                "details": details,
            }
        )
        return Execution.model_validate(
            self._send("POST", f"/jobs/{job_id}/executions", json=body, idempotency_key=idempotency_key)
        )

    def list_executions(self, job_id: str, *, page_size: int = 100) -> Iterator[Execution]:
        return self._paginate(f"/jobs/{job_id}/executions", Execution, page_size)

    def get_execution(self, job_id: str, execution_id: str) -> Execution:
        return self._get(f"/jobs/{job_id}/executions/{execution_id}", Execution)

    def update_execution(self, job_id: str, execution_id: str, **changes: Any) -> Execution:
        return Execution.model_validate(
            self._send("PATCH", f"/jobs/{job_id}/executions/{execution_id}", json=changes)
        )


__all__ = ["USER_AGENT", "ApiError", "Claim", "NmdcClient", "RetryNotice", "RetryPolicy"]
