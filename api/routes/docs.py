"""The OpenAPI pages, `/docs` (Swagger UI) and `/redoc`, with every file they load served here.

FastAPI's own pages load Swagger UI, ReDoc, a favicon and fonts from public CDNs: blank in a network that
reaches none, as many sites' networks are. The files come from the `fastapi-offline` package (pinned in
constraints.txt), which ships Swagger UI 5 and ReDoc 2 as they are on those CDNs; the pages themselves are
FastAPI's, pointed at them.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

router = APIRouter(include_in_schema=False)

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"})
"""The only files served: a fixed set, so an asset URL is never a path into the file system."""
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# The pages may load from the API alone: ReDoc would otherwise fetch its makers' logo from their CDN (and hide
# it when that fails), telling a third party who reads the docs. Inline scripts and styles are the pages' own.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def _asset(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}/docs/assets/{name}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _page(
        get_swagger_ui_html(
            openapi_url=root + request.app.openapi_url,
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=_asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=_asset(request, "swagger-ui.css"),
            swagger_favicon_url=_asset(request, "favicon.png"),
            oauth2_redirect_url=root + OAUTH2_REDIRECT,
        )
    )


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return _page(
        get_redoc_html(
            openapi_url=request.scope.get("root_path", "") + request.app.openapi_url,
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=_asset(request, "redoc.standalone.js"),
            redoc_favicon_url=_asset(request, "favicon.png"),
            with_google_fonts=False,
        )
    )


@router.get("/docs/assets/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, "no such file")
    # The files change only with the package's version; a day's caching spares each page load ~2.7 MB.
    return FileResponse(ASSETS_DIR / name, headers={"Cache-Control": "public, max-age=86400"})
