"""The simulated enterprise gateway, observed with a plain MQTT client on the machine's Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, timezone

import aiomqtt
import msgpack
import pytest

from simulators.mqtt_gateway import MqttGateway
from simulators.park import ParkSpec, build_park
from simulators.sim import SimulatedPark
from tests.adapters.mqtt_support import (
    BROKER_HOST,
    BROKER_PORT,
    clear_retained,
    eventually,
    raw_publish,
    unique_prefix,
)
from vpp.clock import ManualClock, RealClock
from vpp.model import PV, Battery

NOON = datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def spec() -> ParkSpec:
    return build_park(seed=3, n_enterprises=3)


@pytest.fixture
async def prefix():
    prefix = unique_prefix()
    yield prefix
    await clear_retained(prefix)


def _enterprise_with_battery(spec: ParkSpec) -> str:
    return next(d.enterprise_id for d in spec.devices if isinstance(d, Battery))


class Listener:
    """Subscribes to everything below a prefix and keeps (topic, payload, retained) in arrival order."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.messages: list[tuple[str, bytes, bool]] = []
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _listen(self) -> None:
        async with aiomqtt.Client(BROKER_HOST, BROKER_PORT) as client:
            await client.subscribe(f"{self.prefix}/#", qos=1)
            self._ready.set()
            async for m in client.messages:
                self.messages.append((m.topic.value, bytes(m.payload), m.retain))

    def on(self, topic_suffix: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == f"{self.prefix}/{topic_suffix}"]


async def _retained(topic: str) -> bytes | None:
    """The retained payload of a topic, read by a fresh subscriber (None when nothing arrives)."""
    async with aiomqtt.Client(BROKER_HOST, BROKER_PORT) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(1.0):
                async for m in client.messages:
                    return bytes(m.payload)
        except TimeoutError:
            return None
    return None


async def test_devices_of_two_gateways_are_refused(spec):
    park = SimulatedPark(spec, NOON, seed=3)
    with pytest.raises(ValueError, match="share the gateway level"):
        MqttGateway(park, ManualClock(NOON), spec.devices)


async def test_it_announces_itself_and_publishes_documented_telemetry_on_its_interval(spec, prefix):
    eid = _enterprise_with_battery(spec)
    devices = spec.devices_of(eid)
    park = SimulatedPark(spec, datetime.now(timezone.utc), seed=3)
    gateway = MqttGateway(park, RealClock(), devices, prefix=prefix, interval_s=0.2)
    async with Listener(prefix) as listener:
        await gateway.start()
        try:
            bat = next(d for d in devices if isinstance(d, Battery))
            await eventually(lambda: len(listener.on(f"{eid}/{bat.id}/telemetry")) >= 4, "periodic telemetry")
            assert listener.on(f"{eid}/availability") == [b"online"]
            for device in devices:
                assert listener.on(f"{eid}/{device.id}/availability") == [b"online"]
            bodies = [json.loads(p) for p in listener.on(f"{eid}/{bat.id}/telemetry")]
            assert set(bodies[0]) == {"ts", "p_kw", "p_min_kw", "p_max_kw", "soc_kwh", "online"}
            stamps = [datetime.fromisoformat(b["ts"]) for b in bodies]
            assert stamps == sorted(stamps) and stamps[0].tzinfo is not None
            pv = next((d for d in devices if isinstance(d, PV)), None)
            if pv is not None:
                assert "soc_kwh" not in json.loads(listener.on(f"{eid}/{pv.id}/telemetry")[0])
            assert gateway.published >= 4 * len(devices)
        finally:
            await gateway.stop()
    assert await _retained(f"{prefix}/{eid}/availability") == b"offline", "a clean stop announces offline"


async def test_a_power_cut_leaves_the_last_will(spec, prefix):
    eid = _enterprise_with_battery(spec)
    park = SimulatedPark(spec, NOON, seed=3)
    gateway = MqttGateway(park, ManualClock(NOON), spec.devices_of(eid), prefix=prefix, interval_s=3600)
    await gateway.start()
    assert await _retained(f"{prefix}/{eid}/availability") == b"online"
    await gateway.stop(graceful=False)
    await eventually(lambda: not gateway.connected, "the gateway is down")
    payload = None
    for _ in range(50):  # the broker publishes the Will once it sees the connection close
        payload = await _retained(f"{prefix}/{eid}/availability")
        if payload == b"offline":
            break
    assert payload == b"offline"


async def test_setpoints_in_json_or_msgpack_move_the_park_and_garbage_is_counted(spec, prefix):
    eid = _enterprise_with_battery(spec)
    bat = next(d for d in spec.devices_of(eid) if isinstance(d, Battery))
    clock = ManualClock(NOON)
    park = SimulatedPark(spec, NOON, seed=3)
    gateway = MqttGateway(park, clock, spec.devices_of(eid), prefix=prefix, interval_s=3600)
    await gateway.start()
    try:
        topic = f"{prefix}/{eid}/{bat.id}/setpoint"
        ts = msgpack.Timestamp.from_datetime(NOON)
        await raw_publish(
            [
                (topic, b'{"ts":"2026-07-01T04:00:00Z","p_kw":-100.0,"instruction_id":"i-1"}'),
                (topic, b"\x00garbage"),
                (topic, b'{"ts":"2026-07-01T04:00:00Z"}'),  # no p_kw
                (f"{prefix}/{eid}/nobody/setpoint", b'{"ts":"2026-07-01T04:00:00Z","p_kw":1}'),
            ]
        )
        await eventually(lambda: gateway.malformed_setpoints == 3, "three bad set-points counted")
        assert [sp.p_kw for sp in gateway.setpoints_received] == [-100.0]
        clock.advance(60)
        park.step(clock.now())
        assert park.power_kw(bat.id) == pytest.approx(-100.0)
        await raw_publish([(topic, msgpack.packb({"ts": ts, "p_kw": None, "instruction_id": None}))])
        await eventually(lambda: len(gateway.setpoints_received) == 2, "the msgpack release is applied")
        clock.advance(60)
        park.step(clock.now())
        assert park.power_kw(bat.id) == 0.0
    finally:
        await gateway.stop()
