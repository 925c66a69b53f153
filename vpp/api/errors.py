"""Turn errors into JSON answers at the HTTP edge: which field is wrong and why, never a stack trace."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pydantic
import structlog
from aiohttp import web

from vpp.errors import InvalidInput, VppError
from vpp.model import DeviceKind

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_UNION_TAGS = {kind.value for kind in DeviceKind}


def error_response(status: int, message: str, fields: list[dict] | None = None) -> web.Response:
    """The one error body shape of the API."""
    body: dict = {"error": {"status": status, "message": message}}
    if fields:
        body["error"]["fields"] = fields
    return web.json_response(body, status=status)


def field_path(loc: tuple) -> str:
    """Dotted field path of a pydantic error, without the tag pydantic adds for the device union."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in _UNION_TAGS:
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_fields(exc: pydantic.ValidationError) -> list[dict]:
    """One entry per wrong field: its path, the reason and the value sent."""
    fields = []
    for err in exc.errors(include_url=False):
        # An unknown device kind is reported by pydantic without a location.
        path = "kind" if err["type"] in ("union_tag_invalid", "union_tag_not_found") else field_path(err["loc"])
        entry = {"field": path, "message": err["msg"]}
        if "input" in err and not isinstance(err["input"], dict):
            entry["input"] = err["input"] if _json_safe(err["input"]) else repr(err["input"])
        fields.append(entry)
    return fields


def _json_safe(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the exception tree to HTTP statuses; log unexpected errors with their trace, answer 500 plainly."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except pydantic.ValidationError as exc:
        return error_response(422, "request body is invalid", validation_fields(exc))
    except InvalidInput as exc:
        return error_response(422, "request is invalid", [{"field": exc.field, "message": exc.message}])
    except VppError as exc:
        return error_response(exc.http_status, str(exc))
    except Exception:
        structlog.get_logger("vpp.api").exception("unhandled error", method=request.method, path=request.path)
        return error_response(500, "internal error; see the service log")
