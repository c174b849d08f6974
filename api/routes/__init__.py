"""One router per resource, collected here in the order the OpenAPI page lists them."""

from api.routes import service, token

ROUTERS = [token.router, service.router]
