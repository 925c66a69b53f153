"""Hand-computed monthly enterprise indicators and park indicators; park totals and meter reconciliation over random parks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.vpp.carbon.test_carbon_attribution_properties import parks
from vpp.carbon import (
    BatteryFlows,
    attribute,
    emission_factor,
    enterprise_indicators,
    park_indicators,
)

GRID, RESIDUAL = 0.5, 0.6


def _two_months():
    # e0: month 0 = own PV 5 + contract 5 + grid 10; month 1 = own PV 10 + grid 10. e1 consumes nothing.
    result = attribute(
        [[10.0, 10.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]],
        own_pv_kwh=[[5.0, 0.0, 10.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        contract_kwh=[[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
    )
    return result, np.array([0, 0, 1, 1])


def test_monthly_sources_share_matching_and_scope2() -> None:
    result, months = _two_months()
    got = enterprise_indicators(result, GRID, RESIDUAL, month_index=months)
    np.testing.assert_allclose(got.consumption_kwh[0], [20.0, 20.0])
    np.testing.assert_allclose(got.own_pv_kwh[0], [5.0, 10.0])
    np.testing.assert_allclose(got.contract_kwh[0], [5.0, 0.0])
    np.testing.assert_allclose(got.grid_kwh[0], [10.0, 10.0])
    np.testing.assert_allclose(got.renewable_share[0], [0.5, 0.5])
    np.testing.assert_allclose(got.matching_score[0], [0.5, 0.5])
    # Location-based counts the contract energy too (it came over the grid); own PV is not grid draw.
    np.testing.assert_allclose(got.grid_draw_kwh[0], [15.0, 10.0])
    np.testing.assert_allclose(got.location_based_kg[0], [7.5, 5.0])
    # Market-based: contracts are zero-emission, the residual factor takes the rest.
    np.testing.assert_allclose(got.market_based_kg[0], [6.0, 6.0])
    assert np.isnan(got.renewable_share[1]).all() and np.isnan(got.matching_score[1]).all()
    np.testing.assert_array_equal(got.location_based_kg[1], [0.0, 0.0])


def test_monthly_certificates_raise_the_share_and_cut_market_based_only() -> None:
    result, months = _two_months()
    got = enterprise_indicators(
        result,
        GRID,
        RESIDUAL,
        month_index=months,
        certificates_kwh=[[4.0, 0.0], [3.0, 0.0]],
        production_units=[[100.0, 0.0], [0.0, 0.0]],
    )
    np.testing.assert_allclose(got.certificates_kwh, [[4.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(got.unused_certificates_kwh, [[0.0, 0.0], [3.0, 0.0]])
    np.testing.assert_allclose(got.renewable_share[0], [0.7, 0.5])
    np.testing.assert_allclose(got.matching_score[0], [0.5, 0.5])  # certificates carry no 15-minute match
    np.testing.assert_allclose(got.location_based_kg[0], [7.5, 5.0])  # certificates do not reduce it
    np.testing.assert_allclose(got.market_based_kg[0], [6.0 * (1 - 4 / 10), 6.0])
    np.testing.assert_allclose(got.market_kg_per_unit[0, 0], 3.6 / 100.0)
    assert np.isnan(got.market_kg_per_unit[0, 1]) and np.isnan(got.location_kg_per_unit[1]).all()


def test_matching_score_is_lower_than_monthly_share_when_green_is_in_the_wrong_interval() -> None:
    # 10 kWh of contract in an interval with 5 kWh of consumption: 5 unmatched, not counted anywhere.
    result = attribute([[5.0, 5.0]], contract_kwh=[[10.0, 0.0]])
    got = enterprise_indicators(result, GRID, RESIDUAL, certificates_kwh=[5.0])
    np.testing.assert_allclose(got.matching_score, [[0.5]])
    np.testing.assert_allclose(got.renewable_share, [[1.0]])
    np.testing.assert_allclose(result.unmatched_contract_kwh, [[5.0, 0.0]])


def test_per_interval_factors_apply_interval_by_interval() -> None:
    result = attribute([[1.0, 3.0]])
    got = enterprise_indicators(result, [0.2, 0.4], [0.3, 0.5])
    np.testing.assert_allclose(got.location_based_kg, [[1.0 * 0.2 + 3.0 * 0.4]])
    np.testing.assert_allclose(got.market_based_kg, [[1.0 * 0.3 + 3.0 * 0.5]])


def _park():
    # t0: e0's 10 kWh surplus serves e1 through the pool; t1: both on the grid, e1 with 4 kWh of contract.
    return attribute(
        [[10.0, 10.0], [10.0, 10.0]],
        own_pv_kwh=[[20.0, 0.0], [0.0, 0.0]],
        contract_kwh=[[0.0, 0.0], [0.0, 4.0]],
    )


def test_park_share_target_fossil_import_and_credit_cap() -> None:
    got = park_indicators(_park(), GRID, 0.5856, direct_emissions_kg=100.0, carbon_credits_kg=50.0)
    assert got.consumption_kwh == pytest.approx(40.0)
    assert got.green_kwh == pytest.approx(24.0)
    assert got.renewable_share == pytest.approx(0.6)
    assert got.target_share == 0.8 and not got.meets_target
    assert got.grid_draw_kwh == pytest.approx(20.0)
    assert got.net_imported_fossil_kwh == pytest.approx(16.0)
    assert got.indirect_emissions_kg == pytest.approx(16.0 * 0.5856)
    assert got.residual_emissions_kg == pytest.approx(100.0 + 16.0 * 0.5856)
    assert got.credits_applied_kg == pytest.approx(0.05 * got.residual_emissions_kg)
    assert got.net_emissions_kg == pytest.approx(0.95 * got.residual_emissions_kg)
    assert got.reconciled and np.allclose(got.reconciliation_gap_kwh, 0.0)


def test_park_target_certificates_and_fossil_factor_are_configurable() -> None:
    fossil = emission_factor("national_fossil", 2022)
    got = park_indicators(
        _park(),
        GRID,
        0.5856,
        target_share=0.6,
        certificates_kwh=[2.0, 0.0],
        fossil_factor_kg_per_kwh=fossil,
        carbon_credits_kg=0.1,
    )
    assert got.renewable_share == pytest.approx(26.0 / 40.0) and got.meets_target
    assert got.net_imported_fossil_kwh == pytest.approx(14.0)
    assert got.indirect_emissions_kg == pytest.approx(14.0 * 0.8325)
    assert got.credits_applied_kg == pytest.approx(0.1)  # below the cap: all of it counts


def test_park_reconciles_to_meters_and_reports_the_gap() -> None:
    result = _park()
    assert park_indicators(result, GRID, RESIDUAL, metered_consumption_kwh=[20.0, 20.0]).reconciled
    off = park_indicators(result, GRID, RESIDUAL, metered_consumption_kwh=[20.0, 19.0])
    assert not off.reconciled
    np.testing.assert_allclose(off.reconciliation_gap_kwh, [0.0, 1.0])
    per_interval = park_indicators(result, GRID, RESIDUAL, metered_consumption_kwh=[[10.0, 10.0], [9.0, 11.0]])
    assert not per_interval.reconciled  # equal monthly totals, but interval 0 and 1 of e1 differ


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_share": 1.5}, "target_share"),
        ({"carbon_credits_kg": -1.0}, "carbon_credits_kg"),
        ({"certificates_kwh": [1.0]}, "certificates_kwh"),
        ({"metered_consumption_kwh": [1.0, 2.0, 3.0]}, "metered_consumption_kwh"),
    ],
)
def test_park_bad_input_names_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        park_indicators(_park(), GRID, RESIDUAL, **kwargs)


def test_month_index_is_checked() -> None:
    with pytest.raises(ValueError, match="month_index"):
        enterprise_indicators(_park(), GRID, RESIDUAL, month_index=[0.0, 1.0])


# ------------------------------------------ per-interval factors, meters ----


def test_park_uses_each_enterprises_per_interval_factors() -> None:
    # Two enterprises on the grid, different regions, and a per-interval series in interval 1.
    result = attribute([[2.0, 4.0], [1.0, 3.0]])
    factors = np.array([[0.5, 0.1], [0.3, 0.1]])
    monthly = enterprise_indicators(result, factors, RESIDUAL)
    np.testing.assert_allclose(monthly.location_based_kg[:, 0], [2.0 * 0.5 + 4.0 * 0.1, 1.0 * 0.3 + 3.0 * 0.1])
    park = park_indicators(result, factors, RESIDUAL)
    assert park.location_based_kg == pytest.approx(1.4 + 0.6)
    with pytest.raises(ValueError, match="grid_factor_kg_per_kwh"):
        park_indicators(result, np.ones((3, 2)), RESIDUAL)


def _metered(park: dict, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid meters' import and export of each enterprise, from the park's physical flows [kWh]."""
    consumption = park["consumption_kwh"]
    net = consumption - park.get("own_pv_kwh", np.zeros_like(consumption))
    supplies = park.get("shared_green_kwh")
    if supplies is not None:
        np.add.at(net, owner, -supplies)
    batteries: BatteryFlows | None = park.get("batteries")
    if batteries is not None:
        np.add.at(net, np.asarray(batteries.owner), np.asarray(batteries.charge_kwh) - np.asarray(batteries.discharge_kwh))
    return np.maximum(net, 0.0), np.maximum(-net, 0.0)


SUMMED = (
    "consumption_kwh", "green_kwh", "grid_draw_kwh", "grid_import_kwh", "exported_kwh", "exported_green_kwh",
    "location_based_kg", "market_based_kg", "certificates_kwh",
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(parks(), st.data())
def test_park_totals_are_the_enterprises_and_reconcile_to_the_meters(park: dict, data: st.DataObject) -> None:
    result = attribute(**park)
    e, t = result.consumption_kwh.shape
    supplies = result.shared_used_kwh.shape[0]
    owner = data.draw(arrays(np.intp, supplies, elements=st.integers(0, e - 1)))
    factors = data.draw(arrays(np.float64, (e, t), elements=st.floats(0.0, 1.0)))
    certificates = data.draw(arrays(np.float64, e, elements=st.floats(0.0, 50.0)))
    imports, exports = _metered(park, owner)
    monthly = enterprise_indicators(result, factors, 0.5856, certificates_kwh=certificates, shared_owner=owner)
    total = park_indicators(
        result, factors, 0.5856, certificates_kwh=certificates, shared_owner=owner,
        metered_import_kwh=imports, metered_export_kwh=exports, tolerance_kwh=1e-7,
    )  # fmt: skip
    for name in SUMMED:
        assert getattr(total, name) == pytest.approx(float(getattr(monthly, name).sum()), abs=1e-7), name
    assert total.location_based_kg == pytest.approx(float((result.grid_draw_kwh * factors).sum()), abs=1e-7)
    # Imports and exports are the meters', exactly: per enterprise and interval, and over the park.
    assert total.reconciled, (total.meter_gap_kwh, total.reconciliation_gap_kwh)
    np.testing.assert_allclose(total.meter_gap_kwh, 0.0, atol=1e-7)
    assert total.metered_import_kwh - total.metered_export_kwh == pytest.approx(
        total.grid_import_kwh - total.exported_kwh, abs=1e-7
    )
    # One kWh off on one meter is found, and named by its enterprise.
    wrong = data.draw(st.integers(0, e - 1))
    bumped = imports.copy()
    bumped[wrong, data.draw(st.integers(0, t - 1))] += 1.0
    off = park_indicators(
        result, factors, 0.5856, shared_owner=owner, metered_import_kwh=bumped, metered_export_kwh=exports,
        tolerance_kwh=1e-7,
    )  # fmt: skip
    assert not off.reconciled and off.meter_gap_kwh[wrong] == pytest.approx(-1.0, abs=1e-7)
