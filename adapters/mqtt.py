"""MQTT adapter for the enterprises' gateways (aiomqtt against a broker such as Mosquitto).

Each enterprise runs a gateway that publishes its devices' telemetry and
receives their set-points through a broker (wire format in
``docs/protocols/mqtt.md``). Topics, below a configurable ``prefix``
(default ``"vpp"``), name a device by its *address* ``{gateway}/{node}``:
by default ``{enterprise_id}/{device_id}``, or ``Device.address`` when the
enrolment gives one.

===========================================  =========  ===  ======  ==========================
topic                                        direction  QoS  retain  payload
===========================================  =========  ===  ======  ==========================
``{prefix}/{gateway}/{node}/telemetry``      gw -> vpp  0|1  no      JSON or msgpack map
``{prefix}/{gateway}/{node}/setpoint``       vpp -> gw  1    no      JSON or msgpack map
``{prefix}/{gateway}/{node}/availability``   gw -> vpp  1    yes     ``online`` / ``offline``
``{prefix}/{gateway}/availability``          gw -> vpp  1    yes     ``online`` / ``offline``
                                                                     (the gateway's Last Will)
===========================================  =========  ===  ======  ==========================

The wire format is written as pure functions (``_parse_*`` / ``_encode_*``,
raising :class:`MqttPayloadError` naming the bad field) driven by a thin
aiomqtt shell: one subscriber task keeps the latest sample of each device
and reconnects to the broker with exponential backoff by itself. While the
broker is away no samples arrive, so the devices go stale on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Literal

import aiomqtt
import msgpack
import pydantic
import structlog

from adapters.base import Adapter, AdapterError
from vpp.model import Device, Setpoint, TelemetrySample

__all__ = [
    "DEFAULT_PREFIX",
    "MqttAdapter",
    "MqttPayloadError",
    "PayloadFormat",
    "availability_topic",
    "device_address",
    "gateway_availability_topic",
    "setpoint_topic",
    "telemetry_topic",
]

PayloadFormat = Literal["json", "msgpack"]
DEFAULT_PREFIX = "vpp"
MAX_PAYLOAD_BYTES = 65_536
"""Larger payloads are dropped unread: no telemetry map is near this size [B]."""
ONLINE, OFFLINE = "online", "offline"

_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
"""One topic level of an address: an identifier, so never a wildcard nor ``$``-topic."""
_PREFIX_LEVEL = re.compile(r"^[^+#/\x00]+$")
_MSGPACK_MAP_FIRST_BYTES = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
"""First byte of a msgpack map (fixmap, map16, map32); a JSON object starts with ``{`` (0x7b) or whitespace."""
_TELEMETRY_FLOATS = ("p_kw", "p_min_kw", "p_max_kw")


class MqttPayloadError(AdapterError, ValueError):
    """A topic or payload that does not follow the wire format; the message names the field and value."""


# ------------------------------------------------------------ topics ----


def check_prefix(prefix: str) -> str:
    """The prefix unchanged; raises ValueError when it could not be a topic prefix (wildcards, empty levels)."""
    if not prefix or prefix.startswith("$") or not all(_PREFIX_LEVEL.match(level) for level in prefix.split("/")):
        raise ValueError(f"prefix {prefix!r} must be non-empty topic levels without '+', '#', a leading '$' or empty levels")
    return prefix


def device_address(device: Device) -> str:
    """The device's address ``{gateway}/{node}``: ``Device.address`` or ``{enterprise_id}/{device_id}``.

    Raises
    ------
    AdapterError
        ``address`` is not two identifier levels separated by one ``/``.
    """
    address = device.address if device.address is not None else f"{device.enterprise_id}/{device.id}"
    levels = address.split("/")
    if len(levels) != 2 or not all(_LEVEL.match(level) for level in levels):
        raise AdapterError(
            f"mqtt: device {device.id!r}: address {address!r} must be '<gateway>/<node>', two levels of letters, "
            "digits, '_', '.', ':' or '-' (e.g. 'e01/e01-bat1')"
        )
    return address


def telemetry_topic(prefix: str, address: str) -> str:
    """Topic a gateway publishes one device's telemetry on."""
    return f"{prefix}/{address}/telemetry"


def setpoint_topic(prefix: str, address: str) -> str:
    """Topic the service publishes one device's set-points on (QoS 1)."""
    return f"{prefix}/{address}/setpoint"


def availability_topic(prefix: str, address: str) -> str:
    """Retained ``online``/``offline`` of one device behind its gateway."""
    return f"{prefix}/{address}/availability"


def gateway_availability_topic(prefix: str, gateway: str) -> str:
    """Retained ``online``/``offline`` of a gateway; its Last Will sets ``offline``."""
    return f"{prefix}/{gateway}/availability"


def _subscriptions(prefix: str) -> list[tuple[str, int]]:
    return [
        (f"{prefix}/+/+/telemetry", 1),
        (f"{prefix}/+/+/availability", 1),
        (f"{prefix}/+/availability", 1),
    ]


def _parse_topic(topic: str, prefix: str) -> tuple[str, str]:
    """Split a topic below ``prefix`` into ``(address, kind)``.

    ``address`` is ``gateway/node`` for a device topic or ``gateway`` for the
    gateway's availability; ``kind`` is ``telemetry``, ``setpoint`` or ``availability``.
    """
    head = prefix + "/"
    if not topic.startswith(head):
        raise MqttPayloadError(f"topic {topic[:200]!r} is not below prefix {prefix!r}")
    levels = topic[len(head) :].split("/")
    kind = levels[-1]
    if len(levels) == 3 and kind in ("telemetry", "setpoint", "availability"):
        return f"{levels[0]}/{levels[1]}", kind
    if len(levels) == 2 and kind == "availability":
        return levels[0], kind
    raise MqttPayloadError(f"topic {topic[:200]!r}: expected {prefix}/<gateway>/<node>/telemetry|setpoint|availability")


# ---------------------------------------------------------- payloads ----


def _detect_format(payload: bytes) -> PayloadFormat:
    """``msgpack`` when the payload starts like a msgpack map, else ``json``."""
    return "msgpack" if payload and payload[0] in _MSGPACK_MAP_FIRST_BYTES else "json"


def _decode(payload: bytes) -> tuple[dict, PayloadFormat]:
    """The payload's map and the format it came in (detected from the first byte)."""
    if not isinstance(payload, bytes | bytearray):
        raise MqttPayloadError(f"payload: expected bytes, got {type(payload).__name__}")
    if not payload:
        raise MqttPayloadError("payload: empty")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MqttPayloadError(f"payload: {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    fmt = _detect_format(payload)
    try:
        if fmt == "msgpack":
            # timestamp=3: the msgpack timestamp extension (-1) becomes an aware UTC datetime.
            body = msgpack.unpackb(bytes(payload), raw=False, timestamp=3, strict_map_key=True)
        else:
            body = json.loads(payload)
    except RecursionError:
        raise MqttPayloadError(f"payload: {fmt} nested too deeply") from None
    except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, ValueError, ...)
        raise MqttPayloadError(f"payload: not valid {fmt}: {exc}"[:300]) from None
    if not isinstance(body, dict):
        raise MqttPayloadError(f"payload: expected a {fmt} map, got {type(body).__name__}")
    return body, fmt


def _float_field(body: Mapping, name: str, *, required: bool = True) -> float | None:
    value = body.get(name)
    if value is None:
        if required:
            raise MqttPayloadError(f"{name}: missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MqttPayloadError(f"{name}: expected a number, got {value!r}"[:300])
    try:
        number = float(value)
    except OverflowError:
        raise MqttPayloadError(f"{name}: {value} is out of range"[:300]) from None
    if not math.isfinite(number):
        raise MqttPayloadError(f"{name}: {value!r} is not finite")
    return number


def _ts_field(body: Mapping) -> datetime:
    """``ts`` as an aware UTC datetime, from ISO 8601 with offset, epoch seconds, or a msgpack timestamp."""
    value = body.get("ts")
    if value is None:
        raise MqttPayloadError("ts: missing")
    try:
        if isinstance(value, datetime):
            ts = value
        elif isinstance(value, str):
            ts = datetime.fromisoformat(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            ts = datetime.fromtimestamp(value, tz=timezone.utc)
        else:
            raise MqttPayloadError(f"ts: expected ISO 8601 text or epoch seconds, got {value!r}"[:300])
    except (ValueError, OverflowError, OSError) as exc:
        raise MqttPayloadError(f"ts: {value!r} is not a time ({exc})"[:300]) from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise MqttPayloadError(f"ts: {value!r} has no timezone; send UTC, e.g. '2026-07-01T04:00:00Z'"[:300])
    return ts.astimezone(timezone.utc)


def _validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{field}: {err['msg']} (got {err.get('input')!r})"[:200])
    return "; ".join(parts)


def _parse_telemetry(device_id: str, payload: bytes) -> TelemetrySample:
    """One telemetry payload (JSON or msgpack, detected) as a sample of ``device_id``.

    Required: ``ts``, ``p_kw``, ``p_min_kw``, ``p_max_kw`` [kW]; optional
    ``soc_kwh`` [kWh] (null or absent for devices without storage) and
    ``online`` (default true). Unknown keys are ignored (newer gateways may
    send more). Raises :class:`MqttPayloadError` naming the field.
    """
    body, _ = _decode(payload)
    values: dict[str, object] = {name: _float_field(body, name) for name in _TELEMETRY_FLOATS}
    values["soc_kwh"] = _float_field(body, "soc_kwh", required=False)
    online = body.get("online", True)
    if not isinstance(online, bool):
        raise MqttPayloadError(f"online: expected true or false, got {online!r}"[:300])
    try:
        return TelemetrySample(device_id=device_id, ts=_ts_field(body), online=online, **values)
    except pydantic.ValidationError as exc:
        raise MqttPayloadError(f"telemetry of {device_id!r}: {_validation_message(exc)}") from None


def _encode_telemetry(sample: TelemetrySample, fmt: PayloadFormat = "json") -> bytes:
    """The wire form of one sample (what a gateway publishes); inverse of :func:`_parse_telemetry`."""
    body = {
        "ts": _encode_ts(sample.ts, fmt),
        "p_kw": sample.p_kw,
        "p_min_kw": sample.p_min_kw,
        "p_max_kw": sample.p_max_kw,
        "soc_kwh": sample.soc_kwh,
        "online": sample.online,
    }
    return _encode(body, fmt)


def _parse_setpoint(device_id: str, payload: bytes) -> Setpoint:
    """One set-point payload as a :class:`Setpoint` of ``device_id`` (``p_kw`` null = release)."""
    body, _ = _decode(payload)
    p_kw = _float_field(body, "p_kw", required=False)
    if "p_kw" not in body:
        raise MqttPayloadError("p_kw: missing (send null to release the device)")
    instruction_id = body.get("instruction_id")
    if instruction_id is not None and not isinstance(instruction_id, str):
        raise MqttPayloadError(f"instruction_id: expected text or null, got {instruction_id!r}"[:300])
    try:
        return Setpoint(device_id=device_id, p_kw=p_kw, ts=_ts_field(body), instruction_id=instruction_id)
    except pydantic.ValidationError as exc:
        raise MqttPayloadError(f"set-point of {device_id!r}: {_validation_message(exc)}") from None


def _encode_setpoint(setpoint: Setpoint, fmt: PayloadFormat = "json") -> bytes:
    """The wire form of one set-point (what the service publishes); inverse of :func:`_parse_setpoint`."""
    body = {"ts": _encode_ts(setpoint.ts, fmt), "p_kw": setpoint.p_kw, "instruction_id": setpoint.instruction_id}
    return _encode(body, fmt)


def _encode_ts(ts: datetime, fmt: PayloadFormat) -> str | msgpack.Timestamp:
    utc = ts.astimezone(timezone.utc)
    if fmt == "msgpack":
        return msgpack.Timestamp.from_datetime(utc)
    return utc.isoformat().replace("+00:00", "Z")


def _encode(body: dict, fmt: PayloadFormat) -> bytes:
    if fmt == "msgpack":
        return msgpack.packb(body, use_bin_type=True)
    if fmt == "json":
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    raise ValueError(f"payload format {fmt!r} must be 'json' or 'msgpack'")


def _parse_availability(payload: bytes) -> bool:
    """``online`` -> True, ``offline`` -> False (UTF-8 text, surrounding whitespace ignored)."""
    if isinstance(payload, bytes | bytearray) and len(payload) <= 64:
        text = bytes(payload).strip().lower()
        if text == b"online":
            return True
        if text == b"offline":
            return False
    raise MqttPayloadError(f"availability: expected 'online' or 'offline', got {bytes(payload or b'')[:64]!r}")


# ----------------------------------------------------------- adapter ----


class MqttAdapter(Adapter):
    """Telemetry in and set-points out through an MQTT broker, for devices behind enterprise gateways.

    Parameters
    ----------
    devices : Sequence[Device]
        Devices it serves; each is reached at :func:`device_address`.
    host, port : str, int
        Broker address (port [unitless]).
    prefix : str
        First topic level(s) of every topic.
    payload_format : "json" | "msgpack"
        Format of set-points to a device whose gateway has not been heard
        from yet; afterwards each device gets the format its telemetry came in.
    timeout_s : float
        Longest wait for the broker to accept a connection, a subscription
        or the PUBACK of a set-point [s].
    keepalive_s : int
        MQTT keep-alive: a silent broker is declared gone after 1.5 times this [s].
    backoff_initial_s, backoff_max_s : float
        First and longest wait between reconnect attempts, doubling with ±20 % jitter [s].
    client_id : str | None
        MQTT client identifier; default a unique ``vpp-<prefix>-<random>``.
    backlog_per_device : int
        Samples kept per device between two reads; older unread ones are
        dropped (a reader that stalls must not grow memory without end) [unitless].

    Attributes
    ----------
    unknown_setpoints : int
        Set-points for devices this adapter does not serve (ignored) [unitless].
    reconnects : int
        Connections to the broker made after the first [unitless].
    """

    name = "mqtt"

    def __init__(
        self,
        devices: Sequence[Device] = (),
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        prefix: str = DEFAULT_PREFIX,
        payload_format: PayloadFormat = "json",
        timeout_s: float = 5.0,
        keepalive_s: int = 15,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        client_id: str | None = None,
        backlog_per_device: int = 16,
    ) -> None:
        if payload_format not in ("json", "msgpack"):
            raise ValueError(f"payload_format {payload_format!r} must be 'json' or 'msgpack'")
        self.host, self.port = host, port
        self.prefix = check_prefix(prefix)
        self.payload_format: PayloadFormat = payload_format
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.client_id = client_id or f"vpp-{prefix.replace('/', '-')}-{uuid.uuid4().hex[:10]}"
        self.backlog_per_device = backlog_per_device
        self.unknown_setpoints = 0
        self.reconnects = 0
        self.log = structlog.get_logger("vpp.adapters.mqtt")
        self._address_of: dict[str, str] = {}  # device id -> "gateway/node"
        self._device_at: dict[str, str] = {}  # "gateway/node" -> device id
        self._latest: dict[str, TelemetrySample] = {}
        self._unread: dict[str, deque[TelemetrySample]] = {}  # device id -> samples since the last read
        self._format_of: dict[str, PayloadFormat] = {}  # device id -> format its gateway speaks
        self._device_online: dict[str, bool] = {}  # device id -> last availability
        self._gateway_online: dict[str, bool] = {}  # gateway -> last availability
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        self._jitter = random.Random()
        for device in devices:
            self._register(device)

    # -- devices --------------------------------------------------------------

    def _register(self, device: Device) -> None:
        address = device_address(device)
        holder = self._device_at.get(address)
        if holder is not None and holder != device.id:
            raise AdapterError(f"mqtt: device {device.id!r}: address {address!r} is already used by device {holder!r}")
        old = self._address_of.get(device.id)
        if old is not None and old != address:
            del self._device_at[old]
            for heard in (self._latest, self._unread, self._format_of, self._device_online):
                heard.pop(device.id, None)  # what came from the old address is not this device's any more
        self._address_of[device.id] = address
        self._device_at[address] = device.id

    async def add_device(self, device: Device) -> None:
        """Serve a device enrolled at run time (or move a re-enrolled one to its new address).

        Raises
        ------
        AdapterError
            Bad ``address``, an address another device has, or the adapter is closed.
        """
        if self._closed:
            raise AdapterError("mqtt: add_device after close")
        self._register(device)

    # -- lifecycle -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the broker connection is up and subscribed."""
        return self._up.is_set()

    async def connect(self) -> None:
        """Start the subscriber task (once) and wait up to ``timeout_s`` for the broker.

        Raises :class:`AdapterError` when the broker does not answer in time;
        the task keeps trying in the background with backoff, so a later
        ``connect`` returns as soon as it is through.
        """
        if self._closed:
            raise AdapterError("mqtt: connect after close")
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"mqtt-adapter-{self.client_id}")
        try:
            await asyncio.wait_for(self._up.wait(), self.timeout_s)
        except TimeoutError:
            raise AdapterError(f"mqtt: broker {self.host}:{self.port} not reachable within {self.timeout_s} s") from None

    async def close(self) -> None:
        """Stop the subscriber and disconnect; safe to call twice."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._up.clear()

    def _backoff_s(self, failures: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * 2 ** min(failures - 1, 16))
        return base * self._jitter.uniform(0.8, 1.2)

    async def _run(self) -> None:
        """Connect, subscribe, keep the latest samples; on a lost broker wait and start again."""
        failures = 0
        connections = 0
        while not self._closed:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=self.client_id, keepalive=self.keepalive_s,
                    timeout=self.timeout_s, clean_session=True,
                ) as client:  # fmt: skip
                    client.pending_calls_threshold = 1_000_000  # many set-points in flight is normal here
                    await client.subscribe(_subscriptions(self.prefix))
                    self._client = client
                    self._up.set()
                    failures = 0
                    connections += 1
                    if connections > 1:
                        self.reconnects += 1
                    self.log.info("mqtt connected", broker=f"{self.host}:{self.port}", prefix=self.prefix)
                    async for message in client.messages:
                        self._on_message(message.topic.value, message.payload)
            except Exception as exc:  # MqttError mostly; anything else must not end the reconnect loop either
                failures += 1
                self.log.warning(
                    "mqtt broker lost", broker=f"{self.host}:{self.port}", error=f"{type(exc).__name__}: {exc}",
                    failures=failures,
                )  # fmt: skip
            finally:
                self._client = None
                self._up.clear()
            await asyncio.sleep(self._backoff_s(max(failures, 1)))

    # -- incoming ----------------------------------------------------------------

    def _on_message(self, topic: str, payload: object) -> None:
        """Take one message in; anything unusable is counted with ``note_malformed``, never raised."""
        try:
            address, kind = _parse_topic(topic, self.prefix)
            if kind == "availability" and "/" not in address:
                self._gateway_online[address] = _parse_availability(payload)  # type: ignore[arg-type]
                return
            device_id = self._device_at.get(address)
            if device_id is None:
                if kind == "telemetry":
                    self.note_malformed("telemetry of unknown device", topic)
                # Availability of unknown nodes is ignored: retained leftovers of devices no longer served.
                return
            if kind == "telemetry":
                sample = _parse_telemetry(device_id, payload)  # type: ignore[arg-type]
                self._latest[device_id] = sample
                unread = self._unread.get(device_id)
                if unread is None:
                    unread = self._unread[device_id] = deque(maxlen=self.backlog_per_device)
                unread.append(sample)
                self._format_of[device_id] = _detect_format(payload)  # type: ignore[arg-type]
            elif kind == "availability":
                self._device_online[device_id] = _parse_availability(payload)  # type: ignore[arg-type]
            # a "setpoint" topic is never subscribed; one arriving anyway is ignored
        except MqttPayloadError as exc:
            self.note_malformed(f"message on {topic[:200]}", exc)
        except Exception as exc:  # a bug here must not stop the subscriber
            self.note_malformed(f"message on {str(topic)[:200]} ({type(exc).__name__})", exc)

    def _reachable(self, device_id: str) -> bool:
        gateway = self._address_of[device_id].split("/", 1)[0]
        return self._gateway_online.get(gateway, True) and self._device_online.get(device_id, True)

    async def read_telemetry(self) -> list[TelemetrySample]:
        """Latest sample of each served device heard from, stamped by the gateway, with no sample lost.

        Per device: every sample received since the previous call, oldest
        first (up to ``backlog_per_device``), or, when none arrived since,
        its latest sample again (the store keeps one point per device and
        time, so a repeat costs nothing). Devices whose gateway or own
        availability is ``offline`` are left out. While the broker is away
        nothing new arrives, so the samples age and the service marks the
        devices stale.
        """
        if self._closed:
            raise AdapterError("mqtt: read_telemetry after close")
        if self._task is None:
            raise AdapterError("mqtt: read_telemetry before connect")
        unread, self._unread = self._unread, {}
        out: list[TelemetrySample] = []
        for device_id, latest in self._latest.items():
            if device_id in self._address_of and self._reachable(device_id):
                out.extend(unread.get(device_id) or (latest,))
        return out

    # -- outgoing -----------------------------------------------------------------

    async def write_setpoints(self, setpoints: Sequence[Setpoint]) -> None:
        """Publish each set-point with QoS 1 and wait for the broker's PUBACKs.

        Set-points for devices this adapter does not serve are counted in
        ``unknown_setpoints`` and skipped.

        Raises
        ------
        AdapterError
            Not connected, or a publish failed or was not acknowledged within ``timeout_s``.
        """
        if self._closed:
            raise AdapterError("mqtt: write_setpoints after close")
        client = self._client
        if client is None or not self._up.is_set():
            raise AdapterError(f"mqtt: not connected to broker {self.host}:{self.port}; set-points not sent")
        publishes = []
        for sp in setpoints:
            address = self._address_of.get(sp.device_id)
            if address is None:
                self.unknown_setpoints += 1
                continue
            payload = _encode_setpoint(sp, self._format_of.get(sp.device_id, self.payload_format))
            publishes.append(client.publish(setpoint_topic(self.prefix, address), payload, qos=1, timeout=self.timeout_s))
        results = await asyncio.gather(*publishes, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise AdapterError(f"mqtt: {len(failed)} of {len(results)} set-points not acknowledged: {failed[0]}")
