"""HTTP API v1 (aiohttp). One route table drives routing, authorisation and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web

from vpp.api import views
from vpp.api.carbon_routes import ROUTES as CARBON_ROUTES
from vpp.api.errors import MAX_BODY_KEY, RateLimited, error_middleware, error_response, request_id_middleware
from vpp.api.limits import ApiSettings, RateLimiter
from vpp.api.openapi import openapi_document
from vpp.api.routes import SERVICE_KEY, Route, dump, enterprise_in_path, json_body, service_of
from vpp.api.settlement_routes import ROUTES as SETTLEMENT_ROUTES
from vpp.auth import Principal, TokenCache, authenticate, hash_token
from vpp.dashboard import API_ROUTES as DASHBOARD_API_ROUTES
from vpp.dashboard import add_dashboard
from vpp.errors import InvalidInput, Unauthorized
from vpp.metrics import CONTENT_TYPE
from vpp.model import DispatchInstruction, Enterprise, Role, parse_device
from vpp.service import PlantService

# -- handlers ------------------------------------------------------------------


async def healthz(request: web.Request, _: Principal | None) -> web.Response:
    # A busy API does not queue a store ping per check: see views.StoreHealth.
    store_ok = await request.app[views.HEALTH_KEY].ok(service_of(request).store)
    return web.json_response({"status": "ok" if store_ok else "degraded", "store": store_ok}, status=200 if store_ok else 503)


async def metrics(request: web.Request, _: Principal | None) -> web.Response:
    response = web.Response(body=service_of(request).metrics.render())
    response.content_type = CONTENT_TYPE.split(";")[0]
    return response


async def openapi(request: web.Request, _: Principal | None) -> web.Response:
    return request.app[views.OPENAPI_KEY].response()


async def get_plant(request: web.Request, _: Principal | None) -> web.Response:
    service = service_of(request)
    body = service.plant()
    if request.query.get("devices", "").lower() in ("1", "true", "yes"):
        body["devices"] = service.plant_devices()
    return web.json_response(body)


MAX_ENVELOPE_HOURS = 48


async def get_envelope(request: web.Request, _: Principal | None) -> web.Response:
    raw = request.query.get("hours", "24")
    try:
        hours = float(raw)
    except ValueError:
        raise InvalidInput("hours", f"'{raw}' is not a number") from None
    if not 0.25 <= hours <= MAX_ENVELOPE_HOURS:
        raise InvalidInput("hours", f"{hours} is outside [0.25, {MAX_ENVELOPE_HOURS}]")
    return web.json_response({"interval_min": 15, "intervals": service_of(request).envelope(hours)})


def _query_time(request: web.Request, name: str) -> datetime:
    raw = request.query.get(name)
    if raw is None:
        raise InvalidInput(name, "is required (ISO 8601 with a time zone)")
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(name, f"'{raw}' is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise InvalidInput(name, f"'{raw}' has no time zone")
    return when.astimezone(UTC)


async def get_flexibility(request: web.Request, _: Principal | None) -> web.Response:
    direction = request.query.get("direction", "up")
    offer = await service_of(request).flexibility(_query_time(request, "start"), _query_time(request, "end"), direction)
    return web.json_response(
        {"direction": offer.direction, "start": offer.start.isoformat(), "end": offer.end.isoformat(),
         "offered_kw": offer.offered_kw, "extra_cost_cny": offer.extra_cost_cny, "status": offer.status}
    )


async def post_dispatch(request: web.Request, _: Principal | None) -> web.Response:
    payload = await json_body(request)
    if not isinstance(payload, dict):
        raise InvalidInput("body", "must be a JSON object")
    payload.setdefault("source", "rest")
    instruction = DispatchInstruction.model_validate(payload)
    service = service_of(request)
    stored, created = await service.submit_instruction(instruction)
    if not created and stored != instruction:
        return web.json_response(
            {"error": {"status": 409, "message": f"instruction '{instruction.id}' exists with different content", "existing": dump(stored)}},
            status=409,
        )
    view = views.dispatch_view(*await service.instruction_view(stored.id))
    return web.json_response(view, status=201 if created else 200)


async def list_dispatch(request: web.Request, _: Principal | None) -> web.Response:
    pairs = await service_of(request).list_instructions()
    return web.json_response({"instructions": [{"instruction": dump(i), "state": views.state_json(s)} for i, s in pairs]})


async def get_dispatch(request: web.Request, _: Principal | None) -> web.Response:
    return await request.app[views.DISPATCH_VIEWS_KEY].answer(service_of(request), request.match_info["instruction_id"])


async def list_enterprises(request: web.Request, _: Principal | None) -> web.Response:
    enterprises = await service_of(request).store.list_enterprises()
    return web.json_response({"enterprises": [dump(e) for e in enterprises]})


async def post_enterprise(request: web.Request, _: Principal | None) -> web.Response:
    payload = await json_body(request)
    enterprise = Enterprise.model_validate(payload)
    store = service_of(request).store
    created = await store.get_enterprise(enterprise.id) is None
    await store.put_enterprise(enterprise)
    return web.json_response(dump(enterprise), status=201 if created else 200)


async def get_enterprise(request: web.Request, principal: Principal | None) -> web.Response:
    enterprise_id = await enterprise_in_path(request, principal)
    enterprise = await service_of(request).store.get_enterprise(enterprise_id)
    return web.json_response(dump(enterprise))


async def list_devices(request: web.Request, principal: Principal | None) -> web.Response:
    enterprise_id = await enterprise_in_path(request, principal)
    service = service_of(request)
    devices = await service.store.list_devices(enterprise_id)
    live = {row["device_id"]: row for row in service.plant_devices() if row["enterprise_id"] == enterprise_id}
    return web.json_response({"devices": [{**dump(d), "live": live.get(d.id)} for d in devices]})


async def post_device(request: web.Request, principal: Principal | None) -> web.Response:
    enterprise_id = await enterprise_in_path(request, principal)
    payload = await json_body(request)
    if not isinstance(payload, dict):
        raise InvalidInput("body", "must be a JSON object")
    if payload.setdefault("enterprise_id", enterprise_id) != enterprise_id:
        raise InvalidInput("enterprise_id", f"'{payload['enterprise_id']}' differs from the enterprise in the path '{enterprise_id}'")
    if "kind" not in payload:
        raise InvalidInput("kind", "missing; one of battery, pv, interruptible_load, shiftable_load, ev_charger")
    device = parse_device(payload)
    created = await service_of(request).enrol_device(device)
    return web.json_response(dump(device), status=201 if created else 200)


CORE_ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", healthz, None, "Liveness and store reachability"),
    Route("GET", "/metrics", metrics, None, "Prometheus metrics"),
    Route("GET", "/api/v1/openapi.json", openapi, None, "This document"),
    Route(
        "GET", "/api/v1/plant", get_plant, (Role.GRID, Role.ADMIN),
        "Live totals: net power, available up/down (now and sustained), devices online",
        response_schema="PlantState", query=(("devices", "true to include per-device live rows"),),
    ),
    Route(
        "GET", "/api/v1/plant/envelope", get_envelope, (Role.GRID, Role.ADMIN),
        "Up/down capability per 15-min interval ahead, each interval offered on its own",
        query=(("hours", "horizon, 0.25 to 48 (default 24) [h]", {"type": "number", "minimum": 0.25, "maximum": MAX_ENVELOPE_HOURS}),),
    ),
    Route(
        "GET", "/api/v1/plant/flexibility", get_flexibility, (Role.GRID, Role.ADMIN),
        "The most power the fleet can hold in every quarter hour from start to end on top of its schedule,"
        " and what it costs (409 before the first schedule is solved)",
        query=(
            ("start", "window start, ISO 8601 with zone", {"type": "string", "format": "date-time"}),
            ("end", "window end, ISO 8601 with zone", {"type": "string", "format": "date-time"}),
            ("direction", "up (raise fleet power, reduce park load) or down", {"type": "string", "enum": ["up", "down"]}),
        ),
        errors=(409,),
    ),
    Route(
        "POST", "/api/v1/dispatch", post_dispatch, (Role.GRID,),
        "Send an instruction; the same id again returns the same answer (200), different content 409",
        request_schema="DispatchInstruction", response_schema="DispatchView", errors=(409,),
    ),
    Route("GET", "/api/v1/dispatch", list_dispatch, (Role.GRID, Role.ADMIN), "All instructions with their state"),
    Route(
        "GET", "/api/v1/dispatch/{instruction_id}", get_dispatch, (Role.GRID, Role.ADMIN),
        "Status, requested vs delivered over time, per-enterprise shares", response_schema="DispatchView",
    ),
    Route("GET", "/api/v1/enterprises", list_enterprises, (Role.ADMIN,), "Enterprises of the park"),
    Route(
        "POST", "/api/v1/enterprises", post_enterprise, (Role.ADMIN,),
        "Register or rename an enterprise (201 new, 200 changed)", request_schema="Enterprise", response_schema="Enterprise",
    ),
    Route("GET", "/api/v1/enterprises/{enterprise_id}", get_enterprise, (Role.ENTERPRISE, Role.ADMIN), "One enterprise"),
    Route(
        "GET", "/api/v1/enterprises/{enterprise_id}/devices", list_devices, (Role.ENTERPRISE, Role.ADMIN),
        "The enterprise's devices with their limits and live state",
    ),
    Route(
        "POST", "/api/v1/enterprises/{enterprise_id}/devices", post_device, (Role.ENTERPRISE, Role.ADMIN),
        "Enrol or change a device with its limits (201 new, 200 changed)",
        request_schema="Device", response_schema="Device",
    ),
)


ROUTES: tuple[Route, ...] = CORE_ROUTES + SETTLEMENT_ROUTES + CARBON_ROUTES + DASHBOARD_API_ROUTES


LIMITER_KEY: web.AppKey[RateLimiter] = web.AppKey("rate_limiter", RateLimiter)
TOKEN_CACHE_KEY: web.AppKey[TokenCache] = web.AppKey("token_cache", TokenCache)

_REJECTED_REASONS = {401: "unauthorized", 403: "forbidden", 413: "body_too_large", 429: "rate_limited"}


def _wall_now() -> datetime:
    # Token expiry is a security matter: wall-clock UTC, never the simulated clock of a demo.
    return datetime.now(UTC)


def _bearer_key(request: web.Request) -> str | None:
    """The rate-limit key of the request's bearer token (its hash), or None without one."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return "token:" + hash_token(secret.strip()) if scheme.lower() == "bearer" and secret.strip() else None


def _charge(request: web.Request, key: str) -> None:
    wait_s = request.app[LIMITER_KEY].take(key)
    if wait_s > 0:
        raise RateLimited(wait_s)


def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Rate-limit, authenticate and authorise by the route's roles, then call its handler.

    A token's requests are counted against its hash; requests without one, and
    every failed authentication, against the remote address, so guessing tokens
    is limited per address too.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        address_key = f"addr:{request.remote}"
        if route.roles is None:
            _charge(request, address_key)
            return await route.handler(request, None)
        token_key = _bearer_key(request)
        _charge(request, token_key or address_key)
        try:
            principal = await authenticate(
                service_of(request).store, request.headers.get("Authorization"), _wall_now(), request.app[TOKEN_CACHE_KEY]
            )
        except Unauthorized:
            if token_key is not None:
                _charge(request, address_key)
            raise
        principal.require(*route.roles)
        return await route.handler(request, principal)

    return handler


@web.middleware
async def _limit_requests(request: web.Request, handler) -> web.StreamResponse:
    """413 for a declared body over the limit, before reading it.

    A body sent without Content-Length (chunked) is stopped by aiohttp's
    ``client_max_size`` when read, which the error middleware answers with 413.
    """
    limit = request.app[MAX_BODY_KEY]
    if request.content_length is not None and request.content_length > limit:
        return error_response(413, f"request body of {request.content_length} bytes is larger than the limit of {limit} bytes")
    return await handler(request)


@web.middleware
async def _count_requests(request: web.Request, handler) -> web.StreamResponse:
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics = service_of(request).metrics
    metrics.http_answered(request.method, route, response.status)
    reason = _REJECTED_REASONS.get(response.status)
    if reason is not None:
        metrics.http_rejected.labels(reason=reason).inc()
    return response


def make_app(service: PlantService, settings: ApiSettings | None = None) -> web.Application:
    """The aiohttp application serving ``service``; ``settings`` default to ``ApiSettings.from_env()``."""
    settings = settings or ApiSettings.from_env()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_id_middleware, _count_requests, _limit_requests, error_middleware],
    )
    app[SERVICE_KEY] = service
    app[MAX_BODY_KEY] = settings.max_body_bytes
    app[LIMITER_KEY] = RateLimiter(settings.rate_per_s, settings.burst)
    app[TOKEN_CACHE_KEY] = TokenCache()  # token records reused for a moment: see vpp.auth
    app[views.HEALTH_KEY] = views.StoreHealth()
    app[views.DISPATCH_VIEWS_KEY] = views.DispatchViews()
    app[views.OPENAPI_KEY] = views.EncodedOnce(lambda: openapi_document(ROUTES))  # 14 ms to build: once, not per request
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _wrap(route))
    add_dashboard(app)  # the pages at / and /dashboard/; their data comes from the routes above
    return app
