"""Benchmark of allocation under feeder caps (``dispatch.network.allocate_with_groups``) against HiGHS.

Run from the repository root:

    .venv/bin/python benchmarks/bench_network.py                       # 10,000 devices, 50 feeders, LP
    .venv/bin/python benchmarks/bench_network.py --quadratic --devices 2000   # QP too (HiGHS's QP is slow)

Instance (seeded): lower bounds U(-100, 0) kW, widths U(0, 100) kW with 10 %
held at zero width, costs U(0, 100) CNY/kWh, devices spread uniformly over
the feeders, target at 37 % of the way from sum(lower) to sum(upper); with
``--quadratic`` quad_cost U(0.01, 1) CNY/kW^2h on 80 % of the devices.

Two cap settings on the same devices:

* ``slack``: every feeder capped at 10 % above what the unconstrained optimum
  puts on it (and 10 % below on the min side): no cap binds, fast path.
* ``binding``: every fifth feeder capped at 70 % of what the unconstrained
  optimum puts on it, minus 0.25 kW per device of the feeders' average (50 kW at 200): those caps bind, HiGHS path.

Columns: ``ours`` is the median wall time of ``allocate_with_groups`` over
``--repeat`` calls (validation, fast attempt, and the HiGHS solve when a cap
binds); ``HiGHS`` the median of building and solving the same capped model
with highspy directly (``dispatch.network._solve_highs``: the same sparse
model and options, presolve off, without the fast attempt). ``ratio`` is
HiGHS / ours (HiGHS solves for ``target - shortfall``); ``presolve`` is the same HiGHS solve with its presolve on
(HiGHS's default, ~0.5 s here: it is slow on the dense balance row) and its
ratio to ours; ``gap`` (ours - HiGHS) / |HiGHS| on the objective.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from dispatch import allocate
from dispatch.network import _solve_highs, allocate_with_groups
from dispatch.reference import objective


def median_ms(call: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``call`` [ms], after one warm-up call."""
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--feeders", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--quadratic", action="store_true", help="also run the QP (HiGHS QP ~20 s at 10,000)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    n, feeders = args.devices, args.feeders
    lower = rng.uniform(-100.0, 0.0, n)
    width = np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0.0, 100.0, n))
    upper = lower + width
    cost = rng.uniform(0.0, 100.0, n)
    quad_all = np.where(rng.random(n) < 0.8, rng.uniform(0.01, 1.0, n), 0.0)
    group_of = rng.integers(0, feeders, n)
    target = float(lower.sum() + 0.37 * width.sum())
    kinds = [("linear", None)] + ([("quadratic", quad_all)] if args.quadratic else [])

    print(f"allocate_with_groups vs HiGHS directly: {n:,} devices in {feeders} feeders; "
          f"times in ms, median of {args.repeat}")
    header = f"{'kind':<10} {'caps':<8} {'path':<6} {'ours':>10} {'HiGHS':>10} {'ratio':>9} {'presolve':>10} {'ratio':>9} {'gap':>9} {'shortfall':>10}  status"
    print(header)
    print("-" * len(header))
    for kind, quad in kinds:
        free = allocate(target, lower, upper, cost, quad).setpoints_kw
        load = np.bincount(group_of, weights=free, minlength=feeders)
        settings = {
            "slack": (load - 0.1 * np.abs(load) - 1.0, load + 0.1 * np.abs(load) + 1.0),
            "binding": (np.full(feeders, -np.inf),
                        np.where(np.arange(feeders) % 5 == 0, load - 0.3 * np.abs(load) - 0.25 * n / feeders, np.inf)),
        }
        for caps, (group_min, group_max) in settings.items():
            call_args = (target, lower, upper, cost, quad, group_of, group_min, group_max)
            result = allocate_with_groups(*call_args)
            ours_ms = median_ms(lambda: allocate_with_groups(*call_args), args.repeat)  # noqa: B023
            # The same problem HiGHS-only: the closest reachable total, caps clipped to what the feeders can reach.
            reach_low = np.bincount(group_of, weights=lower, minlength=feeders)
            reach_high = np.bincount(group_of, weights=upper, minlength=feeders)
            rows = (np.clip(group_min, reach_low, reach_high), np.clip(group_max, reach_low, reach_high))
            highs_args = (target - result.shortfall_kw, lower, upper, cost, quad, group_of, *rows, None, None)
            setpoints, status = _solve_highs(*highs_args)
            highs_ms = median_ms(lambda: _solve_highs(*highs_args), args.repeat)  # noqa: B023
            presolve_args = highs_args[:-1] + ({"presolve": "on"},)
            presolve_ms = median_ms(lambda: _solve_highs(*presolve_args), args.repeat)  # noqa: B023
            ours_obj = objective(result.setpoints_kw, cost, quad)
            highs_obj = objective(setpoints, cost, quad)
            gap = (ours_obj - highs_obj) / max(abs(highs_obj), 1e-12)
            print(f"{kind:<10} {caps:<8} {result.path:<6} {ours_ms:>10.3f} {highs_ms:>10.3f} "
                  f"{highs_ms / ours_ms:>8.1f}x {presolve_ms:>10.3f} {presolve_ms / ours_ms:>8.1f}x {gap:>+9.1e} {result.shortfall_kw:>10.1f}  {result.status} / {status}", flush=True)


if __name__ == "__main__":
    main()
