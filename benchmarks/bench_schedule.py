"""Benchmark of the 96 x 15-min horizon schedule (``dispatch.schedule``) at 100 and 1,000 devices.

Run from the repository root:

    .venv/bin/python benchmarks/bench_schedule.py            # 100 and 1,000 devices
    .venv/bin/python benchmarks/bench_schedule.py --quick    # 100 devices, short reference runs

Fleets are seeded and mixed like a park: 30 % batteries, 30 % PV, 20 %
shiftable loads, 20 % interruptible loads, every interruptible device with a
longest-interruption (1-2 h) and events-per-day (1-2) limit, so the problem is
a MILP. Signals: a three-level TOU tariff on top of a spot price, a carbon
price on the grid's emission factor, an import limit at the park's peak
uncontrolled load.

Table 1, day-ahead solve, for the park above ("park") and for a "tight" variant:
grid connection at 90 % of the peak and every interruption curtailing at
least half its maximum, which makes the LP relaxation fractional so the
integer repair (``dispatch.schedule`` docstring) has real work. ``build`` is
building the sparse matrix and handing it to HiGHS; ``solve`` is the solve
(relaxation, repair of breaking devices); ``cpu`` is the process CPU time of build + solve (the machine is shared:
wall time above cpu time is waiting). The reference is the same model solved
as a plain HiGHS MILP with every limited device integer and mip_rel_gap 1e-6:
without a time limit at 100 devices; at 1,000 devices with a time limit
(``--reference-limit``, default 60 s) and, beside it, the LP relaxation
bound, which is a proven lower bound. ``gap`` is (objective - reference) /
|reference|; ``ratio`` is reference time / our total time.

Table 2, receding horizon: the park rolls on one interval at a time
(forecasts and prices shift, batteries start from the SoC the last plan
reached, PV forecasts get noise). ``re-solve`` is ``HorizonScheduler.step``
(costs and bounds changed in place, basis shifted by one interval);
``rebuild`` is a fresh ``solve_schedule`` on the same data. ``ratio`` is
rebuild / re-solve; ``max rel diff`` compares their objectives.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import numpy as np

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
    solve_schedule,
)

BUDGET_S = 5.0
"""Day-ahead schedule budget at 1,000 devices (DESIGN.md)."""


def park(devices: int, seed: int = 0, intervals: int = 96, dt_h: float = 0.25) -> ScheduleProblem:
    """A seeded park of ``devices`` devices: 30 % batteries, 30 % PV, 20 % shiftable, 20 % interruptible."""
    rng = np.random.default_rng(seed)
    nb, npv, ns = int(0.3 * devices), int(0.3 * devices), int(0.2 * devices)
    ni = devices - nb - npv - ns
    hour = np.arange(intervals) * dt_h
    peak = ((hour >= 8) & (hour < 11)) | ((hour >= 17) & (hour < 22))
    network = np.where(hour < 8, 0.12, np.where(peak, 0.55, 0.30))  # TOU part on top of the spot price [CNY/kWh]
    spot = 380 + 140 * np.sin(2 * np.pi * (hour - 11) / 24) + rng.normal(0, 25, intervals)  # [CNY/MWh]
    emission = 0.58 + 0.08 * np.cos(2 * np.pi * (hour - 13) / 24)  # [kgCO2/kWh]
    signals = Signals(network, np.full(intervals, -0.02), spot, emission, carbon_price_cny_per_t=80.0)

    capacity = rng.choice([100.0, 215.0, 500.0, 1000.0, 2000.0], nb)
    batteries = BatteryFleet(
        capacity, capacity * rng.uniform(0.3, 0.7, nb), capacity * 0.5, capacity * 0.5,
        soc_min_kwh=capacity * 0.1, soc_max_kwh=capacity * 0.95,
        eta_charge=rng.uniform(0.93, 0.97, nb), eta_discharge=rng.uniform(0.93, 0.97, nb),
        soc_terminal_min_kwh=capacity * 0.5, cost_cny_per_kwh=rng.uniform(0.03, 0.08, nb))
    sun = np.clip(np.sin(np.pi * (hour - 6) / 13), 0, None)
    kwp = rng.uniform(50, 1000, npv)
    pv = PvFleet(sun[:, None] * kwp * rng.uniform(0.7, 1.0, (intervals, npv)), rng.choice([0.0, 0.05], npv))
    rated = rng.uniform(50, 500, ns)
    first = rng.integers(0, 60, ns)
    t = np.arange(intervals)[:, None]
    window = (t >= first) & (t < np.minimum(first + rng.integers(24, 48, ns), intervals))
    shiftable = ShiftableFleet(rated, rated * window.sum(0) * dt_h * rng.uniform(0.3, 0.7, ns), window)
    typical = rng.uniform(200, 2000, ni)
    day_shape = 0.6 + 0.4 * ((hour >= 7) & (hour < 21))
    natural = day_shape[:, None] * typical * rng.uniform(0.9, 1.1, (intervals, ni))
    interruptible = InterruptibleFleet(
        natural, typical * rng.uniform(0.2, 0.5, ni),
        max_interruption_intervals=rng.integers(4, 9, ni), max_events_per_day=rng.integers(1, 3, ni),
        rebound_fraction=rng.uniform(0.3, 0.8, ni), comfort_cost_cny_per_kwh=rng.uniform(0.1, 0.6, ni))
    base = 0.3 * typical.sum() * day_shape
    uncontrolled = base + natural.sum(1) + shiftable.energy_kwh.sum() / (intervals * dt_h)
    return ScheduleProblem(base, signals, batteries, pv, shiftable, interruptible, dt_h=dt_h,
                           import_limit_kw=float(uncontrolled.max()), export_limit_kw=float(0.2 * kwp.sum()))


def tight(problem: ScheduleProblem) -> ScheduleProblem:
    """The same park with the grid connection at 90 % of the peak and interruptions of at least half
    the allowed curtailment (semi-continuous): the relaxation is far from integral, the repair works."""
    fleet = problem.interruptible
    return replace(problem, import_limit_kw=0.9 * problem.import_limit_kw,
                   interruptible=replace(fleet, min_curtail_kw=0.5 * fleet.max_curtail_kw))


def roll(problem: ScheduleProblem, schedule: Schedule, rng: np.random.Generator) -> ScheduleProblem:
    """The next interval's problem: everything one interval later (the day wraps), SoC from the plan."""
    def r(a: np.ndarray) -> np.ndarray:
        return np.roll(a, -1, axis=0)

    s = problem.signals
    signals = replace(s, import_price_cny_per_kwh=r(s.import_price_cny_per_kwh),
                      export_price_cny_per_kwh=r(s.export_price_cny_per_kwh),
                      market_price_cny_per_mwh=r(s.market_price_cny_per_mwh),
                      emission_factor_kg_per_kwh=r(s.emission_factor_kg_per_kwh))
    b = problem.batteries
    batteries = replace(b, soc0_kwh=np.clip(schedule.battery_soc_kwh[1], b.soc_min_kwh, b.soc_max_kwh))
    potential = r(problem.pv.potential_kw) * rng.uniform(0.95, 1.05, problem.pv.potential_kw.shape)
    return replace(problem, base_load_kw=r(problem.base_load_kw), signals=signals, batteries=batteries,
                   pv=replace(problem.pv, potential_kw=potential),
                   shiftable=replace(problem.shiftable, window=r(problem.shiftable.window)),
                   interruptible=replace(problem.interruptible,
                                         natural_load_kw=r(problem.interruptible.natural_load_kw)))


@dataclass
class Row:
    case: str
    devices: int
    build_s: float
    solve_s: float
    cpu_s: float
    objective: float
    status: str
    integer_devices: int
    reference: str
    reference_objective: float
    reference_s: float

    @property
    def total_s(self) -> float:
        return self.build_s + self.solve_s

    @property
    def gap(self) -> float:
        return (self.objective - self.reference_objective) / abs(self.reference_objective)


def day_ahead(devices: int, variant: str, reference_limit_s: float | None) -> list[Row]:
    problem = park(devices) if variant == "park" else tight(park(devices))
    cpu = time.process_time()
    scheduler = HorizonScheduler(problem)
    schedule = scheduler.solve()
    cpu = time.process_time() - cpu
    ours = {"case": variant, "devices": devices, "build_s": scheduler.build_time_s,
            "solve_s": schedule.solve_time_s, "cpu_s": cpu, "objective": schedule.objective_cny,
            "status": schedule.status, "integer_devices": schedule.integer_devices}
    started = time.perf_counter()
    exact = solve_schedule(problem, SolveOptions(integers="full", mip_rel_gap=1e-6, time_limit_s=reference_limit_s))
    exact_s = time.perf_counter() - started
    limit = "no limit" if reference_limit_s is None else f"{reference_limit_s:g} s limit"
    rows = [Row(**ours, reference=f"MILP 1e-6, {limit}: {exact.status}, gap {exact.mip_gap:.1e}",
                reference_objective=exact.objective_cny, reference_s=exact_s)]
    rows.append(Row(**ours, reference="LP relaxation bound (proven lower bound)",
                    reference_objective=schedule.lower_bound_cny, reference_s=np.nan))
    return rows


def receding(devices: int, steps: int) -> tuple[float, float, float, int]:
    """Mean re-solve and rebuild times [s], the largest relative objective difference, steps run."""
    rng = np.random.default_rng(1)
    problem = park(devices)
    scheduler = HorizonScheduler(problem)
    schedule = scheduler.solve()
    resolve, rebuild, diff = [], [], 0.0
    for _ in range(steps):
        problem = roll(problem, schedule, rng)
        started = time.perf_counter()
        schedule = scheduler.step(problem, shift=1)
        resolve.append(time.perf_counter() - started)
        started = time.perf_counter()
        fresh = solve_schedule(problem)
        rebuild.append(time.perf_counter() - started)
        diff = max(diff, abs(schedule.objective_cny - fresh.objective_cny) / abs(fresh.objective_cny))
    return float(np.mean(resolve)), float(np.mean(rebuild)), diff, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 devices only")
    parser.add_argument("--reference-limit", type=float, default=60.0,
                        help="time limit of the 1,000-device reference MILP [s]")
    parser.add_argument("--steps", type=int, default=6, help="receding-horizon steps per size")
    args = parser.parse_args()
    sizes = [100] if args.quick else [100, 1000]

    rows: list[Row] = []
    for variant in ("park", "tight"):
        for devices in sizes:
            rows += day_ahead(devices, variant, None if devices <= 100 else args.reference_limit)
    print(f"Day-ahead schedule, 96 x 15 min (budget {BUDGET_S:g} s at 1,000 devices); "
          "ratio = reference s / our total s")
    header = (f"{'case':>5} {'devices':>7} {'build s':>8} {'solve s':>8} {'total s':>8} {'cpu s':>7} {'status':>8} {'int dev':>7} "
              f"{'objective CNY':>15} {'reference CNY':>15} {'gap':>9} {'ref s':>8} {'ratio':>7}  reference")
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = r.reference_s / r.total_s if np.isfinite(r.reference_s) else np.nan
        print(f"{r.case:>5} {r.devices:>7} {r.build_s:>8.3f} {r.solve_s:>8.3f} {r.total_s:>8.3f} {r.cpu_s:>7.2f} {r.status:>8} "
              f"{r.integer_devices:>7} {r.objective:>15.2f} {r.reference_objective:>15.2f} {r.gap:>9.2e} "
              f"{r.reference_s:>8.2f} {ratio:>7.2f}  {r.reference}")

    print()
    print(f"Receding horizon, rolling one interval per step ({args.steps} steps); ratio = rebuild s / re-solve s")
    header = f"{'devices':>7} {'re-solve s':>11} {'rebuild s':>10} {'ratio':>7} {'max rel diff':>13}"
    print(header)
    print("-" * len(header))
    for devices in sizes:
        again, fresh, diff, _ = receding(devices, args.steps)
        print(f"{devices:>7} {again:>11.3f} {fresh:>10.3f} {fresh / again:>7.2f} {diff:>13.1e}")


if __name__ == "__main__":
    main()
