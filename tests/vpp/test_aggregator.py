"""Live plant state from devices and telemetry."""

from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpp.aggregator import (
    FleetSnapshot,
    FleetStatics,
    SnapshotCache,
    build_snapshot,
    device_rows,
    plant_state,
    snapshot_from_statics,
    sustained_headroom_kw,
)
from vpp.model import (
    PV,
    Battery,
    EvCharger,
    InterruptibleLoad,
    ShiftableLoad,
    TelemetrySample,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 7, 1, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


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


# -- the vectorised snapshot against a plain per-device loop --------------------------------------------------

ZONES = [ZoneInfo("Asia/Shanghai"), ZoneInfo("UTC"), ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")]


def reference_snapshot(devices, latest, now, stale_after_s, local_zone) -> FleetSnapshot:
    """The aggregator as it was: one Python pass over the devices per call (the meaning the fast path must keep)."""
    n = len(devices)
    local_hour = now.astimezone(local_zone).hour
    p, lo, hi = np.zeros(n), np.zeros(n), np.zeros(n)
    soc, soc_min, soc_max = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    eta_c, eta_d, ramp, cost = np.ones(n), np.ones(n), np.full(n, np.inf), np.zeros(n)
    max_int, notice, events = np.full(n, np.inf), np.zeros(n), np.full(n, np.inf)
    fresh, protected, last_seen = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), []
    for i, device in enumerate(devices):
        sample = latest.get(device.id)
        last_seen.append(sample.ts if sample else None)
        if sample is not None:
            p[i], lo[i], hi[i] = sample.p_kw, sample.p_min_kw, sample.p_max_kw
            fresh[i] = sample.online and (now - sample.ts).total_seconds() <= stale_after_s
            if sample.soc_kwh is not None:
                soc[i] = sample.soc_kwh
        if isinstance(device, Battery):
            soc_min[i], soc_max[i] = device.soc_min_kwh, device.soc_upper_kwh
            eta_c[i], eta_d[i] = device.charge_efficiency, device.discharge_efficiency
        if device.ramp_kw_per_s is not None:
            ramp[i] = device.ramp_kw_per_s
        if device.max_interruption_min is not None:
            max_int[i] = device.max_interruption_min / 60.0
        if device.max_events_per_day is not None:
            events[i] = device.max_events_per_day
        notice[i] = device.notice_min / 60.0
        cost[i] = device.marginal_cost_cny_per_kwh
        protected[i] = device.is_protected(local_hour)
    return FleetSnapshot(
        ts=now, device_ids=tuple(d.id for d in devices), enterprise_ids=tuple(d.enterprise_id for d in devices),
        kinds=tuple(str(d.kind) for d in devices), adapters=tuple(d.adapter for d in devices),
        p_kw=p, p_min_kw=lo, p_max_kw=hi, soc_kwh=soc, soc_min_kwh=soc_min, soc_max_kwh=soc_max,
        charge_efficiency=eta_c, discharge_efficiency=eta_d, ramp_kw_per_s=ramp, cost_cny_per_kwh=cost,
        max_interruption_h=max_int, notice_h=notice, max_events_per_day=events, fresh=fresh, protected=protected,
        last_seen=tuple(last_seen),
    )


def assert_same_snapshot(fast: FleetSnapshot, slow: FleetSnapshot) -> None:
    for f in dataclass_fields(FleetSnapshot):
        a, b = getattr(fast, f.name), getattr(slow, f.name)
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, f.name
            np.testing.assert_array_equal(a, b, err_msg=f.name)  # NaN == NaN here, bit for bit otherwise
        else:
            assert a == b, f.name


def maybe(strategy):
    """The strategy's values or None (an optional enrolment limit)."""
    return st.none() | strategy


@st.composite
def fleets(draw):
    """A random fleet of every device kind, optional limits set or not, and telemetry of mixed age and state."""
    n = draw(st.integers(0, 25))
    hours = st.lists(
        st.tuples(st.integers(0, 23), st.integers(1, 24)).filter(lambda r: r[0] < r[1]).map(
            lambda r: {"start_hour": r[0], "end_hour": r[1]}
        ),
        max_size=3,
    )
    devices = []
    for i in range(n):
        common = {
            "id": f"d{i}",
            "enterprise_id": f"e{draw(st.integers(0, 3))}",
            "rated_kw": 100.0,
            "ramp_kw_per_s": draw(maybe(st.floats(0.1, 50))),
            "protected_hours": draw(hours),
            "max_interruption_min": draw(maybe(st.floats(1, 600))),
            "notice_min": draw(st.sampled_from([0.0, 5.0, 17.3])),
            "max_events_per_day": draw(maybe(st.integers(1, 5))),
            "marginal_cost_cny_per_kwh": draw(st.floats(0, 3)),
            "adapter": draw(st.sampled_from(["simulator", "mqtt"])),
        }
        kind = draw(st.sampled_from(["battery", "pv", "interruptible", "shiftable", "ev"]))
        if kind == "battery":
            devices.append(Battery(**common, capacity_kwh=200, soc_min_kwh=draw(st.floats(0, 50)),
                                   soc_max_kwh=draw(maybe(st.floats(60, 200))),
                                   charge_efficiency=draw(st.floats(0.5, 1)), discharge_efficiency=draw(st.floats(0.5, 1))))
        elif kind == "pv":
            devices.append(PV(**common))
        elif kind == "interruptible":
            devices.append(InterruptibleLoad(**common, max_curtail_kw=50))
        elif kind == "shiftable":
            devices.append(ShiftableLoad(**common, energy_per_day_kwh=100))
        else:
            devices.append(EvCharger(**common, ports=2))
    now = draw(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)))
    stale_after_s = draw(st.sampled_from([0.0, 0.3, 7.7, 10.0, 300.0]))  # 0.3 and 7.7 are not exact in binary
    # Ages on, just either side of, and far from the staleness limit; a few microseconds matter.
    age_us = st.sampled_from([0, 1, -1]).map(lambda d: round(stale_after_s * 1e6) + d) | st.integers(-5_000_000, 900_000_000)
    latest = {}
    for device in devices:
        if draw(st.booleans()) and draw(st.booleans()):
            continue  # never reported
        lo = draw(st.floats(-100, 0))
        latest[device.id] = TelemetrySample(
            device_id=device.id, ts=now - timedelta(microseconds=draw(age_us)), p_kw=draw(st.floats(-100, 100)),
            p_min_kw=lo, p_max_kw=lo + draw(st.floats(0, 100)), soc_kwh=draw(maybe(st.floats(0, 200))),
            online=draw(st.booleans()),
        )
    if draw(st.booleans()):
        latest["not-enrolled"] = _sample("not-enrolled", 1.0, 0.0, 2.0)  # telemetry of a device not in the list
    return devices, latest, now, stale_after_s, draw(st.sampled_from(ZONES))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_fast_snapshot_equals_the_per_device_loop(case):
    devices, latest, now, stale_after_s, zone = case
    assert_same_snapshot(build_snapshot(devices, latest, now, stale_after_s, zone),
                         reference_snapshot(devices, latest, now, stale_after_s, zone))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.integers(0, 23))
def test_a_cached_fleet_gives_the_same_snapshot_at_every_local_hour(case, hours_later):
    devices, latest, now, stale_after_s, zone = case
    cache = SnapshotCache()
    later = now + timedelta(hours=hours_later)
    cache.build(devices, latest, now, stale_after_s, zone)  # fills the cache
    assert_same_snapshot(cache.build(devices, latest, later, stale_after_s, zone),
                         reference_snapshot(devices, latest, later, stale_after_s, zone))


def test_the_cache_rebuilds_when_the_fleet_changes_and_snapshots_do_not_share_arrays(fleet):
    devices, latest = fleet
    cache = SnapshotCache()
    first = cache.build(devices, latest, NOW, 10, SHANGHAI)
    statics = cache.statics(devices)
    assert cache.statics(list(devices)) is statics  # same devices in a new list: kept
    first.cost_cny_per_kwh[:] = 99.0  # a caller scribbling on one snapshot must not reach the next
    again = cache.build(devices, latest, NOW, 10, SHANGHAI)
    assert_same_snapshot(again, reference_snapshot(devices, latest, NOW, 10, SHANGHAI))
    changed = [*devices[:1], devices[1].model_copy(update={"marginal_cost_cny_per_kwh": 2.5}), *devices[2:]]
    rebuilt = cache.build(changed, latest, NOW, 10, SHANGHAI)
    assert cache.statics(changed) is not statics and rebuilt.cost_cny_per_kwh[1] == 2.5
    shorter = cache.build(devices[:2], latest, NOW, 10, SHANGHAI)
    assert shorter.device_ids == ("bat", "pv")


def test_statics_hold_the_protected_hours_by_local_hour(fleet):
    devices, _ = fleet
    statics = FleetStatics.of(devices)
    lunch = statics.device_ids.index("lunch")
    assert [h for h in range(24) if statics.protected_by_hour[h, lunch]] == [11, 12]
    assert not statics.protected_by_hour[:, statics.device_ids.index("bat")].any()


def test_a_naive_now_is_refused_with_its_value(fleet):
    devices, latest = fleet
    with pytest.raises(ValueError, match="has no timezone"):
        snapshot_from_statics(FleetStatics.of(devices), latest, NOW.replace(tzinfo=None), 10, SHANGHAI)
