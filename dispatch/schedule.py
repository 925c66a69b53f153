"""Horizon schedule: least-cost 96 x 15-min plan for batteries, PV, shiftable, interruptible loads and EVs.

The model (formulation in ``dispatch.schedule_model``) is built from numpy
index arrays into one ``scipy.sparse`` matrix and handed straight to HiGHS.
Steps: ``build`` (variables, constraints, objective) -> ``_Solver.run``
(solve) -> ``extract``. The solver's status comes back as data on the
:class:`Schedule`, never as an exception.

Integers. Only interruptible devices with a longest-interruption,
events-per-day or least-curtailment limit have on/start indicators, and the
formulation is tight enough that the LP relaxation usually curtails them in
whole, legal events. Every solve starts from that relaxation (it is also the
lower bound). The indicators carry no cost, so when no device's relaxed
curtailment breaks a limit, the relaxed schedule is feasible for the MILP at
the same cost: optimal, gap 0. Otherwise (``SolveOptions.integers``):

* "repair" (default): a small MILP, in its own HiGHS model, over only the
  breaking devices' columns and the grid's, every other column held at its
  relaxed value; its answer is feasible for the full MILP. Then the full LP
  again with those devices' on-indicators fixed, so every other device
  re-adapts; if that makes another device break, it joins the next round.
  The cheapest feasible schedule found is kept; its gap to the relaxation
  bound is reported, and when that gap is above ``mip_rel_gap`` HiGHS branch
  and bound starts from it for at most ``improve_time_s``.
* "lazy": HiGHS branch and bound with the breaking devices integer, repeated
  until none breaks: exact to ``mip_rel_gap``, slower.
* "full": every limited device integer from the start: a plain HiGHS MILP
  (the reference in ``benchmarks/bench_schedule.py``).

Receding horizon: :class:`HorizonScheduler` builds the model once; each
``step`` pushes the new initial SoC, prices and forecasts into the existing
HiGHS model with ``changeColsCost``, ``changeColsBounds`` (changed columns
only) and ``changeRowsBounds``, and re-solves from the previous relaxation's
basis, moved ``shift`` intervals earlier when the horizon rolled on.

Flexibility (:func:`maximise_flexibility`): with ``g*`` the cost-optimal net
grid exchange ``imp - exp`` (fleet power moves it one for one), maximise the
power ``f`` the fleet offers in the chosen intervals ``I``:

    up:   f[t] <= g*[t] - (imp[t] - exp[t])    for t in I   (fleet raises its power)
    down: f[t] <= (imp[t] - exp[t]) - g*[t]    for t in I   (fleet lowers its power)

with ``f >= 0`` and every constraint of the schedule. ``shape="block"``
makes ``f`` equal in every interval of ``I`` (what "reduce load by X kW from
t1 to t2" needs); ``shape="sum"`` lets it vary. Stage 1 maximises ``sum(f)``
subject to ``cost <= optimal cost + cost_budget_cny``; stage 2
(lexicographic) holds ``sum(f)`` at that maximum and minimises the cost. Both
stages handle the indicators as above, in a model of their own (the
scheduler's model is left untouched).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Final, Literal

import highspy
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse

from dispatch.schedule_model import (
    ON_TOLERANCE_KW,
    BatteryFleet,
    EvFleet,
    InterruptibleFleet,
    Layout,
    ModelData,
    PvFleet,
    ScheduleModel,
    ScheduleProblem,
    ShiftableFleet,
    Signals,
    build,
    fingerprint,
    model_data,
    rebound_weights,
)

__all__ = [
    "BatteryFleet",
    "EvFleet",
    "FlexibilityOffer",
    "HorizonScheduler",
    "InterruptibleFleet",
    "PvFleet",
    "Schedule",
    "ScheduleProblem",
    "ShiftableFleet",
    "Signals",
    "SolveOptions",
    "maximise_flexibility",
    "solve_schedule",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Cols = NDArray[np.int32]
IntegerStrategy = Literal["repair", "lazy", "full"]

_MAX_ROUNDS: Final = 6
"""Rounds of adding breaking devices before giving up on a strategy."""
_FEASIBLE: Final = 2
"""HiGHS ``primal_solution_status`` of a feasible point."""
_STATUS: Final = np.array([highspy.HighsBasisStatus(k) for k in range(5)], dtype=object)
"""HiGHS basis statuses by integer value: kLower, kBasic, kUpper, kZero, kNonbasic."""


@dataclass(frozen=True)
class SolveOptions:
    """How to solve a schedule."""

    integers: IntegerStrategy = "repair"
    """What to do when relaxed curtailments break a limit: "repair", "lazy" or "full" (module docstring)."""
    mip_rel_gap: float = 1e-4
    """Relative gap [unitless] at which branch and bound stops, and within which a schedule is "Optimal"."""
    time_limit_s: float | None = None
    """Wall-clock limit over all HiGHS runs of one schedule [s]; None means none."""
    improve_time_s: float | None = 1.5
    """Most time branch and bound may spend improving a repaired schedule whose gap is above
    ``mip_rel_gap`` [s]; 0 skips it, None leaves only ``time_limit_s``."""
    lp_presolve: bool = False
    """HiGHS presolve for LP runs: off is faster on these block-structured models. MILPs always presolve."""
    highs_options: dict[str, bool | int | float | str] = field(default_factory=dict)
    """Further HiGHS options by name."""


@dataclass(frozen=True, eq=False)
class Schedule:
    """A solved horizon. Power in generator sign (+ into the park) [kW]; arrays are NaN without a solution."""

    status: str
    """"Optimal" (gap within ``mip_rel_gap``), "Feasible" (a schedule with a larger gap), or HiGHS's
    model status otherwise, e.g. "Infeasible", "Time limit reached"."""
    has_solution: bool
    objective_cny: float
    """Total cost over the horizon [CNY]: energy, carbon, wear, curtailment, comfort."""
    lower_bound_cny: float
    """Proven lower bound on the cost [CNY] (the objective itself for an LP)."""
    battery_charge_kw: FloatArray
    """[T, n] power drawn to charge, >= 0 [kW]."""
    battery_discharge_kw: FloatArray
    """[T, n] power delivered discharging, >= 0 [kW]."""
    battery_soc_kwh: FloatArray
    """[T+1, n]: row 0 is the initial SoC, row t+1 the SoC at the end of interval t."""
    pv_kw: FloatArray
    shiftable_kw: FloatArray
    ev_kw: FloatArray
    interruptible_kw: FloatArray
    """[T, n] ``-natural_load + curtailment - rebound``."""
    curtailment_kw: FloatArray
    """[T, n] load reduction of the interruptible devices [kW]."""
    interrupted: BoolArray
    """[T, n] interruption windows, to which the duration and events limits apply. Curtailment is 0
    outside them and within [min_curtail_kw, max_curtail_kw] inside."""
    grid_import_kw: FloatArray
    grid_export_kw: FloatArray
    solve_time_s: float
    integer_devices: int
    """Interruptible devices whose indicators had to be made integer."""
    runs: int
    """HiGHS runs made."""

    @property
    def optimal(self) -> bool:
        return self.status == "Optimal"

    @property
    def mip_gap(self) -> float:
        """``(objective - lower bound) / |objective|`` [unitless]; 0 for an LP, inf without a solution."""
        if not self.has_solution:
            return np.inf
        return max(self.objective_cny - self.lower_bound_cny, 0.0) / max(abs(self.objective_cny), 1e-9)

    @property
    def battery_kw(self) -> FloatArray:
        """[T, n] battery power, discharge - charge [kW]."""
        return self.battery_discharge_kw - self.battery_charge_kw

    @property
    def fleet_kw(self) -> FloatArray:
        """[T] net power of all devices [kW]."""
        return (self.battery_kw.sum(1) + self.pv_kw.sum(1) + self.shiftable_kw.sum(1)
                + self.ev_kw.sum(1) + self.interruptible_kw.sum(1))


# ------------------------------------------------------------------ HiGHS ----


def _highs(options: SolveOptions) -> highspy.Highs:
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("mip_rel_gap", float(options.mip_rel_gap))
    for name, value in options.highs_options.items():
        highs.setOptionValue(name, value)
    return highs


def _highs_lp(matrix: sparse.csc_array, cost: FloatArray, col_bounds: tuple[FloatArray, FloatArray],
              row_bounds: tuple[FloatArray, FloatArray], offset: float = 0.0,
              integer: BoolArray | None = None) -> highspy.HighsLp:
    """A ``HighsLp`` straight from a CSC matrix and arrays."""
    lp = highspy.HighsLp()
    lp.num_row_, lp.num_col_ = matrix.shape
    lp.col_cost_, (lp.col_lower_, lp.col_upper_) = cost, col_bounds
    lp.row_lower_, lp.row_upper_ = row_bounds
    lp.offset_ = offset
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_row_, lp.a_matrix_.num_col_ = matrix.shape
    lp.a_matrix_.start_ = matrix.indptr.astype(np.int32)
    lp.a_matrix_.index_ = matrix.indices.astype(np.int32)
    lp.a_matrix_.value_ = matrix.data
    if integer is not None and integer.any():
        lp.integrality_ = _VAR_TYPE[integer.astype(np.int8)].tolist()
    return lp


_VAR_TYPE: Final = np.array([highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger], dtype=object)


# ----------------------------------------------------------------- limits ----


def _longest_run(on: BoolArray) -> NDArray[np.int64]:
    """Longest run of True down each column of ``on`` [T, n]."""
    t = np.arange(on.shape[0])[:, None]
    last_off = np.maximum.accumulate(np.where(on, -1, t), axis=0)
    return (t - last_off).max(axis=0, initial=0)


def limit_breaches(problem: ScheduleProblem, lay: Layout, curtailment_kw: FloatArray) -> BoolArray:
    """Per limited device: does this curtailment [T, n_interruptible], read as "interrupted where
    above the tolerance", break its duration, events or least-curtailment limit?"""
    fleet = problem.interruptible
    curtail = curtailment_kw[:, lay.limited]
    on = curtail > ON_TOLERANCE_KW
    too_small = (on & (curtail < fleet.min_curtail_kw[lay.limited] - ON_TOLERANCE_KW)).any(axis=0)
    too_long = (lay.duration_limit >= 0) & (_longest_run(on) > lay.duration_limit)
    starts = on & ~np.vstack((np.zeros((1, on.shape[1]), bool), on[:-1]))
    per_day = np.zeros((lay.days, on.shape[1]))
    np.add.at(per_day, np.arange(lay.intervals) // problem.intervals_per_day, starts)
    allowed = np.broadcast_to(fleet.max_events_per_day[lay.limited], per_day.shape).copy()
    if lay.days:
        allowed[0] = np.maximum(allowed[0] - fleet.events_used[lay.limited], 0.0)
    return too_long | too_small | (per_day > allowed).any(axis=0)


# ----------------------------------------------------------------- solver ----


class _Clock:
    def __init__(self, limit_s: float | None) -> None:
        self.started, self.limit_s = time.perf_counter(), limit_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return 1e9 if self.limit_s is None else max(self.limit_s - self.elapsed(), 1e-3)


@dataclass
class _Outcome:
    x: FloatArray | None
    status: str
    objective: float
    bound: float


def _gap(outcome: _Outcome) -> float:
    return max(outcome.objective - outcome.bound, 0.0) / max(abs(outcome.objective), 1e-9)


class _Solver:
    """One HiGHS model, mirrored in numpy (matrix, costs, bounds) so it can be edited and sliced.

    ``base_lower``/``base_upper`` are the problem's column bounds; the
    integer strategies fix columns temporarily and always restore them.
    """

    def __init__(self, model: ScheduleModel, options: SolveOptions) -> None:
        data = model.data
        self.model, self.options, self.layout = model, options, model.layout
        self.matrix = model.matrix
        self.cost, self.offset = data.col_cost.copy(), data.offset
        self.base_lower, self.base_upper = data.col_lower.copy(), data.col_upper.copy()
        self.row_lower, self.row_upper = data.row_lower.copy(), data.row_upper.copy()
        self._lower, self._upper = self.base_lower.copy(), self.base_upper.copy()
        self.highs = _highs(options)
        self.highs.passModel(_highs_lp(self.matrix, self.cost, (self._lower, self._upper),
                                       (self.row_lower, self.row_upper), self.offset))
        self.integer = np.zeros(self.layout.limited.size, dtype=bool)
        self.basis: highspy.HighsBasis | None = None
        """Basis of the last relaxation: the warm start of the next one."""
        self.x: FloatArray | None = None
        """Column values of the last ``run`` (None without a solution)."""
        self.runs = 0

    # -- edits (HiGHS and the mirror together) --

    def set_data(self, data: ModelData) -> None:
        """New costs and bounds for the schedule's own columns and rows."""
        n, m = self.layout.num_col, self.layout.num_row
        self.set_cost(np.arange(n, dtype=np.int32), data.col_cost, data.offset)
        self.highs.changeRowsBounds(m, np.arange(m, dtype=np.int32), data.row_lower, data.row_upper)
        self.row_lower[:m], self.row_upper[:m] = data.row_lower, data.row_upper
        self.base_lower[:n], self.base_upper[:n] = data.col_lower, data.col_upper
        self.bounds(self.base_lower, self.base_upper)

    def set_cost(self, cols: Cols, values: FloatArray, offset: float | None = None) -> None:
        self.highs.changeColsCost(cols.size, cols, values)
        self.cost[cols] = values
        if offset is not None:
            self.highs.changeObjectiveOffset(offset)
            self.offset = offset

    def bounds(self, lower: FloatArray, upper: FloatArray) -> None:
        """Set all column bounds, sending HiGHS only the columns that change."""
        changed = np.flatnonzero((lower != self._lower) | (upper != self._upper)).astype(np.int32)
        if changed.size:
            self.highs.changeColsBounds(changed.size, changed, lower[changed], upper[changed])
            self._lower, self._upper = lower.copy(), upper.copy()

    def add_cols(self, cost: FloatArray, lower: FloatArray, upper: FloatArray) -> Cols:
        """Append continuous columns (no matrix entries yet); returns their indices."""
        start, k = self.matrix.shape[1], cost.size
        self.highs.addCols(k, cost, lower, upper, 0, np.zeros(k, np.int32), np.zeros(0, np.int32), np.zeros(0))
        self.basis = None  # the saved basis no longer fits; HiGHS extends its own
        self.matrix = sparse.hstack((self.matrix, sparse.csc_array((self.matrix.shape[0], k)))).tocsc()
        self.cost = np.concatenate((self.cost, cost))
        self.base_lower = np.concatenate((self.base_lower, lower))
        self.base_upper = np.concatenate((self.base_upper, upper))
        self._lower, self._upper = np.concatenate((self._lower, lower)), np.concatenate((self._upper, upper))
        return np.arange(start, start + k, dtype=np.int32)

    def add_rows(self, rows: sparse.csr_array, lower: FloatArray, upper: FloatArray) -> None:
        """Append rows given as a CSR matrix over all current columns."""
        rows = sparse.csr_array(rows)
        self.highs.addRows(rows.shape[0], lower, upper, rows.nnz, rows.indptr[:-1].astype(np.int32),
                           rows.indices.astype(np.int32), rows.data)
        self.matrix = sparse.vstack((self.matrix, rows)).tocsc()
        self.basis = None
        self.row_lower = np.concatenate((self.row_lower, lower))
        self.row_upper = np.concatenate((self.row_upper, upper))

    def _on_cols(self, devices: BoolArray) -> Cols:
        return self.layout.cols["on"].index()[:, devices].ravel().astype(np.int32)

    def _integrality(self, devices: BoolArray) -> None:
        """Make exactly ``devices`` (a mask over the limited devices) integer."""
        changed = devices != self.integer
        if changed.any():
            cols = self._on_cols(changed)
            kind = np.broadcast_to(devices[changed], (self.layout.intervals, int(changed.sum()))).ravel()
            self.highs.changeColsIntegrality(cols.size, cols, kind.astype(np.uint8))
            self.integer = devices.copy()

    # -- warm start --

    def shift_basis(self, intervals: int) -> None:
        """Move the saved basis ``intervals`` earlier, for a horizon that rolled on by that much.

        Each ``[T, n]`` block takes the status from ``intervals`` later and the
        last intervals repeat the final one. HiGHS repairs the count of basic
        variables (an "alien" basis).
        """
        if self.basis is None or intervals <= 0:
            return
        T, k = self.layout.intervals, min(intervals, self.layout.intervals)
        cols = np.fromiter(map(int, self.basis.col_status), dtype=np.int8)
        rows = np.fromiter(map(int, self.basis.row_status), dtype=np.int8)
        for status, blocks in ((cols, self.layout.cols), (rows, self.layout.rows)):
            for block in blocks.values():
                if block.shape[0] != T or block.size == 0:
                    continue
                grid = status[block.start:block.stop].reshape(block.shape)
                grid[:T - k] = grid[k:].copy()
                grid[T - k:] = grid[T - 1]
        basis = highspy.HighsBasis()
        basis.col_status, basis.row_status = _STATUS[cols].tolist(), _STATUS[rows].tolist()
        basis.valid, basis.alien = True, True
        self.basis = basis

    # -- runs --

    def _run(self, clock: _Clock, mip: bool) -> FloatArray | None:
        self.highs.setOptionValue("presolve", "on" if mip or self.options.lp_presolve else "off")
        self.highs.setOptionValue("time_limit", float(clock.left()))
        self.highs.run()
        self.runs += 1
        if self.highs.getInfo().primal_solution_status != _FEASIBLE:
            return None
        return np.asarray(self.highs.getSolution().col_value, dtype=np.float64)

    def _status(self) -> str:
        return self.highs.modelStatusToString(self.highs.getModelStatus())

    def _objective(self) -> float:
        return float(self.highs.getInfo().objective_function_value)

    def _relaxation(self, clock: _Clock) -> FloatArray | None:
        self._integrality(np.zeros_like(self.integer))
        self.bounds(self.base_lower, self.base_upper)
        if self.basis is not None:
            self.highs.setBasis(self.basis)
        x = self._run(clock, mip=False)
        if x is not None:
            self.basis = self.highs.getBasis()
        return x

    def _breaches(self, problem: ScheduleProblem, x: FloatArray) -> BoolArray:
        block = self.layout.cols["curtail"]
        return limit_breaches(problem, self.layout, x[block.start:block.stop].reshape(block.shape))

    def run(self, problem: ScheduleProblem) -> Schedule:
        """Solve with the current data (``SolveOptions.integers``); ``self.x`` keeps the column values."""
        clock, self.runs = _Clock(self.options.time_limit_s), 0
        nl = self.layout.limited.size
        chosen = np.zeros(nl, dtype=bool)
        if self.options.integers == "full" and nl:
            outcome, chosen = self._branch_and_bound(problem, np.ones(nl, dtype=bool), -np.inf, clock)
        else:
            x = self._relaxation(clock)
            outcome = _Outcome(x, self._status(), self._objective(), self._objective())
            if x is not None:
                chosen = self._breaches(problem, x)
            if chosen.any() and self.options.integers == "repair":
                outcome, chosen = self._repair(problem, x, chosen, outcome.objective, clock)  # type: ignore[arg-type]
            elif chosen.any():
                outcome, chosen = self._branch_and_bound(problem, chosen, outcome.objective, clock)
        self._integrality(np.zeros(nl, dtype=bool))
        self.bounds(self.base_lower, self.base_upper)
        self.x = outcome.x
        return extract(problem, self.layout, outcome, clock.elapsed(), self.runs, chosen)

    def _branch_and_bound(self, problem: ScheduleProblem, chosen: BoolArray, bound: float, clock: _Clock,
                          incumbent: FloatArray | None = None) -> tuple[_Outcome, BoolArray]:
        """HiGHS MILP with ``chosen`` integer, growing the set until no device breaks a limit.

        ``incumbent`` (a feasible schedule's columns) seeds the search. Returns the outcome and
        the devices that ended up integer.
        """
        chosen = chosen.copy()
        self.bounds(self.base_lower, self.base_upper)
        for round_ in range(_MAX_ROUNDS):
            if round_ == _MAX_ROUNDS - 1:
                chosen[:] = True  # last round: every limited device integer, so the answer is feasible
            self._integrality(chosen)
            if incumbent is not None:
                start = highspy.HighsSolution()
                start.col_value, start.value_valid = incumbent.tolist(), True
                self.highs.setSolution(start)
            x = self._run(clock, mip=True)
            proven = max(bound, float(self.highs.getInfo().mip_dual_bound))
            outcome = _Outcome(x, self._status(), self._objective(), proven)
            new = np.zeros_like(chosen) if x is None else self._breaches(problem, x) & ~chosen
            if not new.any():
                break
            chosen |= new
        return outcome, chosen

    def _repair(self, problem: ScheduleProblem, x: FloatArray, chosen: BoolArray, bound: float,
                clock: _Clock) -> tuple[_Outcome, BoolArray]:
        """Small MILP over the breaking devices (feasible for the full model), then the LP with their
        indicators fixed (every other device re-adapts; feasible unless another device breaks,
        which then joins the next round). Keeps the best feasible schedule; stops once within the gap.
        """
        lay, chosen = self.layout, chosen.copy()
        best: tuple[_Outcome, BoolArray] | None = None

        def keep(x: FloatArray) -> bool:
            nonlocal best
            found = _Outcome(x, "Feasible", float(self.cost @ x) + self.offset, bound)
            if best is None or found.objective < best[0].objective:
                best = (found, chosen.copy())
            return _gap(best[0]) <= self.options.mip_rel_gap

        for _ in range(_MAX_ROUNDS):
            free = np.zeros(self.matrix.shape[1], dtype=bool)
            free[lay.num_col:] = True  # columns added after the build (flexibility)
            for name in ("import", "export"):
                free[lay.cols[name].start:lay.cols[name].stop] = True
            for name, which in (("curtail", lay.limited[chosen]), ("on", chosen), ("start", chosen)):
                free[lay.cols[name].index()[:, which].ravel()] = True
            on_cols = self._on_cols(chosen)
            small = self._small_mip(x, free, on_cols, clock)
            if small is None or keep(small):
                break
            lower, upper = self.base_lower.copy(), self.base_upper.copy()
            lower[on_cols] = upper[on_cols] = np.round(small[on_cols])
            self.bounds(lower, upper)
            polished = self._run(clock, mip=False)
            if polished is None:
                break
            new = self._breaches(problem, polished) & ~chosen
            if not new.any():
                keep(polished)
                break
            chosen |= new
            x = polished
        if best is None:  # the shortcut found nothing: branch and bound on the devices known to matter
            return self._branch_and_bound(problem, chosen, bound, clock)
        return self._settle(problem, *best, clock)

    def _settle(self, problem: ScheduleProblem, found: _Outcome, chosen: BoolArray,
                clock: _Clock) -> tuple[_Outcome, BoolArray]:
        """``found`` if within the gap, else the better of it and branch and bound started from it
        (for at most ``improve_time_s``). Status "Optimal" within ``mip_rel_gap``, else "Feasible"."""
        limit = self.options.improve_time_s
        if _gap(found) > self.options.mip_rel_gap and (limit is None or limit > 0):
            improve = _Clock(clock.left() if limit is None else min(clock.left(), limit))
            better, integer = self._branch_and_bound(problem, chosen, found.bound, improve, incumbent=found.x)
            if better.x is not None and better.objective <= found.objective:
                found, chosen = better, integer
            else:
                found = replace(found, bound=max(found.bound, better.bound))
        return replace(found, status="Optimal" if _gap(found) <= self.options.mip_rel_gap else "Feasible"), chosen

    def _small_mip(self, x: FloatArray, free: BoolArray, integer_cols: Cols, clock: _Clock) -> FloatArray | None:
        """Optimise the ``free`` columns with every other column held at ``x``, as a separate small model.

        Returns ``x`` with the free columns replaced, or None when the small model has no solution.
        """
        cols = np.flatnonzero(free)
        held = np.where(free, 0.0, np.clip(x, self.base_lower, self.base_upper))
        sub = self.matrix[:, cols].tocsr()
        rows = np.flatnonzero(np.diff(sub.indptr))  # rows that touch a free column
        sub = sub[rows].tocsc()
        activity = (self.matrix @ held)[rows]
        integer = np.zeros(self.matrix.shape[1], dtype=bool)
        integer[integer_cols] = True
        highs = _highs(self.options)
        highs.setOptionValue("time_limit", float(clock.left()))
        highs.passModel(_highs_lp(sub, self.cost[cols], (self.base_lower[cols], self.base_upper[cols]),
                                  (self.row_lower[rows] - activity, self.row_upper[rows] - activity),
                                  integer=integer[cols]))
        highs.run()
        self.runs += 1
        if highs.getInfo().primal_solution_status != _FEASIBLE:
            return None
        result = held
        result[cols] = np.asarray(highs.getSolution().col_value, dtype=np.float64)
        return result


# ---------------------------------------------------------------- extract ----


def extract(problem: ScheduleProblem, lay: Layout, outcome: _Outcome, seconds: float, runs: int,
            integer: BoolArray) -> Schedule:
    """Per-kind arrays from the column values (no solution: NaN arrays).

    ``integer`` marks the limited devices whose on-indicators were integer: their
    interruptions are those indicators; every other device is interrupted where it curtails.
    """
    found = outcome.x is not None
    x = outcome.x if outcome.x is not None else np.full(lay.num_col, np.nan)

    def block(name: str) -> FloatArray:
        b = lay.cols[name]
        return x[b.start:b.stop].reshape(b.shape)

    fleet = problem.interruptible
    curtail = block("curtail").copy()
    curtail[curtail <= ON_TOLERANCE_KW] = 0.0  # at or below the tolerance counts as "not interrupted"
    interrupted = curtail > 0
    devices = lay.limited[integer]
    interrupted[:, devices] = block("on")[:, integer] > 0.5
    curtail[~interrupted] = 0.0  # what an indicator within HiGHS's integrality tolerance of 0 lets through
    rebound = rebound_weights(lay.intervals, fleet.rebound_intervals) @ curtail * fleet.rebound_fraction
    soc0 = problem.batteries.soc0_kwh[None, :] + (0.0 if found else np.nan)
    return Schedule(
        status=outcome.status,
        has_solution=found,
        objective_cny=outcome.objective if found else np.nan,
        lower_bound_cny=outcome.bound if found else np.nan,
        battery_charge_kw=block("charge").copy(),
        battery_discharge_kw=block("discharge").copy(),
        battery_soc_kwh=np.vstack((soc0, block("soc"))),
        pv_kw=block("pv").copy(),
        shiftable_kw=-block("shift"),
        ev_kw=-block("ev"),
        interruptible_kw=-fleet.natural_load_kw + curtail - rebound,
        curtailment_kw=curtail,
        interrupted=interrupted,
        grid_import_kw=block("import")[:, 0].copy(),
        grid_export_kw=block("export")[:, 0].copy(),
        solve_time_s=seconds,
        integer_devices=int(integer.sum()),
        runs=runs,
    )


# ----------------------------------------------------------------- public ----


def solve_schedule(problem: ScheduleProblem, options: SolveOptions | None = None) -> Schedule:
    """Least-cost schedule of ``problem`` (build, solve, extract)."""
    return HorizonScheduler(problem, options).solve()


class HorizonScheduler:
    """Receding-horizon scheduler: builds the HiGHS model once, re-solves it in place.

    ``step(problem, shift)`` takes the next horizon's problem (prices and
    forecasts, measured SoC, energy still to deliver, events already used)
    with the same fleets and limits, hence the same matrix: only costs and
    bounds change. A problem that needs another matrix raises ValueError.
    """

    def __init__(self, problem: ScheduleProblem, options: SolveOptions | None = None) -> None:
        started = time.perf_counter()
        self.options = options or SolveOptions()
        self.problem = problem
        self.model = build(problem)
        self._solver = _Solver(self.model, self.options)
        self.build_time_s = time.perf_counter() - started
        """Seconds to build the matrix and hand it to HiGHS."""
        self.last: Schedule | None = None
        """Schedule of the current problem, once solved."""

    def update(self, problem: ScheduleProblem) -> None:
        """Replace the model's costs and bounds with ``problem``'s."""
        if fingerprint(problem) != self.model.fingerprint:
            raise ValueError(
                "problem needs a different matrix (fleet sizes, intervals, dt_h, efficiencies, rebound, "
                "max_curtail_kw or interruption limits changed); build a new HorizonScheduler"
            )
        self._solver.set_data(model_data(problem, self.model.layout))
        self.problem, self.last = problem, None

    def solve(self) -> Schedule:
        """Solve the current problem."""
        self.last = self._solver.run(self.problem)
        return self.last

    def step(self, problem: ScheduleProblem, shift: int = 0) -> Schedule:
        """``update(problem)`` then ``solve()``.

        ``shift`` is how many intervals the horizon's start moved since the
        last solve (1 when rolling every interval, 0 when re-solving the same
        window with new data); the warm start moves the previous basis by as much.
        """
        self.update(problem)
        self._solver.shift_basis(shift)
        return self.solve()

    def maximise_flexibility(self, intervals: ArrayLike, direction: Literal["up", "down"], *,
                             shape: Literal["block", "sum"] = "block", cost_budget_cny: float = np.inf,
                             lexicographic: bool = True) -> FlexibilityOffer:
        """:func:`maximise_flexibility` on the current problem, from the last schedule when there is one."""
        return maximise_flexibility(self.problem, intervals, direction, shape=shape, cost_budget_cny=cost_budget_cny,
                                    lexicographic=lexicographic, options=self.options, baseline=self.last)


# ------------------------------------------------------------ flexibility ----


@dataclass(frozen=True, eq=False)
class FlexibilityOffer:
    """Power the fleet can offer in the chosen intervals, measured from its cost-optimal schedule."""

    status: str
    direction: str
    offered_kw: FloatArray
    """[T] offered power, >= 0, 0 outside the chosen intervals [kW]."""
    baseline: Schedule
    """The cost-optimal schedule the offer is measured from."""
    schedule: Schedule
    """A feasible schedule that delivers the offer; its ``objective_cny`` is its true cost."""
    extra_cost_cny: float
    """Cost of ``schedule`` above ``baseline`` [CNY]."""


def _interval_mask(intervals: ArrayLike, T: int) -> BoolArray:
    arr = np.asarray(intervals)
    if arr.dtype == np.bool_:
        if arr.shape != (T,):
            raise ValueError(f"intervals: a boolean mask needs shape ({T},), got {arr.shape}")
        return arr.copy()
    idx = arr.astype(np.int64).ravel()
    if ((idx < 0) | (idx >= T)).any():
        raise ValueError(f"intervals: indices must lie in [0, {T})")
    mask = np.zeros(T, dtype=bool)
    mask[idx] = True
    return mask


def _offer_rows(solver: _Solver, baseline: Schedule, chosen: NDArray[np.int64], sign: float, block: bool) -> Cols:
    """Add the offer columns ``f`` and their rows; returns the ``f`` columns."""
    lay, k = solver.layout, chosen.size
    f = solver.add_cols(np.zeros(k), np.zeros(k), np.full(k, np.inf))
    n = solver.matrix.shape[1]
    # sign * (g*[t] - imp[t] + exp[t]) >= f[t]   <=>   -sign*imp + sign*exp - f >= -sign*g*[t]
    g_star = baseline.grid_import_kw - baseline.grid_export_kw
    imp, exp = lay.cols["import"].index()[chosen, 0], lay.cols["export"].index()[chosen, 0]
    row = np.repeat(np.arange(k), 3)
    col = np.stack((imp, exp, f), axis=1).ravel()
    rows = sparse.csr_array((np.tile([-sign, sign, -1.0], k), (row, col)), shape=(k, n))
    solver.add_rows(rows, -sign * g_star[chosen], np.full(k, np.inf))
    if block and k > 1:  # f[t] - f[first] == 0
        row = np.repeat(np.arange(k - 1), 2)
        col = np.stack((f[1:], np.full(k - 1, f[0])), axis=1).ravel()
        rows = sparse.csr_array((np.tile([1.0, -1.0], k - 1), (row, col)), shape=(k - 1, n))
        solver.add_rows(rows, np.zeros(k - 1), np.zeros(k - 1))
    return f


def _one_row(solver: _Solver, cols: NDArray[np.integer], values: FloatArray, lower: float, upper: float) -> None:
    n = solver.matrix.shape[1]
    row = sparse.csr_array((values, (np.zeros(cols.size, dtype=np.int64), cols)), shape=(1, n))
    solver.add_rows(row, np.array([lower]), np.array([upper]))


def maximise_flexibility(
    problem: ScheduleProblem,
    intervals: ArrayLike,
    direction: Literal["up", "down"],
    *,
    shape: Literal["block", "sum"] = "block",
    cost_budget_cny: float = np.inf,
    lexicographic: bool = True,
    options: SolveOptions | None = None,
    baseline: Schedule | None = None,
) -> FlexibilityOffer:
    """Most power the fleet can offer in ``intervals`` (indices or a [T] mask), "up" or "down".

    Measured from the cost-optimal schedule (``baseline``, solved when None),
    within every schedule constraint and a cost at most ``cost_budget_cny``
    [CNY] above the baseline's. Formulation in the module docstring.
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction: expected 'up' or 'down', got {direction!r}")
    if shape not in ("block", "sum"):
        raise ValueError(f"shape: expected 'block' or 'sum', got {shape!r}")
    options = options or SolveOptions()
    mask = _interval_mask(intervals, problem.intervals)
    baseline = baseline if baseline is not None else solve_schedule(problem, options)
    none = np.zeros(problem.intervals)
    if not baseline.has_solution or not mask.any():
        return FlexibilityOffer(baseline.status, direction, none, baseline, baseline, 0.0)

    model = build(problem)
    solver = _Solver(model, options)
    n = model.layout.num_col
    own = np.arange(n, dtype=np.int32)
    f = _offer_rows(solver, baseline, np.flatnonzero(mask), 1.0 if direction == "up" else -1.0, shape == "block")
    if np.isfinite(cost_budget_cny):
        budget = baseline.objective_cny - model.data.offset + float(cost_budget_cny)
        nz = np.flatnonzero(model.data.col_cost)
        _one_row(solver, nz, model.data.col_cost[nz], -np.inf, budget + 1e-9 * max(1.0, abs(budget)))
    # Stage 1: maximise sum(f); the schedule's own costs are off.
    solver.set_cost(own, np.zeros(n), 0.0)
    solver.set_cost(f, -np.ones(f.size))
    result, x = solver.run(problem), solver.x
    if x is not None and lexicographic:
        # Stage 2: hold sum(f) at its maximum (less a hair for round-off) and minimise the cost.
        best = float(x[f].sum())
        _one_row(solver, f, np.ones(f.size), best - 1e-7 * max(1.0, best), np.inf)
        solver.set_cost(f, np.zeros(f.size))
        solver.set_cost(own, model.data.col_cost, model.data.offset)
        second = solver.run(problem)
        if solver.x is not None:
            result, x = second, solver.x
    if x is None:
        return FlexibilityOffer(result.status, direction, none, baseline, result, np.nan)
    offered = none.copy()
    offered[mask] = np.maximum(x[f], 0.0)
    cost = float(model.data.col_cost @ x[:n]) + model.data.offset
    return FlexibilityOffer(result.status, direction, offered, baseline, replace(result, objective_cny=cost),
                            cost - baseline.objective_cny)
