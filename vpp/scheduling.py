"""Day-ahead battery schedule from the live fleet: the plan batteries follow between instructions.

Pure functions: devices, a :class:`~vpp.aggregator.FleetSnapshot` and a
tariff in, a :class:`~dispatch.schedule.ScheduleProblem` out (and set-points
back out of its :class:`~dispatch.schedule.Schedule`). The service solves it
(``PlantService.schedule_step``).

What the problem contains, and what it leaves out:

* batteries: every battery that is fresh and reports its SoC, with its
  capacity, SoC bounds, efficiencies, rating (both directions) and marginal
  cost as wear per kWh of throughput; the terminal SoC is the present SoC
  (the receding horizon never plans to end the day emptier than it starts);
* PV: uncontrolled generation (no curtailment), forecast per system as in
  ``vpp.envelope`` (clear sky scaled by the ratio it achieves now);
* base load: *persistence* of the present power of every other fresh device
  (interruptible and shiftable loads, EV chargers), held flat over the
  horizon, minus the PV forecast. The park's own site load (not a device)
  is not seen by the fleet and is left out;
* interruptible and shiftable loads are not scheduled: they stay with their
  own processes and are only moved by the grid's instructions;
* prices: the TOU import price of ``market.tariff.tou_price`` at each
  interval start, and a flat export price (:data:`DEFAULT_EXPORT_PRICE_CNY_PER_KWH`)
  below it; no grid import/export limit.

Protected hours are not modelled per interval (the battery model has one
rating per device): the service simply does not send a scheduled set-point to
a battery while it is protected.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from dispatch.schedule import BatteryFleet, Schedule, ScheduleProblem, Signals, SolveOptions, solve_schedule
from market.tariff import TouTariff, tou_price
from vpp.aggregator import FleetSnapshot
from vpp.envelope import pv_expected_kw
from vpp.model import PV, Battery, Device

__all__ = [
    "DEFAULT_EXPORT_PRICE_CNY_PER_KWH",
    "INTERVAL",
    "BatteryPlan",
    "plan_batteries",
    "battery_schedule_problem",
    "first_interval_setpoints",
    "horizon_start",
    "interval_setpoints",
    "scheduled_batteries",
]

INTERVAL: Final = timedelta(minutes=15)
"""Length of one schedule interval."""
DEFAULT_EXPORT_PRICE_CNY_PER_KWH: Final = 0.3
"""Price received for energy fed back to the grid [CNY/kWh]: illustrative (about a coal benchmark
feed-in price), below the flat and peak prices of the default tariff; capped at each interval's import
price (the default valley price is 0.26), since importing to export must never earn money."""


def horizon_start(now: datetime) -> datetime:
    """Start of the quarter hour containing ``now`` (the schedule's first interval)."""
    return now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)


def scheduled_batteries(devices: Sequence[Device], snapshot: FleetSnapshot) -> list[int]:
    """Snapshot indices of the batteries the schedule steers: fresh, with a reported SoC."""
    return [
        i for i, d in enumerate(devices)
        if isinstance(d, Battery) and snapshot.fresh[i] and np.isfinite(snapshot.soc_kwh[i])
    ]


def _battery_fleet(devices: Sequence[Device], snapshot: FleetSnapshot, idx: list[int]) -> BatteryFleet:
    """Batteries at ``idx``: SoC from telemetry clipped into its bounds [kWh], rating both ways [kW]."""
    bats = [devices[i] for i in idx]
    soc_min = np.array([b.soc_min_kwh for b in bats], dtype=float)
    soc_max = np.array([b.soc_upper_kwh for b in bats], dtype=float)
    soc0 = np.clip(snapshot.soc_kwh[idx], soc_min, soc_max)
    rated = np.array([b.rated_kw for b in bats], dtype=float)
    return BatteryFleet(
        capacity_kwh=np.array([b.capacity_kwh for b in bats], dtype=float),
        soc0_kwh=soc0,
        p_charge_max_kw=rated,
        p_discharge_max_kw=rated,
        soc_min_kwh=soc_min,
        soc_max_kwh=soc_max,
        eta_charge=np.array([b.charge_efficiency for b in bats], dtype=float),
        eta_discharge=np.array([b.discharge_efficiency for b in bats], dtype=float),
        cost_cny_per_kwh=np.array([b.marginal_cost_cny_per_kwh for b in bats], dtype=float),
    )


def _base_load_kw(
    devices: Sequence[Device], snapshot: FleetSnapshot, starts: list[datetime], latitude: float, longitude: float
) -> np.ndarray:
    """[T] uncontrolled consumption [kW]: present non-battery, non-PV fleet load held flat, minus PV forecast."""
    is_pv = np.array([isinstance(d, PV) for d in devices], dtype=bool)
    is_bat = np.array([isinstance(d, Battery) for d in devices], dtype=bool)
    others = snapshot.fresh & ~is_pv & ~is_bat
    held_kw = -float(snapshot.p_kw[others].sum())  # generator sign -> consumption
    mids = pd.DatetimeIndex([s + INTERVAL / 2 for s in starts])
    pv_kw = pv_expected_kw(devices, snapshot, mids, latitude, longitude) if len(devices) else np.zeros((len(starts), 0))
    pv_total = (pv_kw * (snapshot.fresh & is_pv)[None, :]).sum(axis=1) if len(devices) else np.zeros(len(starts))
    return held_kw - pv_total


def battery_schedule_problem(
    devices: Sequence[Device],
    snapshot: FleetSnapshot,
    start: datetime,
    tariff: TouTariff,
    local_zone: str | ZoneInfo = "Asia/Shanghai",
    latitude: float = 31.3,
    longitude: float = 120.6,
    intervals: int = 96,
    export_price_cny_per_kwh: float = DEFAULT_EXPORT_PRICE_CNY_PER_KWH,
) -> ScheduleProblem:
    """The least-cost battery schedule problem over ``intervals`` quarter hours from ``start``.

    Parameters
    ----------
    devices : the enrolled devices, in ``snapshot`` order.
    snapshot : the fleet now (SoC, freshness, present power).
    start : first interval's start, timezone-aware (see :func:`horizon_start`).
    tariff : TOU tariff giving the import price per interval [CNY/kWh].
    local_zone : the park's zone, which the tariff's hours follow.
    latitude, longitude : site for the PV forecast [deg north, deg east].
    intervals : horizon length [quarter hours].
    export_price_cny_per_kwh : flat feed-in price [CNY/kWh]; capped at each interval's import price.

    Returns
    -------
    The problem; its battery columns are the devices of :func:`scheduled_batteries`, in that order.
    """
    starts = [start + k * INTERVAL for k in range(intervals)]
    starts_utc = np.array([s.timestamp() for s in starts], dtype="float64").astype("int64").astype("datetime64[s]")
    zone = local_zone.key if isinstance(local_zone, ZoneInfo) else local_zone
    import_price = tou_price(tariff, starts_utc, zone)
    export_price = np.minimum(export_price_cny_per_kwh, import_price)
    idx = scheduled_batteries(devices, snapshot)
    return ScheduleProblem(
        base_load_kw=_base_load_kw(devices, snapshot, starts, latitude, longitude),
        signals=Signals(import_price_cny_per_kwh=import_price, export_price_cny_per_kwh=export_price),
        batteries=_battery_fleet(devices, snapshot, idx),
        dt_h=INTERVAL.total_seconds() / 3600.0,
    )


def interval_setpoints(schedule: Schedule, device_ids: Sequence[str], interval: int) -> dict[str, float]:
    """Battery power to hold in ``interval``, by device id [kW, + discharging into the park].

    ``device_ids`` are the problem's battery columns in order (ids of :func:`scheduled_batteries`).
    Empty when the schedule has no solution or the interval is past its horizon.
    """
    if not schedule.has_solution or not 0 <= interval < schedule.battery_charge_kw.shape[0]:
        return {}
    row = schedule.battery_kw[interval]
    return {device_id: round(float(p), 3) for device_id, p in zip(device_ids, row)}


def first_interval_setpoints(schedule: Schedule, device_ids: Sequence[str]) -> dict[str, float]:
    """Battery power for the schedule's first interval, by device id [kW]; see :func:`interval_setpoints`."""
    return interval_setpoints(schedule, device_ids, 0)


@dataclass(frozen=True, eq=False)
class BatteryPlan:
    """A solved battery schedule as the service follows it: power per interval and battery."""

    solved_at: datetime
    start: datetime
    """Start of the first interval."""
    device_ids: tuple[str, ...]
    battery_kw: np.ndarray
    """[T, n] power to hold, + discharging into the park [kW]; empty rows without a solution."""
    soc_kwh: np.ndarray
    """[T+1, n] planned state of charge at each interval boundary [kWh]."""
    status: str
    objective_cny: float
    """Planned cost of the horizon [CNY]."""
    solve_time_s: float
    """Wall-clock time to build and solve [s]."""

    @property
    def has_solution(self) -> bool:
        return self.battery_kw.shape[0] > 0

    def interval_at(self, when: datetime) -> int:
        """Index of the interval containing ``when`` (may be outside ``[0, T)``)."""
        return int((when - self.start) // INTERVAL)

    def setpoints_at(self, when: datetime) -> dict[str, float]:
        """Battery power to hold at ``when`` by device id [kW]; empty outside the horizon or without a solution."""
        k = self.interval_at(when)
        if not self.has_solution or not 0 <= k < self.battery_kw.shape[0]:
            return {}
        return {d: round(float(p), 3) for d, p in zip(self.device_ids, self.battery_kw[k])}


def plan_batteries(
    devices: Sequence[Device],
    snapshot: FleetSnapshot,
    tariff: TouTariff,
    local_zone: str | ZoneInfo = "Asia/Shanghai",
    latitude: float = 31.3,
    longitude: float = 120.6,
    intervals: int = 96,
    export_price_cny_per_kwh: float = DEFAULT_EXPORT_PRICE_CNY_PER_KWH,
    options: SolveOptions | None = None,
) -> BatteryPlan:
    """Build and solve the battery schedule from the quarter hour containing ``snapshot.ts`` (CPU-bound).

    A solve without a solution gives a plan with no rows (``has_solution`` False) and HiGHS's status.
    """
    started = time.perf_counter()
    start = horizon_start(snapshot.ts)
    problem = battery_schedule_problem(
        devices, snapshot, start, tariff, local_zone, latitude, longitude, intervals, export_price_cny_per_kwh
    )
    ids = tuple(devices[i].id for i in scheduled_batteries(devices, snapshot))
    schedule = solve_schedule(problem, options)
    n = len(ids)
    solved = schedule.has_solution
    return BatteryPlan(
        solved_at=snapshot.ts,
        start=start,
        device_ids=ids,
        battery_kw=schedule.battery_kw if solved else np.zeros((0, n)),
        soc_kwh=schedule.battery_soc_kwh if solved else np.zeros((0, n)),
        status=schedule.status,
        objective_cny=float(schedule.objective_cny),
        solve_time_s=time.perf_counter() - started,
    )
