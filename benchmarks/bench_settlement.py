"""Settlement with baselines: 500 enterprises × one month of 15-minute data, budget ≤ 2 s.

A seeded synthetic park (industrial day shapes, rest days lower, 5% noise, a
few missing meter intervals) with 45 days of history before July 2026 and
20 demand-response events in July on two programmes:

* Jiangsu-style day-ahead peak shaving (5 most recent normal working days);
* PJM-style economic response (High 4 of 5 with the symmetric additive
  adjustment), peak shaving and valley filling.

Timed: baselines (both methods) → performance → payments and penalties →
allocation to enterprises (fen-exact), the settlement core; then the same
plus capacity payments, two park costs shared by benefit key (consumption,
event revenue) and the monthly statement rows, against
the 2 s budget. The core is printed beside the same computation done by a
straightforward per-enterprise Python-loop reference measured in the same
run (on a subset of enterprises, scaled linearly to the full park), after
checking that both agree on that subset: baselines to 1e-9 relative, every
amount to the fen. ``--reference-subset 500`` runs the reference on all.

    .venv/bin/python benchmarks/bench_settlement.py [--enterprises 500] [--reference-subset 100] [--seed 7]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np

from market.baselines import DayCalendar, EventWindow, JiangsuAverage, PjmHighFourOfFive
from market.settlement import (
    DrEvent,
    EventSettlement,
    PaymentRule,
    Programme,
    allocate_costs,
    capacity_payment_fen,
    month_statement,
    settle_events,
)

BUDGET_S = 2.0
MONTH = "2026-07"
FIRST_DAY = np.datetime64("2026-05-17")  # 45 days of history before July
LAST_DAY = np.datetime64("2026-07-31")
HOLIDAYS = ("2026-06-19",)  # Dragon Boat Festival 2026
CAPACITY_PRICE_CNY_PER_KW_MONTH = 3.0
REGULATION_COST_CNY = 12_345.67
PLATFORM_FEE_CNY = 8_000.00


# ------------------------------------------------------------------ park ----


@dataclass(frozen=True)
class Park:
    load_kw: np.ndarray  # (E, D, 96)
    calendar: DayCalendar
    events: list[DrEvent]
    programmes: dict[str, Programme]
    capacity_kw: np.ndarray  # (E,)
    consumption_kwh: np.ndarray  # (E,) benefit measure for the cost share

    def subset(self, n: int) -> Park:
        return Park(
            self.load_kw[:n], self.calendar, self.events, self.programmes, self.capacity_kw[:n], self.consumption_kwh[:n]
        )


def synthetic_park(enterprises: int, seed: int) -> Park:
    """Seeded park: load history, 20 July events with the enterprises' responses, programmes."""
    rng = np.random.default_rng(seed)
    dates = np.arange(FIRST_DAY, LAST_DAY + 1)
    hours = np.arange(96) / 4
    shape = 0.55 + 0.45 * np.exp(-(((hours - 14.0) / 5.0) ** 2))
    base_kw = rng.uniform(200.0, 2000.0, enterprises)
    kinds = DayCalendar.build(dates, holidays=HOLIDAYS).day_kind()
    day_factor = np.where(kinds == 0, 1.0, 0.6)
    load = base_kw[:, None, None] * shape[None, None, :] * day_factor[None, :, None]
    load = load * rng.normal(1.0, 0.05, load.shape)
    load[rng.random(load.shape) < 2e-5] = np.nan
    july_working = [i for i, d in enumerate(dates) if str(d).startswith(MONTH) and kinds[i] == 0]
    event_days = sorted(rng.choice(july_working, size=20, replace=False).tolist())
    windows = [(40, 48), (56, 64), (76, 84), (52, 60)]
    events = []
    for k, d in enumerate(event_days):
        start, end = windows[k % len(windows)]
        programme = "jiangsu-day-ahead" if k % 2 == 0 else "pjm-economic"
        direction = "valley_filling" if programme == "pjm-economic" and k % 4 == 3 else "peak_shaving"
        sign = 1.0 if direction == "peak_shaving" else -1.0
        responding = rng.random(enterprises) < 0.8
        depth = rng.uniform(0.05, 0.25, enterprises) * responding
        load[:, d, start:end] *= (1.0 - sign * depth)[:, None]
        requested_kw = 0.1 * float((base_kw * shape[start:end].mean()).sum()) * rng.uniform(0.8, 1.6)
        events.append(
            DrEvent(f"ev-{k:02d}", programme, EventWindow(dates[d], start, end), direction, requested_kw,
                    price_cny_per_kwh=float(rng.choice([3.0, 4.0, 5.0])))
        )
    calendar = DayCalendar.build(dates, holidays=HOLIDAYS, event_dates=[e.window.date for e in events])
    programmes = {
        "jiangsu-day-ahead": Programme("jiangsu-day-ahead", JiangsuAverage(), PaymentRule()),
        "pjm-economic": Programme("pjm-economic", PjmHighFourOfFive(), PaymentRule(cap_ratio=1.5, penalty_threshold=None)),
    }
    capacity_kw = np.round(0.2 * base_kw, 1)
    july = np.array([str(d).startswith(MONTH) for d in dates])
    consumption_kwh = np.nansum(load[:, july, :], axis=(1, 2)) * 0.25
    return Park(load, calendar, events, programmes, capacity_kw, consumption_kwh)


# ------------------------------------------------------------ vectorised ----


def run_vectorised(park: Park, ids: list[str]) -> tuple[list[EventSettlement], np.ndarray, np.ndarray, list]:
    """The pipeline under test: settlements, capacity and park cost shares by benefit key, statement rows."""
    settlements = settle_events(park.events, park.programmes, park.load_kw, park.calendar, park.capacity_kw)
    _, capacity = capacity_payment_fen(park.capacity_kw, CAPACITY_PRICE_CNY_PER_KW_MONTH)
    revenue = np.sum([s.enterprise_payment_fen for s in settlements], axis=0)
    costs, used = allocate_costs(
        [round(REGULATION_COST_CNY * 100), round(PLATFORM_FEE_CNY * 100)], ["consumption", "event_revenue"],
        revenue, park.consumption_kwh, park.capacity_kw,
    )
    notes = [f"regulation cost share; shared by {used[0]}", f"platform fee; shared by {used[1]}"]
    rows = month_statement(MONTH, ids, settlements, capacity, costs=list(zip(notes, costs)))
    return settlements, capacity, costs, rows


# ------------------------------------------------------------- reference ----


def _working(park: Park) -> list[bool]:
    return [bool(k == 0) for k in park.calendar.day_kind()]


def _usable(load_e: np.ndarray, d: int, event_days: set[int], working: list[bool]) -> bool:
    return working[d] and d not in event_days and not any(math.isnan(x) for x in load_e[d])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _reference_jiangsu(load_e, day, start, end, event_days, working) -> list[float] | None:
    invitation = day - 1
    chosen = []
    for d in range(invitation - 1, max(invitation - 60, 0) - 1, -1):
        if _usable(load_e, d, event_days, working):
            chosen.append(d)
            if len(chosen) == 5:
                break
    if len(chosen) < 5:
        return None
    return [_mean([float(load_e[d][i]) for d in chosen]) for i in range(start, end)]


def _reference_pjm(load_e, flat_e, day, start, end, event_days, working) -> list[float] | None:
    excluded: set[int] = set()
    while True:
        candidates = []
        for d in range(day - 1, max(day - 45, 0) - 1, -1):
            if d not in excluded and _usable(load_e, d, event_days, working):
                candidates.append(d)
                if len(candidates) == 5:
                    break
        usage = {d: _mean([float(load_e[d][i]) for i in range(start, end)]) for d in candidates}
        mean = _mean(list(usage.values())) if usage else 0.0
        low = [d for d in candidates if mean > 0 and usage[d] < 0.25 * mean]
        if not low:
            break
        excluded.update(low)
    if len(candidates) < 5:
        return None
    kept = sorted(candidates, key=lambda d: -usage[d])[:4]
    cbl = [_mean([float(load_e[d][i]) for d in kept]) for i in range(start, end)]
    window = range(start - 16, start - 4)
    cbl_window = _mean([_mean([float(flat_e[d * 96 + i]) for d in kept]) for i in window])
    actual_window = _mean([float(flat_e[day * 96 + i]) for i in window])
    if math.isnan(cbl_window) or math.isnan(actual_window):
        return None
    return [value + actual_window - cbl_window for value in cbl]


def _reference_fen(amount_cny: float) -> int:
    cents = amount_cny * 100.0
    return int(math.copysign(math.floor(abs(cents) + 0.5), cents))


def _reference_allocate(total: int, weights: list[float]) -> list[int]:
    weight_sum = float(np.sum(weights))  # same summation as the vectorised code, so quotas match bit for bit
    if total == 0 or weight_sum <= 0:
        return [0] * len(weights)
    quotas = [abs(total) * (w / weight_sum) for w in weights]
    shares = [min(math.floor(q), abs(total)) for q in quotas]
    left = abs(total) - sum(shares)
    order = sorted((i for i, w in enumerate(weights) if w > 0), key=lambda i: (-(quotas[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    sign = 1 if total > 0 else -1
    return [sign * s for s in shares]


def run_reference(park: Park) -> list[dict]:
    """Same computation, one enterprise at a time in plain Python."""
    working = _working(park)
    event_days = {park.calendar.index(e.window.date) for e in park.events}
    n = park.load_kw.shape[0]
    capacity_total = float(np.sum(park.capacity_kw))
    results = []
    for event in park.events:
        window = event.window
        day = park.calendar.index(window.date)
        start, end, hours = window.start_interval, window.end_interval, window.duration_h
        sign = 1.0 if event.direction == "peak_shaving" else -1.0
        delivered, requested, baselines = [], [], []
        for e in range(n):
            load_e = park.load_kw[e]
            if event.programme == "jiangsu-day-ahead":
                baseline = _reference_jiangsu(load_e, day, start, end, event_days, working)
            else:
                baseline = _reference_pjm(load_e, load_e.reshape(-1), day, start, end, event_days, working)
            actual = [float(load_e[day][i]) for i in range(start, end)]
            verified = baseline is not None and not any(math.isnan(a) for a in actual)
            energy = sign * sum(b - a for b, a in zip(baseline, actual)) * 0.25 if verified else 0.0
            delivered.append(energy)
            requested.append(event.requested_kw * (park.capacity_kw[e] / capacity_total) * hours)
            baselines.append(baseline)
        rule = park.programmes[event.programme].payment
        plant = float(np.sum(delivered))
        requested_kwh = event.requested_kw * hours
        ratio = plant / requested_kwh
        paid = min(max(plant, 0.0), rule.cap_ratio * requested_kwh) * event.price_cny_per_kwh
        payment = paid if ratio >= 0.5 else 0.0
        penalty = 0.0
        if rule.penalty_threshold is not None:
            shortfall_kw = max(rule.penalty_threshold * event.requested_kw - plant / hours, 0.0)
            penalty = shortfall_kw * event.price_cny_per_kwh * rule.penalty_factor * hours
        payment_fen, penalty_fen = _reference_fen(payment), _reference_fen(penalty)
        shortfalls = [max(r - d, 0.0) for r, d in zip(requested, delivered)]
        penalty_weights = shortfalls if sum(shortfalls) > 0 else requested
        results.append({
            "baselines": baselines,
            "payment_fen": payment_fen,
            "penalty_fen": penalty_fen,
            "enterprise_payment_fen": _reference_allocate(payment_fen, [max(d, 0.0) for d in delivered]),
            "enterprise_penalty_fen": _reference_allocate(penalty_fen, penalty_weights),
            "delivered": delivered,
        })
    return results


def check_agreement(settlements: list[EventSettlement], park: Park, reference: list[dict]) -> None:
    """Raise AssertionError unless the vectorised results equal the reference on this park."""
    from market.baselines import customer_baselines

    for event, settlement, ref in zip(park.events, settlements, reference):
        method = park.programmes[event.programme].baseline
        (baseline,) = customer_baselines(method, park.load_kw, park.calendar, [event.window])
        for e, ref_baseline in enumerate(ref["baselines"]):
            if ref_baseline is None:
                assert not baseline.available[e], f"{event.id} enterprise {e}: reference has no baseline"
            else:
                np.testing.assert_allclose(baseline.baseline_kw[e], ref_baseline, rtol=1e-9, err_msg=event.id)
        np.testing.assert_allclose(settlement.enterprise_delivered_kwh, ref["delivered"], rtol=1e-9, atol=1e-9)
        assert settlement.payment_fen == ref["payment_fen"], event.id
        assert settlement.penalty_fen == ref["penalty_fen"], event.id
        assert settlement.enterprise_payment_fen.tolist() == ref["enterprise_payment_fen"], event.id
        assert settlement.enterprise_penalty_fen.tolist() == ref["enterprise_penalty_fen"], event.id


# ------------------------------------------------------------------ main ----


def best_of(repeats: int, run) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeats):
        began = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - began)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enterprises", type=int, default=500)
    parser.add_argument("--reference-subset", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    park = synthetic_park(args.enterprises, args.seed)
    ids = [f"ent-{i:03d}" for i in range(args.enterprises)]
    days = park.load_kw.shape[1]
    print(f"park: {args.enterprises} enterprises x {days} days x 96 intervals "
          f"({int(np.isnan(park.load_kw).sum())} missing meter intervals), {len(park.events)} events in {MONTH}")

    run_vectorised(park, ids)  # warm-up
    elapsed, (settlements, _, costs, rows) = best_of(args.repeats, lambda: run_vectorised(park, ids))
    assert costs.sum(axis=1).tolist() == [round(REGULATION_COST_CNY * 100), round(PLATFORM_FEE_CNY * 100)]
    core, _ = best_of(args.repeats, lambda: settle_events(
        park.events, park.programmes, park.load_kw, park.calendar, park.capacity_kw))

    n = min(args.reference_subset, args.enterprises)
    small = park.subset(n)
    began = time.perf_counter()
    reference = run_reference(small)
    reference_s = time.perf_counter() - began
    check_agreement(settle_events(small.events, small.programmes, small.load_kw, small.calendar, small.capacity_kw),
                    small, reference)
    scaled = reference_s * args.enterprises / n

    unverified = sum(int((~s.verified).sum()) for s in settlements)
    paid = sum(s.payment_fen for s in settlements) / 100
    print(f"events settled: {len(settlements)}; enterprise-events not verified: {unverified}; "
          f"energy payments {paid:,.2f} CNY; statement rows: {len(rows)}")
    print(f"vectorised, baselines + performance + payments + allocation: {core:.3f} s")
    print(f"vectorised, the same plus capacity, park cost shares and statement rows: {elapsed:.3f} s "
          f"(budget {BUDGET_S:.1f} s: {'within' if elapsed <= BUDGET_S else 'OVER'})")
    print(f"reference loop: {reference_s:.3f} s on {n} enterprises, scaled to {args.enterprises}: {scaled:.2f} s; "
          f"agreement checked on the {n} (baselines 1e-9, amounts to the fen)")
    print(f"ratio vectorised / reference (settlement core): {core / scaled:.4f}  ({scaled / core:.0f}x faster)")


if __name__ == "__main__":
    main()
