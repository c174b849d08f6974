"""One router per resource, collected here in the order requests are matched against them: the routes sites
call all day first (every router before the right one costs a request a look at each of its routes, a tenth
of a claim's time in bench/README.md). The OpenAPI page lists them by `TAGS`."""

from api.routes import (
    claims,
    data_resources,
    docs,
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
    claims.router,
    operations.router,
    executions.router,
    jobs.router,
    token.router,
    sites.router,
    users.router,
    data_resources.router,
    workflows.router,
    service.router,
    docs.router,
]

TAGS = [
    {"name": name}
    for name in (
        "auth",
        "sites",
        "users",
        "data resources",
        "workflows",
        "jobs",
        "operations",
        "executions",
        "service",
    )
]
"""The OpenAPI page's sections, in the order of a site's day."""

PUBLIC_ROUTERS = [token.router, service.router, docs.router]
"""Routers whose routes declare their own answers (they need no token, or only some of them do)."""
