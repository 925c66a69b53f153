"""Serve the dashboard's static pages and the one API call it needs besides the data API.

The pages and their scripts are public: they hold no data. Everything shown
comes from the token-protected ``/api/v1`` endpoints, called by the page
with the token the user signs in with. ``GET /api/v1/whoami`` tells the
page which role (and for an enterprise token, which enterprise) the token
carries, so it can show the matching view.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

from vpp.api.routes import Route
from vpp.auth import Principal
from vpp.model import Role

DASHBOARD_PREFIX = "/dashboard"
STATIC_PREFIX = f"{DASHBOARD_PREFIX}/static"

# The page may load only what the service itself serves: no CDN, no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def static_dir() -> Path:
    """Folder of the shipped page, scripts, styles and vendored libraries."""
    return Path(str(resources.files("vpp.dashboard") / "static"))


async def whoami(request: web.Request, principal: Principal | None) -> web.Response:
    """The caller's role and, for an enterprise token, its enterprise id."""
    assert principal is not None  # the route needs a token
    return web.json_response({"role": principal.role.value, "enterprise_id": principal.enterprise_id})


API_ROUTES: tuple[Route, ...] = (
    Route(
        "GET", "/api/v1/whoami", whoami, (Role.GRID, Role.ENTERPRISE, Role.ADMIN),
        "The token's role and, for an enterprise token, its enterprise id (the dashboard picks its view by it)",
    ),
)


async def _index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(static_dir() / "index.html")


async def _to_dashboard(_: web.Request) -> web.Response:
    raise web.HTTPFound(f"{DASHBOARD_PREFIX}/")


@web.middleware
async def _page_headers(request: web.Request, handler) -> web.StreamResponse:
    """Content-Security-Policy, no-sniffing and revalidation on every dashboard response."""
    response = await handler(request)
    if request.path == "/" or request.path.startswith(DASHBOARD_PREFIX):
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["Cache-Control"] = "no-cache"  # revalidate (ETag): an upgraded service never runs old scripts
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
    return response


def add_dashboard(app: web.Application) -> None:
    """Register ``/`` (redirect), ``/dashboard/`` (the page) and ``/dashboard/static/…`` on ``app``."""
    app.middlewares.append(_page_headers)
    app.router.add_get("/", _to_dashboard)
    app.router.add_get(DASHBOARD_PREFIX, _to_dashboard)
    app.router.add_get(f"{DASHBOARD_PREFIX}/", _index)
    app.router.add_static(STATIC_PREFIX, static_dir(), show_index=False, follow_symlinks=False)
