"""The plant envelope per interval."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dispatch.envelope import envelope_kw

NAN = np.nan


def _call(expected, lo, hi, available, soc=(NAN,), soc_min=(NAN,), soc_max=(NAN,), interval_h=0.25):
    n = np.asarray(expected).shape[1]
    pad = lambda v: np.resize(np.asarray(v, dtype=float), n)  # noqa: E731
    return envelope_kw(expected, lo, hi, available, pad(soc), pad(soc_min), pad(soc_max), np.full(n, 0.9), np.full(n, 0.9), interval_h)


def test_non_battery_range_around_expected_point():
    up, down = _call([[-400.0], [-400.0]], [[-400.0], [-400.0]], [[-200.0], [-200.0]], [[True], [False]])
    assert list(up) == [200.0, 0.0] and list(down) == [0.0, 0.0]


def test_battery_limited_by_one_interval_of_energy():
    # 20 kWh above the minimum * 0.9 over 0.25 h = 72 kW up; 10 kWh of room / 0.9 / 0.25 h = 44.4 kW down.
    up, down = _call([[0.0]], [[-100.0]], [[100.0]], [[True]], soc=[70.0], soc_min=[50.0], soc_max=[80.0])
    assert up[0] == pytest.approx(72.0)
    assert down[0] == pytest.approx(10 / 0.9 / 0.25)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="must be \\(T, n\\)"):
        envelope_kw(np.zeros((2, 1)), np.zeros((2, 2)), np.zeros((2, 1)), np.ones((2, 1), bool), [NAN], [NAN], [NAN], [1.0], [1.0], 0.25)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (4, 3), elements=st.floats(-500, 500)), arrays(np.float64, (4, 3), elements=st.floats(0, 300)),
       arrays(np.float64, (4, 3), elements=st.floats(0, 300)), arrays(np.bool_, (4, 3)))
def test_capability_is_non_negative_and_bounded_by_the_ranges(expected, below, above, available):
    up, down = _call(expected, expected - below, expected + above, available)
    assert np.all(up >= 0) and np.all(down >= 0)
    assert np.all(up <= (above * available).sum(axis=1) + 1e-9)
    assert np.all(down <= (below * available).sum(axis=1) + 1e-9)
