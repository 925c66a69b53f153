"""Pure physics of the simulated park."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators import physics

LAT, LON = 31.3, 120.6  # Suzhou Industrial Park
TZ = "Asia/Shanghai"


def _local_day_utc(day: str) -> pd.DatetimeIndex:
    """One local day at 1-min resolution, as a UTC index."""
    start = pd.Timestamp(day, tz=TZ).tz_convert("UTC")
    return pd.date_range(start=start, periods=1441, freq="1min")


def _local_hours(times: pd.DatetimeIndex) -> np.ndarray:
    local = times.tz_convert(TZ)
    return np.asarray(local.hour + local.minute / 60.0)


# ------------------------------------------------------------------- PV ----


def test_pv_zero_at_night_and_peak_near_local_noon_below_rating():
    times = _local_day_utc("2026-06-21")
    poa = physics.clearsky_poa_w_per_m2(times, LAT, LON, [20.0], [180.0], altitude_m=5.0, linke_turbidity=3.5)
    p = physics.pv_ac_kw(poa, rated_kw=1000.0)[:, 0]
    hours = _local_hours(times)
    night = (hours < 4.5) | (hours > 19.5)
    assert np.all(p[night] == 0.0)
    assert np.all(p >= 0.0)
    peak_hour = hours[np.argmax(p)]
    assert 11.5 <= peak_hour <= 12.5
    assert 600.0 < p.max() < 1000.0


def test_pv_orientation_moves_the_peak():
    times = _local_day_utc("2026-03-20")
    poa = physics.clearsky_poa_w_per_m2(times, LAT, LON, [30.0, 30.0], [90.0, 270.0], linke_turbidity=3.0)
    hours = _local_hours(times)
    east_peak, west_peak = hours[np.argmax(poa, axis=0)]
    assert east_peak < 12.0 < west_peak


def test_pv_winter_day_is_shorter_than_summer_day():
    def daylight_minutes(day: str) -> int:
        poa = physics.clearsky_poa_w_per_m2(_local_day_utc(day), LAT, LON, [20.0], [180.0])
        return int(np.count_nonzero(poa[:, 0] > 0))

    assert daylight_minutes("2026-12-21") < daylight_minutes("2026-06-21") - 120


def test_pv_ac_kw_clips_at_rating_and_scales_with_clouds():
    p = physics.pv_ac_kw(np.array([0.0, 500.0, 1500.0]), 100.0, derate=0.85)
    assert p == pytest.approx([0.0, 42.5, 100.0])
    cloudy = physics.pv_ac_kw(np.array([500.0]), 100.0, derate=0.85, cloud_factor=0.5)
    assert cloudy == pytest.approx([21.25])


def test_cloud_factor_is_seeded_and_bounded():
    a = physics.cloud_factor(np.random.default_rng(3), 1441)
    b = physics.cloud_factor(np.random.default_rng(3), 1441)
    assert np.array_equal(a, b)
    assert a.min() >= 0.05 and a.max() <= 1.0


def test_linke_turbidity_is_interpolated_and_wraps_the_year():
    monthly = np.arange(1.0, 13.0)
    assert physics.linke_turbidity_for_day(monthly, 16) == pytest.approx(1.0)  # mid-January
    assert physics.linke_turbidity_for_day(monthly, 197) == pytest.approx(7.0)  # mid-July
    jan1 = physics.linke_turbidity_for_day(monthly, 1)
    dec31 = physics.linke_turbidity_for_day(monthly, 365)
    assert 1.0 < jan1 < 12.0 and 1.0 < dec31 < 12.0
    assert abs(jan1 - dec31) < 1.0


def test_monthly_linke_turbidity_of_suzhou_is_plausible():
    lt = physics.monthly_linke_turbidity(LAT, LON)
    assert lt.shape == (12,)
    assert np.all((lt > 1.5) & (lt < 7.0))


# ------------------------------------------------------------- battery ----

BAT = dict(soc_min_kwh=50.0, soc_max_kwh=950.0, rated_kw=500.0, charge_efficiency=0.9, discharge_efficiency=0.92)


def _run_battery(soc: float, p_kw: float, seconds: int, dt_s: float = 60.0) -> tuple[float, float]:
    """Hold p for ``seconds``; return (terminal energy [kWh, + out], final soc)."""
    terminal = 0.0
    s = np.array([soc])
    for _ in range(int(seconds / dt_s)):
        p, s = physics.battery_step(s, np.array([p_kw]), dt_s, **BAT)
        terminal += float(p[0]) * dt_s / 3600.0
    return terminal, float(s[0])


def test_battery_discharge_energy_balance():
    terminal, soc = _run_battery(500.0, 200.0, 3600)
    assert terminal == pytest.approx(200.0)
    taken_from_cells = 500.0 - soc
    assert terminal == pytest.approx(taken_from_cells * BAT["discharge_efficiency"])


def test_battery_charge_energy_balance():
    terminal, soc = _run_battery(500.0, -200.0, 3600)
    assert terminal == pytest.approx(-200.0)
    assert soc - 500.0 == pytest.approx(200.0 * BAT["charge_efficiency"])


def test_battery_power_is_curtailed_at_the_soc_limit():
    p, soc = physics.battery_step(np.array([55.0]), np.array([500.0]), 60.0, **BAT)
    # 5 kWh above the minimum can give at most 5 * 0.92 kWh in one minute.
    assert p[0] == pytest.approx(5.0 * 0.92 * 60.0)
    assert soc[0] == pytest.approx(50.0)
    p, soc = physics.battery_step(np.array([949.0]), np.array([-500.0]), 60.0, **BAT)
    assert p[0] == pytest.approx(-1.0 / 0.9 * 60.0)
    assert soc[0] == pytest.approx(950.0)


def test_battery_power_is_clipped_to_rating():
    p, _ = physics.battery_step(np.array([500.0]), np.array([900.0, -900.0]), 1.0, **BAT)
    assert p == pytest.approx([500.0, -500.0])


def test_battery_limits_follow_rating_and_soc():
    lo, hi = physics.battery_limits_kw(np.array([50.0, 500.0, 950.0]), 50.0, 950.0, 500.0, 0.9, 0.92)
    assert lo == pytest.approx([-500.0, -500.0, 0.0])
    assert hi == pytest.approx([0.0, 500.0, 500.0])
    # 1 kWh above the floor sustains 1 * 0.92 kWh over the 60 s horizon.
    _, hi = physics.battery_limits_kw(np.array([51.0]), 50.0, 950.0, 500.0, 0.9, 0.92)
    assert hi[0] == pytest.approx(0.92 * 60.0)


@settings(max_examples=25, deadline=None)
@given(
    soc0=st.floats(50.0, 950.0),
    steps=st.lists(st.tuples(st.floats(-2000.0, 2000.0), st.floats(0.1, 60.0)), min_size=1, max_size=200),
)
def test_battery_soc_stays_in_bounds_under_any_setpoints(soc0, steps):
    soc = np.array([soc0])
    for p_req, dt in steps:
        before = soc.copy()
        p, soc = physics.battery_step(soc, np.array([p_req]), dt, **BAT)
        assert BAT["soc_min_kwh"] - 1e-9 <= soc[0] <= BAT["soc_max_kwh"] + 1e-9
        assert abs(p[0]) <= BAT["rated_kw"] + 1e-9
        cell = (before[0] - soc[0]) * 3600.0 / dt  # power out of the cells [kW]
        expected = p[0] / BAT["discharge_efficiency"] if p[0] > 0 else p[0] * BAT["charge_efficiency"]
        assert cell == pytest.approx(expected, abs=1e-6)


# -------------------------------------------------------------- ramping ----


def test_ramp_toward_limits_the_change_per_step():
    p = physics.ramp_toward(np.array([0.0, 0.0, 10.0]), np.array([100.0, -100.0, 12.0]), np.array([5.0, 5.0, 5.0]), 2.0)
    assert p == pytest.approx([10.0, -10.0, 12.0])
    assert physics.ramp_toward(np.array([0.0]), np.array([1e6]), np.array([np.inf]), 1.0) == pytest.approx([1e6])


# --------------------------------------------------------------- loads ----


@pytest.mark.parametrize("pattern", physics.SHIFT_PATTERNS)
def test_load_shapes_are_fractions_and_weekends_lower(pattern):
    hours = np.linspace(0.0, 24.0, 1441)
    weekday = physics.load_shape(hours, pattern)
    weekend = physics.load_shape(hours, pattern, weekend=True, weekend_factor=0.5)
    assert np.all((weekday >= 0.0) & (weekday <= 1.0))
    assert weekend.sum() < weekday.sum()


def test_day_shift_load_is_high_by_day_low_at_night():
    shape = physics.load_shape(np.array([3.0, 10.0, 12.5, 15.0, 22.0]), "day_shift")
    assert shape[1] == 1.0 and shape[3] == 1.0
    assert shape[0] < 0.2 and shape[4] < 0.2
    assert shape[2] < shape[1]


def test_unknown_shift_pattern_is_rejected():
    with pytest.raises(ValueError, match="shift pattern"):
        physics.load_shape(np.array([1.0]), "four_shift")


def test_ar1_noise_is_seeded_with_the_requested_spread():
    a = physics.ar1_noise(np.random.default_rng(1), 20000, 0.05, tau_s=600.0)
    assert np.array_equal(a, physics.ar1_noise(np.random.default_rng(1), 20000, 0.05, tau_s=600.0))
    assert a.std() == pytest.approx(0.05, rel=0.25)
    assert abs(a.mean()) < 0.02


def test_interruptible_limits():
    lo, hi = physics.interruptible_limits_kw(np.array([300.0, 100.0]), np.array([200.0, 200.0]))
    assert lo == pytest.approx([-300.0, -100.0])
    assert hi == pytest.approx([-100.0, 0.0])


def test_shiftable_spreads_remaining_energy_over_the_window():
    lo, hi, nat = physics.shiftable_limits_kw(np.array([400.0]), np.array([4 * 3600.0]), np.array([200.0]))
    assert nat == pytest.approx([-100.0])
    assert lo == pytest.approx([-200.0])
    assert hi == pytest.approx([0.0])


def test_shiftable_must_run_when_the_deadline_forces_it():
    # 200 kWh left, 1 h left, rated 200 kW: it has to run flat out.
    lo, hi, nat = physics.shiftable_limits_kw(np.array([200.0]), np.array([3600.0]), np.array([200.0]))
    assert lo == pytest.approx([-200.0]) and hi == pytest.approx([-200.0]) and nat == pytest.approx([-200.0])
    # Half of that: it may pause, but not for the whole hour.
    lo, hi, nat = physics.shiftable_limits_kw(np.array([100.0]), np.array([3600.0]), np.array([200.0]))
    assert hi[0] == pytest.approx(0.0) and nat[0] == pytest.approx(-100.0)


def test_shiftable_outside_window_or_done_is_zero():
    lo, hi, nat = physics.shiftable_limits_kw(np.array([400.0, 0.0]), np.array([0.0, 3600.0]), np.array([200.0, 200.0]))
    assert lo == pytest.approx([0.0, 0.0]) and hi == pytest.approx([0.0, 0.0]) and nat == pytest.approx([0.0, 0.0])


@settings(max_examples=50, deadline=None)
@given(
    remaining=st.floats(0.0, 5000.0),
    left_s=st.floats(-10.0, 86400.0),
    rated=st.floats(1.0, 1000.0),
)
def test_shiftable_range_is_ordered_and_contains_natural(remaining, left_s, rated):
    lo, hi, nat = physics.shiftable_limits_kw(np.array([remaining]), np.array([left_s]), np.array([rated]))
    assert -rated - 1e-9 <= lo[0] <= nat[0] + 1e-9
    assert nat[0] <= hi[0] + 1e-9 <= 1e-9


# ------------------------------------------------------------------ EV ----


def test_ev_sessions_are_seeded_and_physical():
    args = (np.array([7.0, 120.0]), np.array([6, 2]), np.array([True, False]))
    a = physics.ev_sessions(np.random.default_rng(5), *args)
    b = physics.ev_sessions(np.random.default_rng(5), *args)
    for field in ("charger", "arrive_min", "depart_min", "cap_kw", "need_kwh", "v2g_kwh"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert len(a) > 0
    assert np.all(a.arrive_min < a.depart_min) and np.all(a.depart_min < 1440) and np.all(a.arrive_min >= 0)
    assert np.all(a.cap_kw <= np.array([7.0, 120.0])[a.charger] + 1e-9)
    assert np.all(a.need_kwh > 0)
    assert np.all(a.v2g_kwh[a.charger == 1] == 0.0)  # not bidirectional
    minutes = np.arange(1440)
    for c, ports in enumerate([6, 2]):
        mine = a.charger == c
        plugged = (a.arrive_min[mine][:, None] <= minutes) & (minutes < a.depart_min[mine][:, None])
        assert plugged.sum(axis=0).max() <= ports  # sessions never share a port


def test_ev_weekend_is_quieter():
    args = (np.full(10, 11.0), np.full(10, 4), np.zeros(10, dtype=bool))
    weekday = physics.ev_sessions(np.random.default_rng(2), *args)
    weekend = physics.ev_sessions(np.random.default_rng(2), *args, weekend=True)
    assert weekend.need_kwh.sum() < weekday.need_kwh.sum()


def test_ev_limits_and_allocation_share_power_within_caps():
    connected = np.array([True, True, False, True])
    cap = np.array([7.0, 11.0, 22.0, 50.0])
    remaining = np.array([20.0, 0.05, 30.0, 40.0])  # the second one is nearly full
    v2g = np.array([5.0, 5.0, 5.0, 0.0])
    charge, discharge = physics.ev_limits_kw(connected, cap, remaining, v2g)
    assert charge == pytest.approx([7.0, 0.05 * 60.0, 0.0, 50.0])
    assert discharge == pytest.approx([7.0, 11.0, 0.0, 0.0])
    charger = np.array([0, 0, 0, 1])
    # charger 0 asked for half its charging capability, charger 1 for all of it
    total0 = charge[:3].sum()
    into = physics.ev_allocate_kw(np.array([-total0 / 2.0, -50.0]), charger, charge, discharge)
    assert into[:3].sum() == pytest.approx(total0 / 2.0)
    assert into[3] == pytest.approx(50.0)
    assert np.all(into <= charge + 1e-9)
    # V2G: +9 kW from charger 0 is taken from the two connected vehicles
    into = physics.ev_allocate_kw(np.array([9.0, 0.0]), charger, charge, discharge)
    assert into.sum() == pytest.approx(-9.0)
    assert np.all(-into <= discharge + 1e-9)


def test_split_import_export():
    imp, exp = physics.split_import_export(np.array([-3.0, 0.0, 2.0]))
    assert imp == pytest.approx([3.0, 0.0, 0.0])
    assert exp == pytest.approx([0.0, 0.0, 2.0])
