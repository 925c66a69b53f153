"""Horizon schedule model: fleets and signals in, HiGHS-ready sparse arrays out.

Pure numpy/scipy. The steps are named like PyPSA's: :func:`layout` (which
column and row blocks exist), :func:`variables` (column bounds),
:func:`constraints` (the sparse matrix), :func:`row_bounds`,
:func:`objective`; :func:`build` runs them all. ``dispatch.schedule`` solves
and extracts.

Formulation (``T`` intervals of ``dt`` hours, index ``t``; device ``i``;
powers in kW, generator sign: + into the park)::

    battery   0 <= ch <= p_charge_max,  0 <= dis <= p_discharge_max
              soc[t] = soc[t-1] + dt*eta_c*ch[t] - dt/eta_d*dis[t]   (soc[-1] = soc0)
              soc_min <= soc[t] <= soc_max,  soc[T-1] >= soc_terminal_min
              power = dis - ch;  wear cost = cost * dt * (ch + dis)
    pv        0 <= pv <= potential;  power = pv
              curtailment cost = curtail_cost * dt * (potential - pv)
    shiftable 0 <= x <= rated * window;  sum_t dt*x = energy;  power = -x
    ev        0 <= x <= p_max * [arrival <= t < departure];
              sum_t dt*x = energy;  power = -x
    interrupt 0 <= c <= min(max_curtail, natural_load)       (curtailed kW)
              power = -natural_load + c - rebound_fraction * (W @ c)
              comfort cost = comfort_cost * dt * c
    grid      0 <= imp <= import_limit,  0 <= exp <= export_limit
              imp[t] - exp[t] + sum_i power[t, i] = base_load[t]

Rebound (a simple linear form): energy curtailed in interval ``s`` comes
back as load spread evenly over the next ``rebound_intervals`` (``k``)
intervals: ``W[t, s] = 1/k`` for ``s < t <= s + k``. Shares that would fall
after the horizon's last interval land in the last interval, so
``rebound_fraction`` of all curtailed energy is consumed inside the horizon
(curtailing in the last interval itself only saves ``1 - rebound_fraction``).
The rebound is not capped by the device rating.

Interruption limits, only for interruptible devices that have one (a
longest interruption, events per day or a least curtailment: the "limited"
devices; others stay continuous, and without any the model is an LP):
on-indicator ``u`` (the interval is part of an interruption) and start
indicator ``s`` per interval, with

    min_curtail * u[t] <= c[t] <= max_curtail * u[t]
    s[t] >= u[t] - u[t-1],  s[t] <= u[t],  s[t] <= 1 - u[t-1]
                                        (s is exactly the start; u[-1] = 0: nothing running at t = 0)
    u[t] <= sum(s[t-L+1 .. t])          (on only within L intervals of a start: longest interruption L)
    sum(s over a day) <= events_per_day (minus ``events_used`` on the first day)

``u`` is binary; ``s`` can stay continuous because ``u`` is. The
"recent start" row is the tight form of the duration limit: summed over a
day it gives ``sum(u) <= L * sum(s) <= L * events``, so the LP relaxation
cannot spread a fractional interruption over a long peak, and in practice it
is integral for almost every device. Days are consecutive chunks of
``intervals_per_day`` intervals from the horizon start. Which ``u`` are
declared integer is decided by the solver (``dispatch.schedule``).

Grid term of the objective, per interval (prices per kWh; the market price,
CNY/MWh, settles the park's net position ``imp - exp`` on top of the tariff)::

    dt * imp * (import_price + market/1000 + emission_factor * carbon_price/1000)
  - dt * exp * (export_price + market/1000)

Columns and rows are laid out in blocks of shape ``[T, n]`` (interval-major,
so a block's values reshape straight to ``[T, n]``). Nothing here loops over
(device, interval) pairs: every index array comes from numpy broadcasting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse

from dispatch._checks import first_violation as _check

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

INF: Final = np.inf
ON_TOLERANCE_KW: Final = 1e-6
"""Curtailment at or below this [kW] counts as "not interrupted"."""


# ------------------------------------------------------------------ inputs ----


def _vector(name: str, value: ArrayLike, n: int | None = None) -> FloatArray:
    """``value`` as a finite-or-inf float vector of length ``n`` (scalars broadcast)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0 and n is not None:
        arr = np.full(n, float(arr))
    if arr.ndim != 1 or (n is not None and arr.size != n):
        raise ValueError(f"{name}: expected shape ({n if n is not None else 'n'},), got {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name}[{int(np.flatnonzero(np.isnan(arr))[0])}] is NaN")
    return arr


def _matrix(name: str, value: ArrayLike, dtype: type = np.float64) -> NDArray:
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a [T, n] array, got shape {arr.shape}")
    if arr.dtype == np.float64 and not np.isfinite(arr).all():
        raise ValueError(f"{name}: must be finite")
    return arr


def _set(obj: object, **values: object) -> None:
    for key, value in values.items():
        object.__setattr__(obj, key, value)


@dataclass(frozen=True, eq=False)
class BatteryFleet:
    """Batteries, one entry per device. Vectors of length n; scalars broadcast."""

    capacity_kwh: FloatArray
    soc0_kwh: FloatArray
    p_charge_max_kw: FloatArray
    p_discharge_max_kw: FloatArray
    soc_min_kwh: FloatArray = 0.0  # type: ignore[assignment]
    soc_max_kwh: FloatArray | None = None
    """Highest SoC [kWh]; None means ``capacity_kwh``."""
    eta_charge: FloatArray = 0.95  # type: ignore[assignment]
    eta_discharge: FloatArray = 0.95  # type: ignore[assignment]
    soc_terminal_min_kwh: FloatArray | None = None
    """SoC required at the end of the horizon [kWh]; None means ``soc0_kwh``."""
    cost_cny_per_kwh: FloatArray = 0.0  # type: ignore[assignment]
    """Wear cost per kWh of throughput, charged and discharged alike [CNY/kWh]."""

    def __post_init__(self) -> None:
        cap = _vector("capacity_kwh", self.capacity_kwh)
        n = cap.size
        soc0 = _vector("soc0_kwh", self.soc0_kwh, n)
        soc_max = cap if self.soc_max_kwh is None else _vector("soc_max_kwh", self.soc_max_kwh, n)
        terminal = (soc0 if self.soc_terminal_min_kwh is None
                    else _vector("soc_terminal_min_kwh", self.soc_terminal_min_kwh, n))
        _set(
            self, capacity_kwh=cap, soc0_kwh=soc0, soc_max_kwh=soc_max, soc_terminal_min_kwh=terminal,
            p_charge_max_kw=_vector("p_charge_max_kw", self.p_charge_max_kw, n),
            p_discharge_max_kw=_vector("p_discharge_max_kw", self.p_discharge_max_kw, n),
            soc_min_kwh=_vector("soc_min_kwh", self.soc_min_kwh, n),
            eta_charge=_vector("eta_charge", self.eta_charge, n),
            eta_discharge=_vector("eta_discharge", self.eta_discharge, n),
            cost_cny_per_kwh=_vector("cost_cny_per_kwh", self.cost_cny_per_kwh, n),
        )
        for name in ("p_charge_max_kw", "p_discharge_max_kw", "soc_min_kwh", "cost_cny_per_kwh"):
            values = getattr(self, name)
            _check(name, ~(values >= 0), values, ">= 0")
        for name in ("eta_charge", "eta_discharge"):
            values = getattr(self, name)
            _check(name, ~((values > 0) & (values <= 1)), values, "0 < eta <= 1")
        _check("soc_max_kwh", ~(self.soc_max_kwh >= self.soc_min_kwh), self.soc_max_kwh, "soc_max_kwh >= soc_min_kwh")

    @property
    def size(self) -> int:
        return int(self.capacity_kwh.size)

    @classmethod
    def empty(cls) -> BatteryFleet:
        return cls(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))


@dataclass(frozen=True, eq=False)
class PvFleet:
    """PV systems: forecast potential output per interval and device, and the cost of curtailing it."""

    potential_kw: FloatArray
    """[T, n] available output [kW], >= 0."""
    curtail_cost_cny_per_kwh: FloatArray = 0.0  # type: ignore[assignment]

    def __post_init__(self) -> None:
        potential = _matrix("potential_kw", self.potential_kw)
        _check("potential_kw", potential < 0, potential, ">= 0")
        cost = _vector("curtail_cost_cny_per_kwh", self.curtail_cost_cny_per_kwh, potential.shape[1])
        _set(self, potential_kw=potential, curtail_cost_cny_per_kwh=cost)

    @property
    def size(self) -> int:
        return int(self.potential_kw.shape[1])

    @classmethod
    def empty(cls, intervals: int) -> PvFleet:
        return cls(np.zeros((intervals, 0)))


@dataclass(frozen=True, eq=False)
class ShiftableFleet:
    """Loads that need ``energy_kwh`` within their allowed intervals, at any power up to ``rated_kw``."""

    rated_kw: FloatArray
    energy_kwh: FloatArray
    window: BoolArray
    """[T, n] True where the load may run."""

    def __post_init__(self) -> None:
        rated = _vector("rated_kw", self.rated_kw)
        window = _matrix("window", self.window, np.bool_)
        if window.shape[1] != rated.size:
            raise ValueError(f"window: expected {rated.size} columns, got {window.shape[1]}")
        energy = _vector("energy_kwh", self.energy_kwh, rated.size)
        _check("rated_kw", ~(rated >= 0), rated, ">= 0")
        _check("energy_kwh", ~(energy >= 0), energy, ">= 0")
        _set(self, rated_kw=rated, energy_kwh=energy, window=window)

    @property
    def size(self) -> int:
        return int(self.rated_kw.size)

    @classmethod
    def empty(cls, intervals: int) -> ShiftableFleet:
        return cls(np.zeros(0), np.zeros(0), np.zeros((intervals, 0), dtype=bool))


@dataclass(frozen=True, eq=False)
class EvFleet:
    """EV charging sessions: ``energy_kwh`` by ``departure_interval`` (exclusive) at up to ``p_max_kw``."""

    p_max_kw: FloatArray
    energy_kwh: FloatArray
    arrival_interval: IntArray
    departure_interval: IntArray

    def __post_init__(self) -> None:
        p_max = _vector("p_max_kw", self.p_max_kw)
        n = p_max.size
        energy = _vector("energy_kwh", self.energy_kwh, n)
        arrival = np.broadcast_to(np.asarray(self.arrival_interval, dtype=np.int64), (n,)).copy()
        departure = np.broadcast_to(np.asarray(self.departure_interval, dtype=np.int64), (n,)).copy()
        _check("p_max_kw", ~(p_max >= 0), p_max, ">= 0")
        _check("energy_kwh", ~(energy >= 0), energy, ">= 0")
        _check("departure_interval", departure < arrival, departure, "departure_interval >= arrival_interval")
        _set(self, p_max_kw=p_max, energy_kwh=energy, arrival_interval=arrival, departure_interval=departure)

    @property
    def size(self) -> int:
        return int(self.p_max_kw.size)

    def window(self, intervals: int) -> BoolArray:
        """[T, n] True while the vehicle is plugged in."""
        t = np.arange(intervals)[:, None]
        return (t >= self.arrival_interval) & (t < self.departure_interval)

    @classmethod
    def empty(cls) -> EvFleet:
        return cls(np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))


@dataclass(frozen=True, eq=False)
class InterruptibleFleet:
    """Loads that may be curtailed within limits; part of the curtailed energy comes back later."""

    natural_load_kw: FloatArray
    """[T, n] load when not curtailed [kW], >= 0."""
    max_curtail_kw: FloatArray
    min_curtail_kw: FloatArray = 0.0  # type: ignore[assignment]
    """Least curtailment in an interrupted interval [kW]; 0 lets an interruption hold the load at its
    natural level for a while (it still counts as one interruption)."""
    max_interruption_intervals: FloatArray = INF  # type: ignore[assignment]
    """Longest single interruption [intervals]; inf (or >= T) means no limit."""
    max_events_per_day: FloatArray = INF  # type: ignore[assignment]
    """Interruptions started per day; inf means no limit."""
    rebound_fraction: FloatArray = 0.0  # type: ignore[assignment]
    """Share of curtailed energy consumed again in the following ``rebound_intervals``."""
    comfort_cost_cny_per_kwh: FloatArray = 0.0  # type: ignore[assignment]
    events_used: FloatArray = 0.0  # type: ignore[assignment]
    """Interruptions already started on the horizon's first day (receding horizon)."""
    rebound_intervals: int = 4

    def __post_init__(self) -> None:
        load = _matrix("natural_load_kw", self.natural_load_kw)
        n = load.shape[1]
        _check("natural_load_kw", load < 0, load, ">= 0")
        values = {
            name: _vector(name, getattr(self, name), n)
            for name in ("max_curtail_kw", "min_curtail_kw", "max_interruption_intervals", "max_events_per_day",
                         "rebound_fraction", "comfort_cost_cny_per_kwh", "events_used")
        }
        for name, vals in values.items():
            _check(name, ~(vals >= 0), vals, ">= 0")
        _check("rebound_fraction", values["rebound_fraction"] > 1, values["rebound_fraction"], "<= 1")
        _check("min_curtail_kw", values["min_curtail_kw"] > values["max_curtail_kw"], values["min_curtail_kw"],
               "min_curtail_kw <= max_curtail_kw")
        for name in ("max_interruption_intervals", "max_events_per_day"):
            vals = values[name]
            _check(name, np.isfinite(vals) & (vals != np.round(vals)), vals, "whole number or inf")
        if int(self.rebound_intervals) < 1:
            raise ValueError(f"rebound_intervals = {self.rebound_intervals} breaks >= 1")
        _set(self, natural_load_kw=load, rebound_intervals=int(self.rebound_intervals), **values)

    @property
    def size(self) -> int:
        return int(self.natural_load_kw.shape[1])

    @classmethod
    def empty(cls, intervals: int) -> InterruptibleFleet:
        return cls(np.zeros((intervals, 0)), np.zeros(0))


@dataclass(frozen=True, eq=False)
class Signals:
    """Prices and emission factors per interval [T]."""

    import_price_cny_per_kwh: FloatArray
    export_price_cny_per_kwh: FloatArray
    market_price_cny_per_mwh: FloatArray = 0.0  # type: ignore[assignment]
    """Spot price settling the park's net position on top of the tariff; 0 on a pure TOU tariff."""
    emission_factor_kg_per_kwh: FloatArray = 0.0  # type: ignore[assignment]
    carbon_price_cny_per_t: float = 0.0

    def __post_init__(self) -> None:
        imp = _vector("import_price_cny_per_kwh", self.import_price_cny_per_kwh)
        n = imp.size
        _set(
            self, import_price_cny_per_kwh=imp,
            export_price_cny_per_kwh=_vector("export_price_cny_per_kwh", self.export_price_cny_per_kwh, n),
            market_price_cny_per_mwh=_vector("market_price_cny_per_mwh", self.market_price_cny_per_mwh, n),
            emission_factor_kg_per_kwh=_vector("emission_factor_kg_per_kwh", self.emission_factor_kg_per_kwh, n),
            carbon_price_cny_per_t=float(self.carbon_price_cny_per_t),
        )
        factor = self.emission_factor_kg_per_kwh
        _check("emission_factor_kg_per_kwh", factor < 0, factor, ">= 0")

    def import_cost(self) -> FloatArray:
        """Cost of one kWh imported, carbon included [CNY/kWh]."""
        carbon = self.emission_factor_kg_per_kwh * self.carbon_price_cny_per_t / 1000.0
        return self.import_price_cny_per_kwh + self.market_price_cny_per_mwh / 1000.0 + carbon

    def export_revenue(self) -> FloatArray:
        """Revenue of one kWh exported [CNY/kWh]."""
        return self.export_price_cny_per_kwh + self.market_price_cny_per_mwh / 1000.0


@dataclass(frozen=True, eq=False)
class ScheduleProblem:
    """One horizon: base load, signals, fleets (None = no such devices), grid limits."""

    base_load_kw: FloatArray
    """[T] uncontrolled load [kW] (consumption positive)."""
    signals: Signals
    batteries: BatteryFleet | None = None
    pv: PvFleet | None = None
    shiftable: ShiftableFleet | None = None
    interruptible: InterruptibleFleet | None = None
    ev: EvFleet | None = None
    dt_h: float = 0.25
    import_limit_kw: float = INF
    export_limit_kw: float = INF
    intervals_per_day: int | None = None
    """Intervals in one day for the events-per-day limit; None means round(24 / dt_h)."""

    def __post_init__(self) -> None:
        base = _vector("base_load_kw", self.base_load_kw)
        if not np.isfinite(base).all():
            raise ValueError("base_load_kw: must be finite")
        T = base.size
        if not self.dt_h > 0:
            raise ValueError(f"dt_h = {self.dt_h} breaks > 0")
        _set(
            self, base_load_kw=base,
            batteries=self.batteries or BatteryFleet.empty(),
            pv=self.pv or PvFleet.empty(T),
            shiftable=self.shiftable or ShiftableFleet.empty(T),
            interruptible=self.interruptible or InterruptibleFleet.empty(T),
            ev=self.ev or EvFleet.empty(),
            intervals_per_day=int(self.intervals_per_day or round(24.0 / self.dt_h)),
            dt_h=float(self.dt_h), import_limit_kw=float(self.import_limit_kw),
            export_limit_kw=float(self.export_limit_kw),
        )
        for name, rows in (("signals", self.signals.import_price_cny_per_kwh.size),
                           ("pv.potential_kw", self.pv.potential_kw.shape[0]),
                           ("shiftable.window", self.shiftable.window.shape[0]),
                           ("interruptible.natural_load_kw", self.interruptible.natural_load_kw.shape[0])):
            if rows != T:
                raise ValueError(f"{name}: {rows} intervals, base_load_kw has {T}")
        if self.import_limit_kw < 0 or self.export_limit_kw < 0:
            raise ValueError("import_limit_kw and export_limit_kw must be >= 0")
        spread = self.signals.export_revenue() - self.signals.import_cost()
        _check("signals (export revenue - import cost)", spread > 1e-12, spread,
               "export revenue <= import cost (else importing to export earns money)")

    @property
    def intervals(self) -> int:
        return int(self.base_load_kw.size)


# ------------------------------------------------------------------ layout ----


@dataclass(frozen=True)
class Block:
    """A ``[rows, cols]`` block of consecutive indices starting at ``start``."""

    start: int
    shape: tuple[int, int]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def stop(self) -> int:
        return self.start + self.size

    def index(self) -> IntArray:
        """Global indices, shaped ``[rows, cols]``."""
        return np.arange(self.start, self.stop, dtype=np.int64).reshape(self.shape)


def _blocks(shapes: dict[str, tuple[int, int]]) -> tuple[dict[str, Block], int]:
    blocks, start = {}, 0
    for name, shape in shapes.items():
        blocks[name] = Block(start, shape)
        start += shape[0] * shape[1]
    return blocks, start


@dataclass(frozen=True, eq=False)
class Layout:
    """Which columns and rows exist, by block name."""

    intervals: int
    cols: dict[str, Block]
    rows: dict[str, Block]
    num_col: int
    num_row: int
    limited: IntArray
    """Interruptible devices (indices into the fleet) that have on/start indicators."""
    duration_limit: IntArray
    """Longest interruption per limited device [intervals]; -1 where none."""
    days: int


def layout(problem: ScheduleProblem) -> Layout:
    """Column and row blocks for ``problem``."""
    T = problem.intervals
    nb, npv, ns, nev = problem.batteries.size, problem.pv.size, problem.shiftable.size, problem.ev.size
    fleet = problem.interruptible
    duration = fleet.max_interruption_intervals
    has_duration = duration < T
    has_floor = fleet.min_curtail_kw > 0
    limited = np.flatnonzero(has_duration | np.isfinite(fleet.max_events_per_day) | has_floor)
    duration_limit = np.where(has_duration[limited], duration[limited], -1).astype(np.int64)
    days = -(-T // problem.intervals_per_day)
    nl = limited.size
    n_duration, n_floor = int((duration_limit >= 0).sum()), int(has_floor.sum())
    cols, num_col = _blocks({
        "charge": (T, nb), "discharge": (T, nb), "soc": (T, nb), "pv": (T, npv), "shift": (T, ns),
        "ev": (T, nev), "curtail": (T, fleet.size), "on": (T, nl), "start": (T, nl), "import": (T, 1), "export": (T, 1),
    })
    rows, num_row = _blocks({
        "balance": (T, 1), "soc": (T, nb), "shift_energy": (1, ns), "ev_energy": (1, nev),
        "curtail_link": (T, nl), "curtail_floor": (T, n_floor), "start_link": (T, nl), "start_on": (T, nl),
        "start_off": (T, nl), "recent_start": (T, n_duration), "events": (days, nl),
    })
    return Layout(T, cols, rows, num_col, num_row, limited, duration_limit, days)


# --------------------------------------------------------------- variables ----


def variables(problem: ScheduleProblem, lay: Layout) -> tuple[FloatArray, FloatArray]:
    """Column lower and upper bounds."""
    T, b = lay.intervals, problem.batteries
    fleet = problem.interruptible
    soc_low = np.broadcast_to(b.soc_min_kwh, (T, b.size)).copy()
    soc_low[-1:] = np.maximum(b.soc_min_kwh, b.soc_terminal_min_kwh)
    nl = lay.limited.size
    blocks = {
        "charge": (0.0, np.broadcast_to(b.p_charge_max_kw, (T, b.size))),
        "discharge": (0.0, np.broadcast_to(b.p_discharge_max_kw, (T, b.size))),
        "soc": (soc_low, np.broadcast_to(b.soc_max_kwh, (T, b.size))),
        "pv": (0.0, problem.pv.potential_kw),
        "shift": (0.0, problem.shiftable.rated_kw * problem.shiftable.window),
        "ev": (0.0, problem.ev.p_max_kw * problem.ev.window(T)),
        "curtail": (0.0, np.minimum(fleet.max_curtail_kw, fleet.natural_load_kw)),
        "on": (0.0, np.ones((T, nl))),
        "start": (0.0, np.ones((T, nl))),
        "import": (0.0, np.full((T, 1), problem.import_limit_kw)),
        "export": (0.0, np.full((T, 1), problem.export_limit_kw)),
    }
    lower, upper = np.empty(lay.num_col), np.empty(lay.num_col)
    for name, (low, high) in blocks.items():
        block = lay.cols[name]
        lower[block.start:block.stop] = np.broadcast_to(low, block.shape).ravel()
        upper[block.start:block.stop] = np.broadcast_to(high, block.shape).ravel()
    return lower, upper


# ------------------------------------------------------------- constraints ----

Triplets = tuple[IntArray, IntArray, FloatArray]


def rebound_weights(intervals: int, k: int) -> FloatArray:
    """``W[t, s]``: share of energy curtailed in ``s`` consumed again in ``t`` (columns sum to 1)."""
    s = np.arange(intervals)
    t = np.minimum(s[:, None] + np.arange(1, k + 1), intervals - 1)  # [s, lag]
    weights = np.zeros((intervals, intervals))
    np.add.at(weights, (t.ravel(), np.repeat(s, k)), 1.0 / k)
    return weights


def _entries(rows: ArrayLike, cols: ArrayLike, vals: ArrayLike) -> Triplets:
    rows, cols, vals = np.broadcast_arrays(np.asarray(rows), np.asarray(cols), np.asarray(vals, dtype=np.float64))
    return rows.ravel().astype(np.int64), cols.ravel().astype(np.int64), vals.ravel()


def _balance(problem: ScheduleProblem, lay: Layout) -> list[Triplets]:
    """imp - exp + sum of device power = base load + natural load of interruptibles."""
    c, r = lay.cols, lay.rows["balance"].start
    t = r + np.arange(lay.intervals)[:, None]
    parts = [
        _entries(t, c["import"].index(), 1.0), _entries(t, c["export"].index(), -1.0),
        _entries(t, c["discharge"].index(), 1.0), _entries(t, c["charge"].index(), -1.0),
        _entries(t, c["pv"].index(), 1.0), _entries(t, c["shift"].index(), -1.0), _entries(t, c["ev"].index(), -1.0),
    ]
    fleet = problem.interruptible
    if fleet.size:
        # Column (s, i) of the curtailment enters row t with delta(t, s) - rho_i * W[t, s].
        weights = rebound_weights(lay.intervals, fleet.rebound_intervals)
        row_t, col_s = np.nonzero(np.eye(lay.intervals) + weights)
        value = (row_t == col_s)[:, None] - fleet.rebound_fraction[None, :] * weights[row_t, col_s][:, None]
        parts.append(_entries((r + row_t)[:, None], c["curtail"].index()[col_s], value))
    return parts


def _battery(problem: ScheduleProblem, lay: Layout) -> list[Triplets]:
    """soc[t] - soc[t-1] - dt*eta_c*ch[t] + dt/eta_d*dis[t] = (soc0 at t = 0, else 0)."""
    b, c, dt = problem.batteries, lay.cols, problem.dt_h
    rows = lay.rows["soc"].index()
    soc = c["soc"].index()
    return [
        _entries(rows, soc, 1.0),
        _entries(rows[1:], soc[:-1], -1.0),
        _entries(rows, c["charge"].index(), -dt * b.eta_charge),
        _entries(rows, c["discharge"].index(), dt / b.eta_discharge),
    ]


def _energy(lay: Layout, col: str, row: str, dt: float) -> list[Triplets]:
    """sum_t dt * x[t, i] = energy_i."""
    return [_entries(lay.rows[row].index(), lay.cols[col].index(), dt)]


def _ragged_arange(lengths: IntArray) -> IntArray:
    """Concatenation of ``arange(n)`` for each ``n`` in ``lengths``."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if lengths.size else 0) - np.repeat(ends - lengths, lengths)


def _indicator_links(problem: ScheduleProblem, lay: Layout) -> list[Triplets]:
    """min_curtail*u <= c <= max_curtail*u;  s >= u[t] - u[t-1], s <= u[t], s + u[t-1] <= 1 (s is the start)."""
    c, r = lay.cols, lay.rows
    on, start = c["on"].index(), c["start"].index()
    curtail = c["curtail"].index()[:, lay.limited]
    max_curtail = problem.interruptible.max_curtail_kw[lay.limited]
    min_curtail = problem.interruptible.min_curtail_kw[lay.limited]
    floor = np.flatnonzero(min_curtail > 0)
    link, rise = r["curtail_link"].index(), r["start_link"].index()
    on_rows, off_rows = r["start_on"].index(), r["start_off"].index()
    floor_rows = r["curtail_floor"].index()
    return [
        _entries(link, curtail, 1.0), _entries(link, on, -max_curtail),
        _entries(floor_rows, curtail[:, floor], -1.0), _entries(floor_rows, on[:, floor], min_curtail[floor]),
        _entries(rise, on, 1.0), _entries(rise[1:], on[:-1], -1.0), _entries(rise, start, -1.0),
        _entries(on_rows, start, 1.0), _entries(on_rows, on, -1.0),
        _entries(off_rows, start, 1.0), _entries(off_rows[1:], on[:-1], 1.0),
    ]


def _duration(lay: Layout) -> list[Triplets]:
    """For devices with a longest interruption L: on only within L intervals of a start.

    ``u[t] - sum(s[t-L+1 .. t]) <= 0``: with ``s`` exactly the start indicator
    this is the limit itself, and it is tight in the relaxation (summed over
    the day it gives ``sum(u) <= L * sum(s) <= L * events``).
    """
    T = lay.intervals
    has = np.flatnonzero(lay.duration_limit >= 0)
    on, start = lay.cols["on"].index()[:, has], lay.cols["start"].index()[:, has]
    rows = lay.rows["recent_start"].index()  # [T, n_duration]
    count = np.minimum(lay.duration_limit[has][None, :], np.arange(T)[:, None] + 1).ravel()  # starts per row
    row_of = np.repeat(np.arange(count.size), count)  # flat index into the [T, n_duration] rows
    t_of = row_of // has.size - _ragged_arange(count)
    return [_entries(rows, on, 1.0), _entries(rows.ravel()[row_of], start[t_of, row_of % has.size], -1.0)]


def _events(problem: ScheduleProblem, lay: Layout) -> list[Triplets]:
    """Starts summed per day (days are consecutive chunks of ``intervals_per_day`` from the horizon start)."""
    day = np.arange(lay.intervals) // problem.intervals_per_day
    return [_entries(lay.rows["events"].index()[day], lay.cols["start"].index(), 1.0)]


def _interruptions(problem: ScheduleProblem, lay: Layout) -> list[Triplets]:
    """Indicator rows of the limited interruptible devices."""
    if lay.limited.size == 0:
        return []
    return [*_indicator_links(problem, lay), *_duration(lay), *_events(problem, lay)]


def constraints(problem: ScheduleProblem, lay: Layout) -> sparse.csc_array:
    """The constraint matrix, ``[num_row, num_col]``, column-wise."""
    parts = [
        *_balance(problem, lay), *_battery(problem, lay),
        *_energy(lay, "shift", "shift_energy", problem.dt_h), *_energy(lay, "ev", "ev_energy", problem.dt_h),
        *_interruptions(problem, lay),
    ]
    rows, cols, vals = (np.concatenate(x) for x in zip(*parts))
    keep = vals != 0.0
    matrix = sparse.coo_array((vals[keep], (rows[keep], cols[keep])), shape=(lay.num_row, lay.num_col)).tocsc()
    matrix.sum_duplicates()
    return matrix


def row_bounds(problem: ScheduleProblem, lay: Layout) -> tuple[FloatArray, FloatArray]:
    """Row lower and upper bounds."""
    T, nl = lay.intervals, lay.limited.size
    fleet = problem.interruptible
    balance = problem.base_load_kw + fleet.natural_load_kw.sum(axis=1)
    soc_rhs = np.zeros((T, problem.batteries.size))
    soc_rhs[0] = problem.batteries.soc0_kwh
    events = np.broadcast_to(fleet.max_events_per_day[lay.limited], (lay.days, nl)).copy()
    if lay.days:
        events[0] = np.maximum(events[0] - fleet.events_used[lay.limited], 0.0)
    blocks = {
        "balance": (balance[:, None], balance[:, None]), "soc": (soc_rhs, soc_rhs),
        "shift_energy": (problem.shiftable.energy_kwh, problem.shiftable.energy_kwh),
        "ev_energy": (problem.ev.energy_kwh, problem.ev.energy_kwh),
        "curtail_link": (-INF, 0.0), "curtail_floor": (-INF, 0.0),
        "start_link": (-INF, 0.0), "start_on": (-INF, 0.0), "start_off": (-INF, 1.0),
        "recent_start": (-INF, 0.0), "events": (-INF, events),
    }
    lower, upper = np.empty(lay.num_row), np.empty(lay.num_row)
    for name, (low, high) in blocks.items():
        block = lay.rows[name]
        lower[block.start:block.stop] = np.broadcast_to(low, block.shape).ravel()
        upper[block.start:block.stop] = np.broadcast_to(high, block.shape).ravel()
    return lower, upper


# --------------------------------------------------------------- objective ----


def objective(problem: ScheduleProblem, lay: Layout) -> tuple[FloatArray, float]:
    """Column costs [CNY per kW held for one interval] and the constant offset [CNY]."""
    dt, b, pv = problem.dt_h, problem.batteries, problem.pv
    costs = {
        "charge": dt * b.cost_cny_per_kwh, "discharge": dt * b.cost_cny_per_kwh,
        "pv": -dt * pv.curtail_cost_cny_per_kwh,
        "curtail": dt * problem.interruptible.comfort_cost_cny_per_kwh,
        "import": (dt * problem.signals.import_cost())[:, None],
        "export": (-dt * problem.signals.export_revenue())[:, None],
    }
    cost = np.zeros(lay.num_col)
    for name, value in costs.items():
        block = lay.cols[name]
        cost[block.start:block.stop] = np.broadcast_to(value, block.shape).ravel()
    offset = float(dt * (pv.potential_kw * pv.curtail_cost_cny_per_kwh).sum())
    return cost, offset


# ------------------------------------------------------------------- build ----


@dataclass(frozen=True, eq=False)
class ModelData:
    """The parts of the model that change between receding-horizon solves."""

    col_cost: FloatArray
    col_lower: FloatArray
    col_upper: FloatArray
    row_lower: FloatArray
    row_upper: FloatArray
    offset: float


@dataclass(frozen=True, eq=False)
class ScheduleModel:
    """A built model: layout, matrix and data, plus the fingerprint of what shaped the matrix."""

    layout: Layout
    matrix: sparse.csc_array
    data: ModelData
    fingerprint: str = field(repr=False)


def model_data(problem: ScheduleProblem, lay: Layout) -> ModelData:
    """Costs and bounds of ``problem`` on the given layout."""
    cost, offset = objective(problem, lay)
    col_lower, col_upper = variables(problem, lay)
    row_lower, row_upper = row_bounds(problem, lay)
    return ModelData(cost, col_lower, col_upper, row_lower, row_upper, offset)


def fingerprint(problem: ScheduleProblem) -> str:
    """Digest of everything that shapes the matrix (sizes, coefficients, limits)."""
    b, f = problem.batteries, problem.interruptible
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((problem.intervals, problem.dt_h, problem.intervals_per_day, b.size, problem.pv.size,
                        problem.shiftable.size, problem.ev.size, f.size, f.rebound_intervals)).encode())
    for arr in (b.eta_charge, b.eta_discharge, f.rebound_fraction, f.max_curtail_kw, f.min_curtail_kw,
                np.minimum(f.max_interruption_intervals, problem.intervals), np.isfinite(f.max_events_per_day)):
        digest.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    return digest.hexdigest()


def build(problem: ScheduleProblem) -> ScheduleModel:
    """Layout, matrix and data of ``problem``."""
    lay = layout(problem)
    return ScheduleModel(lay, constraints(problem, lay), model_data(problem, lay), fingerprint(problem))
