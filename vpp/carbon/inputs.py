"""Attribution inputs per 15-minute interval, read from the store's meters and telemetry.

Two layers, kept apart:

* :func:`capture` (async, I/O): reads the park layout, the meter readings
  and the device telemetry of a period into plain arrays (:class:`Captured`).
* :func:`parse` (pure): turns those arrays into interval energies
  (:class:`Inputs`), the arguments of :func:`vpp.carbon.attribute`.

Intervals are 15 minutes aligned to the quarter hour in UTC; a month's
boundaries are local midnights of the park's zone (default Asia/Shanghai).

Energy balance behind an enterprise's grid meter
------------------------------------------------
Generation meters and batteries sit behind the owner's grid meter, so per
interval::

    consumption = import - export + generation + discharge - charge      [kWh]

``import``/``export``: differences of the grid meter's cumulative
registers; ``generation``: the generation meter's ``export - import``
difference floored at 0 (a PV inverter's night-time auxiliary draw stays in
consumption), or, without a generation meter, the PV devices' telemetry
integrated; ``discharge``/``charge``: each battery's telemetry power
integrated (generator convention: + discharge, - charge). Consumption
excludes battery charging, as :func:`vpp.carbon.attribute` expects.

Own and shared PV: an enterprise's generation meter measures all its PV.
Shared PV (``PV.shared``, owned by the park enterprise) is a shared green
supply, one row per owner; it is the owner's generation meter when all of
the owner's PV is shared, else the shared devices' telemetry (and the rest
of the meter is the owner's own PV).

Data quality: nothing is filled in. An interval of an enterprise for which
a register boundary, a battery's or a (meter-less) PV's telemetry is
missing is *missing*: every energy of that enterprise in that interval is
set to 0 and the interval is listed in :attr:`Inputs.issues` and
:attr:`Inputs.missing`. A register that decreases, or a balance that
comes out negative, is clipped to 0 and reported as well.

Telemetry integration: a sample's power is held over the time since the
previous sample (backward hold: the simulator and most devices report the
power of the period just ended); a gap longer than ``max_gap_s`` is
unknown. Meter registers are interpolated linearly to interval boundaries
between readings at most ``max_meter_gap_s`` apart.
"""

from __future__ import annotations

import calendar
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from vpp.model import PV, Battery
from vpp.store.base import Store

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

INTERVAL_S = 900
"""Length of a settlement and ledger interval [s]."""
DEFAULT_ZONE = "Asia/Shanghai"
DEFAULT_MAX_GAP_S = 300.0
"""Longest telemetry gap integrated; longer gaps are missing data [s]."""
DEFAULT_MAX_METER_GAP_S = 900.0
"""Longest gap between meter readings interpolated across [s]."""
_READ_MARGIN = timedelta(minutes=30)


# ------------------------------------------------------------------ period ----


@dataclass(frozen=True)
class Period:
    """Consecutive 15-minute intervals ``[start, end)``, both on the UTC quarter hour."""

    start: datetime
    end: datetime
    label: str = ""
    """Human name, e.g. the month ``"2026-07"``."""

    def __post_init__(self) -> None:
        for name, when in (("start", self.start), ("end", self.end)):
            if when.tzinfo is None or int(when.timestamp()) % INTERVAL_S:
                raise ValueError(f"period {name} {when.isoformat()} must be timezone-aware and on a UTC quarter hour")
        if self.end <= self.start:
            raise ValueError(f"period end {self.end.isoformat()} must be after start {self.start.isoformat()}")

    @property
    def intervals(self) -> int:
        """Number of intervals T [unitless]."""
        return int((self.end - self.start).total_seconds()) // INTERVAL_S

    @property
    def start_s(self) -> NDArray[np.int64]:
        """Interval starts, POSIX seconds UTC, shape (T,) [s]."""
        return int(self.start.timestamp()) + INTERVAL_S * np.arange(self.intervals, dtype=np.int64)

    @property
    def boundaries_s(self) -> FloatArray:
        """Interval boundaries, shape (T + 1,) [s]."""
        return float(self.start.timestamp()) + INTERVAL_S * np.arange(self.intervals + 1, dtype=np.float64)


def month_period(month: str, zone: str = DEFAULT_ZONE) -> Period:
    """The local calendar month ``"YYYY-MM"`` in ``zone`` as a UTC :class:`Period`.

    Raises ValueError naming ``month`` when it is not a month like 2026-07.
    """
    try:
        year, number = (int(part) for part in month.split("-"))
        if len(month) != 7 or not 1 <= number <= 12:
            raise ValueError
    except ValueError:
        raise ValueError(f"month {month!r} is not a month like 2026-07") from None
    tz = ZoneInfo(zone)
    first = datetime(year, number, 1, tzinfo=tz)
    last = datetime(year, number, calendar.monthrange(year, number)[1], tzinfo=tz) + timedelta(days=1)
    return Period(first.astimezone(timezone.utc), last.astimezone(timezone.utc), label=month)


def local_days(period: Period, zone: str = DEFAULT_ZONE) -> list[tuple[str, int, int]]:
    """The local days of ``period``: ``(date "YYYY-MM-DD", first interval, end interval)``."""
    tz = ZoneInfo(zone)
    dates = [
        datetime.fromtimestamp(int(s), tz=timezone.utc).astimezone(tz).date().isoformat() for s in period.start_s
    ]
    days: list[tuple[str, int, int]] = []
    for t, day in enumerate(dates):
        if not days or days[-1][0] != day:
            days.append((day, t, t + 1))
        else:
            days[-1] = (day, days[-1][1], t + 1)
    return days


# ----------------------------------------------------------------- captured ----


@dataclass(frozen=True, eq=False)
class Registers:
    """Cumulative registers of one meter at its reading times."""

    ts_s: FloatArray
    """Reading times, POSIX seconds UTC, ascending [s]."""
    import_kwh: FloatArray
    """Cumulative import [kWh]."""
    export_kwh: FloatArray
    """Cumulative export [kWh]."""


@dataclass(frozen=True, eq=False)
class PowerSamples:
    """Telemetry power of one device at its sample times."""

    ts_s: FloatArray
    """Sample times, POSIX seconds UTC, ascending [s]."""
    p_kw: FloatArray
    """Power, generator convention (+ into the park) [kW]."""
    soc_kwh: FloatArray
    """State of charge, NaN when not reported [kWh]."""


@dataclass(frozen=True)
class BatteryInfo:
    """A battery of the park."""

    device_id: str
    owner: str
    charge_efficiency: float
    discharge_efficiency: float


@dataclass(frozen=True)
class Layout:
    """Who owns which meters and devices (ids only)."""

    enterprise_ids: tuple[str, ...]
    grid_meter: Mapping[str, str]
    """Enterprise id -> grid meter id."""
    generation_meter: Mapping[str, str]
    """Enterprise id -> generation meter id (only enterprises that have one)."""
    own_pv: Mapping[str, tuple[str, ...]]
    """Enterprise id -> ids of its own (not shared) PV devices."""
    shared_pv: Mapping[str, tuple[str, ...]]
    """Owner id -> ids of its shared PV devices."""
    batteries: tuple[BatteryInfo, ...]


@dataclass(frozen=True, eq=False)
class Captured:
    """Everything :func:`parse` needs, as read from the store."""

    period: Period
    layout: Layout
    meters: Mapping[str, Registers]
    telemetry: Mapping[str, PowerSamples]


# ------------------------------------------------------------------ inputs ----


@dataclass(frozen=True)
class Issue:
    """A data-quality finding, named by what it concerns."""

    kind: str
    """``missing``, ``register_decrease``, ``negative_consumption`` or ``negative_generation``."""
    source: str
    """Meter, device or enterprise id."""
    enterprise_id: str
    first_interval: int
    """Index of the first interval concerned [unitless]."""
    intervals: int
    """Number of intervals concerned [unitless]."""
    kwh: float = 0.0
    """Energy clipped, where something was clipped [kWh]."""

    def to_plain(self) -> dict:
        """As JSON data."""
        return {
            "kind": self.kind, "source": self.source, "enterprise_id": self.enterprise_id,
            "first_interval": self.first_interval, "intervals": self.intervals, "kwh": round(self.kwh, 6),
        }  # fmt: skip


@dataclass(frozen=True, eq=False)
class Inputs:
    """Interval energies of a period, rows in ``enterprise_ids`` / ``shared_ids`` / ``battery_ids`` order [kWh]."""

    period: Period
    enterprise_ids: tuple[str, ...]
    import_kwh: FloatArray
    """Grid meter import per enterprise and interval, (E, T) [kWh]."""
    export_kwh: FloatArray
    """Grid meter export, (E, T) [kWh]."""
    generation_kwh: FloatArray
    """All PV generation behind each enterprise's meter (own and shared), (E, T) [kWh]."""
    own_pv_kwh: FloatArray
    """Own PV generation, (E, T) [kWh]."""
    consumption_kwh: FloatArray
    """Consumption excluding battery charging, (E, T) [kWh]."""
    shared_ids: tuple[str, ...]
    """Owners of the shared supplies (one row each)."""
    shared_green_kwh: FloatArray
    """Shared PV generation per owner, (S, T) [kWh]."""
    battery_ids: tuple[str, ...]
    battery_owner: NDArray[np.intp]
    """Row of each battery's owner, (B,) [unitless]."""
    charge_kwh: FloatArray
    """Energy drawn by each battery, (B, T) [kWh]."""
    discharge_kwh: FloatArray
    """Energy delivered by each battery, (B, T) [kWh]."""
    charge_efficiency: FloatArray
    """(B,) [unitless]."""
    discharge_efficiency: FloatArray
    """(B,) [unitless]."""
    initial_soc_kwh: FloatArray
    """State of charge at the period start, NaN when unknown, (B,) [kWh]."""
    missing: BoolArray
    """Intervals of each enterprise without complete data, (E, T) [unitless]."""
    issues: tuple[Issue, ...] = field(default=())

    def digest(self) -> str:
        """SHA-256 (hex) over every input array and id: equal inputs, equal digest."""
        h = hashlib.sha256()
        for ids in (self.enterprise_ids, self.shared_ids, self.battery_ids):
            h.update(("\x1f".join(ids) + "\x1e").encode())
        h.update(f"{self.period.start.isoformat()}/{self.period.end.isoformat()}".encode())
        for array in (
            self.consumption_kwh, self.own_pv_kwh, self.shared_green_kwh, self.charge_kwh, self.discharge_kwh,
            self.import_kwh, self.export_kwh, self.generation_kwh, self.charge_efficiency,
            self.discharge_efficiency, self.initial_soc_kwh, self.missing,
        ):  # fmt: skip
            h.update(np.ascontiguousarray(np.round(array, 9) if array.dtype.kind == "f" else array).tobytes())
        return h.hexdigest()

    def day_digest(self, first: int, end: int) -> str:
        """SHA-256 (hex) over the inputs of intervals ``[first, end)``."""
        h = hashlib.sha256(("\x1f".join(self.enterprise_ids) + "\x1e" + "\x1f".join(self.battery_ids)).encode())
        for array in (
            self.import_kwh, self.export_kwh, self.generation_kwh, self.own_pv_kwh, self.consumption_kwh,
            self.shared_green_kwh, self.charge_kwh, self.discharge_kwh, self.missing,
        ):  # fmt: skip
            part = array[:, first:end]
            h.update(np.ascontiguousarray(np.round(part, 9) if part.dtype.kind == "f" else part).tobytes())
        return h.hexdigest()


# ------------------------------------------------------------ pure parsing ----


def _runs(mask: BoolArray) -> list[tuple[int, int]]:
    """``(first, count)`` of each run of True in a 1-D mask."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def register_energy(registers: Registers | None, boundaries_s: FloatArray, max_gap_s: float) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Import and export per interval from cumulative registers, and which intervals are known.

    Returns ``(import (T,), export (T,), known (T,))`` [kWh]; unknown
    intervals are 0. Decreases are *not* clipped here (see :func:`parse`).
    """
    count = boundaries_s.size - 1
    if registers is None or registers.ts_s.size == 0:
        return np.zeros(count), np.zeros(count), np.zeros(count, dtype=bool)
    ts = registers.ts_s
    index = np.searchsorted(ts, boundaries_s, side="left")
    inside = index < ts.size
    exact = inside & (ts[np.minimum(index, ts.size - 1)] == boundaries_s)
    bracket = inside & (index > 0)
    gap = ts[np.minimum(index, ts.size - 1)] - ts[np.maximum(index - 1, 0)]
    boundary_known = exact | (bracket & (gap <= max_gap_s))
    known = boundary_known[:-1] & boundary_known[1:]
    imports = np.diff(np.interp(boundaries_s, ts, registers.import_kwh))
    exports = np.diff(np.interp(boundaries_s, ts, registers.export_kwh))
    return np.where(known, imports, 0.0), np.where(known, exports, 0.0), known


def power_energy(samples: PowerSamples | None, boundaries_s: FloatArray, max_gap_s: float) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Energy delivered (+) and drawn (-) per interval from power samples, and which intervals are covered.

    Backward hold: sample ``i`` holds over ``(ts[i-1], ts[i]]``; a longer
    gap than ``max_gap_s`` is unknown. Returns ``(delivered (T,), drawn
    (T,), covered (T,))``, both energies >= 0 and 0 where not covered [kWh].
    """
    count = boundaries_s.size - 1
    if samples is None or samples.ts_s.size < 2:
        return np.zeros(count), np.zeros(count), np.zeros(count, dtype=bool)
    ts, p = samples.ts_s, samples.p_kw
    dt = np.diff(ts)
    held = p[1:]
    bad = dt > max_gap_s
    hours = np.where(bad, 0.0, dt) / 3600.0

    def at_boundaries(per_segment: FloatArray) -> FloatArray:
        return np.diff(np.interp(boundaries_s, ts, np.concatenate([[0.0], np.cumsum(per_segment)])))

    delivered = at_boundaries(np.maximum(held, 0.0) * hours)
    drawn = at_boundaries(np.maximum(-held, 0.0) * hours)
    unknown_s = at_boundaries(np.where(bad, dt, 0.0))
    covered = (boundaries_s[:-1] >= ts[0]) & (boundaries_s[1:] <= ts[-1]) & (unknown_s <= 0.0)
    return np.where(covered, delivered, 0.0), np.where(covered, drawn, 0.0), covered


def _clip_negative(values: FloatArray, kind: str, source: str, owner: str, issues: list[Issue]) -> FloatArray:
    """``values`` floored at 0; each run of negatives reported as an :class:`Issue`."""
    negative = values < -1e-9
    for first, count in _runs(negative):
        clipped = float(-values[first : first + count].sum())
        issues.append(Issue(kind, source, owner, first, count, clipped))
    return np.maximum(values, 0.0)


def _missing(known: BoolArray, source: str, owner: str, issues: list[Issue]) -> None:
    for first, count in _runs(~known):
        issues.append(Issue("missing", source, owner, first, count))


def _pv_telemetry(captured: Captured, device_ids: Sequence[str], owner: str, max_gap_s: float, issues: list[Issue]) -> tuple[FloatArray, BoolArray]:
    """Summed generation of PV devices from telemetry, and where every one is covered [kWh]."""
    boundaries = captured.period.boundaries_s
    total = np.zeros(boundaries.size - 1)
    known = np.ones(boundaries.size - 1, dtype=bool)
    for device_id in device_ids:
        delivered, _, covered = power_energy(captured.telemetry.get(device_id), boundaries, max_gap_s)
        _missing(covered, device_id, owner, issues)
        total += delivered
        known &= covered
    return total, known


def _generation(
    captured: Captured, owner: str, max_gap_s: float, max_meter_gap_s: float, issues: list[Issue]
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """All PV generation behind the owner's meter, its shared part, and where both are known [kWh]."""
    layout, boundaries = captured.layout, captured.period.boundaries_s
    own_ids, shared_ids = layout.own_pv.get(owner, ()), layout.shared_pv.get(owner, ())
    meter = layout.generation_meter.get(owner)
    if meter is None:
        own, own_known = _pv_telemetry(captured, own_ids, owner, max_gap_s, issues)
        shared, shared_known = _pv_telemetry(captured, shared_ids, owner, max_gap_s, issues)
        return own + shared, shared, own_known & shared_known
    imports, exports, known = register_energy(captured.meters.get(meter), boundaries, max_meter_gap_s)
    _missing(known, meter, owner, issues)
    total = np.maximum(_clip_negative(exports, "register_decrease", meter, owner, issues)
                       - _clip_negative(imports, "register_decrease", meter, owner, issues), 0.0)  # fmt: skip
    if not shared_ids:
        return total, np.zeros_like(total), known
    if not own_ids:
        return total, total, known
    shared, shared_known = _pv_telemetry(captured, shared_ids, owner, max_gap_s, issues)
    return total, np.minimum(shared, total), known & shared_known


def parse(
    captured: Captured, *, max_gap_s: float = DEFAULT_MAX_GAP_S, max_meter_gap_s: float = DEFAULT_MAX_METER_GAP_S
) -> Inputs:
    """Interval energies of every enterprise, shared supply and battery (rules in the module docstring).

    Parameters
    ----------
    captured : Captured
        Layout, meter readings and telemetry of the period.
    max_gap_s : float
        Longest telemetry gap integrated [s].
    max_meter_gap_s : float
        Longest gap between meter readings interpolated across [s].
    """
    layout, boundaries = captured.layout, captured.period.boundaries_s
    ids = layout.enterprise_ids
    rows, count = {eid: i for i, eid in enumerate(ids)}, boundaries.size - 1
    issues: list[Issue] = []
    shape = (len(ids), count)
    imports, exports, generation, own_pv = (np.zeros(shape) for _ in range(4))
    known = np.ones(shape, dtype=bool)
    shared_ids = tuple(owner for owner in ids if layout.shared_pv.get(owner))
    shared = np.zeros((len(shared_ids), count))
    for e, eid in enumerate(ids):
        meter = layout.grid_meter.get(eid)
        imp, exp, grid_known = register_energy(captured.meters.get(meter) if meter else None, boundaries, max_meter_gap_s)
        _missing(grid_known, meter or f"{eid} (no grid meter)", eid, issues)
        imports[e] = _clip_negative(imp, "register_decrease", meter or eid, eid, issues)
        exports[e] = _clip_negative(exp, "register_decrease", meter or eid, eid, issues)
        total, shared_part, gen_known = _generation(captured, eid, max_gap_s, max_meter_gap_s, issues)
        generation[e], own_pv[e] = total, total - shared_part
        if eid in shared_ids:
            shared[shared_ids.index(eid)] = shared_part
        known[e] = grid_known & gen_known
    batteries = layout.batteries
    owner = np.array([rows[b.owner] for b in batteries], dtype=np.intp)
    charge, discharge = np.zeros((len(batteries), count)), np.zeros((len(batteries), count))
    initial_soc = np.full(len(batteries), np.nan)
    for b, battery in enumerate(batteries):
        samples = captured.telemetry.get(battery.device_id)
        discharge[b], charge[b], covered = power_energy(samples, boundaries, max_gap_s)
        _missing(covered, battery.device_id, battery.owner, issues)
        known[owner[b]] &= covered
        initial_soc[b] = _soc_at(samples, boundaries[0], max_gap_s)
    net_battery = np.zeros(shape)
    np.add.at(net_battery, owner, discharge - charge)
    consumption = imports - exports + generation + net_battery
    for e, eid in enumerate(ids):
        consumption[e] = _clip_negative(np.where(known[e], consumption[e], 0.0), "negative_consumption", eid, eid, issues)
    missing = ~known
    for array in (imports, exports, generation, own_pv, consumption):
        array[missing] = 0.0
    for s, eid in enumerate(shared_ids):
        shared[s][missing[rows[eid]]] = 0.0
    for b in range(len(batteries)):
        charge[b][missing[owner[b]]] = 0.0
        discharge[b][missing[owner[b]]] = 0.0
    return Inputs(
        period=captured.period,
        enterprise_ids=ids,
        import_kwh=imports,
        export_kwh=exports,
        generation_kwh=generation,
        own_pv_kwh=own_pv,
        consumption_kwh=consumption,
        shared_ids=shared_ids,
        shared_green_kwh=shared,
        battery_ids=tuple(b.device_id for b in batteries),
        battery_owner=owner,
        charge_kwh=charge,
        discharge_kwh=discharge,
        charge_efficiency=np.array([b.charge_efficiency for b in batteries], dtype=np.float64),
        discharge_efficiency=np.array([b.discharge_efficiency for b in batteries], dtype=np.float64),
        initial_soc_kwh=initial_soc,
        missing=missing,
        issues=tuple(sorted(issues, key=lambda i: (i.enterprise_id, i.source, i.first_interval, i.kind))),
    )


def _soc_at(samples: PowerSamples | None, when_s: float, max_gap_s: float) -> float:
    """State of charge reported nearest ``when_s`` within ``max_gap_s``, else NaN [kWh]."""
    if samples is None or samples.ts_s.size == 0:
        return float("nan")
    nearest = int(np.argmin(np.abs(samples.ts_s - when_s)))
    if abs(samples.ts_s[nearest] - when_s) > max_gap_s:
        return float("nan")
    return float(samples.soc_kwh[nearest])


# --------------------------------------------------------------------- I/O ----


async def read_layout(store: Store) -> Layout:
    """Enterprises, meters, PV and batteries of the park, from the store."""
    enterprises = [e.id for e in await store.list_enterprises()]
    meters = await store.list_meters()
    devices = await store.list_devices()
    own: dict[str, list[str]] = {}
    shared: dict[str, list[str]] = {}
    for device in devices:
        if isinstance(device, PV):
            (shared if device.shared else own).setdefault(device.enterprise_id, []).append(device.id)
    return Layout(
        enterprise_ids=tuple(enterprises),
        grid_meter={m.enterprise_id: m.id for m in meters if m.purpose == "grid"},
        generation_meter={m.enterprise_id: m.id for m in meters if m.purpose == "generation"},
        own_pv={k: tuple(v) for k, v in own.items()},
        shared_pv={k: tuple(v) for k, v in shared.items()},
        batteries=tuple(
            BatteryInfo(d.id, d.enterprise_id, d.charge_efficiency, d.discharge_efficiency)
            for d in devices
            if isinstance(d, Battery)
        ),
    )


async def capture(store: Store, period: Period) -> Captured:
    """Read what :func:`parse` needs for ``period`` (plus a margin either side) from the store."""
    layout = await read_layout(store)
    start, end = period.start - _READ_MARGIN, period.end + _READ_MARGIN
    meter_ids = [*layout.grid_meter.values(), *layout.generation_meter.values()]
    meters = {}
    for meter_id in meter_ids:
        readings = await store.meter_readings(meter_id, start, end)
        meters[meter_id] = Registers(
            ts_s=np.array([r.ts.timestamp() for r in readings], dtype=np.float64),
            import_kwh=np.array([r.import_kwh for r in readings], dtype=np.float64),
            export_kwh=np.array([r.export_kwh for r in readings], dtype=np.float64),
        )
    device_ids = [b.device_id for b in layout.batteries]
    device_ids += [d for owner, ids in layout.own_pv.items() if owner not in layout.generation_meter for d in ids]
    device_ids += [
        d
        for owner, ids in layout.shared_pv.items()
        if owner not in layout.generation_meter or layout.own_pv.get(owner)
        for d in ids
    ]
    telemetry = {}
    for device_id in device_ids:
        samples = await store.telemetry_history(device_id, start, end)
        telemetry[device_id] = PowerSamples(
            ts_s=np.array([s.ts.timestamp() for s in samples], dtype=np.float64),
            p_kw=np.array([s.p_kw for s in samples], dtype=np.float64),
            soc_kwh=np.array([np.nan if s.soc_kwh is None else s.soc_kwh for s in samples], dtype=np.float64),
        )
    return Captured(period=period, layout=layout, meters=meters, telemetry=telemetry)


async def read_inputs(store: Store, period: Period, **options: float) -> Inputs:
    """:func:`capture` then :func:`parse` (``options``: ``max_gap_s``, ``max_meter_gap_s``)."""
    return parse(await capture(store, period), **options)
