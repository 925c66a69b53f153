"""A past month of the demo park, written into a data directory before ``vpp serve --demo`` opens it.

The live demo only knows the minutes it has run, so its settlement and carbon
views would be empty. This writes the demo park (``build_park(seed, n)``, the
same enterprises and devices ``vpp serve --demo`` uses) with the previous
local month and the settlement history before it: grid and generation meter
registers every 15 min, battery telemetry every 5 min, and three completed
dispatch instructions with their requested-vs-measured progress. Profiles are
simple closed forms (shift load shapes, a sine-shaped PV day, batteries
charging at midday and discharging in the evening and during peak events),
cheap enough for a test fixture; the physics is not the point here.

Run as ``python -m tests.vpp.dashboard.history DATA_DIR [--enterprises 8]``,
then ``vpp carbon run --month <printed month> --data-dir DATA_DIR`` and
``VPP_SETTLEMENT_CONFIG=DATA_DIR/programme.toml vpp serve --demo --enterprises 8 --data-dir DATA_DIR``
(the programme file shortens the settlement's baseline history to what is written).
"""

from __future__ import annotations

import argparse
import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from simulators.park import ParkSpec, build_park
from vpp.model import (
    PV,
    Battery,
    DispatchInstruction,
    DispatchProgress,
    DispatchState,
    DispatchStatus,
    InterruptibleLoad,
    MeterReading,
    ShiftableLoad,
    TelemetrySample,
)
from vpp.store import SqliteStore

HISTORY_DAYS = 7  # baseline history before the month; the default programme reads 45 [day]
PROGRAMME_TOML = f"[programme]\nhistory_days = {HISTORY_DAYS}\n"
"""Settlement programme matching the history written: serve with ``VPP_SETTLEMENT_CONFIG=DATA_DIR/programme.toml``."""
QUARTER = timedelta(minutes=15)
TELEMETRY_STEP = timedelta(minutes=5)  # within the carbon run's 300 s telemetry gap [min]
_SHIFT_HOURS = {"three_shift": (0, 24), "two_shift": (6, 22), "day_shift": (8, 17)}


@dataclass(frozen=True)
class PlannedEvent:
    """A past instruction: local day and hours of the month, and the battery power it held."""

    id: str
    day: int
    start_hour: int
    end_hour: int
    battery_fraction: float  # of each battery's rating, + = discharge (generator convention) [unitless]


EVENTS = (
    PlannedEvent("hist-peak-1", 9, 14, 16, 0.8),
    PlannedEvent("hist-valley-1", 15, 2, 3, -0.5),
    PlannedEvent("hist-peak-2", 22, 15, 17, 0.8),
)


def previous_month(now: datetime, zone: str = "Asia/Shanghai") -> str:
    """The local month before ``now``'s, as ``YYYY-MM``."""
    local = now.astimezone(ZoneInfo(zone))
    first = local.replace(day=1)
    last_of_previous = first - timedelta(days=1)
    return f"{last_of_previous.year:04d}-{last_of_previous.month:02d}"


def month_bounds(month: str, zone: str) -> tuple[datetime, datetime]:
    """UTC instants of the local month's first and next month's first midnight."""
    year, mon = (int(part) for part in month.split("-"))
    tz = ZoneInfo(zone)
    start = datetime(year, mon, 1, tzinfo=tz)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def _load_shape(pattern: str, local: datetime, weekend_factor: float) -> float:
    """Fraction of the peak an enterprise draws at a local time [unitless]."""
    first, last = _SHIFT_HOURS[pattern]
    working = first <= local.hour < last
    level = 0.9 if working else 0.3
    if local.weekday() >= 5:
        level = 0.3 + (level - 0.3) * weekend_factor
    return level


def _pv_shape(local: datetime) -> float:
    """Clear-day PV output as a fraction of rating [unitless]."""
    hour = local.hour + local.minute / 60.0
    return 0.7 * max(0.0, math.sin(math.pi * (hour - 6.0) / 12.0)) if 6.0 <= hour <= 18.0 else 0.0


def _battery_fraction(local: datetime, events: list[tuple[datetime, datetime, PlannedEvent]], ts: datetime) -> float:
    """Battery power as a fraction of rating, + = discharge [unitless]."""
    for start, end, event in events:
        if start <= ts < end:
            return event.battery_fraction
    if 10 <= local.hour < 14:
        return -0.25
    if 18 <= local.hour < 21:
        return 0.25
    return 0.0


def _planned(month: str, zone: str) -> list[tuple[datetime, datetime, PlannedEvent]]:
    year, mon = (int(part) for part in month.split("-"))
    tz = ZoneInfo(zone)
    return [
        (datetime(year, mon, e.day, e.start_hour, tzinfo=tz).astimezone(UTC),
         datetime(year, mon, e.day, e.end_hour, tzinfo=tz).astimezone(UTC), e)
        for e in EVENTS
    ]  # fmt: skip


def simulate(spec: ParkSpec, month: str, seed: int = 7) -> tuple[list[MeterReading], list[TelemetrySample], list]:
    """Meter readings, battery telemetry and (instruction, state, progress) of the month and its history."""
    zone = ZoneInfo(spec.timezone)
    month_start, month_end = month_bounds(month, spec.timezone)
    events = _planned(month, spec.timezone)
    rng = np.random.default_rng(seed)
    first = month_start - timedelta(days=HISTORY_DAYS)
    boundaries = [first + i * QUARTER for i in range(int((month_end - first) / QUARTER) + 1)]  # register instants
    starts = boundaries[:-1]  # one interval after each
    mids = [(t + QUARTER / 2).astimezone(zone) for t in starts]
    battery_fraction = np.array([_battery_fraction(t.astimezone(zone), events, t) for t in starts])
    pv_fraction = np.array([_pv_shape(m) for m in mids])
    batteries = [d for d in spec.devices if isinstance(d, Battery)]
    gen_meters = {m.enterprise_id: m.id for m in spec.meters if m.purpose == "generation"}
    readings: list[MeterReading] = []
    for meter in (m for m in spec.meters if m.purpose == "grid"):
        eid = meter.enterprise_id
        base = spec.base_loads[eid]
        shape = np.array([_load_shape(base.shift_pattern, m, base.weekend_factor) for m in mids])
        load_kw = base.peak_kw * shape * (1 + base.noise_std * rng.standard_normal(len(starts)))
        pv_kw = sum(d.rated_kw for d in spec.devices_of(eid) if isinstance(d, PV)) * pv_fraction
        battery_kw = sum(b.rated_kw for b in batteries if b.enterprise_id == eid) * battery_fraction
        net_kw = load_kw - pv_kw - battery_kw  # + = drawn from the grid
        imported = np.concatenate([[0.0], np.cumsum(np.maximum(net_kw, 0.0) * 0.25)])
        exported = np.concatenate([[0.0], np.cumsum(np.maximum(-net_kw, 0.0) * 0.25)])
        readings += [
            MeterReading(meter_id=meter.id, ts=t, import_kwh=float(i), export_kwh=float(e))
            for t, i, e in zip(boundaries, imported, exported)
        ]  # fmt: skip
        if eid in gen_meters:
            generated = np.concatenate([[0.0], np.cumsum(pv_kw * 0.25)])
            readings += [MeterReading(meter_id=gen_meters[eid], ts=t, import_kwh=0.0, export_kwh=float(g)) for t, g in zip(boundaries, generated)]
    # Each sample holds the power of the 5 minutes before it, as the carbon run reads telemetry.
    telemetry = [
        TelemetrySample(device_id=b.id, ts=t + step * TELEMETRY_STEP, p_kw=float(fraction) * b.rated_kw, p_min_kw=-b.rated_kw,
                        p_max_kw=b.rated_kw, soc_kwh=0.5 * b.capacity_kwh)
        for t, fraction in zip(starts, battery_fraction) for step in (1, 2, 3) for b in batteries
    ]  # fmt: skip
    return readings, telemetry, _instructions(spec, events)


def _instructions(spec: ParkSpec, events: list[tuple[datetime, datetime, PlannedEvent]]) -> list:
    """Completed instructions with a minute-by-minute requested vs measured fleet power."""
    batteries_kw = sum(d.rated_kw for d in spec.devices if isinstance(d, Battery))
    flexible_kw = sum(d.rated_kw for d in spec.devices if isinstance(d, (InterruptibleLoad, ShiftableLoad)))
    out = []
    for start, end, event in events:
        delta_kw = round(event.battery_fraction * batteries_kw * 0.9, 1)
        baseline_kw = -0.6 * flexible_kw
        instruction = DispatchInstruction(id=event.id, kind="delta", start=start, end=end, delta_kw=delta_kw, source="rest")
        minutes = int((end - start).total_seconds() // 60)
        progress = [
            DispatchProgress(
                instruction_id=event.id, ts=start + timedelta(minutes=m), requested_kw=baseline_kw + delta_kw,
                measured_kw=baseline_kw + delta_kw * (1 - math.exp(-m / 2.0)) * (0.98 + 0.02 * math.sin(m)),
            )
            for m in range(minutes + 1)
        ]  # fmt: skip
        delivered_kwh = sum(p.measured_kw - baseline_kw for p in progress[1:]) / 60.0
        state = DispatchState(
            instruction_id=event.id, status=DispatchStatus.COMPLETED, updated_at=end, received_at=start - timedelta(hours=1),
            baseline_kw=baseline_kw, requested_kw=baseline_kw + delta_kw, delivered_kw=progress[-1].measured_kw - baseline_kw,
            requested_kwh=abs(delta_kw) * minutes / 60.0, delivered_kwh=abs(delivered_kwh), message="window ended",
        )  # fmt: skip
        out.append((instruction, state, progress))
    return out


async def write_history(data_dir: Path, n_enterprises: int = 8, seed: int = 7, now: datetime | None = None) -> str:
    """Write the demo park and its previous month into ``data_dir/vpp.sqlite3``; returns the month."""
    spec = build_park(seed=seed, n_enterprises=n_enterprises)
    month = previous_month(now or datetime.now(UTC), spec.timezone)
    readings, telemetry, instructions = simulate(spec, month, seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "programme.toml").write_text(PROGRAMME_TOML)
    async with SqliteStore(data_dir / "vpp.sqlite3") as store:
        for enterprise in spec.enterprises:
            await store.put_enterprise(enterprise)
        for meter in spec.meters:
            await store.put_meter(meter)
        for device in spec.devices:
            await store.put_device(device)
        await store.append_meter_readings(readings)
        await store.append_telemetry(telemetry)
        for instruction, state, progress in instructions:
            await store.put_instruction(instruction, state)
            await store.append_dispatch_progress(progress)
    return month


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--enterprises", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(asyncio.run(write_history(args.data_dir, args.enterprises, args.seed)))


if __name__ == "__main__":
    main()
