"""The seeded park description and the simulated park running in time."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.park import (
    PARK_ENTERPRISE_ID,
    BaseLoad,
    ParkSpec,
    build_park,
    generation_meter_id,
    grid_meter_id,
)
from simulators.sim import SimulatedPark
from vpp.model import (
    PV,
    Battery,
    DeviceKind,
    Enterprise,
    EvCharger,
    InterruptibleLoad,
    MeteringPoint,
    Setpoint,
    ShiftableLoad,
)

UTC = timezone.utc
# 2026-06-16 00:00 in Asia/Shanghai (a Tuesday); local noon is 04:00 UTC.
MIDNIGHT = datetime(2026, 6, 15, 16, 0, tzinfo=UTC)
NOON = datetime(2026, 6, 16, 4, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def spec() -> ParkSpec:
    return build_park()


def _sp(device_id: str, p_kw: float | None, ts: datetime) -> Setpoint:
    return Setpoint(device_id=device_id, p_kw=p_kw, ts=ts)


def _run(park: SimulatedPark, start: datetime, seconds: int, step_s: int = 60) -> datetime:
    t = start
    for k in range(1, seconds // step_s + 1):
        t = start + timedelta(seconds=k * step_s)
        park.step(t)
    return t


def _one_enterprise(*devices, base_kw: float = 100.0, pattern: str = "three_shift", noise: float = 0.0) -> ParkSpec:
    """A one-enterprise park with noiseless loads, for exact expectations."""
    meters = [MeteringPoint(id="a-grid", enterprise_id="a", purpose="grid")]
    if any(isinstance(d, PV) for d in devices):
        meters.append(MeteringPoint(id="a-gen", enterprise_id="a", purpose="generation"))
    return ParkSpec(
        enterprises=[Enterprise(id="a", name="A")],
        meters=meters,
        devices=list(devices),
        base_loads={"a": BaseLoad("a", pattern, base_kw, 0.9, noise)},  # type: ignore[arg-type]
        latitude=31.3,
        longitude=120.6,
    )


BATTERY = Battery(
    id="a-bat1",
    enterprise_id="a",
    rated_kw=500.0,
    capacity_kwh=1000.0,
    soc_min_kwh=100.0,
    soc_max_kwh=950.0,
    charge_efficiency=0.95,
    discharge_efficiency=0.95,
    ramp_kw_per_s=50.0,
)


# ------------------------------------------------------------ the spec ----


def test_same_seed_same_park_other_seed_other_park(spec):
    assert build_park(seed=7) == spec
    assert build_park(seed=8) != spec


def test_park_mix_is_believable(spec):
    ids = [e.id for e in spec.enterprises]
    assert len(ids) == 21 and ids[-1] == PARK_ENTERPRISE_ID
    kinds = {k: [d for d in spec.devices if d.kind == k] for k in DeviceKind}
    pv_owners = {d.enterprise_id for d in kinds[DeviceKind.PV]}
    for eid in ids:
        own = spec.devices_of(eid)
        assert any(isinstance(d, (InterruptibleLoad, ShiftableLoad)) for d in own), eid
        assert eid in spec.base_loads
        meters = {m.id: m for m in spec.meters if m.enterprise_id == eid}
        assert meters[grid_meter_id(eid)].purpose == "grid"
        assert (generation_meter_id(eid) in meters) == (eid in pv_owners)
    manufacturers = [e for e in ids if e != PARK_ENTERPRISE_ID]
    assert len({d.enterprise_id for d in kinds[DeviceKind.PV]} - {PARK_ENTERPRISE_ID}) >= 0.7 * len(manufacturers)
    assert 0.3 * len(manufacturers) <= len(kinds[DeviceKind.BATTERY]) <= 0.7 * len(manufacturers)
    assert kinds[DeviceKind.EV_CHARGER]
    for d in kinds[DeviceKind.PV]:
        if d.enterprise_id != PARK_ENTERPRISE_ID:
            assert 100.0 <= d.rated_kw <= 2000.0 and not d.shared
    shared = [d for d in kinds[DeviceKind.PV] if d.shared]
    assert len(shared) == 1 and shared[0].enterprise_id == PARK_ENTERPRISE_ID
    for b in kinds[DeviceKind.BATTERY]:
        assert 200.0 <= b.capacity_kwh <= 2000.0
        assert b.rated_kw == pytest.approx(0.5 * b.capacity_kwh)
        assert b.soc_min_kwh < spec.initial_soc_kwh[b.id] < b.soc_upper_kwh
    for ev in kinds[DeviceKind.EV_CHARGER]:
        assert 7.0 <= ev.rated_kw / ev.ports <= 120.0 and ev.ports >= 2
    assert any(d.protected_hours for d in spec.devices)
    # wear is cheap, lost production is dear
    max_battery_cost = max(d.marginal_cost_cny_per_kwh for d in kinds[DeviceKind.BATTERY])
    min_process_cost = min(d.marginal_cost_cny_per_kwh for d in kinds[DeviceKind.INTERRUPTIBLE_LOAD])
    assert max_battery_cost < min_process_cost
    for d in spec.devices:
        assert re.fullmatch(r"(e\d\d|park)-(pv|bat|load|shift|ev)\d", d.id), d.id
        assert d.ramp_kw_per_s is not None


def test_small_and_large_parks():
    small = build_park(seed=1, n_enterprises=1)
    assert [e.id for e in small.enterprises] == ["e01", PARK_ENTERPRISE_ID]
    large = build_park(seed=1, n_enterprises=120)
    assert large.enterprises[0].id == "e001" and len(large.enterprises) == 121
    with pytest.raises(ValueError):
        build_park(n_enterprises=0)


def test_spec_rejects_inconsistent_parks():
    with pytest.raises(ValueError, match="duplicate device"):
        _one_enterprise(BATTERY, BATTERY)
    with pytest.raises(ValueError, match="unknown enterprise_id"):
        _one_enterprise(BATTERY.model_copy(update={"enterprise_id": "b"}))
    with pytest.raises(ValueError, match="no generation meter"):
        ParkSpec(
            enterprises=[Enterprise(id="a", name="A")],
            meters=[MeteringPoint(id="a-grid", enterprise_id="a")],
            devices=[PV(id="a-pv1", enterprise_id="a", rated_kw=100.0)],
            base_loads={"a": BaseLoad("a", "day_shift", 10.0, 0.5, 0.0)},
            latitude=31.3,
            longitude=120.6,
        )


# ------------------------------------------------- running the park ----


def test_same_seed_same_telemetry_other_seed_differs(spec):
    def run(seed: int):
        park = SimulatedPark(spec, MIDNIGHT, seed=seed, clouds=True)
        t = _run(park, MIDNIGHT, 10 * 3600)
        return [(s.device_id, s.p_kw, s.p_min_kw, s.p_max_kw, s.soc_kwh) for s in park.telemetry(t)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_telemetry_is_consistent(spec):
    park = SimulatedPark(spec, MIDNIGHT, seed=1)
    for hours in (0, 3, 9, 12, 19):
        t = MIDNIGHT + timedelta(hours=hours)
        samples = park.telemetry(t)
        assert [s.device_id for s in samples] == [d.id for d in spec.devices]
        for s in samples:
            d = spec.device(s.device_id)
            assert s.ts == t
            assert s.p_min_kw - 1e-9 <= s.p_kw <= s.p_max_kw + 1e-9
            assert (s.soc_kwh is not None) == isinstance(d, Battery)
            if isinstance(d, PV):
                assert 0.0 <= s.p_kw <= d.rated_kw
            elif isinstance(d, (InterruptibleLoad, ShiftableLoad, EvCharger)):
                assert s.p_min_kw >= -d.rated_kw - 1e-9
                assert s.p_kw <= 1e-9 or (isinstance(d, EvCharger) and d.bidirectional)


def test_pv_follows_the_sun_and_curtails_to_setpoint():
    pv = PV(id="a-pv1", enterprise_id="a", rated_kw=1000.0, ramp_kw_per_s=100.0)
    park = SimulatedPark(_one_enterprise(pv), MIDNIGHT, seed=1)  # clear sky by default
    assert park.power_kw("a-pv1") == 0.0
    park.step(NOON)
    p_noon = park.power_kw("a-pv1")
    assert 600.0 < p_noon < 1000.0
    assert park.limits_kw("a-pv1") == (0.0, pytest.approx(p_noon))
    park.apply_setpoints([_sp("a-pv1", 200.0, NOON)])
    park.step(NOON + timedelta(seconds=1))
    assert park.power_kw("a-pv1") == pytest.approx(p_noon - 100.0)  # ramp 100 kW/s
    park.step(NOON + timedelta(seconds=30))
    assert park.power_kw("a-pv1") == pytest.approx(200.0)
    park.apply_setpoints([_sp("a-pv1", None, NOON)])
    park.step(NOON + timedelta(seconds=60))
    assert park.power_kw("a-pv1") == pytest.approx(p_noon, rel=0.01)
    evening = NOON + timedelta(hours=9)  # 21:00 local
    park.step(evening)
    assert park.power_kw("a-pv1") == 0.0


def test_clouds_only_ever_take_pv_away(spec):
    clear = SimulatedPark(spec, MIDNIGHT, seed=4)
    cloudy = SimulatedPark(spec, MIDNIGHT, seed=4, clouds=True)
    lower = 0
    for k in range(1, 2 * 24 + 1):  # two days, hourly; with seed 4 the second is cloudy
        t = MIDNIGHT + timedelta(hours=k)
        clear.step(t)
        cloudy.step(t)
        for d in spec.devices:
            if isinstance(d, PV):
                assert cloudy.power_kw(d.id) <= clear.power_kw(d.id) + 1e-9
                lower += cloudy.power_kw(d.id) < 0.9 * clear.power_kw(d.id)
    assert lower > 0


def test_battery_follows_setpoint_within_ramp_and_range():
    park = SimulatedPark(_one_enterprise(BATTERY), NOON, seed=1)
    assert park.power_kw("a-bat1") == 0.0 and park.soc_kwh("a-bat1") == pytest.approx(525.0)
    park.apply_setpoints([_sp("a-bat1", 300.0, NOON)])
    for k in range(1, 8):
        park.step(NOON + timedelta(seconds=k))
        assert park.power_kw("a-bat1") == pytest.approx(min(50.0 * k, 300.0))
    park.apply_setpoints([_sp("a-bat1", -5000.0, NOON)])  # beyond the rating
    park.step(NOON + timedelta(seconds=60))
    assert park.power_kw("a-bat1") == pytest.approx(-500.0)
    soc = park.soc_kwh("a-bat1")
    park.step(NOON + timedelta(seconds=60 + 3600))
    assert park.soc_kwh("a-bat1") == pytest.approx(950.0, abs=0.5)
    assert park.power_kw("a-bat1") > -10.0  # tapered to nothing at soc_max
    assert soc < park.soc_kwh("a-bat1")
    park.apply_setpoints([_sp("a-bat1", None, NOON)])
    park.step(NOON + timedelta(hours=2))
    assert park.power_kw("a-bat1") == 0.0  # released: idle


def test_battery_energy_balance_in_the_park():
    park = SimulatedPark(_one_enterprise(BATTERY), NOON, seed=1)
    soc0 = park.soc_kwh("a-bat1")
    park.apply_setpoints([_sp("a-bat1", 200.0, NOON)])
    park.step(NOON + timedelta(hours=1))
    delivered = park.energy_kwh("a-bat1")
    assert delivered == pytest.approx(200.0 - 4.0 * 0.5 * 50.0 / 3600.0 * 4, rel=1e-3)  # minus the 4 s ramp
    assert delivered == pytest.approx((soc0 - park.soc_kwh("a-bat1")) * 0.95)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.one_of(st.none(), st.floats(-3000.0, 3000.0)), st.integers(1, 7200)), min_size=1, max_size=12))
def test_park_battery_soc_in_bounds_under_any_setpoints(sequence):
    park = SimulatedPark(_one_enterprise(BATTERY), NOON, seed=1)
    t = NOON
    for p_kw, seconds in sequence:
        park.apply_setpoints([_sp("a-bat1", p_kw, t)])
        t += timedelta(seconds=seconds)
        park.step(t)
        soc = park.soc_kwh("a-bat1")
        assert BATTERY.soc_min_kwh - 1e-6 <= soc <= BATTERY.soc_upper_kwh + 1e-6
        lo, hi = park.limits_kw("a-bat1")
        assert -BATTERY.rated_kw <= lo <= park.power_kw("a-bat1") <= hi <= BATTERY.rated_kw


def test_interruptible_load_is_curtailed_and_recovers():
    load = InterruptibleLoad(id="a-load1", enterprise_id="a", rated_kw=500.0, max_curtail_kw=200.0, ramp_kw_per_s=10.0)
    park = SimulatedPark(_one_enterprise(load), NOON, seed=1)
    natural = park.power_kw("a-load1")
    assert natural == pytest.approx(-500.0 * 0.9 * 0.92)  # three-shift, noiseless
    lo, hi = park.limits_kw("a-load1")
    assert lo == pytest.approx(natural) and hi == pytest.approx(natural + 200.0)
    park.apply_setpoints([_sp("a-load1", 0.0, NOON)])  # asks for more than allowed
    park.step(NOON + timedelta(seconds=5))
    assert park.power_kw("a-load1") == pytest.approx(natural + 50.0)  # 10 kW/s
    park.step(NOON + timedelta(minutes=10))
    assert park.power_kw("a-load1") == pytest.approx(natural + 200.0)
    park.apply_setpoints([_sp("a-load1", None, NOON)])
    park.step(NOON + timedelta(minutes=11))
    assert park.power_kw("a-load1") == pytest.approx(natural)


def test_shiftable_load_catches_up_deferred_energy_in_its_window():
    shift = ShiftableLoad(
        id="a-shift1",
        enterprise_id="a",
        rated_kw=200.0,
        energy_per_day_kwh=1200.0,
        window_start_hour=8,
        window_end_hour=20,
        ramp_kw_per_s=5.0,
    )
    park = SimulatedPark(_one_enterprise(shift), MIDNIGHT, seed=1)
    assert park.power_kw("a-shift1") == 0.0
    assert park.limits_kw("a-shift1") == (0.0, 0.0)
    t8 = MIDNIGHT + timedelta(hours=8)
    park.step(t8 + timedelta(minutes=5))
    assert park.power_kw("a-shift1") == pytest.approx(-100.0)  # 1200 kWh over 12 h
    assert park.limits_kw("a-shift1")[1] == pytest.approx(0.0)  # may pause
    # defer: off from 10:00 to 14:00
    t10 = MIDNIGHT + timedelta(hours=10)
    park.step(t10)
    park.apply_setpoints([_sp("a-shift1", 0.0, t10)])
    park.step(t10 + timedelta(hours=4))
    assert park.power_kw("a-shift1") == 0.0
    assert park.shiftable_remaining_kwh("a-shift1") == pytest.approx(1000.0, rel=0.01)
    park.apply_setpoints([_sp("a-shift1", None, t10)])
    park.step(t10 + timedelta(hours=4, minutes=5))
    assert park.power_kw("a-shift1") == pytest.approx(-1000.0 / 6.0, rel=0.02)  # catching up
    park.step(MIDNIGHT + timedelta(hours=20))
    assert park.shiftable_remaining_kwh("a-shift1") == pytest.approx(0.0, abs=1.0)
    assert -park.energy_kwh("a-shift1") == pytest.approx(1200.0, abs=1.0)
    park.step(MIDNIGHT + timedelta(hours=21))
    assert park.power_kw("a-shift1") == 0.0 and park.limits_kw("a-shift1") == (0.0, 0.0)


def test_shiftable_load_runs_ahead_and_saves_later():
    shift = ShiftableLoad(
        id="a-shift1", enterprise_id="a", rated_kw=200.0, energy_per_day_kwh=800.0, window_start_hour=0, window_end_hour=8
    )
    park = SimulatedPark(_one_enterprise(shift), MIDNIGHT, seed=1)
    park.apply_setpoints([_sp("a-shift1", -200.0, MIDNIGHT)])
    park.step(MIDNIGHT + timedelta(hours=2))
    assert park.shiftable_remaining_kwh("a-shift1") == pytest.approx(400.0, abs=1.0)
    park.apply_setpoints([_sp("a-shift1", None, MIDNIGHT)])
    park.step(MIDNIGHT + timedelta(hours=2, minutes=1))
    assert park.power_kw("a-shift1") == pytest.approx(-400.0 / 6.0, rel=0.01)
    park.step(MIDNIGHT + timedelta(hours=9))
    assert -park.energy_kwh("a-shift1") == pytest.approx(800.0, abs=0.5)
    # next day the requirement starts afresh
    park.step(MIDNIGHT + timedelta(days=1, hours=1))
    assert park.shiftable_remaining_kwh("a-shift1") == pytest.approx(700.0, abs=1.0)


def test_shiftable_load_must_run_before_its_deadline():
    shift = ShiftableLoad(
        id="a-shift1", enterprise_id="a", rated_kw=200.0, energy_per_day_kwh=800.0, window_start_hour=0, window_end_hour=8
    )
    park = SimulatedPark(_one_enterprise(shift), MIDNIGHT, seed=1)
    park.apply_setpoints([_sp("a-shift1", 0.0, MIDNIGHT)])
    park.step(MIDNIGHT + timedelta(hours=8))
    # held off all it could: 800 kWh at 200 kW means the last 4 h are forced.
    assert -park.energy_kwh("a-shift1") == pytest.approx(800.0, abs=2.0)
    park.step(MIDNIGHT + timedelta(hours=3))  # going back in time changes nothing
    assert -park.energy_kwh("a-shift1") == pytest.approx(800.0, abs=2.0)


def test_ev_chargers_charge_connected_vehicles_and_obey_setpoints():
    ev = EvCharger(id="a-ev1", enterprise_id="a", rated_kw=80.0, ports=8, bidirectional=True, ramp_kw_per_s=100.0)
    park = SimulatedPark(_one_enterprise(ev), MIDNIGHT, seed=2)
    assert park.ev_connected_sessions("a-ev1") == 0 and park.power_kw("a-ev1") == 0.0
    t = MIDNIGHT + timedelta(hours=11)  # workplace charging in full swing
    park.step(t)
    n = park.ev_connected_sessions("a-ev1")
    assert n >= 2
    lo, hi = park.limits_kw("a-ev1")
    assert -80.0 <= lo < 0.0 < hi  # bidirectional
    p_natural = park.power_kw("a-ev1")
    assert p_natural == pytest.approx(lo)
    park.apply_setpoints([_sp("a-ev1", -5.0, t)])
    park.step(t + timedelta(seconds=10))
    assert park.power_kw("a-ev1") == pytest.approx(-5.0)
    park.apply_setpoints([_sp("a-ev1", 6.0, t)])  # V2G
    park.step(t + timedelta(seconds=20))
    assert park.power_kw("a-ev1") == pytest.approx(6.0)
    # a day's charging: energy drawn never exceeds what the vehicles asked for
    park.apply_setpoints([_sp("a-ev1", None, t)])
    park.step(MIDNIGHT + timedelta(hours=24))
    assert park.ev_connected_sessions("a-ev1") == 0
    charged, need = park.ev_session_energy_kwh("a-ev1")
    assert len(charged) >= n
    assert np.all(charged <= need + 1e-6)
    assert np.all(charged > 0.0)
    assert -park.energy_kwh("a-ev1") == pytest.approx(charged.sum(), rel=1e-9)


def test_meters_are_monotonic_and_match_device_energy_over_a_day(spec):
    park = SimulatedPark(spec, MIDNIGHT, seed=5, clouds=True)
    # a few set-points so batteries and loads move
    batteries = [d for d in spec.devices if isinstance(d, Battery)]
    park.apply_setpoints([_sp(b.id, b.rated_kw / 2, MIDNIGHT) for b in batteries])
    previous = {m.meter_id: m for m in park.meter_readings(MIDNIGHT)}
    net = {e.id: 0.0 for e in spec.enterprises}
    generated = {e.id: 0.0 for e in spec.enterprises}
    t = MIDNIGHT
    for k in range(1, 24 * 60 + 1):
        t = MIDNIGHT + timedelta(minutes=k)
        if k == 10 * 60:
            park.apply_setpoints([_sp(b.id, -b.rated_kw / 2, t) for b in batteries])
        samples = park.telemetry(t)
        for s in samples:
            d = spec.device(s.device_id)
            net[d.enterprise_id] += s.p_kw / 60.0
            if isinstance(d, PV):
                generated[d.enterprise_id] += s.p_kw / 60.0
        for eid, base in park.base_load_kw().items():
            net[eid] -= base / 60.0
        if k % 15 == 0:
            readings = {m.meter_id: m for m in park.meter_readings(t)}
            for mid, r in readings.items():
                assert r.import_kwh >= previous[mid].import_kwh
                assert r.export_kwh >= previous[mid].export_kwh
            previous = readings
    readings = {m.meter_id: m for m in park.meter_readings(t)}
    for e in spec.enterprises:
        grid = readings[grid_meter_id(e.id)]
        assert grid.export_kwh - grid.import_kwh == pytest.approx(net[e.id], rel=1e-6, abs=1e-3)
        assert grid.import_kwh > 0.0
        gen = readings.get(generation_meter_id(e.id))
        if gen is not None:
            assert gen.import_kwh == 0.0
            assert gen.export_kwh == pytest.approx(generated[e.id], rel=1e-6, abs=1e-3)
            assert gen.export_kwh > 0.0


def test_one_big_step_equals_many_small_ones_and_fine_steps_agree(spec):
    coarse = SimulatedPark(spec, MIDNIGHT, seed=5)
    _run(coarse, MIDNIGHT, 6 * 3600, step_s=60)
    jump = SimulatedPark(spec, MIDNIGHT, seed=5)
    jump.step(MIDNIGHT + timedelta(hours=6))
    assert [m.model_dump() for m in coarse.meter_readings(jump.now)] == [m.model_dump() for m in jump.meter_readings(jump.now)]
    # 1-s steps over the morning ramp integrate to the same energy within 0.1 %
    start = MIDNIGHT + timedelta(hours=6)
    fine = SimulatedPark(spec, start, seed=5, clouds=True)
    minute = SimulatedPark(spec, start, seed=5, clouds=True)
    _run(fine, start, 1800, step_s=1)
    end = _run(minute, start, 1800, step_s=60)
    for a, b in zip(fine.meter_readings(end), minute.meter_readings(end), strict=True):
        assert a.import_kwh == pytest.approx(b.import_kwh, rel=1e-3, abs=0.5)
        assert a.export_kwh == pytest.approx(b.export_kwh, rel=1e-3, abs=0.5)


def test_offline_device_is_absent_ignores_setpoints_and_runs_naturally(spec):
    park = SimulatedPark(spec, NOON, seed=1)
    bat = next(d for d in spec.devices if isinstance(d, Battery))
    park.apply_setpoints([_sp(bat.id, bat.rated_kw / 2, NOON)])
    park.step(NOON + timedelta(seconds=10))
    assert park.power_kw(bat.id) == pytest.approx(bat.rated_kw / 2)
    park.set_online(bat.id, False)
    assert not park.is_online(bat.id)
    t = NOON + timedelta(seconds=20)
    assert bat.id not in {s.device_id for s in park.telemetry(t)}
    assert park.power_kw(bat.id) == 0.0  # dropped its set-point: natural is idle
    park.apply_setpoints([_sp(bat.id, -bat.rated_kw / 2, t)])
    park.step(t + timedelta(seconds=10))
    assert park.power_kw(bat.id) == 0.0
    park.set_online(bat.id, True)
    assert bat.id in {s.device_id for s in park.telemetry(t + timedelta(seconds=11))}
    assert park.apply_setpoints([_sp("nobody", 1.0, t)]) == ["nobody"]


def test_protected_hours_violations_are_counted():
    load = InterruptibleLoad(
        id="a-load1",
        enterprise_id="a",
        rated_kw=500.0,
        max_curtail_kw=200.0,
        protected_hours=[{"start_hour": 12, "end_hour": 14}],
    )
    park = SimulatedPark(_one_enterprise(load), NOON - timedelta(hours=1), seed=1)
    park.apply_setpoints([_sp("a-load1", -300.0, NOON)])
    park.step(NOON + timedelta(minutes=30))  # 11:00-12:30 local, 30 min protected
    assert park.protected_violation_s() == {"a-load1": pytest.approx(1800.0)}


def test_time_must_be_aware(spec):
    with pytest.raises(ValueError, match="timezone"):
        SimulatedPark(spec, datetime(2026, 6, 16), seed=1)


def test_a_simulated_week_runs_and_weekends_are_quieter(spec):
    park = SimulatedPark(spec, MIDNIGHT, seed=9)

    def consumption_kwh(t: datetime) -> dict[str, float]:
        """Cumulative consumption per enterprise: grid import - export + own generation."""
        out = {e.id: 0.0 for e in spec.enterprises}
        meters = {m.id: m for m in spec.meters}
        for r in park.meter_readings(t):
            m = meters[r.meter_id]
            out[m.enterprise_id] += r.import_kwh - r.export_kwh if m.purpose == "grid" else r.export_kwh
        return out

    daily: list[dict[str, float]] = []
    t = MIDNIGHT
    for _ in range(7):  # Tuesday 16 June to Monday 22 June, local
        before = consumption_kwh(t)
        t = _run(park, t, 86400, step_s=60)
        after = consumption_kwh(t)
        daily.append({eid: after[eid] - before[eid] for eid in after})
    assert park.now == MIDNIGHT + timedelta(days=7)
    day_shift = [eid for eid, b in spec.base_loads.items() if b.shift_pattern == "day_shift"]
    assert day_shift
    for eid in day_shift:
        saturday, tuesday = daily[4][eid], daily[0][eid]
        assert 0.0 < saturday < 0.8 * tuesday, eid
