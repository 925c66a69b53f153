"""Proof of ``dispatch.schedule``: hand-checked cases, random fleets, receding horizon, flexibility.

Every schedule is checked by ``assert_feasible``, which re-derives each
constraint from the problem with plain loops (independent of the vectorised
model), and by ``recomputed_cost``, which prices the schedule from scratch.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.schedule import (
    BatteryFleet,
    EvFleet,
    HorizonScheduler,
    InterruptibleFleet,
    PvFleet,
    Schedule,
    ScheduleProblem,
    ShiftableFleet,
    Signals,
    SolveOptions,
    maximise_flexibility,
    solve_schedule,
)
from dispatch.schedule_model import build

SMALL = settings(max_examples=25, deadline=None)
EXACT = SolveOptions(integers="full", mip_rel_gap=1e-9)


# ------------------------------------------------------------- checkers ----


def _tol(problem: ScheduleProblem) -> float:
    """Absolute tolerance [kW or kWh] scaled to the instance."""
    sizes = [problem.base_load_kw, problem.batteries.capacity_kwh, problem.pv.potential_kw,
             problem.shiftable.rated_kw, problem.interruptible.natural_load_kw, problem.ev.p_max_kw]
    return 1e-6 * max(1.0, max((float(np.abs(a).max()) for a in sizes if a.size), default=1.0))


def _runs_and_starts(on: list[bool]) -> tuple[int, list[int]]:
    """Longest run of True and the intervals where runs start."""
    longest, current, starts = 0, 0, []
    for t, flag in enumerate(on):
        if flag and current == 0:
            starts.append(t)
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest, starts


def recomputed_cost(problem: ScheduleProblem, s: Schedule) -> float:
    dt, sig = problem.dt_h, problem.signals
    import_cost = sig.import_price_cny_per_kwh + sig.market_price_cny_per_mwh / 1000 \
        + sig.emission_factor_kg_per_kwh * sig.carbon_price_cny_per_t / 1000
    export_revenue = sig.export_price_cny_per_kwh + sig.market_price_cny_per_mwh / 1000
    cost = dt * float(s.grid_import_kw @ import_cost - s.grid_export_kw @ export_revenue)
    b = problem.batteries
    cost += dt * float(((s.battery_charge_kw + s.battery_discharge_kw) * b.cost_cny_per_kwh).sum())
    cost += dt * float(((problem.pv.potential_kw - s.pv_kw) * problem.pv.curtail_cost_cny_per_kwh).sum())
    cost += dt * float((s.curtailment_kw * problem.interruptible.comfort_cost_cny_per_kwh).sum())
    return cost


def assert_feasible(problem: ScheduleProblem, s: Schedule) -> None:
    """Every constraint of the schedule, re-derived from the problem."""
    assert s.has_solution, s.status
    T, dt, tol = problem.intervals, problem.dt_h, _tol(problem)
    b = problem.batteries
    ch, dis, soc = s.battery_charge_kw, s.battery_discharge_kw, s.battery_soc_kwh
    assert ch.shape == dis.shape == (T, b.size) and soc.shape == (T + 1, b.size)
    assert np.all(ch >= -tol) and np.all(ch <= b.p_charge_max_kw + tol)
    assert np.all(dis >= -tol) and np.all(dis <= b.p_discharge_max_kw + tol)
    np.testing.assert_allclose(soc[0], b.soc0_kwh)
    for t in range(T):
        expected = soc[t] + dt * b.eta_charge * ch[t] - dt * dis[t] / b.eta_discharge
        np.testing.assert_allclose(soc[t + 1], expected, atol=tol)
    assert np.all(soc[1:] >= b.soc_min_kwh - tol) and np.all(soc[1:] <= b.soc_max_kwh + tol)
    assert np.all(soc[-1] >= b.soc_terminal_min_kwh - tol)

    assert np.all(s.pv_kw >= -tol) and np.all(s.pv_kw <= problem.pv.potential_kw + tol)

    for fleet, power, window, rated in (
        (problem.shiftable, s.shiftable_kw, problem.shiftable.window, problem.shiftable.rated_kw),
        (problem.ev, s.ev_kw, problem.ev.window(T), problem.ev.p_max_kw),
    ):
        drawn = -power
        assert np.all(drawn >= -tol) and np.all(drawn <= rated * window + tol)
        np.testing.assert_allclose(dt * drawn.sum(axis=0), fleet.energy_kwh, atol=tol * T)

    f = problem.interruptible
    c, on = s.curtailment_kw, s.interrupted
    assert np.all(c[~on] == 0)
    assert np.all(c >= 0) and np.all(c <= np.minimum(f.max_curtail_kw, f.natural_load_kw) + tol)
    assert np.all(c >= np.where(on, f.min_curtail_kw, 0.0) - tol)
    rebound = np.zeros_like(c)
    for i in range(f.size):
        for src in range(T):
            for lag in range(1, f.rebound_intervals + 1):
                rebound[min(src + lag, T - 1), i] += f.rebound_fraction[i] * c[src, i] / f.rebound_intervals
        longest, starts = _runs_and_starts(list(on[:, i]))
        if f.max_interruption_intervals[i] < T:
            assert longest <= f.max_interruption_intervals[i], (i, c[:, i], on[:, i])
        for day in range(-(-T // problem.intervals_per_day)):
            in_day = [t for t in starts if t // problem.intervals_per_day == day]
            allowed = f.max_events_per_day[i] - (f.events_used[i] if day == 0 else 0)
            assert len(in_day) <= max(allowed, 0), (i, c[:, i], on[:, i])
    np.testing.assert_allclose(s.interruptible_kw, -f.natural_load_kw + c - rebound, atol=tol)

    imp, exp = s.grid_import_kw, s.grid_export_kw
    assert np.all(imp >= -tol) and np.all(imp <= problem.import_limit_kw + tol)
    assert np.all(exp >= -tol) and np.all(exp <= problem.export_limit_kw + tol)
    np.testing.assert_allclose(imp - exp + s.fleet_kw, problem.base_load_kw, atol=tol * 10)
    assert s.objective_cny == pytest.approx(recomputed_cost(problem, s), rel=1e-6, abs=1e-6)
    assert s.lower_bound_cny <= s.objective_cny + 1e-6 * max(1.0, abs(s.objective_cny))


def _flat(T: int, price: float = 0.5, export: float = 0.0) -> Signals:
    return Signals(np.full(T, price), np.full(T, export))


# ---------------------------------------------------------- hand cases ----


def test_battery_arbitrage_cheap_then_expensive() -> None:
    """Charge 40 kW at 0.2, discharge at 1.0 until the SoC is back at its terminal bound.

    Charging 40 kW for 1 h stores 0.9*40 = 36 kWh; giving 36 kWh back at
    eta 0.9 delivers 32.4 kW for the hour. SoC: 50 -> 86 -> 50.
    """
    battery = BatteryFleet(capacity_kwh=[100], soc0_kwh=[50], p_charge_max_kw=[40], p_discharge_max_kw=[40],
                           eta_charge=0.9, eta_discharge=0.9, soc_terminal_min_kwh=[50], cost_cny_per_kwh=0.01)
    problem = ScheduleProblem(np.array([100.0, 100.0]), Signals(np.array([0.2, 1.0]), np.zeros(2)),
                              batteries=battery, dt_h=1.0)
    s = solve_schedule(problem)
    assert s.status == "Optimal" and s.integer_devices == 0
    np.testing.assert_allclose(s.battery_charge_kw[:, 0], [40.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(s.battery_discharge_kw[:, 0], [0.0, 32.4], atol=1e-9)
    np.testing.assert_allclose(s.battery_soc_kwh[:, 0], [50.0, 86.0, 50.0], atol=1e-9)
    np.testing.assert_allclose(s.grid_import_kw, [140.0, 67.6], atol=1e-9)
    assert s.objective_cny == pytest.approx(0.2 * 140 + 1.0 * 67.6 + 0.01 * (40 + 32.4))
    assert_feasible(problem, s)


def test_battery_idle_when_spread_does_not_cover_losses() -> None:
    """Round trip 0.81: buying at 0.9 to sell at 1.0 loses money, so the battery stays put."""
    battery = BatteryFleet([100], [50], [40], [40], eta_charge=0.9, eta_discharge=0.9)
    problem = ScheduleProblem(np.array([100.0, 100.0]), Signals(np.array([0.9, 1.0]), np.zeros(2)),
                              batteries=battery, dt_h=1.0)
    s = solve_schedule(problem)
    np.testing.assert_allclose(s.battery_kw, 0.0, atol=1e-9)
    np.testing.assert_allclose(s.battery_soc_kwh[:, 0], 50.0, atol=1e-9)


def test_terminal_soc_is_met_in_the_cheapest_interval() -> None:
    """Ending at 80 kWh from 50 needs 30 kWh more, bought where it is cheapest (interval 2).

    Wear of 0.25/kWh each way makes every arbitrage (at most 0.7 - 0.3) a loss.
    """
    battery = BatteryFleet([100], [50], [40], [40], eta_charge=1.0, eta_discharge=1.0, soc_terminal_min_kwh=[80],
                           cost_cny_per_kwh=0.25)
    problem = ScheduleProblem(np.full(4, 10.0), Signals(np.array([0.6, 0.5, 0.3, 0.7]), np.zeros(4)),
                              batteries=battery, dt_h=1.0)
    s = solve_schedule(problem)
    np.testing.assert_allclose(s.battery_kw[:, 0], [0.0, 0.0, -30.0, 0.0], atol=1e-9)
    assert s.battery_soc_kwh[-1, 0] == pytest.approx(80.0)
    assert_feasible(problem, s)


def test_shiftable_load_moves_to_the_cheapest_allowed_intervals() -> None:
    """4 kWh at up to 2 kW within intervals 2..5: the two cheapest of those (3 and 5), not the cheaper 0."""
    T = 8
    prices = np.array([0.1, 0.9, 0.8, 0.4, 0.7, 0.3, 0.9, 0.9])
    window = np.zeros((T, 1), dtype=bool)
    window[2:6] = True
    problem = ScheduleProblem(np.full(T, 5.0), Signals(prices, np.zeros(T)),
                              shiftable=ShiftableFleet([2.0], [4.0], window), dt_h=1.0)
    s = solve_schedule(problem)
    expected = np.zeros(T)
    expected[[3, 5]] = -2.0
    np.testing.assert_allclose(s.shiftable_kw[:, 0], expected, atol=1e-9)
    assert_feasible(problem, s)


def test_ev_charges_before_departure_in_the_cheapest_plugged_intervals() -> None:
    T = 6
    prices = np.array([0.2, 0.9, 0.5, 0.4, 0.6, 0.1])
    ev = EvFleet(p_max_kw=[7.0], energy_kwh=[10.5], arrival_interval=[1], departure_interval=[5])
    problem = ScheduleProblem(np.full(T, 1.0), Signals(prices, np.zeros(T)), ev=ev, dt_h=1.0)
    s = solve_schedule(problem)
    np.testing.assert_allclose(s.ev_kw[:, 0], [0, 0, -3.5, -7.0, 0, 0], atol=1e-9)
    assert_feasible(problem, s)


def _peak_problem(events: float, longest: float, rebound: float = 0.0) -> ScheduleProblem:
    """100 kW load, 1.0 in intervals 2..7, 0.005 elsewhere (below the 0.01/kWh curtailment cost)."""
    T = 12
    prices = np.full(T, 0.005)
    prices[2:8] = 1.0
    load = InterruptibleFleet(np.full((T, 1), 100.0), [100.0], max_interruption_intervals=longest,
                              max_events_per_day=events, rebound_fraction=rebound, rebound_intervals=2,
                              comfort_cost_cny_per_kwh=0.01)
    return ScheduleProblem(np.zeros(T), Signals(prices, np.zeros(T)), interruptible=load, dt_h=1.0)


@pytest.mark.parametrize("strategy", ["repair", "lazy", "full"])
def test_interruption_respects_longest_interruption_and_events(strategy: str) -> None:
    options = SolveOptions(integers=strategy)
    one = solve_schedule(_peak_problem(events=1, longest=2), options)
    assert_feasible(_peak_problem(1, 2), one)
    assert np.count_nonzero(one.curtailment_kw) == 2  # one event of two intervals, inside the peak
    assert one.curtailment_kw[2:8].sum() == pytest.approx(200.0)
    two = solve_schedule(_peak_problem(events=2, longest=2), options)
    assert_feasible(_peak_problem(2, 2), two)
    longest, starts = _runs_and_starts(list(two.curtailment_kw[:, 0] > 0))
    assert longest == 2 and len(starts) == 2 and two.curtailment_kw[2:8].sum() == pytest.approx(400.0)
    three = solve_schedule(_peak_problem(events=3, longest=2), options)
    assert_feasible(_peak_problem(3, 2), three)
    assert three.curtailment_kw.sum() == pytest.approx(400.0)  # runs of <= 2 need gaps: 4 of the 6 peak intervals


def test_events_used_today_and_the_next_day() -> None:
    """Days of 6 intervals; today's one event is used, so only tomorrow's peak part (6, 7) is curtailed."""
    problem = _peak_problem(events=1, longest=2)
    problem = replace(problem, intervals_per_day=6, interruptible=replace(problem.interruptible, events_used=1))
    s = solve_schedule(problem)
    assert_feasible(problem, s)
    np.testing.assert_allclose(s.curtailment_kw[:, 0], [0] * 6 + [100, 100] + [0] * 4)


def test_least_curtailment_is_zero_or_at_least_the_floor() -> None:
    """A 70 kW import limit on a 100 kW load forces 30 kW off in interval 1; with a 60 kW floor, 60."""
    load = InterruptibleFleet(np.array([[60.0], [100.0], [60.0]]), [100.0], comfort_cost_cny_per_kwh=2.0)
    problem = ScheduleProblem(np.zeros(3), _flat(3), interruptible=load, dt_h=1.0, import_limit_kw=70.0)
    np.testing.assert_allclose(solve_schedule(problem).curtailment_kw[:, 0], [0.0, 30.0, 0.0])
    floored = replace(problem, interruptible=replace(load, min_curtail_kw=[60.0]))
    s = solve_schedule(floored)
    assert_feasible(floored, s)
    np.testing.assert_allclose(s.curtailment_kw[:, 0], [0.0, 60.0, 0.0])
    np.testing.assert_array_equal(s.interrupted[:, 0], [False, True, False])


def test_interruption_without_limits_is_an_lp_and_curtails_the_whole_peak() -> None:
    problem = _peak_problem(events=np.inf, longest=np.inf)
    s = solve_schedule(problem)
    assert s.integer_devices == 0 and s.runs == 1
    assert build(problem).layout.limited.size == 0
    np.testing.assert_allclose(s.curtailment_kw[:, 0], [0, 0, 100, 100, 100, 100, 100, 100, 0, 0, 0, 0])


def test_rebound_comes_back_in_the_following_intervals() -> None:
    """Half of each curtailed kWh returns, spread over the next two intervals (25 kW in each).

    Curtailing 1 kW at t is worth price[t] - 0.01 - 0.5 * (price[t+1] + price[t+2]) / 2:
    0.49 inside the peak, 0.739 at t = 6, 0.9875 at t = 7 (the rebound falls in cheap 8 and 9).
    """
    problem = _peak_problem(events=1, longest=1, rebound=0.5)
    s = solve_schedule(problem)
    assert_feasible(problem, s)
    (t,) = np.flatnonzero(s.curtailment_kw[:, 0])
    assert t == 7
    np.testing.assert_allclose(s.interruptible_kw[6:11, 0], [-100.0, 0.0, -125.0, -125.0, -100.0])


def test_import_limit_binds_and_an_impossible_limit_is_reported_as_data() -> None:
    """Flat price and wear: the battery moves only what the 90 kW limit forces, 30 kW, and recharges it."""
    battery = BatteryFleet([100], [50], [40], [40], eta_charge=1.0, eta_discharge=1.0, cost_cny_per_kwh=0.01)
    base = np.array([60.0, 120.0, 60.0])
    problem = ScheduleProblem(base, _flat(3), batteries=battery, dt_h=1.0, import_limit_kw=90.0)
    s = solve_schedule(problem)
    assert_feasible(problem, s)
    assert s.grid_import_kw[1] == pytest.approx(90.0)
    assert s.battery_kw[1, 0] == pytest.approx(30.0)
    assert s.battery_kw[:, 0].sum() == pytest.approx(0.0, abs=1e-9)
    impossible = replace(problem, import_limit_kw=50.0)
    bad = solve_schedule(impossible)
    assert bad.status == "Infeasible" and not bad.has_solution
    assert np.isnan(bad.objective_cny) and np.isnan(bad.battery_kw).all()


def test_carbon_price_moves_import_to_the_cleaner_interval() -> None:
    """Same tariff both intervals; a carbon price makes the dirty interval dearer, so the battery shifts import."""
    battery = BatteryFleet([100], [50], [40], [40], eta_charge=1.0, eta_discharge=1.0, cost_cny_per_kwh=0.01)
    T = 2
    signals = Signals(np.full(T, 0.5), np.zeros(T), emission_factor_kg_per_kwh=np.array([0.3, 0.9]))
    problem = ScheduleProblem(np.full(T, 100.0), signals, batteries=battery, dt_h=1.0)
    no_price = solve_schedule(problem)
    np.testing.assert_allclose(no_price.battery_kw, 0.0, atol=1e-9)
    priced = replace(problem, signals=replace(signals, carbon_price_cny_per_t=100.0))
    s = solve_schedule(priced)  # 0.6 kg/kWh * 0.1 CNY/kg = 0.06 CNY/kWh spread > 0.02 wear
    np.testing.assert_allclose(s.battery_kw[:, 0], [-40.0, 40.0], atol=1e-9)
    np.testing.assert_allclose(s.grid_import_kw, [140.0, 60.0], atol=1e-9)
    assert_feasible(priced, s)


@pytest.mark.parametrize(
    ("export_price", "export_limit", "expected_pv"),
    [
        (0.1, np.inf, [80.0, 30.0]),   # export pays: all PV, surplus exported
        (0.0, np.inf, [80.0, 30.0]),   # export free, curtailing costs: still all PV
        (-0.1, np.inf, [50.0, 30.0]),  # export costs more than curtailing: only what the load takes
        (0.1, 10.0, [60.0, 30.0]),     # export limit binds: 50 kW load + 10 kW export
    ],
)
def test_pv_is_curtailed_only_for_negative_export_price_or_export_limit(
        export_price: float, export_limit: float, expected_pv: list[float]) -> None:
    pv = PvFleet(np.array([[80.0], [30.0]]), curtail_cost_cny_per_kwh=[0.05])
    problem = ScheduleProblem(np.full(2, 50.0), Signals(np.full(2, 0.5), np.full(2, export_price)),
                              pv=pv, dt_h=1.0, export_limit_kw=export_limit)
    s = solve_schedule(problem)
    np.testing.assert_allclose(s.pv_kw[:, 0], expected_pv, atol=1e-9)
    assert_feasible(problem, s)


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(ValueError, match="eta_charge"):
        BatteryFleet([100], [50], [10], [10], eta_charge=1.5)
    with pytest.raises(ValueError, match="soc_max_kwh"):
        BatteryFleet([100], [50], [10], [10], soc_min_kwh=60, soc_max_kwh=50)
    with pytest.raises(ValueError, match="pv.potential_kw"):
        ScheduleProblem(np.zeros(3), _flat(3), pv=PvFleet(np.zeros((4, 1))))
    with pytest.raises(ValueError, match="export revenue"):
        ScheduleProblem(np.zeros(2), Signals(np.full(2, 0.3), np.full(2, 0.4)))
    with pytest.raises(ValueError, match="rebound_fraction"):
        InterruptibleFleet(np.ones((2, 1)), [1.0], rebound_fraction=1.5)


# ------------------------------------------------------------- random ----


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def problems(draw: st.DrawFn, limits: bool = True) -> ScheduleProblem:
    """A small random park that is always feasible (import unlimited, terminal SoC below the start)."""
    T = draw(st.integers(2, 12))
    dt = draw(st.sampled_from([0.25, 0.5, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    nb, npv, ns, ni, nev = (draw(st.integers(0, k)) for k in (3, 2, 2, 3, 1))
    cap = rng.uniform(10, 200, nb)
    soc_min = cap * rng.uniform(0, 0.2, nb)
    soc_max = cap * rng.uniform(0.8, 1.0, nb)
    soc0 = rng.uniform(soc_min, soc_max)
    batteries = BatteryFleet(cap, soc0, cap * rng.uniform(0.1, 1, nb), cap * rng.uniform(0.1, 1, nb),
                             soc_min_kwh=soc_min, soc_max_kwh=soc_max, eta_charge=rng.uniform(0.85, 1, nb),
                             eta_discharge=rng.uniform(0.85, 1, nb), soc_terminal_min_kwh=rng.uniform(soc_min, soc0),
                             cost_cny_per_kwh=rng.uniform(0, 0.05, nb))
    pv = PvFleet(rng.uniform(0, 100, (T, npv)) * (rng.random((T, npv)) < 0.8), rng.uniform(0, 0.1, npv))
    window = rng.random((T, ns)) < 0.6
    window[rng.integers(0, T, ns), np.arange(ns)] = True
    rated = rng.uniform(5, 50, ns)
    shiftable = ShiftableFleet(rated, rated * window.sum(0) * dt * rng.uniform(0, 0.9, ns), window)
    arrival = rng.integers(0, T, nev)
    departure = np.minimum(arrival + rng.integers(1, T + 1, nev), T)
    p_max = rng.uniform(3, 20, nev)
    ev = EvFleet(p_max, p_max * (departure - arrival) * dt * rng.uniform(0, 0.9, nev), arrival, departure)
    longest = np.where(rng.random(ni) < 0.7, rng.integers(1, 4, ni), np.inf) if limits else np.inf
    events = np.where(rng.random(ni) < 0.7, rng.integers(1, 3, ni), np.inf) if limits else np.inf
    max_curtail = rng.uniform(0, 60, ni)
    interruptible = InterruptibleFleet(rng.uniform(0, 80, (T, ni)), max_curtail,
                                       min_curtail_kw=max_curtail * rng.choice([0.0, 0.0, 0.5], ni),
                                       max_interruption_intervals=longest, max_events_per_day=events,
                                       rebound_fraction=rng.uniform(0, 1, ni),
                                       rebound_intervals=int(rng.integers(1, 4)),
                                       comfort_cost_cny_per_kwh=rng.uniform(0, 0.3, ni))
    import_price = rng.choice([0.3, 0.6, 1.1], T) + rng.uniform(0, 0.05, T)
    signals = Signals(import_price, import_price - rng.uniform(0.1, 1.2, T), rng.uniform(-50, 500, T),
                      rng.uniform(0.3, 0.9, T), float(rng.uniform(0, 200)))
    export_limit = float(draw(st.sampled_from([np.inf, 0.0, 20.0])))
    return ScheduleProblem(rng.uniform(0, 150, T), signals, batteries, pv, shiftable, interruptible, ev, dt_h=dt,
                           export_limit_kw=export_limit, intervals_per_day=int(draw(st.sampled_from([4, 96]))))


@SMALL
@given(problems())
def test_random_fleets_are_feasible_and_priced_right(problem: ScheduleProblem) -> None:
    s = solve_schedule(problem)
    assert s.status in ("Optimal", "Feasible")
    assert_feasible(problem, s)


@SMALL
@given(problems())
def test_strategies_agree_with_plain_branch_and_bound(problem: ScheduleProblem) -> None:
    """The default ("repair") is never better than the exact MILP, and within its reported gap of it."""
    exact = solve_schedule(problem, EXACT)
    assert exact.status == "Optimal"
    assert_feasible(problem, exact)
    scale = 1e-6 * max(1.0, abs(exact.objective_cny))
    for strategy in ("repair", "lazy"):
        s = solve_schedule(problem, SolveOptions(integers=strategy))
        assert_feasible(problem, s)
        assert s.objective_cny >= exact.objective_cny - scale
        assert s.lower_bound_cny <= exact.objective_cny + scale
        if s.status == "Optimal":
            assert s.objective_cny <= exact.objective_cny + 1e-4 * abs(exact.objective_cny) + scale


# ----------------------------------------------------- receding horizon ----


def _next_data(problem: ScheduleProblem, rng: np.random.Generator, roll: int) -> ScheduleProblem:
    """The same park later: prices, forecasts and SoC changed (rolled ``roll`` intervals), same limits."""
    def r(a: np.ndarray) -> np.ndarray:
        return np.roll(a, -roll, axis=0)

    sig = problem.signals
    signals = replace(sig, import_price_cny_per_kwh=r(sig.import_price_cny_per_kwh) + 0.05,
                      export_price_cny_per_kwh=r(sig.export_price_cny_per_kwh),
                      market_price_cny_per_mwh=r(sig.market_price_cny_per_mwh),
                      emission_factor_kg_per_kwh=r(sig.emission_factor_kg_per_kwh))
    b = problem.batteries
    batteries = replace(b, soc0_kwh=rng.uniform(b.soc_terminal_min_kwh, b.soc_max_kwh))
    pv = replace(problem.pv, potential_kw=r(problem.pv.potential_kw) * rng.uniform(0.8, 1.2))
    shiftable = replace(problem.shiftable, window=r(problem.shiftable.window))
    interruptible = replace(problem.interruptible, natural_load_kw=r(problem.interruptible.natural_load_kw),
                            events_used=np.minimum(1.0, problem.interruptible.max_events_per_day))
    return replace(problem, base_load_kw=r(problem.base_load_kw), signals=signals, batteries=batteries, pv=pv,
                   shiftable=shiftable, interruptible=interruptible)


@SMALL
@given(problems(), st.sampled_from([0, 1, 3]), st.integers(0, 2**32 - 1))
def test_receding_resolve_equals_a_fresh_solve(problem: ScheduleProblem, roll: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scheduler = HorizonScheduler(problem)
    first = scheduler.solve()
    assert first.objective_cny == pytest.approx(solve_schedule(problem).objective_cny, rel=1e-6, abs=1e-6)
    for _ in range(2):
        problem = _next_data(problem, rng, roll)
        again = scheduler.step(problem, shift=roll)
        fresh = solve_schedule(problem)
        assert_feasible(problem, again)
        assert again.lower_bound_cny == pytest.approx(fresh.lower_bound_cny, rel=1e-6, abs=1e-6)  # same relaxation
        if again.integer_devices == fresh.integer_devices == 0:  # an LP optimum: equal to round-off
            assert again.objective_cny == pytest.approx(fresh.objective_cny, rel=1e-6, abs=1e-6)
        elif again.optimal and fresh.optimal:  # both within the MIP gap of the same bound
            assert again.objective_cny == pytest.approx(fresh.objective_cny, rel=2e-4, abs=1e-6)


def test_scheduler_refuses_a_problem_that_needs_another_matrix() -> None:
    problem = _peak_problem(events=1, longest=2)
    scheduler = HorizonScheduler(problem)
    scheduler.solve()
    changed = replace(problem, interruptible=replace(problem.interruptible, max_interruption_intervals=3))
    with pytest.raises(ValueError, match="different matrix"):
        scheduler.update(changed)
    cheaper = replace(problem, signals=replace(problem.signals, import_price_cny_per_kwh=np.full(12, 0.005)))
    assert scheduler.step(cheaper).curtailment_kw.sum() == 0.0  # below the comfort cost: nothing to gain


# ---------------------------------------------------------- flexibility ----


def _store(soc0: float = 50.0) -> ScheduleProblem:
    battery = BatteryFleet([100], [soc0], [40], [40], eta_charge=1.0, eta_discharge=1.0, soc_terminal_min_kwh=[soc0],
                           cost_cny_per_kwh=0.01)
    return ScheduleProblem(np.full(8, 100.0), _flat(8), batteries=battery, dt_h=1.0)


def test_flexibility_of_one_battery_by_hand() -> None:
    """Idle at the optimum (flat price, wear 0.01/kWh, must end at 50 kWh).

    * up in interval 2 alone: 40 kW, the power limit (recharged later);
    * up as a block over 1..4: what can be stored before it, 50 kWh + 40 kWh charged
      in interval 0, over 4 h = 22.5 kW (intervals 5..7 recharge to 50);
    * down over 5..6: charge at 40 kW both, having made room earlier, give back in 7;
    * with a 0.2 CNY budget: each kW offered for an hour costs 0.02 (out and back in): 10 kW.
    """
    problem = _store()
    single = maximise_flexibility(problem, [2], "up")
    assert single.status == "Optimal"
    assert single.offered_kw[2] == pytest.approx(40.0, rel=1e-6)
    assert single.offered_kw.sum() == pytest.approx(40.0, rel=1e-6)
    block = maximise_flexibility(problem, [1, 2, 3, 4], "up")
    np.testing.assert_allclose(block.offered_kw[1:5], 90.0 / 4, rtol=1e-6)
    assert_feasible(problem, block.schedule)
    assert block.extra_cost_cny > 0  # wear on the extra throughput
    down = maximise_flexibility(problem, [5, 6], "down")
    np.testing.assert_allclose(down.offered_kw[5:7], 40.0, rtol=1e-6)  # charge at full power, give back in 7
    budget = maximise_flexibility(problem, [2], "up", cost_budget_cny=0.2)
    assert budget.extra_cost_cny == pytest.approx(0.2, abs=1e-6)
    assert budget.offered_kw[2] == pytest.approx(10.0, rel=1e-5)
    scheduler = HorizonScheduler(problem)
    scheduler.solve()
    assert scheduler.maximise_flexibility([2], "up").offered_kw[2] == pytest.approx(40.0, rel=1e-6)


@SMALL
@given(problems(), st.sampled_from(["up", "down"]), st.integers(0, 2**32 - 1))
def test_flexibility_offers_at_least_the_pv_headroom_left_by_the_optimum(
        problem: ScheduleProblem, direction: str, seed: int) -> None:
    """Moving only PV, within the grid limits, is always possible: the offer is at least that."""
    rng = np.random.default_rng(seed)
    mask = rng.random(problem.intervals) < 0.5
    mask[rng.integers(problem.intervals)] = True
    offer = maximise_flexibility(problem, mask, direction, shape="sum")  # type: ignore[arg-type]
    base = offer.baseline
    assert_feasible(problem, offer.schedule)
    pv = base.pv_kw.sum(axis=1)
    net = base.grid_import_kw - base.grid_export_kw
    offered_net = offer.schedule.grid_import_kw - offer.schedule.grid_export_kw
    if direction == "up":
        headroom = np.minimum(problem.pv.potential_kw.sum(axis=1) - pv,
                              base.grid_import_kw + problem.export_limit_kw - base.grid_export_kw)
        moved = net - offered_net
    else:
        headroom = np.minimum(pv, problem.import_limit_kw - base.grid_import_kw + base.grid_export_kw)
        moved = offered_net - net
    tol = _tol(problem) * 10
    assert np.all(offer.offered_kw >= 0) and np.all(offer.offered_kw[~mask] == 0)
    assert offer.offered_kw[mask].sum() >= headroom[mask].sum() - tol
    assert np.all(moved[mask] >= offer.offered_kw[mask] - tol)  # the schedule delivers what is offered
