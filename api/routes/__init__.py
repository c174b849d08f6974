"""One router per resource, collected here in the order the OpenAPI page lists them."""

from api.routes import data_resources, jobs, service, sites, token, users, workflows

ROUTERS = [
    token.router,
    sites.router,
    users.router,
    data_resources.router,
    workflows.router,
    jobs.router,
    service.router,
]
