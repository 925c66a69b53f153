"""Forecast error on the simulated park: PV per system and load per enterprise, day ahead.

Runs the seeded park with clouds for ``--days`` days at 5-minute steps,
averages to 15-minute intervals, then for each of the last ``--test-days``
days forecasts the whole day from the days before it:

* PV: clear-sky potential (dispatch.forecast) scaled by each system's
  measured/clear-sky ratio of the previous day;
* load: similar-day profile (mean of the last 5 days of the same day type).

Prints MAE [kW] and MAPE [%] for each, beside the same figures for the
reference forecast measured in the same run: persistence (yesterday's value
at the same interval), and the ratio ours/persistence (< 1 = better).

    .venv/bin/python benchmarks/bench_forecast.py [--days 21] [--test-days 7] [--seed 7]
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from dispatch.forecast import clear_sky_pv_kw, mae, mape, measured_ratio, pv_forecast_kw, similar_day_load_kw
from simulators.park import build_park
from simulators.sim import SimulatedPark
from vpp.model import PV, EvCharger, InterruptibleLoad, ShiftableLoad

STEP_S = 300
PER_INTERVAL = 900 // STEP_S
INTERVALS_PER_DAY = 96


def simulate(days: int, seed: int):
    """15-minute mean PV output per system and load per enterprise: ([D, 96, n_pv], [D, 96, n_ent], spec, start)."""
    spec = build_park(seed=seed)
    start = datetime(2026, 5, 1, tzinfo=timezone.utc) - timedelta(hours=8)  # local midnight in Shanghai
    park = SimulatedPark(spec, start=start, seed=seed, clouds=True)
    pv_ids = [d.id for d in spec.devices if isinstance(d, PV)]
    loads = [d for d in spec.devices if isinstance(d, (InterruptibleLoad, ShiftableLoad, EvCharger))]
    enterprises = [e.id for e in spec.enterprises]
    steps = days * INTERVALS_PER_DAY * PER_INTERVAL
    pv = np.zeros((steps, len(pv_ids)))
    load = np.zeros((steps, len(enterprises)))
    owner = np.array([enterprises.index(d.enterprise_id) for d in loads])
    for k in range(steps):
        now = start + timedelta(seconds=STEP_S * (k + 1))
        park.step(now)
        power = {s.device_id: s.p_kw for s in park.telemetry(now)}
        pv[k] = [power.get(i, 0.0) for i in pv_ids]
        base = park.base_load_kw()
        load[k] = [base.get(e, 0.0) for e in enterprises]
        np.add.at(load[k], owner, [-power.get(d.id, 0.0) for d in loads])
    shape = (days, INTERVALS_PER_DAY, PER_INTERVAL)
    return (
        pv.reshape(*shape, -1).mean(axis=2),
        load.reshape(*shape, -1).mean(axis=2),
        spec,
        start,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--test-days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    started = time.perf_counter()
    pv, load, spec, start = simulate(args.days, args.seed)
    simulated_s = time.perf_counter() - started
    systems = [d for d in spec.devices if isinstance(d, PV)]
    rated = np.array([d.rated_kw for d in systems])
    day_types = np.array([(start + timedelta(days=d, hours=8)).weekday() >= 5 for d in range(args.days)], dtype=int)

    results = {"pv": {"ours": [], "persistence": []}, "load": {"ours": [], "persistence": []}}
    forecast_s = 0.0
    for day in range(args.days - args.test_days, args.days):
        t0 = time.perf_counter()
        times = pd.date_range(start + timedelta(days=day, minutes=7.5), periods=INTERVALS_PER_DAY, freq="15min")
        yesterday = times - pd.Timedelta(days=1)
        clear_today = clear_sky_pv_kw(times, spec.latitude, spec.longitude, [d.tilt_deg for d in systems], [d.azimuth_deg for d in systems], rated)
        clear_yesterday = clear_sky_pv_kw(yesterday, spec.latitude, spec.longitude, [d.tilt_deg for d in systems], [d.azimuth_deg for d in systems], rated)
        pv_ours = pv_forecast_kw(clear_today, measured_ratio(pv[day - 1], clear_yesterday))
        load_ours = similar_day_load_kw(load[:day].transpose(2, 0, 1), day_types[:day], int(day_types[day]))
        forecast_s += time.perf_counter() - t0
        floor = 0.05 * rated[None, :]  # MAPE only where PV makes at least 5 % of its rating
        for name, ours, persistence, actual, min_actual in (
            ("pv", pv_ours, pv[day - 1], pv[day], floor),
            ("load", load_ours.T, load[day - 1], load[day], 1.0),
        ):
            mask = actual > min_actual
            results[name]["ours"].append((mae(ours, actual), mape(np.where(mask, ours, np.nan), np.where(mask, actual, np.nan))))
            results[name]["persistence"].append(
                (mae(persistence, actual), mape(np.where(mask, persistence, np.nan), np.where(mask, actual, np.nan)))
            )

    print(f"simulated {args.days} days of the park ({len(systems)} PV systems, {load.shape[2]} enterprises) in {simulated_s:.1f} s")
    print(f"forecasts for {args.test_days} test days computed in {forecast_s * 1000:.0f} ms\n")
    print(f"{'forecast':<10}{'method':<14}{'MAE [kW]':>12}{'MAPE [%]':>12}{'MAE ratio':>12}")
    for name in ("pv", "load"):
        ours = np.nanmean(np.array(results[name]["ours"]), axis=0)
        ref = np.nanmean(np.array(results[name]["persistence"]), axis=0)
        print(f"{name:<10}{'ours':<14}{ours[0]:>12.1f}{ours[1] * 100:>12.1f}{ours[0] / ref[0]:>12.2f}")
        print(f"{name:<10}{'persistence':<14}{ref[0]:>12.1f}{ref[1] * 100:>12.1f}{1.0:>12.2f}")


if __name__ == "__main__":
    main()
