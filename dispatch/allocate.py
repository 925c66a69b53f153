"""Real-time allocation of a plant target across devices.

Solves, exactly and without a general-purpose solver,

    minimise    sum_i cost_i * p_i + 0.5 * quad_cost_i * p_i**2
    subject to  sum_i p_i = target,   lower_i <= p_i <= upper_i

with ``p`` in [kW], ``cost`` in [CNY/kWh] and ``quad_cost`` in [CNY/kW^2h].

Both cases rest on one fact: with a price (multiplier) ``lam`` for the
balance constraint, every device independently picks the power minimising
``cost*p + 0.5*q*p**2 - lam*p`` inside its bounds, and the fleet total
``T(lam)`` is non-decreasing in ``lam``. The optimum is the smallest ``lam``
with ``T(lam) >= target`` (right-continuous ``T``), with the devices that sit
exactly at that price sharing what remains.

* Linear (no ``quad_cost > 0``): merit order. ``T`` is a staircase with one
  step per device at its cost, so the marginal cost is a weighted quantile
  of the costs: narrowed to a bracket guessed from a sample, then
  ``argsort`` + ``cumsum`` + ``searchsorted`` on the bracket. O(N) expected.
* Quadratic: ``T`` is piecewise linear with breakpoints ``cost + q*lower``
  and ``cost + q*upper`` for ``q > 0`` devices and steps at ``cost`` for
  ``q == 0`` devices. The breakpoints are sorted, the segment holding the
  target is located from prefix sums, and ``lam`` is solved from the
  linear equation on that segment, recomputed directly from the devices so
  that rounding in the prefix sums cannot leak into the answer. Large
  fleets sort only the breakpoints inside a price bracket guessed from a
  sample and checked exactly. O(N log N) worst case.

Sorting is what costs: a full argsort of 100,000 float64 takes ~5 ms on the
target machine, the whole linear allocation ~2-3 ms with the narrowing. A
bad guess (say one device holding most of the room) costs time, never
correctness: the answer is always taken from an exact sort of a candidate
set proven to contain it.

Ties at the marginal price are filled in ascending device index, so the
answer is deterministic for a given input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dispatch._checks import first_violation as _first_violation

FloatArray = NDArray[np.float64]

_SORT_BLOCK: Final = 4096
"""At or below this many candidates (devices or breakpoints' devices) sort them all, without narrowing."""
_SAMPLE: Final = 1024
"""Devices sampled to guess the marginal cost bracket."""
_MARGIN: Final = 0.04
"""Half-width of the guessed bracket, as a fraction of the candidates' total width [unitless]."""
_MAX_ROUNDS: Final = 4
"""Narrowing rounds before sorting whatever candidates are left."""


@dataclass(frozen=True, eq=False)
class Allocation:
    """Result of one allocation.

    ``setpoints_kw`` is read-only; copy it before changing it.
    """

    setpoints_kw: FloatArray
    """Per-device set-point, in input order [kW]."""
    shortfall_kw: float
    """Target minus the achieved total [kW]: 0 when feasible, > 0 when the
    target is above sum(upper), < 0 when below sum(lower)."""
    price: float
    """Multiplier of the balance constraint [CNY/kWh]: the marginal cost
    ``cost + quad_cost*p`` of the device(s) at the margin. Where several are
    valid (the target lands exactly where a device reaches a bound) the
    lowest, i.e. the cost of the last kW delivered; at exactly sum(lower),
    the cost of the first kW that would be. NaN when infeasible or when every
    value is valid (empty fleet, or no device can move)."""
    feasible: bool
    """Whether the target lies within [sum(lower), sum(upper)]."""

    @property
    def total_kw(self) -> float:
        """Sum of the set-points [kW]."""
        return float(self.setpoints_kw.sum())


# ------------------------------------------------------------------ inputs ----


def _vector(name: str, values: ArrayLike, size: int | None = None) -> FloatArray:
    """``values`` as a finite 1-D float64 array of ``size`` elements, or ValueError naming ``name``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if size is not None and array.shape[0] != size:
        raise ValueError(f"{name} has {array.shape[0]} elements, expected {size} (as lower_kw)")
    bad = ~np.isfinite(array)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{name}[{index}] = {float(array[index])!r} is not finite")
    return array


def _scalar(name: str, value: float) -> float:
    """``value`` as a finite float, or ValueError naming ``name``."""
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{name} = {number!r} is not finite")
    return number


def _bounds(lower_kw: ArrayLike, upper_kw: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validated ``(lower, upper)`` [kW]."""
    lower = _vector("lower_kw", lower_kw)
    upper = _vector("upper_kw", upper_kw, lower.shape[0])
    _first_violation("upper_kw", upper < lower, upper, "upper_kw >= lower_kw")
    return lower, upper


def _problem(
    target_kw: float, lower_kw: ArrayLike, upper_kw: ArrayLike, cost: ArrayLike, quad_cost: ArrayLike | None
) -> tuple[float, FloatArray, FloatArray, FloatArray, FloatArray | None]:
    """Validated ``(target, lower, upper, cost, quad_cost)`` of an allocation problem [kW], [CNY/kWh], [CNY/kW^2h]."""
    target = _scalar("target_kw", target_kw)
    lower, upper = _bounds(lower_kw, upper_kw)
    costs = _vector("cost", cost, lower.shape[0])
    quad = None if quad_cost is None else _vector("quad_cost", quad_cost, lower.shape[0])
    if quad is not None:
        _first_violation("quad_cost", quad < 0.0, quad, "quad_cost >= 0")
    return target, lower, upper, costs, quad


# ------------------------------------------------------------------ result ----


def _result(setpoints: FloatArray, shortfall: float, price: float, feasible: bool) -> Allocation:
    setpoints.flags.writeable = False
    return Allocation(setpoints, float(shortfall), float(price), feasible)


def _infeasible(target: float, lower: FloatArray, upper: FloatArray) -> Allocation | None:
    """The nearest-total answer when ``target`` is outside [sum(lower), sum(upper)], else None."""
    low_total, high_total = float(lower.sum()), float(upper.sum())
    if target > high_total:
        return _result(upper.copy(), target - high_total, np.nan, False)
    if target < low_total:
        return _result(lower.copy(), target - low_total, np.nan, False)
    return None


def _fill_in_index_order(amount: float, lower: FloatArray, upper: FloatArray) -> FloatArray:
    """Power of devices at one price sharing ``amount`` [kW] above their lower bounds, first index first."""
    width = upper - lower
    share = np.clip(amount - (np.cumsum(width) - width), 0.0, width)
    # lower + (upper - lower) can round one ulp above upper.
    return np.minimum(lower + share, upper)


# ------------------------------------------------------------------ linear ----


def _price_bracket(remaining: float, total: float, cost: FloatArray, width: FloatArray) -> tuple[float, float]:
    """Costs ``(low, high)`` that probably enclose the marginal cost [CNY/kWh].

    Estimated from an evenly strided sample of ~``_SAMPLE`` devices: the
    sample's width-weighted cost distribution, read ``_MARGIN`` either side of
    the fraction ``remaining / total`` [kW/kW]. A wrong guess costs one more
    narrowing round, never a wrong answer.
    """
    stride = max(cost.size // _SAMPLE, 1)
    sample_cost = cost[::stride]
    order = np.argsort(sample_cost)
    sample_cost = sample_cost[order]
    mass = np.cumsum(width[::stride][order])
    fraction = remaining / total
    lo_i, hi_i = np.searchsorted(mass, [(fraction - _MARGIN) * mass[-1], (fraction + _MARGIN) * mass[-1]])
    low = float(sample_cost[lo_i - 1]) if lo_i > 0 else -np.inf
    high = float(sample_cost[hi_i]) if hi_i < sample_cost.size else np.inf
    return low, high


def _marginal_cost(remaining: float, cost: FloatArray, width: FloatArray) -> float:
    """Smallest cost ``c`` with ``sum(width[cost <= c]) >= remaining`` [CNY/kWh].

    ``width`` > 0 everywhere [kW] and ``0 <= remaining`` [kW]. A full argsort
    of 100,000 costs alone takes ~5 ms, so the candidates are first narrowed
    to a cost bracket around the answer (O(n) per round, usually one round),
    then the bracket is sorted: ``argsort`` + ``cumsum`` + ``searchsorted``.
    """
    if remaining <= 0.0:
        return float(cost.min())
    below = 0.0  # width of devices known to be cheaper than every candidate [kW]
    total = float(width.sum())  # width of the candidates [kW]
    for _ in range(_MAX_ROUNDS):
        if cost.size <= _SORT_BLOCK:
            break
        low, high = _price_bracket(remaining - below, total, cost, width)
        cheaper = cost < low
        cheaper_width = float(np.compress(cheaper, width).sum())
        if below + cheaper_width >= remaining:
            cost, width, total = np.compress(cheaper, cost), np.compress(cheaper, width), cheaper_width
            continue
        dearer = cost > high
        inside = ~(cheaper | dearer)
        inside_width = float(np.compress(inside, width).sum())
        if below + cheaper_width + inside_width >= remaining or not dearer.any():
            # ``not dearer.any()``: ``remaining`` exceeds the total only by rounding.
            below += cheaper_width
            cost, width = np.compress(inside, cost), np.compress(inside, width)
            break
        below += cheaper_width + inside_width
        total -= cheaper_width + inside_width
        cost, width = np.compress(dearer, cost), np.compress(dearer, width)
    order = np.argsort(cost)
    filled = below + np.cumsum(width[order])
    # Rounding can leave ``remaining`` a hair above the last partial sum: take the last device then.
    k = min(int(np.searchsorted(filled, remaining, side="left")), cost.size - 1)
    return float(cost[order[k]])


def _merit_order(target: float, lower: FloatArray, upper: FloatArray, cost: FloatArray) -> Allocation:
    """Exact LP optimum: fill from the lower bounds in ascending cost."""
    width = upper - lower
    movable = width > 0.0
    if not movable.any():
        return _result(lower.copy(), 0.0, np.nan, True)
    remaining = target - float(lower.sum())
    if movable.all():
        price = _marginal_cost(remaining, cost, width)
    else:
        price = _marginal_cost(remaining, np.compress(movable, cost), np.compress(movable, width))
    cheaper = cost < price
    setpoints = np.where(cheaper, upper, lower)
    # Devices at exactly the marginal cost share what the cheaper ones leave, in index order.
    tied = np.flatnonzero(cost == price)
    left_kw = remaining - float(np.compress(cheaper, width).sum())
    setpoints[tied] = _fill_in_index_order(left_kw, lower[tied], upper[tied])
    return _result(setpoints, 0.0, price, True)


# --------------------------------------------------------------- quadratic ----


@dataclass(frozen=True)
class _Fleet:
    """A quadratic instance grouped by how each device's power responds to a price.

    *Smooth* devices (q > 0) follow ``clip((price - cost)/q, lower, upper)``,
    moving between their breakpoints ``start = cost + q*lower`` and ``end =
    cost + q*upper`` [CNY/kWh]; *step* devices (q == 0) jump from lower to
    upper at ``cost``; devices with ``lower == upper`` cannot move at all.
    """

    smooth: NDArray[np.intp]  # input indices of the smooth devices
    step: NDArray[np.intp]  # input indices of the step devices
    fixed_kw: float  # total of the devices that cannot move [kW]
    cost: FloatArray  # smooth devices [CNY/kWh]
    lower: FloatArray  # smooth devices [kW]
    upper: FloatArray  # smooth devices [kW]
    start: FloatArray  # price where a smooth device leaves its lower bound [CNY/kWh]
    end: FloatArray  # price where a smooth device reaches its upper bound [CNY/kWh]
    inv_quad: FloatArray  # how fast a smooth device moves with the price [kW per CNY/kWh]
    step_cost: FloatArray  # [CNY/kWh]
    step_width: FloatArray  # [kW]
    step_lower_kw: float  # total lower bound of the step devices [kW]

    @classmethod
    def of(cls, lower: FloatArray, upper: FloatArray, cost: FloatArray, quad: FloatArray) -> _Fleet:
        """Group validated inputs [kW, kW, CNY/kWh, CNY/kW^2h]."""
        width = upper - lower
        smooth = (width > 0.0) & (quad > 0.0)
        step = (width > 0.0) & (quad == 0.0)
        if smooth.all():  # the common case: skip copying every array
            c, q, lo, hi = cost, quad, lower, upper
        else:
            c, q, lo, hi = (np.compress(smooth, x) for x in (cost, quad, lower, upper))
        return cls(
            smooth=np.flatnonzero(smooth),
            step=np.flatnonzero(step),
            fixed_kw=float(np.compress(width <= 0.0, lower).sum()),
            cost=c,
            lower=lo,
            upper=hi,
            start=c + q * lo,
            end=c + q * hi,
            inv_quad=1.0 / q,
            step_cost=np.compress(step, cost),
            step_width=np.compress(step, width),
            step_lower_kw=float(np.compress(step, lower).sum()),
        )

    @property
    def size(self) -> int:
        """Number of devices that can move."""
        return self.smooth.size + self.step.size

    def smooth_power(self, price: float) -> FloatArray:
        """Each smooth device's best response to ``price`` [kW]."""
        return np.minimum(np.maximum((price - self.cost) * self.inv_quad, self.lower), self.upper)

    def total(self, price: float, *, right: bool) -> float:
        """Fleet total just right of ``price`` (step devices at ``price`` full) or just left [kW]."""
        full = self.step_cost <= price if right else self.step_cost < price
        step_kw = self.step_lower_kw + float(np.compress(full, self.step_width).sum())
        return self.fixed_kw + float(self.smooth_power(price).sum()) + step_kw

    def slope(self, low: float, high: float) -> float:
        """d(total)/d(price) on an interval (low, high) holding no breakpoint [kW per CNY/kWh]."""
        moving = (self.start <= low) & (self.end >= high)
        return float(np.compress(moving, self.inv_quad).sum())

    def breakpoints(self, low: float, high: float, stride: int = 1) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Breakpoints in (low, high] of every ``stride``-th device: ``(price, slope change, jump)``.

        With ``stride`` > 1 each sampled device stands for the ones skipped,
        so slope changes and jumps are scaled up accordingly.
        """
        start, end = self.start[::stride], self.end[::stride]
        inv_quad = self.inv_quad[::stride] * (self.smooth.size / max(start.size, 1))
        step_cost = self.step_cost[::stride]
        step_width = self.step_width[::stride] * (self.step.size / max(step_cost.size, 1))
        starts = (start > low) & (start <= high)
        ends = (end > low) & (end <= high)
        steps = (step_cost > low) & (step_cost <= high)
        points = np.concatenate((np.compress(starts, start), np.compress(ends, end), np.compress(steps, step_cost)))
        smooth_points = points.size - int(np.count_nonzero(steps))
        slope_change = np.zeros(points.size)
        slope_change[: smooth_points] = np.concatenate(
            (np.compress(starts, inv_quad), -np.compress(ends, inv_quad))
        )
        jump = np.zeros(points.size)
        jump[smooth_points:] = np.compress(steps, step_width)
        return points, slope_change, jump


def _totals_at_breakpoints(
    start_price: float, start_total: float, start_slope: float,
    points: FloatArray, slope_change: FloatArray, jump: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Sorted breakpoints [CNY/kWh] and the fleet total just right of each [kW].

    Starts from the total and slope just right of ``start_price``. The total
    is accumulated from non-negative pieces (slope times segment width, plus
    jumps), so it is monotone by construction and ``searchsorted`` applies.
    """
    order = np.argsort(points)
    sorted_points = points[order]
    slope = np.maximum(start_slope + np.cumsum(slope_change[order]), 0.0)  # right of each point
    rise = np.empty_like(sorted_points)
    rise[0] = start_slope * (sorted_points[0] - start_price) if np.isfinite(start_price) else 0.0
    np.multiply(slope[:-1], np.diff(sorted_points), out=rise[1:])
    return sorted_points, start_total + np.cumsum(rise + jump[order])


def _segment(target: float, start_price: float, points: FloatArray, total_at: FloatArray) -> tuple[float, float]:
    """``(low, high)``: the smallest breakpoint with total >= ``target``, and the breakpoint before it [CNY/kWh].

    ``low`` is ``start_price`` when no breakpoint lies below ``high``.
    """
    # Rounding can leave ``target`` a hair above the last total: take the last breakpoint then.
    k = min(int(np.searchsorted(total_at, target, side="left")), points.size - 1)
    high = float(points[k])
    before = int(np.searchsorted(points, high, side="left"))
    return (float(points[before - 1]) if before else start_price), high


def _guess_bracket(fleet: _Fleet, target: float, low_total: float, spread: float) -> tuple[float, float]:
    """Prices that probably enclose the optimal one, from a strided sample of ~``_SAMPLE`` devices [CNY/kWh].

    ``spread`` [kW] widens the sample's answer on both sides of ``target``.
    """
    stride = max(fleet.size // _SAMPLE, 1)
    points, total_at = _totals_at_breakpoints(-np.inf, low_total, 0.0, *fleet.breakpoints(-np.inf, np.inf, stride))
    low, _ = _segment(target - spread, -np.inf, points, total_at)
    _, high = _segment(target + spread, -np.inf, points, total_at)
    return low, high


def _price_segment(fleet: _Fleet, target: float, low_total: float, high_total: float) -> tuple[float, float]:
    """Consecutive breakpoints ``(low, high)`` with the optimal price in ``(low, high]`` [CNY/kWh].

    Sorting all 2N breakpoints dominates the run time, so large fleets first
    guess a bracket from a sample, check it with two exact totals and sort
    only the breakpoints inside it; a wrong guess falls back to sorting all.
    """
    if fleet.size > _SORT_BLOCK:
        spread = _MARGIN * (high_total - low_total)
        low, high = _guess_bracket(fleet, target, low_total, spread)
        start_total = low_total if low == -np.inf else fleet.total(low, right=True)
        if (low == -np.inf or start_total < target) and target <= fleet.total(high, right=True):
            points, slope_change, jump = fleet.breakpoints(low, high)
            # ``high`` itself closes the bracket, so the search always ends on a point inside it.
            points, slope_change, jump = np.append(points, high), np.append(slope_change, 0.0), np.append(jump, 0.0)
            start_slope = 0.0 if low == -np.inf else fleet.slope(low, np.nextafter(low, np.inf))
            totals = _totals_at_breakpoints(low, start_total, start_slope, points, slope_change, jump)
            return _segment(target, low, *totals)
    points, total_at = _totals_at_breakpoints(-np.inf, low_total, 0.0, *fleet.breakpoints(-np.inf, np.inf))
    return _segment(target, -np.inf, points, total_at)


def _threshold(target: float, lower: FloatArray, upper: FloatArray, cost: FloatArray,
               quad: FloatArray) -> Allocation:
    """Exact QP optimum through the threshold-price structure."""
    fleet = _Fleet.of(lower, upper, cost, quad)
    if fleet.size == 0:
        return _result(lower.copy(), 0.0, np.nan, True)
    low, high = _price_segment(fleet, target, float(lower.sum()), float(upper.sum()))
    price = high
    total_left = fleet.total(high, right=False)
    if target < total_left and np.isfinite(low):
        # Target inside the open segment (low, high) where the total is linear: solve
        # from the devices' power at ``low``, which is bounded, rather than from
        # intercepts like cost/q that can be large and cancel.
        slope = fleet.slope(low, high)
        step = (target - fleet.total(low, right=True)) / slope if slope > 0.0 else 0.0
        price = min(max(low + step, low), high)
    setpoints = lower.copy()
    setpoints[fleet.smooth] = fleet.smooth_power(price)
    if price < high:
        # Inside the segment, or at ``low`` by rounding: step devices at ``low`` count as full.
        setpoints[fleet.step] = np.where(fleet.step_cost <= price, upper[fleet.step], lower[fleet.step])
    else:
        setpoints[fleet.step] = np.where(fleet.step_cost < price, upper[fleet.step], lower[fleet.step])
        # Step devices priced exactly at the threshold take up what is left, in index order.
        tied = np.compress(fleet.step_cost == price, fleet.step)
        setpoints[tied] = _fill_in_index_order(target - total_left, lower[tied], upper[tied])
    return _result(setpoints, 0.0, price, True)


# ------------------------------------------------------------------ public ----


def allocate(
    target_kw: float,
    lower_kw: ArrayLike,
    upper_kw: ArrayLike,
    cost: ArrayLike,
    quad_cost: ArrayLike | None = None,
) -> Allocation:
    """Split ``target_kw`` [kW] across devices at least total cost.

    Minimises ``sum(cost*p + 0.5*quad_cost*p**2)`` subject to
    ``sum(p) == target_kw`` and ``lower_kw <= p <= upper_kw``.

    Parameters: ``lower_kw``, ``upper_kw`` per-device bounds [kW];
    ``cost`` linear cost, may be negative [CNY/kWh]; ``quad_cost`` quadratic
    cost, >= 0, None for a pure LP [CNY/kW^2h]. All 1-D, same length, finite.

    When the target is outside [sum(lower), sum(upper)] every device goes to
    the bound on the target's side and ``shortfall_kw`` says what is missing.

    Raises ValueError naming the argument and the first bad index and value.
    """
    target, lower, upper, costs, quad = _problem(target_kw, lower_kw, upper_kw, cost, quad_cost)
    nearest = _infeasible(target, lower, upper)
    if nearest is not None:
        return nearest
    if quad is None or not (quad > 0.0).any():
        return _merit_order(target, lower, upper, costs)
    return _threshold(target, lower, upper, costs, quad)


def allocate_from_baseline(
    target_kw: float,
    baseline_kw: ArrayLike,
    lower_kw: ArrayLike,
    upper_kw: ArrayLike,
    cost: ArrayLike,
) -> Allocation:
    """Move devices away from their baselines to reach ``target_kw`` [kW] at least cost.

    Minimises ``sum(cost * |p - b|)`` with ``b = clip(baseline_kw, lower_kw,
    upper_kw)``, subject to ``sum(p) == target_kw`` and the bounds. Because
    ``cost`` >= 0 [CNY/kWh], only moves toward the target are worth making:
    above ``sum(b)`` the upward headroom ``upper - b`` is used in merit order,
    below it the downward headroom ``b - lower``.

    Returns absolute set-points [kW]. ``price`` is the derivative of the cost
    with respect to the target [CNY/kWh]: the marginal device's cost when
    raising, its negative when lowering (one more kW of target saves it);
    at exactly ``sum(b)`` it is the cheapest upward cost.

    Raises ValueError naming the argument and the first bad index and value.
    """
    target = _scalar("target_kw", target_kw)
    lower, upper = _bounds(lower_kw, upper_kw)
    baseline = np.clip(_vector("baseline_kw", baseline_kw, lower.shape[0]), lower, upper)
    costs = _vector("cost", cost, lower.shape[0])
    _first_violation("cost", costs < 0.0, costs, "cost >= 0")
    if target >= float(baseline.sum()):
        return allocate(target, baseline, upper, costs)
    # Lowering: keeping power costs -cost per kW relative to the baseline, so the
    # cheapest devices are the ones left at their lower bound.
    return allocate(target, lower, baseline, -costs)
