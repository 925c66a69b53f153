"""Reference solutions from HiGHS, to check and benchmark ``dispatch.allocate``.

The models are built straight from numpy arrays (column-wise sparse
matrices, a diagonal Hessian), so building them costs little next to
solving them. Pure: HiGHS runs in-process with its output switched off.
"""

from __future__ import annotations

from collections.abc import Mapping

import highspy
import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int32]
Options = Mapping[str, bool | int | float | str]


def objective(setpoints_kw: ArrayLike, cost: ArrayLike, quad_cost: ArrayLike | None = None) -> float:
    """``sum(cost*p + 0.5*quad_cost*p**2)`` [CNY/h] for set-points [kW], cost [CNY/kWh], quad_cost [CNY/kW^2h]."""
    p = np.asarray(setpoints_kw, dtype=np.float64)
    value = float(np.dot(np.asarray(cost, dtype=np.float64), p))
    if quad_cost is not None:
        value += 0.5 * float(np.dot(np.asarray(quad_cost, dtype=np.float64), p * p))
    return value


def _solver(time_limit_s: float | None, options: Options | None) -> highspy.Highs:
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    if time_limit_s is not None:
        highs.setOptionValue("time_limit", float(time_limit_s))
    for name, value in (options or {}).items():
        highs.setOptionValue(name, value)
    return highs


def _model(
    col_cost: FloatArray,
    col_bounds: tuple[FloatArray, FloatArray],
    row_bounds: tuple[FloatArray, FloatArray],
    matrix: tuple[IntArray, IntArray, FloatArray],
    hessian_diag: FloatArray | None,
) -> highspy.HighsModel:
    """A HiGHS model from a column-wise sparse matrix ``(start, index, value)`` and an optional diagonal Hessian."""
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = col_cost.size, row_bounds[0].size
    lp.col_cost_ = col_cost
    lp.col_lower_, lp.col_upper_ = col_bounds
    lp.row_lower_, lp.row_upper_ = row_bounds
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = lp.num_col_, lp.num_row_
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = matrix
    model = highspy.HighsModel()
    model.lp_ = lp
    if hessian_diag is not None and (hessian_diag > 0.0).any():
        # Objective is c'x + 0.5 x'Hx; only the non-zero diagonal entries are stored.
        has_entry = hessian_diag > 0.0
        model.hessian_.dim_ = hessian_diag.size
        model.hessian_.format_ = highspy.HessianFormat.kTriangular
        model.hessian_.start_ = np.concatenate(([0], np.cumsum(has_entry))).astype(np.int32)
        model.hessian_.index_ = np.flatnonzero(has_entry).astype(np.int32)
        model.hessian_.value_ = hessian_diag[has_entry]
    return model


def _solve(highs: highspy.Highs, model: highspy.HighsModel) -> tuple[FloatArray, float, str]:
    """Solve ``model``: ``(column values, objective, model status)``."""
    highs.passModel(model)
    highs.run()
    status = highs.modelStatusToString(highs.getModelStatus())
    solution = np.array(highs.getSolution().col_value, dtype=np.float64)
    return solution, float(highs.getInfo().objective_function_value), status


def solve_with_highs(
    target_kw: float,
    lower_kw: ArrayLike,
    upper_kw: ArrayLike,
    cost: ArrayLike,
    quad_cost: ArrayLike | None = None,
    *,
    time_limit_s: float | None = None,
    options: Options | None = None,
) -> tuple[FloatArray, float, str]:
    """Solve the allocation problem of ``dispatch.allocate`` with HiGHS.

    minimise ``sum(cost*p + 0.5*quad_cost*p**2)`` s.t. ``sum(p) == target_kw``,
    ``lower_kw <= p <= upper_kw`` (kW, CNY/kWh, CNY/kW^2h).

    Returns ``(setpoints [kW], objective [CNY/h], model status)``; the status
    is HiGHS's text, e.g. "Optimal", "Infeasible", "Time limit reached"
    ("Empty" when no device can move). Devices with ``lower == upper`` are
    passed as constants, not columns. ``time_limit_s`` [s] and
    ``options`` (HiGHS option names and values) tune the solver.
    """
    lower = np.asarray(lower_kw, dtype=np.float64)
    upper = np.asarray(upper_kw, dtype=np.float64)
    costs = np.asarray(cost, dtype=np.float64)
    quad = np.zeros_like(costs) if quad_cost is None else np.asarray(quad_cost, dtype=np.float64)
    # Fixed devices (lower == upper) are constants, not variables: HiGHS's QP solver can
    # cycle without end when the only Hessian entries sit on fixed columns.
    free = lower < upper
    fixed_kw = float(np.sum(lower[~free]))
    fixed_objective = objective(lower[~free], costs[~free], quad[~free])
    n = int(free.sum())
    target = np.array([float(target_kw) - fixed_kw])
    ones = (np.arange(n + 1, dtype=np.int32), np.zeros(n, dtype=np.int32), np.ones(n))
    model = _model(costs[free], (lower[free], upper[free]), (target, target), ones, quad[free])
    # HiGHS's default QP regularisation (1e-7) makes its active-set solver cycle on
    # ties between linear columns at the threshold price; without it, it does not.
    options = {"qp_regularization_value": 0.0, **(options or {})}
    free_setpoints, free_objective, status = _solve(_solver(time_limit_s, options), model)
    setpoints = lower.copy()
    if free_setpoints.size == n:
        setpoints[free] = free_setpoints
    return setpoints, free_objective + fixed_objective, status


def solve_baseline_with_highs(
    target_kw: float,
    baseline_kw: ArrayLike,
    lower_kw: ArrayLike,
    upper_kw: ArrayLike,
    cost: ArrayLike,
    *,
    time_limit_s: float | None = None,
    options: Options | None = None,
) -> tuple[FloatArray, float, str]:
    """Solve the problem of ``dispatch.allocate_from_baseline`` with HiGHS.

    minimise ``sum(cost*|p - b|)`` with ``b = clip(baseline_kw, lower_kw,
    upper_kw)``, s.t. ``sum(p) == target_kw`` and the bounds. ``|p - b|`` is
    ``up + down`` with two non-negative variables per device and the rows
    ``p - up + down == b``.

    Columns are ``[p, up, down]``; returns ``(p [kW], objective [CNY/h], model status)``.
    """
    lower = np.asarray(lower_kw, dtype=np.float64)
    upper = np.asarray(upper_kw, dtype=np.float64)
    baseline = np.clip(np.asarray(baseline_kw, dtype=np.float64), lower, upper)
    costs = np.asarray(cost, dtype=np.float64)
    n = lower.size
    # Rows 0..n-1: p_i - up_i + down_i = b_i; row n: sum p = target.
    index = np.concatenate((np.stack((np.arange(n), np.full(n, n)), axis=1).ravel(), np.arange(n), np.arange(n)))
    value = np.concatenate((np.ones(2 * n), -np.ones(n), np.ones(n)))
    start = np.concatenate((np.arange(0, 2 * n, 2), 2 * n + np.arange(2 * n + 1)))
    row = np.append(baseline, float(target_kw))
    model = _model(
        np.concatenate((np.zeros(n), costs, costs)),
        (np.concatenate((lower, np.zeros(2 * n))), np.concatenate((upper, np.full(2 * n, np.inf)))),
        (row, row),
        (start.astype(np.int32), index.astype(np.int32), value),
        None,
    )
    solution, objective_value, status = _solve(_solver(time_limit_s, options), model)
    return solution[:n], objective_value, status
