"""Monthly carbon indicators per enterprise and for the park, from an :class:`~vpp.carbon.Attribution`.

Definitions
-----------
Sums run over the intervals of a month (enterprises) or of the attribution
(park: pass one month). ``green`` = own PV + shared green + storage green +
contract, all matched in their 15-minute interval.

* **Renewable share** = (green + unbundled certificates applied) /
  consumption. Unbundled certificates (green electricity certificates
  retired for the month, see :func:`vpp.carbon.certificates.retired_gec_kwh`)
  are volume-matched over the month, capped at the consumption the grid
  served. NaN when there is no consumption.
* **15-minute matching score** = sum over intervals of
  ``min(consumption, green)`` / consumption: only energy matched within its
  interval counts, so certificates for the month do not raise it.
* **Scope 2, location-based** (GHG Protocol Scope 2 Guidance, 2015: grid
  average emission factor for the grid where consumption occurs, whatever
  the contracts): ``sum_t grid_draw_kwh[t] * grid_factor[t]``, where the
  grid draw is all energy taken from the public grid network for the
  enterprise's consumption and its batteries' charging, *including* energy
  bought under green contracts (it is delivered through the grid) and *not*
  reduced by certificates. Own PV, storage of own PV and the park's shared
  supplies are taken not to pass through the public grid (on-site
  generation and direct lines) and are not grid draw. (Our reading of the
  guidance; its text on direct lines was not re-checked for this module.
  A shared supply that is in fact wheeled over the public grid should be
  passed to the attribution as contract energy instead.)
* **Scope 2, market-based** (same guidance: contractual instruments first,
  then the residual mix): contracts with certificates are zero-emission;
  certificates for the month cover the residual draw next; what remains
  takes the residual factor, interval by interval. When monthly
  certificates cover a fraction ``c`` of the residual draw, the month's
  residual emissions are scaled by ``1 - c`` (the certificates carry no
  time stamp to pick intervals with).
* **Intensity** = Scope 2 emissions / production units, where the
  enterprise reports production (NaN otherwise).

* **Exports and meters**: ``exported_green_kwh`` is the green energy whose
  attribute left the park from the enterprise's PV, storage and the shared
  supplies it owns (``shared_owner``), less exported energy whose
  certificates were retired inside the park (``reclaimed_export_kwh``: that
  attribute came back as contract energy, so it is counted there and not
  as exported: green only once). ``net_import_kwh`` is the import minus
  export the enterprise's grid meter must show by the attribution: public
  grid energy (:attr:`~vpp.carbon.Attribution.grid_import_kwh`) plus
  shared green and pool energy received, minus its PV surplus pooled to
  others, its shared supplies' output and its exports.

Emission factors may be a scalar, one per interval (T,) or one per
enterprise and interval (E, T) (e.g. each enterprise's regional factor,
or the grid's per-interval series); the park's figures are always the
sums of the enterprises', with the same factors.

Park
----
* Every park total is the sum of the enterprises' (consumption, green by
  source, grid draw, grid import, exports, Scope 2).
* Renewable share of consumption against a configurable target (default
  0.8, a zero-carbon park).
* **Net imported fossil power** = residual grid draw of the park (grid
  draw not covered by contracts) - grid-origin energy its batteries sent
  back - monthly certificates applied, floored at 0. Green exports do not
  reduce it: the green attribute of an exported kWh goes with the export
  (green only once). Its **indirect emissions** use the residual factor
  (draw-weighted over the period) unless a fossil factor is given, e.g.
  ``national_fossil`` from :mod:`vpp.carbon.factors`. (Our definition: the
  official zero-carbon-park accounting formula for this indicator was not
  available to check it against.)
* **Residual emissions** = direct emissions (given) + those indirect
  emissions; **carbon credits** offset at most ``credit_cap_fraction``
  (default 5 %) of the residual; **net emissions** = residual - applied.
* **Reconciliation**: per enterprise and interval, the sources attributed
  sum to the metered consumption (the attribution's own consumption when
  no separate meter totals are given), and, when the grid meters' import
  and export are given, ``net_import_kwh`` equals import - export; both
  within a tolerance. Over the park the internal transfers cancel, so the
  metered import - export equals ``grid_import_kwh - exported_kwh``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vpp.carbon.attribution import Attribution

FloatArray = NDArray[np.float64]

DEFAULT_TARGET_SHARE = 0.8
"""Renewable share of a zero-carbon park [unitless]."""
DEFAULT_CREDIT_CAP_FRACTION = 0.05
"""Largest part of the residual emissions carbon credits may offset [unitless]."""


@dataclass(frozen=True, eq=False)
class EnterpriseIndicators:
    """Per enterprise and month, arrays of shape (E, M)."""

    consumption_kwh: FloatArray
    """Consumption [kWh]."""
    own_pv_kwh: FloatArray
    """Served by own PV [kWh]."""
    shared_green_kwh: FloatArray
    """Served by shared green supplies [kWh]."""
    storage_green_kwh: FloatArray
    """Served by green storage energy [kWh]."""
    contract_kwh: FloatArray
    """Served by contract green power [kWh]."""
    grid_kwh: FloatArray
    """Served by the grid [kWh]."""
    green_kwh: FloatArray
    """All interval-matched green [kWh]."""
    certificates_kwh: FloatArray
    """Unbundled certificates applied to the month [kWh]."""
    unused_certificates_kwh: FloatArray
    """Unbundled certificates offered beyond what the month could use [kWh]."""
    renewable_share: FloatArray
    """(green + certificates applied) / consumption; NaN without consumption [unitless]."""
    matching_score: FloatArray
    """Sum of min(consumption, green) per interval / consumption; NaN without consumption [unitless]."""
    grid_draw_kwh: FloatArray
    """Energy drawn from the public grid network, for load and batteries [kWh]."""
    location_based_kg: FloatArray
    """Scope 2, location-based [kgCO2]."""
    market_based_kg: FloatArray
    """Scope 2, market-based [kgCO2]."""
    location_kg_per_unit: FloatArray
    """Location-based emissions per unit of production; NaN without production [kgCO2/unit]."""
    market_kg_per_unit: FloatArray
    """Market-based emissions per unit of production; NaN without production [kgCO2/unit]."""
    grid_import_kwh: FloatArray
    """Energy metered in from the public grid (contracts, direct grid, battery grid charge) [kWh]."""
    exported_kwh: FloatArray
    """Energy sent out of the park from its PV, storage and owned shared supplies [kWh]."""
    exported_green_kwh: FloatArray
    """Green part of ``exported_kwh`` whose attribute left the park [kWh]."""
    net_import_kwh: FloatArray
    """Import - export its grid meter must show, by the attribution [kWh]."""


@dataclass(frozen=True, eq=False)
class ParkIndicators:
    """The park over the attribution's period (one month)."""

    consumption_kwh: float
    """Consumption of all enterprises [kWh]."""
    green_kwh: float
    """Interval-matched green consumed [kWh]."""
    certificates_kwh: float
    """Unbundled certificates applied [kWh]."""
    renewable_share: float
    """(green + certificates) / consumption; NaN without consumption [unitless]."""
    target_share: float
    """Renewable share targeted [unitless]."""
    meets_target: bool
    """Renewable share >= target [unitless]."""
    grid_draw_kwh: float
    """Energy drawn from the public grid network [kWh]."""
    grid_import_kwh: float
    """Energy metered in from the public grid, by the attribution [kWh]."""
    exported_kwh: float
    """All energy sent out of the park, by the attribution [kWh]."""
    exported_green_kwh: float
    """Green energy exported whose attribute left the park [kWh]."""
    reclaimed_export_kwh: float
    """Exported green energy whose certificates were retired in the park (counted as contract) [kWh]."""
    exported_grid_kwh: float
    """Grid-origin storage energy sent back to the grid [kWh]."""
    metered_import_kwh: float | None
    """Sum of the grid meters' import, when given [kWh]."""
    metered_export_kwh: float | None
    """Sum of the grid meters' export, when given [kWh]."""
    net_imported_fossil_kwh: float
    """Net imported power not backed by green contracts or certificates [kWh]."""
    indirect_emissions_kg: float
    """Indirect emissions of the net imported fossil power [kgCO2]."""
    direct_emissions_kg: float
    """Direct (Scope 1) emissions, as given [kgCO2]."""
    residual_emissions_kg: float
    """Direct + indirect emissions before credits [kgCO2]."""
    carbon_credits_kg: float
    """Carbon credits offered [kgCO2]."""
    credits_applied_kg: float
    """Credits counted, at most the cap fraction of the residual [kgCO2]."""
    net_emissions_kg: float
    """Residual emissions - credits applied [kgCO2]."""
    location_based_kg: float
    """Scope 2 of all enterprises, location-based [kgCO2]."""
    market_based_kg: float
    """Scope 2 of all enterprises, market-based, before credits [kgCO2]."""
    reconciliation_gap_kwh: FloatArray
    """Per enterprise, attributed - metered consumption, shape (E,) [kWh]."""
    meter_gap_kwh: FloatArray
    """Per enterprise, attributed - metered net import, shape (E,); zeros without meters [kWh]."""
    reconciled: bool
    """Every gap within the tolerance, in every interval [unitless]."""


# ----------------------------------------------------------------- helpers ----


def _per_interval(name: str, values: ArrayLike, count: int) -> FloatArray:
    """Scalar or (T,) factor broadcast to (T,), finite and >= 0 [kgCO2/kWh]."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != count):
        raise ValueError(f"{name} has shape {array.shape}, expected a scalar or ({count},)")
    array = np.broadcast_to(array, (count,))
    if not np.isfinite(array).all() or (array < 0.0).any():
        raise ValueError(f"{name} must be finite and >= 0 [kgCO2/kWh]")
    return array


def _per_cell(name: str, values: ArrayLike, shape: tuple[int, int]) -> FloatArray:
    """Scalar, (T,) or (E, T) factor broadcast to (E, T), finite and >= 0 [kgCO2/kWh]."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2:
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, expected a scalar, ({shape[1]},) or {shape}")
        if not np.isfinite(array).all() or (array < 0.0).any():
            raise ValueError(f"{name} must be finite and >= 0 [kgCO2/kWh]")
        return array
    return np.broadcast_to(_per_interval(name, array, shape[1]), shape)


def _owned_supplies(attribution: Attribution, shared_owner: ArrayLike | None) -> tuple[FloatArray, FloatArray]:
    """Per enterprise, (E, T): its shared supplies' energy used in the park and exported [kWh]."""
    shape = attribution.consumption_kwh.shape
    used, exported = np.zeros(shape), np.zeros(shape)
    supplies = attribution.shared_used_kwh.shape[0]
    if shared_owner is None:
        return used, exported
    owner = np.asarray(shared_owner)
    if owner.shape != (supplies,) or not np.issubdtype(owner.dtype, np.integer) or (owner < 0).any() or (owner >= shape[0]).any():
        raise ValueError(f"shared_owner must be {supplies} enterprise indexes in [0, {shape[0]})")
    np.add.at(used, owner, attribution.shared_used_kwh)
    np.add.at(exported, owner, attribution.shared_exported_kwh)
    return used, exported


def _reclaimed(values: ArrayLike | None, shape: tuple[int, int]) -> FloatArray:
    """Optional (E, T) exported energy reclaimed by certificates retired in the park, >= 0 [kWh]."""
    if values is None:
        return np.zeros(shape)
    array = np.asarray(values, dtype=np.float64)
    if array.shape != shape or not np.isfinite(array).all() or (array < 0.0).any():
        raise ValueError(f"reclaimed_export_kwh must be finite, >= 0 and of shape {shape}, got {array.shape}")
    return array


def energy_flows(
    attribution: Attribution, shared_owner: ArrayLike | None, reclaimed_export_kwh: ArrayLike | None
) -> dict[str, FloatArray]:
    """Per enterprise and interval: grid import, exports (all, green) and the net import of its meter [kWh]."""
    a = attribution
    used, shared_exported = _owned_supplies(a, shared_owner)
    reclaimed = _reclaimed(reclaimed_export_kwh, a.consumption_kwh.shape)
    exported = a.exported_kwh + shared_exported
    green = a.own_pv_exported_kwh + a.storage_exported_green_kwh + shared_exported
    received = a.shared_green_kwh - a.own_pv_pooled_kwh - used
    return {
        "grid_import_kwh": a.grid_import_kwh,
        "exported_kwh": exported,
        "exported_green_kwh": np.maximum(green - reclaimed, 0.0),
        "net_import_kwh": a.grid_import_kwh + received - exported,
    }


def _months(month_index: ArrayLike | None, intervals: int) -> FloatArray:
    """One-hot (T, M) matrix of interval -> month [unitless]."""
    index = np.zeros(intervals, dtype=np.intp) if month_index is None else np.asarray(month_index)
    if index.shape != (intervals,) or not np.issubdtype(index.dtype, np.integer) or (index < 0).any():
        raise ValueError(f"month_index must be {intervals} non-negative integers (month of each interval)")
    months = int(index.max()) + 1 if intervals else 1
    one_hot = np.zeros((intervals, months))
    one_hot[np.arange(intervals), index] = 1.0
    return one_hot


def _ratio(numerator: FloatArray, denominator: FloatArray, empty: float = np.nan) -> FloatArray:
    """``numerator / denominator`` where the denominator is > 0, else ``empty`` [unitless]."""
    out = np.full(np.broadcast_shapes(np.shape(numerator), np.shape(denominator)), empty)
    with np.errstate(over="ignore"):  # a vanishing production volume gives an infinite intensity, not an error
        np.divide(numerator, denominator, out=out, where=np.asarray(denominator) > 0.0)
    return out


def _capped_ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """``min(numerator / denominator, 1)``, 0 where the denominator is 0; never overflows [unitless]."""
    out = np.where(numerator >= denominator, 1.0, 0.0) * (denominator > 0.0)
    np.divide(numerator, denominator, out=out, where=(denominator > 0.0) & (numerator < denominator))
    return out


def _monthly_input(name: str, values: ArrayLike | None, shape: tuple[int, int]) -> FloatArray:
    """Optional (E, M) input (or (E,) for one month), finite and >= 0 [its unit]."""
    if values is None:
        return np.zeros(shape)
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1 and shape[1] == 1:
        array = array[:, None]
    if array.shape != shape or not np.isfinite(array).all() or (array < 0.0).any():
        raise ValueError(f"{name} must be finite, >= 0 and of shape {shape}, got {array.shape}")
    return array


# ------------------------------------------------------------- enterprises ----


def enterprise_indicators(
    attribution: Attribution,
    grid_factor_kg_per_kwh: ArrayLike,
    residual_factor_kg_per_kwh: ArrayLike,
    *,
    month_index: ArrayLike | None = None,
    certificates_kwh: ArrayLike | None = None,
    production_units: ArrayLike | None = None,
    shared_owner: ArrayLike | None = None,
    reclaimed_export_kwh: ArrayLike | None = None,
) -> EnterpriseIndicators:
    """Monthly indicators of every enterprise (definitions in the module docstring).

    Parameters
    ----------
    attribution : Attribution
        Result of :func:`vpp.carbon.attribute` over T intervals [kWh].
    grid_factor_kg_per_kwh : float or array_like of shape (T,) or (E, T)
        Grid average emission factor [kgCO2/kWh].
    residual_factor_kg_per_kwh : float or array_like of shape (T,) or (E, T)
        Residual emission factor of the market-based view [kgCO2/kWh].
    month_index : array_like of int, shape (T,), optional
        Month (0..M-1) of each interval, in the park's local time; default
        one month [unitless].
    certificates_kwh : array_like of shape (E, M) or (E,), optional
        Unbundled certificates retired per enterprise and month [kWh].
    production_units : array_like of shape (E, M) or (E,), optional
        Production volume per enterprise and month; 0 = not reported [unit].
    shared_owner : array_like of int, shape (S,), optional
        Enterprise row owning each shared supply; default none (their
        exports and outflows then belong to no enterprise) [unitless].
    reclaimed_export_kwh : array_like of shape (E, T), optional
        Exported energy of each enterprise's generation whose certificates
        were retired in the park [kWh].

    Returns
    -------
    EnterpriseIndicators
        Arrays of shape (E, M) [kWh], [kgCO2], [unitless].
    """
    cells = attribution.consumption_kwh.shape
    months = _months(month_index, cells[1])
    grid_factor = _per_cell("grid_factor_kg_per_kwh", grid_factor_kg_per_kwh, cells)
    residual_factor = _per_cell("residual_factor_kg_per_kwh", residual_factor_kg_per_kwh, cells)
    flows = energy_flows(attribution, shared_owner, reclaimed_export_kwh)
    shape = (attribution.consumption_kwh.shape[0], months.shape[1])
    offered = _monthly_input("certificates_kwh", certificates_kwh, shape)
    production = _monthly_input("production_units", production_units, shape)

    consumption = attribution.consumption_kwh @ months
    green_t = attribution.green_kwh
    green = green_t @ months
    applied = np.minimum(offered, np.maximum(consumption - green, 0.0))
    residual = attribution.residual_grid_kwh
    residual_month = residual @ months
    cover = _capped_ratio(applied, residual_month)
    location = (attribution.grid_draw_kwh * grid_factor) @ months
    market = ((residual * residual_factor) @ months) * (1.0 - cover)
    return EnterpriseIndicators(
        consumption_kwh=consumption,
        own_pv_kwh=attribution.own_pv_kwh @ months,
        shared_green_kwh=attribution.shared_green_kwh @ months,
        storage_green_kwh=attribution.storage_green_kwh @ months,
        contract_kwh=attribution.contract_kwh @ months,
        grid_kwh=attribution.grid_kwh @ months,
        green_kwh=green,
        certificates_kwh=applied,
        unused_certificates_kwh=offered - applied,
        renewable_share=_ratio(green + applied, consumption),
        matching_score=_ratio(np.minimum(attribution.consumption_kwh, green_t) @ months, consumption),
        grid_draw_kwh=attribution.grid_draw_kwh @ months,
        location_based_kg=location,
        market_based_kg=market,
        location_kg_per_unit=_ratio(location, production),
        market_kg_per_unit=_ratio(market, production),
        **{name: values @ months for name, values in flows.items()},
    )


# -------------------------------------------------------------------- park ----


def _reconcile(
    attribution: Attribution, metered_kwh: ArrayLike | None, tolerance_kwh: float
) -> tuple[FloatArray, bool]:
    """Per enterprise attributed - metered consumption [kWh], and whether all are within tolerance."""
    attributed = attribution.green_kwh + attribution.grid_kwh
    if metered_kwh is None:
        metered = attribution.consumption_kwh
    else:
        metered = np.asarray(metered_kwh, dtype=np.float64)
        if metered.shape not in (attributed.shape, attributed.shape[:1]):
            raise ValueError(
                f"metered_consumption_kwh has shape {metered.shape}, expected {attributed.shape} or {attributed.shape[:1]}"
            )
    if metered.ndim == 2:
        worst = np.abs(attributed - metered).max(initial=0.0)
        gap = attributed.sum(axis=1) - metered.sum(axis=1)
        return gap, bool(worst <= tolerance_kwh and np.all(np.abs(gap) <= tolerance_kwh))
    gap = attributed.sum(axis=1) - metered
    return gap, bool(np.all(np.abs(gap) <= tolerance_kwh))


def _meter_gap(
    net_import_kwh: FloatArray, imports: ArrayLike | None, exports: ArrayLike | None, tolerance_kwh: float
) -> tuple[FloatArray, bool, float | None, float | None]:
    """Attributed - metered net import per enterprise (E,), whether every interval is within tolerance, and the meter sums [kWh]."""
    if (imports is None) != (exports is None):
        raise ValueError("metered_import_kwh and metered_export_kwh are given together or not at all")
    if imports is None:
        return np.zeros(net_import_kwh.shape[0]), True, None, None
    metered = []
    for name, values in (("metered_import_kwh", imports), ("metered_export_kwh", exports)):
        array = np.asarray(values, dtype=np.float64)
        if array.shape != net_import_kwh.shape or not np.isfinite(array).all() or (array < 0.0).any():
            raise ValueError(f"{name} must be finite, >= 0 and of shape {net_import_kwh.shape}, got {array.shape}")
        metered.append(array)
    gap = net_import_kwh - (metered[0] - metered[1])
    within = bool(np.abs(gap).max(initial=0.0) <= tolerance_kwh)
    return gap.sum(axis=1), within, float(metered[0].sum()), float(metered[1].sum())


def park_indicators(
    attribution: Attribution,
    grid_factor_kg_per_kwh: ArrayLike,
    residual_factor_kg_per_kwh: ArrayLike,
    *,
    target_share: float = DEFAULT_TARGET_SHARE,
    certificates_kwh: ArrayLike | None = None,
    fossil_factor_kg_per_kwh: ArrayLike | None = None,
    direct_emissions_kg: float = 0.0,
    carbon_credits_kg: float = 0.0,
    credit_cap_fraction: float = DEFAULT_CREDIT_CAP_FRACTION,
    metered_consumption_kwh: ArrayLike | None = None,
    metered_import_kwh: ArrayLike | None = None,
    metered_export_kwh: ArrayLike | None = None,
    shared_owner: ArrayLike | None = None,
    reclaimed_export_kwh: ArrayLike | None = None,
    tolerance_kwh: float = 1e-6,
) -> ParkIndicators:
    """The park's indicators over the attribution's period (definitions in the module docstring).

    Parameters
    ----------
    attribution : Attribution
        Result of :func:`vpp.carbon.attribute` for one month [kWh].
    grid_factor_kg_per_kwh : float or array_like of shape (T,) or (E, T)
        Grid average emission factor, the enterprises' own [kgCO2/kWh].
    residual_factor_kg_per_kwh : float or array_like of shape (T,) or (E, T)
        Residual emission factor [kgCO2/kWh].
    target_share : float
        Renewable share targeted, e.g. 0.8 for a zero-carbon park [unitless].
    certificates_kwh : array_like of shape (E,), optional
        Unbundled certificates retired per enterprise for the period [kWh].
    fossil_factor_kg_per_kwh : float or array_like of shape (T,), optional
        Factor of the net imported fossil power; default the residual factor [kgCO2/kWh].
    direct_emissions_kg : float
        Direct (Scope 1) emissions of the park for the period [kgCO2].
    carbon_credits_kg : float
        Carbon credits offered for offsetting [kgCO2].
    credit_cap_fraction : float
        Largest fraction of the residual emissions credits may offset [unitless].
    metered_consumption_kwh : array_like of shape (E,) or (E, T), optional
        Consumption from the revenue meters to reconcile against [kWh].
    metered_import_kwh, metered_export_kwh : array_like of shape (E, T), optional
        Grid meters' import and export per interval, to reconcile the
        attributed net import against [kWh].
    shared_owner : array_like of int, shape (S,), optional
        Enterprise row owning each shared supply [unitless].
    reclaimed_export_kwh : array_like of shape (E, T), optional
        Exported energy of each enterprise's generation whose certificates
        were retired in the park [kWh].
    tolerance_kwh : float
        Largest reconciliation gap accepted, per interval and in total [kWh].
    """
    for name, value in (("target_share", target_share), ("credit_cap_fraction", credit_cap_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} = {value!r} must lie in [0, 1]")
    for name, value in (("direct_emissions_kg", direct_emissions_kg), ("carbon_credits_kg", carbon_credits_kg)):
        if not (np.isfinite(value) and value >= 0.0):
            raise ValueError(f"{name} = {value!r} must be finite and >= 0")
    monthly = enterprise_indicators(
        attribution, grid_factor_kg_per_kwh, residual_factor_kg_per_kwh, certificates_kwh=certificates_kwh,
        shared_owner=shared_owner, reclaimed_export_kwh=reclaimed_export_kwh,
    )  # fmt: skip
    cells = attribution.consumption_kwh.shape
    intervals = cells[1]
    residual_t = attribution.residual_grid_kwh.sum(axis=0)
    if fossil_factor_kg_per_kwh is None:
        residual_cells = _per_cell("residual_factor_kg_per_kwh", residual_factor_kg_per_kwh, cells)
        weighted = float((attribution.residual_grid_kwh * residual_cells).sum())
        fallback = float(residual_cells.mean()) if residual_cells.size else 0.0
    else:
        factor = _per_interval("fossil_factor_kg_per_kwh", fossil_factor_kg_per_kwh, intervals)
        weighted = float(np.dot(residual_t, factor))
        fallback = float(factor.mean()) if intervals else 0.0
    average = float(_ratio(np.float64(weighted), np.float64(residual_t.sum()), empty=fallback))
    exported_grid = float(attribution.storage_exported_grid_kwh.sum())
    certificates = float(monthly.certificates_kwh.sum())
    fossil_kwh = max(float(residual_t.sum()) - exported_grid - certificates, 0.0)
    indirect = fossil_kwh * average
    residual = float(direct_emissions_kg) + indirect
    applied = min(float(carbon_credits_kg), credit_cap_fraction * residual)
    consumption, green = float(monthly.consumption_kwh.sum()), float(monthly.green_kwh.sum())
    share = float(_ratio(np.float64(green + certificates), np.float64(consumption)))
    gap, reconciled = _reconcile(attribution, metered_consumption_kwh, tolerance_kwh)
    flows = energy_flows(attribution, shared_owner, reclaimed_export_kwh)
    meter_gap, meters_agree, imported, exported = _meter_gap(
        flows["net_import_kwh"], metered_import_kwh, metered_export_kwh, tolerance_kwh
    )
    # Unowned supplies' exports count for the park, though no enterprise row holds them.
    unowned = 0.0 if shared_owner is not None else float(attribution.shared_exported_kwh.sum())
    return ParkIndicators(
        consumption_kwh=consumption,
        green_kwh=green,
        certificates_kwh=certificates,
        renewable_share=share,
        target_share=float(target_share),
        meets_target=bool(share >= target_share),
        grid_draw_kwh=float(monthly.grid_draw_kwh.sum()),
        grid_import_kwh=float(monthly.grid_import_kwh.sum()),
        exported_kwh=float(monthly.exported_kwh.sum()) + unowned,
        exported_green_kwh=float(monthly.exported_green_kwh.sum()) + unowned,
        reclaimed_export_kwh=float(_reclaimed(reclaimed_export_kwh, cells).sum()),
        exported_grid_kwh=exported_grid,
        metered_import_kwh=imported,
        metered_export_kwh=exported,
        net_imported_fossil_kwh=fossil_kwh,
        indirect_emissions_kg=indirect,
        direct_emissions_kg=float(direct_emissions_kg),
        residual_emissions_kg=residual,
        carbon_credits_kg=float(carbon_credits_kg),
        credits_applied_kg=applied,
        net_emissions_kg=residual - applied,
        location_based_kg=float(monthly.location_based_kg.sum()),
        market_based_kg=float(monthly.market_based_kg.sum()),
        reconciliation_gap_kwh=gap,
        meter_gap_kwh=meter_gap,
        reconciled=reconciled and meters_agree and bool(np.all(np.abs(meter_gap) <= tolerance_kwh)),
    )
