"""Proof of ``dispatch.allocate`` and ``allocate_from_baseline``: random instances against HiGHS and KKT."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dispatch import Allocation, allocate, allocate_from_baseline
from dispatch.reference import objective, solve_baseline_with_highs, solve_with_highs

# ``dispatch.allocate`` as an attribute is the function; patching constants needs the module.
allocate_module = importlib.import_module("dispatch.allocate")

EXAMPLES = settings(max_examples=200, deadline=None)
TIED_COSTS = (-5.0, 0.0, 1.0, 2.0, 3.5)


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats on a 1e-6 grid: kW and CNY values finer than that are not physical, and
    magnitudes like 1e-300 send HiGHS's QP solver into endless loops."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 6))


@st.composite
def instances(draw: st.DrawFn, quadratic: bool | None = None) -> dict:
    """A random allocation instance; ``quadratic`` None draws either kind."""
    n = draw(st.integers(0, 60))
    lower = draw(arrays(np.float64, n, elements=_floats(-1000.0, 1000.0)))
    # Zero widths are common in practice (held devices), so draw them often.
    width = draw(arrays(np.float64, n, elements=st.one_of(st.just(0.0), _floats(0.0, 500.0))))
    cost = draw(arrays(np.float64, n, elements=st.one_of(st.sampled_from(TIED_COSTS), _floats(-100.0, 100.0))))
    if quadratic is None:
        quadratic = draw(st.booleans())
    quad = None
    if quadratic:
        quad = draw(arrays(np.float64, n, elements=st.one_of(st.just(0.0), _floats(1e-3, 10.0))))
    upper = lower + width
    low_total, high_total = float(lower.sum()), float(upper.sum())
    kind = draw(st.sampled_from(["inside", "inside", "inside", "at_lower", "at_upper", "below", "above"]))
    if kind == "inside":
        target = low_total + draw(_floats(0.0, 1.0)) * (high_total - low_total)
        target = min(max(target, low_total), high_total)
    elif kind == "at_lower":
        target = low_total
    elif kind == "at_upper":
        target = high_total
    elif kind == "below":
        target = low_total - draw(_floats(1e-3, 1e4))
    else:
        target = high_total + draw(_floats(1e-3, 1e4))
    return {"target_kw": target, "lower_kw": lower, "upper_kw": upper, "cost": cost, "quad_cost": quad}


@contextmanager
def narrowing_on_small_fleets() -> Iterator[None]:
    """Make the large-fleet code paths (sampling, bracketing) run on a handful of devices."""
    with (
        mock.patch.object(allocate_module, "_SORT_BLOCK", 3),
        mock.patch.object(allocate_module, "_SAMPLE", 4),
        mock.patch.object(allocate_module, "_MARGIN", 0.01),
    ):
        yield


def _scale(lower: np.ndarray, upper: np.ndarray, cost: np.ndarray, quad: np.ndarray | None) -> float:
    """Magnitude of the objective's terms [CNY/h], for relative tolerances."""
    reach = np.maximum(np.abs(lower), np.abs(upper))
    size = float(np.sum(np.abs(cost) * reach))
    if quad is not None:
        size += float(np.sum(0.5 * quad * reach**2))
    return max(1.0, size)


def assert_bounds(result: Allocation, lower: np.ndarray, upper: np.ndarray) -> None:
    p = result.setpoints_kw
    assert p.shape == lower.shape
    assert np.all(p >= lower) and np.all(p <= upper)


def assert_total(result: Allocation, target: float, lower: np.ndarray, upper: np.ndarray) -> None:
    low_total, high_total = float(lower.sum()), float(upper.sum())
    total = float(result.setpoints_kw.sum())
    tol = 1e-9 * max(1.0, float(np.abs(lower).sum() + np.abs(upper).sum()))
    if low_total <= target <= high_total:
        assert result.feasible
        assert result.shortfall_kw == 0.0
        assert abs(total - target) <= max(1e-6 * max(1.0, abs(target)), tol)
    else:
        assert not result.feasible
        assert np.isnan(result.price)
        if target > high_total:
            np.testing.assert_array_equal(result.setpoints_kw, upper)
            assert result.shortfall_kw > 0.0
        else:
            np.testing.assert_array_equal(result.setpoints_kw, lower)
            assert result.shortfall_kw < 0.0
        assert result.shortfall_kw == pytest.approx(target - total, abs=tol)


def assert_kkt(result: Allocation, lower: np.ndarray, upper: np.ndarray, cost: np.ndarray,
               quad: np.ndarray | None) -> None:
    """``price`` is a valid multiplier: devices inside their bounds have marginal cost == price,
    devices at upper have marginal cost <= price, at lower >= price."""
    q = np.zeros_like(cost) if quad is None else quad
    movable = upper > lower
    if not movable.any():
        assert np.isnan(result.price)
        return
    price = result.price
    assert np.isfinite(price)
    p = result.setpoints_kw
    marginal = cost + q * p
    reach = np.maximum(abs(lower), abs(upper))
    tol = 1e-7 * (1.0 + abs(price) + float(np.max(np.abs(cost))) + float(np.max(q * reach)))
    gap = 1e-9 * (1.0 + float(np.max(reach)))
    at_lower = movable & (p <= lower + gap)
    at_upper = movable & (p >= upper - gap)
    inside = movable & ~at_lower & ~at_upper
    assert np.all(np.abs(marginal[inside] - price) <= tol), (marginal[inside], price)
    assert np.all(marginal[at_upper & ~at_lower] <= price + tol)
    assert np.all(marginal[at_lower & ~at_upper] >= price - tol)


def assert_matches_highs(result: Allocation, instance: dict) -> None:
    lower, upper, cost, quad = (instance[k] for k in ("lower_kw", "upper_kw", "cost", "quad_cost"))
    if not np.any(upper > lower):
        return  # nothing to optimise (HiGHS reports "Empty"); assert_total covers it
    reference_p, reference, status = solve_with_highs(**instance, time_limit_s=1.0)
    if not result.feasible:
        assert status == "Infeasible"
        return
    ours = objective(result.setpoints_kw, cost, quad)
    tol = 1e-6 * max(abs(reference), _scale(lower, upper, cost, quad))
    if status != "Optimal" and quad is not None:
        # HiGHS's active-set QP solver cycles on some degenerate instances (many ties between
        # linear devices) and gives up on some tiny ones ("Solve error"). KKT, checked by the
        # caller, proves optimality on its own; HiGHS's best point must still not beat ours.
        # Its reported objective is then unreliable, so evaluate its point.
        event(f"HiGHS QP: {status}")
        total_ok = abs(reference_p.sum() - instance["target_kw"]) <= 1e-6 * max(1.0, abs(instance["target_kw"]))
        if total_ok and np.all(reference_p >= lower - 1e-7) and np.all(reference_p <= upper + 1e-7):
            assert ours <= objective(reference_p, cost, quad) + tol, (ours, objective(reference_p, cost, quad))
        return
    assert status == "Optimal"
    assert abs(ours - reference) <= tol, (ours, reference)


def check(instance: dict) -> Allocation:
    result = allocate(**instance)
    lower, upper = instance["lower_kw"], instance["upper_kw"]
    assert_bounds(result, lower, upper)
    assert_total(result, instance["target_kw"], lower, upper)
    if result.feasible:
        assert_kkt(result, lower, upper, instance["cost"], instance["quad_cost"])
    assert_matches_highs(result, instance)
    return result


# ----------------------------------------------------------- properties ----


@EXAMPLES
@given(instances(quadratic=False))
def test_linear_is_optimal(instance: dict) -> None:
    check(instance)


@EXAMPLES
@given(instances(quadratic=True))
def test_quadratic_is_optimal(instance: dict) -> None:
    check(instance)


@EXAMPLES
@given(instances())
def test_large_fleet_paths_are_optimal(instance: dict) -> None:
    with narrowing_on_small_fleets():
        check(instance)


@EXAMPLES
@given(instances())
def test_large_fleet_paths_agree_with_plain_sort(instance: dict) -> None:
    plain = allocate(**instance)
    with narrowing_on_small_fleets():
        narrowed = allocate(**instance)
    np.testing.assert_allclose(narrowed.setpoints_kw, plain.setpoints_kw, rtol=1e-9, atol=1e-9)
    assert narrowed.feasible == plain.feasible
    if instance["quad_cost"] is None or not np.any(instance["quad_cost"] > 0):
        # Merit order picks the same marginal device either way.
        assert narrowed.price == plain.price or (np.isnan(narrowed.price) and np.isnan(plain.price))


@EXAMPLES
@given(instances(), st.floats(-100.0, 100.0, allow_nan=False))
def test_adding_a_constant_to_costs_changes_only_the_price(instance: dict, shift: float) -> None:
    # With a fixed total, a uniform cost shift adds a constant to the objective.
    base = allocate(**instance)
    shifted = allocate(**{**instance, "cost": instance["cost"] + shift})
    np.testing.assert_allclose(shifted.setpoints_kw, base.setpoints_kw, rtol=1e-6, atol=1e-6)


@st.composite
def baseline_instances(draw: st.DrawFn) -> dict:
    instance = draw(instances(quadratic=False))
    n = instance["lower_kw"].size
    # Baselines may lie outside the bounds: the service's natural power is not bounded by the set-point range.
    baseline = draw(arrays(np.float64, n, elements=_floats(-2000.0, 2000.0)))
    cost = np.abs(instance["cost"])
    b = np.clip(baseline, instance["lower_kw"], instance["upper_kw"])
    if draw(st.booleans()) and n:
        instance["target_kw"] = float(b.sum()) + draw(_floats(-1.0, 1.0)) * float(np.abs(b).sum() + 1.0)
    return {
        "target_kw": instance["target_kw"],
        "baseline_kw": baseline,
        "lower_kw": instance["lower_kw"],
        "upper_kw": instance["upper_kw"],
        "cost": cost,
    }


@EXAMPLES
@given(baseline_instances())
def test_from_baseline_is_optimal_and_moves_one_way(instance: dict) -> None:
    result = allocate_from_baseline(**instance)
    lower, upper, cost = instance["lower_kw"], instance["upper_kw"], instance["cost"]
    b = np.clip(instance["baseline_kw"], lower, upper)
    p = result.setpoints_kw
    assert_bounds(result, lower, upper)
    assert_total(result, instance["target_kw"], lower, upper)
    if instance["target_kw"] >= b.sum():
        assert np.all(p >= b)
        assert np.isnan(result.price) or result.price >= 0.0
    else:
        assert np.all(p <= b)
        assert np.isnan(result.price) or result.price <= 0.0
    if not result.feasible or lower.size == 0:
        return
    _, reference, status = solve_baseline_with_highs(**instance)
    assert status == "Optimal"
    ours = float(np.dot(cost, np.abs(p - b)))
    assert abs(ours - reference) <= 1e-6 * max(abs(reference), _scale(lower, upper, cost, None)), (ours, reference)


# ------------------------------------------------------------- examples ----


def test_empty_fleet() -> None:
    nothing = np.array([])
    zero = allocate(0.0, nothing, nothing, nothing)
    assert zero.feasible and zero.shortfall_kw == 0.0 and np.isnan(zero.price) and zero.setpoints_kw.size == 0
    up = allocate(5.0, nothing, nothing, nothing, nothing)
    assert not up.feasible and up.shortfall_kw == 5.0
    down = allocate(-3.0, [], [], [])
    assert not down.feasible and down.shortfall_kw == -3.0
    assert allocate_from_baseline(0.0, [], [], [], []).feasible


def test_single_device() -> None:
    result = allocate(7.0, [0.0], [10.0], [2.0])
    assert result.setpoints_kw.tolist() == [7.0] and result.price == 2.0 and result.feasible
    quad = allocate(7.0, [0.0], [10.0], [2.0], [0.5])
    assert quad.setpoints_kw.tolist() == [7.0] and quad.price == pytest.approx(2.0 + 0.5 * 7.0)
    short = allocate(12.0, [0.0], [10.0], [2.0])
    assert short.setpoints_kw.tolist() == [10.0] and short.shortfall_kw == 2.0 and not short.feasible


def test_merit_order_fills_cheapest_first_including_negative_costs() -> None:
    result = allocate(25.0, [0.0, 0.0, 0.0, -5.0], [10.0, 10.0, 10.0, 5.0], [3.0, -1.0, 1.0, 2.0])
    # Start at lower (total -5), then fill 30 kW: device 1 (-1), device 2 (1), then 10 of device 3 (2).
    np.testing.assert_array_equal(result.setpoints_kw, [0.0, 10.0, 10.0, 5.0])
    assert result.price == 2.0


def test_equal_costs_fill_in_index_order() -> None:
    result = allocate(15.0, np.zeros(4), np.full(4, 10.0), np.ones(4))
    np.testing.assert_array_equal(result.setpoints_kw, [10.0, 5.0, 0.0, 0.0])
    assert result.price == 1.0


def test_zero_width_devices_are_held_and_price_undetermined_when_nobody_moves() -> None:
    held = allocate(3.0, [1.0, 2.0], [1.0, 2.0], [5.0, -5.0])
    assert held.feasible and held.setpoints_kw.tolist() == [1.0, 2.0] and np.isnan(held.price)
    mixed = allocate(4.0, [1.0, 2.0, 0.0], [1.0, 2.0, 3.0], [-9.0, 9.0, 4.0], [0.0, 1.0, 0.0])
    assert mixed.setpoints_kw.tolist() == [1.0, 2.0, 1.0] and mixed.price == 4.0


def test_price_at_the_ends_of_the_range() -> None:
    lower, upper, cost = np.zeros(3), np.full(3, 10.0), np.array([3.0, 1.0, 2.0])
    assert allocate(0.0, lower, upper, cost).price == 1.0  # the next kW would come from the cheapest
    assert allocate(30.0, lower, upper, cost).price == 3.0  # the last kW came from the dearest


def test_quadratic_threshold_with_step_devices() -> None:
    # Device 0: q=1, cost 0 -> p = price; device 1: linear at cost 4 with 10 kW of room.
    result = allocate(9.0, [0.0, 0.0], [20.0, 10.0], [0.0, 4.0], [1.0, 0.0])
    # Device 0 alone reaches 4 kW at price 4; the step device takes the other 5 kW at that price.
    np.testing.assert_allclose(result.setpoints_kw, [4.0, 5.0])
    assert result.price == 4.0
    below = allocate(3.0, [0.0, 0.0], [20.0, 10.0], [0.0, 4.0], [1.0, 0.0])
    np.testing.assert_allclose(below.setpoints_kw, [3.0, 0.0])
    assert below.price == pytest.approx(3.0)


def test_setpoints_are_read_only() -> None:
    result = allocate(1.0, [0.0], [2.0], [1.0])
    with pytest.raises(ValueError):
        result.setpoints_kw[0] = 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lower_kw": [0.0, np.nan]}, r"lower_kw\[1\] = nan"),
        ({"upper_kw": [1.0, np.inf]}, r"upper_kw\[1\] = inf"),
        ({"upper_kw": [1.0, -1.0]}, r"upper_kw\[1\] = -1\.0 violates upper_kw >= lower_kw"),
        ({"cost": [1.0]}, r"cost has 1 elements, expected 2"),
        ({"quad_cost": [0.0, -1.0]}, r"quad_cost\[1\] = -1\.0 violates quad_cost >= 0"),
        ({"lower_kw": [[0.0, 0.0]]}, r"lower_kw must be 1-D"),
        ({"target_kw": np.nan}, r"target_kw = nan"),
    ],
)
def test_bad_input_names_argument_and_index(kwargs: dict, message: str) -> None:
    args = {"target_kw": 1.0, "lower_kw": [0.0, 0.0], "upper_kw": [1.0, 1.0], "cost": [1.0, 2.0], "quad_cost": None}
    with pytest.raises(ValueError, match=message):
        allocate(**{**args, **kwargs})


def test_from_baseline_rejects_negative_cost() -> None:
    with pytest.raises(ValueError, match=r"cost\[1\] = -1\.0 violates cost >= 0"):
        allocate_from_baseline(1.0, [0.0, 0.0], [0.0, 0.0], [2.0, 2.0], [1.0, -1.0])


def test_from_baseline_clips_baseline_and_lowers_cheapest_first() -> None:
    # Device 0's baseline (15) is above its upper bound: it starts at 10, not 15.
    result = allocate_from_baseline(12.0, [15.0, 5.0, 5.0], [0.0, 0.0, 0.0], [10.0, 10.0, 10.0], [1.0, 3.0, 2.0])
    # From 20 down to 12: the 8 kW come from the cheapest, device 0 (cost 1, 10 kW of room).
    np.testing.assert_array_equal(result.setpoints_kw, [2.0, 5.0, 5.0])
    assert result.price == -1.0
    raise_ = allocate_from_baseline(28.0, [15.0, 5.0, 5.0], [0.0, 0.0, 0.0], [10.0, 10.0, 10.0], [1.0, 3.0, 2.0])
    np.testing.assert_array_equal(raise_.setpoints_kw, [10.0, 8.0, 10.0])
    assert raise_.price == 3.0


# ------------------------------------------------------ large fleets ----


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("quadratic", [False, True])
def test_large_fleet_kkt_and_plain_sort(seed: int, quadratic: bool) -> None:
    """20,000 devices: the sampled-bracket paths give a KKT point equal to the full-sort answer."""
    rng = np.random.default_rng(seed)
    n = 20_000
    lower = rng.uniform(-100.0, 50.0, n)
    width = np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0.0, 100.0, n))
    if seed == 5:  # one device holds most of the room, so a sample misjudges the distribution
        width[rng.integers(n)] = 1e6
    upper = lower + width
    cost = np.where(rng.random(n) < 0.3, rng.choice(TIED_COSTS, n), rng.uniform(-50.0, 50.0, n))
    quad = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(1e-3, 2.0, n)) if quadratic else None
    for fraction in (0.0, 1e-9, 0.01, 0.37, 0.5, 0.99, 1.0):
        # Clipped: lower.sum() + width.sum() can exceed upper.sum() by rounding.
        target = min(float(lower.sum() + fraction * width.sum()), float(upper.sum()))
        result = allocate(target, lower, upper, cost, quad)
        assert_bounds(result, lower, upper)
        assert_total(result, target, lower, upper)
        assert_kkt(result, lower, upper, cost, quad)
        with mock.patch.object(allocate_module, "_SORT_BLOCK", 10 * n):
            plain = allocate(target, lower, upper, cost, quad)
        np.testing.assert_allclose(result.setpoints_kw, plain.setpoints_kw, rtol=1e-9, atol=1e-6)
        assert result.price == pytest.approx(plain.price, rel=1e-9, abs=1e-9)


def test_large_linear_fleet_matches_highs() -> None:
    rng = np.random.default_rng(42)
    n = 20_000
    lower = rng.uniform(-100.0, 0.0, n)
    upper = lower + rng.uniform(0.0, 100.0, n)
    cost = rng.uniform(0.0, 100.0, n)
    target = float(lower.sum() + 0.4 * (upper - lower).sum())
    result = allocate(target, lower, upper, cost)
    _, reference, status = solve_with_highs(target, lower, upper, cost, options={"presolve": "off"})
    assert status == "Optimal"
    assert objective(result.setpoints_kw, cost) == pytest.approx(reference, rel=1e-9)
