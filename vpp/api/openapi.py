"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from vpp import __version__
from vpp.api.routes import MONTH_PATTERN
from vpp.api.settlement_routes import SCHEMAS as SETTLEMENT_SCHEMAS
from vpp.model import DispatchInstruction, DispatchState, Enterprise, device_json_schema

if TYPE_CHECKING:
    from vpp.api.app import Route

_REF = "#/components/schemas/{model}"

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "status": {"type": "integer"},
                "message": {"type": "string"},
                "request_id": {"type": "string", "description": "quote it to the operator: the log has the detail"},
                "fields": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}, "input": {}},
                        "required": ["field", "message"],
                    },
                },
            },
            "required": ["status", "message"],
        }
    },
    "required": ["error"],
}

_PLANT_SCHEMA = {
    "type": "object",
    "description": "Powers in kW, generator convention (+ = into the park).",
    "properties": {
        "ts": {"type": "string", "format": "date-time"},
        "net_kw": {"type": "number"},
        "available_up_kw": {"type": "number"},
        "available_down_kw": {"type": "number"},
        "sustained": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"duration_min": {"type": "integer"}, "up_kw": {"type": "number"}, "down_kw": {"type": "number"}},
            },
        },
        "devices_enrolled": {"type": "integer"},
        "devices_online": {"type": "integer"},
        "devices_stale": {"type": "integer"},
        "active_instruction": {"type": ["string", "null"]},
    },
}


_MONTH_SCHEMA = {"type": "string", "pattern": MONTH_PATTERN, "description": "local month of the park, YYYY-MM (1970-01 to 2999-12)"}

_BODY_SCHEMAS = {
    "PriceList": {
        "type": "array",
        "minItems": 1,
        "description": "Prices per 15-min interval (or send the same as text/csv with a header line)",
        "items": {
            "type": "object",
            "properties": {
                "interval_start": {"type": "string", "format": "date-time", "description": "on a quarter hour, with offset"},
                "price_cny_per_mwh": {"type": "number", "description": "[CNY/MWh]"},
            },
            "required": ["interval_start", "price_cny_per_mwh"],
        },
    },
    "CertificateIssue": {
        "type": "object",
        "properties": {"month": _MONTH_SCHEMA, "kind": {"type": "string", "enum": ["granular", "gec"]}},
        "required": ["month"],
    },
    "CertificateRetire": {
        "type": "object",
        "properties": {"month": _MONTH_SCHEMA, "certificate_ids": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
        "required": ["month", "certificate_ids"],
    },
    "CertificateTransfer": {
        "type": "object",
        "properties": {
            "certificate_ids": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "to_enterprise_id": {"type": "string", "description": "the receiving enterprise of the park"},
        },
        "required": ["certificate_ids", "to_enterprise_id"],
    },
}
"""Request bodies checked by hand in their handlers rather than by a pydantic model."""


def _model_schemas(*models: type[BaseModel]) -> dict:
    schemas: dict = {}
    for model in models:
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _components() -> dict:
    device = device_json_schema()
    schemas = dict(device.pop("$defs", {}))
    schemas["Device"] = device
    schemas.update(_model_schemas(DispatchInstruction, DispatchState, Enterprise))
    schemas["Error"] = _ERROR_SCHEMA
    schemas.update(_BODY_SCHEMAS)
    schemas.update(SETTLEMENT_SCHEMAS)
    schemas["PlantState"] = _PLANT_SCHEMA
    schemas["DispatchView"] = {
        "type": "object",
        "properties": {
            "instruction": {"$ref": _REF.format(model="DispatchInstruction")},
            "state": {"$ref": _REF.format(model="DispatchState")},
            "response_ratio": {"type": ["number", "null"]},
            "enterprise_shares": {"type": "array", "items": {"type": "object"}},
            "progress": {"type": "array", "items": {"type": "object"}},
        },
    }
    return schemas


def _json_content(schema_name: str) -> dict:
    return {"application/json": {"schema": {"$ref": _REF.format(model=schema_name)}}}


_ERROR_DESCRIPTIONS = {
    400: "body is not JSON",
    401: "missing, unknown, revoked or expired token; the message says which",
    403: "role not allowed, or another enterprise's data",
    404: "not found",
    409: "contradicts what is stored",
    413: "request body larger than the limit",
    422: "a field is invalid; the body names it",
    429: "too many requests from this token (or address without one); Retry-After says when to retry",
    503: "the store is unavailable; the body carries a request id",
}


_QUERY_SCHEMAS = {
    "month": _MONTH_SCHEMA,
    "format": {"type": "string", "enum": ["json", "csv"]},
}
"""Schemas of query parameters that mean the same on every route, used when a route gives none."""


def _query_schema(query: tuple) -> dict:
    name = query[0]
    return query[2] if len(query) > 2 else _QUERY_SCHEMAS.get(name, {"type": "string"})


def _error_statuses(route: Route) -> list[int]:
    """Every error status the route can answer: those of its kind plus its own ``errors``."""
    statuses = {429, 503}  # every route is rate-limited and reads the store
    if route.roles is not None:
        statuses |= {401, 403}
    if route.query:
        statuses.add(422)
    if route.method == "POST":
        statuses |= {400, 413, 422}
    if _path_params(route.path):
        statuses.add(404)
    return sorted(statuses | set(route.errors))


def _error_response(status: int) -> dict:
    response: dict = {"description": _ERROR_DESCRIPTIONS.get(status, "error"), "content": _json_content("Error")}
    if status == 429:
        response["headers"] = {"Retry-After": {"description": "seconds to wait [s]", "required": True, "schema": {"type": "integer"}}}
    return response


def _operation(route: Route) -> dict:
    op: dict = {"summary": route.summary, "responses": {}}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_params(route.path)
    ] + [
        {"name": q[0], "in": "query", "required": False, "description": q[1], "schema": _query_schema(q)} for q in route.query
    ]
    if params:
        op["parameters"] = params
    if route.request_schema:
        op["requestBody"] = {"required": True, "content": _json_content(route.request_schema)}
    ok = {"description": "success"}
    if route.response_schema:
        ok["content"] = _json_content(route.response_schema)
    if any(q[0] == "format" for q in route.query):
        json_schema = {"$ref": _REF.format(model=route.response_schema)} if route.response_schema else {"type": "object"}
        ok["content"] = {"application/json": {"schema": json_schema}, "text/csv": {"schema": {"type": "string"}}}
    op["responses"]["200"] = ok
    if route.method == "POST":
        op["responses"]["201"] = {**ok, "description": "created"}
    if route.roles is None:
        op["security"] = []
    else:
        op["description"] = "Roles: " + ", ".join(r.value for r in route.roles)
    for status in _error_statuses(route):
        op["responses"][str(status)] = _error_response(status)
    return op


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def openapi_document(routes: tuple[Route, ...]) -> dict:
    """The whole OpenAPI document for ``routes``."""
    paths: dict = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "VPP park service",
            "version": __version__,
            "description": "Virtual power plant of an industrial park. Power in kW (+ = into the park), energy in kWh, UTC times.",
        },
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


# ------------------------------------------------------------- role table ----

ROLE_TABLE_START = "<!-- role table: generated from the Route table; python -m vpp.api.openapi --role-table -->"
ROLE_TABLE_END = "<!-- end of role table -->"


def _access(route: Route, caller: str) -> str:
    """What ``caller`` gets from ``route``: ``yes``, or the status that refuses it."""
    if route.roles is None:
        return "yes"
    if caller in ("anonymous", "revoked / expired"):
        return "401"
    role = {"grid": "grid", "admin": "admin"}.get(caller, "enterprise")
    if role not in {r.value for r in route.roles}:
        return "403"
    if caller == "other enterprise" and "{enterprise_id}" in route.path:
        return "403"
    return "yes" if role != "enterprise" or "{enterprise_id}" in route.path else "yes (own)"


def role_table_markdown(routes: tuple[Route, ...]) -> str:
    """Markdown table of every route against every kind of caller, between the markers docs/security.md carries."""
    callers = ("anonymous", "grid", "own enterprise", "other enterprise", "admin", "revoked / expired")
    lines = [ROLE_TABLE_START, "", "| method | path | " + " | ".join(callers) + " |", "| --- | --- |" + " --- |" * len(callers)]
    for route in routes:
        lines.append(f"| {route.method} | `{route.path}` | " + " | ".join(_access(route, c) for c in callers) + " |")
    return "\n".join([*lines, "", ROLE_TABLE_END])


if __name__ == "__main__":
    import json
    import sys

    from vpp.api.app import ROUTES

    if sys.argv[1:] == ["--role-table"]:
        print(role_table_markdown(ROUTES))
    else:
        print(json.dumps(openapi_document(ROUTES), indent=2))
