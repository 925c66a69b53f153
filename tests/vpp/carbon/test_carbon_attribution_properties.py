"""Property tests of the attribution over random parks and months, and agreement with the reference loop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vpp.carbon import (
    Attribution,
    BatteryFlows,
    SharedSplit,
    attribute,
    enterprise_indicators,
    park_indicators,
)
from vpp.carbon.reference import reference_attribute

EXAMPLES = settings(max_examples=150, deadline=None)
TOL = 1e-9


def _energies(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """Energies with many exact zeros and ties, as metered data has [kWh]."""
    element = st.one_of(
        st.just(0.0),
        st.sampled_from([1.0, 2.5, 10.0]),
        st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    )
    return arrays(np.float64, shape, elements=element)


@st.composite
def parks(draw: st.DrawFn) -> dict:
    """A random park: E enterprises over T intervals with PV, shared supplies, batteries and contracts."""
    e, t = draw(st.integers(1, 5)), draw(st.integers(1, 12))
    s, b = draw(st.integers(0, 2)), draw(st.integers(0, 3))
    park: dict = {"consumption_kwh": draw(_energies((e, t)))}
    if draw(st.booleans()):
        park["own_pv_kwh"] = draw(_energies((e, t)))
    if s:
        park["shared_green_kwh"] = draw(_energies((s, t)))
        if draw(st.booleans()):
            contract = draw(_energies((s, e, t) if draw(st.booleans()) else (s, e)))
            ranks = draw(arrays(np.int64, (s, e), elements=st.integers(0, 3)))
            park["split"] = SharedSplit(
                "priority", priority=ranks, contract_kwh=contract if draw(st.booleans()) else None
            )
    if b:
        efficiency = st.floats(0.5, 1.0)
        park["batteries"] = BatteryFlows(
            charge_kwh=draw(_energies((b, t))),
            discharge_kwh=draw(_energies((b, t))),
            owner=draw(arrays(np.int64, b, elements=st.integers(0, e - 1))),
            charge_efficiency=draw(arrays(np.float64, b, elements=efficiency)),
            discharge_efficiency=draw(efficiency),
            initial_green_kwh=draw(_energies((b,))),
            initial_grid_kwh=draw(_energies((b,))),
        )
    if draw(st.booleans()):
        park["contract_kwh"] = draw(_energies((e, t)))
    park["pool_surplus"] = draw(st.booleans())
    return park


def _sources(result: Attribution) -> list[np.ndarray]:
    return [result.own_pv_kwh, result.shared_green_kwh, result.storage_green_kwh, result.contract_kwh, result.grid_kwh]


@EXAMPLES
@given(parks())
def test_green_plus_grid_is_consumption_for_every_enterprise_and_interval(park: dict) -> None:
    result = attribute(**park)
    for source in _sources(result):
        assert (source >= 0.0).all()
    np.testing.assert_allclose(result.green_kwh + result.grid_kwh, park["consumption_kwh"], rtol=0, atol=TOL)
    assert (result.storage_grid_kwh <= result.grid_kwh + TOL).all()


@EXAMPLES
@given(parks())
def test_green_attributed_never_exceeds_green_generated_plus_certificates(park: dict) -> None:
    result = attribute(**park)
    consumption = park["consumption_kwh"]
    pv = park.get("own_pv_kwh", np.zeros_like(consumption))
    supplies = park.get("shared_green_kwh", np.zeros((0, consumption.shape[1])))
    offered = park.get("contract_kwh", np.zeros_like(consumption))
    batteries: BatteryFlows | None = park.get("batteries")
    stored_green = 0.0
    if batteries is not None:
        stored_green = float(np.sum(np.asarray(batteries.initial_green_kwh) * batteries.discharge_efficiency))
    available = pv.sum() + supplies.sum() + result.contract_kwh.sum() + stored_green
    assert result.green_kwh.sum() <= available + TOL
    assert (result.contract_kwh <= offered + TOL).all()
    np.testing.assert_allclose(result.contract_kwh + result.unmatched_contract_kwh, offered, atol=TOL)
    # Where every green kWh went: own PV, shared supplies, pool.
    np.testing.assert_allclose(
        result.own_pv_kwh + result.battery_green_charge_kwh + result.own_pv_pooled_kwh + result.own_pv_exported_kwh,
        pv,
        atol=TOL,
    )
    np.testing.assert_allclose(result.shared_used_kwh + result.shared_exported_kwh, supplies, atol=TOL)
    np.testing.assert_allclose(
        result.shared_green_kwh.sum(axis=0),
        result.shared_used_kwh.sum(axis=0) + result.own_pv_pooled_kwh.sum(axis=0),
        atol=TOL,
    )


@EXAMPLES
@given(parks())
def test_storage_never_releases_more_green_than_it_took_in_minus_losses(park: dict) -> None:
    batteries: BatteryFlows | None = park.get("batteries")
    result = attribute(**park)
    if batteries is None:
        return
    eta_in = np.broadcast_to(np.asarray(batteries.charge_efficiency, dtype=float), (result.final_green_kwh.size,))
    eta_out = np.broadcast_to(np.asarray(batteries.discharge_efficiency, dtype=float), eta_in.shape)
    green_in = (
        np.cumsum(result.battery_green_in_kwh, axis=1) * eta_in[:, None]
        + np.asarray(batteries.initial_green_kwh)[..., None]
    )
    green_out = np.cumsum(result.battery_green_out_kwh, axis=1)
    assert (green_out <= green_in * eta_out[:, None] + TOL).all()
    assert (result.battery_green_in_kwh <= np.asarray(batteries.charge_kwh) + TOL).all()
    # Cell-side energy balance per battery and by origin.
    np.testing.assert_allclose(green_in[:, -1] - green_out[:, -1] / eta_out, result.final_green_kwh, atol=1e-7)
    delivered = result.battery_green_out_kwh + result.battery_grid_out_kwh + result.battery_untracked_kwh
    np.testing.assert_allclose(delivered, batteries.discharge_kwh, atol=TOL)
    # Green delivered = green consumed by owners + green exported.
    np.testing.assert_allclose(
        result.battery_green_out_kwh.sum(),
        result.storage_green_kwh.sum() + result.storage_exported_green_kwh.sum(),
        atol=TOL,
    )


@EXAMPLES
@given(parks())
def test_vectorised_attribution_matches_the_reference_loop(park: dict) -> None:
    result = attribute(**park)
    expected = reference_attribute(**park)
    for name, values in expected.items():
        np.testing.assert_allclose(getattr(result, name), values, rtol=0, atol=TOL, err_msg=name)


@EXAMPLES
@given(parks(), st.data())
def test_indicators_are_bounded_and_reconcile_over_random_months(park: dict, data: st.DataObject) -> None:
    result = attribute(**park)
    intervals = result.consumption_kwh.shape[1]
    months = np.sort(data.draw(arrays(np.int64, intervals, elements=st.integers(0, 2))))
    months = np.unique(months, return_inverse=True)[1].astype(np.int64)
    monthly = enterprise_indicators(result, 0.5366, 0.5856, month_index=months)
    np.testing.assert_allclose(monthly.consumption_kwh.sum(axis=1), result.consumption_kwh.sum(axis=1), atol=TOL)
    has = monthly.consumption_kwh > 0
    assert np.isnan(monthly.renewable_share[~has]).all()
    assert (monthly.renewable_share[has] <= 1.0 + TOL).all()
    assert (monthly.matching_score[has] <= monthly.renewable_share[has] + TOL).all()
    assert (monthly.location_based_kg >= 0.0).all() and (monthly.market_based_kg >= 0.0).all()
    park_view = park_indicators(result, 0.5366, 0.5856, carbon_credits_kg=1e9)
    assert park_view.reconciled
    assert park_view.credits_applied_kg <= 0.05 * park_view.residual_emissions_kg + TOL
