"""Attribute every enterprise's consumption to its sources, per 15-minute interval.

Pure numpy: E enterprises x T intervals in, arrays of the same shape out.
All energies are kWh per interval and non-negative.

Quantities
----------
* ``consumption_kwh[E, T]``: each enterprise's gross load, *excluding* the
  charging of its batteries (battery flows are given separately).
* ``own_pv_kwh[E, T]``: generation of the enterprise's own on-site PV.
* ``shared_green_kwh[S, T]``: shared green supplies (park-shared PV, green
  direct-supply lines), assumed not to pass through the public grid.
* :class:`BatteryFlows`: per battery ``charge_kwh[B, T]`` drawn from the
  owner's side, ``discharge_kwh[B, T]`` delivered to it, its owner, its
  efficiencies and its initial stored (cell-side) energy split by origin.
* ``contract_kwh[E, T]``: green power bought under contract with its
  certificates, offered for matching in that interval.

Order of precedence (each step serves only what the previous ones left)
----------------------------------------------------------------------
1. **Own PV** serves its owner's consumption: ``min(own_pv, consumption)``.
2. **Battery charging** takes the owner's PV surplus first, then the grid.
   An owner with several batteries shares its surplus among them pro rata
   to their charge. Shared supplies never charge batteries.
3. **Storage discharge** serves the owner's remaining consumption (the
   battery is behind the owner's meter). Each battery keeps two stocks,
   green and grid origin, measured on the cell side:
   charging adds ``charge_efficiency * charge`` to them (by origin);
   within an interval charging happens before discharging; discharging
   ``d`` draws ``d / discharge_efficiency`` from the cell, taken from the
   two stocks in proportion to their sizes (pooled, average-mix accounting:
   every kWh in a battery carries the battery's current green fraction).
   A discharge beyond the tracked stock (metering error, self-charging not
   recorded) is *untracked* and counted as grid origin, so storage never
   releases more green than it took in minus losses. An owner's batteries
   pool their output; the part its consumption cannot absorb is exported.
   Grid-origin storage energy it consumes is reported as ``storage_grid``
   inside ``grid``. Self-discharge is not modelled (it shows up as
   untracked discharge or as stock left over). The stocks at the end
   (``final_green_kwh``, ``final_grid_kwh``) are the next period's initial
   stocks.
4. **Shared green** (the S supplies plus, with ``pool_surplus``, the pool of
   every enterprise's PV surplus left after its own batteries) serves the
   remaining consumption by the :class:`SharedSplit` rule:

   * ``"pro_rata"`` (default): all supplies together, each enterprise
     receiving ``remaining_e * min(1, supply / sum(remaining))``; each
     supply (and each pool contributor) is used in proportion to what it
     offered.
   * ``"priority"``: supplies in row order; for each, the enterprises in
     its priority order (lowest rank first, ties by enterprise index) take
     ``min(remaining, contract quantity)`` while the supply lasts. What no
     contract took (and the whole pool) is then split pro rata as above.

   What is left of every supply is exported; an enterprise's own surplus
   never comes back to itself.
5. **Contract green** (``contract_kwh``) is matched to what is still
   unserved in the same interval; the excess is returned as unmatched
   (certificates not used in that interval).
6. **Grid**: the rest, plus grid-origin and untracked storage energy.

Exports are green only once: an exported kWh is reported as exported
(``own_pv_exported``, ``storage_exported_green``, ``shared_exported``) and
never also as consumed.

Identities the result satisfies (to rounding): per enterprise and interval
``own_pv + shared_green + storage_green + contract + grid == consumption``
and ``grid == grid_direct + grid-origin and untracked storage energy used``;
``own_pv_generated == own_pv + battery_green_charge + own_pv_pooled +
own_pv_exported``; per supply ``shared_used + shared_exported == supply``;
per battery, green delivered <= discharge_efficiency * (initial green +
charge_efficiency * green charged).

Emissions (only when factors are given) per enterprise and interval:

* location-based ``= grid_draw_kwh * grid_factor``, where the grid draw is
  the energy taken from the public grid network for consumption *and*
  battery charging: ``contract + (grid - storage_grid) +
  battery_grid_charge``. Grid-origin storage energy is counted when it is
  drawn (at that interval's factor), not when it is released; a battery's
  initial grid stock was counted in the period that drew it. Own PV,
  storage green and shared supplies are not grid draw.
* market-based ``= residual_grid_kwh * residual_factor`` with
  ``residual_grid_kwh = grid_draw_kwh - contract``: contracts with
  certificates are zero-emission, the rest takes the residual factor.

The only sequential part is the battery stock recursion: a loop over T
with O(B) numpy work per step. Everything else is vectorised over E x T.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

SplitRule = Literal["pro_rata", "priority"]


# ------------------------------------------------------------------ inputs ----


@dataclass(frozen=True, eq=False)
class BatteryFlows:
    """Metered flows of the park's batteries, one row per battery."""

    charge_kwh: ArrayLike
    """Energy drawn into each battery per interval, shape (B, T) [kWh]."""
    discharge_kwh: ArrayLike
    """Energy delivered by each battery per interval, shape (B, T) [kWh]."""
    owner: ArrayLike
    """Index of the owning enterprise (row of ``consumption_kwh``), shape (B,) [unitless]."""
    charge_efficiency: ArrayLike = 0.95
    """Stored (cell-side) energy per kWh drawn, scalar or (B,), in (0, 1] [unitless]."""
    discharge_efficiency: ArrayLike = 0.95
    """Delivered energy per kWh taken from the cell, scalar or (B,), in (0, 1] [unitless]."""
    initial_green_kwh: ArrayLike = 0.0
    """Green-origin stored energy at the start, cell side, scalar or (B,) [kWh]."""
    initial_grid_kwh: ArrayLike = 0.0
    """Grid-origin stored energy at the start, cell side, scalar or (B,) [kWh]."""


@dataclass(frozen=True, eq=False)
class SharedSplit:
    """How shared green supplies are split among enterprises."""

    rule: SplitRule = "pro_rata"
    """``"pro_rata"`` to remaining consumption, or contract ``"priority"`` [unitless]."""
    priority: ArrayLike | None = None
    """Rank of each enterprise for each supply, shape (S, E), lowest first; default enterprise order [unitless]."""
    contract_kwh: ArrayLike | None = None
    """Contracted quantity per enterprise per supply per interval, shape (S, E) or (S, E, T);
    0 = no contract; default unlimited [kWh]."""


@dataclass(frozen=True, eq=False)
class Attribution:
    """Where every enterprise's consumption came from, per interval.

    Arrays of shape (E, T) unless stated; all read-only.
    """

    consumption_kwh: FloatArray
    """Consumption attributed (the input) [kWh]."""
    own_pv_kwh: FloatArray
    """Served by the enterprise's own PV [kWh]."""
    shared_green_kwh: FloatArray
    """Served by shared supplies and other enterprises' pooled PV surplus [kWh]."""
    storage_green_kwh: FloatArray
    """Served by green-origin energy of the enterprise's batteries [kWh]."""
    contract_kwh: FloatArray
    """Served by contract green power with certificates [kWh]."""
    grid_kwh: FloatArray
    """Served by the grid, including grid-origin and untracked storage energy [kWh]."""
    storage_grid_kwh: FloatArray
    """Tracked grid-origin storage energy consumed; part of ``grid_kwh`` [kWh]."""
    grid_direct_kwh: FloatArray
    """Served straight from the public grid, not through storage; part of ``grid_kwh`` [kWh]."""
    battery_green_charge_kwh: FloatArray
    """Own PV surplus drawn into the enterprise's batteries [kWh]."""
    battery_grid_charge_kwh: FloatArray
    """Grid energy drawn into the enterprise's batteries [kWh]."""
    own_pv_pooled_kwh: FloatArray
    """Own PV surplus consumed by other enterprises through the pool [kWh]."""
    own_pv_exported_kwh: FloatArray
    """Own PV surplus exported [kWh]."""
    storage_exported_green_kwh: FloatArray
    """Green-origin storage energy exported [kWh]."""
    storage_exported_grid_kwh: FloatArray
    """Grid-origin and untracked storage energy exported [kWh]."""
    unmatched_contract_kwh: FloatArray
    """Contract energy (certificates) not matched in its interval [kWh]."""
    shared_used_kwh: FloatArray
    """Per shared supply, shape (S, T): energy consumed in the park [kWh]."""
    shared_exported_kwh: FloatArray
    """Per shared supply, shape (S, T): energy exported [kWh]."""
    battery_green_in_kwh: FloatArray
    """Per battery, shape (B, T): green energy drawn in (before losses) [kWh]."""
    battery_green_out_kwh: FloatArray
    """Per battery, shape (B, T): green-origin energy delivered [kWh]."""
    battery_grid_out_kwh: FloatArray
    """Per battery, shape (B, T): tracked grid-origin energy delivered [kWh]."""
    battery_untracked_kwh: FloatArray
    """Per battery, shape (B, T): discharge beyond the tracked stock, counted as grid origin [kWh]."""
    final_green_kwh: FloatArray
    """Per battery, shape (B,): green-origin stored energy at the end, cell side [kWh]."""
    final_grid_kwh: FloatArray
    """Per battery, shape (B,): grid-origin stored energy at the end, cell side [kWh]."""
    location_based_kg: FloatArray | None = None
    """Location-based Scope 2 emissions, when a grid factor was given [kgCO2]."""
    market_based_kg: FloatArray | None = None
    """Market-based Scope 2 emissions, when a residual factor was given [kgCO2]."""
    split_rule: SplitRule = field(default="pro_rata")
    """Rule used for the shared supplies [unitless]."""

    @property
    def green_kwh(self) -> FloatArray:
        """All green sources together, shape (E, T) [kWh]."""
        return self.own_pv_kwh + self.shared_green_kwh + self.storage_green_kwh + self.contract_kwh

    @property
    def grid_draw_kwh(self) -> FloatArray:
        """Energy drawn from the public grid network (location-based basis), shape (E, T) [kWh]."""
        return self.contract_kwh + self.residual_grid_kwh

    @property
    def residual_grid_kwh(self) -> FloatArray:
        """Grid draw not covered by contracts (market-based basis), shape (E, T) [kWh]."""
        return np.maximum(self.grid_kwh - self.storage_grid_kwh, 0.0) + self.battery_grid_charge_kwh

    @property
    def grid_import_kwh(self) -> FloatArray:
        """Energy metered in from the public grid: contracts, direct grid and battery grid charge, (E, T) [kWh].

        Differs from :attr:`grid_draw_kwh` by the untracked storage energy
        consumed, which the latter counts as grid origin when released.
        """
        return self.contract_kwh + self.grid_direct_kwh + self.battery_grid_charge_kwh

    @property
    def exported_kwh(self) -> FloatArray:
        """Energy each enterprise sent out of the park from its own PV and storage, (E, T) [kWh].

        Shared supplies' exports are per supply (:attr:`shared_exported_kwh`).
        """
        return self.own_pv_exported_kwh + self.storage_exported_green_kwh + self.storage_exported_grid_kwh

    @property
    def exported_green_kwh(self) -> FloatArray:
        """Green energy exported from the park, shape (T,) [kWh]."""
        return (
            self.own_pv_exported_kwh.sum(axis=0)
            + self.storage_exported_green_kwh.sum(axis=0)
            + self.shared_exported_kwh.sum(axis=0)
        )


# -------------------------------------------------------------- validation ----


def _energy(name: str, values: ArrayLike, shape: tuple[int, ...] | None = None, ndim: int = 2) -> FloatArray:
    """``values`` as a finite, non-negative float64 array, or ValueError naming ``name`` [kWh]."""
    array = np.asarray(values, dtype=np.float64)
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    bad = ~np.isfinite(array) | (array < 0.0)
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), array.shape)
        raise ValueError(
            f"{name}{list(map(int, index))} = {float(array[index])!r}; energies must be finite and >= 0 [kWh]"
        )
    return array


def _per_battery(name: str, values: ArrayLike, count: int, low: float, high: float) -> FloatArray:
    """Scalar or (B,) parameter broadcast to (B,) and checked to lie in [low, high]."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != count):
        raise ValueError(f"{name} has shape {array.shape}, expected a scalar or ({count},)")
    array = np.broadcast_to(array, (count,)).astype(np.float64)
    bad = ~np.isfinite(array) | (array < low) | (array > high)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{name}[{index}] = {float(array[index])!r} must lie in [{low}, {high}]")
    return array


def _factor(name: str, values: ArrayLike, count: int) -> FloatArray:
    """Scalar or (T,) emission factor broadcast to (T,) [kgCO2/kWh]."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != count):
        raise ValueError(f"{name} has shape {array.shape}, expected a scalar or ({count},)")
    array = np.broadcast_to(array, (count,))
    bad = ~np.isfinite(array) | (array < 0.0)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{name}[{index}] = {float(array[index])!r}; factors must be finite and >= 0 [kgCO2/kWh]")
    return array


def _owner(values: ArrayLike, count: int, enterprises: int) -> IntArray:
    owner = np.asarray(values)
    if owner.shape != (count,) or not np.issubdtype(owner.dtype, np.integer):
        raise ValueError(f"batteries.owner must be {count} integer enterprise indexes, got {owner.dtype} {owner.shape}")
    bad = (owner < 0) | (owner >= enterprises)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(
            f"batteries.owner[{index}] = {int(owner[index])} is not an enterprise index in [0, {enterprises})"
        )
    return owner.astype(np.intp)


# ----------------------------------------------------------------- helpers ----


def _capped_ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """``min(numerator / denominator, 1)``, 0 where the denominator is 0; never overflows [unitless]."""
    out = np.where(numerator >= denominator, 1.0, 0.0) * (denominator > 0.0)
    np.divide(numerator, denominator, out=out, where=(denominator > 0.0) & (numerator < denominator))
    return out


def _sum_by_owner(values: FloatArray, owner: IntArray, enterprises: int) -> FloatArray:
    """Rows of ``values`` (B, T) summed per owner into (E, T) [same unit as values]."""
    out = np.zeros((enterprises, values.shape[1]))
    if owner.size == 0:
        return out
    order = np.argsort(owner, kind="stable")
    owners, starts = np.unique(owner[order], return_index=True)
    out[owners] = np.add.reduceat(values[order], starts, axis=0)
    return out


def _pro_rata(rows: FloatArray, need: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Split the sum of supply ``rows`` (R, T) pro rata to ``need`` (E, T) [kWh].

    Returns ``(allocated (E, T), used per row (R, T))``; allocated <= need.
    """
    available = rows.sum(axis=0)
    total_need = need.sum(axis=0)
    allocated = need * _capped_ratio(available, total_need)
    used_fraction = _capped_ratio(total_need, available)
    return allocated, rows * used_fraction


def _by_priority(supply: FloatArray, request: FloatArray, order: IntArray) -> FloatArray:
    """One supply (T,) to ``request`` (E, T) in ``order``, first come first served [kWh]."""
    ordered = request[order]
    before = np.cumsum(ordered, axis=0) - ordered
    taken = np.minimum(ordered, np.maximum(supply - before, 0.0))
    out = np.empty_like(taken)
    out[order] = taken
    return out


def _split_shared(
    supplies: FloatArray, pool: FloatArray, need: FloatArray, split: SharedSplit
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Apply the split rule; returns ``(allocated (E, T), used per supply (S, T), used of pool (T,))`` [kWh]."""
    count, enterprises = supplies.shape[0], need.shape[0]
    if split.rule == "pro_rata":
        allocated, used = _pro_rata(np.vstack([supplies, pool[None, :]]), need)
        return allocated, used[:count], used[count]
    if split.rule != "priority":
        raise ValueError(f"split.rule {split.rule!r} is not 'pro_rata' or 'priority'")
    ranks = _priority_ranks(split.priority, count, enterprises)
    caps = _contract_caps(split.contract_kwh, count, enterprises, need.shape[1])
    allocated = np.zeros_like(need)
    first_used = np.zeros_like(supplies)
    for s in range(count):
        request = need - allocated if caps is None else np.minimum(need - allocated, caps[s])
        taken = _by_priority(supplies[s], request, np.argsort(ranks[s], kind="stable"))
        allocated += taken
        first_used[s] = taken.sum(axis=0)
    leftover = np.maximum(supplies - first_used, 0.0)
    rest, used = _pro_rata(np.vstack([leftover, pool[None, :]]), np.maximum(need - allocated, 0.0))
    return allocated + rest, first_used + used[:count], used[count]


def _priority_ranks(priority: ArrayLike | None, count: int, enterprises: int) -> FloatArray:
    if priority is None:
        return np.broadcast_to(np.arange(enterprises, dtype=np.float64), (count, enterprises))
    ranks = np.asarray(priority, dtype=np.float64)
    if ranks.shape != (count, enterprises) or not np.isfinite(ranks).all():
        raise ValueError(f"split.priority must be finite ranks of shape ({count}, {enterprises}), got {ranks.shape}")
    return ranks


def _contract_caps(contract: ArrayLike | None, count: int, enterprises: int, intervals: int) -> FloatArray | None:
    """Contract quantities as (S, E, 1) or (S, E, T), or None for unlimited [kWh]."""
    if contract is None:
        return None
    caps = np.asarray(contract, dtype=np.float64)
    if caps.shape == (count, enterprises):
        caps = caps[:, :, None]
    if caps.shape not in ((count, enterprises, 1), (count, enterprises, intervals)):
        raise ValueError(
            f"split.contract_kwh has shape {caps.shape}, expected ({count}, {enterprises}) or ({count}, {enterprises}, {intervals})"
        )
    return _energy("split.contract_kwh", caps, ndim=3)


# ----------------------------------------------------------------- storage ----


@dataclass(frozen=True, eq=False)
class _Storage:
    """Battery results, per battery (B, ...) and per owner (E, T) [kWh]."""

    green_in: FloatArray
    green_out: FloatArray
    grid_out: FloatArray
    untracked: FloatArray
    final_green: FloatArray
    final_grid: FloatArray
    green_charge_e: FloatArray
    grid_charge_e: FloatArray
    green_out_e: FloatArray
    other_out_e: FloatArray
    grid_out_e: FloatArray


def _run_stocks(
    green_in: FloatArray, charge: FloatArray, discharge: FloatArray, batteries: dict[str, FloatArray]
) -> tuple[FloatArray, ...]:
    """Cell-side green/grid stocks through time; returns per-battery (B, T) delivered flows and final stocks [kWh].

    Charging before discharging within an interval; the cell draw
    ``discharge / discharge_efficiency`` is taken from both stocks in
    proportion (pooled mix) and capped at the stock.
    """
    eta_in, eta_out = batteries["charge_efficiency"], batteries["discharge_efficiency"]
    add_green = np.ascontiguousarray((green_in * eta_in[:, None]).T)
    add_grid = np.ascontiguousarray(((charge - green_in) * eta_in[:, None]).T)
    want = np.ascontiguousarray((discharge / eta_out[:, None]).T)
    out_green = np.empty_like(want)
    out_grid = np.empty_like(want)
    drawn = np.empty_like(want)
    green, grid = batteries["initial_green_kwh"].copy(), batteries["initial_grid_kwh"].copy()
    fraction = np.empty_like(green)
    for t in range(want.shape[0]):
        green += add_green[t]
        grid += add_grid[t]
        stock = green + grid
        np.minimum(want[t], stock, out=drawn[t])
        fraction.fill(0.0)
        np.divide(drawn[t], stock, out=fraction, where=stock > 0.0)
        np.multiply(green, fraction, out=out_green[t])
        np.multiply(grid, fraction, out=out_grid[t])
        green -= out_green[t]
        grid -= out_grid[t]
    green_out = out_green.T * eta_out[:, None]
    grid_out = out_grid.T * eta_out[:, None]
    untracked = (want.T - drawn.T) * eta_out[:, None]
    return green_out, grid_out, untracked, np.maximum(green, 0.0), np.maximum(grid, 0.0)


def _storage(batteries: BatteryFlows | None, surplus: FloatArray) -> _Storage:
    """Charge from own PV surplus then grid, run the stocks, and sum per owner [kWh]."""
    enterprises, intervals = surplus.shape
    if batteries is None:
        empty, zeros = np.zeros((0, intervals)), np.zeros((enterprises, intervals))
        return _Storage(empty, empty, empty, empty, np.zeros(0), np.zeros(0), zeros, zeros, zeros, zeros, zeros)
    charge = _energy("batteries.charge_kwh", batteries.charge_kwh)
    count = charge.shape[0]
    if charge.shape[1] != intervals:
        raise ValueError(f"batteries.charge_kwh has shape {charge.shape}, expected ({count}, {intervals})")
    discharge = _energy("batteries.discharge_kwh", batteries.discharge_kwh, charge.shape)
    owner = _owner(batteries.owner, count, enterprises)
    params = {
        "charge_efficiency": _per_battery("batteries.charge_efficiency", batteries.charge_efficiency, count, 1e-9, 1.0),
        "discharge_efficiency": _per_battery(
            "batteries.discharge_efficiency", batteries.discharge_efficiency, count, 1e-9, 1.0
        ),
        "initial_green_kwh": _per_battery(
            "batteries.initial_green_kwh", batteries.initial_green_kwh, count, 0.0, np.inf
        ),
        "initial_grid_kwh": _per_battery("batteries.initial_grid_kwh", batteries.initial_grid_kwh, count, 0.0, np.inf),
    }
    charge_e = _sum_by_owner(charge, owner, enterprises)
    green_charge_e = np.minimum(surplus, charge_e)
    green_in = np.minimum(charge * _capped_ratio(green_charge_e, charge_e)[owner], charge)
    green_out, grid_out, untracked, final_green, final_grid = _run_stocks(green_in, charge, discharge, params)
    return _Storage(
        green_in=green_in,
        green_out=green_out,
        grid_out=grid_out,
        untracked=untracked,
        final_green=final_green,
        final_grid=final_grid,
        green_charge_e=green_charge_e,
        grid_charge_e=np.maximum(charge_e - green_charge_e, 0.0),
        green_out_e=_sum_by_owner(green_out, owner, enterprises),
        other_out_e=_sum_by_owner(grid_out + untracked, owner, enterprises),
        grid_out_e=_sum_by_owner(grid_out, owner, enterprises),
    )


# -------------------------------------------------------------- attribution ----


def _read_only(*arrays: FloatArray | None) -> None:
    for array in arrays:
        if array is not None:
            array.flags.writeable = False


def attribute(
    consumption_kwh: ArrayLike,
    own_pv_kwh: ArrayLike | None = None,
    shared_green_kwh: ArrayLike | None = None,
    *,
    split: SharedSplit | None = None,
    batteries: BatteryFlows | None = None,
    contract_kwh: ArrayLike | None = None,
    pool_surplus: bool = True,
    grid_factor_kg_per_kwh: ArrayLike | None = None,
    residual_factor_kg_per_kwh: ArrayLike | None = None,
) -> Attribution:
    """Attribute each enterprise's consumption in each interval to its sources.

    The rules and their order are in the module docstring.

    Parameters
    ----------
    consumption_kwh : array_like of shape (E, T)
        Gross load of each enterprise per interval, excluding its battery charging [kWh].
    own_pv_kwh : array_like of shape (E, T), optional
        Own on-site PV generation per interval; default none [kWh].
    shared_green_kwh : array_like of shape (S, T), optional
        Shared green supplies per interval; default none [kWh].
    split : SharedSplit, optional
        Split rule of the shared supplies; default pro rata [unitless].
    batteries : BatteryFlows, optional
        Battery flows, owners, efficiencies and initial stocks [kWh].
    contract_kwh : array_like of shape (E, T), optional
        Contract green energy with certificates offered per interval [kWh].
    pool_surplus : bool
        Offer PV surplus (after own batteries) to the other enterprises
        before exporting it [unitless].
    grid_factor_kg_per_kwh : float or array_like of shape (T,), optional
        Grid average emission factor; when given, ``location_based_kg`` is
        computed [kgCO2/kWh].
    residual_factor_kg_per_kwh : float or array_like of shape (T,), optional
        Residual emission factor; when given, ``market_based_kg`` is
        computed [kgCO2/kWh].

    Returns
    -------
    Attribution
        kWh by source per enterprise and interval, exports, unmatched
        contracts, battery flows by origin and, when factors were given,
        Scope 2 emissions [kWh], [kgCO2].
    """
    split = SharedSplit() if split is None else split
    # A copy: the result is made read-only and the caller's array must stay writable.
    consumption = _energy("consumption_kwh", consumption_kwh).copy()
    intervals = consumption.shape[1]
    pv = np.zeros_like(consumption) if own_pv_kwh is None else _energy("own_pv_kwh", own_pv_kwh, consumption.shape)
    supplies = np.zeros((0, intervals)) if shared_green_kwh is None else _energy("shared_green_kwh", shared_green_kwh)
    if supplies.shape[1] != intervals:
        raise ValueError(f"shared_green_kwh has shape {supplies.shape}, expected (S, {intervals})")
    offered = (
        np.zeros_like(consumption) if contract_kwh is None else _energy("contract_kwh", contract_kwh, consumption.shape)
    )

    own = np.minimum(pv, consumption)
    need = consumption - own
    storage = _storage(batteries, pv - own)
    surplus = np.maximum(pv - own - storage.green_charge_e, 0.0)

    released = storage.green_out_e + storage.other_out_e
    stored_used = np.minimum(released, need)
    storage_green = np.minimum(storage.green_out_e * _capped_ratio(stored_used, released), stored_used)
    storage_grid = np.minimum(storage.grid_out_e * _capped_ratio(stored_used, released), stored_used - storage_green)
    need = need - stored_used

    pool = surplus.sum(axis=0) if pool_surplus else np.zeros(intervals)
    shared, shared_used, pool_used = _split_shared(supplies, pool, need, split)
    shared = np.minimum(shared, need)
    need = need - shared
    pooled = surplus * _capped_ratio(pool_used, pool)

    contract = np.minimum(offered, need)
    need = need - contract
    grid = need + (stored_used - storage_green)

    result = Attribution(
        consumption_kwh=consumption,
        own_pv_kwh=own,
        shared_green_kwh=shared,
        storage_green_kwh=storage_green,
        contract_kwh=contract,
        grid_kwh=grid,
        storage_grid_kwh=storage_grid,
        grid_direct_kwh=need,
        battery_green_charge_kwh=storage.green_charge_e,
        battery_grid_charge_kwh=storage.grid_charge_e,
        own_pv_pooled_kwh=pooled,
        own_pv_exported_kwh=surplus - pooled,
        storage_exported_green_kwh=storage.green_out_e - storage_green,
        storage_exported_grid_kwh=np.maximum(storage.other_out_e - (stored_used - storage_green), 0.0),
        unmatched_contract_kwh=offered - contract,
        shared_used_kwh=shared_used,
        shared_exported_kwh=np.maximum(supplies - shared_used, 0.0),
        battery_green_in_kwh=storage.green_in,
        battery_green_out_kwh=storage.green_out,
        battery_grid_out_kwh=storage.grid_out,
        battery_untracked_kwh=storage.untracked,
        final_green_kwh=storage.final_green,
        final_grid_kwh=storage.final_grid,
        split_rule=split.rule,
    )
    return _with_emissions(result, grid_factor_kg_per_kwh, residual_factor_kg_per_kwh)


def _with_emissions(
    result: Attribution, grid_factor: ArrayLike | None, residual_factor: ArrayLike | None
) -> Attribution:
    """``result`` with Scope 2 emissions for the factors given, all arrays read-only [kgCO2]."""
    intervals = result.consumption_kwh.shape[1]
    location = market = None
    if grid_factor is not None:
        location = result.grid_draw_kwh * _factor("grid_factor_kg_per_kwh", grid_factor, intervals)
    if residual_factor is not None:
        market = result.residual_grid_kwh * _factor("residual_factor_kg_per_kwh", residual_factor, intervals)
    arrays = {name: getattr(result, name) for name in result.__dataclass_fields__}
    arrays.update(location_based_kg=location, market_based_kg=market)
    _read_only(*(value for value in arrays.values() if isinstance(value, np.ndarray)))
    return Attribution(**arrays)
