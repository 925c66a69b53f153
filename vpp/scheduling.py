"""The fleet schedule between instructions: the live fleet turned into a horizon problem and back.

Pure functions: devices, a :class:`~vpp.aggregator.FleetSnapshot`, what the
service measured (:class:`ScheduleInputs`) and a tariff in, a
:class:`~dispatch.schedule.ScheduleProblem` with its :class:`Columns` out,
and set-points back out of the solved :class:`~dispatch.schedule.Schedule`.
The service solves it (``PlantService.schedule_step``), re-using one
:class:`~dispatch.schedule.HorizonScheduler` while the fleet keeps its shape.

What the problem contains (only fresh devices, of the kinds in ``kinds``):

* batteries with a reported SoC: capacity, SoC bounds, efficiencies, rating
  both ways, wear cost = marginal cost per kWh of throughput; the terminal
  SoC is the present SoC (the receding horizon never plans to end the day
  emptier than it starts);
* PV: forecast per system (clear sky scaled by the ratio it achieves now, as
  ``vpp.envelope``), curtailable at its marginal cost; a set-point goes out
  only in intervals where the schedule curtails it;
* shiftable loads: today's remaining energy (``energy_per_day_kwh`` minus
  what telemetry shows it took since local midnight, ``ScheduleInputs``) in
  what is left of today's window, and the share of tomorrow's energy whose
  window falls inside the horizon; two columns of one device, never both
  non-zero in one interval;
* interruptible loads: natural load = what it would draw uncurtailed now
  (``-p_min_kw``) held flat; curtailable by ``max_curtail_kw`` at its
  marginal (comfort) cost, within its longest interruption and events per
  day (events already used today come from the service), with
  ``rebound_fraction`` of the curtailed energy returning over the next hour.
  A protected hour carries its natural load in the base load instead, so it
  cannot be curtailed there. A set-point goes out only while curtailed;
* not scheduled: EV chargers (their sessions' energy and departure are not
  reported) and every device of a kind left out of ``kinds``: their present
  power persists in the base load.

Base load: the load the fleet does not control, measured from the grid
meters (``ScheduleInputs.uncontrolled_kw``) and held flat, plus the
unscheduled devices. Without that measurement only the fleet is seen and the
grid import/export limits are not applied (they would be meaningless).

Prices: TOU import price of ``market.tariff.tou_price`` at each interval
start; a flat export price (:data:`DEFAULT_EXPORT_PRICE_CNY_PER_KWH`) capped
at the import price; the spot / day-ahead prices pushed to the service
(``POST /api/v1/market/prices``, latest per interval) settling the net
position on top; a grid emission factor with a carbon price (one factor for
the horizon, from the settings).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from dispatch.schedule import (
    BatteryFleet,
    HorizonScheduler,
    InterruptibleFleet,
    PvFleet,
    Schedule,
    ScheduleProblem,
    ShiftableFleet,
    Signals,
    SolveOptions,
)
from market.tariff import TouTariff, tou_price
from vpp.aggregator import FleetSnapshot
from vpp.envelope import pv_expected_kw
from vpp.model import PV, Battery, Device, InterruptibleLoad, ShiftableLoad

__all__ = [
    "BlockOffer",
    "DEFAULT_EXPORT_PRICE_CNY_PER_KWH",
    "DEFAULT_KINDS",
    "INTERVAL",
    "Columns",
    "FleetPlan",
    "ScheduleInputs",
    "energy_taken_kwh",
    "fleet_schedule_problem",
    "block_offer",
    "horizon_start",
    "plan_fleet",
    "plan_setpoints",
]

INTERVAL: Final = timedelta(minutes=15)
"""Length of one schedule interval."""
DEFAULT_EXPORT_PRICE_CNY_PER_KWH: Final = 0.3
"""Price received for energy fed back to the grid [CNY/kWh]: illustrative (about a coal benchmark
feed-in price), below the flat and peak prices of the default tariff; capped at each interval's import
price (the default valley price is 0.26), since importing to export must never earn money."""
DEFAULT_KINDS: Final = ("battery", "pv", "shiftable_load", "interruptible_load")
"""Device kinds the schedule steers by default (EV chargers report no session data to plan with)."""
CURTAILED_KW: Final = 0.5
"""PV output or load reduction below this is "not curtailed": no set-point is sent [kW]."""


def horizon_start(now: datetime) -> datetime:
    """Start of the quarter hour containing ``now`` (the schedule's first interval)."""
    return now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)


@dataclass(frozen=True)
class ScheduleInputs:
    """What the service measured for the schedule beyond the snapshot."""

    energy_today_kwh: Mapping[str, float] = field(default_factory=dict)
    """Per shiftable load, energy taken since local midnight [kWh]."""
    events_today: Mapping[str, int] = field(default_factory=dict)
    """Per interruptible load, interruptions it already had this local day [unitless]."""
    uncontrolled_kw: float | None = None
    """Park load outside the fleet, from the grid meters [kW, + consumed]; None = not measured."""
    import_limit_kw: float | None = None
    """Park grid connection, most drawn [kW]; None = none."""
    export_limit_kw: float | None = None
    """Most fed back [kW]; None = none."""
    market_price_cny_per_mwh: Mapping[int, float] = field(default_factory=dict)
    """Spot / day-ahead price by interval start (epoch seconds) [CNY/MWh]; intervals without one get 0."""


@dataclass(frozen=True)
class Columns:
    """Which device each column of each fleet block is (snapshot indices)."""

    battery: tuple[int, ...] = ()
    pv: tuple[int, ...] = ()
    shiftable: tuple[int, ...] = ()
    """One entry per shiftable column (a device has a column for today and one for tomorrow)."""
    interruptible: tuple[int, ...] = ()


def energy_taken_kwh(ts_s: np.ndarray, p_kw: np.ndarray) -> float:
    """Energy a load drew over the samples, trapezoidal [kWh] (``p_kw`` in generator sign, so − = drawn).

    ``ts_s`` are the sample times [s], ascending.
    """
    if ts_s.size < 2:
        return 0.0
    drawn_kw = np.maximum(-np.asarray(p_kw, dtype=float), 0.0)
    return float(np.sum(np.diff(ts_s) * (drawn_kw[1:] + drawn_kw[:-1]) / 2.0) / 3600.0)


def _pick(devices: Sequence[Device], snapshot: FleetSnapshot, kind: type, kinds: Sequence[str]) -> list[int]:
    return [i for i, d in enumerate(devices) if isinstance(d, kind) and str(d.kind) in kinds and snapshot.fresh[i]]


def _battery_fleet(devices: Sequence[Device], snapshot: FleetSnapshot, idx: list[int]) -> BatteryFleet:
    """Batteries at ``idx``: SoC from telemetry clipped into its bounds [kWh], rating both ways [kW]."""
    bats = [devices[i] for i in idx]
    soc_min = np.array([b.soc_min_kwh for b in bats], dtype=float)
    soc_max = np.array([b.soc_upper_kwh for b in bats], dtype=float)
    rated = np.array([b.rated_kw for b in bats], dtype=float)
    return BatteryFleet(
        capacity_kwh=np.array([b.capacity_kwh for b in bats], dtype=float),
        soc0_kwh=np.clip(snapshot.soc_kwh[idx], soc_min, soc_max),
        p_charge_max_kw=rated,
        p_discharge_max_kw=rated,
        soc_min_kwh=soc_min,
        soc_max_kwh=soc_max,
        eta_charge=np.array([b.charge_efficiency for b in bats], dtype=float),
        eta_discharge=np.array([b.discharge_efficiency for b in bats], dtype=float),
        cost_cny_per_kwh=np.array([b.marginal_cost_cny_per_kwh for b in bats], dtype=float),
    )


def _shiftable_fleet(
    devices: Sequence[Device], idx: list[int], local_starts: pd.DatetimeIndex, energy_today: Mapping[str, float]
) -> tuple[ShiftableFleet, tuple[int, ...]]:
    """Today's remainder and tomorrow's in-horizon share of each shiftable load, one column each."""
    T = len(local_starts)
    day = (local_starts.normalize() - local_starts[0].normalize()).days.to_numpy()
    hour = local_starts.hour.to_numpy()
    rated, energy, windows, owners = [], [], [], []
    for i in idx:
        load: ShiftableLoad = devices[i]  # type: ignore[assignment]
        in_window = (hour >= load.window_start_hour) & (hour < load.window_end_hour)
        per_day_intervals = (load.window_end_hour - load.window_start_hour) * 4
        for d in (0, 1):
            window = in_window & (day == d)
            if d == 0:
                wanted = max(load.energy_per_day_kwh - energy_today.get(load.id, 0.0), 0.0)
            else:
                wanted = load.energy_per_day_kwh * window.sum() / per_day_intervals
            # Never more than it can take in the intervals left: an estimate off by a little must not make the
            # whole schedule infeasible.
            reachable = load.rated_kw * 0.25 * window.sum()
            rated.append(load.rated_kw)
            energy.append(min(wanted, reachable))
            windows.append(window)
            owners.append(i)
    window_matrix = np.array(windows, dtype=bool).T if windows else np.zeros((T, 0), dtype=bool)
    return ShiftableFleet(np.array(rated, float), np.array(energy, float), window_matrix), tuple(owners)


def _interruptible_fleet(
    devices: Sequence[Device],
    snapshot: FleetSnapshot,
    idx: list[int],
    local_hours: np.ndarray,
    events_today: Mapping[str, int],
    rebound_fraction: float,
) -> tuple[InterruptibleFleet, np.ndarray]:
    """The loads at ``idx`` and, per interval, the natural load of those protected then [kW]."""
    T = local_hours.size
    loads: list[InterruptibleLoad] = [devices[i] for i in idx]  # type: ignore[misc]
    natural_now = np.maximum(-snapshot.p_min_kw[idx], 0.0)
    natural = np.tile(natural_now, (T, 1))
    protected = np.array([[d.is_protected(int(h)) for d in loads] for h in local_hours], dtype=bool).reshape(T, len(loads))
    protected_load = (natural * protected).sum(axis=1)
    natural[protected] = 0.0
    fleet = InterruptibleFleet(
        natural_load_kw=natural,
        max_curtail_kw=np.array([d.max_curtail_kw for d in loads], dtype=float),
        max_interruption_intervals=np.array(
            [np.floor(d.max_interruption_min / 15.0) if d.max_interruption_min else np.inf for d in loads], dtype=float
        ),
        max_events_per_day=np.array(
            [d.max_events_per_day if d.max_events_per_day is not None else np.inf for d in loads], dtype=float
        ),
        rebound_fraction=rebound_fraction,
        comfort_cost_cny_per_kwh=np.array([d.marginal_cost_cny_per_kwh for d in loads], dtype=float),
        events_used=np.array(
            [min(events_today.get(d.id, 0), d.max_events_per_day or 10**6) for d in loads], dtype=float
        ),
    )
    return fleet, protected_load


def fleet_schedule_problem(
    devices: Sequence[Device],
    snapshot: FleetSnapshot,
    start: datetime,
    tariff: TouTariff,
    inputs: ScheduleInputs | None = None,
    local_zone: str | ZoneInfo = "Asia/Shanghai",
    latitude: float = 31.3,
    longitude: float = 120.6,
    intervals: int = 96,
    export_price_cny_per_kwh: float = DEFAULT_EXPORT_PRICE_CNY_PER_KWH,
    kinds: Sequence[str] = DEFAULT_KINDS,
    rebound_fraction: float = 0.3,
    emission_factor_kg_per_kwh: float = 0.0,
    carbon_price_cny_per_t: float = 0.0,
) -> tuple[ScheduleProblem, Columns]:
    """The least-cost fleet schedule over ``intervals`` quarter hours from ``start``.

    Parameters
    ----------
    devices : the enrolled devices, in ``snapshot`` order.
    snapshot : the fleet now (power, range, SoC, freshness).
    start : first interval's start, timezone-aware (see :func:`horizon_start`).
    tariff : TOU tariff giving the import price per interval [CNY/kWh].
    inputs : measured energy, events and uncontrolled load; None = nothing measured.
    local_zone : the park's zone, which tariff hours, windows and protected hours follow.
    latitude, longitude : site for the PV forecast [deg north, deg east].
    intervals : horizon length [quarter hours].
    export_price_cny_per_kwh : flat feed-in price [CNY/kWh]; capped at each interval's import price.
    kinds : device kinds the schedule steers.
    rebound_fraction : share of curtailed energy an interruptible load takes back afterwards [unitless].
    emission_factor_kg_per_kwh : grid emission factor [kgCO2/kWh]; with ``carbon_price_cny_per_t`` [CNY/t].

    Returns
    -------
    The problem and its :class:`Columns`.
    """
    inputs = inputs or ScheduleInputs()
    zone = local_zone if isinstance(local_zone, ZoneInfo) else ZoneInfo(local_zone)
    starts = [start + k * INTERVAL for k in range(intervals)]
    starts_utc = np.array([s.timestamp() for s in starts], dtype="float64").astype("int64").astype("datetime64[s]")
    import_price = tou_price(tariff, starts_utc, zone.key)
    local_starts = pd.DatetimeIndex(starts).tz_convert(zone)
    local_hours = local_starts.hour.to_numpy()

    columns = Columns(
        battery=tuple(i for i in _pick(devices, snapshot, Battery, kinds) if np.isfinite(snapshot.soc_kwh[i])),
        pv=tuple(_pick(devices, snapshot, PV, kinds)),
        interruptible=tuple(_pick(devices, snapshot, InterruptibleLoad, kinds)),
    )
    shiftable, owners = _shiftable_fleet(devices, _pick(devices, snapshot, ShiftableLoad, kinds), local_starts,
                                         inputs.energy_today_kwh)
    columns = Columns(columns.battery, columns.pv, owners, columns.interruptible)
    interruptible, protected_load_kw = _interruptible_fleet(
        devices, snapshot, list(columns.interruptible), local_hours, inputs.events_today, rebound_fraction
    )
    mids = pd.DatetimeIndex([s + INTERVAL / 2 for s in starts])
    pv_all = pv_expected_kw(devices, snapshot, mids, latitude, longitude) if len(devices) else np.zeros((intervals, 0))

    scheduled = np.zeros(len(devices), dtype=bool)
    for block in (columns.battery, columns.pv, columns.shiftable, columns.interruptible):
        scheduled[list(block)] = True
    is_pv = np.array([isinstance(d, PV) for d in devices], dtype=bool)
    others = snapshot.fresh & ~scheduled
    held_kw = -float(snapshot.p_kw[others & ~is_pv].sum())  # generator sign -> consumption, held flat
    unscheduled_pv_kw = (pv_all * (others & is_pv)[None, :]).sum(axis=1) if len(devices) else np.zeros(intervals)
    base = held_kw - unscheduled_pv_kw + protected_load_kw
    limited = inputs.uncontrolled_kw is not None
    if limited:
        base = base + float(inputs.uncontrolled_kw)
    problem = ScheduleProblem(
        base_load_kw=base,
        signals=Signals(
            import_price_cny_per_kwh=import_price,
            export_price_cny_per_kwh=np.minimum(export_price_cny_per_kwh, import_price),
            market_price_cny_per_mwh=np.array(
                [inputs.market_price_cny_per_mwh.get(int(s.timestamp()), 0.0) for s in starts], dtype=float
            ),
            emission_factor_kg_per_kwh=emission_factor_kg_per_kwh,
            carbon_price_cny_per_t=carbon_price_cny_per_t,
        ),
        batteries=_battery_fleet(devices, snapshot, list(columns.battery)),
        pv=PvFleet(
            pv_all[:, list(columns.pv)],
            np.array([devices[i].marginal_cost_cny_per_kwh for i in columns.pv], dtype=float),
        ),
        shiftable=shiftable,
        interruptible=interruptible,
        dt_h=INTERVAL.total_seconds() / 3600.0,
        import_limit_kw=inputs.import_limit_kw if limited and inputs.import_limit_kw is not None else np.inf,
        export_limit_kw=inputs.export_limit_kw if limited and inputs.export_limit_kw is not None else np.inf,
    )
    return problem, columns


def plan_setpoints(schedule: Schedule, problem: ScheduleProblem, columns: Columns, n_devices: int) -> np.ndarray:
    """[T, n_devices] power to hold per interval and device [kW]; NaN = no set-point (release or not scheduled).

    Batteries and shiftable loads always hold their planned power; PV only
    where curtailed (the cap is its planned output); interruptible loads only
    while curtailed (natural load minus curtailment, plus rebound).
    """
    T = problem.intervals
    power = np.full((T, n_devices), np.nan)
    if not schedule.has_solution:
        return power
    if columns.battery:
        power[:, list(columns.battery)] = schedule.battery_kw
    if columns.pv:
        curtailed = problem.pv.potential_kw - schedule.pv_kw > CURTAILED_KW
        power[:, list(columns.pv)] = np.where(curtailed, schedule.pv_kw, np.nan)
    if columns.shiftable:
        summed = np.zeros((T, n_devices))
        np.add.at(summed, (slice(None), np.array(columns.shiftable)), schedule.shiftable_kw)
        owners = sorted(set(columns.shiftable))
        power[:, owners] = summed[:, owners]
    if columns.interruptible:
        curtailed = schedule.curtailment_kw > CURTAILED_KW
        power[:, list(columns.interruptible)] = np.where(curtailed, schedule.interruptible_kw, np.nan)
    return power


@dataclass(frozen=True, eq=False)
class FleetPlan:
    """A solved fleet schedule as the service follows it: power per interval and device."""

    solved_at: datetime
    start: datetime
    """Start of the first interval."""
    device_ids: tuple[str, ...]
    """Every device of the snapshot, in its order (columns of ``power_kw``)."""
    power_kw: np.ndarray
    """[T, n] power to hold, + into the park [kW]; NaN where the device gets no set-point."""
    status: str
    objective_cny: float
    """Planned cost of the horizon [CNY]."""
    solve_time_s: float
    """Wall-clock time to build (or update) and solve [s]."""
    reused_model: bool
    """True when the previous HiGHS model was updated in place rather than built anew."""
    grid_limited: bool
    """True when the connection's import/export limits were in the problem."""
    scheduled: dict[str, int] = field(default_factory=dict)
    """Devices steered, by kind."""

    @property
    def has_solution(self) -> bool:
        return self.power_kw.shape[0] > 0

    def interval_at(self, when: datetime) -> int:
        """Index of the interval containing ``when`` (may be outside ``[0, T)``)."""
        return int((when - self.start) // INTERVAL)

    def setpoints_at(self, when: datetime) -> dict[str, float]:
        """Power to hold at ``when`` by device id [kW]; devices without a set-point are absent."""
        k = self.interval_at(when)
        if not self.has_solution or not 0 <= k < self.power_kw.shape[0]:
            return {}
        row = self.power_kw[k]
        return {d: round(float(p), 3) for d, p in zip(self.device_ids, row) if np.isfinite(p)}


def plan_fleet(
    devices: Sequence[Device],
    snapshot: FleetSnapshot,
    tariff: TouTariff,
    inputs: ScheduleInputs | None = None,
    scheduler: HorizonScheduler | None = None,
    previous_start: datetime | None = None,
    options: SolveOptions | None = None,
    **problem_options,
) -> tuple[FleetPlan, HorizonScheduler | None]:
    """Build and solve the fleet schedule from the quarter hour containing ``snapshot.ts`` (CPU-bound).

    ``scheduler`` (with the ``previous_start`` of its last horizon) is updated
    in place when the new problem has the same shape, else a new one is
    built; the scheduler to keep is returned beside the plan. When the grid
    limits make the problem infeasible (uncontrolled load beyond what the
    fleet can offset), it is solved again without them. ``problem_options``
    go to :func:`fleet_schedule_problem`.
    """
    started = time.perf_counter()
    start = horizon_start(snapshot.ts)
    problem, columns = fleet_schedule_problem(devices, snapshot, start, tariff, inputs, **problem_options)
    schedule, scheduler, reused = _solve(problem, scheduler, previous_start, start, options)
    grid_limited = bool(np.isfinite(problem.import_limit_kw) or np.isfinite(problem.export_limit_kw))
    if not schedule.has_solution and grid_limited:
        relaxed = replace(problem, import_limit_kw=np.inf, export_limit_kw=np.inf)
        schedule, scheduler, reused = _solve(relaxed, None, None, start, options)
        problem, grid_limited = relaxed, False
    power = plan_setpoints(schedule, problem, columns, len(devices))
    kinds: dict[str, int] = {}
    for i in sorted(set(columns.battery + columns.pv + columns.shiftable + columns.interruptible)):
        kinds[str(devices[i].kind)] = kinds.get(str(devices[i].kind), 0) + 1
    plan = FleetPlan(
        solved_at=snapshot.ts,
        start=start,
        device_ids=tuple(d.id for d in devices),
        power_kw=power if schedule.has_solution else np.zeros((0, len(devices))),
        status=schedule.status,
        objective_cny=float(schedule.objective_cny),
        solve_time_s=time.perf_counter() - started,
        reused_model=reused,
        grid_limited=grid_limited,
        scheduled=kinds,
    )
    return plan, scheduler if schedule.has_solution else None


def _solve(
    problem: ScheduleProblem,
    scheduler: HorizonScheduler | None,
    previous_start: datetime | None,
    start: datetime,
    options: SolveOptions | None,
) -> tuple[Schedule, HorizonScheduler, bool]:
    """Re-solve in the kept model when its shape fits, else build one: ``(schedule, scheduler, reused)``."""
    if scheduler is not None and previous_start is not None:
        shift = int((start - previous_start) // INTERVAL)
        try:
            return scheduler.step(problem, shift=max(shift, 0)), scheduler, True
        except ValueError:
            pass  # the fleet changed shape: build anew
    scheduler = HorizonScheduler(problem, options)
    return scheduler.solve(), scheduler, False


@dataclass(frozen=True)
class BlockOffer:
    """The most power the fleet can hold, equal in every quarter hour of a window, from its schedule."""

    direction: str
    """"up": raise fleet power (reduce park load); "down": lower it."""
    start: datetime
    """First quarter hour covered."""
    end: datetime
    """End of the last quarter hour covered."""
    offered_kw: float
    """Power held in every interval of the window, on top of the cost-optimal schedule [kW]."""
    extra_cost_cny: float
    """What delivering it costs above the cost-optimal schedule [CNY]."""
    status: str


def block_offer(
    scheduler: HorizonScheduler, horizon_start_at: datetime, start: datetime, end: datetime, direction: str
) -> BlockOffer:
    """Flexibility mode of the schedule: the block the fleet can offer from ``start`` to ``end`` (CPU-bound).

    The quarter hours of the scheduler's horizon (first one starting at
    ``horizon_start_at``) that overlap ``[start, end)`` must hold the same
    power ``f`` above (``up``) or below (``down``) the cost-optimal net grid
    exchange; ``f`` is maximised within every schedule constraint, then the
    cost of delivering it minimised (``dispatch.schedule.maximise_flexibility``).
    Raises ValueError naming ``start``, ``end`` or ``direction``.
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction: '{direction}' is not 'up' or 'down'")
    if end <= start:
        raise ValueError(f"end: {end.isoformat()} is not after start {start.isoformat()}")
    T = scheduler.problem.intervals
    starts = np.array([(horizon_start_at + k * INTERVAL).timestamp() for k in range(T)])
    mask = (starts < end.timestamp()) & (starts + INTERVAL.total_seconds() > start.timestamp())
    horizon_end = horizon_start_at + T * INTERVAL
    if not mask.any() or start < horizon_start_at or end > horizon_end:
        raise ValueError(
            f"start: the window {start.isoformat()} to {end.isoformat()} must lie within the schedule's horizon "
            f"{horizon_start_at.isoformat()} to {horizon_end.isoformat()}"
        )
    offer = scheduler.maximise_flexibility(mask, direction, shape="block")  # type: ignore[arg-type]
    chosen = np.flatnonzero(mask)
    return BlockOffer(
        direction=direction,
        start=horizon_start_at + int(chosen[0]) * INTERVAL,
        end=horizon_start_at + (int(chosen[-1]) + 1) * INTERVAL,
        offered_kw=round(float(offer.offered_kw[chosen].min()), 3),
        extra_cost_cny=round(float(offer.extra_cost_cny), 2),
        status=offer.status,
    )
