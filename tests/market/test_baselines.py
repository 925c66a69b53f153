"""Customer baselines computed by hand on small known series.

The fixture park: 28 local days from Monday 2026-06-01 (day index d, weekday
d % 7, weekends d = 5, 6, 12, 13, 19, 20, 26, 27); each day's load is flat at
100 + d kW unless a test changes it, so an average of days is easy to do by
hand. The event is on Tuesday day 22 (2026-06-23), 10:00-12:00 (intervals 40-48).
"""

from __future__ import annotations

import numpy as np
import pytest

from market.baselines import (
    BeijingHighest,
    DayCalendar,
    EventWindow,
    JiangsuAverage,
    JiangsuRealTime,
    PjmHighFourOfFive,
    PjmSameDay,
    TenInTen,
    customer_baselines,
    to_day_grid,
)

DAYS = 28
FIRST = np.datetime64("2026-06-01")
EVENT = EventWindow(FIRST + 22, 40, 48)


def day(d: int) -> np.datetime64:
    return FIRST + d


def flat_load(enterprises: int = 1) -> np.ndarray:
    """Load (E, 28, 96), each day flat at 100 + d kW."""
    return np.broadcast_to(100.0 + np.arange(DAYS)[None, :, None], (enterprises, DAYS, 96)).copy()


def calendar(**kwargs) -> DayCalendar:
    return DayCalendar.build(FIRST + np.arange(DAYS), **kwargs)


def one(method, load, cal, event=EVENT, **kwargs):
    (result,) = customer_baselines(method, load, cal, [event], **kwargs)
    return result


# ------------------------------------------------------------- calendar ----


def test_day_kinds_follow_weekends_holidays_and_make_up_working_days():
    cal = calendar(holidays=[day(2)], extra_working_days=[day(5)])
    kinds = cal.day_kind()
    assert kinds[:8].tolist() == [0, 0, 2, 0, 0, 0, 2, 0]  # Wed holiday; Sat worked; Sun rest


def test_dates_must_be_consecutive():
    with pytest.raises(ValueError, match="consecutive"):
        DayCalendar.build([FIRST, FIRST + 2])


def test_event_window_refuses_crossing_midnight():
    with pytest.raises(ValueError, match="split events"):
        EventWindow(FIRST, 90, 97)


def test_load_shape_must_match_the_calendar():
    with pytest.raises(ValueError, match="expected"):
        customer_baselines(JiangsuAverage(), np.zeros((1, 3, 96)), calendar(), [EVENT])


# -------------------------------------------------------------- Jiangsu ----


def test_jiangsu_average_of_the_five_most_recent_working_days_before_the_invitation():
    # Invitation the day before (day 21): working days 18, 17, 16, 15, 14 -> 100 + 16.
    result = one(JiangsuAverage(), flat_load(), calendar())
    assert result.days_used[0].tolist() == [18, 17, 16, 15, 14]
    np.testing.assert_allclose(result.baseline_kw, 116.0)
    assert result.available.tolist() == [True] and result.reasons == ("",)


def test_jiangsu_excludes_holidays_event_days_and_days_with_missing_data():
    load = flat_load()
    load[0, 17, 3] = np.nan
    result = one(JiangsuAverage(), load, calendar(holidays=[day(16)], event_dates=[day(15)]))
    # 18 ok, 17 missing, 16 holiday, 15 event, 14 ok, 13/12 weekend, 11 10 9 ok.
    assert result.days_used[0].tolist() == [18, 14, 11, 10, 9]
    np.testing.assert_allclose(result.baseline_kw, 100.0 + (18 + 14 + 11 + 10 + 9) / 5)
    assert result.missing_intervals.tolist() == [[0, 17, 3]]
    assert not np.isnan(result.baseline_kw).any()


def test_jiangsu_counts_from_an_explicit_invitation_date():
    event = EventWindow(day(22), 40, 48, invitation_date=day(18))
    result = one(JiangsuAverage(), flat_load(), calendar(), event)
    assert result.days_used[0].tolist() == [17, 16, 15, 14, 11]


def test_jiangsu_says_so_when_there_are_not_enough_days():
    result = one(JiangsuAverage(max_lookback_days=4), flat_load(), calendar())
    assert result.available.tolist() == [False]
    assert "only 2 of the 5" in result.reasons[0]  # days 17-20 searched: 17, 18 are working days
    assert np.isnan(result.baseline_kw).all()


def test_jiangsu_real_time_is_the_interval_before_control_held_flat():
    load = flat_load()
    load[0, 22, 39] = 77.0
    result = one(JiangsuRealTime(), load, calendar())
    np.testing.assert_allclose(result.baseline_kw, np.full((1, 8), 77.0))
    # An event at 00:00 takes the previous day's last interval.
    midnight = one(JiangsuRealTime(), load, calendar(), EventWindow(day(22), 0, 4))
    np.testing.assert_allclose(midnight.baseline_kw, 121.0)


def test_jiangsu_real_time_missing_point_is_reported_not_filled():
    load = flat_load(2)
    load[1, 22, 39] = np.nan
    result = one(JiangsuRealTime(), load, calendar())
    assert result.available.tolist() == [True, False]
    assert "missing" in result.reasons[1]
    assert result.missing_intervals.tolist() == [[1, 22, 39]]


# -------------------------------------------------------------- Beijing ----


def test_beijing_five_highest_peaks_among_ten_normal_days_from_two_days_before():
    load = flat_load()
    load[0, 8, 0] = 200.0  # a short spike: highest peak, but little energy
    result = one(BeijingHighest(), load, calendar())
    # Normal days <= day 20: 18 17 16 15 14 11 10 9 8 7; by peak: 8 (200), 18, 17, 16, 15.
    assert sorted(result.days_used[0].tolist()) == [8, 15, 16, 17, 18]
    np.testing.assert_allclose(result.baseline_kw, 100.0 + (8 + 18 + 17 + 16 + 15) / 5)
    by_energy = one(BeijingHighest(rank_by="energy"), load, calendar())
    assert sorted(by_energy.days_used[0].tolist()) == [14, 15, 16, 17, 18]
    np.testing.assert_allclose(by_energy.baseline_kw, 116.0)


def test_beijing_replaces_weekends_holidays_and_event_days_by_earlier_normal_days():
    result = one(BeijingHighest(rank_by="energy"), flat_load(), calendar(holidays=[day(18)], event_dates=[day(17)]))
    # Window now 16 15 14 11 10 9 8 7 4 3 -> five highest: 16 15 14 11 10.
    assert sorted(result.days_used[0].tolist()) == [10, 11, 14, 15, 16]
    np.testing.assert_allclose(result.baseline_kw, 100.0 + (16 + 15 + 14 + 11 + 10) / 5)


def test_beijing_needs_ten_normal_days():
    result = one(BeijingHighest(), flat_load(), calendar(), EventWindow(day(9), 40, 48))
    assert result.available.tolist() == [False]
    assert "only 6 of the 10" in result.reasons[0]


# ------------------------------------------------------------------ PJM ----


def test_pjm_high_four_of_five_without_adjustment():
    # Weekdays before day 22: 21 18 17 16 15; drop the lowest (15).
    result = one(PjmHighFourOfFive(adjustment=False), flat_load(), calendar())
    assert result.days_used[0].tolist() == [21, 18, 17, 16]
    np.testing.assert_allclose(result.baseline_kw, 100.0 + (21 + 18 + 17 + 16) / 4)


def test_pjm_low_usage_day_is_replaced_by_the_next_older_day():
    load = flat_load()
    load[0, 17] = 10.0  # 10 < 25% of the five days' mean (96)
    result = one(PjmHighFourOfFive(adjustment=False), load, calendar())
    # Candidates become 21 18 16 15 14; highest four 21 18 16 15.
    assert result.days_used[0].tolist() == [21, 18, 16, 15]
    np.testing.assert_allclose(result.baseline_kw, 117.5)


def test_pjm_symmetric_additive_adjustment_and_its_cap():
    load = flat_load()
    load[0, 21] = 121.0
    load[0, 22, 24:36] = 130.0 + 0.0  # 06:00-09:00: the 3 h ending 1 h before the 10:00 start
    load[0, 22, 36:40] = 500.0  # the skipped hour does not count
    result = one(PjmHighFourOfFive(), load, calendar())
    assert result.adjustment_kw.tolist() == pytest.approx([130.0 - 118.0])
    np.testing.assert_allclose(result.baseline_kw, 130.0)
    capped = one(PjmHighFourOfFive(adjustment_cap_fraction=0.05), load, calendar())
    np.testing.assert_allclose(capped.baseline_kw, 118.0 * 1.05)
    load[0, 22, 24:36] = 100.0  # symmetric: adjusts downward too
    down = one(PjmHighFourOfFive(), load, calendar())
    np.testing.assert_allclose(down.baseline_kw, 100.0)


def test_pjm_missing_adjustment_window_makes_the_baseline_unavailable():
    load = flat_load()
    load[0, 22, 30] = np.nan
    result = one(PjmHighFourOfFive(), load, calendar())
    assert result.available.tolist() == [False]
    assert "adjustment window" in result.reasons[0]
    assert [0, 22, 30] in result.missing_intervals.tolist()


def test_pjm_rest_day_events_use_high_two_of_three_like_days():
    sunday = EventWindow(day(27), 40, 48)
    result = one(PjmHighFourOfFive(adjustment=False), flat_load(), calendar(), sunday)
    assert result.days_used[0].tolist() == [20, 13]  # Sundays 20, 13, 6 -> highest two
    np.testing.assert_allclose(result.baseline_kw, 116.5)
    saturday = one(PjmHighFourOfFive(adjustment=False), flat_load(), calendar(), EventWindow(day(19), 40, 48))
    assert "only 2 of the 3" in saturday.reasons[0]


def test_pjm_same_day_three_plus_two():
    # Event hours ending 13-17 (12:00-17:00) -> hours ending 9-11 and 19-20.
    load = flat_load()
    load[0, 22, 32:44] = 90.0
    load[0, 22, 44:48] = 999.0  # skipped hour before
    load[0, 22, 68:72] = 999.0  # skipped hour after
    load[0, 22, 72:80] = 60.0
    result = one(PjmSameDay(), load, calendar(), EventWindow(day(22), 48, 68))
    np.testing.assert_allclose(result.baseline_kw, np.full((1, 20), (12 * 90.0 + 8 * 60.0) / 20))


def test_pjm_same_day_after_window_beyond_the_data_is_unavailable():
    result = one(PjmSameDay(), flat_load(), calendar(), EventWindow(day(27), 80, 96))
    assert result.available.tolist() == [False]
    assert "outside the data" in result.reasons[0]


# ----------------------------------------------------------- 10-in-10 ----


def test_ten_in_ten_with_capped_multiplicative_adjustment():
    load = flat_load()
    mean = 100.0 + (21 + 18 + 17 + 16 + 15 + 14 + 11 + 10 + 9 + 8) / 10  # 113.9
    load[0, 22, 24:36] = 150.0
    result = one(TenInTen(), load, calendar())
    assert result.days_used[0].tolist() == [21, 18, 17, 16, 15, 14, 11, 10, 9, 8]
    assert result.adjustment_ratio.tolist() == pytest.approx([1.2])  # 1.317 capped at +20%
    np.testing.assert_allclose(result.baseline_kw, mean * 1.2)
    load[0, 22, 24:36] = mean * 0.9
    inside = one(TenInTen(), load, calendar())
    np.testing.assert_allclose(inside.baseline_kw, mean * 0.9)
    wider = one(TenInTen(adjustment_cap_fraction=0.5), load, calendar())
    assert wider.adjustment_ratio.tolist() == pytest.approx([0.9])


def test_ten_in_ten_additive_and_uncapped_variants():
    load = flat_load()
    mean = 113.9
    load[0, 22, 24:36] = 150.0
    additive = one(TenInTen(adjustment="additive"), load, calendar())
    np.testing.assert_allclose(additive.baseline_kw, mean + 0.2 * mean)
    uncapped = one(TenInTen(adjustment="additive", adjustment_cap_fraction=None), load, calendar())
    np.testing.assert_allclose(uncapped.baseline_kw, 150.0)
    none = one(TenInTen(adjustment="none"), load, calendar())
    np.testing.assert_allclose(none.baseline_kw, mean)


def test_ten_in_ten_per_enterprise_exclusions():
    excluded = np.zeros((2, DAYS), dtype=bool)
    excluded[1, 21] = True  # e.g. the enterprise's own outage
    result = one(TenInTen(adjustment="none"), flat_load(2), calendar(), excluded_days=excluded)
    assert result.days_used[0, 0] == 21 and result.days_used[1].tolist() == [18, 17, 16, 15, 14, 11, 10, 9, 8, 7]
    np.testing.assert_allclose(result.baseline_kw[1], 100.0 + (18 + 17 + 16 + 15 + 14 + 11 + 10 + 9 + 8 + 7) / 10)


def test_every_method_is_vectorised_over_enterprises():
    rng = np.random.default_rng(3)
    load = rng.uniform(10, 100, (6, DAYS, 96))
    methods = [JiangsuAverage(), JiangsuRealTime(), BeijingHighest(), PjmHighFourOfFive(), PjmSameDay(), TenInTen()]
    for method in methods:
        whole = one(method, load, calendar())
        for e in range(6):
            single = one(method, load[e : e + 1], calendar())
            np.testing.assert_allclose(whole.baseline_kw[e], single.baseline_kw[0])


# --------------------------------------------------------------- grid ----


def test_to_day_grid_places_utc_intervals_on_local_days_and_leaves_gaps_missing():
    starts = np.array(["2026-06-01T16:00", "2026-06-01T16:15", "2026-06-02T15:45"], dtype="datetime64[m]")
    dates, grid = to_day_grid(starts, np.array([[1.0, 2.0, 3.0]]))
    assert dates.tolist() == [np.datetime64("2026-06-02").item()]
    assert grid.shape == (1, 1, 96)
    assert grid[0, 0, :2].tolist() == [1.0, 2.0] and grid[0, 0, 95] == 3.0
    assert np.isnan(grid[0, 0, 2:95]).all()


def test_to_day_grid_refuses_duplicates_and_unaligned_starts():
    with pytest.raises(ValueError, match="same local quarter hour"):
        to_day_grid(np.array(["2026-06-01T16:00"] * 2, dtype="datetime64[m]"), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="quarter hour"):
        to_day_grid(np.array(["2026-06-01T16:05"], dtype="datetime64[m]"), np.zeros((1, 1)))
