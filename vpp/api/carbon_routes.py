"""Carbon attribution: per enterprise and park indicators, certificates (issue 6).

Views are read from the ``carbon`` ledger as last recorded by
``vpp carbon run --month …`` (the latest, corrected records); a month never
run answers 404 saying so. ``?format=csv`` exports the same figures as CSV.

Certificates: an enterprise (or the admin on its behalf) lists, transfers
and retires the certificates it owns. A certificate id the enterprise does
not own gets the same 422 whether it exists or not, so an enterprise
learns nothing about other enterprises' certificates. A rule broken by the
certificate's state (already retired, a GEC already sold or not tradable,
a concurrent operation that won the race) is a 409; every error names the
field (``certificate_ids[i]``, ``to_enterprise_id``, ``month``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from vpp.api.errors import error_response
from vpp.api.routes import (
    Route,
    check_month,
    csv_response,
    enterprise_in_path,
    json_body,
    month_query,
    service_of,
)
from vpp.auth import Principal
from vpp.carbon import registry_ledger
from vpp.carbon.certificates import CertificateError, Registry
from vpp.carbon.ledger import MONTH, latest_view
from vpp.errors import Conflict, InvalidInput, NotFound
from vpp.model import Role

DAY_COLUMNS = (
    "consumption_kwh", "own_pv_kwh", "shared_green_kwh", "storage_green_kwh", "contract_kwh", "grid_kwh",
    "matched_green_kwh", "grid_draw_kwh", "location_based_kg", "market_based_kg", "missing_intervals",
)  # fmt: skip
ENTERPRISE_COLUMNS = (
    "consumption_kwh", "own_pv_kwh", "shared_green_kwh", "storage_green_kwh", "contract_kwh", "grid_kwh",
    "green_kwh", "certificates_kwh", "renewable_share", "matching_score", "location_based_kg", "market_based_kg",
    "location_kg_per_unit", "market_kg_per_unit", "missing_intervals",
)  # fmt: skip


def _format(request: web.Request) -> str:
    value = request.query.get("format", "json")
    if value not in ("json", "csv"):
        raise InvalidInput("format", f"'{value}' is not json or csv")
    return value


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]], filename: str) -> web.Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return csv_response(buffer.getvalue(), filename)


async def _month_view(request: web.Request, month: str) -> dict[str, Any]:
    view = await latest_view(service_of(request).store, month)
    if MONTH not in view:
        raise NotFound(f"carbon for {month} has not been recorded yet; run 'vpp carbon run --month {month}'")
    return view


async def get_enterprise_carbon(request: web.Request, principal: Principal | None) -> web.Response:
    enterprise_id = await enterprise_in_path(request, principal)
    month, fmt = month_query(request), _format(request)
    view = await _month_view(request, month)
    row = view[MONTH]["enterprises"].get(enterprise_id)
    if row is None:
        raise NotFound(f"enterprise '{enterprise_id}' has no carbon record for {month}; rerun 'vpp carbon run --month {month}'")
    days = {day: payload["enterprises"].get(enterprise_id, {}) for day, payload in sorted(view["days"].items())}
    if fmt == "csv":
        rows = [[day, *(values.get(c) for c in DAY_COLUMNS)] for day, values in days.items()]
        rows.append(["total", *(round(sum(v.get(c) or 0 for v in days.values()), 6) for c in DAY_COLUMNS)])
        return _csv(("day", *DAY_COLUMNS), rows, f"carbon-{enterprise_id}-{month}.csv")
    return web.json_response({
        "enterprise_id": enterprise_id, "month": month, **row,
        "green_by_source_kwh": {k: row[k] for k in ("own_pv_kwh", "shared_green_kwh", "storage_green_kwh", "contract_kwh")},
        "factors": view[MONTH]["factors"], "record_seq": view[MONTH]["seq"],
        "days": [{"day": day, **values} for day, values in days.items()],
    })  # fmt: skip


def _target(request: web.Request, recorded: float) -> float:
    raw = request.query.get("target")
    if raw is None:
        return recorded
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput("target", f"'{raw}' is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidInput("target", f"{value} is outside [0, 1]")
    return value


async def get_park_carbon(request: web.Request, _: Principal | None) -> web.Response:
    month, fmt = month_query(request), _format(request)
    record = (await _month_view(request, month))[MONTH]
    park = dict(record["park"])
    park["target_share"] = _target(request, park["target_share"])
    share = park["renewable_share"]
    park["meets_target"] = share is not None and share >= park["target_share"]
    enterprises: Mapping[str, Mapping[str, Any]] = record["enterprises"]
    if fmt == "csv":
        rows = [[eid, *(values.get(c) for c in ENTERPRISE_COLUMNS)] for eid, values in sorted(enterprises.items())]
        rows.append(["park", *(park.get(c) for c in ENTERPRISE_COLUMNS)])
        return _csv(("enterprise_id", *ENTERPRISE_COLUMNS), rows, f"carbon-park-{month}.csv")
    return web.json_response({
        "month": month, "park": park, "reconciliation": record["reconciliation"], "factors": record["factors"],
        "settings": record["settings"], "issue_count": record["issue_count"], "issues": record["issues"],
        "enterprises": enterprises, "record_seq": record["seq"],
    })  # fmt: skip


# ------------------------------------------------------------ certificates ----


def _ids_field(payload: dict[str, Any]) -> list[str]:
    ids = payload.get("certificate_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise InvalidInput("certificate_ids", "must be a non-empty list of certificate ids")
    for i, cid in enumerate(ids):
        if cid in ids[:i]:
            raise InvalidInput(f"certificate_ids[{i}]", f"'{cid}' is listed twice")
    return ids


def _require_owned(registry: Registry, ids: list[str], owner: str) -> None:
    """422 naming the first id ``owner`` does not own; unknown and foreign ids answer alike."""
    owned = {c.certificate_id for c in registry.certificates if c.owner_id == owner}
    for i, cid in enumerate(ids):
        if cid not in owned:
            raise InvalidInput(f"certificate_ids[{i}]", f"'{cid}' is not a certificate owned by '{owner}'")


async def _certificate_call(coroutine, ids: list[str] | None = None):
    """Await a registry operation; a broken rule becomes a 409 naming the certificate's field, bad input a 422."""
    try:
        return await coroutine
    except CertificateError as exc:
        index = ids.index(exc.certificate_id) if ids and exc.certificate_id in ids else None
        field = "certificate_ids" if index is None else f"certificate_ids[{index}]"
        raise _RuleBroken(field, str(exc)) from None
    except ValueError as exc:
        raise InvalidInput("body", str(exc)) from None


class _RuleBroken(Conflict):
    """A certificate rule broken by the request, with the field it concerns."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


async def _answer_conflicts(handler, request: web.Request, principal: Principal | None) -> web.StreamResponse:
    try:
        return await handler(request, principal)
    except _RuleBroken as exc:
        return error_response(409, str(exc), [{"field": exc.field, "message": exc.message}])


async def _body(request: web.Request, *, month: bool = True) -> dict[str, Any]:
    payload = await json_body(request)
    if not isinstance(payload, dict):
        raise InvalidInput("body", "must be a JSON object")
    if month:
        check_month(payload.get("month"), "month")  # month_period overflows on 0001-01 and 9999-12
    return payload


async def list_certificates(request: web.Request, principal: Principal | None) -> web.Response:
    enterprise_id = await enterprise_in_path(request, principal)
    registry = await registry_ledger.load_registry(service_of(request).store)
    return web.json_response({"certificates": registry_ledger.certificate_rows(registry, enterprise_id)})


async def post_issue(request: web.Request, principal: Principal | None) -> web.Response:
    enterprise_id = await enterprise_in_path(request, principal)
    payload = await _body(request)
    kind = payload.get("kind", "granular")
    if kind not in ("granular", "gec"):
        raise InvalidInput("kind", f"{kind!r} is not granular or gec")
    store = service_of(request).store
    ids = await _certificate_call(registry_ledger.issue(store, enterprise_id, payload["month"], kind))
    return web.json_response({"issued": list(ids)}, status=201)


async def _post_retire(request: web.Request, principal: Principal | None) -> web.Response:
    enterprise_id = await enterprise_in_path(request, principal)
    payload = await _body(request)
    ids = _ids_field(payload)
    store = service_of(request).store
    _require_owned(await registry_ledger.load_registry(store), ids, enterprise_id)
    retired = await _certificate_call(registry_ledger.retire(store, enterprise_id, ids, payload["month"]), ids)
    return web.json_response({"retired": retired}, status=201)


async def _post_transfer(request: web.Request, principal: Principal | None) -> web.Response:
    enterprise_id = await enterprise_in_path(request, principal)
    payload = await _body(request, month=False)
    ids = _ids_field(payload)
    to = payload.get("to_enterprise_id")
    if not isinstance(to, str) or not to:
        raise InvalidInput("to_enterprise_id", "must be the id of the enterprise receiving the certificates")
    if to == enterprise_id:
        raise InvalidInput("to_enterprise_id", f"'{to}' already owns them: a transfer goes to another enterprise")
    store = service_of(request).store
    if await store.get_enterprise(to) is None:
        raise InvalidInput("to_enterprise_id", f"'{to}' is not an enterprise of the park")
    _require_owned(await registry_ledger.load_registry(store), ids, enterprise_id)
    await _certificate_call(registry_ledger.transfer(store, ids, enterprise_id, to), ids)
    return web.json_response({"transferred": ids, "from_enterprise_id": enterprise_id, "to_enterprise_id": to}, status=201)


async def post_retire(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    return await _answer_conflicts(_post_retire, request, principal)


async def post_transfer(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    return await _answer_conflicts(_post_transfer, request, principal)


_MONTH = (("month", "YYYY-MM, local month of the park"), ("format", "json (default) or csv"))

ROUTES: tuple[Route, ...] = (
    Route(
        "GET", "/api/v1/enterprises/{enterprise_id}/carbon", get_enterprise_carbon, (Role.ENTERPRISE, Role.ADMIN),
        "Consumption, green kWh by source, renewable share, 15-min matching score, Scope 2 (location, market)",
        query=_MONTH,
    ),
    Route(
        "GET", "/api/v1/park/carbon", get_park_carbon, (Role.ADMIN,),
        "Park indicators against the target, net imported fossil power, credits, reconciliation to meters",
        query=(*_MONTH, ("target", "renewable share target to compare with, 0..1 (default: recorded)")), errors=(404,),
    ),
    Route(
        "GET", "/api/v1/enterprises/{enterprise_id}/certificates", list_certificates, (Role.ENTERPRISE, Role.ADMIN),
        "Certificates the enterprise owns",
    ),
    Route(
        "POST", "/api/v1/enterprises/{enterprise_id}/certificates/issue", post_issue, (Role.ADMIN,),
        "Issue granular or GEC certificates from the enterprise's metered generation of a month",
        request_schema="CertificateIssue", errors=(409,),
    ),
    Route(
        "POST", "/api/v1/enterprises/{enterprise_id}/certificates/retire", post_retire, (Role.ENTERPRISE, Role.ADMIN),
        "Retire the enterprise's certificates against its metered consumption (GEC: the month; granular: its interval)",
        request_schema="CertificateRetire", errors=(409,),
    ),
    Route(
        "POST", "/api/v1/enterprises/{enterprise_id}/certificates/transfer", post_transfer, (Role.ENTERPRISE, Role.ADMIN),
        "Transfer certificates the enterprise owns to another enterprise of the park, all or none "
        "(body: certificate_ids, to_enterprise_id); never once retired, a GEC at most once",
        request_schema="CertificateTransfer", errors=(409,),
    ),
)
