"""Enterprise MQTT gateways standing in for the real ones, driven by the simulated park.

A :class:`MqttGateway` is one MQTT client for the devices behind one gateway
(by default one enterprise): every ``interval_s`` wall seconds it advances
the park to ``clock.now()`` and publishes each online device's telemetry,
stamped with that time; it subscribes to its devices' set-points (QoS 1)
and applies them to the park. It announces itself ``online`` (retained)
and leaves a Last Will ``offline``, and keeps each device's retained
availability in step with the park (``SimulatedPark.set_online``).
:class:`MqttGatewayFleet` runs one gateway per gateway id found in the
devices' addresses. The wire format is written out here on purpose rather
than borrowed from :mod:`adapters.mqtt`, so the adapter's tests check it
against an independent peer (see ``docs/protocols/mqtt.md``).

The publishing cadence is wall time, whatever the clock: a
:class:`~vpp.clock.ManualClock` in a test stamps the samples, and
:meth:`MqttGateway.publish_now` publishes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Literal

import aiomqtt
import msgpack
import structlog

from adapters.mqtt import (
    DEFAULT_PREFIX,
    availability_topic,
    check_prefix,
    device_address,
    gateway_availability_topic,
    telemetry_topic,
)
from simulators.sim import SimulatedPark
from vpp.clock import Clock
from vpp.model import Battery, Device, Setpoint

__all__ = ["MqttGateway", "MqttGatewayFleet"]

PayloadFormat = Literal["json", "msgpack"]


def _ts_value(ts: datetime, fmt: PayloadFormat) -> object:
    """JSON: ISO 8601 text ending in Z; msgpack: the timestamp extension type (-1)."""
    utc = ts.astimezone(timezone.utc)
    return msgpack.Timestamp.from_datetime(utc) if fmt == "msgpack" else utc.isoformat().replace("+00:00", "Z")


def _pack(body: dict, fmt: PayloadFormat) -> bytes:
    return msgpack.packb(body, use_bin_type=True) if fmt == "msgpack" else json.dumps(body).encode()


def _unpack_setpoint(device_id: str, payload: bytes) -> Setpoint:
    """A set-point payload (JSON or msgpack map) as a Setpoint; raises ValueError (or pydantic's) when it is not one."""
    if payload[:1] and payload[0] in (*range(0x80, 0x90), 0xDE, 0xDF):
        body = msgpack.unpackb(payload, raw=False, timestamp=3)
    else:
        body = json.loads(payload)
    if not isinstance(body, dict) or "p_kw" not in body or "ts" not in body:
        raise ValueError(f"set-point payload {payload[:100]!r} lacks p_kw or ts")
    ts = body["ts"]
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return Setpoint(device_id=device_id, p_kw=body["p_kw"], ts=ts, instruction_id=body.get("instruction_id"))


class MqttGateway:
    """One gateway: publishes its devices' telemetry, applies their set-points to the park.

    Parameters
    ----------
    park : SimulatedPark
        The simulated world the devices live in (shared by all gateways).
    clock : Clock
        Stamps the samples; the park is advanced to ``clock.now()`` before each publication.
    devices : Sequence[Device]
        Devices behind this gateway; their addresses share one gateway level.
    host, port : str, int
        Broker address (port [unitless]).
    prefix : str
        First topic level(s), as configured in the adapter.
    payload_format : "json" | "msgpack"
        Encoding of its telemetry (and what it expects back).
    interval_s : float
        Wall time between publications [s].
    phase_s : float
        Wall delay before the first periodic publication, to spread gateways [s].
    telemetry_qos : int
        QoS of telemetry, 0 or 1 [unitless].
    keepalive_s : int
        MQTT keep-alive; the broker fires the Last Will after 1.5 times this of silence [s].
    min_step_s : float
        Advance the shared park only when it is at least this far behind the
        clock: hundreds of gateways on one park then step it once per this
        interval rather than once per gateway; 0 steps it every time [s].

    Attributes
    ----------
    setpoints_received : deque[Setpoint]
        The last 10,000 set-points applied to the park, oldest first.
    published : int
        Telemetry messages published since construction [unitless].
    malformed_setpoints : int
        Set-point messages that could not be read (dropped) [unitless].
    """

    def __init__(
        self,
        park: SimulatedPark,
        clock: Clock,
        devices: Sequence[Device],
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        prefix: str = DEFAULT_PREFIX,
        payload_format: PayloadFormat = "json",
        interval_s: float = 1.0,
        phase_s: float = 0.0,
        telemetry_qos: int = 0,
        keepalive_s: int = 5,
        min_step_s: float = 0.0,
    ) -> None:
        if not devices:
            raise ValueError("a gateway needs at least one device")
        if payload_format not in ("json", "msgpack"):
            raise ValueError(f"payload_format {payload_format!r} must be 'json' or 'msgpack'")
        addresses = {d.id: device_address(d) for d in devices}
        gateways = {a.split("/", 1)[0] for a in addresses.values()}
        if len(gateways) != 1:
            raise ValueError(f"devices of one gateway must share the gateway level of their address, got {sorted(gateways)}")
        self.park, self.clock = park, clock
        self.devices = list(devices)
        self.host, self.port = host, port
        self.prefix = check_prefix(prefix)
        self.payload_format: PayloadFormat = payload_format
        self.interval_s, self.phase_s = interval_s, phase_s
        self.telemetry_qos = telemetry_qos
        self.keepalive_s = keepalive_s
        self.min_step_s = min_step_s
        self.gateway_id = gateways.pop()
        self.setpoints_received: deque[Setpoint] = deque(maxlen=10_000)
        self.published = 0
        self.malformed_setpoints = 0
        self.log = structlog.get_logger("vpp.simulators.mqtt_gateway")
        self._address_of = addresses
        self._device_at = {a.split("/", 1)[1]: d for d, a in addresses.items()}  # node -> device id
        self._announced: dict[str, bool] = {}  # device id -> availability last published
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def connected(self) -> bool:
        """True while connected to the broker, subscribed and announced online."""
        return self._up.is_set()

    async def start(self, timeout_s: float = 10.0) -> None:
        """Connect (and keep reconnecting with backoff); returns once online, or raises TimeoutError."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"mqtt-gateway-{self.gateway_id}")
        await asyncio.wait_for(self._up.wait(), timeout_s)

    async def stop(self, graceful: bool = True) -> None:
        """Disconnect. ``graceful``: announce ``offline`` and send DISCONNECT; else drop the TCP
        connection as a power cut would, so the broker publishes the Last Will. Safe to call twice."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        client = self._client
        if client is not None and graceful:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self._gateway_topic, b"offline", qos=1, retain=True, timeout=2.0)
        elif client is not None:
            sock = client._client.socket()  # aiomqtt exposes no "drop": cut the paho client's socket under it
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                # Let the message loop see the broken connection and end by itself (it reads the error).
                await asyncio.wait({task}, timeout=5.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._up.clear()

    @property
    def _gateway_topic(self) -> str:
        return gateway_availability_topic(self.prefix, self.gateway_id)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                will = aiomqtt.Will(self._gateway_topic, b"offline", qos=1, retain=True)
                async with aiomqtt.Client(
                    self.host, self.port, identifier=f"vpp-gw-{self.gateway_id}-{uuid.uuid4().hex[:8]}",
                    keepalive=self.keepalive_s, will=will, clean_session=True, timeout=5.0,
                ) as client:  # fmt: skip
                    client.pending_calls_threshold = 1_000_000
                    await client.subscribe(f"{self.prefix}/{self.gateway_id}/+/setpoint", qos=1)
                    await client.publish(self._gateway_topic, b"online", qos=1, retain=True)
                    self._announced.clear()  # re-announce every device on a fresh connection
                    self._client = client
                    failures = 0
                    await self._publish(client)
                    self._up.set()
                    publisher = asyncio.create_task(self._publish_loop(client))
                    try:
                        async for message in client.messages:
                            self._on_setpoint(message.topic.value, message.payload)
                    finally:
                        publisher.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await publisher
            except Exception as exc:  # MqttError mostly: the broker went away; try again
                failures += 1
                self.log.info("gateway lost the broker", gateway=self.gateway_id, error=str(exc))
            finally:
                self._client = None
                self._up.clear()
            if self._stopping:
                return
            await asyncio.sleep(min(5.0, 0.2 * 2 ** min(failures, 5)) * random.uniform(0.8, 1.2))

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.phase_s
        while True:
            due = max(due + self.interval_s, loop.time())  # never catch up in a burst after a stall
            await asyncio.sleep(due - loop.time())
            try:
                await self._publish(client)
            except aiomqtt.MqttError:
                return  # the message loop sees the disconnection and reconnects
            except Exception:
                self.log.exception("gateway publish failed", gateway=self.gateway_id)

    async def publish_now(self) -> None:
        """Publish every device's telemetry at once (tests use it instead of waiting for the interval)."""
        client = self._client
        if client is None or not self._up.is_set():
            raise RuntimeError(f"gateway {self.gateway_id} is not connected")
        await self._publish(client)

    async def _publish(self, client: aiomqtt.Client) -> None:
        """Advance the park to now; publish availability changes and each online device's telemetry."""
        now = self.clock.now()
        if (now - self.park.now).total_seconds() >= self.min_step_s:
            self.park.step(now)
        ts = _ts_value(now, self.payload_format)
        sends = []
        for device in self.devices:
            online = self.park.is_online(device.id)
            address = self._address_of[device.id]
            if self._announced.get(device.id) is not online:
                payload = b"online" if online else b"offline"
                sends.append(client.publish(availability_topic(self.prefix, address), payload, qos=1, retain=True))
                self._announced[device.id] = online
            if online:
                body = self._telemetry_body(device, ts)
                topic = telemetry_topic(self.prefix, address)
                sends.append(client.publish(topic, _pack(body, self.payload_format), qos=self.telemetry_qos))
                self.published += 1
        await asyncio.gather(*sends)

    def _telemetry_body(self, device: Device, ts: object) -> dict:
        """The documented telemetry map: powers in generator convention [kW], SoC [kWh] for batteries."""
        lo, hi = self.park.limits_kw(device.id)
        body = {
            "ts": ts,
            "p_kw": self.park.power_kw(device.id) + 0.0,  # + 0.0 turns -0.0 into 0.0
            "p_min_kw": lo + 0.0,
            "p_max_kw": hi + 0.0,
            "online": True,
        }
        if isinstance(device, Battery):
            body["soc_kwh"] = max(self.park.soc_kwh(device.id), 0.0)
        return body

    def _on_setpoint(self, topic: str, payload: object) -> None:
        """Apply one set-point to the park at the clock's time; unreadable ones are counted and dropped."""
        try:
            node = topic.split("/")[-2]
            device_id = self._device_at[node]
            setpoint = _unpack_setpoint(device_id, bytes(payload))  # type: ignore[arg-type]
        except Exception as exc:
            self.malformed_setpoints += 1
            self.log.warning("gateway dropped a set-point", gateway=self.gateway_id, topic=topic, error=str(exc)[:200])
            return
        self.park.step(self.clock.now())  # the time before ran under the old set-point
        self.park.apply_setpoints([setpoint])
        self.setpoints_received.append(setpoint)


class MqttGatewayFleet:
    """One :class:`MqttGateway` per gateway id among ``devices`` (by default one per enterprise).

    Periodic publications are spread evenly over ``interval_s`` across the
    gateways. Keyword arguments go to every gateway.
    """

    def __init__(
        self,
        park: SimulatedPark,
        clock: Clock,
        devices: Sequence[Device],
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        interval_s: float = 1.0,
        **settings: object,
    ) -> None:
        groups: dict[str, list[Device]] = {}
        for device in devices:
            groups.setdefault(device_address(device).split("/", 1)[0], []).append(device)
        n = max(len(groups), 1)
        self.gateways = {
            gw: MqttGateway(park, clock, group, host, port, interval_s=interval_s, phase_s=interval_s * k / n, **settings)  # type: ignore[arg-type]
            for k, (gw, group) in enumerate(sorted(groups.items()))
        }

    def gateway(self, gateway_id: str) -> MqttGateway:
        """The gateway with this id (KeyError if none)."""
        return self.gateways[gateway_id]

    @property
    def setpoints_received(self) -> list[Setpoint]:
        """Set-points applied by all gateways (each gateway's oldest first)."""
        return [sp for gw in self.gateways.values() for sp in gw.setpoints_received]

    @property
    def published(self) -> int:
        """Telemetry messages published by all gateways [unitless]."""
        return sum(gw.published for gw in self.gateways.values())

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start every gateway; returns once all are online."""
        await asyncio.gather(*(gw.start(timeout_s) for gw in self.gateways.values()))

    async def stop(self, graceful: bool = True) -> None:
        """Stop every gateway (see :meth:`MqttGateway.stop`)."""
        await asyncio.gather(*(gw.stop(graceful) for gw in self.gateways.values()))

    async def publish_now(self) -> None:
        """Every gateway publishes at once."""
        await asyncio.gather(*(gw.publish_now() for gw in self.gateways.values()))
