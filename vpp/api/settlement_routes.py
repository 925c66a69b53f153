"""Settlement statements per enterprise and for the park, and spot-price pushes (issue 5).

Statements are read from the ``settlement`` ledger (the latest record of each,
corrections included); a closed month without statements is computed and
recorded on first read, a month not over yet is computed and returned as
``provisional`` without being recorded. The programme configuration is the
file named by ``$VPP_SETTLEMENT_CONFIG`` (TOML or JSON), else the shipped default.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from market import PriceCsvError, load_price_csv_rows
from vpp.api.routes import Route, csv_response, enterprise_in_path, json_body, month_query, service_of
from vpp.auth import Principal
from vpp.errors import InvalidInput, NotFound
from vpp.model import Role
from vpp.settlement import SettlementService, load_config, parse_month, statement_csv

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


ROUTES: tuple[Route, ...] = (
    Route(
        "GET", "/api/v1/enterprises/{enterprise_id}/settlement", get_enterprise_settlement, (Role.ENTERPRISE, Role.ADMIN),
        "Monthly statement of the enterprise: events, baseline, delivered, ratio, payment, penalties (latest, corrections applied)",
        query=(("month", "YYYY-MM, local months of the park"), ("format", "json (default) or csv")),
    ),
    Route(
        "GET", "/api/v1/park/settlement", get_park_settlement, (Role.ADMIN,),
        "Park summary and every enterprise's statement of a month",
        query=(("month", "YYYY-MM, local months of the park"), ("format", "json (default) or csv")),
    ),
    Route(
        "POST", "/api/v1/market/prices", post_prices, (Role.GRID, Role.ADMIN),
        "Push spot or day-ahead prices per 15-min interval (JSON list or text/csv), kept in the 'prices' ledger",
        query=(("source", "spot (default) or day_ahead"),), request_schema="PriceList",
    ),
)
