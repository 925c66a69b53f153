"""Devices joining (or changing in) a running simulated park: ``SimulatedPark.add_device``."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from simulators.park import ParkSpec, build_park, generation_meter_id
from simulators.sim import SimulatedPark
from vpp.model import (
    PV,
    Battery,
    Device,
    EvCharger,
    InterruptibleLoad,
    MeterReading,
    Setpoint,
    ShiftableLoad,
    TelemetrySample,
)

UTC = timezone.utc
NOON = datetime(2026, 6, 16, 4, 0, tzinfo=UTC)  # 12:00 Asia/Shanghai, a Tuesday
MORNING = NOON - timedelta(hours=3)
NEXT_MIDNIGHT = datetime(2026, 6, 16, 16, 0, tzinfo=UTC)  # 00:00 local on Wednesday
SEED = 3


@pytest.fixture(scope="module")
def spec() -> ParkSpec:
    return build_park(seed=7)


def _without_pv(spec: ParkSpec) -> str:
    """An enterprise owning no PV (and so no generation meter)."""
    return next(e.id for e in spec.enterprises if not any(isinstance(d, PV) for d in spec.devices_of(e.id)))


def _owner_of(spec: ParkSpec, kind: type) -> str:
    return next(d.enterprise_id for d in spec.devices if isinstance(d, kind))


def _of(spec: ParkSpec, kind: type) -> Device:
    return next(d for d in spec.devices if isinstance(d, kind))


def _newcomers(spec: ParkSpec) -> list[Device]:
    """One new device of every kind, spread over several enterprises."""
    return [
        PV(id="new-pv", enterprise_id=_without_pv(spec), rated_kw=300.0, ramp_kw_per_s=30.0),
        InterruptibleLoad(id="new-load", enterprise_id="e01", rated_kw=400.0, max_curtail_kw=150.0),
        ShiftableLoad(
            id="new-shift",
            enterprise_id="e02",
            rated_kw=100.0,
            energy_per_day_kwh=400.0,
            window_start_hour=8,
            window_end_hour=20,
        ),
        EvCharger(id="new-ev", enterprise_id=_owner_of(spec, EvCharger), rated_kw=88.0, ports=4, bidirectional=True),
        Battery(id="new-bat", enterprise_id="e03", rated_kw=100.0, capacity_kwh=200.0, soc_min_kwh=20.0),
    ]


def _busy_park(spec: ParkSpec, clouds: bool = True) -> SimulatedPark:
    """A park three hours into a morning with a charging battery, a curtailed load and an offline device."""
    park = SimulatedPark(spec, MORNING, seed=SEED, clouds=clouds)
    bat = _of(spec, Battery)
    load = _of(spec, InterruptibleLoad)
    park.apply_setpoints(
        [
            Setpoint(device_id=bat.id, p_kw=-bat.rated_kw / 10, ts=MORNING),
            Setpoint(device_id=load.id, p_kw=park.limits_kw(load.id)[1], ts=MORNING),
        ]
    )
    park.set_online(_of(spec, ShiftableLoad).id, False)
    park.step(NOON - timedelta(seconds=17))  # off the minute grid on purpose
    return park


def _by_id(samples: list[TelemetrySample]) -> dict[str, TelemetrySample]:
    return {s.device_id: s for s in samples}


def _meters(park: SimulatedPark, when: datetime) -> dict[str, MeterReading]:
    return {m.meter_id: m for m in park.meter_readings(when)}


def _minutes(start: datetime, n: int) -> list[datetime]:
    return [start + timedelta(minutes=k) for k in range(1, n + 1)]


# ---------------------------------------------------------- joining ----


def test_pv_added_at_noon_generates_and_leaves_the_rest_of_the_park_alone(spec):
    with_pv, without = _busy_park(spec), _busy_park(spec)
    pv = _newcomers(spec)[0]
    with_pv.add_device(pv)
    assert with_pv.device_ids == [*without.device_ids, pv.id]
    assert generation_meter_id(pv.enterprise_id) in {m.id for m in with_pv.spec.meters}

    t = NOON + timedelta(minutes=1)
    after, reference = _by_id(with_pv.telemetry(t)), _by_id(without.telemetry(t))
    assert after[pv.id].p_kw > 0.0
    assert after[pv.id].p_kw <= after[pv.id].p_max_kw <= pv.rated_kw
    assert {k: v for k, v in after.items() if k != pv.id} == reference
    meters, reference_meters = _meters(with_pv, t), _meters(without, t)
    assert meters[generation_meter_id(pv.enterprise_id)].export_kwh > 0.0
    for mid, reading in reference_meters.items():
        if not mid.startswith(f"{pv.enterprise_id}-"):
            assert meters[mid] == reading, mid


def test_existing_device_profiles_are_unchanged_by_adding_others(spec):
    """Per-device random streams: a newcomer shifts nobody else's noise, sessions or clouds."""
    grown, reference = _busy_park(spec), _busy_park(spec)
    newcomers = _newcomers(spec)
    for device in newcomers:
        grown.add_device(device)
    new_ids = {d.id for d in newcomers}
    touched = {d.enterprise_id for d in newcomers}
    # At the same instant nothing has moved, not even the ranges reported.
    now = grown.now
    unmoved = {k: v for k, v in _by_id(grown.telemetry(now)).items() if k not in new_ids}
    assert unmoved == _by_id(reference.telemetry(now))
    for t in _minutes(NOON, 60):
        got, want = _by_id(grown.telemetry(t)), _by_id(reference.telemetry(t))
        assert {k: v for k, v in got.items() if k not in new_ids} == want, t
        meters, reference_meters = _meters(grown, t), _meters(reference, t)
        for mid, reading in reference_meters.items():
            if not any(mid.startswith(f"{eid}-") for eid in touched):
                assert meters[mid] == reading, (t, mid)
    assert all(new_id in got for new_id in new_ids)
    for device_id in reference.device_ids:
        assert grown.energy_kwh(device_id) == reference.energy_kwh(device_id)
        assert grown.is_online(device_id) == reference.is_online(device_id)
    ev = _of(spec, EvCharger).id
    for a, b in zip(grown.ev_session_energy_kwh(ev), reference.ev_session_energy_kwh(ev), strict=True):
        np.testing.assert_array_equal(a, b)
    assert grown.protected_violation_s() == reference.protected_violation_s()
    assert grown.base_load_kw() == reference.base_load_kw()


def test_device_profiles_do_not_depend_on_their_position_in_the_park(spec):
    """Streams are keyed by device id, not by position, so reordering the spec changes no device's day."""
    forward = SimulatedPark(spec, MORNING, seed=SEED, clouds=True)
    backward = SimulatedPark(dataclasses.replace(spec, devices=spec.devices[::-1]), MORNING, seed=SEED, clouds=True)
    for t in (NOON, NOON + timedelta(hours=6)):
        assert _by_id(forward.telemetry(t)) == _by_id(backward.telemetry(t))
        for mid, reading in _meters(backward, t).items():
            assert reading.import_kwh == pytest.approx(_meters(forward, t)[mid].import_kwh, rel=1e-9)
    for charger in (d for d in spec.devices if isinstance(d, EvCharger)):
        ours, theirs = forward.ev_session_energy_kwh(charger.id), backward.ev_session_energy_kwh(charger.id)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_device_added_later_sees_the_same_world_as_one_there_from_the_start(spec):
    late = _busy_park(spec)
    pv, load = _newcomers(spec)[:2]
    late.add_device(pv)
    late.add_device(load)
    grown = dataclasses.replace(spec, devices=[*spec.devices, pv, load], meters=late.spec.meters)
    from_start = SimulatedPark(grown, MORNING, seed=SEED, clouds=True)
    for t in _minutes(NOON, 30):
        late.step(t)
        from_start.step(t)
        for device in (pv, load):
            assert late.limits_kw(device.id) == from_start.limits_kw(device.id), (t, device.id)
            assert late.power_kw(device.id) == pytest.approx(from_start.power_kw(device.id)), (t, device.id)


def test_new_devices_start_in_a_sensible_state(spec):
    park = _busy_park(spec, clouds=False)
    pv, load, shift, ev, bat = _newcomers(spec)
    for device in (pv, load, shift, ev, bat):
        park.add_device(device)
    assert park.soc_kwh(bat.id) == pytest.approx((bat.soc_min_kwh + bat.capacity_kwh) / 2)
    assert park.power_kw(bat.id) == 0.0 and park.energy_kwh(bat.id) == 0.0
    # Four of its twelve window hours have passed: it has run its natural share so far.
    assert park.shiftable_remaining_kwh(shift.id) == pytest.approx(shift.energy_per_day_kwh * 8 / 12, rel=0.01)
    lo, hi = park.limits_kw(load.id)
    assert park.power_kw(load.id) == pytest.approx(lo) and hi - lo == pytest.approx(load.max_curtail_kw)
    assert park.ev_connected_sessions(ev.id) >= 1  # workplace charging at noon on a weekday
    assert park.is_online(pv.id) and park.power_kw(pv.id) > 0.0


def test_meter_registers_stay_continuous_and_monotonic_across_the_addition(spec):
    park = _busy_park(spec)
    now = park.now
    before = _meters(park, now)
    for device in _newcomers(spec):
        park.add_device(device)
    at_once = _meters(park, now)
    assert {k: v for k, v in at_once.items() if k in before} == before
    new_gen = generation_meter_id(_without_pv(spec))
    assert set(at_once) - set(before) == {new_gen}
    assert at_once[new_gen].import_kwh == at_once[new_gen].export_kwh == 0.0
    previous = at_once
    for t in _minutes(NOON, 90):
        readings = _meters(park, t)
        for mid, reading in readings.items():
            assert reading.import_kwh >= previous[mid].import_kwh, (t, mid)
            assert reading.export_kwh >= previous[mid].export_kwh, (t, mid)
        previous = readings
    assert previous[new_gen].export_kwh > 0.0


# -------------------------------------------------------- replacing ----


def test_replacing_a_battery_keeps_its_soc_and_honours_the_new_rating(spec):
    park = _busy_park(spec)
    old = _of(spec, Battery)
    park.step(NOON)
    soc, energy = park.soc_kwh(old.id), park.energy_kwh(old.id)
    assert park.power_kw(old.id) == pytest.approx(-old.rated_kw / 10)  # charging on its set-point
    smaller = old.model_copy(update={"rated_kw": old.rated_kw / 20, "ramp_kw_per_s": None})
    park.add_device(smaller)
    assert park.device_ids == [d.id for d in spec.devices]  # replaced in place, not added
    assert park.soc_kwh(old.id) == soc and park.energy_kwh(old.id) == energy
    lo, hi = park.limits_kw(old.id)
    assert -smaller.rated_kw <= lo <= park.power_kw(old.id) <= hi <= smaller.rated_kw
    t = NOON + timedelta(minutes=5)
    sample = _by_id(park.telemetry(t))[old.id]
    assert sample.p_kw == pytest.approx(-smaller.rated_kw)  # the set-point still stands, clipped to the rating
    assert sample.p_min_kw >= -smaller.rated_kw and sample.p_max_kw <= smaller.rated_kw
    charged = smaller.rated_kw * smaller.charge_efficiency * 5 / 60
    assert park.soc_kwh(old.id) == pytest.approx(soc + charged, rel=1e-3)


def test_a_replaced_battery_soc_is_clipped_into_its_new_bounds(spec):
    park = _busy_park(spec)
    old = _of(spec, Battery)
    soc = park.soc_kwh(old.id)
    tighter = old.model_copy(update={"soc_max_kwh": soc / 2, "soc_min_kwh": soc / 4})
    park.add_device(tighter)
    assert park.soc_kwh(old.id) == soc / 2
    lo, hi = park.limits_kw(old.id)
    assert lo == 0.0 and hi > 0.0  # full: it can only discharge


def test_replacing_a_charger_with_the_same_ports_keeps_its_sessions(spec):
    park = _busy_park(spec)
    charger = _of(spec, EvCharger)
    charged, need = park.ev_session_energy_kwh(charger.id)
    assert charged.sum() > 0.0
    park.add_device(charger.model_copy(update={"name": "renamed", "marginal_cost_cny_per_kwh": 0.9}))
    charged_after, need_after = park.ev_session_energy_kwh(charger.id)
    np.testing.assert_array_equal(charged_after, charged)
    np.testing.assert_array_equal(need_after, need)


def test_re_adding_an_unchanged_device_changes_nothing(spec):
    park, reference = _busy_park(spec), _busy_park(spec)
    for device in spec.devices:
        park.add_device(device)
    assert park.spec is spec
    t = NOON + timedelta(minutes=10)
    assert park.telemetry(t) == reference.telemetry(t)
    assert park.meter_readings(t) == reference.meter_readings(t)


# ----------------------------------------------------------- limits ----


def test_unknown_enterprise_is_rejected_and_the_park_is_untouched(spec):
    park = _busy_park(spec)
    stranger = PV(id="x-pv1", enterprise_id="nobody", rated_kw=100.0)
    with pytest.raises(ValueError, match="'nobody'"):
        park.add_device(stranger)
    assert park.device_ids == [d.id for d in spec.devices]
    assert park.spec is spec


def test_a_device_added_just_before_midnight_runs_into_the_next_day(spec):
    park = SimulatedPark(spec, NEXT_MIDNIGHT - timedelta(hours=1), seed=SEED)
    park.step(NEXT_MIDNIGHT)  # exactly on the day boundary
    shift = _newcomers(spec)[2]
    park.add_device(shift)
    assert park.shiftable_remaining_kwh(shift.id) == 0.0  # yesterday's window is over
    park.step(NEXT_MIDNIGHT + timedelta(hours=9))
    # A new day's requirement, spread over the window: one of its twelve hours has passed.
    assert park.shiftable_remaining_kwh(shift.id) == pytest.approx(shift.energy_per_day_kwh * 11 / 12, rel=0.01)
