"""Proof of ``dispatch.network.allocate_with_groups``: random instances against independent references.

References: ``scipy.optimize.linprog`` (dense rows, both sides of each cap as
``A_ub``) for the LP, and for the QP a HiGHS model built through
``addVars``/``addRows`` with one auxiliary variable per group total, a
different formulation from the one under test.
"""

from __future__ import annotations

import highspy
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import linprog

from dispatch import allocate
from dispatch.network import CAP_TOLERANCE, GroupAllocation, allocate_with_groups
from dispatch.reference import objective

EXAMPLES = settings(max_examples=100, deadline=None)
TIED_COSTS = (-5.0, 0.0, 1.0, 2.0, 3.5)


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats on a 1e-6 grid (finer is not physical and upsets HiGHS's QP solver)."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 6))


@st.composite
def instances(draw: st.DrawFn, quadratic: bool | None = None, compatible: bool = True) -> dict:
    """A random capped instance. ``compatible``: every group's caps reachable within its devices' bounds."""
    n = draw(st.integers(0, 25))
    groups = draw(st.integers(0, 4))
    lower = draw(arrays(np.float64, n, elements=_floats(-100.0, 100.0)))
    width = draw(arrays(np.float64, n, elements=st.one_of(st.just(0.0), _floats(0.0, 100.0))))
    upper = lower + width
    cost = draw(arrays(np.float64, n, elements=st.one_of(st.sampled_from(TIED_COSTS), _floats(-50.0, 50.0))))
    if quadratic is None:
        quadratic = draw(st.booleans())
    quad = None
    if quadratic:
        quad = draw(arrays(np.float64, n, elements=st.one_of(st.just(0.0), _floats(1e-2, 5.0))))
    group_of = draw(arrays(np.int64, n, elements=st.integers(-1, groups - 1))) if groups else np.full(n, -1)
    group_min, group_max = np.empty(groups), np.empty(groups)
    for g in range(groups):
        low, high = float(lower[group_of == g].sum()), float(upper[group_of == g].sum())
        a, b = sorted(draw(st.lists(_floats(0.0, 1.0), min_size=2, max_size=2)))
        if not compatible and draw(st.booleans()):
            # Caps the devices cannot meet: entirely above or below their reach.
            shift = draw(_floats(1.0, 50.0))
            a, b = (high + shift, high + 2 * shift) if draw(st.booleans()) else (low - 2 * shift, low - shift)
        else:
            a, b = low + a * (high - low), low + b * (high - low)
        group_min[g] = -np.inf if draw(st.integers(0, 4)) == 0 else a
        group_max[g] = np.inf if draw(st.integers(0, 4)) == 0 else max(b, a)
    reach_low, reach_high = _reachable(lower, upper, group_of, group_min, group_max)
    kind = draw(st.sampled_from(["inside", "inside", "inside", "at_low", "at_high", "below", "above", "free"]))
    if kind == "inside":
        target = min(max(reach_low + draw(_floats(0.0, 1.0)) * (reach_high - reach_low), reach_low), reach_high)
    elif kind == "at_low":
        target = reach_low
    elif kind == "at_high":
        target = reach_high
    elif kind == "below":
        target = reach_low - draw(_floats(1e-3, 100.0))
    elif kind == "above":
        target = reach_high + draw(_floats(1e-3, 100.0))
    else:  # anywhere within the device bounds, caps ignored
        target = float(lower.sum()) + draw(_floats(0.0, 1.0)) * float(width.sum())
    return {"target_kw": float(target), "lower_kw": lower, "upper_kw": upper, "cost": cost, "quad_cost": quad,
            "group_of": group_of, "group_min_kw": group_min, "group_max_kw": group_max}


def _reachable(lower, upper, group_of, group_min, group_max) -> tuple[float, float]:
    """Lowest and highest total meeting the bounds and the (reachable part of the) caps [kW]."""
    low = float(lower[group_of < 0].sum())
    high = float(upper[group_of < 0].sum())
    for g in range(group_min.size):
        g_low, g_high = float(lower[group_of == g].sum()), float(upper[group_of == g].sum())
        low += min(max(group_min[g], g_low), g_high)
        high += min(max(group_max[g], g_low), g_high)
    return low, high


def _scale(case: dict) -> float:
    """Magnitude of the objective's terms [CNY/h], for relative tolerances."""
    reach = np.maximum(np.abs(case["lower_kw"]), np.abs(case["upper_kw"]))
    size = float(np.sum(np.abs(case["cost"]) * reach))
    if case["quad_cost"] is not None:
        size += float(np.sum(0.5 * case["quad_cost"] * reach**2))
    return max(1.0, size)


def _kw_tol(case: dict) -> float:
    return 1e-6 * max(1.0, float(np.abs(case["lower_kw"]).sum() + np.abs(case["upper_kw"]).sum()))


def _cap_rows(case: dict) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``A_ub x <= b_ub`` for the finite caps."""
    n, group_of = case["lower_kw"].size, case["group_of"]
    rows, rhs = [], []
    for g in range(case["group_min_kw"].size):
        member = (group_of == g).astype(float)
        if np.isfinite(case["group_max_kw"][g]):
            rows.append(member)
            rhs.append(case["group_max_kw"][g])
        if np.isfinite(case["group_min_kw"][g]):
            rows.append(-member)
            rhs.append(-case["group_min_kw"][g])
    return np.array(rows, dtype=float).reshape(len(rows), n), np.array(rhs, dtype=float)


def _linprog_shortfall(case: dict) -> float:
    """Least |target - total| over the bounds and caps, with two slacks: ``target - total`` [kW]."""
    n = case["lower_kw"].size
    a_ub, b_ub = _cap_rows(case)
    c = np.concatenate((np.zeros(n), [1.0, 1.0]))
    a_eq = np.concatenate((np.ones(n), [1.0, -1.0]))[None, :]
    bounds = list(zip(case["lower_kw"], case["upper_kw"], strict=True)) + [(0, None), (0, None)]
    res = linprog(c, A_ub=np.hstack((a_ub, np.zeros((a_ub.shape[0], 2)))) if a_ub.size else None,
                  b_ub=b_ub if a_ub.size else None, A_eq=a_eq, b_eq=[case["target_kw"]], bounds=bounds,
                  method="highs")
    assert res.status == 0, res.message
    return float(res.x[n] - res.x[n + 1])


def _linprog_objective(case: dict, total: float) -> float:
    n = case["lower_kw"].size
    if n == 0:
        return 0.0
    a_ub, b_ub = _cap_rows(case)
    res = linprog(case["cost"], A_ub=a_ub if a_ub.size else None, b_ub=b_ub if a_ub.size else None,
                  A_eq=np.ones((1, n)), b_eq=[total], bounds=list(zip(case["lower_kw"], case["upper_kw"], strict=True)),
                  method="highs")
    assert res.status == 0, res.message
    return float(res.fun)


def _qp_objective(case: dict, total: float) -> tuple[float | None, bool]:
    """QP optimum through ``addVars``/``addRows`` with group-total variables ``y_g`` [CNY/h], and whether proven."""
    lower, upper, cost, quad = case["lower_kw"], case["upper_kw"], case["cost"], case["quad_cost"]
    group_of, groups = case["group_of"], case["group_min_kw"].size
    # Fixed devices as constants: HiGHS's QP solver can cycle on Hessian entries of fixed columns.
    free = lower < upper
    constant = objective(lower[~free], cost[~free], quad[~free])
    fixed_in = np.array([lower[~free & (group_of == g)].sum() for g in range(groups)])
    index = np.flatnonzero(free)
    n = index.size
    if n == 0:
        return constant, True
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("qp_regularization_value", 0.0)
    h.addVars(n, lower[index], upper[index])
    h.addVars(groups, case["group_min_kw"] - fixed_in, case["group_max_kw"] - fixed_in)
    h.changeColsCost(n, np.arange(n, dtype=np.int32), cost[index])
    rest = total - float(lower[~free].sum())
    h.addRow(rest, rest, n, np.arange(n, dtype=np.int32), np.ones(n))
    for g in range(groups):
        members = np.flatnonzero(group_of[index] == g).astype(np.int32)
        idx = np.append(members, n + g).astype(np.int32)
        h.addRow(0.0, 0.0, idx.size, idx, np.append(np.ones(members.size), -1.0))
    diag = np.concatenate((quad[index], np.zeros(groups)))
    has = diag > 0
    if has.any():
        h.passHessian(diag.size, int(has.sum()), highspy.HessianFormat.kTriangular,
                      np.concatenate(([0], np.cumsum(has))).astype(np.int32),
                      np.flatnonzero(has).astype(np.int32), diag[has])
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    value = float(h.getInfo().objective_function_value) + constant
    if status == "Optimal":
        return value, True
    # HiGHS 1.16's QP solver can stop with "Solve error" at a correct corner point:
    # then its point, if feasible, still bounds the optimum from above.
    # Its point can also be infeasible then: no reference (None) for that instance.
    x = np.asarray(h.getSolution().col_value)
    tol = 1e-7 * max(1.0, float(np.abs(x).sum()))
    assert status == "Solve error" and x.size == n + groups, status
    feasible = (np.all(x[:n] >= lower[index] - tol) and np.all(x[:n] <= upper[index] + tol)
                and abs(x[:n].sum() - rest) <= tol
                and all(abs(x[:n][group_of[index] == g].sum() - x[n + g]) <= tol for g in range(groups)))
    return (objective(x[:n], cost[index], quad[index]) + constant if feasible else None), False




def _check_feasibility(case: dict, result: GroupAllocation) -> None:
    tol = _kw_tol(case)
    p = result.setpoints_kw
    assert p.shape == case["lower_kw"].shape
    assert np.all(p >= case["lower_kw"]) and np.all(p <= case["upper_kw"]), "device bounds are exact"
    group_of = case["group_of"]
    for g in range(case["group_min_kw"].size):
        total = float(p[group_of == g].sum())
        assert result.group_totals_kw[g] == pytest.approx(total, abs=tol)
        assert case["group_min_kw"][g] - tol <= total <= case["group_max_kw"][g] + tol
    assert np.all(result.group_excess_kw == 0.0)
    assert result.total_kw == pytest.approx(case["target_kw"] - result.shortfall_kw, abs=tol)


@EXAMPLES
@given(instances(quadratic=False))
def test_linear_matches_linprog(case: dict) -> None:
    result = allocate_with_groups(**case)
    event(f"path={result.path}")
    assert result.status == "Optimal"
    _check_feasibility(case, result)
    shortfall = _linprog_shortfall(case)
    assert result.shortfall_kw == pytest.approx(shortfall, abs=_kw_tol(case))
    assert result.feasible == (result.shortfall_kw == 0.0)
    if shortfall == 0.0:
        assert result.total_kw == pytest.approx(case["target_kw"], abs=_kw_tol(case))
    ours = objective(result.setpoints_kw, case["cost"])
    reference = _linprog_objective(case, case["target_kw"] - shortfall)
    assert ours == pytest.approx(reference, rel=1e-6, abs=1e-6 * _scale(case))


@EXAMPLES
@given(instances(quadratic=True))
def test_quadratic_matches_independent_highs_model(case: dict) -> None:
    result = allocate_with_groups(**case)
    event(f"path={result.path} status={result.status}")
    _check_feasibility(case, result)
    total = case["target_kw"] - result.shortfall_kw
    reach_low, reach_high = _reachable(case["lower_kw"], case["upper_kw"], case["group_of"],
                                       case["group_min_kw"], case["group_max_kw"])
    assert total == pytest.approx(min(max(case["target_kw"], reach_low), reach_high), abs=_kw_tol(case))
    ours = objective(result.setpoints_kw, case["cost"], case["quad_cost"])
    if not (case["quad_cost"] > 0).any():
        reference, proven = _linprog_objective(case, total), True
    else:
        reference, proven = _qp_objective(case, total)
    event(f"reference proven={proven} found={reference is not None}")
    if reference is None:
        return
    tol = 1e-6 * max(abs(reference), _scale(case))
    if proven:
        assert ours == pytest.approx(reference, abs=tol)
    else:
        assert ours <= reference + tol


@EXAMPLES
@given(instances())
def test_fast_path_exactly_when_unconstrained_optimum_meets_caps(case: dict) -> None:
    result = allocate_with_groups(**case)
    reach_low, reach_high = _reachable(case["lower_kw"], case["upper_kw"], case["group_of"],
                                       case["group_min_kw"], case["group_max_kw"])
    free = allocate(min(max(case["target_kw"], reach_low), reach_high), case["lower_kw"], case["upper_kw"],
                    case["cost"], case["quad_cost"]).setpoints_kw
    meets = True
    for g in range(case["group_min_kw"].size):
        member = case["group_of"] == g
        total = float(free[member].sum())
        slack = CAP_TOLERANCE * max(1.0, float(np.abs(free[member]).sum()),
                                    *(abs(c) for c in (case["group_min_kw"][g], case["group_max_kw"][g])
                                      if np.isfinite(c)))
        meets &= case["group_min_kw"][g] - slack <= total <= case["group_max_kw"][g] + slack
    event(f"meets={meets}")
    assert result.path == ("fast" if meets else "highs")
    if meets:
        # The reachable total is summed in another order here: equal up to rounding.
        np.testing.assert_allclose(result.setpoints_kw, free, rtol=1e-12, atol=1e-9 * _kw_tol(case))


@EXAMPLES
@given(instances(compatible=False))
def test_unreachable_caps_are_reported(case: dict) -> None:
    result = allocate_with_groups(**case)
    p, group_of = result.setpoints_kw, case["group_of"]
    assert np.all(p >= case["lower_kw"]) and np.all(p <= case["upper_kw"])
    tol = _kw_tol(case)
    unreachable = False
    for g in range(case["group_min_kw"].size):
        low, high = case["lower_kw"][group_of == g].sum(), case["upper_kw"][group_of == g].sum()
        g_min, g_max = case["group_min_kw"][g], case["group_max_kw"][g]
        total = result.group_totals_kw[g]
        if g_min > high:  # every device of the group at its upper bound, as close as it gets
            unreachable = True
            assert total == pytest.approx(high, abs=tol)
            assert result.group_excess_kw[g] == pytest.approx(high - g_min, abs=tol)
        elif g_max < low:
            unreachable = True
            assert total == pytest.approx(low, abs=tol)
            assert result.group_excess_kw[g] == pytest.approx(low - g_max, abs=tol)
        else:
            assert g_min - tol <= total <= g_max + tol
            assert result.group_excess_kw[g] == 0.0
    event(f"unreachable={unreachable}")
    assert not (unreachable and result.feasible)


# ------------------------------------------------------------- examples ----


def test_binding_feeder_cap_moves_power_to_the_other_feeder() -> None:
    # Feeder 0 holds the two cheapest devices but may carry only 3 kW.
    result = allocate_with_groups(10.0, [0, 0, 0, 0], [5, 5, 5, 5], [1, 2, 3, 4], None,
                                  np.array([0, 0, 1, 1]), [-np.inf, -np.inf], [3.0, np.inf])
    assert result.path == "highs" and result.status == "Optimal" and result.feasible
    np.testing.assert_allclose(result.setpoints_kw, [3, 0, 5, 2], atol=1e-9)
    np.testing.assert_allclose(result.group_totals_kw, [3, 7], atol=1e-9)


def test_caps_that_do_not_bind_take_the_fast_path() -> None:
    result = allocate_with_groups(6.0, [0, 0, 0, 0], [5, 5, 5, 5], [1, 2, 3, 4], None,
                                  np.array([0, 0, 1, 1]), None, [8.0, 8.0])
    assert result.path == "fast" and result.feasible
    np.testing.assert_array_equal(result.setpoints_kw, [5, 1, 0, 0])


def test_caps_out_of_reach_of_the_target_give_a_shortfall() -> None:
    result = allocate_with_groups(10.0, [0, 0, 0, 0], [5, 5, 5, 5], [1, 2, 3, 4], [1, 1, 1, 1],
                                  np.array([0, 0, 1, 1]), None, [3.0, 4.0])
    assert result.shortfall_kw == pytest.approx(3.0)
    assert result.total_kw == pytest.approx(7.0, abs=1e-6)
    assert not result.feasible and result.status == "Optimal"


def test_without_groups_it_is_allocate() -> None:
    rng = np.random.default_rng(3)
    lower, cost = rng.uniform(-5, 0, 50), rng.uniform(0, 10, 50)
    upper = lower + rng.uniform(0, 5, 50)
    result = allocate_with_groups(1.0, lower, upper, cost)
    assert result.path == "fast" and result.group_totals_kw.size == 0
    np.testing.assert_array_equal(result.setpoints_kw, allocate(1.0, lower, upper, cost).setpoints_kw)


def test_empty_fleet_and_fixed_only_group() -> None:
    empty = allocate_with_groups(0.0, [], [], [], None, np.array([], dtype=int), [0.0], [1.0])
    assert empty.path == "fast" and empty.total_kw == 0.0 and empty.group_totals_kw.tolist() == [0.0]
    assert empty.feasible and empty.shortfall_kw == 0.0
    fixed = allocate_with_groups(5.0, [2.0, 0.0], [2.0, 4.0], [1.0, 1.0], None, np.array([0, -1]), [0.0], [1.0])
    assert fixed.group_excess_kw.tolist() == [1.0] and not fixed.feasible
    np.testing.assert_array_equal(fixed.setpoints_kw, [2.0, 3.0])


def test_whole_park_group_is_the_grid_connection() -> None:
    result = allocate_with_groups(10.0, [0, 0, 0], [5, 5, 5], [1, 2, 3], None, np.zeros(3, dtype=int), [-2.0], [6.0])
    assert result.shortfall_kw == pytest.approx(4.0) and result.total_kw == pytest.approx(6.0)
    np.testing.assert_array_equal(result.setpoints_kw, [5, 1, 0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_of": np.array([0, 2]), "group_max_kw": [1.0, 1.0]}, "group_of\\[1\\] = 2"),
        ({"group_of": np.array([0, -2]), "group_max_kw": [1.0]}, "group_of\\[1\\]"),
        ({"group_of": np.array([0.0, 0.0]), "group_max_kw": [1.0]}, "integers"),
        ({"group_of": np.array([0]), "group_max_kw": [1.0]}, "2 elements"),
        ({"group_of": np.array([0, 0]), "group_min_kw": [2.0], "group_max_kw": [1.0]}, "group_max_kw\\[0\\]"),
        ({"group_of": np.array([0, 0]), "group_min_kw": [1.0, 2.0], "group_max_kw": [3.0]}, "differ in length"),
        ({"group_of": np.array([0, 0]), "group_max_kw": [np.nan]}, "group_max_kw\\[0\\]"),
        ({"group_of": np.array([0, 0]), "group_max_kw": [-np.inf]}, "group_max_kw\\[0\\]"),
    ],
)
def test_invalid_groups_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        allocate_with_groups(1.0, [0.0, 0.0], [1.0, 1.0], [1.0, 2.0], **kwargs)


# ------------------------------------------------- baseline-relative, with caps ----


def _reference_from_baseline(target, baseline, lower, upper, cost, group_of, group_min, group_max):
    """``min sum(cost*t)``, ``t >= |p - b|``, through linprog over (p, t): another formulation than the split.

    Returns (reachable total, optimal cost) or None when the caps cannot be met at all.
    """
    n, groups = len(lower), len(group_min)
    if n == 0:
        return 0.0, 0.0  # nothing can move: the only reachable total is 0
    rows, bounds_ub = [], []
    eye = np.eye(n)
    rows += [np.hstack((eye, -eye)), np.hstack((-eye, -eye))]  # p - t <= b, -p - t <= -b
    bounds_ub += [baseline, -baseline]
    for g in range(groups):
        member = (group_of == g).astype(float)
        if np.isfinite(group_max[g]):
            rows.append(np.hstack((member, np.zeros(n)))[None, :])
            bounds_ub.append([group_max[g]])
        if np.isfinite(group_min[g]):
            rows.append(np.hstack((-member, np.zeros(n)))[None, :])
            bounds_ub.append([-group_min[g]])
    a_ub, b_ub = np.vstack(rows), np.concatenate([np.atleast_1d(b) for b in bounds_ub])
    var_bounds = list(zip(lower, upper)) + [(0, None)] * n
    ends = []
    for sign in (1.0, -1.0):
        res = linprog(np.concatenate((sign * np.ones(n), np.zeros(n))), A_ub=a_ub, b_ub=b_ub, bounds=var_bounds)
        if res.status != 0:
            return None
        ends.append(sign * res.fun)
    reachable = min(max(target, ends[0]), ends[1])
    res = linprog(np.concatenate((np.zeros(n), cost)), A_ub=a_ub, b_ub=b_ub,
                  A_eq=np.hstack((np.ones(n), np.zeros(n)))[None, :], b_eq=[reachable], bounds=var_bounds)
    assert res.status == 0, res.message
    return reachable, float(res.fun)


@st.composite
def baseline_instances(draw: st.DrawFn) -> dict:
    n = draw(st.integers(0, 15))
    groups = draw(st.integers(0, 3))
    lower = draw(arrays(np.float64, n, elements=_floats(-100.0, 100.0)))
    upper = lower + draw(arrays(np.float64, n, elements=st.one_of(st.just(0.0), _floats(0.0, 100.0))))
    baseline = lower + draw(arrays(np.float64, n, elements=_floats(0.0, 1.0))) * (upper - lower)
    cost = draw(arrays(np.float64, n, elements=st.one_of(st.sampled_from((0.0, 1.0, 2.0)), _floats(0.0, 50.0))))
    group_of = draw(arrays(np.int64, n, elements=st.integers(-1, groups - 1))) if groups else np.full(n, -1)
    group_min, group_max = np.full(groups, -np.inf), np.full(groups, np.inf)
    for g in range(groups):
        low, high = float(lower[group_of == g].sum()), float(upper[group_of == g].sum())
        a, b = sorted(draw(st.lists(_floats(0.0, 1.0), min_size=2, max_size=2)))
        if draw(st.booleans()):
            group_max[g] = low + b * (high - low)
        if draw(st.booleans()):
            group_min[g] = low + a * (high - low)
    total_low, total_high = float(lower.sum()), float(upper.sum())
    target = draw(_floats(total_low - 50.0, total_high + 50.0))
    return dict(target=target, baseline=baseline, lower=lower, upper=upper, cost=cost, group_of=group_of,
                group_min=group_min, group_max=group_max)


@EXAMPLES
@given(baseline_instances())
def test_baseline_allocation_with_caps_matches_an_independent_lp(case: dict) -> None:
    from dispatch import allocate_from_baseline_with_groups

    result = allocate_from_baseline_with_groups(
        case["target"], case["baseline"], case["lower"], case["upper"], case["cost"],
        case["group_of"], case["group_min"], case["group_max"],
    )
    reference = _reference_from_baseline(**case)
    assert reference is not None  # caps drawn inside each group's reach
    reachable, best_cost = reference
    p = result.setpoints_kw
    scale = 1.0 + np.abs(p).sum()
    assert np.all(p >= case["lower"] - 1e-9) and np.all(p <= case["upper"] + 1e-9)
    assert abs(p.sum() - reachable) <= 1e-6 * scale
    assert abs(result.shortfall_kw - (case["target"] - reachable)) <= 1e-6 * scale
    for g in range(case["group_min"].size):
        total = p[case["group_of"] == g].sum()
        assert case["group_min"][g] - 1e-6 * scale <= total <= case["group_max"][g] + 1e-6 * scale
    cost = float(np.dot(case["cost"], np.abs(p - case["baseline"])))
    assert cost <= best_cost + 1e-6 * max(1.0, abs(best_cost), scale)
    event(result.path)


def test_a_feeder_over_its_cap_sheds_while_others_make_up_the_target() -> None:
    from dispatch import allocate_from_baseline, allocate_from_baseline_with_groups

    baseline = np.array([5.0, 5.0, 5.0, 5.0])
    lower, upper, cost = np.zeros(4), np.full(4, 10.0), np.array([1.0, 2.0, 3.0, 4.0])
    free = allocate_from_baseline(26.0, baseline, lower, upper, cost)
    same = allocate_from_baseline_with_groups(26.0, baseline, lower, upper, cost)
    np.testing.assert_allclose(same.setpoints_kw, free.setpoints_kw)
    assert same.path == "fast"
    capped = allocate_from_baseline_with_groups(20.0, baseline, lower, upper, cost, [0, 0, -1, -1], [-np.inf], [6.0])
    # Feeder 0 (devices 0, 1) holds 10 kW at baseline and may carry 6: its cheapest device sheds 4 kW
    # and the cheapest device outside it makes the 4 kW up.
    np.testing.assert_allclose(capped.setpoints_kw, [1.0, 5.0, 9.0, 5.0], atol=1e-7)
    assert capped.path == "highs" and capped.feasible
    np.testing.assert_allclose(capped.group_totals_kw, [6.0], atol=1e-7)
