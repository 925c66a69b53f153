"""Park costs shared by benefit key ("who benefits, bears"): exact to the fen, never negative, documented fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market import (
    BENEFIT_KEYS,
    DrEvent,
    EventWindow,
    allocate_costs,
    benefit_weights,
    month_statement,
)
from market.settlement import EventSettlement


def test_each_key_weighs_by_its_measure():
    revenue, consumption, capacity = np.array([300, 100, 0]), np.array([10.0, 30.0, 60.0]), np.array([0.0, 5.0, 5.0])
    shares, used = allocate_costs([1000, 1000, 1000, 1000], list(BENEFIT_KEYS), revenue, consumption, capacity)
    assert used == list(BENEFIT_KEYS)
    assert shares.tolist() == [[750, 250, 0], [100, 300, 600], [0, 500, 500], [334, 333, 333]]


def test_largest_remainder_by_hand():
    # 100 fen by 1:1:1 → quotas 33.33 each: one fen left goes to the first of the equal remainders.
    shares, _ = allocate_costs([100], ["consumption"], np.zeros(3), np.array([1.0, 1.0, 1.0]), np.zeros(3))
    assert shares.tolist() == [[34, 33, 33]]
    # 10 fen by 0.55 : 0.45 → 5.5 and 4.5: the remainders tie, the lower index gets the fen.
    shares, _ = allocate_costs([10], ["consumption"], np.zeros(2), np.array([0.55, 0.45]), np.zeros(2))
    assert shares.sum() == 10 and shares.tolist() == [[6, 4]]


def test_all_zero_keys_fall_back_in_the_documented_order():
    none = np.zeros(3)
    assert benefit_weights("event_revenue", none, np.array([1.0, 0.0, 3.0]), none)[1] == "consumption"
    weights, used = benefit_weights("event_revenue", none, none, none)
    assert used == "equal" and weights.tolist() == [1.0, 1.0, 1.0]
    assert benefit_weights("capacity", none, np.ones(3), none)[1] == "equal"  # capacity does not fall to consumption
    nan_consumption = np.array([np.nan, 2.0, np.nan])  # unmeasured consumption weighs nothing
    assert benefit_weights("consumption", none, nan_consumption, none)[0].tolist() == [0.0, 2.0, 0.0]


def test_bad_costs_and_keys_are_refused():
    with pytest.raises(ValueError, match="benefit key 'luck'"):
        benefit_weights("luck", np.zeros(2), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"costs\[0\] = -5"):
        allocate_costs([-5], ["equal"], np.zeros(2), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="2 costs but 1 benefit keys"):
        allocate_costs([1, 2], ["equal"], np.zeros(2), np.zeros(2), np.zeros(2))


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    n=st.integers(min_value=1, max_value=40),
    amounts=st.lists(st.integers(min_value=0, max_value=10**11), min_size=1, max_size=6),
)
def test_shares_add_up_exactly_and_are_never_negative(data, n, amounts):
    measure = st.lists(st.floats(min_value=0.0, max_value=1e9, allow_nan=False), min_size=n, max_size=n)
    revenue = np.array(data.draw(st.lists(st.integers(min_value=0, max_value=10**9), min_size=n, max_size=n)))
    consumption, capacity = np.array(data.draw(measure)), np.array(data.draw(measure))
    keys = data.draw(st.lists(st.sampled_from(BENEFIT_KEYS), min_size=len(amounts), max_size=len(amounts)))
    shares, used = allocate_costs(amounts, keys, revenue, consumption, capacity)
    assert shares.shape == (len(amounts), n) and shares.dtype == np.int64
    assert shares.sum(axis=1).tolist() == amounts  # to the fen, each cost
    assert (shares >= 0).all()
    for c, key in enumerate(used):
        weights, _ = benefit_weights(key, revenue, consumption, capacity)
        assert (shares[c][weights == 0] == 0).all()  # nobody outside the key bears any of it
        quota = amounts[c] * weights / weights.sum()
        assert (np.abs(shares[c] - quota) < 1.0 + 1e-6 * amounts[c] / max(weights.sum(), 1.0)).all()


def _settlement(n: int) -> EventSettlement:
    zeros = np.zeros(n)
    event = DrEvent("ev", "p", EventWindow(np.datetime64("2026-07-14"), 56, 64), "peak_shaving", 100.0)
    return EventSettlement(
        event, 200.0, 150.0, 0.75, 900, 0, zeros, zeros, np.array([100.0, 50.0]), zeros, zeros,
        np.array([600, 300]), np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool), ("", ""), np.zeros((0, 3), dtype=np.intp),
    )


def test_cost_rows_appear_per_cost_and_the_total_nets_them():
    rows = month_statement(
        "2026-07", ["a", "b"], [_settlement(2)],
        costs=[("platform_fee; shared by event_revenue", np.array([200, 100])), ("ancillary; shared by consumption", np.array([0, 7]))],
    )
    b = [r for r in rows if r.enterprise_id == "b"]
    assert [r.kind for r in b] == ["event", "cost", "cost", "total"]
    assert [r.cost_fen for r in b if r.kind == "cost"] == [100, 7]
    a_total = next(r for r in rows if r.enterprise_id == "a" and r.kind == "total")
    assert a_total.cost_fen == 200 and a_total.net_fen == 600 - 200
    assert [r.kind for r in rows if r.enterprise_id == "a"] == ["event", "cost", "total"]  # a zero share has no row
