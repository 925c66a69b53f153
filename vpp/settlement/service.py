"""Monthly settlement of the park: read the store, compute with ``market``, record statements in the ledger.

A thin async shell around the pure market core:

1. read the enterprises, their grid meters' registers (→ 15-minute net load,
   missing intervals reported, never filled), their devices (→ committed
   capacity) and the completed dispatch instructions (→ events);
2. compute baselines, performance, payments and the enterprise shares with
   :func:`market.settle_events` and :func:`market.month_statement`;
3. append one record per enterprise and one park summary per month to the
   hash-chained ledger ``settlement``. A rerun that finds the same numbers
   writes nothing; one whose numbers differ writes a correction record
   (``corrects`` = the sequence number of the record it replaces).

Spot prices pushed through the API are kept as records of the ledger
``prices`` (append-only, the latest upload of an interval wins). Park costs
("who benefits, bears": a platform fee, an ancillary-service charge) come from
the configuration's ``[[costs]]`` and from the ledger ``park_costs`` (posted by
the park administrator; a correction replaces the record it corrects); each is
shared by its benefit key (:func:`market.benefit_weights`) to the fen.

Two readers asking at once for a month nobody has recorded yet both compute
it, but the statements are appended with a compare-and-append
(:meth:`Store.append_ledger_if`): the second finds the head moved, reads what
the first wrote, sees the same numbers and writes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from market import (
    DayCalendar,
    EventSettlement,
    PriceSeries,
    StatementRow,
    allocate_costs,
    capacity_payment_fen,
    month_statement,
    settle_events,
)
from market.baselines import INTERVAL_H, INTERVALS_PER_DAY
from vpp.chain import canonical_json
from vpp.errors import InvalidInput
from vpp.model import (
    Battery,
    Device,
    DispatchStatus,
    EvCharger,
    InterruptibleLoad,
    ShiftableLoad,
)
from vpp.settlement.config import ParkCost, SettlementConfig, load_config
from vpp.settlement.events import EventSource, dr_events
from vpp.settlement.meters import missing_ranges, net_load_kw
from vpp.store.base import Store

__all__ = [
    "COSTS_LEDGER",
    "PRICES_LEDGER",
    "SETTLEMENT_LEDGER",
    "MonthSettlement",
    "RunResult",
    "SettlementService",
    "enterprise_capacity_kw",
    "month_bounds",
    "parse_month",
]

SETTLEMENT_LEDGER = "settlement"
"""Ledger of monthly statements."""

PRICES_LEDGER = "prices"
"""Ledger of pushed spot / day-ahead prices."""

COSTS_LEDGER = "park_costs"
"""Ledger of park costs posted by the administrator."""

METERS_PER_QUERY = 100
"""Meters whose readings one bulk query fetches: bounds the readings held at once [-]."""

_APPEND_ATTEMPTS = 20
"""Compare-and-append attempts before giving up on a ledger other writers keep moving [-]."""

Progress = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)`` during long runs."""


# ----------------------------------------------------------------- months ----


def parse_month(text: str) -> str:
    """``YYYY-MM`` checked; raises ``InvalidInput`` naming ``month``."""
    parts = text.split("-")
    if len(parts) != 2 or len(parts[0]) != 4 or len(parts[1]) != 2 or not (parts[0] + parts[1]).isdigit():
        raise InvalidInput("month", f"'{text}' is not a month like 2026-07")
    if not 1 <= int(parts[1]) <= 12 or int(parts[0]) < 1970:
        raise InvalidInput("month", f"'{text}' is not a month like 2026-07")
    return text


def month_bounds(month: str, zone: str) -> tuple[datetime, datetime]:
    """UTC instants of local midnight on the month's first day and on the next month's first day."""
    year, number = (int(p) for p in parse_month(month).split("-"))
    local = ZoneInfo(zone)
    start = datetime(year, number, 1, tzinfo=local)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=local)
    return start.astimezone(UTC), end.astimezone(UTC)


def enterprise_capacity_kw(devices: Sequence[Device]) -> float:
    """Flexible capacity an enterprise commits: battery, shiftable and EV ratings, interruptible curtailment [kW].

    PV is not counted: curtailing it is not a service the grid pays for here.
    """
    total = 0.0
    for device in devices:
        if isinstance(device, InterruptibleLoad):
            total += device.max_curtail_kw
        elif isinstance(device, (Battery, ShiftableLoad, EvCharger)):
            total += device.rated_kw
    return total


# ----------------------------------------------------------------- inputs ----


@dataclass(frozen=True)
class _Inputs:
    """What the settlement of a month reads from the store."""

    month: str
    enterprise_ids: list[str]
    span_start_utc: datetime
    dates: np.ndarray  # (D,) local dates of the day axis
    load_kw: np.ndarray  # (E, D, 96) net load, NaN = missing
    month_days: slice  # days of the month on the day axis
    capacity_kw: np.ndarray  # (E,)
    events: list[EventSource]  # every completed instruction in the span
    history_event_dates: np.ndarray
    costs: tuple[ParkCost, ...] = ()  # park costs of the month

    def consumption_kwh(self) -> np.ndarray:
        """Grid consumption per enterprise in the month: positive net load of the measured intervals [kWh]."""
        month = self.load_kw[:, self.month_days].reshape(len(self.enterprise_ids), -1)
        return np.nansum(np.maximum(month, 0.0), axis=1) * INTERVAL_H


@dataclass(frozen=True)
class MonthSettlement:
    """Statements of one month, as ledger payloads.

    Attributes
    ----------
    month : "YYYY-MM" [-].
    enterprises : one payload per enterprise, by id [-].
    park : the park summary payload [-].
    """

    month: str
    enterprises: dict[str, dict[str, Any]]
    park: dict[str, Any]

    def payloads(self) -> list[dict[str, Any]]:
        """Enterprise payloads in id order, then the park summary."""
        return [self.enterprises[k] for k in sorted(self.enterprises)] + [self.park]


@dataclass(frozen=True)
class RunResult:
    """What a run wrote.

    Attributes
    ----------
    settlement : the computed statements [-].
    written : records appended (new and corrections) [-].
    unchanged : statements whose numbers were already recorded [-].
    """

    settlement: MonthSettlement
    written: list[dict[str, Any]]
    unchanged: int

    @property
    def corrections(self) -> list[dict[str, Any]]:
        """Records written that correct an earlier one."""
        return [r for r in self.written if r.get("corrects") is not None]


# ---------------------------------------------------------------- service ----


class SettlementService:
    """Computes, records and reads monthly statements from a store.

    Parameters
    ----------
    store : the service's store (opened) [-].
    config : programme configuration; None = the shipped default [-].
    now : clock; months not yet over are computed but not recorded [-].
    """

    def __init__(self, store: Store, config: SettlementConfig | None = None, now: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.config = config or load_config()
        self._now = now or (lambda: datetime.now(UTC))

    def is_closed(self, month: str) -> bool:
        """True when ``month`` is over by the service's clock (its statements are recorded, not provisional)."""
        return month_bounds(month, self.config.zone)[1] <= self._now()

    # -- reading ------------------------------------------------------------

    async def latest(self, month: str) -> dict[tuple[str, str], dict[str, Any]]:
        """Latest record per (kind, enterprise id or "") of ``month`` in the settlement ledger."""
        return _latest_of(await self.store.ledger_records(SETTLEMENT_LEDGER), month)

    async def statements(self, month: str) -> tuple[bool, dict[tuple[str, str], dict[str, Any]]]:
        """Latest statements of ``month`` by (kind, enterprise id or ""), computed and recorded if any is missing.

        Returns ``(provisional, entries)`` with entries ``{"record": ledger record or None, "payload": ...}``.
        A month not over yet is computed and returned unrecorded (``provisional``); ``InvalidInput`` naming
        ``month`` for a month that has not begun. Concurrent first reads record one set of statements.
        """
        start, end = month_bounds(month, self.config.zone)
        now = self._now()
        if start > now:
            raise InvalidInput("month", f"'{month}' has not begun")
        if end > now:
            settlement = await self.compute(month)
            return True, {_key(p): {"record": None, "payload": p} for p in settlement.payloads()}
        latest = await self.latest(month)
        wanted = {("enterprise_statement", e.id) for e in await self.store.list_enterprises()} | {("park_summary", "")}
        if not wanted <= set(latest):
            await self.run(month)
            latest = await self.latest(month)
        return False, {key: {"record": record, "payload": record["payload"]} for key, record in latest.items()}

    # -- computing -----------------------------------------------------------

    async def compute(self, month: str, progress: Progress | None = None) -> MonthSettlement:
        """Statements of ``month`` from the store's data, nothing written."""
        inputs = await self._inputs(month, progress)
        return _settle(inputs, self.config, await self.prices())

    async def run(self, month: str, progress: Progress | None = None) -> RunResult:
        """Compute ``month`` and append what changed to the settlement ledger (new records or corrections).

        The append is a compare-and-append on the head read with the latest
        statements: when another writer appended in between, the difference is
        taken again against what it wrote (nothing is written twice).
        Raises ``InvalidInput`` for a month that is not over: statements are recorded for closed months only.
        """
        _, end = month_bounds(month, self.config.zone)
        if end > self._now():
            raise InvalidInput("month", f"'{month}' is not over yet; statements are recorded for closed months")
        settlement = await self.compute(month, progress)
        for _ in range(_APPEND_ATTEMPTS):
            records = await self.store.ledger_records(SETTLEMENT_LEDGER)
            payloads, corrects = _changes(settlement, _latest_of(records, month))
            if not payloads:
                return RunResult(settlement, [], len(settlement.payloads()))
            head = records[-1]["hash"] if records else None
            written = await self.store.append_ledger_if(SETTLEMENT_LEDGER, payloads, head, corrects)
            if written is not None:
                return RunResult(settlement, written, len(settlement.payloads()) - len(payloads))
        raise RuntimeError(f"the {SETTLEMENT_LEDGER} ledger kept moving; {month} not recorded after {_APPEND_ATTEMPTS} attempts")

    # -- costs ---------------------------------------------------------------

    async def post_cost(self, cost: ParkCost, posted_by: str, corrects: int | None = None) -> dict[str, Any]:
        """Record a park cost in the ``park_costs`` ledger; ``corrects`` = seq of the cost record it replaces.

        Raises ``InvalidInput`` naming ``corrects`` when it names no cost record, or one already corrected
        (checked and appended with a compare-and-append, so two corrections of one record cannot both land).
        """
        payload = {
            "kind": "park_cost",
            "month": cost.month,
            "cost_kind": cost.kind,
            "amount_fen": cost.amount_fen,
            "benefit_key": cost.benefit_key,
            "note": cost.note,
            "posted_by": posted_by,
            "posted_at": self._now().isoformat(),
        }
        for _ in range(_APPEND_ATTEMPTS):
            records = await self.store.ledger_records(COSTS_LEDGER)
            if corrects is not None:
                _check_correctable(records, corrects)
            head = records[-1]["hash"] if records else None
            written = await self.store.append_ledger_if(COSTS_LEDGER, [payload], head, [corrects])
            if written is not None:
                return written[0]
        raise RuntimeError(f"the {COSTS_LEDGER} ledger kept moving; cost not recorded after {_APPEND_ATTEMPTS} attempts")

    async def costs(self, month: str) -> tuple[ParkCost, ...]:
        """Park costs of ``month``: the configured ones, then the posted ones in record order (corrections applied)."""
        records = await self.store.ledger_records(COSTS_LEDGER)
        replaced = {r["corrects"] for r in records if r.get("corrects") is not None}
        posted = tuple(
            ParkCost(p["month"], p["cost_kind"], int(p["amount_fen"]), p["benefit_key"], p.get("note", ""), f"{COSTS_LEDGER}#{r['seq']}")
            for r in records
            if r["seq"] not in replaced and (p := r["payload"]).get("kind") == "park_cost" and p.get("month") == month
        )
        return tuple(c for c in self.config.costs if c.month == month) + posted

    # -- prices --------------------------------------------------------------

    async def push_prices(self, series: PriceSeries, source: str, pushed_by: str) -> dict[str, Any]:
        """Record one upload of prices per 15-minute interval in the prices ledger; returns the record."""
        starts = series.interval_start_utc.astype("datetime64[s]").astype(np.int64)
        payload = {
            "kind": "prices",
            "source": source,
            "pushed_by": pushed_by,
            "pushed_at": self._now().isoformat(),
            "intervals": [
                [datetime.fromtimestamp(int(s), UTC).isoformat(), float(p)]
                for s, p in zip(starts, series.price_cny_per_mwh)
            ],
        }
        return (await self.store.append_ledger(PRICES_LEDGER, [payload]))[0]

    async def prices(self) -> dict[int, float]:
        """Latest pushed price per interval start (epoch seconds) [CNY/MWh]."""
        return apply_price_records({}, await self.store.ledger_records(PRICES_LEDGER))

    # -- inputs --------------------------------------------------------------

    async def _inputs(self, month: str, progress: Progress | None) -> _Inputs:
        month_start, month_end = month_bounds(month, self.config.zone)
        span_start = month_start - timedelta(days=self.config.history_days)
        days = round((month_end - span_start).total_seconds() / 86400)
        if (month_end - span_start).total_seconds() != days * 86400:
            raise ValueError(f"zone {self.config.zone} changes its UTC offset in {month}; settlement needs a fixed offset")
        ids = [e.id for e in await self.store.list_enterprises()]
        load = await self._park_load(ids, span_start, month_end, days * INTERVALS_PER_DAY, progress)
        devices: dict[str, list[Device]] = {}
        for device in await self.store.list_devices():
            devices.setdefault(device.enterprise_id, []).append(device)
        capacity = np.array([enterprise_capacity_kw(devices.get(eid, [])) for eid in ids], dtype=np.float64)
        local_first = span_start.astimezone(ZoneInfo(self.config.zone)).date()
        dates = np.datetime64(local_first, "D") + np.arange(days)
        c = self.config
        pairs = await self.store.list_instructions([DispatchStatus.COMPLETED])
        events = dr_events(
            pairs, c.zone, c.programme.name, c.real_time_programme.name, c.real_time_sources, c.day_ahead_min_notice_s
        )
        in_span = [s for s in events if dates[0] <= np.datetime64(s.event.window.date, "D") <= dates[-1]]
        history = days - (month_end - month_start).days
        return _Inputs(
            month=month,
            enterprise_ids=ids,
            span_start_utc=span_start,
            dates=dates,
            load_kw=load.reshape(len(ids), days, INTERVALS_PER_DAY),
            month_days=slice(history, days),
            capacity_kw=capacity,
            events=in_span,
            history_event_dates=np.array(
                [np.datetime64(s.event.window.date, "D") for s in in_span], dtype="datetime64[D]"
            ),
            costs=await self.costs(month),
        )

    async def _park_load(
        self, ids: list[str], start: datetime, end: datetime, intervals: int, progress: Progress | None
    ) -> np.ndarray:
        """Net load per enterprise, shape (E, intervals): the sum over its grid meters, NaN where any is missing [kW].

        Readings are fetched with :meth:`Store.meter_readings_many`, :data:`METERS_PER_QUERY` meters a query.
        """
        row = {eid: e for e, eid in enumerate(ids)}
        meters = [m for m in await self.store.list_meters() if m.purpose == "grid" and m.enterprise_id in row]
        load = np.full((len(ids), intervals), np.nan)
        metered = np.zeros(len(ids), dtype=bool)
        reach = end + timedelta(seconds=self.config.max_reading_gap_s + 1)  # the reading bracketing the last boundary
        for first in range(0, len(meters), METERS_PER_QUERY):
            batch = meters[first:first + METERS_PER_QUERY]
            readings = await self.store.meter_readings_many([m.id for m in batch], start, reach)
            for meter in batch:
                e = row[meter.enterprise_id]
                series = net_load_kw(readings[meter.id], start, intervals, self.config.max_reading_gap_s)
                load[e] = series if not metered[e] else load[e] + series
                metered[e] = True
            if progress is not None:
                progress("meters", min(first + METERS_PER_QUERY, len(meters)), len(meters))
        return load


# -------------------------------------------------------------- computing ----


def _key(payload: Mapping[str, Any]) -> tuple[str, str]:
    """Identity of a statement in the ledger within its month: (kind, enterprise id or "")."""
    return str(payload.get("kind", "")), str(payload.get("enterprise_id") or "")


def _check_correctable(records: Sequence[Mapping[str, Any]], corrects: int) -> None:
    """``InvalidInput`` naming ``corrects`` unless it is the seq of a park cost record nobody corrected yet."""
    if not 0 <= corrects < len(records) or records[corrects]["payload"].get("kind") != "park_cost":
        raise InvalidInput("corrects", f"{corrects} is not the sequence number of a park cost record")
    if any(r.get("corrects") == corrects for r in records):
        raise InvalidInput("corrects", f"record {corrects} has been corrected already; correct the newest record")


def _latest_of(records: Sequence[Mapping[str, Any]], month: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Latest record per statement identity of ``month`` among settlement ledger records."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        payload = record.get("payload", {})
        if payload.get("month") == month:
            found[_key(payload)] = dict(record)
    return found


def _changes(
    settlement: MonthSettlement, latest: Mapping[tuple[str, str], Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[int | None]]:
    """Payloads whose numbers differ from the latest recorded, and the seq each corrects (None = new)."""
    payloads, corrects = [], []
    for payload in settlement.payloads():
        previous = latest.get(_key(payload))
        if previous is not None and previous["payload"].get("statement_digest") == payload["statement_digest"]:
            continue
        payloads.append(payload)
        corrects.append(None if previous is None else int(previous["seq"]))
    return payloads, corrects


def apply_price_records(prices: dict[int, float], records: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Fold prices-ledger records, in sequence order, into ``prices`` (a later upload wins); returns it.

    Keys are interval starts [epoch s], values prices [CNY/MWh].
    """
    for record in records:
        for start, price in record["payload"].get("intervals", []):
            prices[int(datetime.fromisoformat(start).timestamp())] = float(price)
    return prices


def _settle(inputs: _Inputs, config: SettlementConfig, prices: Mapping[int, float]) -> MonthSettlement:
    """Statements of the month from its inputs (pure)."""
    calendar = DayCalendar.build(inputs.dates, config.holidays, config.extra_working_days, inputs.history_event_dates)
    period = np.datetime64(inputs.month, "M")
    sources = [s for s in inputs.events if np.datetime64(s.event.window.date, "M") == period]
    if config.use_spot_prices:
        sources = [replace(s, event=replace(s.event, price_cny_per_kwh=_spot_price(s, config.zone, prices))) for s in sources]
    programmes = {config.programme.name: config.programme, config.real_time_programme.name: config.real_time_programme}
    settlements = settle_events([s.event for s in sources], programmes, inputs.load_kw, calendar, inputs.capacity_kw)
    rule = config.programme.payment
    capacity_total, capacity_fen = capacity_payment_fen(inputs.capacity_kw, rule.capacity_price_cny_per_kw_month)
    costs = _cost_shares(inputs, settlements)
    rows = month_statement(
        inputs.month, inputs.enterprise_ids, settlements, capacity_fen=capacity_fen,
        costs=[(_cost_note(cost, used), share) for cost, used, share in costs],
    )
    digests = _input_digests(inputs, config, sources)
    enterprises = {
        eid: _enterprise_payload(inputs, config, e, [r for r in rows if r.enterprise_id == eid], digests[e])
        for e, eid in enumerate(inputs.enterprise_ids)
    }
    park = _park_payload(inputs, config, sources, settlements, capacity_total, costs, enterprises, digests)
    return MonthSettlement(inputs.month, enterprises, park)


def _cost_shares(inputs: _Inputs, settlements: Sequence[EventSettlement]) -> list[tuple[ParkCost, str, np.ndarray]]:
    """(cost, benefit key used, share per enterprise [fen]) of each park cost of the month."""
    if not inputs.costs:
        return []
    revenue = np.zeros(len(inputs.enterprise_ids), dtype=np.int64)
    for settlement in settlements:
        revenue += settlement.enterprise_payment_fen
    shares, used = allocate_costs(
        [c.amount_fen for c in inputs.costs], [c.benefit_key for c in inputs.costs],
        revenue, inputs.consumption_kwh(), inputs.capacity_kw,
    )
    return [(cost, key, shares[c]) for c, (cost, key) in enumerate(zip(inputs.costs, used))]


def _cost_note(cost: ParkCost, used: str) -> str:
    """What a cost row is: its kind, its note, the benefit key it was shared by (and the one asked for if it fell back)."""
    key = used if used == cost.benefit_key else f"{used} ({cost.benefit_key} was all zero)"
    return f"{cost.kind}" + (f": {cost.note}" if cost.note else "") + f"; shared by {key}"


def _spot_price(source: EventSource, zone: str, prices: Mapping[int, float]) -> float | None:
    """Mean pushed price over the event's intervals when every one has a price, else None [CNY/kWh]."""
    window = source.event.window
    midnight = datetime.combine(np.datetime64(window.date, "D").item(), datetime.min.time(), ZoneInfo(zone))
    first = int(midnight.timestamp()) + 900 * window.start_interval
    wanted = [first + 900 * k for k in range(window.intervals)]
    if not all(t in prices for t in wanted):
        return None
    return float(np.mean([prices[t] for t in wanted])) / 1000.0


def _input_digests(inputs: _Inputs, config: SettlementConfig, sources: Sequence[EventSource]) -> list[str]:
    """SHA-256 per enterprise of what its statement depends on: config, events, its load and capacity [hex]."""
    shared = canonical_json({
        "config": config.digest,
        "events": [_event_json(s) for s in sources],
        "enterprises": inputs.enterprise_ids,
        "costs": [asdict(c) for c in inputs.costs],
    })
    digests = []
    for e in range(len(inputs.enterprise_ids)):
        h = hashlib.sha256(shared.encode("utf-8"))
        h.update(np.round(inputs.load_kw[e], 6).tobytes())
        h.update(np.float64(inputs.capacity_kw[e]).tobytes())
        digests.append(h.hexdigest())
    return digests


def _event_json(source: EventSource) -> dict[str, Any]:
    event = source.event
    return {
        "event_id": event.id,
        "instruction_id": source.instruction_id,
        "programme": event.programme,
        "date": str(np.datetime64(event.window.date, "D")),
        "start_interval": event.window.start_interval,
        "end_interval": event.window.end_interval,
        "direction": event.direction,
        "requested_kw": round(event.requested_kw, 3),
        "price_cny_per_kwh": event.price_cny_per_kwh,
        "notice_min": None if source.notice_s is None else round(source.notice_s / 60.0, 2),
    }


def _row_json(row: StatementRow) -> dict[str, Any]:
    """A statement row as JSON data, kWh to the Wh and ratios to 1e-4 so reruns compare exactly."""
    data = asdict(row)
    for key in ("requested_kwh", "baseline_kwh", "actual_kwh", "delivered_kwh"):
        if data[key] is not None:
            data[key] = round(float(data[key]), 3)
    if data["ratio"] is not None:
        data["ratio"] = round(float(data["ratio"]), 4)
    return data


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def _enterprise_payload(
    inputs: _Inputs, config: SettlementConfig, e: int, rows: list[StatementRow], inputs_digest: str
) -> dict[str, Any]:
    """Ledger payload of one enterprise's statement."""
    month_load = inputs.load_kw[e, inputs.month_days].reshape(-1)
    month_start = inputs.span_start_utc + timedelta(days=inputs.month_days.start)
    history_missing = int(np.isnan(inputs.load_kw[e, : inputs.month_days.start]).sum())
    body = {
        "kind": "enterprise_statement",
        "month": inputs.month,
        "enterprise_id": inputs.enterprise_ids[e],
        "programme": config.programme.name,
        "capacity_kw": round(float(inputs.capacity_kw[e]), 3),
        "rows": [_row_json(r) for r in rows],
        "missing_intervals": {
            "count": int(np.isnan(month_load).sum()),
            "ranges": missing_ranges(np.isnan(month_load), month_start),
            "history_count": history_missing,
        },
    }
    return body | {"statement_digest": _digest(body), "inputs_digest": inputs_digest}


def _park_payload(
    inputs: _Inputs,
    config: SettlementConfig,
    sources: Sequence[EventSource],
    settlements: Sequence[EventSettlement],
    capacity_total_fen: int,
    costs: Sequence[tuple[ParkCost, str, np.ndarray]],
    enterprises: Mapping[str, dict[str, Any]],
    digests: Sequence[str],
) -> dict[str, Any]:
    """Ledger payload of the park summary; checks that the enterprise totals add up to it to the fen."""
    events = [
        _event_json(source) | {
            "requested_kwh": round(s.requested_kwh, 3),
            "delivered_kwh": round(s.delivered_kwh, 3),
            "ratio": None if np.isnan(s.ratio) else round(s.ratio, 4),
            "payment_fen": s.payment_fen,
            "penalty_fen": s.penalty_fen,
            "enterprises_verified": int(s.verified.sum()),
        }
        for source, s in zip(sources, settlements)
    ]
    totals = {key: sum(e[key] for e in events) for key in ("payment_fen", "penalty_fen")}
    totals["capacity_fen"] = capacity_total_fen
    totals["cost_fen"] = sum(cost.amount_fen for cost, _, _ in costs)
    totals["net_fen"] = totals["payment_fen"] + totals["capacity_fen"] - totals["penalty_fen"] - totals["cost_fen"]
    _check_adds_up(totals, enterprises)
    body = {
        "kind": "park_summary",
        "month": inputs.month,
        "enterprise_id": None,
        "programme": config.programme.name,
        "enterprises": list(inputs.enterprise_ids),
        "events": events,
        "costs": [
            {
                "kind": cost.kind,
                "amount_fen": cost.amount_fen,
                "benefit_key": cost.benefit_key,
                "benefit_key_used": used,
                "note": cost.note,
                "source": cost.source,
                "enterprises_bearing": int((share > 0).sum()),
            }
            for cost, used, share in costs
        ],
        "totals": totals | {
            "requested_kwh": round(sum(s.requested_kwh for s in settlements), 3),
            "delivered_kwh": round(sum(s.delivered_kwh for s in settlements), 3),
        },
        "missing_intervals": sum(p["missing_intervals"]["count"] for p in enterprises.values()),
    }
    return body | {"statement_digest": _digest(body), "inputs_digest": _digest(list(digests))}


def _check_adds_up(totals: Mapping[str, int], enterprises: Mapping[str, dict[str, Any]]) -> None:
    """The enterprise totals must add up to the park's to the fen; RuntimeError naming the amount otherwise."""
    for key in ("payment_fen", "penalty_fen", "capacity_fen", "cost_fen", "net_fen"):
        shares = sum(row[key] for p in enterprises.values() for row in p["rows"] if row["kind"] == "total")
        if shares != totals[key]:
            raise RuntimeError(f"enterprise {key} add up to {shares}, the park's is {totals[key]}")
