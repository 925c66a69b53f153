"""Benchmark of the real-time allocator (``dispatch.allocate``) against HiGHS.

Run from the repository root:

    .venv/bin/python benchmarks/bench_allocate.py                          # 1,000 / 10,000 / 100,000 devices
    .venv/bin/python benchmarks/bench_allocate.py --sizes 1000,10000 --repeat 50
    .venv/bin/python benchmarks/bench_allocate.py --highs-time-limit 20     # shorter HiGHS cap

Instances are seeded: lower bounds U(-100, 0) kW, widths U(0, 100) kW with
10 % held at zero width, costs U(0, 100) CNY/kWh with 20 % on five tied
values, target at 37 % of the way from sum(lower) to sum(upper); the
quadratic case adds quad_cost U(0.01, 1) CNY/kW^2h on 80 % of the devices
(the rest stay linear, so it mixes both kinds).

Columns: ``ours`` is the median wall time of ``allocate`` over ``--repeat``
calls, validation included (``cpu`` the median CPU time of the calling thread; the
machine is shared, so wall above cpu is waiting); ``full sort`` is the same
call with the sampled-bracket narrowing switched off, i.e. a plain argsort of
every cost or breakpoint, to show what the narrowing buys. ``HiGHS`` is
one solve of the same instance (model building excluded) with presolve off:
with presolve on, HiGHS 1.16 spends 0.8 s at 10,000 and 84 s at 100,000
columns presolving the single dense row before a 1-iteration simplex. The
QP goes to HiGHS's active-set QP solver, which grows steeply (~50 s at
10,000), so each solve is capped at ``--highs-time-limit`` seconds (default
60); a capped run prints ``>`` and its ratio is a lower bound. ``ratio`` is
HiGHS / ours; ``gap`` is (ours - HiGHS) / |HiGHS| on the objective, shown
when HiGHS proved optimality (negative would mean ours is better).

With the defaults the whole run takes about 2-3 minutes, nearly all of it in
HiGHS's QP solves.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import numpy as np

from dispatch import allocate
from dispatch.reference import objective, solve_with_highs

BUDGET_MS = 10.0
"""Real-time allocation budget at 100,000 devices, linear (DESIGN.md)."""
BUDGET_SIZE = 100_000
TIED_COSTS = np.array([10.0, 20.0, 30.0, 40.0, 50.0])


@dataclass(frozen=True)
class Instance:
    target_kw: float
    lower_kw: np.ndarray
    upper_kw: np.ndarray
    cost: np.ndarray
    quad_cost: np.ndarray | None

    def args(self) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        return self.target_kw, self.lower_kw, self.upper_kw, self.cost, self.quad_cost


@dataclass(frozen=True)
class Row:
    size: int
    kind: str
    ours_ms: float
    cpu_ms: float
    full_sort_ms: float
    highs_ms: float
    highs_status: str
    gap: float


def make_instance(size: int, quadratic: bool, seed: int) -> Instance:
    rng = np.random.default_rng(seed)
    lower = rng.uniform(-100.0, 0.0, size)
    width = np.where(rng.random(size) < 0.1, 0.0, rng.uniform(0.0, 100.0, size))
    upper = lower + width
    cost = np.where(rng.random(size) < 0.2, rng.choice(TIED_COSTS, size), rng.uniform(0.0, 100.0, size))
    quad = np.where(rng.random(size) < 0.8, rng.uniform(0.01, 1.0, size), 0.0) if quadratic else None
    target = float(lower.sum() + 0.37 * (upper.sum() - lower.sum()))
    return Instance(target, lower, upper, cost, quad)


def median_ms(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and CPU time of ``call`` [ms], after one warm-up call."""
    call()
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.thread_time()
        call()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.thread_time() - c0)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def full_sort_ms(instance: Instance, repeat: int) -> float:
    """Median time with the narrowing disabled: every candidate is sorted [ms]."""
    module = importlib.import_module("dispatch.allocate")  # the attribute ``dispatch.allocate`` is the function
    with mock.patch.object(module, "_SORT_BLOCK", instance.cost.size + 1):
        return median_ms(lambda: allocate(*instance.args()), repeat)[0]


def run_one(size: int, quadratic: bool, repeat: int, time_limit_s: float, seed: int) -> Row:
    instance = make_instance(size, quadratic, seed)
    result = allocate(*instance.args())
    ours_ms, cpu_ms = median_ms(lambda: allocate(*instance.args()), repeat)
    sorted_ms = full_sort_ms(instance, repeat)
    start = time.perf_counter()
    _, reference, status = solve_with_highs(
        *instance.args(), time_limit_s=time_limit_s, options={"presolve": "off"}
    )
    highs_ms = 1e3 * (time.perf_counter() - start)
    ours = objective(result.setpoints_kw, instance.cost, instance.quad_cost)
    gap = (ours - reference) / max(abs(reference), 1e-12) if status == "Optimal" else float("nan")
    kind = "quadratic" if quadratic else "linear"
    return Row(size, kind, ours_ms, cpu_ms, sorted_ms, highs_ms, status, gap)


def format_row(row: Row) -> str:
    capped = row.highs_status != "Optimal"
    highs = f"{'>' if capped else ''}{row.highs_ms:.1f}"
    ratio = f"{'>=' if capped else ''}{row.highs_ms / row.ours_ms:,.0f}x"
    gap = f"{row.gap:+.1e}" if np.isfinite(row.gap) else row.highs_status.lower()
    return (
        f"{row.size:>9,}  {row.kind:<9}  {row.ours_ms:>9.3f}  {row.cpu_ms:>8.3f}  {row.full_sort_ms:>10.3f}"
        f"  {highs:>11}  {ratio:>10}  {gap:>20}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated device counts")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls of ours per size (median)")
    parser.add_argument("--highs-time-limit", type=float, default=60.0, help="cap per HiGHS solve [s]")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]

    print(
        f"allocate vs HiGHS (presolve off, time limit {args.highs_time_limit:g} s); "
        f"times in ms, ours = median of {args.repeat}"
    )
    header = (
        f"{'devices':>9}  {'kind':<9}  {'ours':>9}  {'cpu':>8}  {'full sort':>10}"
        f"  {'HiGHS':>11}  {'ratio':>10}  {'gap':>20}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for size in sizes:
        for quadratic in (False, True):
            row = run_one(size, quadratic, args.repeat, args.highs_time_limit, args.seed)
            rows.append(row)
            print(format_row(row), flush=True)
    budget = [r for r in rows if r.size == BUDGET_SIZE and r.kind == "linear"]
    if budget:
        verdict = "within" if budget[0].ours_ms <= BUDGET_MS else "OVER"
        print(f"\nbudget: linear allocation at {BUDGET_SIZE:,} devices {budget[0].ours_ms:.2f} ms, "
              f"{verdict} the {BUDGET_MS:g} ms budget")


if __name__ == "__main__":
    main()
