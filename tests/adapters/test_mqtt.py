"""The MQTT adapter: wire format as pure functions, then against gateways through the machine's Mosquitto.

Each network test uses its own random topic prefix on the shared broker at
127.0.0.1:1883; the broker-restart test runs a private Mosquitto on a free
loopback port.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import Adapter, AdapterError
from adapters.mqtt import (
    MqttAdapter,
    MqttPayloadError,
    _decode,
    _encode_setpoint,
    _encode_telemetry,
    _parse_availability,
    _parse_setpoint,
    _parse_telemetry,
    _parse_topic,
    device_address,
)
from simulators.mqtt_gateway import MqttGatewayFleet
from simulators.park import ParkSpec, build_park
from simulators.sim import SimulatedPark
from tests.adapters.mqtt_support import (
    BROKER_HOST,
    BROKER_PORT,
    PrivateBroker,
    clear_retained,
    eventually,
    raw_publish,
    unique_prefix,
)
from tests.vpp.harness import SETTINGS
from vpp.clock import ManualClock
from vpp.model import (
    PV,
    Battery,
    DispatchInstruction,
    InterruptibleLoad,
    Setpoint,
    TelemetrySample,
)
from vpp.service import PlantService
from vpp.store import SqliteStore

NOON = datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)  # 12:00 in Shanghai: PV producing, factories running

# ------------------------------------------------------------------ wire format (pure) --

CAPTURED_JSON = (
    b'{"ts":"2026-07-01T04:00:00.25Z","p_kw":-120.5,"p_min_kw":-250,"p_max_kw":250,'
    b'"soc_kwh":512.25,"online":true,"fw":"1.4.2"}'
)
CAPTURED_MSGPACK = bytes.fromhex(  # the same sample from a msgpack gateway, ts as the timestamp extension
    "86a27473d7ff3b9aca006a4490c0a4705f6b77cbc05e200000000000a8705f6d696e5f6b77cbc06f400000000000a8705f6d6178"
    "5f6b77cb406f400000000000a7736f635f6b7768cb4080020000000000a66f6e6c696e65c3"
)


def test_a_captured_json_frame_is_a_sample_in_kw_and_kwh_generator_sign():
    sample = _parse_telemetry("e01-bat1", CAPTURED_JSON)  # "fw": unknown keys are ignored
    assert sample == TelemetrySample(
        device_id="e01-bat1",
        ts=datetime(2026, 7, 1, 4, 0, 0, 250000, tzinfo=timezone.utc),
        p_kw=-120.5,  # charging: drawn from the park
        p_min_kw=-250.0,
        p_max_kw=250.0,
        soc_kwh=512.25,
        online=True,
    )


def test_a_captured_msgpack_frame_is_the_same_sample():
    assert _parse_telemetry("e01-bat1", CAPTURED_MSGPACK) == _parse_telemetry("e01-bat1", CAPTURED_JSON)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ('"2026-07-01T12:00:00+08:00"', NOON),  # any offset, normalised to UTC
        ("1782878400", NOON),  # epoch seconds
        ("1782878400.5", NOON + timedelta(seconds=0.5)),
    ],
)
def test_ts_may_be_iso_with_offset_or_epoch_seconds(ts, expected):
    payload = f'{{"ts":{ts},"p_kw":10,"p_min_kw":0,"p_max_kw":20}}'.encode()
    sample = _parse_telemetry("e01-pv1", payload)
    assert sample.ts == expected and sample.ts.tzinfo is timezone.utc
    assert sample.soc_kwh is None and sample.online is True  # optional fields


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"p_kw":1,"p_min_kw":0,"p_max_kw":2}', "ts: missing"),
        (b'{"ts":"2026-07-01T04:00:00","p_kw":1,"p_min_kw":0,"p_max_kw":2}', "ts: .* has no timezone"),
        (b'{"ts":"yesterday","p_kw":1,"p_min_kw":0,"p_max_kw":2}', "ts: 'yesterday' is not a time"),
        (b'{"ts":1e300,"p_kw":1,"p_min_kw":0,"p_max_kw":2}', "ts: .* is not a time"),
        (b'{"ts":"2026-07-01T04:00:00Z","p_min_kw":0,"p_max_kw":2}', "p_kw: missing"),
        (b'{"ts":"2026-07-01T04:00:00Z","p_kw":"5","p_min_kw":0,"p_max_kw":2}', "p_kw: expected a number, got '5'"),
        (b'{"ts":"2026-07-01T04:00:00Z","p_kw":true,"p_min_kw":0,"p_max_kw":2}', "p_kw: expected a number, got True"),
        (b'{"ts":"2026-07-01T04:00:00Z","p_kw":NaN,"p_min_kw":0,"p_max_kw":2}', "p_kw: nan is not finite"),
        (b'{"ts":"2026-07-01T04:00:00Z","p_kw":1e999,"p_min_kw":0,"p_max_kw":2}', "p_kw: inf is not finite"),
        (b'{"ts":"2026-07-01T04:00:00Z","p_kw":1,"p_min_kw":5,"p_max_kw":2}', "p_min_kw 5.0 exceeds p_max_kw 2.0"),
        (b'{"ts":"2026-07-01T04:00:00Z","p_kw":1,"p_min_kw":0,"p_max_kw":2,"soc_kwh":-1}', "soc_kwh: .*greater than or equal to 0"),
        (b'{"ts":"2026-07-01T04:00:00Z","p_kw":1,"p_min_kw":0,"p_max_kw":2,"online":"yes"}', "online: expected true or false"),
        (b"[1, 2, 3]", "expected a json map, got list"),
        (b"{not json", "not valid json"),
        (b"\x86\xa2ts", "not valid msgpack"),
        (b"", "payload: empty"),
        (b"{" + b" " * 70_000 + b"}", "exceeds 65536"),
        (b"[" * 50_000, "nested too deeply|not valid json"),
    ],
)
def test_a_bad_payload_raises_a_parse_error_naming_the_field(payload, field):
    with pytest.raises(MqttPayloadError, match=field):
        _parse_telemetry("e01-bat1", payload)


def test_a_setpoint_is_written_in_the_documented_forms():
    sp = Setpoint(device_id="e01-bat1", p_kw=-50.0, ts=NOON, instruction_id="i-1")
    assert _encode_setpoint(sp, "json") == b'{"ts":"2026-07-01T04:00:00Z","p_kw":-50.0,"instruction_id":"i-1"}'
    assert _encode_setpoint(sp, "msgpack") == bytes.fromhex(
        "83a27473d6ff6a4490c0a4705f6b77cbc049000000000000ae696e737472756374696f6e5f6964a3692d31"
    )
    release = Setpoint(device_id="e01-bat1", p_kw=None, ts=NOON)
    assert json.loads(_encode_setpoint(release, "json")) == {"ts": "2026-07-01T04:00:00Z", "p_kw": None, "instruction_id": None}


def test_availability_is_online_or_offline_text():
    assert _parse_availability(b"online") is True
    assert _parse_availability(b"offline\n") is False
    for bad in (b"", b"1", b"ONLINE!", b"\xff\xfe", b"x" * 100):
        with pytest.raises(MqttPayloadError, match="availability"):
            _parse_availability(bad)


def test_topics_split_into_address_and_kind():
    assert _parse_topic("vpp/e01/e01-bat1/telemetry", "vpp") == ("e01/e01-bat1", "telemetry")
    assert _parse_topic("site/vpp/e01/e01-bat1/availability", "site/vpp") == ("e01/e01-bat1", "availability")
    assert _parse_topic("vpp/e01/availability", "vpp") == ("e01", "availability")
    for bad in ("vpp/e01/telemetry", "other/e01/x/telemetry", "vpp/e01/x/y/telemetry", "vpp/e01/x/status", "vpp"):
        with pytest.raises(MqttPayloadError, match="topic"):
            _parse_topic(bad, "vpp")


def test_a_device_is_addressed_by_enterprise_and_id_unless_enrolled_with_an_address():
    pv = PV(id="e01-pv1", enterprise_id="e01", rated_kw=100.0)
    assert device_address(pv) == "e01/e01-pv1"
    assert device_address(pv.model_copy(update={"address": "gw-7/inverter-3"})) == "gw-7/inverter-3"
    for bad in ("gw-7", "gw/+/x", "gw/#", "a/b/c", "/x", "$SYS/x", "gw/"):
        with pytest.raises(AdapterError, match=r"address .* must be '<gateway>/<node>'"):
            device_address(pv.model_copy(update={"address": bad}))


async def test_add_device_refuses_a_bad_or_taken_address():
    pv = PV(id="e01-pv1", enterprise_id="e01", rated_kw=100.0)
    adapter = MqttAdapter([pv], prefix=unique_prefix())
    with pytest.raises(AdapterError, match="address 'nowhere' must be"):
        await adapter.add_device(PV(id="e01-pv2", enterprise_id="e01", rated_kw=100.0, address="nowhere"))
    with pytest.raises(AdapterError, match="already used by device 'e01-pv1'"):
        await adapter.add_device(PV(id="e01-pv2", enterprise_id="e01", rated_kw=100.0, address="e01/e01-pv1"))
    await adapter.add_device(pv.model_copy(update={"address": "gw/pv-one"}))  # a re-enrolled device may move
    await adapter.add_device(PV(id="e01-pv2", enterprise_id="e01", rated_kw=100.0, address="e01/e01-pv1"))
    await adapter.close()
    with pytest.raises(AdapterError, match="after close"):
        await adapter.add_device(PV(id="e01-pv3", enterprise_id="e01", rated_kw=100.0))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="prefix"):
        MqttAdapter([], prefix="vpp/#")
    with pytest.raises(ValueError, match="payload_format"):
        MqttAdapter([], payload_format="xml")  # type: ignore[arg-type]


_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
_times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
)


@st.composite
def _samples(draw) -> TelemetrySample:
    lo, hi = sorted((draw(_finite), draw(_finite)))
    return TelemetrySample(
        device_id="e01-bat1",
        ts=draw(_times),
        p_kw=draw(_finite),
        p_min_kw=lo,
        p_max_kw=hi,
        soc_kwh=draw(st.none() | st.floats(min_value=0, max_value=1e6)),
        online=draw(st.booleans()),
    )


@given(sample=_samples(), fmt=st.sampled_from(["json", "msgpack"]))
def test_telemetry_round_trips(sample, fmt):
    assert _parse_telemetry(sample.device_id, _encode_telemetry(sample, fmt)) == sample


@given(
    p_kw=st.none() | _finite,
    ts=_times,
    instruction_id=st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True),
    fmt=st.sampled_from(["json", "msgpack"]),
)
def test_setpoints_round_trip(p_kw, ts, instruction_id, fmt):
    sp = Setpoint(device_id="e01-bat1", p_kw=p_kw, ts=ts, instruction_id=instruction_id)
    assert _parse_setpoint("e01-bat1", _encode_setpoint(sp, fmt)) == sp


def _only_parse_errors(parse, payload: bytes) -> None:
    try:
        parse("e01-bat1", payload)
    except MqttPayloadError:
        pass


_KEYS = st.sampled_from(["ts", "p_kw", "p_min_kw", "p_max_kw", "soc_kwh", "online", "instruction_id"]) | st.text(max_size=5)
_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["2026-07-01T04:00:00Z", "2026-07-01T04:00:00", "9999-12-31T23:59:59+14:00"])
    | st.lists(st.integers(min_value=-(2**63), max_value=2**63), max_size=3)
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=300))
def test_garbage_bytes_raise_nothing_but_the_parse_error(payload):
    _only_parse_errors(_parse_telemetry, payload)
    _only_parse_errors(_parse_setpoint, payload)
    _only_parse_errors(lambda _d, p: _parse_availability(p), payload)


@given(body=st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_garbage_maps_raise_nothing_but_the_parse_error(body):
    for payload in (json.dumps(body).encode(), msgpack.packb(body)):
        _only_parse_errors(_parse_telemetry, payload)
        _only_parse_errors(_parse_setpoint, payload)
    with_large = {**body, "p_kw": 10**400}
    _only_parse_errors(_parse_telemetry, json.dumps(with_large).encode())


@given(topic=st.text(max_size=60))
def test_garbage_topics_raise_nothing_but_the_parse_error(topic):
    try:
        address, kind = _parse_topic(topic, "vpp")
    except MqttPayloadError:
        return
    assert kind in ("telemetry", "setpoint", "availability") and address


@given(payload=st.binary(max_size=50))
def test_format_detection_matches_the_first_byte(payload):
    try:
        _, fmt = _decode(payload)
    except MqttPayloadError:
        return
    assert fmt == ("msgpack" if payload[0] in (*range(0x80, 0x90), 0xDE, 0xDF) else "json")


# --------------------------------------------------------------- against Mosquitto --


@pytest.fixture(scope="module")
def spec() -> ParkSpec:
    return build_park(seed=3, n_enterprises=3)


@dataclasses.dataclass
class Rig:
    adapter: MqttAdapter
    fleet: MqttGatewayFleet
    park: SimulatedPark
    clock: ManualClock
    spec: ParkSpec
    prefix: str

    async def publish_and_wait(self) -> dict[str, TelemetrySample]:
        """All gateways publish now; wait until the adapter holds them; read them (latest per device)."""
        await self.fleet.publish_now()
        now = self.clock.now()
        expected = {d.id for d in self.spec.devices if self.park.is_online(d.id)}

        def arrived() -> bool:  # unread: a round stamped like an earlier one must not count as this one
            return all(any(s.ts == now for s in self.adapter._unread.get(d, ())) for d in expected)

        await eventually(arrived, f"samples stamped {now.isoformat()} of {sorted(expected)}")
        return {s.device_id: s for s in await self.adapter.read_telemetry()}


async def _rig(spec, host=BROKER_HOST, port=BROKER_PORT, fmt="json", **adapter_settings) -> Rig:
    prefix = unique_prefix()
    clock = ManualClock(NOON)
    park = SimulatedPark(spec, NOON, seed=3)
    adapter = MqttAdapter(spec.devices, host, port, prefix=prefix, **adapter_settings)
    # A long interval: the tests publish with publish_now, stamped with the manual clock.
    fleet = MqttGatewayFleet(park, clock, spec.devices, host, port, prefix=prefix, payload_format=fmt, interval_s=3600)
    await adapter.connect()
    await fleet.start()  # each gateway publishes once on connecting
    await eventually(lambda: len(adapter._latest) == len(spec.devices), "the gateways' first telemetry")
    await adapter.read_telemetry()  # drained: the tests start from here
    return Rig(adapter, fleet, park, clock, spec, prefix)


async def _teardown(rig: Rig, host=BROKER_HOST, port=BROKER_PORT) -> None:
    await rig.fleet.stop()
    await rig.adapter.close()
    if port == BROKER_PORT:
        await clear_retained(rig.prefix, host, port)


@pytest.fixture
async def rig(spec):
    rig = await _rig(spec)
    yield rig
    await _teardown(rig)


def _battery(spec: ParkSpec) -> Battery:
    return next(d for d in spec.devices if isinstance(d, Battery))


async def test_is_an_adapter_and_refuses_calls_before_connect_and_after_close(spec):
    adapter = MqttAdapter(spec.devices, prefix=unique_prefix())
    assert isinstance(adapter, Adapter) and adapter.name == "mqtt"
    with pytest.raises(AdapterError, match="before connect"):
        await adapter.read_telemetry()
    with pytest.raises(AdapterError, match="not connected"):
        await adapter.write_setpoints([Setpoint(device_id=_battery(spec).id, p_kw=1.0, ts=NOON)])
    await adapter.connect()
    assert adapter.connected and await adapter.read_telemetry() == []
    await adapter.close()
    await adapter.close()  # twice is fine
    assert not adapter.connected
    for call in (adapter.read_telemetry(), adapter.connect(), adapter.write_setpoints([])):
        with pytest.raises(AdapterError, match="after close"):
            await call


async def test_connect_to_no_broker_is_an_adapter_error(spec, tmp_path):
    port = PrivateBroker(tmp_path).port  # a free port nobody listens on
    adapter = MqttAdapter(spec.devices, port=port, prefix=unique_prefix(), timeout_s=0.5, backoff_initial_s=0.05)
    with pytest.raises(AdapterError, match=f"broker 127.0.0.1:{port} not reachable"):
        await adapter.connect()
    await adapter.close()


async def test_telemetry_comes_in_with_the_parks_values_units_and_signs(rig):
    rig.clock.advance(60)
    samples = await rig.publish_and_wait()
    assert set(samples) == {d.id for d in rig.spec.devices}
    for device in rig.spec.devices:
        sample = samples[device.id]
        assert sample.ts == rig.clock.now()
        assert sample.p_kw == rig.park.power_kw(device.id)
        assert (sample.p_min_kw, sample.p_max_kw) == rig.park.limits_kw(device.id)
        if isinstance(device, Battery):
            assert sample.soc_kwh == pytest.approx(rig.park.soc_kwh(device.id))
        else:
            assert sample.soc_kwh is None
    pv = next(d for d in rig.spec.devices if isinstance(d, PV))
    load = next(d for d in rig.spec.devices if isinstance(d, InterruptibleLoad))
    assert samples[pv.id].p_kw > 0, "PV at noon delivers into the park (+)"
    assert samples[load.id].p_kw < 0, "a running process load draws from the park (-)"
    assert rig.adapter.malformed_frames == 0


async def test_samples_between_two_reads_are_all_returned_then_the_latest_again(rig):
    await rig.publish_and_wait()
    stamps = []
    for _ in range(3):
        rig.clock.advance(1)
        stamps.append(rig.clock.now())
        await rig.fleet.publish_now()
    await eventually(lambda: all(s.ts == stamps[-1] for s in rig.adapter._latest.values()), "three rounds arrive")
    bat = _battery(rig.spec)
    first = [s for s in await rig.adapter.read_telemetry() if s.device_id == bat.id]
    assert [s.ts for s in first] == stamps, "every sample since the last read, oldest first"
    again = [s for s in await rig.adapter.read_telemetry() if s.device_id == bat.id]
    assert again == first[-1:], "nothing new: the latest once more"


async def test_a_setpoint_goes_out_with_qos1_is_seen_by_the_gateway_and_moves_the_device(rig):
    bat = _battery(rig.spec)
    await rig.publish_and_wait()
    charge_kw = -bat.rated_kw / 4
    await rig.adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=charge_kw, ts=rig.clock.now(), instruction_id="i-7")])
    gateway = rig.fleet.gateway(bat.enterprise_id)
    await eventually(lambda: len(gateway.setpoints_received) == 1, "the gateway gets the set-point")
    assert gateway.setpoints_received[0] == Setpoint(device_id=bat.id, p_kw=charge_kw, ts=NOON, instruction_id="i-7")
    soc_before = rig.park.soc_kwh(bat.id)
    rig.clock.advance(60)
    samples = await rig.publish_and_wait()
    assert samples[bat.id].p_kw == pytest.approx(charge_kw), "the simulated battery follows it"
    assert samples[bat.id].soc_kwh > soc_before, "charging fills the battery"
    # Release: p_kw null goes out, the battery returns to idle.
    await rig.adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=None, ts=rig.clock.now())])
    await eventually(lambda: len(gateway.setpoints_received) == 2, "the gateway gets the release")
    rig.clock.advance(60)
    assert (await rig.publish_and_wait())[bat.id].p_kw == 0.0
    # A device this adapter does not serve is counted, not sent.
    await rig.adapter.write_setpoints([Setpoint(device_id="nobody-bat9", p_kw=1.0, ts=rig.clock.now())])
    assert rig.adapter.unknown_setpoints == 1


async def test_a_msgpack_gateway_gets_its_setpoints_in_msgpack(spec):
    rig = await _rig(spec, fmt="msgpack")
    try:
        bat = _battery(spec)
        samples = await rig.publish_and_wait()
        assert samples[bat.id].soc_kwh == pytest.approx(rig.park.soc_kwh(bat.id))
        assert rig.adapter._format_of[bat.id] == "msgpack"  # detected from its telemetry
        await rig.adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=bat.rated_kw / 5, ts=rig.clock.now())])
        gateway = rig.fleet.gateway(bat.enterprise_id)
        await eventually(lambda: len(gateway.setpoints_received) == 1, "the msgpack gateway reads the set-point")
        assert gateway.malformed_setpoints == 0
        rig.clock.advance(60)
        assert (await rig.publish_and_wait())[bat.id].p_kw == pytest.approx(bat.rated_kw / 5)
    finally:
        await _teardown(rig)


async def test_a_gateway_dropped_mid_run_goes_stale_and_is_back_when_it_returns(rig):
    await rig.publish_and_wait()
    bat = _battery(rig.spec)
    dropped = rig.fleet.gateway(bat.enterprise_id)
    mine = {d.id for d in rig.spec.devices if d.enterprise_id == bat.enterprise_id}
    await dropped.stop(graceful=False)  # power cut: the broker publishes its Last Will "offline"
    await eventually(lambda: rig.adapter._gateway_online.get(bat.enterprise_id) is False, "the Last Will arrives")
    rig.clock.advance(30)
    for gw in rig.fleet.gateways.values():
        if gw is not dropped:
            await gw.publish_now()
    others = {d.id for d in rig.spec.devices} - mine
    now = rig.clock.now()
    await eventually(lambda: all(rig.adapter._latest[d].ts == now for d in others), "the other gateways go on")
    ids = {s.device_id for s in await rig.adapter.read_telemetry()}
    assert ids == others, "the dropped gateway's devices are left out"
    await dropped.start()  # back: announces itself online and publishes at once
    await eventually(lambda: rig.adapter._gateway_online.get(bat.enterprise_id) is True, "the gateway is back online")
    await eventually(lambda: all(rig.adapter._latest[d].ts == now for d in mine), "its telemetry resumes")
    assert {s.device_id for s in await rig.adapter.read_telemetry()} == mine | others


async def test_a_device_its_gateway_reports_offline_is_left_out(rig):
    await rig.publish_and_wait()
    bat = _battery(rig.spec)
    rig.park.set_online(bat.id, False)
    rig.clock.advance(5)
    samples = await rig.publish_and_wait()
    await eventually(lambda: rig.adapter._device_online.get(bat.id) is False, "its availability says offline")
    assert bat.id not in {s.device_id for s in await rig.adapter.read_telemetry()}
    assert len(samples) >= len(rig.spec.devices) - 1
    rig.park.set_online(bat.id, True)
    rig.clock.advance(5)
    await rig.publish_and_wait()
    assert bat.id in {s.device_id for s in await rig.adapter.read_telemetry()}


async def test_garbage_is_counted_and_survived(rig):
    await rig.publish_and_wait()
    bat = _battery(rig.spec)
    p = rig.prefix
    await raw_publish(
        [
            (f"{p}/{bat.enterprise_id}/{bat.id}/telemetry", b"\x00\xff not a payload"),
            (f"{p}/{bat.enterprise_id}/{bat.id}/telemetry", b'{"ts":"2026-07-01T04:00:00Z","p_kw":"a lot"}'),
            (f"{p}/{bat.enterprise_id}/{bat.id}/telemetry", b"\x86\xa2ts"),  # truncated msgpack
            (f"{p}/{bat.enterprise_id}/nobody-pv9/telemetry", CAPTURED_JSON),  # a device nobody enrolled
            (f"{p}/{bat.enterprise_id}/{bat.id}/availability", b"perhaps"),
        ]
    )
    await eventually(lambda: rig.adapter.malformed_frames == 5, "five bad messages counted")
    assert rig.adapter.connected
    rig.clock.advance(10)
    samples = await rig.publish_and_wait()  # and it goes on working
    assert samples[bat.id].ts == rig.clock.now()
    assert rig.adapter.malformed_frames == 5


async def test_a_broker_dropped_mid_run_is_reconnected_and_telemetry_resumes(spec, tmp_path):
    broker = PrivateBroker(tmp_path)
    broker.start()
    rig = await _rig(spec, port=broker.port, backoff_initial_s=0.05, backoff_max_s=0.5, keepalive_s=2)
    try:
        bat = _battery(spec)
        first = await rig.publish_and_wait()
        broker.stop()
        await eventually(lambda: not rig.adapter.connected, "the adapter notices the broker is gone")
        with pytest.raises(AdapterError, match="not connected"):
            await rig.adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=10.0, ts=rig.clock.now())])
        rig.clock.advance(SETTINGS.stale_after_s + 5)
        with pytest.raises(RuntimeError, match="not connected"):
            await rig.fleet.publish_now()
        held = await rig.adapter.read_telemetry()  # a broker shutting down may first deliver some Last Wills
        assert all(first[s.device_id] == s for s in held), "nothing new arrives while the broker is away"
        assert all((rig.clock.now() - s.ts).total_seconds() > SETTINGS.stale_after_s for s in held)

        broker.start()
        await eventually(lambda: rig.adapter.connected, "the adapter reconnects by itself")
        await eventually(lambda: all(gw.connected for gw in rig.fleet.gateways.values()), "the gateways reconnect")
        assert rig.adapter.reconnects == 1
        samples = await rig.publish_and_wait()
        assert samples[bat.id].ts == rig.clock.now()
        await rig.adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=10.0, ts=rig.clock.now())])
        gateway = rig.fleet.gateway(bat.enterprise_id)
        await eventually(lambda: len(gateway.setpoints_received) == 1, "set-points flow again")
    finally:
        await _teardown(rig, port=broker.port)
        broker.stop()


async def test_the_plant_service_ingests_mqtt_telemetry_and_dispatches_through_it(spec, tmp_path):
    prefix = unique_prefix()
    devices = [d.model_copy(update={"adapter": "mqtt"}) for d in spec.devices]
    store = SqliteStore(tmp_path / "vpp.sqlite3")
    await store.open()
    for enterprise in spec.enterprises:
        await store.put_enterprise(enterprise)
    for device in devices:
        await store.put_device(device)
    clock = ManualClock(NOON)
    park = SimulatedPark(spec, NOON, seed=3)
    adapter = MqttAdapter(devices, prefix=prefix)
    fleet = MqttGatewayFleet(park, clock, devices, prefix=prefix, interval_s=3600)
    service = PlantService(store, {"mqtt": adapter}, clock, settings=dataclasses.replace(SETTINGS, schedule_interval_s=0))
    try:
        await service.load()  # connects the adapter
        await fleet.start()

        async def step(seconds: float) -> int:
            clock.advance(seconds)
            up = [gw for gw in fleet.gateways.values() if gw.connected]
            for gw in up:
                await gw.publish_now()
            now = clock.now()
            heard = [d.id for d in devices if fleet.gateway(d.enterprise_id) in up]
            await eventually(lambda: all(adapter._latest[d].ts == now for d in heard), "fresh samples")
            ingested = await service.poll_telemetry()
            await service.control_step()
            return ingested

        def fresh(device_ids) -> list[bool]:
            snapshot = service.snapshot()
            return [bool(snapshot.fresh[snapshot.device_ids.index(d)]) for d in device_ids]

        await eventually(lambda: len(adapter._latest) == len(devices), "each gateway publishes on connecting")
        assert await service.poll_telemetry() == len(devices)
        assert await step(1) == len(devices)
        stored = await store.latest_telemetry()
        assert set(stored) == {d.id for d in devices} and all(s.ts == clock.now() for s in stored.values())
        assert service.plant()["devices_online"] == len(devices)

        delta_kw = round(0.3 * service.plant()["available_up_kw"], 1)
        assert delta_kw > 20
        start = clock.now()
        await service.submit_instruction(
            DispatchInstruction(id="i-mqtt", kind="delta", start=start, end=start + timedelta(minutes=15), delta_kw=delta_kw)
        )
        for _ in range(30):
            await step(2)
        sent = await store.setpoints_for("i-mqtt")
        assert sent, "the service sent set-points"
        await eventually(
            lambda: len([sp for sp in fleet.setpoints_received if sp.instruction_id == "i-mqtt"]) == len(sent),
            "every set-point reaches a gateway",
        )
        _, state = await service.instruction_view("i-mqtt")
        assert state.delivered_kw == pytest.approx(delta_kw, rel=0.05), "the park delivers through MQTT"

        # The gateway carrying the largest share loses power mid-run: its devices go stale, the rest take over.
        held = {sp.device_id: sp.p_kw for sp in sent if sp.p_kw is not None}
        busiest = max(held, key=lambda d: abs(held[d] - state.device_baseline_kw[d]))
        dropped = fleet.gateway(spec.device(busiest).enterprise_id)
        behind = [d.id for d in devices if d.enterprise_id == dropped.gateway_id]
        await dropped.stop(graceful=False)
        dropped_at = clock.now()
        for _ in range(8):
            await step(2)
        assert not any(fresh(behind)), "no telemetry for 16 s: stale"
        _, state = await service.instruction_view("i-mqtt")
        assert state.reallocations >= 1
        after = [sp for sp in await store.setpoints_for("i-mqtt") if sp.ts > dropped_at]
        assert any(sp.device_id not in behind and sp.p_kw is not None for sp in after), "the others take over"
        stale_from = dropped_at + timedelta(seconds=SETTINGS.stale_after_s)
        assert all(sp.p_kw is None for sp in after if sp.device_id in behind and sp.ts > stale_from)
        live = [sp for sp in after if sp.device_id not in behind]
        await eventually(lambda: all(sp in fleet.setpoints_received for sp in live), "the live gateways get them")
        await dropped.start()  # back: reconnected, publishing again
        await step(2)
        assert all(fresh(behind)), "its devices report again"

        await raw_publish([(f"{prefix}/e01/e01-ghost/telemetry", b"garbage")])
        await eventually(lambda: adapter.malformed_frames == 1, "garbage counted")
        await step(2)
        assert 'vpp_adapter_malformed_total{adapter="mqtt"} 1.0' in service.metrics.render().decode()
    finally:
        await service.stop()  # closes the adapter
        await fleet.stop()
        await store.close()
        await clear_retained(prefix)

