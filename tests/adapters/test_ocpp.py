"""The OCPP 1.6J central system against the park's simulated charge points on loopback.

Real peers only: the adapter's websocket server and ``simulators.ocpp_charger``
charge points (the ``ocpp`` library on both sides), plus a raw websocket
client for garbage frames. Time is a ManualClock: the chargers stamp and send
MeterValues when the test moves it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.charge_point import camel_to_snake_case
from ocpp.messages import Call, _validate_payload
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from adapters.base import Adapter, AdapterError
from adapters.ocpp import (
    OCPP_SUBPROTOCOL,
    ChargerReading,
    OcppAdapter,
    OcppParseError,
    _combined_reading,
    charger_sample,
    decode_charging_profile,
    encode_charging_profile,
    parse_meter_values,
    profile_purpose_for,
)
from simulators.ocpp_charger import OcppChargers
from simulators.park import ParkSpec, build_park
from simulators.sim import SimulatedPark
from vpp.clock import ManualClock
from vpp.model import Battery, DispatchInstruction, DispatchStatus, EvCharger, Setpoint
from vpp.service import PlantService, ServiceSettings
from vpp.store import SqliteStore

NOON = datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)  # 12:00 in Shanghai: vehicles plugged in at work
SETTINGS = ServiceSettings(telemetry_interval_s=1.0, control_interval_s=2.0, stale_after_s=10.0, schedule_interval_s=0)
WAIT_S = 30.0  # give up waiting for the network after this long (a failure, never a speed claim)


async def eventually(predicate: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    """Wait until ``predicate()`` is true (the peers work in the background), else fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def fresh_samples(adapter: OcppAdapter, ts: datetime, device_ids: list[str]) -> dict:
    """Wait until the adapter has a sample stamped ``ts`` from each device; return them by id."""
    latest: dict = {}

    async def poll() -> bool:
        latest.clear()
        latest.update({s.device_id: s for s in await adapter.read_telemetry()})
        return all(d in latest and latest[d].ts == ts for d in device_ids)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not await poll():
        if loop.time() > deadline:
            raise AssertionError(f"no samples at {ts.isoformat()} from {device_ids}; have {latest}")
        await asyncio.sleep(0.02)
    return latest


async def advance(clock: ManualClock, adapter: OcppAdapter, device_ids: list[str], seconds: float = 2.0) -> dict:
    """Move simulated time on and wait for the chargers' MeterValues of the new instant."""
    clock.advance(seconds)
    return await fresh_samples(adapter, clock.now(), device_ids)


@pytest.fixture(scope="module")
def spec() -> ParkSpec:
    return build_park(seed=3, n_enterprises=5)


@pytest.fixture
def chargers(spec) -> list[EvCharger]:
    evs = [d.model_copy(update={"adapter": "ocpp"}) for d in spec.devices if isinstance(d, EvCharger)]
    assert len(evs) >= 2, "the test park needs two chargers"
    return evs


class Rig:
    def __init__(self, spec: ParkSpec, chargers: list[EvCharger], **adapter_settings) -> None:
        self.clock = ManualClock(NOON)
        self.park = SimulatedPark(spec, NOON, seed=3)
        self.chargers = chargers
        self.ids = [d.id for d in chargers]
        self.adapter = OcppAdapter(chargers, clock=self.clock, **adapter_settings)
        self.sim: OcppChargers | None = None

    async def start(self) -> None:
        await self.adapter.connect()
        self.sim = OcppChargers(self.park, self.clock, self.chargers, port=self.adapter.port)
        await self.sim.start()
        await fresh_samples(self.adapter, NOON, self.ids)

    async def stop(self) -> None:
        if self.sim is not None:
            await self.sim.stop()
        await self.adapter.close()


@pytest.fixture
async def rig(spec, chargers):
    rig = Rig(spec, chargers)
    await rig.start()
    yield rig
    await rig.stop()


# ------------------------------------------------------------------ lifecycle --


async def test_is_an_adapter_and_refuses_calls_outside_its_lifetime(chargers):
    adapter = OcppAdapter(chargers)
    assert isinstance(adapter, Adapter) and adapter.name == "ocpp"
    sp = [Setpoint(device_id=chargers[0].id, p_kw=None, ts=NOON)]
    for attempt in (adapter.read_telemetry(), adapter.write_setpoints(sp)):
        with pytest.raises(AdapterError, match="before connect"):
            await attempt
    with pytest.raises(AdapterError, match="port before connect"):
        _ = adapter.port
    await adapter.connect()
    await adapter.connect()  # a second connect keeps the server it has
    assert adapter.port > 0 and adapter.url == f"ws://127.0.0.1:{adapter.port}"
    assert await adapter.read_telemetry() == []  # nobody has connected yet
    await adapter.close()
    await adapter.close()
    for attempt in (adapter.read_telemetry(), adapter.write_setpoints(sp), adapter.connect()):
        with pytest.raises(AdapterError, match="after close"):
            await attempt


async def test_add_device_refuses_what_it_cannot_serve(spec, chargers):
    adapter = OcppAdapter(chargers[:1])
    battery = next(d for d in spec.devices if isinstance(d, Battery))
    with pytest.raises(AdapterError, match="kind 'battery' is not an ev_charger"):
        await adapter.add_device(battery)
    with pytest.raises(AdapterError, match="address 'CP 1/x'"):
        await adapter.add_device(chargers[1].model_copy(update={"address": "CP 1/x"}))
    with pytest.raises(AdapterError, match=f"address '{chargers[0].id}' .* already used by {chargers[0].id}"):
        await adapter.add_device(chargers[1].model_copy(update={"address": chargers[0].id}))
    await adapter.add_device(chargers[1].model_copy(update={"address": "CP-0001"}))
    await adapter.connect()
    try:  # the new charger may connect under its address, the old id is not a charge point
        async with connect(f"{adapter.url}/CP-0001", subprotocols=[OCPP_SUBPROTOCOL]) as ws:
            await ws.send(json.dumps([2, "h1", "Heartbeat", {}]))
            answer = json.loads(await ws.recv())
            assert answer[:2] == [3, "h1"] and "currentTime" in answer[2]
        with pytest.raises(InvalidStatus, match="404"):
            async with connect(f"{adapter.url}/{chargers[1].id}", subprotocols=[OCPP_SUBPROTOCOL]):
                pass
        assert adapter.unknown_chargers == 1
    finally:
        await adapter.close()


# ------------------------------------------------------------------ telemetry --


async def test_telemetry_comes_in_with_units_signs_and_meter_time(rig):
    rig.park.step(NOON)
    samples = await fresh_samples(rig.adapter, NOON, rig.ids)
    for d in rig.chargers:
        s = samples[d.id]
        p = rig.park.power_kw(d.id)
        assert p < 0, "the park's vehicles are charging at noon"
        assert s.p_kw == pytest.approx(p, abs=1e-4), "charging is power drawn: negative kW"
        occupied = min(rig.park.ev_connected_sessions(d.id), d.ports)
        assert s.p_min_kw == pytest.approx(min(-d.rated_kw / d.ports * occupied, p))
        assert s.p_max_kw == 0.0 and s.online and s.soc_kwh is None
    later = await advance(rig.clock, rig.adapter, rig.ids, 2.0)
    assert all(s.ts == NOON + timedelta(seconds=2) for s in later.values())
    # The central system asked for the measurands and sample interval it needs.
    assert {"ChangeConfiguration:MeterValueSampleInterval", "ChangeConfiguration:MeterValuesSampledData"} <= set(
        rig.sim.received(rig.ids[0])
    )


# ------------------------------------------------------------------ set-points --


async def test_a_setpoint_goes_out_as_a_charging_profile_and_moves_the_charger(rig):
    d, other = rig.chargers[0], rig.chargers[1]
    natural_other = rig.park.power_kw(other.id)
    target = round(rig.park.limits_kw(d.id)[0] / 3, 1)  # a third of what its vehicles would draw
    await rig.adapter.write_setpoints([Setpoint(device_id=d.id, p_kw=target, ts=rig.clock.now())])
    await eventually(lambda: rig.adapter.delivered.get(d.id) == target, "the profile to be accepted")
    [profile] = rig.sim.profiles(d.id)
    assert profile.limit.purpose == profile_purpose_for(d) == "ChargePointMaxProfile"  # several ports
    assert profile.limit.limit_kw == pytest.approx(-target, abs=1e-4)
    for _ in range(5):  # ramps at rated/5 per second
        samples = await advance(rig.clock, rig.adapter, rig.ids, 2.0)
    assert rig.park.power_kw(d.id) == pytest.approx(target, abs=1e-6)
    assert samples[d.id].p_kw == pytest.approx(target, abs=1e-3)
    assert samples[other.id].p_kw == pytest.approx(natural_other, abs=1e-3), "the other charger is untouched"

    await rig.adapter.write_setpoints([Setpoint(device_id=d.id, p_kw=None, ts=rig.clock.now())])
    await eventually(lambda: d.id in rig.adapter.delivered and rig.adapter.delivered[d.id] is None, "the release")
    assert rig.sim.profiles(d.id) == [] and rig.sim.received(d.id)[-1] == "ClearChargingProfile"
    for _ in range(5):
        samples = await advance(rig.clock, rig.adapter, rig.ids, 2.0)
    lo, _ = rig.park.limits_kw(d.id)
    assert samples[d.id].p_kw == pytest.approx(lo, abs=1e-3) and lo < target, "released: it charges as fast as it can"


async def test_current_limits_use_the_stated_voltage(spec, chargers):
    rig = Rig(spec, chargers, rate_unit="A", voltage_v=230.0, phases=3)
    await rig.start()
    try:
        d = rig.chargers[1]
        await rig.adapter.write_setpoints([Setpoint(device_id=d.id, p_kw=-20.0, ts=rig.clock.now())])
        await eventually(lambda: rig.adapter.delivered.get(d.id) == -20.0, "the profile to be accepted")
        [profile] = rig.sim.profiles(d.id)
        # 20 kW / (230 V x 3) = 28.99 A, sent to 0.1 A: within 0.05 A x 690 V.
        assert profile.limit.limit_kw == pytest.approx(20.0, abs=0.05 * 690 / 1000)
    finally:
        await rig.stop()


async def test_unknown_device_ids_are_counted_and_ignored(rig):
    await rig.adapter.write_setpoints([Setpoint(device_id="nobody-ev9", p_kw=-3.0, ts=rig.clock.now())])
    assert rig.adapter.unknown_setpoints == 1 and "nobody-ev9" not in rig.adapter.held_setpoints()


# ------------------------------------------------------------------ reconnect --


async def test_a_dropped_charger_goes_silent_and_is_reconnected_with_its_setpoint(rig):
    gone, staying = rig.chargers[0], rig.chargers[1]
    await rig.sim.stop([gone.id])
    await eventually(lambda: gone.id not in rig.adapter.connected_chargers(), "the central system to see it leave")
    samples = await advance(rig.clock, rig.adapter, [staying.id])
    assert gone.id not in samples, "a charger that is away has no samples: the service marks it stale"
    assert samples[staying.id].ts == rig.clock.now(), "the other charger keeps reporting"

    # A set-point decided while it is away is delivered when it is back.
    await rig.adapter.write_setpoints([Setpoint(device_id=gone.id, p_kw=-7.0, ts=rig.clock.now())])
    assert gone.id not in rig.adapter.delivered
    await rig.sim.start([gone.id])
    await eventually(lambda: rig.sim.boots(gone.id) == 2, "the charger to boot again")
    await eventually(lambda: rig.adapter.delivered.get(gone.id) == -7.0, "the held set-point to reach it")
    assert rig.sim.limit_kw(gone.id) == pytest.approx(7.0, abs=1e-4)
    samples = await advance(rig.clock, rig.adapter, rig.ids)
    assert set(samples) == set(rig.ids), "telemetry resumed"


async def test_chargers_find_a_restarted_central_system_by_themselves(spec, chargers):
    rig = Rig(spec, chargers)
    await rig.start()
    try:
        port = rig.adapter.port
        await rig.adapter.close()
        await eventually(lambda: not any(rig.sim.is_connected(d) for d in rig.ids), "the chargers to notice")
        rig.adapter = OcppAdapter(chargers, port=port, clock=rig.clock)
        await rig.adapter.connect()
        await eventually(lambda: all(rig.sim.boots(d) == 2 for d in rig.ids), "the chargers to reconnect")
        samples = await advance(rig.clock, rig.adapter, rig.ids)
        assert set(samples) == set(rig.ids)
    finally:
        await rig.stop()


# ------------------------------------------------------------------ garbage --


async def test_garbage_frames_are_counted_answered_and_survived(rig, chargers):
    junk = chargers[0].model_copy(update={"id": "e05-ev9", "address": "junk-cp"})
    await rig.adapter.add_device(junk)
    frames = [
        "this is not json",
        '{"not": "a list"}',
        "[]",
        '[7, "x1", {}]',  # no such message type
        '[2, "x2", "NoSuchAction", {}]',
        '[2, "x5", ["not", "a", "name"], {}]',  # trips the library's routing: still a CALLERROR  # unknown action: CALLERROR NotSupported
        '[2, "x3", "StatusNotification", {"connectorId": "one"}]',  # schema violation: CALLERROR
        # Passes the schema, but the value is no number and the time no time: dropped, still answered.
        (
            '[2, "x4", "MeterValues", {"connectorId": 0, "meterValue": [{"timestamp": "yesterday",'
            ' "sampledValue": [{"value": "lots", "measurand": "Power.Active.Import"}]}]}]'
        ),
    ]
    async with connect(f"{rig.adapter.url}/junk-cp", subprotocols=[OCPP_SUBPROTOCOL]) as ws:
        for frame in frames:
            await ws.send(frame)
        await ws.send(b"\x00\x01binary")
        await ws.send('[2, "ok", "Heartbeat", {}]')
        answers = {}
        while "ok" not in answers:
            msg = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
            answers[msg[1]] = msg
    assert answers["x2"][0] == 4 and answers["x2"][2] == "NotSupported"
    assert answers["x3"][0] == 4 and answers["x5"][0] == 4
    assert answers["x4"] == [3, "x4", {}]
    assert answers["ok"][0] == 3, "the connection survived the garbage"
    assert rig.adapter.malformed_frames == len(frames) + 1
    assert "e05-ev9" not in {s.device_id for s in await rig.adapter.read_telemetry()}
    samples = await advance(rig.clock, rig.adapter, rig.ids)
    assert set(samples) == set(rig.ids), "the real chargers kept working"


async def test_a_charger_without_the_ocpp16_subprotocol_is_refused_at_the_handshake(rig, chargers):
    await rig.adapter.add_device(chargers[0].model_copy(update={"id": "e05-ev9", "address": "plain-ws"}))
    for offered in (None, ["ocpp2.0.1"]):
        with pytest.raises(InvalidStatus, match="400"):
            async with connect(f"{rig.adapter.url}/plain-ws", subprotocols=offered):
                pass
    assert "e05-ev9" not in rig.adapter.connected_chargers()
    samples = await advance(rig.clock, rig.adapter, rig.ids)
    assert set(samples) == set(rig.ids)


# ------------------------------------------------------------------ service --


async def test_plant_service_ingests_charger_telemetry_and_dispatches_through_ocpp(tmp_path, spec, chargers):
    store = SqliteStore(tmp_path / "vpp.sqlite3")
    await store.open()
    for enterprise in spec.enterprises:
        await store.put_enterprise(enterprise)
    for device in chargers:
        await store.put_device(device)
    clock = ManualClock(NOON)
    park = SimulatedPark(spec, NOON, seed=3)
    adapter = OcppAdapter(chargers, clock=clock)
    service = PlantService(store, {"ocpp": adapter}, clock, settings=SETTINGS)
    await service.load()  # connects the adapter: the central system listens
    sim = OcppChargers(park, clock, chargers, port=adapter.port)
    await sim.start()
    ids = [d.id for d in chargers]
    try:
        await fresh_samples(adapter, NOON, ids)
        assert await service.poll_telemetry() == len(ids)
        plant = service.plant()
        natural_kw = sum(park.power_kw(i) for i in ids)
        assert plant["net_kw"] == pytest.approx(natural_kw, abs=1e-2)
        assert plant["available_up_kw"] == pytest.approx(-natural_kw, rel=1e-3), "chargers can go down to 0 kW"

        delta_kw = 30.0  # reduce the chargers' draw by 30 kW
        start = clock.now()
        await service.submit_instruction(
            DispatchInstruction(id="ev-1", kind="delta", start=start, end=start + timedelta(minutes=15), delta_kw=delta_kw)
        )
        for _ in range(20):
            await service.control_step()
            await eventually(lambda: all(adapter.delivered.get(k, "x") == v for k, v in adapter.held_setpoints().items()),
                             "set-points to reach the chargers")
            await advance(clock, adapter, ids, 2.0)
            await service.poll_telemetry()
        _, state = await service.instruction_view("ev-1")
        assert state.status is DispatchStatus.ACTIVE
        assert state.delivered_kw == pytest.approx(delta_kw, abs=1.0)
        assert sum(park.power_kw(i) for i in ids) == pytest.approx(natural_kw + delta_kw, abs=1.0)
        assert any("SetChargingProfile" in sim.received(i) for i in ids)

        # A charger that drops out goes stale in the service and comes back when it reconnects.
        gone, staying = ids[0], ids[1:]
        await sim.stop([gone])
        await eventually(lambda: gone not in adapter.connected_chargers(), "the charger to leave")
        for _ in range(6):
            await advance(clock, adapter, staying, 2.0)
            await service.poll_telemetry()
        assert service.plant()["devices_online"] == len(ids) - 1
        await sim.start([gone])
        await advance(clock, adapter, ids, 2.0)
        await service.poll_telemetry()
        assert service.plant()["devices_online"] == len(ids)
    finally:
        await sim.stop()
        await service.stop()
        await store.close()


# ------------------------------------------------------------------ pure parts --

CAPTURED_METER_VALUES = (
    # As a three-phase wallbox sends it (per-phase power and current, voltage, SoC), then through the
    # ocpp library's camel -> snake conversion as the handler receives it.
    '[2,"4711","MeterValues",{"connectorId":1,"transactionId":42,"meterValue":[{"timestamp":"2026-07-01T04:00:00.000Z",'
    '"sampledValue":[{"value":"3680.0","measurand":"Power.Active.Import","phase":"L1","unit":"W"},'
    '{"value":"3700.0","measurand":"Power.Active.Import","phase":"L2","unit":"W"},'
    '{"value":"3620.0","measurand":"Power.Active.Import","phase":"L3","unit":"W"},'
    '{"value":"16.0","measurand":"Current.Import","phase":"L1","unit":"A"},'
    '{"value":"16.1","measurand":"Current.Import","phase":"L2","unit":"A"},'
    '{"value":"15.7","measurand":"Current.Import","phase":"L3","unit":"A"},'
    '{"value":"230.1","measurand":"Voltage","phase":"L1-N","unit":"V"},'
    '{"value":"61","measurand":"SoC","location":"EV","unit":"Percent"},'
    '{"value":"123456","measurand":"Energy.Active.Import.Register","unit":"Wh"}]}]}]'
)


def _handler_form(frame: str) -> dict:
    return camel_to_snake_case(json.loads(frame)[3])


def test_a_captured_three_phase_frame_parses_to_kw_drawn():
    payload = _handler_form(CAPTURED_METER_VALUES)
    reading = parse_meter_values(payload["meter_value"])
    assert reading == ChargerReading(
        ts=NOON, p_kw=pytest.approx(-11.0), current_a=pytest.approx(47.8), soc_pct=61.0, energy_import_kwh=123.456
    )


def test_current_only_frames_use_the_voltage_and_power_in_kw_is_scaled():
    ts = "2026-07-01T04:00:00Z"
    only_current = [{"timestamp": ts, "sampled_value": [{"value": "10", "measurand": "Current.Import", "unit": "A"}]}]
    assert parse_meter_values(only_current, voltage_v=230.0, phases=3).p_kw == pytest.approx(-6.9)
    kw = [{"timestamp": ts, "sampled_value": [{"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"}]}]
    assert parse_meter_values(kw).p_kw == pytest.approx(-7.4)
    export = [{"timestamp": ts, "sampled_value": [{"value": "5000", "measurand": "Power.Active.Export", "unit": "W"}]}]
    assert parse_meter_values(export).p_kw == pytest.approx(5.0), "V2G export is power into the park"
    energy_only = [{"timestamp": ts, "sampled_value": [{"value": "100"}]}]  # default measurand: the register
    assert parse_meter_values(energy_only) is None


@pytest.mark.parametrize(
    "entry, field",
    [
        ({"timestamp": "2026-07-01T04:00:00", "sampled_value": [{"value": "1", "measurand": "Power.Active.Import"}]}, "UTC offset"),
        ({"timestamp": "2026-07-01T04:00:00Z", "sampled_value": [{"value": "NaN", "measurand": "Power.Active.Import"}]}, "not finite"),
        ({"timestamp": "2026-07-01T04:00:00Z", "sampled_value": [{"value": "1", "measurand": "Power.Active.Import", "unit": "A"}]}, "unit 'A'"),
        ({"timestamp": "2026-07-01T04:00:00Z", "sampled_value": [{"value": "140", "measurand": "SoC"}]}, "SoC 140"),
    ],
)
def test_unusable_values_raise_a_parse_error_naming_them(entry, field):
    with pytest.raises(OcppParseError, match=field):
        parse_meter_values([entry])


def test_range_follows_the_connectors_that_can_draw(chargers):
    d = chargers[0]  # several ports
    port_kw = d.rated_kw / d.ports
    reading = ChargerReading(ts=NOON, p_kw=-port_kw * 1.5)
    status = {0: "Available", 1: "Charging", 2: "SuspendedEVSE", 3: "SuspendedEV", 4: "Available"}
    s = charger_sample(d, reading, status)
    assert (s.p_min_kw, s.p_max_kw, s.online) == (pytest.approx(-2 * port_kw), 0.0, True)
    assert charger_sample(d, ChargerReading(ts=NOON, p_kw=0.0), {0: "Available"}).p_min_kw == 0.0
    assert not charger_sample(d, reading, {0: "Faulted"}).online
    assert charger_sample(d, ChargerReading(ts=NOON, p_kw=-3 * port_kw), {}).p_min_kw == -3 * port_kw


def test_per_connector_readings_are_summed_and_stamped_with_the_oldest():
    early, late = NOON, NOON + timedelta(seconds=4)
    one, two = ChargerReading(ts=late, p_kw=-7.0), ChargerReading(ts=early, p_kw=-3.0)
    assert _combined_reading({}, {}) is None
    assert _combined_reading({1: one, 2: two}, {1: 11, 2: 12}) == ChargerReading(ts=early, p_kw=-10.0)
    assert _combined_reading({1: one, 2: two}, {1: 11}) == ChargerReading(ts=late, p_kw=-7.0)
    assert _combined_reading({1: one, 2: two}, {}) == ChargerReading(ts=early, p_kw=-10.0), "no transaction known"
    main = ChargerReading(ts=late, p_kw=-9.5)
    assert _combined_reading({0: main, 1: one}, {1: 11}) is main, "the main meter wins"


@settings(max_examples=200, deadline=None)
@given(
    p_kw=st.floats(min_value=-10_000, max_value=10_000, allow_nan=False),
    unit=st.sampled_from(["W", "A"]),
    voltage_v=st.floats(min_value=100, max_value=400),
    phases=st.sampled_from([1, 2, 3]),
    purpose=st.sampled_from(["TxDefaultProfile", "ChargePointMaxProfile"]),
    profile_id=st.integers(1, 2**31 - 1),
)
def test_charging_profile_round_trips_through_the_wire_and_passes_the_schema(p_kw, unit, voltage_v, phases, purpose, profile_id):
    profile = encode_charging_profile(
        p_kw, start=NOON, profile_id=profile_id, purpose=purpose, rate_unit=unit, voltage_v=voltage_v, phases=phases
    )
    _validate_payload(Call("u", "SetChargingProfile", {"connectorId": 0, "csChargingProfiles": profile}), "1.6")
    # What the charger's handler gets: JSON on the wire, keys in snake_case.
    received = camel_to_snake_case(json.loads(json.dumps(profile)))
    limit = decode_charging_profile(received, voltage_v=voltage_v)
    resolution_kw = 0.05e-3 if unit == "W" else 0.05 * voltage_v * phases * 1e-3
    assert limit.limit_kw == pytest.approx(max(0.0, -p_kw), abs=resolution_kw + 1e-9)
    assert (limit.profile_id, limit.purpose) == (profile_id, purpose)


@settings(max_examples=200, deadline=None)
@given(
    watts=st.lists(st.floats(min_value=0, max_value=350_000, allow_nan=False), min_size=1, max_size=3),
    in_kw=st.booleans(),
    seconds=st.integers(0, 10**8),
)
def test_meter_values_round_trip_power_per_phase(watts, in_kw, seconds):
    ts = NOON + timedelta(seconds=seconds)
    phases = ["L1", "L2", "L3"] if len(watts) > 1 else [None]
    sampled = []
    for w, phase in zip(watts, phases):
        value = {"value": f"{w / 1000:.6f}" if in_kw else f"{w:.3f}", "measurand": "Power.Active.Import", "unit": "kW" if in_kw else "W"}
        if phase:
            value["phase"] = phase
        sampled.append(value)
    reading = parse_meter_values([{"timestamp": ts.isoformat().replace("+00:00", "Z"), "sampled_value": sampled}])
    assert reading.ts == ts
    assert reading.p_kw == pytest.approx(-sum(watts) / 1000, abs=1e-5 * len(watts))
    assert reading.p_kw <= 0.0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_sampled = st.fixed_dictionaries(
    {"value": _json | st.sampled_from(["1", "-3.5", "1e999", "x", "nan"])},
    optional={
        "measurand": _json | st.sampled_from(["Power.Active.Import", "Power.Active.Export", "Current.Import", "SoC", "Voltage"]),
        "unit": _json | st.sampled_from(["W", "kW", "A", "V", "Percent", "Wh"]),
        "phase": _json | st.sampled_from(["L1", "L2", "L3", "L1-N"]),
        "format": st.sampled_from(["Raw", "SignedData"]),
    },
)
_entry = st.fixed_dictionaries(
    {"timestamp": _json | st.sampled_from(["2026-07-01T04:00:00Z", "2026-07-01T04:00:00"]), "sampled_value": _json | st.lists(_sampled, max_size=4)}
)


@settings(max_examples=150, deadline=None)
@given(meter_value=_json | st.lists(_entry | _json, max_size=3))
def test_garbage_meter_values_raise_only_the_parse_error(meter_value):
    try:
        reading = parse_meter_values(meter_value)
    except OcppParseError:
        return
    assert reading is None or isinstance(reading.p_kw, float)


@settings(max_examples=150, deadline=None)
@given(profile=_json | st.dictionaries(st.sampled_from(["chargingProfileId", "stackLevel", "chargingProfilePurpose", "chargingSchedule"]), _json))
def test_garbage_charging_profiles_raise_only_the_parse_error(profile):
    try:
        decode_charging_profile(profile)
    except OcppParseError:
        pass
