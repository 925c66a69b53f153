"""Real-time allocation under network limits (feeder and transformer caps).

Solves

    minimise    sum_i cost_i * p_i + 0.5 * quad_cost_i * p_i**2
    subject to  sum_i p_i = target,   lower_i <= p_i <= upper_i,
                group_min_g <= sum_{i in g} p_i <= group_max_g   for every group g

with ``p`` in [kW], ``cost`` in [CNY/kWh], ``quad_cost`` in [CNY/kW^2h].

Groups are **one level deep**: each device belongs to at most one group
(``group_of[i]`` is its group index, or -1 for none), e.g. the feeders or
transformers of the park, each serving several enterprises. Nested groups
(a transformer above several feeders) are not supported. The park's grid
connection needs no group: the balance row already fixes the total, so an
import/export limit on the whole park is the target clipped to it (or, when
the park has no other groups, one group holding every device).

Strategy:

1. The closest feasible total ``T*`` is computed exactly, without a solver:
   with one level of groups the reachable totals are an interval whose ends
   add up, per group, the reachable part of ``[group_min, group_max]`` and,
   per ungrouped device, its bounds. ``T* = clip(target, ends)`` and
   ``shortfall = target - T*``.
2. Fast path (``path="fast"``): ``dispatch.allocate(T*)``, the exact
   optimum without group caps. If it respects every cap (to a relative
   tolerance of ``CAP_TOLERANCE``) it is also the optimum with them and is
   returned as is.
3. Otherwise (``path="highs"``) the LP/QP is built straight from sparse
   arrays (a scipy CSC matrix with one balance row and one row per group,
   the Hessian's diagonal for ``quad_cost``) and solved by HiGHS with
   target ``T*``, presolve off (HiGHS 1.16 presolves the dense balance row
   slowly: 0.45 s instead of 0.03 s at 10,000 devices in 50 feeders). HiGHS's
   model status is returned as data, never raised. Its QP solver is slow
   (~20 s at 10,000 devices) and can report "Solve error" at a correct
   optimum; ``feasible`` therefore judges the returned point itself, and
   ``time_limit_s`` caps the solve for real-time use.

A group whose caps its devices cannot meet at all (``group_min`` above the
sum of their upper bounds, or ``group_max`` below the sum of their lower
bounds) is held at the reachable total nearest to its caps; the miss is
reported in ``group_excess_kw`` and ``feasible`` is False.

``highspy`` and ``scipy.sparse`` are imported only when the HiGHS path runs,
so importing this module stays cheap for the real-time loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dispatch.allocate import _first_violation, _problem, allocate

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

CAP_TOLERANCE: Final = 1e-9
"""A group total counts as within its caps when it misses them by at most this
fraction of ``max(1, |cap|, sum |p_i|)`` over its devices [unitless]."""

_HIGHS_TOLERANCE: Final = 1e-6
"""Relative miss of a cap or of the balance [unitless] beyond which a HiGHS answer
(primal feasibility tolerance 1e-7, absolute) counts as violating it."""

FAST: Final = "fast"
HIGHS: Final = "highs"


@dataclass(frozen=True, eq=False)
class GroupAllocation:
    """Result of one allocation under group caps. Arrays are read-only."""

    setpoints_kw: FloatArray
    """Per-device set-point, in input order [kW]."""
    shortfall_kw: float
    """Target minus the closest feasible total [kW]: 0 when the target can be
    met, > 0 when it is above what the bounds and caps allow, < 0 when below."""
    status: str
    """"Optimal" on the fast path (the merit-order / threshold answer is exact);
    otherwise HiGHS's model status text, e.g. "Optimal", "Time limit reached"."""
    path: str
    """``"fast"`` (``dispatch.allocate``, no cap was violated) or ``"highs"``."""
    group_totals_kw: FloatArray
    """Sum of the set-points of each group [kW], indexed like ``group_min_kw``."""
    group_excess_kw: FloatArray
    """Per group, how far its total lies outside ``[group_min_kw, group_max_kw]``
    [kW]: > 0 above the max, < 0 below the min, 0 inside (up to rounding).
    Non-zero only where the devices cannot meet the caps at all, or when
    HiGHS stopped without an optimum."""
    feasible: bool
    """Target met (``shortfall_kw == 0``) and every cap met by the set-points.
    Optimality is ``status`` (``"Optimal"``); see the module notes on HiGHS's QP."""

    @property
    def total_kw(self) -> float:
        """Sum of the set-points [kW]."""
        return float(self.setpoints_kw.sum())


# ------------------------------------------------------------------ inputs ----


def _groups(group_of: ArrayLike | None, group_min_kw: ArrayLike | None, group_max_kw: ArrayLike | None,
            size: int) -> tuple[IntArray, FloatArray, FloatArray]:
    """Validated ``(group_of, group_min, group_max)``; missing caps are -inf / +inf."""
    if group_of is None:
        membership = np.full(size, -1, dtype=np.intp)
    else:
        raw = np.asarray(group_of)
        if raw.ndim != 1 or raw.shape[0] != size:
            raise ValueError(f"group_of must be 1-D with {size} elements (as lower_kw), got shape {raw.shape}")
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"group_of must hold integers, got dtype {raw.dtype}")
        membership = raw.astype(np.intp)
        _first_violation("group_of", membership < -1, membership, "group_of >= -1")
    count = int(membership.max()) + 1 if membership.size else 0
    caps = []
    for name, values, fill in (("group_min_kw", group_min_kw, -np.inf), ("group_max_kw", group_max_kw, np.inf)):
        if values is None:
            caps.append(None)
            continue
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
        _first_violation(name, np.isnan(array), array, "not NaN")
        _first_violation(name, array == -fill, array, f"{name} != {-fill}")
        caps.append(array)
    sizes = {c.size for c in caps if c is not None}
    if len(sizes) > 1:
        raise ValueError(f"group_min_kw and group_max_kw differ in length: {caps[0].size} != {caps[1].size}")
    groups = sizes.pop() if sizes else count
    if count > groups:
        index = int(np.argmax(membership >= groups))
        raise ValueError(f"group_of[{index}] = {int(membership[index])} is not below the {groups} groups of the caps")
    group_min = caps[0] if caps[0] is not None else np.full(groups, -np.inf)
    group_max = caps[1] if caps[1] is not None else np.full(groups, np.inf)
    _first_violation("group_max_kw", group_max < group_min, group_max, "group_max_kw >= group_min_kw")
    return membership, group_min, group_max


def _group_sums(values: FloatArray, membership: IntArray, groups: int) -> FloatArray:
    """Per group, the sum of ``values`` over its devices (-1 devices ignored)."""
    grouped = membership >= 0
    if grouped.all():
        sums = np.bincount(membership, weights=values, minlength=groups)
    else:
        sums = np.bincount(np.compress(grouped, membership), weights=np.compress(grouped, values), minlength=groups)
    return sums.astype(np.float64, copy=False)


def _within_caps(totals: FloatArray, low: FloatArray, high: FloatArray, magnitude: FloatArray) -> bool:
    """Whether every group total lies in [low, high] up to ``CAP_TOLERANCE``."""
    slack = CAP_TOLERANCE * np.maximum(1.0, magnitude)
    return bool(np.all(totals >= low - slack) and np.all(totals <= high + slack))


# ------------------------------------------------------------------- HiGHS ----


def _solve_highs(target: float, lower: FloatArray, upper: FloatArray, cost: FloatArray, quad: FloatArray | None,
                 membership: IntArray, row_low: FloatArray, row_high: FloatArray, time_limit_s: float | None,
                 options: dict | None) -> tuple[FloatArray | None, str]:
    """Solve the capped problem with HiGHS: ``(set-points or None, model status)``.

    ``row_low``/``row_high`` are the group rows' bounds [kW], already reachable.
    Devices with ``lower == upper`` are constants, not columns (HiGHS's QP
    solver can cycle when Hessian entries sit only on fixed columns), and
    HiGHS's QP regularisation is switched off (it makes the active-set solver
    cycle on ties at the threshold price), as in ``dispatch.reference``.
    """
    import highspy
    from scipy import sparse

    groups = row_low.size
    free = lower < upper
    fixed = ~free
    fixed_lower = np.where(fixed, lower, 0.0)
    fixed_total = float(fixed_lower.sum())
    fixed_per_group = _group_sums(fixed_lower, membership, groups)
    columns = np.flatnonzero(free)
    n = columns.size
    column_group = membership[columns]
    grouped = column_group >= 0
    # Row 0 is the balance; row 1 + g is group g. One or two entries per column.
    rows = np.concatenate((np.zeros(n, dtype=np.intp), 1 + np.compress(grouped, column_group)))
    cols = np.concatenate((np.arange(n), np.flatnonzero(grouped)))
    matrix = sparse.csc_matrix((np.ones(rows.size), (rows, cols)), shape=(1 + groups, n))
    matrix.sort_indices()

    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, 1 + groups
    lp.col_cost_ = cost[columns]
    lp.col_lower_, lp.col_upper_ = lower[columns], upper[columns]
    balance = target - fixed_total
    lp.row_lower_ = np.concatenate(([balance], row_low - fixed_per_group))
    lp.row_upper_ = np.concatenate(([balance], row_high - fixed_per_group))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n, 1 + groups
    lp.a_matrix_.start_ = matrix.indptr.astype(np.int32)
    lp.a_matrix_.index_ = matrix.indices.astype(np.int32)
    lp.a_matrix_.value_ = matrix.data
    model = highspy.HighsModel()
    model.lp_ = lp
    if quad is not None:
        diagonal = quad[columns]
        has_entry = diagonal > 0.0
        if has_entry.any():
            # Objective c'x + 0.5 x'Hx; only the non-zero diagonal entries are stored.
            model.hessian_.dim_ = n
            model.hessian_.format_ = highspy.HessianFormat.kTriangular
            model.hessian_.start_ = np.concatenate(([0], np.cumsum(has_entry))).astype(np.int32)
            model.hessian_.index_ = np.flatnonzero(has_entry).astype(np.int32)
            model.hessian_.value_ = diagonal[has_entry]

    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    if time_limit_s is not None:
        highs.setOptionValue("time_limit", float(time_limit_s))
    for name, value in {"qp_regularization_value": 0.0, "presolve": "off", **(options or {})}.items():
        highs.setOptionValue(name, value)
    highs.passModel(model)
    highs.run()
    status = highs.modelStatusToString(highs.getModelStatus())
    solution = np.asarray(highs.getSolution().col_value, dtype=np.float64)
    if n and solution.size != n:
        return None, status
    setpoints = lower.copy()
    # HiGHS honours bounds to its feasibility tolerance (1e-7); device bounds are exact here.
    setpoints[columns] = np.clip(solution, lower[columns], upper[columns]) if n else solution
    return setpoints, status


# ------------------------------------------------------------------ public ----


def _result(setpoints: FloatArray, shortfall: float, reachable: float, status: str, path: str,
            membership: IntArray, group_min: FloatArray, group_max: FloatArray, caps_met: bool) -> GroupAllocation:
    totals = _group_sums(setpoints, membership, group_min.size)
    excess = totals - np.clip(totals, group_min, group_max)
    magnitude = np.maximum(_group_sums(np.abs(setpoints), membership, group_min.size),
                           np.abs(np.clip(totals, group_min, group_max)))
    within = np.abs(excess) <= _HIGHS_TOLERANCE * np.maximum(1.0, magnitude)
    excess[within] = 0.0
    for array in (setpoints, totals, excess):
        array.flags.writeable = False
    # Judged on the point itself, not on the status: HiGHS's QP solver can report
    # "Solve error" at a correct optimum (a smooth column at a bound, a linear one taking the rest).
    balanced = abs(float(setpoints.sum()) - reachable) <= _HIGHS_TOLERANCE * max(1.0, float(np.abs(setpoints).sum()))
    feasible = shortfall == 0.0 and caps_met and bool(within.all()) and balanced
    return GroupAllocation(setpoints, float(shortfall), status, path, totals, excess, feasible)


def allocate_with_groups(
    target_kw: float,
    lower_kw: ArrayLike,
    upper_kw: ArrayLike,
    cost: ArrayLike,
    quad_cost: ArrayLike | None = None,
    group_of: ArrayLike | None = None,
    group_min_kw: ArrayLike | None = None,
    group_max_kw: ArrayLike | None = None,
    *,
    time_limit_s: float | None = None,
    highs_options: dict | None = None,
) -> GroupAllocation:
    """Split ``target_kw`` [kW] across devices at least cost, within group caps.

    Minimises ``sum(cost*p + 0.5*quad_cost*p**2)`` subject to
    ``sum(p) == target_kw``, ``lower_kw <= p <= upper_kw`` and, for every
    group ``g``, ``group_min_kw[g] <= sum(p[group_of == g]) <= group_max_kw[g]``.

    Parameters as ``dispatch.allocate`` (kW, CNY/kWh, CNY/kW^2h), plus:
    ``group_of`` integer per device, its group index or -1 for none (one
    level: a device is in at most one group); ``group_min_kw`` /
    ``group_max_kw`` per group [kW], may be -inf / +inf, None for no cap on
    that side. The number of groups is the caps' length (or
    ``max(group_of) + 1`` without caps). ``time_limit_s`` [s] and
    ``highs_options`` (HiGHS option names and values) tune the HiGHS path.

    When the target is out of reach the set-points meet the closest
    reachable total at least cost and ``shortfall_kw`` says what is missing.

    Raises ValueError naming the argument and the first bad index and value.
    """
    target, lower, upper, costs, quad = _problem(target_kw, lower_kw, upper_kw, cost, quad_cost)
    membership, group_min, group_max = _groups(group_of, group_min_kw, group_max_kw, lower.shape[0])
    groups = group_min.size

    # Reachable totals: per group the part of its caps its devices can reach, plus ungrouped devices.
    group_low = _group_sums(lower, membership, groups)
    group_high = _group_sums(upper, membership, groups)
    # Caps the devices miss only by rounding (e.g. a minimum equal to their summed upper bounds) count as met.
    reach = CAP_TOLERANCE * np.maximum(1.0, np.maximum(np.abs(group_low), np.abs(group_high)))
    caps_met = bool(np.all(group_min <= group_high + reach) and np.all(group_max >= group_low - reach))
    row_low = np.clip(group_min, group_low, group_high)
    row_high = np.clip(group_max, group_low, group_high)
    # Written as the device sums plus what the caps take away, so that caps taking
    # nothing away give exactly sum(lower) and sum(upper), as ``allocate`` sees them.
    low_total = float(lower.sum()) + float((row_low - group_low).sum())
    high_total = float(upper.sum()) + float((row_high - group_high).sum())
    reachable = min(max(target, low_total), high_total)
    shortfall = target - reachable

    # Beyond what the device bounds allow (and the caps take nothing away on that side),
    # ``allocate`` puts every device exactly at that bound: pass it the target itself.
    beyond_devices = (target > high_total == float(upper.sum())) or (target < low_total == float(lower.sum()))
    fast = allocate(target if beyond_devices else reachable, lower, upper, costs, quad)
    setpoints = fast.setpoints_kw
    totals = _group_sums(setpoints, membership, groups)
    magnitude = np.maximum(np.maximum(np.abs(row_low), np.abs(row_high)),
                           _group_sums(np.abs(setpoints), membership, groups))
    if _within_caps(totals, row_low, row_high, magnitude):
        return _result(setpoints.copy(), shortfall, reachable, "Optimal", FAST, membership, group_min, group_max,
                       caps_met)

    solved, status = _solve_highs(reachable, lower, upper, costs, quad, membership, row_low, row_high,
                                  time_limit_s, highs_options)
    if solved is None:
        # No solution at all (e.g. stopped before one was found): keep the fast answer, caps unmet.
        solved = setpoints.copy()
    return _result(solved, shortfall, reachable, status, HIGHS, membership, group_min, group_max, caps_met)


def allocate_from_baseline_with_groups(
    target_kw: float,
    baseline_kw: ArrayLike,
    lower_kw: ArrayLike,
    upper_kw: ArrayLike,
    cost: ArrayLike,
    group_of: ArrayLike | None = None,
    group_min_kw: ArrayLike | None = None,
    group_max_kw: ArrayLike | None = None,
    *,
    time_limit_s: float | None = None,
) -> GroupAllocation:
    """``dispatch.allocate_from_baseline`` within group caps: move devices from their baselines at least cost.

    Minimises ``sum(cost * |p - b|)`` with ``b = clip(baseline_kw, lower_kw,
    upper_kw)`` [kW], ``cost`` >= 0 [CNY/kWh], subject to ``sum(p) ==
    target_kw``, the bounds, and ``group_min_kw[g] <= sum(p[group_of == g])
    <= group_max_kw[g]`` [kW]. Unlike the ungrouped case a capped group may
    have to move *against* the target (a feeder over its limit sheds load
    while the others make up for it), so both directions stay open.

    How: ``|p - b|`` is convex and piecewise linear, so each device becomes
    two columns of :func:`allocate_with_groups`, an upward part in
    ``[0, upper - b]`` at ``+cost`` and a downward part in ``[lower - b, 0]``
    at ``-cost``, both in the device's group, against the target and caps
    taken relative to the baselines. Using both parts of one device at once
    only adds cost, so an optimum never does it except at zero cost, where
    ``p`` is the same either way. The fast path (no cap binds) stays exact.

    Returns the :class:`GroupAllocation` of the devices (absolute set-points
    and group totals [kW]). Raises ValueError naming the first bad argument.
    """
    target, lower, upper, costs, _ = _problem(target_kw, lower_kw, upper_kw, cost, None)
    _first_violation("cost", costs < 0.0, costs, "cost >= 0")
    baseline = np.asarray(baseline_kw, dtype=np.float64)
    if baseline.shape != lower.shape:
        raise ValueError(f"baseline_kw must have shape {lower.shape} (as lower_kw), got {baseline.shape}")
    _first_violation("baseline_kw", ~np.isfinite(baseline), baseline, "finite")
    baseline = np.clip(baseline, lower, upper)
    n = lower.shape[0]
    membership, group_min, group_max = _groups(group_of, group_min_kw, group_max_kw, n)
    groups = group_min.size
    held = _group_sums(baseline, membership, groups)
    parts = allocate_with_groups(
        target - float(baseline.sum()),
        np.concatenate((np.zeros(n), lower - baseline)),
        np.concatenate((upper - baseline, np.zeros(n))),
        np.concatenate((costs, -costs)),
        None,
        np.concatenate((membership, membership)),
        group_min - held,
        group_max - held,
        time_limit_s=time_limit_s,
    )
    setpoints = np.clip(baseline + parts.setpoints_kw[:n] + parts.setpoints_kw[n:], lower, upper)
    setpoints.flags.writeable = False
    totals = parts.group_totals_kw + held
    totals.flags.writeable = False
    return GroupAllocation(setpoints, parts.shortfall_kw, parts.status, parts.path, totals, parts.group_excess_kw,
                           parts.feasible)
