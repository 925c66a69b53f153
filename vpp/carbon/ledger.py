"""The carbon ledger: a month's attribution recorded as hash-chained records, corrections as new records.

Records (ledger ``"carbon"``, payload ``kind``)
-----------------------------------------------
* ``carbon.day``: one per local day of a month (96 intervals, 92/100 on
  no day in Asia/Shanghai): per enterprise the day's kWh by source, the
  15-minute matched green, grid draw and Scope 2 emissions; per shared
  supply and battery its flows; missing intervals; the SHA-256 of the day's
  inputs.
* ``carbon.month``: the month's indicators per enterprise and for the park
  (:mod:`vpp.carbon.indicators`), the settings and emission factors used,
  the reconciliation to the meters, data-quality issues, each battery's
  stocks by origin at the end, and the digest of all inputs.

Idempotence and corrections: a run recomputes every record of the month
and compares it with the newest record of the same key (kind, month, day).
Equal: nothing is written. Different: a new record is appended with
``corrects`` naming the sequence number it supersedes. :func:`latest_view`
reads the newest record per key.

Emission factors: the grid (location-based) factor of each enterprise's
region (:attr:`vpp.model.Enterprise.region`) for the factor year; the
residual factor ``national_residual`` for the market-based view. The
factor year is :attr:`CarbonSettings.factor_year`, or else the latest year
of the table not after the month's year (reported in the month record;
2022 for the shipped table). A per-interval grid factor series, when
configured, replaces the annual grid factor for every enterprise.

Certificates: granular retirements become interval contract energy, GEC
retirements monthly certificates. Retirements of certificates of a park
generator (``{enterprise}-generation``, see :func:`generator_id_of`) count
only up to that generator's export in the interval (one claim per kWh,
:mod:`vpp.carbon.certificates`); the excess is reported per enterprise as
``certificates_not_counted_kwh``, and the export they claim back is not
reported as exported green.

Battery stocks at the start of a month: the previous month's recorded end
stocks; without one, the state of charge at the month start counted as
grid origin (the conservative choice), 0 when unknown.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from vpp.carbon.attribution import Attribution, BatteryFlows, SharedSplit, attribute
from vpp.carbon.certificates import (
    Registry,
    retired_gec_kwh,
    retired_kwh_by_source,
    to_plain,
)
from vpp.carbon.factors import (
    UnknownYearError,
    emission_factor,
    factor_table,
    residual_factor,
)
from vpp.carbon.indicators import (
    DEFAULT_CREDIT_CAP_FRACTION,
    DEFAULT_TARGET_SHARE,
    EnterpriseIndicators,
    ParkIndicators,
    energy_flows,
    enterprise_indicators,
    park_indicators,
)
from vpp.carbon.inputs import (
    DEFAULT_ZONE,
    Inputs,
    local_days,
    month_period,
    read_inputs,
)
from vpp.chain import canonical_json, record_hash
from vpp.store.base import Store

LEDGER = "carbon"
DAY = "carbon.day"
MONTH = "carbon.month"
ISSUES_KEPT = 200
"""Issues listed in a month record; the count is always complete [unitless]."""

Progress = Callable[[str], None]


# ---------------------------------------------------------------- settings ----


@dataclass(frozen=True)
class CarbonSettings:
    """What a carbon run is configured with; recorded in every month record."""

    zone: str = DEFAULT_ZONE
    """Park's local zone: month and day boundaries [unitless]."""
    split_rule: str = "pro_rata"
    """Shared green split: ``pro_rata`` to remaining consumption or ``priority`` [unitless]."""
    target_share: float = DEFAULT_TARGET_SHARE
    """Park renewable share targeted [unitless]."""
    credit_cap_fraction: float = DEFAULT_CREDIT_CAP_FRACTION
    """Largest part of the residual emissions carbon credits may offset [unitless]."""
    carbon_credits_kg: float = 0.0
    """Carbon credits offered for the month [kgCO2]."""
    direct_emissions_kg: float = 0.0
    """Direct (Scope 1) emissions of the park for the month [kgCO2]."""
    factor_year: int | None = None
    """Year of the emission factors; default the latest year not after the month's [year]."""
    factor_overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Year (as text) -> region -> factor, merged over the shipped table [kgCO2/kWh]."""
    grid_factor_series: tuple[float, ...] | None = None
    """Per-interval grid factor for the month, NaN where absent [kgCO2/kWh]."""
    production_units: Mapping[str, float] = field(default_factory=dict)
    """Enterprise id -> production volume of the month [unit]."""

    def __post_init__(self) -> None:
        if self.split_rule not in ("pro_rata", "priority"):
            raise ValueError(f"split_rule {self.split_rule!r} is not 'pro_rata' or 'priority'")
        for name in ("target_share", "credit_cap_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} = {value!r} must lie in [0, 1]")
        for name in ("carbon_credits_kg", "direct_emissions_kg"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} = {value!r} must be finite and >= 0 [kgCO2]")
        for eid, units in self.production_units.items():
            if not (math.isfinite(units) and units >= 0.0):
                raise ValueError(f"production_units[{eid!r}] = {units!r} must be finite and >= 0")

    def to_plain(self) -> dict[str, Any]:
        """As JSON data."""
        plain = dataclasses.asdict(self)
        plain["factor_overrides"] = {str(y): dict(r) for y, r in self.factor_overrides.items()}
        plain["production_units"] = dict(self.production_units)
        plain["grid_factor_series"] = None if self.grid_factor_series is None else [
            None if math.isnan(v) else v for v in self.grid_factor_series
        ]  # fmt: skip
        return plain

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> CarbonSettings:
        """Inverse of :meth:`to_plain`; unknown keys raise ValueError naming them."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown carbon settings {sorted(unknown)}")
        values = dict(data)
        try:
            if values.get("grid_factor_series") is not None:
                values["grid_factor_series"] = tuple(math.nan if v is None else float(v) for v in values["grid_factor_series"])
            return cls(**values)
        except (AttributeError, TypeError) as exc:  # a value of the wrong shape, e.g. production_units = null
            raise ValueError(f"carbon settings have a value of the wrong type: {exc}") from None


# ------------------------------------------------------------------ result ----


@dataclass(frozen=True, eq=False)
class MonthResult:
    """A month attributed: inputs, attribution, indicators and the factors used."""

    inputs: Inputs
    attribution: Attribution
    enterprises: EnterpriseIndicators
    park: ParkIndicators
    factor_year: int
    grid_factor: Mapping[str, float]
    """Enterprise id -> annual grid factor used [kgCO2/kWh]."""
    residual_factor: float
    """[kgCO2/kWh]."""
    location_factor_t: np.ndarray
    """Per enterprise and interval grid factor used, (E, T) [kgCO2/kWh]."""
    certificates_not_counted_kwh: np.ndarray
    """Per enterprise and interval, granular certificates retired for park generation already claimed, (E, T) [kWh]."""
    reclaimed_export_kwh: np.ndarray
    """Per generating enterprise and interval, export claimed back by certificates matched in the park, (E, T) [kWh]."""
    certificates_digest: str
    initial_stocks: Mapping[str, tuple[float, float]]
    """Battery id -> (green, grid) cell-side stocks at the start [kWh]."""


def _factor_year(settings: CarbonSettings, table: Mapping[int, Any], year: int) -> int:
    if settings.factor_year is not None:
        return settings.factor_year
    earlier = [y for y in table if y <= year]
    if not earlier:
        raise UnknownYearError(f"no emission factors for {year} or before; known years: {sorted(table)}")
    return max(earlier)


def _registry_digest(registry: Registry) -> str:
    return record_hash("certificates", {"retirements": to_plain(registry)["retirements"]})


def _battery_flows(inputs: Inputs, stocks: Mapping[str, tuple[float, float]]) -> BatteryFlows | None:
    if not inputs.battery_ids:
        return None
    green = [stocks.get(b, (0.0, 0.0))[0] for b in inputs.battery_ids]
    grid = [stocks.get(b, (0.0, 0.0))[1] for b in inputs.battery_ids]
    return BatteryFlows(
        charge_kwh=inputs.charge_kwh, discharge_kwh=inputs.discharge_kwh, owner=inputs.battery_owner,
        charge_efficiency=inputs.charge_efficiency, discharge_efficiency=inputs.discharge_efficiency,
        initial_green_kwh=np.array(green), initial_grid_kwh=np.array(grid),
    )  # fmt: skip


def initial_stocks(inputs: Inputs, previous: Mapping[str, Mapping[str, float]] | None) -> dict[str, tuple[float, float]]:
    """Battery id -> (green, grid) stocks at the period start: the previous month's end, else SoC as grid [kWh]."""
    out = {}
    for b, battery_id in enumerate(inputs.battery_ids):
        if previous and battery_id in previous:
            out[battery_id] = (float(previous[battery_id]["green_kwh"]), float(previous[battery_id]["grid_kwh"]))
        else:
            soc = float(inputs.initial_soc_kwh[b])
            out[battery_id] = (0.0, 0.0 if math.isnan(soc) else soc)
    return out


def generator_id_of(enterprise_id: str) -> str:
    """Certificate-registry generator id of an enterprise's generation meter."""
    return f"{enterprise_id}-generation"


def _shared_owner(inputs: Inputs) -> np.ndarray:
    """Enterprise row of each shared supply's owner, (S,) [unitless]."""
    return np.array([inputs.enterprise_ids.index(owner) for owner in inputs.shared_ids], dtype=np.intp)


def exported_generation_kwh(inputs: Inputs, split_rule: str = "pro_rata") -> np.ndarray:
    """Per enterprise and interval, its generation (own and shared PV) that left the park, (E, T) [kWh].

    The only generation whose green attribute no park consumer claims, so
    the only generation certificates may carry (see
    :mod:`vpp.carbon.certificates`). It does not depend on contracts or on
    the batteries' stocks by origin, only on the metered flows and the
    split rule.
    """
    attribution = attribute(
        inputs.consumption_kwh, inputs.own_pv_kwh, inputs.shared_green_kwh,
        split=SharedSplit(rule=split_rule), batteries=_battery_flows(inputs, {}),
    )  # fmt: skip
    exported = np.array(attribution.own_pv_exported_kwh)
    np.add.at(exported, _shared_owner(inputs), attribution.shared_exported_kwh)
    return exported


def _grid_factors(inputs: Inputs, settings: CarbonSettings, grid: Mapping[str, float]) -> np.ndarray:
    """Per enterprise and interval grid factor: its region's annual factor, or the grid's series where given (E, T) [kgCO2/kWh]."""
    count = inputs.period.intervals
    factors = np.array([grid[eid] for eid in inputs.enterprise_ids], dtype=np.float64)[:, None] * np.ones((1, count))
    if settings.grid_factor_series is not None:
        series = np.array(settings.grid_factor_series, dtype=np.float64)
        if series.shape != (count,):
            raise ValueError(f"grid_factor_series has {series.size} values, the month has {count} intervals")
        factors = np.where(np.isnan(series)[None, :], factors, series[None, :])
    return factors


def compute_month(
    inputs: Inputs,
    settings: CarbonSettings,
    regions: Mapping[str, str],
    registry: Registry | None = None,
    stocks: Mapping[str, tuple[float, float]] | None = None,
) -> MonthResult:
    """Attribute a month and compute its indicators (pure).

    Parameters
    ----------
    inputs : Inputs
        The month's interval energies [kWh].
    settings : CarbonSettings
        Targets, factors, split rule, production.
    regions : mapping
        Enterprise id -> grid region of its emission factor.
    registry : Registry, optional
        Certificates: granular retirements become interval contract energy
        (park generators' only up to their export), GEC retirements monthly
        certificates [kWh].
    stocks : mapping, optional
        Battery id -> (green, grid) stocks at the start [kWh]; default none.
    """
    registry = registry or Registry()
    stocks = stocks or {}
    ids = list(inputs.enterprise_ids)
    table = factor_table({int(y): r for y, r in settings.factor_overrides.items()})
    year = _factor_year(settings, table, int(inputs.period.label[:4]) if inputs.period.label else inputs.period.start.year)
    grid = {eid: emission_factor(regions.get(eid, "national"), year, table) for eid in ids}
    residual = residual_factor(year, table)
    factors = _grid_factors(inputs, settings, grid)
    retired = retired_kwh_by_source(
        registry, ids, inputs.period.start_s, {generator_id_of(eid): e for e, eid in enumerate(ids)},
        exported_generation_kwh(inputs, settings.split_rule) if registry.retirements else np.zeros(inputs.consumption_kwh.shape),
    )  # fmt: skip
    # Not clipped to consumption: a Wh-rounded retirement above the metered kWh shows as unmatched, not lost.
    offered = retired.counted_kwh
    attribution = attribute(
        inputs.consumption_kwh, inputs.own_pv_kwh, inputs.shared_green_kwh,
        split=SharedSplit(rule=settings.split_rule), batteries=_battery_flows(inputs, stocks), contract_kwh=offered,
    )  # fmt: skip
    matched = np.divide(attribution.contract_kwh, offered, out=np.zeros_like(offered), where=offered > 0)
    reclaimed = retired.reclaimed_kwh(matched, len(ids))
    start_s, end_s = int(inputs.period.start.timestamp()), int(inputs.period.end.timestamp())
    gec = retired_gec_kwh(registry, ids, start_s, end_s)
    production = np.array([settings.production_units.get(eid, 0.0) for eid in ids])
    shared_owner = _shared_owner(inputs)
    enterprises = enterprise_indicators(
        attribution, factors, residual, certificates_kwh=gec, production_units=production,
        shared_owner=shared_owner, reclaimed_export_kwh=reclaimed,
    )  # fmt: skip
    park = park_indicators(
        attribution, factors, residual,
        target_share=settings.target_share, certificates_kwh=gec,
        direct_emissions_kg=settings.direct_emissions_kg, carbon_credits_kg=settings.carbon_credits_kg,
        credit_cap_fraction=settings.credit_cap_fraction, metered_consumption_kwh=inputs.consumption_kwh,
        metered_import_kwh=inputs.import_kwh, metered_export_kwh=inputs.export_kwh,
        shared_owner=shared_owner, reclaimed_export_kwh=reclaimed,
    )  # fmt: skip
    return MonthResult(
        inputs=inputs, attribution=attribution, enterprises=enterprises, park=park, factor_year=year,
        grid_factor=grid, residual_factor=residual, location_factor_t=factors,
        certificates_not_counted_kwh=retired.not_counted_kwh, reclaimed_export_kwh=reclaimed,
        certificates_digest=_registry_digest(registry), initial_stocks=dict(stocks),
    )  # fmt: skip


# ---------------------------------------------------------------- payloads ----


def _num(value: float, digits: int = 6) -> float | None:
    """Rounded float, None for NaN (canonical JSON refuses NaN)."""
    value = float(value)
    return None if math.isnan(value) else round(value, digits) + 0.0


def day_flows(result: MonthResult) -> dict[str, np.ndarray]:
    """Per enterprise and interval grid import, exports and net import, as in the indicators, (E, T) [kWh]."""
    return energy_flows(result.attribution, _shared_owner(result.inputs), result.reclaimed_export_kwh)


def _day_payload(result: MonthResult, day: str, first: int, end: int) -> dict[str, Any]:
    a, inputs = result.attribution, result.inputs
    span = slice(first, end)
    matched = np.minimum(a.consumption_kwh, a.green_kwh)
    location = a.grid_draw_kwh * result.location_factor_t
    market = a.residual_grid_kwh * result.residual_factor
    flows = day_flows(result)
    enterprises = {}
    for e, eid in enumerate(inputs.enterprise_ids):
        enterprises[eid] = {
            "consumption_kwh": _num(a.consumption_kwh[e, span].sum()),
            "own_pv_kwh": _num(a.own_pv_kwh[e, span].sum()),
            "shared_green_kwh": _num(a.shared_green_kwh[e, span].sum()),
            "storage_green_kwh": _num(a.storage_green_kwh[e, span].sum()),
            "contract_kwh": _num(a.contract_kwh[e, span].sum()),
            "grid_kwh": _num(a.grid_kwh[e, span].sum()),
            "matched_green_kwh": _num(matched[e, span].sum()),
            "grid_draw_kwh": _num(a.grid_draw_kwh[e, span].sum()),
            "exported_kwh": _num(flows["exported_kwh"][e, span].sum()),
            "exported_green_kwh": _num(flows["exported_green_kwh"][e, span].sum()),
            "grid_import_kwh": _num(flows["grid_import_kwh"][e, span].sum()),
            "net_import_kwh": _num(flows["net_import_kwh"][e, span].sum()),
            "certificates_not_counted_kwh": _num(result.certificates_not_counted_kwh[e, span].sum()),
            "import_kwh": _num(inputs.import_kwh[e, span].sum()),
            "export_kwh": _num(inputs.export_kwh[e, span].sum()),
            "generation_kwh": _num(inputs.generation_kwh[e, span].sum()),
            "location_based_kg": _num(location[e, span].sum()),
            "market_based_kg": _num(market[e, span].sum()),
            "missing_intervals": int(inputs.missing[e, span].sum()),
        }
    return {
        "kind": DAY,
        "month": inputs.period.label,
        "day": day,
        "start": datetime.fromtimestamp(int(inputs.period.start_s[first]), tz=timezone.utc).isoformat(),
        "intervals": end - first,
        "inputs_digest": inputs.day_digest(first, end),
        "enterprises": enterprises,
        "shared": {
            owner: {
                "supply_kwh": _num(inputs.shared_green_kwh[s, span].sum()),
                "used_kwh": _num(a.shared_used_kwh[s, span].sum()),
                "exported_kwh": _num(a.shared_exported_kwh[s, span].sum()),
            }
            for s, owner in enumerate(inputs.shared_ids)
        },
        "batteries": {
            battery: {
                "charge_kwh": _num(inputs.charge_kwh[b, span].sum()),
                "discharge_kwh": _num(inputs.discharge_kwh[b, span].sum()),
                "green_in_kwh": _num(a.battery_green_in_kwh[b, span].sum()),
                "green_out_kwh": _num(a.battery_green_out_kwh[b, span].sum()),
                "grid_out_kwh": _num(a.battery_grid_out_kwh[b, span].sum()),
                "untracked_kwh": _num(a.battery_untracked_kwh[b, span].sum()),
            }
            for b, battery in enumerate(inputs.battery_ids)
        },
    }


def enterprise_rows(result: MonthResult) -> dict[str, dict[str, Any]]:
    """Per enterprise month indicators as JSON data [kWh], [kgCO2], [unitless]."""
    ind, ids = result.enterprises, result.inputs.enterprise_ids
    rows = {}
    for e, eid in enumerate(ids):
        rows[eid] = {name: _num(getattr(ind, name)[e, 0]) for name in (f.name for f in dataclasses.fields(ind))}
        rows[eid]["grid_factor_kg_per_kwh"] = result.grid_factor[eid]
        rows[eid]["missing_intervals"] = int(result.inputs.missing[e].sum())
        rows[eid]["certificates_not_counted_kwh"] = _num(result.certificates_not_counted_kwh[e].sum())
    return rows


def reconciliation(result: MonthResult) -> dict[str, Any]:
    """The month's totals by meter against the attribution (all [kWh]).

    * ``consumption_gap_kwh``: attributed (green + grid) - metered consumption
      (``import - export + generation + discharge - charge``, after clipping).
    * ``generation_gap_kwh``: PV generation metered - its uses attributed
      (own use, battery charging, pooled, exported, shared used and exported).
    * ``clipped_kwh``: energy clipped by data-quality rules (see the issues).
    """
    a, inputs = result.attribution, result.inputs
    metered = float(inputs.consumption_kwh.sum())
    attributed = float((a.green_kwh + a.grid_kwh).sum())
    uses = float(
        (a.own_pv_kwh + a.battery_green_charge_kwh + a.own_pv_pooled_kwh + a.own_pv_exported_kwh).sum()
        + a.shared_used_kwh.sum() + a.shared_exported_kwh.sum()
    )  # fmt: skip
    generation = float(inputs.generation_kwh.sum())
    return {
        "import_kwh": _num(inputs.import_kwh.sum()),
        "export_kwh": _num(inputs.export_kwh.sum()),
        "generation_kwh": _num(generation),
        "battery_charge_kwh": _num(inputs.charge_kwh.sum()),
        "battery_discharge_kwh": _num(inputs.discharge_kwh.sum()),
        "metered_consumption_kwh": _num(metered),
        "attributed_kwh": _num(attributed),
        "consumption_gap_kwh": _num(attributed - metered),
        "generation_gap_kwh": _num(generation - uses),
        "clipped_kwh": _num(sum(i.kwh for i in inputs.issues)),
        "grid_import_kwh": _num(result.park.grid_import_kwh),
        "exported_kwh": _num(result.park.exported_kwh),
        "net_import_gap_kwh": _num(float(result.park.meter_gap_kwh.sum())),
        "reconciled": bool(result.park.reconciled and abs(generation - uses) <= 1e-6 * max(1.0, generation)),
    }


def _park_row(park: ParkIndicators) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in dataclasses.fields(park):
        value = getattr(park, f.name)
        if isinstance(value, bool) or value is None:
            row[f.name] = value
        elif isinstance(value, np.ndarray):
            continue
        else:
            row[f.name] = _num(value)
    return row


def _month_payload(result: MonthResult, settings: CarbonSettings) -> dict[str, Any]:
    inputs, a = result.inputs, result.attribution
    issues = [i.to_plain() for i in inputs.issues]
    return {
        "kind": MONTH,
        "month": inputs.period.label,
        "start": inputs.period.start.isoformat(),
        "end": inputs.period.end.isoformat(),
        "intervals": inputs.period.intervals,
        "inputs_digest": inputs.digest(),
        "certificates_digest": result.certificates_digest,
        "settings": settings.to_plain(),
        "factors": {"year": result.factor_year, "residual_kg_per_kwh": result.residual_factor},
        "enterprises": enterprise_rows(result),
        "park": _park_row(result.park),
        "reconciliation": reconciliation(result),
        "issue_count": len(issues),
        "issues": issues[:ISSUES_KEPT],
        "initial_stocks": {b: {"green_kwh": _num(g), "grid_kwh": _num(r)} for b, (g, r) in result.initial_stocks.items()},
        "final_stocks": {
            b: {"green_kwh": _num(a.final_green_kwh[i]), "grid_kwh": _num(a.final_grid_kwh[i])}
            for i, b in enumerate(inputs.battery_ids)
        },
    }


def payloads(result: MonthResult, settings: CarbonSettings) -> list[dict[str, Any]]:
    """The day records then the month record of ``result`` (pure)."""
    days = [_day_payload(result, day, first, end) for day, first, end in local_days(result.inputs.period, settings.zone)]
    return [*days, _month_payload(result, settings)]


def _key(payload: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(payload.get("kind")), str(payload.get("month")), str(payload.get("day", "")))


def plan_writes(new: list[dict[str, Any]], records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int | None]]:
    """Which payloads to append (changed or new) and what each corrects (pure)."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record in records:
        latest[_key(record["payload"])] = record
    write, corrects = [], []
    for payload in new:
        old = latest.get(_key(payload))
        if old is not None and canonical_json(old["payload"]) == canonical_json(payload):
            continue
        write.append(payload)
        corrects.append(None if old is None else int(old["seq"]))
    return write, corrects


# --------------------------------------------------------------------- I/O ----


@dataclass(frozen=True)
class RunReport:
    """What a run wrote."""

    month: str
    written: int
    corrections: int
    unchanged: int
    result: MonthResult


def _previous_month(month: str) -> str:
    year, number = (int(p) for p in month.split("-"))
    return f"{year - 1}-12" if number == 1 else f"{year}-{number - 1:02d}"


async def run_month(
    store: Store,
    month: str,
    settings: CarbonSettings | None = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """Compute ``month`` from the store and record what changed in the ``carbon`` ledger.

    ``registry`` defaults to the certificate registry of the store.
    """
    settings = settings or CarbonSettings()
    say = progress or (lambda _: None)
    period = month_period(month, settings.zone)
    say(f"reading meters and telemetry for {month} ({period.intervals} intervals)")
    inputs = await read_inputs(store, period)
    regions = {e.id: e.region for e in await store.list_enterprises()}
    if registry is None:
        from vpp.carbon.registry_ledger import load_registry

        registry = await load_registry(store)
    records = await store.ledger_records(LEDGER)
    previous = latest_of(records, _previous_month(month)).get(MONTH)
    stocks = initial_stocks(inputs, previous["final_stocks"] if previous else None)
    say(f"attributing {len(inputs.enterprise_ids)} enterprises, {len(inputs.battery_ids)} batteries")
    result = compute_month(inputs, settings, regions, registry, stocks)
    write, corrects = plan_writes(payloads(result, settings), records)
    if write:
        say(f"recording {len(write)} records")
        await store.append_ledger(LEDGER, write, corrects)
    total = len(local_days(period, settings.zone)) + 1
    fixes = sum(c is not None for c in corrects)
    return RunReport(month, len(write), fixes, total - len(write), result)


def latest_of(records: list[dict[str, Any]], month: str) -> dict[str, Any]:
    """Newest payload of the month: ``{"carbon.month": payload, "days": {day: payload}}`` (pure)."""
    view: dict[str, Any] = {"days": {}}
    for record in records:
        payload = record["payload"]
        if payload.get("month") != month:
            continue
        if payload.get("kind") == MONTH:
            view[MONTH] = {**payload, "seq": record["seq"]}
        elif payload.get("kind") == DAY:
            view["days"][payload["day"]] = {**payload, "seq": record["seq"]}
    return view


async def latest_view(store: Store, month: str) -> dict[str, Any]:
    """The latest (corrected) records of ``month`` from the ledger; no ``carbon.month`` key when never run."""
    return latest_of(await store.ledger_records(LEDGER), month)
