"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from vpp import __version__
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


def _operation(route: Route) -> dict:
    op: dict = {"summary": route.summary, "responses": {}}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_params(route.path)
    ] + [{"name": name, "in": "query", "required": False, "description": desc, "schema": {"type": "string"}} for name, desc in route.query]
    if params:
        op["parameters"] = params
    if route.request_schema:
        op["requestBody"] = {"required": True, "content": _json_content(route.request_schema)}
    ok = {"description": "success"}
    if route.response_schema:
        ok["content"] = _json_content(route.response_schema)
    op["responses"]["200"] = ok
    if route.method == "POST":
        op["responses"]["201"] = {**ok, "description": "created"}
        op["responses"]["400"] = {"description": "body is not JSON", "content": _json_content("Error")}
        op["responses"]["422"] = {"description": "a field is invalid; the body names it", "content": _json_content("Error")}
    if route.roles is None:
        op["security"] = []
    else:
        op["description"] = "Roles: " + ", ".join(r.value for r in route.roles)
        op["responses"]["401"] = {"description": "missing or unknown token", "content": _json_content("Error")}
        op["responses"]["403"] = {"description": "role not allowed", "content": _json_content("Error")}
    if "{" in route.path:
        op["responses"]["404"] = {"description": "not found", "content": _json_content("Error")}
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
