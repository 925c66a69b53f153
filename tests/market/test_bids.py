"""Bid curves from the envelope are monotone and never below cost; uniform-price clearing on small cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from market.bids import (
    BidCurve,
    build_bid_curves,
    clear_uniform_price,
    envelope_bids,
    stack_bids,
)

# ---------------------------------------------------------------- curves ----


def test_resources_stack_cheapest_first_and_equal_prices_merge():
    available = np.array([[100.0, 0.0], [200.0, 200.0], [50.0, 50.0]])  # 3 resources, 2 intervals
    curve = build_bid_curves(available, np.array([0.3, 0.1, 0.3]))
    assert curve.quantity_kw.tolist() == [[200.0, 150.0], [200.0, 50.0]]
    assert curve.price_cny_per_mwh.tolist() == [[100.0, 300.0], [100.0, 300.0]]
    assert curve.total_kw().tolist() == [350.0, 250.0]


def test_max_steps_merges_at_the_highest_price_in_the_group():
    curve = build_bid_curves(np.full((4, 1), 10.0), np.array([0.1, 0.2, 0.3, 0.4]), max_steps=2)
    assert curve.quantity_kw.tolist() == [[20.0, 20.0]]
    assert curve.price_cny_per_mwh.tolist() == [[200.0, 400.0]]


def test_markup_tick_floor_and_cap():
    curve = build_bid_curves(
        np.array([[10.0], [10.0], [10.0]]),
        np.array([0.0, 0.1234, 0.9]),
        markup_fraction=0.1,
        price_tick_cny_per_mwh=1.0,
        price_floor_cny_per_mwh=50.0,
        price_cap_cny_per_mwh=500.0,
    )
    # 0 -> floor 50; 0.1234 * 1000 * 1.1 = 135.74 -> 136; 990 > cap: not offered.
    assert curve.quantity_kw.tolist() == [[10.0, 10.0]]
    assert curve.price_cny_per_mwh.tolist() == [[50.0, 136.0]]


def test_an_interval_with_nothing_available_offers_nothing():
    curve = build_bid_curves(np.array([0.0, 5.0]), 0.2)
    assert curve.quantity_kw.tolist() == [[0.0], [5.0]]
    assert curve.price_cny_per_mwh[1].tolist() == [200.0]


def test_envelope_gives_an_up_and_a_down_curve():
    up, down = envelope_bids(np.array([100.0, 50.0]), np.array([20.0, 0.0]), 0.3, 0.1, max_steps=3)
    assert (up.direction, down.direction) == ("up", "down")
    assert up.quantity_kw.tolist() == [[100.0], [50.0]] and up.price_cny_per_mwh[0, 0] == 300.0
    assert down.quantity_kw.tolist() == [[20.0], [0.0]] and down.price_cny_per_mwh[0, 0] == 100.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        build_bid_curves(np.array([-1.0]), 0.1)
    with pytest.raises(ValueError, match="marginal_cost_cny_per_kwh has shape"):
        build_bid_curves(np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match="max_steps"):
        build_bid_curves(np.ones(3), 0.1, max_steps=0)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 8).flatmap(
        lambda r: st.tuples(
            arrays(np.float64, (r, 4), elements=st.one_of(st.just(0.0), st.floats(0.0, 1000.0))),
            arrays(np.float64, r, elements=st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.35, 0.8])),
        )
    ),
    st.one_of(st.none(), st.integers(1, 4)),
)
def test_curves_are_monotone_complete_and_never_below_cost(case, max_steps):
    available, cost = case
    curve = build_bid_curves(available, cost, max_steps=max_steps)
    assert (np.diff(curve.price_cny_per_mwh, axis=1) >= 0).all()
    assert (curve.quantity_kw >= 0).all()
    np.testing.assert_allclose(curve.total_kw(), available.sum(axis=0), rtol=1e-12, atol=1e-9)
    if max_steps is not None:
        assert curve.quantity_kw.shape[1] <= max_steps
    # Quantity offered at or below any price p never exceeds what costs at most p.
    for t in range(available.shape[1]):
        for p in np.unique(curve.price_cny_per_mwh[t]):
            offered = curve.quantity_kw[t][curve.price_cny_per_mwh[t] <= p].sum()
            affordable = available[:, t][cost * 1000.0 <= p + 1e-9].sum()
            assert offered <= affordable + 1e-9


# -------------------------------------------------------------- clearing ----


def test_marginal_offer_sets_the_price_and_is_partly_accepted():
    q = np.array([[200.0, 20.0, 150.0, 20.0]])
    p = np.array([[100.0, 200.0, 300.0, 400.0]])
    result = clear_uniform_price(q, p, np.array([250.0]))
    assert result.clearing_price_cny_per_mwh.tolist() == [300.0]
    assert result.accepted_kw.tolist() == [[200.0, 20.0, 30.0, 0.0]]
    assert result.shortfall_kw.tolist() == [0.0]


def test_demand_met_exactly_at_a_step_edge_takes_that_steps_price():
    result = clear_uniform_price(np.array([[100.0, 100.0]]), np.array([[50.0, 80.0]]), np.array([100.0]))
    assert result.clearing_price_cny_per_mwh.tolist() == [50.0]
    assert result.accepted_kw.tolist() == [[100.0, 0.0]]


def test_ties_at_the_marginal_price_share_pro_rata_whatever_the_order():
    q = np.array([[30.0, 10.0, 60.0], [60.0, 30.0, 10.0]])
    p = np.array([[10.0, 20.0, 20.0], [20.0, 10.0, 20.0]])
    result = clear_uniform_price(q, p, np.array([65.0, 65.0]))
    # 30 at 10 in full; 35 left across 70 at 20: half each.
    assert result.accepted_kw.tolist() == [[30.0, 5.0, 30.0], [30.0, 30.0, 5.0]]
    assert result.clearing_price_cny_per_mwh.tolist() == [20.0, 20.0]


def test_short_supply_accepts_everything_and_reports_the_shortfall():
    q = np.array([[10.0, 20.0], [10.0, 20.0]])
    p = np.array([[10.0, 30.0], [10.0, 30.0]])
    result = clear_uniform_price(q, p, np.array([50.0, 0.0]))
    assert result.accepted_kw.tolist() == [[10.0, 20.0], [0.0, 0.0]]
    assert result.shortfall_kw.tolist() == [20.0, 0.0]
    assert result.clearing_price_cny_per_mwh[0] == 30.0 and np.isnan(result.clearing_price_cny_per_mwh[1])
    capped = clear_uniform_price(q, p, np.array([50.0, 0.0]), price_cap_cny_per_mwh=1500.0)
    assert capped.clearing_price_cny_per_mwh[0] == 1500.0


def test_zero_quantity_steps_never_set_the_price():
    result = clear_uniform_price(np.array([[0.0, 50.0]]), np.array([[5.0, 90.0]]), np.array([20.0]))
    assert result.clearing_price_cny_per_mwh.tolist() == [90.0]


def test_several_bidders_and_acceptance_per_bidder():
    vpp = build_bid_curves(np.array([[100.0, 100.0]]), 0.2)
    rival = BidCurve(np.array([[50.0, 50.0], [50.0, 50.0]]), np.array([[100.0, 400.0], [100.0, 400.0]]))
    q, p, owner = stack_bids([vpp, rival])
    result = clear_uniform_price(q, p, np.array([120.0, 180.0]))
    assert result.clearing_price_cny_per_mwh.tolist() == [200.0, 400.0]
    assert result.accepted_by_owner(owner, 2).tolist() == [[70.0, 100.0], [50.0, 80.0]]
    with pytest.raises(ValueError, match="different numbers of intervals"):
        stack_bids([vpp, BidCurve(np.ones((3, 1)), np.ones((3, 1)))])


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda b: st.tuples(
            arrays(np.float64, (3, b), elements=st.one_of(st.just(0.0), st.floats(0.0, 500.0))),
            arrays(np.float64, (3, b), elements=st.sampled_from([0.0, 10.0, 20.0, 35.0, 100.0])),
            arrays(np.float64, 3, elements=st.floats(0.0, 1500.0)),
        )
    )
)
def test_clearing_properties(case):
    q, p, demand = case
    result = clear_uniform_price(q, p, demand)
    accepted = result.accepted_kw
    assert ((accepted >= -1e-9) & (accepted <= q + 1e-9)).all()
    np.testing.assert_allclose(accepted.sum(axis=1), np.minimum(demand, q.sum(axis=1)), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(result.shortfall_kw, np.maximum(demand - q.sum(axis=1), 0.0), rtol=1e-9, atol=1e-6)
    for t in range(3):
        price = result.clearing_price_cny_per_mwh[t]
        if accepted[t].sum() > 1e-9:
            # Nothing accepted above the price; everything strictly below it fully accepted.
            assert (accepted[t][p[t] > price] <= 1e-9).all()
            below = (p[t] < price) & (q[t] > 0)
            np.testing.assert_allclose(accepted[t][below], q[t][below], rtol=1e-9)
