"""The in-process simulator adapter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from adapters.base import Adapter, AdapterError
from adapters.simulator import SimulatorAdapter
from simulators.park import ParkSpec, build_park
from simulators.sim import SimulatedPark
from vpp.clock import ManualClock
from vpp.model import PV, Battery, Setpoint

NOON = datetime(2026, 6, 16, 4, 0, tzinfo=timezone.utc)  # 12:00 Asia/Shanghai


@pytest.fixture(scope="module")
def spec() -> ParkSpec:
    return build_park(seed=7)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOON)


@pytest.fixture
def adapter(spec: ParkSpec, clock: ManualClock) -> SimulatorAdapter:
    return SimulatorAdapter(SimulatedPark(spec, NOON, seed=1), clock)


def _battery(spec: ParkSpec) -> Battery:
    return next(d for d in spec.devices if isinstance(d, Battery))


def test_is_an_adapter(adapter):
    assert isinstance(adapter, Adapter)
    assert adapter.name == "simulator"


async def test_calls_before_connect_and_after_close_fail(adapter, clock):
    sp = [Setpoint(device_id="e01-load1", p_kw=None, ts=clock.now())]
    for call in (adapter.read_telemetry(), adapter.read_meters(), adapter.write_setpoints(sp)):
        with pytest.raises(AdapterError, match="before connect"):
            await call
    await adapter.connect()
    assert adapter.connected
    await adapter.read_telemetry()
    await adapter.close()
    await adapter.close()  # twice is fine
    assert not adapter.connected
    for call in (adapter.read_telemetry(), adapter.read_meters(), adapter.write_setpoints(sp), adapter.connect()):
        with pytest.raises(AdapterError, match="after close"):
            await call


async def test_read_telemetry_advances_the_park_with_the_clock(adapter, clock, spec):
    await adapter.connect()
    samples = await adapter.read_telemetry()
    assert [s.device_id for s in samples] == [d.id for d in spec.devices]
    assert all(s.ts == NOON for s in samples)
    clock.advance(90)
    samples = await adapter.read_telemetry()
    assert adapter.park.now == NOON + timedelta(seconds=90)
    assert all(s.ts == NOON + timedelta(seconds=90) for s in samples)


async def test_write_setpoints_moves_devices_and_counts_unknown_ids(adapter, clock, spec):
    await adapter.connect()
    bat = _battery(spec)
    await adapter.write_setpoints(
        [
            Setpoint(device_id=bat.id, p_kw=-bat.rated_kw / 4, ts=clock.now()),
            Setpoint(device_id="nobody-bat9", p_kw=10.0, ts=clock.now()),
            Setpoint(device_id="nobody-bat8", p_kw=None, ts=clock.now()),
        ]
    )
    assert adapter.unknown_setpoints == 2
    await clock.sleep(30)
    sample = next(s for s in await adapter.read_telemetry() if s.device_id == bat.id)
    assert sample.p_kw == pytest.approx(-bat.rated_kw / 4)
    assert sample.soc_kwh is not None
    await adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=None, ts=clock.now())])
    await clock.sleep(30)
    sample = next(s for s in await adapter.read_telemetry() if s.device_id == bat.id)
    assert sample.p_kw == 0.0


async def test_setpoints_act_from_the_time_they_are_written(adapter, clock, spec):
    await adapter.connect()
    bat = _battery(spec)
    clock.advance(600)  # ten minutes pass unobserved
    await adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=bat.rated_kw / 4, ts=clock.now())])
    clock.advance(60)
    await adapter.read_telemetry()
    # only one minute of discharge, not eleven
    assert adapter.park.energy_kwh(bat.id) == pytest.approx(bat.rated_kw / 4 / 60.0, rel=0.05)


async def test_read_meters_returns_monotonic_registers(adapter, clock, spec):
    await adapter.connect()
    first = await adapter.read_meters()
    assert [m.meter_id for m in first] == [m.id for m in spec.meters]
    clock.advance(3600)
    second = await adapter.read_meters()
    for a, b in zip(first, second, strict=True):
        assert b.ts == NOON + timedelta(hours=1)
        assert b.import_kwh >= a.import_kwh and b.export_kwh >= a.export_kwh
    assert sum(b.import_kwh - a.import_kwh for a, b in zip(first, second, strict=True)) > 0.0


async def test_offline_device_is_absent_from_telemetry(adapter, clock, spec):
    await adapter.connect()
    bat = _battery(spec)
    adapter.park.set_online(bat.id, False)
    clock.advance(1)
    ids = {s.device_id for s in await adapter.read_telemetry()}
    assert bat.id not in ids and len(ids) == len(spec.devices) - 1
    await adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=bat.rated_kw / 2, ts=clock.now())])
    assert adapter.unknown_setpoints == 0  # known, just not listening
    clock.advance(10)
    await adapter.read_telemetry()
    assert adapter.park.power_kw(bat.id) == 0.0


async def test_add_device_joins_the_park_at_the_clocks_time(adapter, clock, spec):
    pv = PV(id="e01-pv9", enterprise_id="e01", rated_kw=250.0)
    clock.advance(600)
    await adapter.add_device(pv)  # allowed before connect: the service seeds devices while starting
    assert adapter.park.now == clock.now()  # the ten minutes before ran with the old fleet
    await adapter.connect()
    clock.advance(60)
    samples = {s.device_id: s for s in await adapter.read_telemetry()}
    assert set(samples) == {d.id for d in spec.devices} | {pv.id}
    assert samples[pv.id].p_kw > 0.0
    await adapter.write_setpoints([Setpoint(device_id=pv.id, p_kw=50.0, ts=clock.now())])
    assert adapter.unknown_setpoints == 0
    clock.advance(60)
    samples = {s.device_id: s for s in await adapter.read_telemetry()}
    assert samples[pv.id].p_kw == pytest.approx(50.0)


async def test_add_device_replaces_a_changed_device(adapter, clock, spec):
    await adapter.connect()
    bat = _battery(spec)
    soc = adapter.park.soc_kwh(bat.id)
    await adapter.add_device(bat.model_copy(update={"rated_kw": bat.rated_kw / 2}))
    assert adapter.park.soc_kwh(bat.id) == soc
    clock.advance(60)
    sample = next(s for s in await adapter.read_telemetry() if s.device_id == bat.id)
    assert sample.p_max_kw <= bat.rated_kw / 2


async def test_add_device_for_an_unknown_enterprise_is_an_adapter_error(adapter, spec):
    with pytest.raises(AdapterError, match="'elsewhere'") as caught:
        await adapter.add_device(PV(id="x-pv1", enterprise_id="elsewhere", rated_kw=100.0))
    assert not isinstance(caught.value, ValueError)
    assert adapter.park.device_ids == [d.id for d in spec.devices]


async def test_add_device_after_close_fails(adapter):
    await adapter.close()
    with pytest.raises(AdapterError, match="after close"):
        await adapter.add_device(PV(id="e01-pv9", enterprise_id="e01", rated_kw=100.0))
