"""Turn errors into JSON answers at the HTTP edge: which field is wrong and why, never a stack trace."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable

import pydantic
import structlog
from aiohttp import web

from vpp.api.limits import retry_after_s
from vpp.api.views import HEALTH_KEY
from vpp.errors import InvalidInput, StoreUnavailable, Unauthorized, VppError
from vpp.model import DeviceKind

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_UNION_TAGS = {kind.value for kind in DeviceKind}


MAX_BODY_KEY: web.AppKey[int] = web.AppKey("max_body_bytes", int)


class RateLimited(VppError):
    """The caller spent its request bucket; ``wait_s`` until the next request is allowed [s]."""

    http_status = 429

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"too many requests; retry in {retry_after_s(wait_s)} s")
        self.wait_s = wait_s


def error_response(status: int, message: str, fields: list[dict] | None = None, request_id: str | None = None) -> web.Response:
    """The one error body shape of the API."""
    body: dict = {"error": {"status": status, "message": message}}
    if fields:
        body["error"]["fields"] = fields
    if request_id:
        body["error"]["request_id"] = request_id
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


REQUEST_ID_KEY: web.RequestKey[str] = web.RequestKey("request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def request_id_of(request: web.Request) -> str:
    """The id of this request (set by ``request_id_middleware``; made up if it did not run)."""
    if REQUEST_ID_KEY not in request:
        request[REQUEST_ID_KEY] = uuid.uuid4().hex
    return request[REQUEST_ID_KEY]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (the caller's ``X-Request-Id`` when well-formed) and echo it in the answer."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    request[REQUEST_ID_KEY] = offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
    response = await handler(request)
    response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID_KEY]
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the exception tree to HTTP statuses; log unexpected errors with their trace, answer 500 plainly."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            return error_response(413, f"request body is larger than the limit of {request.app[MAX_BODY_KEY]} bytes")
        return error_response(exc.status, exc.reason)
    except pydantic.ValidationError as exc:
        return error_response(422, "request body is invalid", validation_fields(exc))
    except InvalidInput as exc:
        return error_response(422, "request is invalid", [{"field": exc.field, "message": exc.message}])
    except Unauthorized as exc:
        response = error_response(401, str(exc))
        # RFC 6750: tell the client the token itself is the problem.
        response.headers["WWW-Authenticate"] = f'Bearer realm="vpp", error="invalid_token", error_description="{_quoted(str(exc))}"'
        return response
    except RateLimited as exc:
        response = error_response(429, str(exc))
        response.headers["Retry-After"] = str(retry_after_s(exc.wait_s))
        return response
    except StoreUnavailable:
        health = request.app.get(HEALTH_KEY)
        if health is not None:
            health.failed()  # /healthz pings again instead of vouching for the store from an earlier ping
        # The detail names files or hosts: it goes to the log, the caller gets the id to quote.
        request_id = request_id_of(request)
        structlog.get_logger("vpp.api").exception("store unavailable", request_id=request_id, method=request.method, path=request.path)
        return error_response(503, "the store is unavailable; try again later", request_id=request_id)
    except VppError as exc:
        return error_response(exc.http_status, str(exc))
    except Exception:  # noqa: BLE001 - the last resort: logged with its trace, the caller gets a plain 500
        request_id = request_id_of(request)
        structlog.get_logger("vpp.api").exception("unhandled error", request_id=request_id, method=request.method, path=request.path)
        return error_response(500, "internal error; quote the request id to the operator", request_id=request_id)


def _quoted(text: str) -> str:
    """``text`` safe inside a quoted header parameter (printable ASCII, no quotes or backslashes)."""
    return "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "?" for c in text)
