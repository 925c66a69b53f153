"""What every API module shares: the route record, the service key, request helpers."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from vpp.auth import Principal
from vpp.errors import InvalidInput, NotFound, Unauthorized
from vpp.model import Role
from vpp.service import PlantService

SERVICE_KEY: web.AppKey[PlantService] = web.AppKey("service", PlantService)

HandlerFn = Callable[[web.Request, Principal | None], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One endpoint: who may call it and what it takes and returns (for the OpenAPI document)."""

    method: str
    path: str
    handler: HandlerFn
    roles: tuple[Role, ...] | None  # None: anyone, no token
    summary: str
    request_schema: str | None = None  # component name of the JSON body
    response_schema: str | None = None
    query: tuple[tuple[str, str] | tuple[str, str, dict], ...] = ()  # (name, description[, JSON schema; default string])
    errors: tuple[int, ...] = ()  # statuses the handler answers beyond the ones every route of its kind has (404, 409)


def service_of(request: web.Request) -> PlantService:
    """The service the app serves."""
    return request.app[SERVICE_KEY]


async def json_body(request: web.Request) -> object:
    """The request's JSON body; 400 when it is not JSON."""
    raw = await request.read()
    if not raw:
        raise web.HTTPBadRequest(reason="request body is empty; send JSON")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise web.HTTPBadRequest(reason=f"request body is not valid JSON: {exc}") from None


def dump(model) -> dict:
    """A pydantic model as JSON-ready data."""
    return model.model_dump(mode="json")


MONTH_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])$"
"""A month the service handles: ASCII ``YYYY-MM`` from 1970-01 to 2999-12 (the OpenAPI document says the same)."""


def check_month(value: object, field: str) -> str:
    """``value`` as a month like 2026-07; raises ``InvalidInput`` naming ``field`` otherwise.

    ASCII digits only (``str.isdigit`` takes superscripts ``int`` refuses) and
    years 1970..2999, so that every month accepted has local bounds in UTC.
    """
    if not isinstance(value, str) or not re.fullmatch(MONTH_PATTERN, value):
        raise InvalidInput(field, f"{value!r} is not a month like 2026-07 (1970-01 to 2999-12)")
    return value


def month_query(request: web.Request) -> str:
    """The ``month=YYYY-MM`` query parameter, checked. Raises ``InvalidInput`` naming it."""
    return check_month(request.query.get("month", ""), "month")




async def enterprise_in_path(request: web.Request, principal: Principal | None) -> str:
    """The ``{enterprise_id}`` of the path, once the caller may see it and it exists.

    The role check comes before any look-up: another enterprise's token gets
    the same 403 whether or not the id exists, and so learns nothing.
    """
    enterprise_id = request.match_info["enterprise_id"]
    if principal is None:
        raise Unauthorized("this endpoint needs a token")
    principal.require_enterprise(enterprise_id)
    if await service_of(request).store.get_enterprise(enterprise_id) is None:
        raise NotFound(f"enterprise '{enterprise_id}' does not exist")
    return enterprise_id


def csv_response(text: str, filename: str) -> web.Response:
    """A CSV download named ``filename``."""
    response = web.Response(text=text, content_type="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
