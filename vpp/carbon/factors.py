"""Grid electricity CO2 emission factors by year and region [kgCO2/kWh].

Shipped values
--------------
The Chinese 2022 electricity CO2 emission factors calculated by the Ministry
of Ecology and Environment (MEE) and the National Bureau of Statistics (NBS),
announcement "关于发布2022年电力二氧化碳排放因子的公告" dated 2024-12-20
(issued by the MEE general office on 2024-12-23), "for reference when
accounting the CO2 emissions of electricity consumption". The method and
data sources are stated to be those of the 2021 factors (MEE/NBS
announcement 2024 No. 12).

=====================  ======  ================================================
key                    value   meaning
=====================  ======  ================================================
``national``           0.5366  national average
``national_residual``  0.5856  national average excluding market-traded
                               non-fossil electricity (the residual factor of
                               the market-based view)
``national_fossil``    0.8325  national fossil-fuel electricity
``north``              0.6776  North China grid
``northwest``          0.5857  Northwest China grid
``east``               0.5617  East China grid
``northeast``          0.5564  Northeast China grid
``central``            0.5395  Central China grid
``south``              0.3869  China Southern grid
``southwest``          0.2268  Southwest China grid
=====================  ======  ================================================

What could not be checked: the announcement's attachment (the official
table, with its provincial factors and the calculation note) was not read
here. The ten values above were checked against secondary reports of the
announcement (press coverage of 26-27 December 2024 and an exchange's reprint),
which agree with each other; ``national_fossil`` comes from those reports
only. The factors are CO2 only (not CO2e) and annual; provincial factors are
not shipped.

Configuration
-------------
:func:`factor_table` merges caller overrides (a mapping the caller loaded,
e.g. from a settings file) over the shipped table; :func:`emission_factor`
and :func:`factor_series` read a table. Region names are case-insensitive
(``"East"`` as in :class:`vpp.model.Enterprise` works). Unknown regions and
years raise :class:`UnknownRegionError` / :class:`UnknownYearError` naming
the value and what is known; a missing year never falls back silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
FactorTable = Mapping[int, Mapping[str, float]]
"""Emission factors: year -> region key -> factor [kgCO2/kWh]."""

NATIONAL: Final = "national"
NATIONAL_RESIDUAL: Final = "national_residual"
NATIONAL_FOSSIL: Final = "national_fossil"

_SHIPPED: Final = (
    (
        2022,
        (
            (NATIONAL, 0.5366),
            (NATIONAL_RESIDUAL, 0.5856),
            (NATIONAL_FOSSIL, 0.8325),
            ("north", 0.6776),
            ("northwest", 0.5857),
            ("east", 0.5617),
            ("northeast", 0.5564),
            ("central", 0.5395),
            ("south", 0.3869),
            ("southwest", 0.2268),
        ),
    ),
)
"""Immutable source of :func:`shipped_factors` (year, ((region, kgCO2/kWh), ...))."""


class UnknownFactorError(LookupError):
    """No emission factor for the requested region or year."""


class UnknownRegionError(UnknownFactorError):
    """The region has no factor in the table for that year."""


class UnknownYearError(UnknownFactorError):
    """The table has no factors for that year."""


def region_key(region: str) -> str:
    """Normalised table key of ``region``: stripped, case-folded, spaces and dashes as ``_``."""
    return region.strip().casefold().replace("-", "_").replace(" ", "_")


def shipped_factors() -> dict[int, dict[str, float]]:
    """A fresh copy of the shipped table: year -> region key -> factor [kgCO2/kWh]."""
    return {year: dict(regions) for year, regions in _SHIPPED}


def _checked_factor(year: int, region: str, value: float) -> float:
    number = float(value)
    if not np.isfinite(number) or number < 0.0:
        raise ValueError(
            f"emission factor for region {region!r} in {year} is {value!r}; it must be finite and >= 0 [kgCO2/kWh]"
        )
    return number


def factor_table(
    overrides: FactorTable | None = None, *, base: FactorTable | None = None
) -> dict[int, dict[str, float]]:
    """Emission-factor table: ``base`` (default: the shipped values) with ``overrides`` on top.

    Parameters
    ----------
    overrides : mapping year -> region -> factor, optional
        Factors that replace or extend ``base``, e.g. loaded by the caller
        from a file; regions are normalised with :func:`region_key`
        [kgCO2/kWh].
    base : mapping year -> region -> factor, optional
        Table to start from; default :func:`shipped_factors` [kgCO2/kWh].

    Returns
    -------
    dict
        A new table, year -> region key -> factor [kgCO2/kWh].
    """
    table: dict[int, dict[str, float]] = {}
    for source in (shipped_factors() if base is None else base, overrides or {}):
        for year, regions in source.items():
            if isinstance(year, bool) or not isinstance(year, (int, np.integer)):
                raise TypeError(f"emission factor year {year!r} must be an integer year")
            row = table.setdefault(int(year), {})
            for region, value in regions.items():
                row[region_key(region)] = _checked_factor(int(year), region, value)
    return table


def emission_factor(region: str, year: int, table: FactorTable | None = None) -> float:
    """Grid emission factor of ``region`` in ``year`` [kgCO2/kWh].

    Parameters
    ----------
    region : str
        Region name or key, e.g. ``"East"`` or ``"national"`` [unitless].
    year : int
        Year the factor applies to [year].
    table : mapping year -> region -> factor, optional
        Table from :func:`factor_table`; default the shipped values [kgCO2/kWh].

    Raises
    ------
    UnknownYearError
        ``year`` is not in the table; the message lists the known years.
    UnknownRegionError
        ``region`` has no factor for ``year``; the message lists the known regions.
    """
    table = shipped_factors() if table is None else table
    if year not in table:
        known = ", ".join(str(y) for y in sorted(table)) or "none"
        raise UnknownYearError(f"no emission factors for year {year}; known years: {known}")
    regions = table[year]
    key = region_key(region)
    if key not in regions:
        raise UnknownRegionError(
            f"no emission factor for region {region!r} in {year}; known regions: {', '.join(sorted(regions))}"
        )
    return float(regions[key])


def residual_factor(year: int, table: FactorTable | None = None) -> float:
    """Residual factor of the market-based view: national excluding market-traded non-fossil power [kgCO2/kWh].

    Parameters
    ----------
    year : int
        Year the factor applies to [year].
    table : mapping year -> region -> factor, optional
        Table from :func:`factor_table`; default the shipped values [kgCO2/kWh].
    """
    return emission_factor(NATIONAL_RESIDUAL, year, table)


def factor_series(
    n_intervals: int,
    region: str,
    year: int,
    *,
    series_kg_per_kwh: ArrayLike | None = None,
    table: FactorTable | None = None,
) -> FloatArray:
    """Per-interval emission factors: the grid's own series where given, else the annual factor [kgCO2/kWh].

    Parameters
    ----------
    n_intervals : int
        Number of intervals T [unitless].
    region : str
        Region of the annual factor used where the series is absent [unitless].
    year : int
        Year of the annual factor [year].
    series_kg_per_kwh : array_like of shape (T,), optional
        Factor series published by the grid; NaN marks intervals without a
        value, which get the annual factor [kgCO2/kWh].
    table : mapping year -> region -> factor, optional
        Table from :func:`factor_table`; default the shipped values [kgCO2/kWh].

    Returns
    -------
    numpy.ndarray of shape (T,)
        Factor per interval [kgCO2/kWh].
    """
    annual = emission_factor(region, year, table)
    if series_kg_per_kwh is None:
        return np.full(n_intervals, annual)
    series = np.array(series_kg_per_kwh, dtype=np.float64)
    if series.shape != (n_intervals,):
        raise ValueError(f"series_kg_per_kwh has shape {series.shape}, expected ({n_intervals},)")
    bad = np.isinf(series) | (series < 0.0)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(
            f"series_kg_per_kwh[{index}] = {float(series[index])!r}; factors must be finite and >= 0 [kgCO2/kWh]"
        )
    return np.where(np.isnan(series), annual, series)
