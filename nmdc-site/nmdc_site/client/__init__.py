"""A typed Python client for the NMDC Runtime API, independent of the server's modules.

from nmdc_site.client import NmdcClient, Conflict

with NmdcClient("http://127.0.0.1:8000", client_id=..., client_secret=...) as api:
    for job in api.list_jobs(claimable=True, workflow_id="stats"):
        try:
            operation = api.claim_job(job.id).operation
        except Conflict:
            continue
"""

from nmdc_site.client.errors import (
    ApiError,
    ClientError,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServerError,
    SiteDrained,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnexpectedAnswer,
    ValidationError,
)
from nmdc_site.client.http import USER_AGENT, Claim, NmdcClient, RetryNotice, RetryPolicy
from nmdc_site.client.models import (
    AccessUrl,
    Checksum,
    ClaimedOperation,
    Credentials,
    DataResource,
    Execution,
    Job,
    Operation,
    OperationError,
    OperationMetadata,
    Principal,
    Site,
    Token,
    User,
    Workflow,
)

__all__ = [
    "USER_AGENT",
    "AccessUrl",
    "ApiError",
    "Checksum",
    "Claim",
    "ClaimedOperation",
    "ClientError",
    "Conflict",
    "Credentials",
    "DataResource",
    "Execution",
    "Forbidden",
    "Job",
    "NmdcClient",
    "NotFound",
    "Operation",
    "OperationError",
    "OperationMetadata",
    "PayloadTooLarge",
    "Principal",
    "RetryNotice",
    "RetryPolicy",
    "ServerError",
    "Site",
    "SiteDrained",
    "Token",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "UnexpectedAnswer",
    "User",
    "ValidationError",
    "Workflow",
]
