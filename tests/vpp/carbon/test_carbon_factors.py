"""Emission factors: shipped 2022 values, overrides, clear errors, per-interval series."""

from __future__ import annotations

import numpy as np
import pytest

from vpp.carbon import (
    UnknownRegionError,
    UnknownYearError,
    emission_factor,
    factor_series,
    factor_table,
    residual_factor,
    shipped_factors,
)

PUBLISHED_2022 = {
    "national": 0.5366,
    "national_residual": 0.5856,
    "north": 0.6776,
    "northwest": 0.5857,
    "east": 0.5617,
    "northeast": 0.5564,
    "central": 0.5395,
    "south": 0.3869,
    "southwest": 0.2268,
}


@pytest.mark.parametrize(("region", "value"), sorted(PUBLISHED_2022.items()))
def test_shipped_2022_values(region: str, value: float) -> None:
    assert emission_factor(region, 2022) == value


def test_region_names_are_case_insensitive_as_in_the_model() -> None:
    assert emission_factor("East", 2022) == 0.5617
    assert emission_factor(" SouthWest ", 2022) == 0.2268
    assert residual_factor(2022) == 0.5856


def test_unknown_region_names_it_and_lists_known() -> None:
    with pytest.raises(UnknownRegionError, match=r"'Atlantis'.*2022.*known regions: .*east"):
        emission_factor("Atlantis", 2022)


def test_unknown_year_names_it_and_never_falls_back() -> None:
    with pytest.raises(UnknownYearError, match=r"year 2031.*known years: 2022"):
        emission_factor("East", 2031)


def test_overrides_extend_and_replace_without_touching_the_shipped_table() -> None:
    table = factor_table({2023: {"East": 0.55}, 2022: {"national": 0.5}})
    assert emission_factor("east", 2023, table) == 0.55
    assert emission_factor("national", 2022, table) == 0.5
    assert emission_factor("north", 2022, table) == 0.6776
    assert shipped_factors()[2022]["national"] == 0.5366
    with pytest.raises(UnknownRegionError, match="north"):
        emission_factor("north", 2023, table)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_override_values_are_checked(bad: float) -> None:
    with pytest.raises(ValueError, match="'East' in 2023"):
        factor_table({2023: {"East": bad}})


def test_series_fills_gaps_with_the_annual_factor() -> None:
    series = factor_series(3, "East", 2022, series_kg_per_kwh=[0.4, np.nan, 0.7])
    np.testing.assert_array_equal(series, [0.4, 0.5617, 0.7])
    np.testing.assert_array_equal(factor_series(2, "South", 2022), [0.3869, 0.3869])


def test_series_shape_and_values_are_checked() -> None:
    with pytest.raises(ValueError, match="shape"):
        factor_series(3, "East", 2022, series_kg_per_kwh=[0.4, 0.5])
    with pytest.raises(ValueError, match=r"series_kg_per_kwh\[1\]"):
        factor_series(2, "East", 2022, series_kg_per_kwh=[0.4, -1.0])
