"""Typed errors: every non-2xx answer becomes an `ApiError` (or a subclass) carrying the server's `detail`."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import httpx


class ClientError(Exception):
    """Base of everything this client raises."""


class TransportError(ClientError):
    """The API could not be reached (connection refused, timeouts), even after retries."""


class UnexpectedAnswer(ClientError):
    """The answer is not what the API sends (not JSON, say): the URL may not be the API's."""


class ApiError(ClientError):
    """The API answered with an error status; `detail` is its `{"detail": ...}`, or the raw text.

    `retry_after` is the answer's `Retry-After` in seconds (a 429 or a 503 says when to try again), or None;
    `error_code` its `NMDC-Error-Code` header (which of several refusals of one status it is), or None.
    """

    def __init__(
        self,
        status_code: int,
        detail: Any,
        *,
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
        error_code: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.error_code = error_code
        self.detail = detail
        self.method = method
        self.url = url
        self.retry_after = retry_after
        super().__init__(f"{method} {url} -> {status_code}: {detail_text(detail)}".strip())

    @property
    def status(self) -> int:
        """Alias of `status_code`."""
        return self.status_code


class ValidationError(ApiError):
    """400 or 422: the request was invalid; `detail` says which field when the server knows."""


class Unauthorized(ApiError):
    """401: no token, a bad one, or bad credentials."""


class Forbidden(ApiError):
    """403: authenticated, but not allowed to do this."""


class NotFound(ApiError):
    """404: unknown id (or an operation deleted after its retention period)."""


class Conflict(ApiError):
    """409: conflicts with the current state (e.g. the job is claimed by another site, the lease was lost)."""


class SiteDrained(Conflict):
    """409 with `NMDC-Error-Code: SITE_DRAINED`: the calling site's last operations failed at the site, in a
    row; it claims no new job until staff or its admin lift the drain (`detail` says since when, and which)."""


class PayloadTooLarge(ApiError):
    """413: the body is larger than the server accepts."""


class TooManyRequests(ApiError):
    """429: the server asks the caller to slow down (retried first, after its `Retry-After`; raised when retries
    ran out)."""


class ServerError(ApiError):
    """5xx: the server failed (retried first; raised when retries ran out)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: TooManyRequests,
}

MAX_RETRY_AFTER = 3600.0
"""A `Retry-After` longer than this is taken as this."""


def detail_text(detail: Any) -> str:
    """A one-line rendering of a `detail` (FastAPI's 422 lists become `loc: msg; ...`)."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def error_for(response: httpx.Response) -> ApiError:
    """The typed error for a non-2xx response."""
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text or response.reason_phrase
    status = response.status_code
    code = response.headers.get("NMDC-Error-Code")
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    if status == 409 and code == "SITE_DRAINED":
        cls = SiteDrained
    return cls(
        status,
        detail,
        method=response.request.method,
        url=str(response.request.url),
        retry_after=retry_after(response.headers.get("Retry-After")),
        error_code=code,
    )


def retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
