"""Settlement statements per enterprise and for the park, spot-price pushes and park costs (issue 5).

Statements are read from the ``settlement`` ledger (the latest record of each,
corrections included); a closed month without statements is computed and
recorded on first read, a month not over yet is computed and returned as
``provisional`` without being recorded. The programme configuration is the
file named by ``$VPP_SETTLEMENT_CONFIG`` (TOML or JSON), else the shipped default.

``POST /api/v1/park/costs`` (admin) records a park cost ("who benefits,
bears") in the append-only ``park_costs`` ledger; when its month already has
recorded statements they are settled again at once (corrections).
:data:`SCHEMAS` describes the bodies for the OpenAPI document.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from market import PriceCsvError, load_price_csv_rows
from vpp.api.routes import (
    MONTH_PATTERN,
    Route,
    check_month,
    csv_response,
    enterprise_in_path,
    json_body,
    month_query,
    service_of,
)
from vpp.auth import Principal
from vpp.errors import InvalidInput, NotFound
from vpp.model import Role
from vpp.settlement import (
    COSTS_LEDGER,
    SettlementService,
    load_config,
    park_cost_from_dict,
    parse_month,
    statement_csv,
)

CONFIG_ENV = "VPP_SETTLEMENT_CONFIG"
"""Environment variable naming the programme configuration file."""

MAX_PRICE_INTERVALS = 96 * 62
"""Most intervals one upload may carry (two months) [-]."""


def _settlement(request: web.Request) -> SettlementService:
    service = service_of(request)
    return SettlementService(service.store, load_config(os.environ.get(CONFIG_ENV) or None), now=service.clock.now)


def _month(request: web.Request) -> str:
    return parse_month(month_query(request))  # month_query first: parse_month lets 9999-12 and '²⁰²⁶-07' through


def _format(request: web.Request) -> str:
    value = request.query.get("format", "json")
    if value not in ("json", "csv"):
        raise InvalidInput("format", f"'{value}' is not one of json, csv")
    return value


def _entry(month: str, enterprise_id: str | None, provisional: bool, entry: dict[str, Any]) -> dict[str, Any]:
    """One statement as the API shows it: its ledger position and its content."""
    record = entry["record"]
    position = None if record is None else {"seq": record["seq"], "hash": record["hash"], "corrects": record.get("corrects")}
    return {"month": month, "enterprise_id": enterprise_id, "provisional": provisional, "record": position, "statement": entry["payload"]}


async def get_enterprise_settlement(request: web.Request, principal: Principal | None) -> web.Response:
    enterprise_id = await enterprise_in_path(request, principal)
    month, output = _month(request), _format(request)
    provisional, entries = await _settlement(request).statements(month)
    entry = entries.get(("enterprise_statement", enterprise_id))
    if entry is None:
        raise NotFound(f"enterprise '{enterprise_id}' has no statement for {month}")
    if output == "csv":
        return csv_response(statement_csv([entry["payload"]]), f"settlement-{enterprise_id}-{month}.csv")
    return web.json_response(_entry(month, enterprise_id, provisional, entry))


async def get_park_settlement(request: web.Request, _: Principal | None) -> web.Response:
    month, output = _month(request), _format(request)
    provisional, entries = await _settlement(request).statements(month)
    enterprises = [entries[key] for key in sorted(entries) if key[0] == "enterprise_statement"]
    if output == "csv":
        return csv_response(statement_csv(e["payload"] for e in enterprises), f"settlement-park-{month}.csv")
    return web.json_response({
        "month": month,
        "provisional": provisional,
        "park": _entry(month, None, provisional, entries[("park_summary", "")]),
        "enterprises": [_entry(month, e["payload"]["enterprise_id"], provisional, e) for e in enterprises],
    })


async def post_prices(request: web.Request, principal: Principal | None) -> web.Response:
    assert principal is not None
    source = request.query.get("source", "spot")
    if source not in ("spot", "day_ahead"):
        raise InvalidInput("source", f"'{source}' is not one of spot, day_ahead")
    if request.content_type in ("text/csv", "text/plain"):
        series = _csv_prices((await request.text()).splitlines())
    else:
        series = _json_prices(await json_body(request))
    if series.interval_start_utc.size > MAX_PRICE_INTERVALS:
        raise InvalidInput("body", f"{series.interval_start_utc.size} intervals; at most {MAX_PRICE_INTERVALS} per upload")
    record = await _settlement(request).push_prices(series, source, principal.role.value)
    intervals = record["payload"]["intervals"]
    return web.json_response(
        {"ledger": "prices", "seq": record["seq"], "hash": record["hash"], "source": source, "intervals": len(intervals),
         "first": intervals[0][0], "last": intervals[-1][0]},
        status=201,
    )


def _csv_prices(lines: list[str]):
    """Prices from CSV text; 422 naming the line and column of the first problem."""
    try:
        series = load_price_csv_rows(lines)
    except PriceCsvError as exc:
        field = f"csv.line[{exc.line}]" + (f".{exc.column}" if exc.column else "")
        raise InvalidInput(field, str(exc)) from None
    if series.interval_start_utc.size == 0:
        raise InvalidInput("csv", "no price rows after the header")
    return series


def _json_prices(payload: object):
    """Prices from a JSON list of ``{interval_start, price_cny_per_mwh}``; 422 naming ``[index].key``."""
    if not isinstance(payload, list) or not payload:
        raise InvalidInput("body", "must be a non-empty JSON list of {interval_start, price_cny_per_mwh} or a text/csv body")
    lines = ["interval_start,price_cny_per_mwh"]
    for i, item in enumerate(payload):
        if not isinstance(item, dict):
            raise InvalidInput(f"[{i}]", "must be an object with interval_start and price_cny_per_mwh")
        for key in ("interval_start", "price_cny_per_mwh"):
            if key not in item or isinstance(item[key], (dict, list, bool)) or item[key] is None:
                raise InvalidInput(f"[{i}].{key}", "missing or not a scalar")
            if "," in str(item[key]) or '"' in str(item[key]):
                raise InvalidInput(f"[{i}].{key}", f"'{item[key]}' is not valid")
        lines.append(f"{item['interval_start']},{item['price_cny_per_mwh']}")
    try:
        return load_price_csv_rows(lines)
    except PriceCsvError as exc:
        index = f"[{exc.line - 2}]" if exc.line >= 2 else "body"
        raise InvalidInput(index + (f".{exc.column}" if exc.column else ""), str(exc).split(": ", 1)[-1]) from None


_COST_FIELDS = ("month", "kind", "amount_cny", "benefit_key", "note", "corrects")


async def post_park_cost(request: web.Request, principal: Principal | None) -> web.Response:
    assert principal is not None
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object {month, kind, amount_cny, benefit_key?, note?, corrects?}")
    for key in body:
        if key not in _COST_FIELDS:
            raise InvalidInput(str(key), f"unknown field; expected one of {list(_COST_FIELDS)}")
    month = check_month(body.get("month"), "month")
    try:
        cost = park_cost_from_dict(body, source="api")
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise InvalidInput(field, message) from None
    corrects = body.get("corrects")
    if corrects is not None and (isinstance(corrects, bool) or not isinstance(corrects, int) or corrects < 0):
        raise InvalidInput("corrects", f"{corrects!r} must be the sequence number (>= 0) of the cost record it corrects")
    settlement = _settlement(request)
    record = await settlement.post_cost(cost, principal.role.value, corrects)
    written = 0
    if settlement.is_closed(month) and await settlement.latest(month):
        written = len((await settlement.run(month)).written)  # the recorded statements now miss this cost
    return web.json_response(
        {"ledger": COSTS_LEDGER, "seq": record["seq"], "hash": record["hash"], "corrects": record.get("corrects"),
         "month": month, "kind": cost.kind, "amount_fen": cost.amount_fen, "benefit_key": cost.benefit_key,
         "statements_written": written},
        status=201,
    )


# ---------------------------------------------------------------- schemas ----

_MONTH = {"type": "string", "pattern": MONTH_PATTERN}
_HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_FEN = {"type": "integer", "description": "[fen] (0.01 CNY)"}

_ROW = {
    "type": "object",
    "description": "One statement line; kind event, capacity, cost or total. kWh [kWh], money [fen], net = payment + capacity - penalty - cost",
    "properties": {
        "month": _MONTH, "enterprise_id": {"type": "string"},
        "kind": {"type": "string", "enum": ["event", "capacity", "cost", "total"]},
        "event_id": {"type": "string"}, "programme": {"type": "string"}, "event_date": {"type": "string"},
        "direction": {"type": "string", "enum": ["", "peak_shaving", "valley_filling"]},
        "events": {"type": "integer", "minimum": 0}, "requested_kwh": {"type": "number"},
        "baseline_kwh": _NUMBER_OR_NULL, "actual_kwh": _NUMBER_OR_NULL, "delivered_kwh": {"type": "number"},
        "ratio": _NUMBER_OR_NULL, "payment_fen": _FEN, "penalty_fen": _FEN, "capacity_fen": _FEN, "cost_fen": _FEN,
        "net_fen": _FEN, "verified": {"type": "boolean"}, "note": {"type": "string"},
    },
    "required": ["month", "enterprise_id", "kind", "events", "requested_kwh", "delivered_kwh", "payment_fen",
                 "penalty_fen", "capacity_fen", "cost_fen", "net_fen", "verified", "note"],
}
_RANGE = {"type": "object", "properties": {"start": {"type": "string", "format": "date-time"},
                                           "end": {"type": "string", "format": "date-time"}}, "required": ["start", "end"]}
_ENTERPRISE_STATEMENT = {
    "type": "object",
    "properties": {
        "kind": {"const": "enterprise_statement"}, "month": _MONTH, "enterprise_id": {"type": "string"},
        "programme": {"type": "string"}, "capacity_kw": {"type": "number", "description": "[kW]"},
        "rows": {"type": "array", "items": {"$ref": "#/components/schemas/StatementRow"}},
        "missing_intervals": {
            "type": "object",
            "properties": {"count": {"type": "integer", "minimum": 0}, "ranges": {"type": "array", "items": _RANGE},
                           "history_count": {"type": "integer", "minimum": 0}},
            "required": ["count", "ranges", "history_count"],
        },
        "statement_digest": _HASH, "inputs_digest": _HASH,
    },
    "required": ["kind", "month", "enterprise_id", "programme", "capacity_kw", "rows", "missing_intervals",
                 "statement_digest", "inputs_digest"],
}
_PARK_EVENT = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string"}, "instruction_id": {"type": "string"}, "programme": {"type": "string"},
        "date": {"type": "string", "format": "date"}, "start_interval": {"type": "integer"}, "end_interval": {"type": "integer"},
        "direction": {"type": "string", "enum": ["peak_shaving", "valley_filling"]}, "requested_kw": {"type": "number"},
        "price_cny_per_kwh": _NUMBER_OR_NULL, "notice_min": _NUMBER_OR_NULL, "requested_kwh": {"type": "number"},
        "delivered_kwh": {"type": "number"}, "ratio": _NUMBER_OR_NULL, "payment_fen": _FEN, "penalty_fen": _FEN,
        "enterprises_verified": {"type": "integer", "minimum": 0},
    },
    "required": ["event_id", "instruction_id", "programme", "date", "direction", "requested_kw", "payment_fen", "penalty_fen"],
}
_PARK_COST = {
    "type": "object",
    "properties": {
        "kind": {"type": "string"}, "amount_fen": {"type": "integer", "minimum": 0},
        "benefit_key": {"type": "string"}, "benefit_key_used": {"type": "string"}, "note": {"type": "string"},
        "source": {"type": "string", "description": "config, or park_costs#<seq> for a posted cost"},
        "enterprises_bearing": {"type": "integer", "minimum": 0},
    },
    "required": ["kind", "amount_fen", "benefit_key", "benefit_key_used", "source"],
}
_PARK_SUMMARY = {
    "type": "object",
    "properties": {
        "kind": {"const": "park_summary"}, "month": _MONTH, "enterprise_id": {"type": "null"},
        "programme": {"type": "string"}, "enterprises": {"type": "array", "items": {"type": "string"}},
        "events": {"type": "array", "items": _PARK_EVENT}, "costs": {"type": "array", "items": _PARK_COST},
        "totals": {
            "type": "object",
            "properties": {"payment_fen": _FEN, "penalty_fen": _FEN, "capacity_fen": _FEN, "cost_fen": _FEN,
                           "net_fen": _FEN, "requested_kwh": {"type": "number"}, "delivered_kwh": {"type": "number"}},
            "required": ["payment_fen", "penalty_fen", "capacity_fen", "cost_fen", "net_fen"],
        },
        "missing_intervals": {"type": "integer", "minimum": 0}, "statement_digest": _HASH, "inputs_digest": _HASH,
    },
    "required": ["kind", "month", "enterprises", "events", "costs", "totals", "statement_digest", "inputs_digest"],
}
_POSITION = {
    "type": ["object", "null"],
    "description": "where the statement is in the settlement ledger; null while the month is provisional",
    "properties": {"seq": {"type": "integer", "minimum": 0}, "hash": _HASH, "corrects": {"type": ["integer", "null"]}},
    "required": ["seq", "hash", "corrects"],
}


def _entry_schema(statement: str, enterprise_id: dict) -> dict:
    return {
        "type": "object",
        "properties": {"month": _MONTH, "enterprise_id": enterprise_id, "provisional": {"type": "boolean"},
                       "record": _POSITION, "statement": {"$ref": f"#/components/schemas/{statement}"}},
        "required": ["month", "enterprise_id", "provisional", "record", "statement"],
    }


SCHEMAS: dict[str, dict] = {
    "StatementRow": _ROW,
    "EnterpriseStatement": _ENTERPRISE_STATEMENT,
    "ParkSummary": _PARK_SUMMARY,
    "EnterpriseSettlement": _entry_schema("EnterpriseStatement", {"type": "string"}),
    "ParkSettlement": {
        "type": "object",
        "properties": {
            "month": _MONTH, "provisional": {"type": "boolean"},
            "park": _entry_schema("ParkSummary", {"type": "null"}),
            "enterprises": {"type": "array", "items": {"$ref": "#/components/schemas/EnterpriseSettlement"}},
        },
        "required": ["month", "provisional", "park", "enterprises"],
    },
    "PriceUpload": {
        "type": "object",
        "properties": {"ledger": {"const": "prices"}, "seq": {"type": "integer"}, "hash": _HASH,
                       "source": {"type": "string", "enum": ["spot", "day_ahead"]}, "intervals": {"type": "integer", "minimum": 1},
                       "first": {"type": "string", "format": "date-time"}, "last": {"type": "string", "format": "date-time"}},
        "required": ["ledger", "seq", "hash", "source", "intervals", "first", "last"],
    },
    "ParkCostPost": {
        "type": "object",
        "description": "A cost of a service the park consumes, borne by those who benefit",
        "properties": {
            "month": _MONTH,
            "kind": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$", "description": "platform_fee, ancillary_service, ..."},
            "amount_cny": {"type": ["number", "string"], "description": "[CNY] >= 0, whole fen"},
            "benefit_key": {"type": "string", "enum": ["event_revenue", "consumption", "capacity", "equal"],
                            "description": "how it is shared (default event_revenue)"},
            "note": {"type": "string", "maxLength": 200},
            "corrects": {"type": "integer", "minimum": 0, "description": "seq of the cost record this one replaces"},
        },
        "required": ["month", "kind", "amount_cny"],
        "additionalProperties": False,
    },
    "ParkCostRecord": {
        "type": "object",
        "properties": {
            "ledger": {"const": "park_costs"}, "seq": {"type": "integer", "minimum": 0}, "hash": _HASH,
            "corrects": {"type": ["integer", "null"]}, "month": _MONTH, "kind": {"type": "string"},
            "amount_fen": {"type": "integer", "minimum": 0}, "benefit_key": {"type": "string"},
            "statements_written": {"type": "integer", "minimum": 0, "description": "statement records (re)written for the month"},
        },
        "required": ["ledger", "seq", "hash", "corrects", "month", "kind", "amount_fen", "benefit_key", "statements_written"],
    },
}
"""Component schemas of the settlement routes' bodies (merged into the OpenAPI document)."""


ROUTES: tuple[Route, ...] = (
    Route(
        "GET", "/api/v1/enterprises/{enterprise_id}/settlement", get_enterprise_settlement, (Role.ENTERPRISE, Role.ADMIN),
        "Monthly statement of the enterprise: events, baseline, delivered, ratio, payment, penalties (latest, corrections applied)",
        query=(("month", "YYYY-MM, local months of the park"), ("format", "json (default) or csv")),
        response_schema="EnterpriseSettlement",
    ),
    Route(
        "GET", "/api/v1/park/settlement", get_park_settlement, (Role.ADMIN,),
        "Park summary and every enterprise's statement of a month",
        query=(("month", "YYYY-MM, local months of the park"), ("format", "json (default) or csv")),
        response_schema="ParkSettlement",
    ),
    Route(
        "POST", "/api/v1/market/prices", post_prices, (Role.GRID, Role.ADMIN),
        "Push spot or day-ahead prices per 15-min interval (JSON list or text/csv), kept in the 'prices' ledger",
        query=(("source", "spot (default) or day_ahead"),), request_schema="PriceList", response_schema="PriceUpload",
    ),
    Route(
        "POST", "/api/v1/park/costs", post_park_cost, (Role.ADMIN,),
        "Record a park cost (platform fee, ancillary-service charge) shared by a benefit key in the statements; "
        "a month already settled is settled again (corrections)",
        request_schema="ParkCostPost", response_schema="ParkCostRecord",
    ),
)
