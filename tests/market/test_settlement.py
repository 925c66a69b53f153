"""Performance, payment bands, penalties, fen-exact allocation and monthly statements, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from market.baselines import (
    DayCalendar,
    EventWindow,
    JiangsuAverage,
    JiangsuRealTime,
    customer_baselines,
)
from market.settlement import (
    DrEvent,
    PayBand,
    PaymentRule,
    Programme,
    allocate_fen,
    capacity_payment_fen,
    cny_to_fen,
    delivered_kwh,
    event_payment_cny,
    fen_to_cny_str,
    month_statement,
    settle_event,
    settle_events,
)

FIRST = np.datetime64("2026-06-01")
DAYS = 40  # 2026-06-01 .. 2026-07-10


# ---------------------------------------------------------- performance ----


def test_delivered_energy_signs_for_peak_shaving_and_valley_filling():
    baseline = np.array([[100.0, 100.0]])
    actual = np.array([[60.0, 120.0]])
    assert delivered_kwh(baseline, actual, "peak_shaving").tolist() == [[10.0, -5.0]]
    assert delivered_kwh(baseline, actual, "valley_filling").tolist() == [[-10.0, 5.0]]


def test_bands_no_pay_below_half_energy_between_capped_at_120_percent():
    rule = PaymentRule()
    delivered = np.array([39.0, 50.0, 80.0, 150.0])
    payment, _, ratio = event_payment_cny(delivered, 100.0, 1.0, 2.0, rule)
    assert ratio.tolist() == pytest.approx([0.39, 0.5, 0.8, 1.5])
    assert payment.tolist() == pytest.approx([0.0, 100.0, 160.0, 240.0])


def test_graded_bands_pick_the_highest_band_reached():
    rule = PaymentRule(bands=(PayBand(0.8, 1.0), PayBand(0.5, 0.8)), cap_ratio=1.0, penalty_threshold=None)
    payment, penalty, _ = event_payment_cny(np.array([40.0, 60.0, 90.0, 130.0]), 100.0, 1.0, 1.0, rule)
    assert payment.tolist() == pytest.approx([0.0, 48.0, 90.0, 100.0])
    assert penalty.tolist() == [0.0] * 4


def test_penalty_below_half_of_cleared_capacity():
    # Cleared 1000 kW for 2 h at 2 CNY/kWh; average delivered 300 kW:
    # (0.5 * 1000 - 300) kW * 2 CNY/kWh * 0.5 * 2 h = 400 CNY.
    _, penalty, _ = event_payment_cny(600.0, 2000.0, 2.0, 2.0, PaymentRule(), cleared_kw=1000.0)
    assert float(penalty) == pytest.approx(400.0)
    _, none, _ = event_payment_cny(1200.0, 2000.0, 2.0, 2.0, PaymentRule(), cleared_kw=1000.0)
    assert float(none) == 0.0


def test_nothing_requested_pays_nothing_and_has_no_ratio():
    payment, penalty, ratio = event_payment_cny(50.0, 0.0, 1.0, 2.0, PaymentRule())
    assert float(payment) == 0.0 and float(penalty) == 0.0 and np.isnan(ratio)


# --------------------------------------------------------------- money ----


def test_rounding_to_fen_half_away_from_zero_and_formatting():
    assert cny_to_fen(np.array([0.125, -0.125, 1.994, 2.0])).tolist() == [13, -13, 199, 200]
    assert fen_to_cny_str(12345) == "123.45" and fen_to_cny_str(-5) == "-0.05" and fen_to_cny_str(0) == "0.00"


def test_largest_remainder_by_hand():
    assert allocate_fen(100, np.array([1.0, 1.0, 1.0])).tolist() == [34, 33, 33]
    assert allocate_fen(10, np.array([0.5, 0.3, 0.2, 0.0])).tolist() == [5, 3, 2, 0]
    assert allocate_fen(7, np.array([1.0, 2.0, 4.0])).tolist() == [1, 2, 4]
    assert allocate_fen(5, np.array([1.0, 1.0])).tolist() == [3, 2]  # tie: lower index first
    assert allocate_fen(-101, np.array([1.0, 1.0])).tolist() == [-51, -50]
    assert allocate_fen(np.array([3, 4]), np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 3.0]])).tolist() == [[1, 1, 1], [0, 1, 3]]


def test_allocation_refuses_money_with_nobody_to_take_it():
    with pytest.raises(ValueError, match="all its weights are zero"):
        allocate_fen(1, np.zeros(3))
    with pytest.raises(ValueError, match=">= 0"):
        allocate_fen(1, np.array([1.0, -1.0]))
    assert allocate_fen(0, np.zeros(3)).tolist() == [0, 0, 0]


_weights = arrays(
    np.float64,
    st.integers(1, 12),
    elements=st.one_of(st.just(0.0), st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(-10**11, 10**11), _weights)
def test_allocation_adds_up_to_the_fen_and_respects_signs(total, weights):
    if weights.sum() == 0:
        weights = weights.copy()
        weights[0] = 1.0
    shares = allocate_fen(total, weights)
    assert shares.dtype == np.int64
    assert int(shares.sum()) == total
    assert ((shares * np.sign(total)) >= 0).all()
    assert (shares[weights == 0] == 0).all()
    exact = abs(total) * weights / weights.sum()
    assert (np.abs(np.abs(shares) - exact) < 1.0 + 1e-6 * abs(total)).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=5), st.integers(1, 8), st.data())
def test_vectorised_allocation_matches_row_by_row(totals, n, data):
    weights = np.array([data.draw(arrays(np.float64, n, elements=st.floats(0.1, 1000.0))) for _ in totals])
    together = allocate_fen(np.array(totals), weights)
    for row, total in enumerate(totals):
        assert together[row].tolist() == allocate_fen(total, weights[row]).tolist()
    assert together.sum(axis=1).tolist() == totals


def test_capacity_payment_by_committed_capacity():
    plant, shares = capacity_payment_fen(np.array([100.0, 200.0, 0.0]), 10.0, months=1.0)
    assert plant == 300_000 and shares.tolist() == [100_000, 200_000, 0]


# ---------------------------------------------------------- settlement ----


def park(enterprises: int = 3) -> tuple[np.ndarray, DayCalendar]:
    load = np.full((enterprises, DAYS, 96), 50.0)
    return load, DayCalendar.build(FIRST + np.arange(DAYS))


def event_day_load(load: np.ndarray, d: int, before_kw: list[float], during_kw: list[float]) -> None:
    load[:, d, 39] = before_kw  # the real-time baseline point
    load[:, d, 40:48] = np.array(during_kw)[:, None]


def test_event_revenue_goes_to_those_who_delivered():
    load, cal = park()
    event_day_load(load, 22, [100.0, 50.0, 40.0], [70.0, 40.0, 50.0])  # delivered 30, 10, -10 kW for 2 h
    event = DrEvent("ev1", "rt", EventWindow(FIRST + 22, 40, 48), "peak_shaving", 60.0, 2.0,
                    enterprise_requested_kw=np.array([30.0, 20.0, 10.0]))
    (baseline,) = customer_baselines(JiangsuRealTime(), load, cal, [event.window])
    result = settle_event(event, baseline, load, cal, PaymentRule())
    # Plant: 60 + 20 - 20 = 60 kWh of 120 requested: ratio 0.5, paid 60 kWh * 2 CNY = 120 CNY.
    assert result.delivered_kwh == pytest.approx(60.0) and result.ratio == pytest.approx(0.5)
    assert result.payment_fen == 12_000 and result.penalty_fen == 0
    assert result.enterprise_delivered_kwh.tolist() == pytest.approx([60.0, 20.0, -20.0])
    assert result.enterprise_payment_fen.tolist() == [9_000, 3_000, 0]
    assert result.enterprise_ratio.tolist() == pytest.approx([1.0, 0.5, -1.0])
    assert result.enterprise_baseline_kwh.tolist() == pytest.approx([200.0, 100.0, 80.0])


def test_unverified_enterprise_counts_zero_and_the_penalty_goes_to_the_shortfalls():
    load, cal = park()
    event_day_load(load, 22, [100.0, 50.0, 40.0], [70.0, 40.0, 50.0])
    load[1, 22, 44] = np.nan  # meter gap during the event
    event = DrEvent("ev1", "rt", EventWindow(FIRST + 22, 40, 48), "peak_shaving", 60.0, 2.0,
                    enterprise_requested_kw=np.array([30.0, 20.0, 10.0]))
    (baseline,) = customer_baselines(JiangsuRealTime(), load, cal, [event.window])
    result = settle_event(event, baseline, load, cal, PaymentRule())
    # Plant 60 - 20 = 40 kWh: ratio 1/3, no pay; penalty (30 - 20) kW * 2 * 0.5 * 2 h = 20 CNY.
    assert result.payment_fen == 0 and result.penalty_fen == 2_000
    assert result.verified.tolist() == [True, False, True]
    assert "meter intervals missing" in result.notes[1]
    assert result.missing_intervals.tolist() == [[1, 22, 44]]
    assert np.isnan(result.enterprise_actual_kwh[1])
    # Shortfalls against the shares: 0, 40, 40 kWh.
    assert result.enterprise_penalty_fen.tolist() == [0, 1_000, 1_000]


def test_valley_filling_and_request_split_by_capacity():
    load, cal = park(2)
    event_day_load(load, 22, [50.0, 50.0], [80.0, 60.0])  # raised 30 and 10 kW
    event = DrEvent("v1", "rt", EventWindow(FIRST + 22, 40, 48), "valley_filling", 40.0, 1.0)
    (baseline,) = customer_baselines(JiangsuRealTime(), load, cal, [event.window])
    result = settle_event(event, baseline, load, cal, PaymentRule(), capacity_kw=np.array([300.0, 100.0]))
    assert result.enterprise_requested_kwh.tolist() == pytest.approx([60.0, 20.0])
    assert result.delivered_kwh == pytest.approx(80.0) and result.payment_fen == 8_000
    assert result.enterprise_payment_fen.tolist() == [6_000, 2_000]


def test_settle_events_groups_by_programme_and_keeps_order():
    load, cal = park(2)
    event_day_load(load, 22, [100.0, 100.0], [80.0, 90.0])
    event_day_load(load, 23, [100.0, 100.0], [90.0, 90.0])
    programmes = {
        "a": Programme("a", JiangsuRealTime(), PaymentRule(energy_price_cny_per_kwh=1.0)),
        "b": Programme("b", JiangsuRealTime(), PaymentRule(energy_price_cny_per_kwh=3.0, penalty_threshold=None)),
    }
    events = [
        DrEvent("second", "b", EventWindow(FIRST + 23, 40, 48), "peak_shaving", 20.0),
        DrEvent("first", "a", EventWindow(FIRST + 22, 40, 48), "peak_shaving", 30.0),
    ]
    results = settle_events(events, programmes, load, cal)
    assert [r.event.id for r in results] == ["second", "first"]
    assert results[0].payment_fen == 40 * 300  # 40 kWh at 3 CNY/kWh
    assert results[1].payment_fen == 60 * 100  # 60 kWh of 60: ratio 1.0 at 1 CNY/kWh
    with pytest.raises(ValueError, match="unknown programme"):
        settle_events([DrEvent("x", "zzz", events[0].window, "peak_shaving", 1.0)], programmes, load, cal)


def test_settle_events_excludes_its_own_event_days_from_the_baselines():
    load, cal = park(1)
    load[0, 21] = 500.0  # Monday June 22 was itself an event day: its load must not enter the baseline
    programmes = {"j": Programme("j", JiangsuAverage(), PaymentRule(energy_price_cny_per_kwh=1.0))}
    events = [
        DrEvent("mon", "j", EventWindow(FIRST + 21, 40, 48), "peak_shaving", 10.0),
        DrEvent("wed", "j", EventWindow(FIRST + 23, 40, 48), "peak_shaving", 10.0),
    ]
    results = settle_events(events, programmes, load, cal)
    assert results[1].enterprise_baseline_kwh.tolist() == pytest.approx([50.0 * 2])


def test_month_statement_rows_and_totals():
    load, cal = park(2)
    event_day_load(load, 22, [100.0, 100.0], [80.0, 90.0])  # June 23
    event_day_load(load, 24, [100.0, 100.0], [90.0, 100.0])  # June 25
    event_day_load(load, 32, [100.0, 100.0], [50.0, 50.0])  # July 3: another month
    programmes = {"a": Programme("a", JiangsuRealTime(), PaymentRule(energy_price_cny_per_kwh=1.0))}
    windows = [EventWindow(FIRST + d, 40, 48) for d in (22, 24, 32)]
    events = [DrEvent(f"e{i}", "a", w, "peak_shaving", 30.0) for i, w in enumerate(windows)]
    results = settle_events(events, programmes, load, cal)
    rows = month_statement("2026-06", ["A", "B"], results, capacity_fen=np.array([500, 0]),
                           cost_fen=np.array([30, 70]), cost_note="regulation cost share")
    a_rows = [r for r in rows if r.enterprise_id == "A"]
    assert [r.kind for r in a_rows] == ["event", "event", "capacity", "cost", "total"]
    assert [r.event_id for r in a_rows[:2]] == ["e0", "e1"]
    total = a_rows[-1]
    assert total.events == 2
    assert total.delivered_kwh == pytest.approx(40.0 + 20.0)
    assert total.payment_fen == sum(r.payment_fen for r in a_rows[:2])
    assert total.net_fen == total.payment_fen + 500 - total.penalty_fen - 30
    b_total = [r for r in rows if r.enterprise_id == "B"][-1]
    assert [r.kind for r in rows if r.enterprise_id == "B"] == ["event", "event", "cost", "total"]
    # Event 0: 60 kWh of 60 paid 60 CNY: A delivered 40, B 20.
    assert a_rows[0].payment_fen == 4_000 and next(r for r in rows if r.enterprise_id == "B").payment_fen == 2_000
    assert a_rows[0].baseline_kwh == pytest.approx(200.0) and a_rows[0].actual_kwh == pytest.approx(160.0)
    assert b_total.net_fen == b_total.payment_fen - b_total.penalty_fen - 70
    # Shares of each event add up to the plant amounts.
    for result in results[:2]:
        assert sum(r.payment_fen for r in rows if r.event_id == result.event.id) == result.payment_fen
        assert sum(r.penalty_fen for r in rows if r.event_id == result.event.id) == result.penalty_fen
