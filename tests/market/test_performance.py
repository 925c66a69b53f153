"""Delivery performance: per-enterprise energy and response ratio."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.performance import enterprise_delivered_kwh, response_ratio


def test_energy_is_summed_per_enterprise_and_signed_toward_the_request():
    ids = ["e1", "e2", "e1", "e3"]
    delivered_kw = np.array([-100.0, -50.0, 20.0, 0.0])  # request: lower fleet power
    result = enterprise_delivered_kwh(ids, delivered_kw, request_sign=-1.0, dt_h=0.5)
    assert result == {"e1": pytest.approx(40.0), "e2": pytest.approx(25.0)}


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="enterprise_ids has 1 entries"):
        enterprise_delivered_kwh(["e1"], np.zeros(2), 1.0, 1.0)


def test_response_ratio():
    assert response_ratio(90.0, 100.0) == pytest.approx(0.9)
    assert response_ratio(5.0, 0.0) is None


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(-1e4, 1e4)), max_size=30),
    st.sampled_from([-1.0, 1.0]),
    st.floats(0.0, 1.0),
)
def test_enterprise_energies_add_up_to_the_fleet_energy(rows, sign, dt_h):
    ids = [r[0] for r in rows]
    kw = np.array([r[1] for r in rows])
    result = enterprise_delivered_kwh(ids, kw, sign, dt_h)
    assert sum(result.values()) == pytest.approx(float(kw.sum()) * sign * dt_h, abs=1e-6)
