"""PV and load forecasts, and their error measures."""

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dispatch.forecast import clear_sky_pv_kw, mae, mape, measured_ratio, pv_forecast_kw, similar_day_load_kw

SUZHOU = (31.3, 120.6)


def _day(day: str = "2026-06-21") -> pd.DatetimeIndex:
    start = pd.Timestamp(day, tz="Asia/Shanghai")
    return pd.date_range(start + pd.Timedelta(minutes=7.5), periods=96, freq="15min").tz_convert("UTC")


def test_clear_sky_pv_is_zero_at_night_peaks_near_noon_and_stays_under_rating():
    times = _day()
    p = clear_sky_pv_kw(times, *SUZHOU, tilt_deg=[20, 90], azimuth_deg=[180, 90], rated_kw=[1000, 100])
    local_hours = times.tz_convert("Asia/Shanghai").hour
    assert p.shape == (96, 2)
    assert np.all(p[(local_hours < 4) | (local_hours >= 20)] == 0.0)
    assert np.all(p <= [1000, 100]) and np.all(p >= 0)
    assert 11 <= local_hours[np.argmax(p[:, 0])] <= 13  # south-facing: peak around solar noon
    assert local_hours[np.argmax(p[:, 1])] < 11  # east-facing wall: morning peak
    assert 600 < p[:, 0].max() <= 1000


def test_mismatched_system_arrays_are_refused():
    with pytest.raises(ValueError, match="must be 1-d of equal length"):
        clear_sky_pv_kw(_day(), *SUZHOU, tilt_deg=[20, 30], azimuth_deg=[180], rated_kw=[10, 10])


def test_measured_ratio_ignores_dawn_and_missing_and_defaults_to_one():
    clear = np.array([[1.0, 0.0], [50.0, 0.0], [100.0, 0.0], [100.0, 0.0]])
    measured = np.array([[5.0, 0.0], [40.0, 0.0], [80.0, 0.0], [np.nan, 0.0]])
    ratio = measured_ratio(measured, clear)
    # Dawn (1 kW of a 100 kW peak) and the missing point are left out: (40 + 80) / (50 + 100).
    assert ratio[0] == pytest.approx(120 / 150)
    assert ratio[1] == 1.0
    assert np.allclose(pv_forecast_kw(clear, ratio)[:, 0], clear[:, 0] * 0.8)


def test_similar_day_load_averages_the_recent_days_of_the_same_type():
    history = np.zeros((1, 8, 4))
    types = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    for d in range(8):
        history[0, d] = d  # the load of day d is d everywhere
    history[0, 7, 2] = np.nan
    forecast = similar_day_load_kw(history, types, day_type=0, n_days=3)
    assert forecast[0, 0] == pytest.approx((5 + 6 + 7) / 3)
    assert forecast[0, 2] == pytest.approx((5 + 6) / 2)  # the missing interval is not counted as zero
    assert similar_day_load_kw(history, types, day_type=1, n_days=5)[0, 0] == pytest.approx(3.5)
    assert similar_day_load_kw(history, types, day_type=2, n_days=2)[0, 0] == pytest.approx(6.5)


def test_error_measures():
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    assert mape([110, 0, 45], [100, 0, 50], min_actual=1) == pytest.approx((0.1 + 0.1) / 2)
    assert np.isnan(mape([1], [0], min_actual=1))


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, (6, 3), elements=st.floats(0, 500)),
    arrays(np.float64, (6, 3), elements=st.floats(0, 500)),
)
def test_ratio_stays_in_its_bounds_and_forecast_is_non_negative(measured, clear):
    ratio = measured_ratio(measured, clear)
    assert np.all((ratio >= 0) & (ratio <= 1.2))
    assert np.all(pv_forecast_kw(clear, ratio) >= 0)
