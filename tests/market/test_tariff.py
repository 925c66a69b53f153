"""TOU tariffs across season boundaries and the local-time conversion; price CSV parsing and its errors."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.tariff import (
    PriceCsvError,
    TariffConfigError,
    default_tariff,
    default_tariff_config,
    load_price_csv_rows,
    local_time,
    tariff_from_dict,
    tou_period,
    tou_price,
)


def utc(*stamps: str) -> np.ndarray:
    return np.array(stamps, dtype="datetime64[m]")


def periods(tariff, stamps: np.ndarray, zone: str = "Asia/Shanghai") -> list[str]:
    return [tariff.period_names[i] for i in tou_period(tariff, stamps, zone)]


# ----------------------------------------------------------- local time ----


def test_utc_1600_is_midnight_in_shanghai_the_next_day():
    local = local_time(utc("2026-06-30T16:00", "2026-06-30T15:45"))
    assert local.astype("datetime64[m]").tolist() == [datetime(2026, 7, 1, 0, 0), datetime(2026, 6, 30, 23, 45)]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 3 * 365 * 96), st.sampled_from(["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]))
def test_local_time_matches_zoneinfo_across_daylight_saving(quarter, zone):
    stamp = np.datetime64("2025-01-01T00:00") + np.timedelta64(15 * quarter, "m")
    expected = datetime.fromtimestamp(int(stamp.astype("datetime64[s]").astype(np.int64)), tz=ZoneInfo(zone))
    got = local_time(np.array([stamp]), zone)[0].astype("datetime64[s]").item()
    assert got == expected.replace(tzinfo=None)


def test_local_time_keeps_the_shape_and_refuses_nat_and_non_dates():
    stamps = utc("2026-01-01T00:00", "2026-01-01T00:15", "2026-01-01T00:30", "2026-01-01T00:45").reshape(2, 2)
    assert local_time(stamps).shape == (2, 2)
    with pytest.raises(ValueError, match="NaT"):
        local_time(np.array(["NaT"], dtype="datetime64[m]"))
    with pytest.raises(TypeError, match="datetime64"):
        local_time(np.array([1.0]))


# -------------------------------------------------------- default tariff ----


def test_default_tariff_periods_and_prices_around_the_summer_boundary():
    tariff = default_tariff()
    stamps = utc(
        "2026-06-30T15:45",  # 23:45 Jun 30 local: shoulder, flat
        "2026-06-30T16:00",  # 00:00 Jul 1 local: summer, valley
        "2026-06-30T12:00",  # 20:00 Jun 30: shoulder, peak
        "2026-07-01T12:00",  # 20:00 Jul 1: summer, critical
        "2026-07-01T00:00",  # 08:00 Jul 1: peak
        "2026-08-31T16:00",  # 00:00 Sep 1: shoulder
    )
    assert periods(tariff, stamps) == ["flat", "valley", "peak", "critical", "peak", "valley"]
    assert tou_price(tariff, stamps).tolist() == pytest.approx([0.63, 0.26, 1.05, 1.26, 1.05, 0.26])


def test_default_tariff_winter_wraps_december_to_january():
    tariff = default_tariff()
    stamps = utc("2026-11-30T12:00", "2026-11-30T16:00", "2026-12-01T12:00", "2027-01-31T12:00", "2027-02-01T12:00")
    assert [tariff.season_names[tariff.season_of_month[m - 1]] for m in (11, 12, 1, 2)] == [
        "shoulder", "winter", "winter", "shoulder"
    ]
    assert periods(tariff, stamps) == ["peak", "valley", "critical", "critical", "peak"]


def test_tou_price_is_vectorised_and_keeps_the_shape():
    stamps = np.datetime64("2026-07-01T00:00") + np.arange(96 * 2).reshape(2, 96) * np.timedelta64(15, "m")
    price = tou_price(default_tariff(), stamps)
    assert price.shape == (2, 96)
    # 96 quarter hours from 08:00 local: each period's local span gets its price.
    assert price[0, :12].tolist() == [1.05] * 12  # 08:00-11:00 peak


# --------------------------------------------------------- custom config ----


def custom_config() -> dict:
    return {
        "name": "custom",
        "prices_cny_per_kwh": {"valley": 0.3, "flat": 0.6, "peak": 1.0},
        "seasons": [
            {
                "name": "winter",
                "months": [[11, 2]],
                "prices_cny_per_kwh": {"peak": 1.2},
                "periods": {"valley": [[22, 6]], "peak": [["06:00", "09:30"]], "flat": [["09:30", "22:00"]]},
            },
            {"name": "rest", "months": [[3, 10]], "periods": {"valley": [[0, 8]], "flat": [[8, 24]]}},
        ],
    }


def test_custom_tariff_with_wrapping_hours_months_and_season_prices():
    tariff = tariff_from_dict(custom_config())
    stamps = utc(
        "2026-02-28T13:45",  # 21:45 Feb 28: winter flat
        "2026-02-28T14:00",  # 22:00 Feb 28: winter valley (22-06 wraps)
        "2026-02-28T16:00",  # 00:00 Mar 1: rest valley
        "2026-11-01T01:15",  # 09:15 Nov 1: winter peak at the winter price
        "2026-11-01T01:30",  # 09:30: flat
    )
    assert periods(tariff, stamps) == ["flat", "valley", "valley", "peak", "flat"]
    assert tou_price(tariff, stamps).tolist() == pytest.approx([0.6, 0.3, 0.3, 1.2, 0.6])


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (lambda c: c["seasons"][1]["periods"]["flat"].__setitem__(0, [7, 24]), "seasons[1].periods.flat[0]", "07:00 is already in period 'valley'"),
        (lambda c: c["seasons"][1]["periods"]["flat"].__setitem__(0, [9, 24]), "seasons[1].periods", "08:00 local time belongs to no period"),
        (lambda c: c["seasons"][1].__setitem__("months", [[3, 9]]), "seasons", "month 10 belongs to no season"),
        (lambda c: c["seasons"][1].__setitem__("months", [[2, 10]]), "seasons[1].months", "month 2 is already in seasons[0]"),
        (lambda c: c["seasons"][0]["periods"]["peak"].__setitem__(0, ["06:00", "09:10"]), "seasons[0].periods.peak[0][1]", "quarter hour"),
        (lambda c: c["prices_cny_per_kwh"].pop("flat"), "seasons[0].periods.flat", "no price"),
        (lambda c: c["prices_cny_per_kwh"].__setitem__("flat", -1), "prices_cny_per_kwh.flat", ">= 0"),
        (lambda c: c.__setitem__("currency", "CNY"), "currency", "unknown key"),
        (lambda c: c["seasons"][0].__setitem__("months", [[13, 2]]), "seasons[0].months[0]", "not a month"),
        (lambda c: c.__setitem__("seasons", []), "seasons", "non-empty list"),
    ],
)
def test_config_errors_name_the_key(change, path, message):
    config = copy.deepcopy(custom_config())
    change(config)
    with pytest.raises(TariffConfigError, match=re.escape(message)) as caught:
        tariff_from_dict(config)
    assert caught.value.path == path


def test_default_config_is_a_fresh_plain_dict_each_time():
    first = default_tariff_config()
    first["seasons"].clear()
    assert default_tariff_config()["seasons"]
    assert default_tariff().name == "jiangsu-style-industrial-illustrative"


# ------------------------------------------------------------- price CSV ----


def test_price_csv_parses_sorts_and_converts_to_cny_per_mwh():
    rows = [
        "interval_start,price_cny_per_kwh,note\n",
        "2026-07-01T08:15:00+08:00,0.512,b\n",
        "\n",
        "2026-07-01T00:00:00Z,0.3,a\n",
    ]
    series = load_price_csv_rows(rows)
    assert series.interval_start_utc.tolist() == [
        datetime(2026, 7, 1, 0, 0), datetime(2026, 7, 1, 0, 15)
    ]
    assert series.price_cny_per_mwh.tolist() == pytest.approx([300.0, 512.0])
    assert series.interval_start_utc.dtype == np.dtype("datetime64[s]")


def test_price_csv_accepts_one_text_block():
    series = load_price_csv_rows("interval_start,price_cny_per_mwh\r\n2026-07-01T00:45:00+00:00,415.5\r\n")
    assert series.price_cny_per_mwh.tolist() == [415.5]
    assert series.interval_start_utc[0] == np.datetime64(datetime(2026, 7, 1, 0, 45, tzinfo=UTC).replace(tzinfo=None))


@pytest.mark.parametrize(
    ("rows", "line", "column", "message"),
    [
        (["interval_start,price_cny_per_mwh", "2026-07-01T00:00:00Z,abc"], 2, "price_cny_per_mwh", "not a number"),
        (["interval_start,price_cny_per_mwh", "2026-07-01T00:00:00Z,nan"], 2, "price_cny_per_mwh", "not a finite"),
        (["interval_start,price_cny_per_mwh", "2026-07-01T00:00:00Z,1", "2026-07-01T08:00:00,1"], 3, "interval_start", "no UTC offset"),
        (["interval_start,price_cny_per_mwh", "2026-07-01T00:10:00Z,1"], 2, "interval_start", "quarter hour"),
        (["interval_start,price_cny_per_mwh", "yesterday,1"], 2, "interval_start", "not an ISO 8601"),
        (["interval_start,price_cny_per_mwh", "2026-07-01T00:00:00Z,1", "", "2026-07-01T08:00:00+08:00,2"], 4, "interval_start", "repeats the interval of line 2"),
        (["interval_start,price_cny_per_mwh", "2026-07-01T00:00:00Z"], 2, None, "1 fields, the header has 2"),
        (["start,price_cny_per_mwh"], 1, None, "no 'interval_start' column"),
        (["interval_start,price_cny_per_mwh,price_cny_per_kwh"], 1, None, "exactly one of"),
        ([], 1, None, "empty file"),
    ],
)
def test_price_csv_errors_name_line_and_column(rows, line, column, message):
    with pytest.raises(PriceCsvError, match=message) as caught:
        load_price_csv_rows(rows)
    assert caught.value.line == line and caught.value.column == column
    assert str(caught.value).startswith(f"line {line}")
