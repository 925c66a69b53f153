"""Live plant state from devices and telemetry."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from vpp.aggregator import build_snapshot, device_rows, plant_state, sustained_headroom_kw
from vpp.model import PV, Battery, InterruptibleLoad, TelemetrySample

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)  # 12:00 in Shanghai


def _sample(device_id, p, lo, hi, age_s=1.0, soc=None, online=True):
    return TelemetrySample(
        device_id=device_id, ts=NOW - timedelta(seconds=age_s), p_kw=p, p_min_kw=lo, p_max_kw=hi, soc_kwh=soc, online=online
    )


@pytest.fixture
def fleet():
    devices = [
        Battery(id="bat", enterprise_id="e1", rated_kw=100, capacity_kwh=200, soc_min_kwh=20, charge_efficiency=0.9, discharge_efficiency=0.9),
        PV(id="pv", enterprise_id="e1", rated_kw=300),
        InterruptibleLoad(id="load", enterprise_id="e2", rated_kw=500, max_curtail_kw=200, max_interruption_min=30),
        InterruptibleLoad(id="lunch", enterprise_id="e2", rated_kw=50, max_curtail_kw=50,
                          protected_hours=[{"start_hour": 11, "end_hour": 13}]),
        PV(id="silent", enterprise_id="e3", rated_kw=100),
    ]
    latest = {
        "bat": _sample("bat", 0.0, -100, 100, soc=110),
        "pv": _sample("pv", 250, 0, 250),
        "load": _sample("load", -400, -400, -200),
        "lunch": _sample("lunch", -50, -50, 0),
    }
    return devices, latest


def test_totals_count_only_fresh_devices_and_protected_ones_offer_nothing(fleet):
    devices, latest = fleet
    snap = build_snapshot(devices, latest, NOW, stale_after_s=10, local_zone=SHANGHAI)
    state = plant_state(snap)
    assert state["devices_enrolled"] == 5 and state["devices_online"] == 4 and state["devices_stale"] == 1
    assert state["net_kw"] == pytest.approx(0 + 250 - 400 - 50)
    # Up: battery 100, PV 0 (at its potential), load 200; the protected load none.
    assert state["available_up_kw"] == pytest.approx(300)
    # Down: battery charge 100, PV curtail 250, load cannot rise.
    assert state["available_down_kw"] == pytest.approx(350)
    assert state["devices_protected_now"] == 1


def test_stale_or_offline_telemetry_marks_a_device_unavailable(fleet):
    devices, latest = fleet
    latest = {**latest, "pv": _sample("pv", 250, 0, 250, age_s=30), "load": _sample("load", -400, -400, -200, online=False)}
    snap = build_snapshot(devices, latest, NOW, stale_after_s=10, local_zone=SHANGHAI)
    assert list(snap.fresh) == [True, False, False, True, False]
    assert plant_state(snap)["available_up_kw"] == pytest.approx(100)


def test_sustained_headroom_is_limited_by_battery_energy_and_interruption_length(fleet):
    devices, latest = fleet
    snap = build_snapshot(devices, latest, NOW, stale_after_s=10, local_zone=SHANGHAI)
    up_1h, down_1h = sustained_headroom_kw(snap, 1.0)
    # Battery: (110 - 20) kWh * 0.9 = 81 kWh over 1 h; charging (200 - 110) / 0.9 = 100 kWh.
    assert up_1h[0] == pytest.approx(81.0)
    assert down_1h[0] == pytest.approx(100.0)
    # The load accepts at most 30 minutes of interruption: nothing for an hour, all of it for 15 minutes.
    assert up_1h[2] == 0.0
    up_15, _ = sustained_headroom_kw(snap, 0.25)
    assert up_15[2] == pytest.approx(200.0)
    assert np.all(up_1h >= 0) and np.all(down_1h >= 0)


def test_device_rows_carry_live_values(fleet):
    devices, latest = fleet
    rows = device_rows(build_snapshot(devices, latest, NOW, stale_after_s=10, local_zone=SHANGHAI))
    by_id = {row["device_id"]: row for row in rows}
    assert by_id["bat"]["soc_kwh"] == 110 and by_id["pv"]["soc_kwh"] is None
    assert by_id["silent"]["online"] is False and by_id["silent"]["last_seen"] is None
    assert by_id["lunch"]["protected_now"] is True
