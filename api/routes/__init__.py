"""One router per resource, collected here in the order the OpenAPI page lists them."""

from api.routes import (
    claims,
    data_resources,
    executions,
    jobs,
    operations,
    service,
    sites,
    token,
    users,
    workflows,
)

ROUTERS = [
    token.router,
    sites.router,
    users.router,
    data_resources.router,
    workflows.router,
    jobs.router,
    claims.router,
    operations.router,
    executions.router,
    service.router,
]

PUBLIC_ROUTERS = [token.router, service.router]
"""Routers whose routes declare their own answers (they need no token, or only some of them do)."""
