"""The store at scale: Redis, through ``redis.asyncio``; values are msgpack of the model's JSON form.

Key layout (``ns`` is the namespace; ids may contain ':', so every key that
ends in an id has a prefix no fixed key shares):

==========================================  ======  ==========================================
key                                         type    content
==========================================  ======  ==========================================
``ns:schema_version``                       string  layout version
``ns:enterprises`` / ``ns:meters``          hash    id -> packed model
``ns:devices``                              hash    device id -> packed device
``ns:device_owner``                         hash    device id -> enterprise id
``ns:enterprise_devices:{eid}``             set     device ids of one enterprise
``ns:tokens``                               hash    sha256 -> packed token
``ns:telemetry``                            stream  accepted samples, one entry per chunk of up to 1,000 (field
                                                    ``samples``: msgpack array of them), trimmed ~MAXLEN samples
``ns:telemetry:latest``                     hash    device id -> packed latest sample
``ns:telemetry:latest_us``                  hash    device id -> its ts [us since epoch]
``ns:telemetry:history:{device_id}``        zset    packed sample scored by ts [us since epoch]
``ns:meter_readings:{meter_id}``            zset    packed reading scored by ts [us]
``ns:instructions``                         stream  each new instruction (fields ``id``, ``instruction``)
``ns:instruction:body`` / ``:state``        hash    instruction id -> packed instruction / state
``ns:instruction:by_start``                 zset    instruction id scored by start [us]
``ns:instruction:status:{status}``          zset    ids in that status, scored by start [us]
``ns:progress:{instruction_id}``            zset    packed progress point scored by ts [us]
``ns:setpoints:{instruction_id}``           list    packed set-points in the order sent
``ns:setpoints_unassigned``                 list    set-points that name no instruction
``ns:ledgers``                              set     names of ledgers holding records
``ns:ledger:{name}``                        list    packed hash-chained records, index = seq
==========================================  ======  ==========================================

Scores are integer microseconds since the Unix epoch: below 2**53 until the
year 2255, so exact in Redis' double scores and in Lua numbers. Writes that
must be atomic (instruction + state, device ownership, latest-only-forward)
are Lua scripts. As in the SQLite store, a time series keeps one point per
instant: a repeated instant is ignored (first one wins).

Layout versions: 2 made ``ns:telemetry`` (and the ingest streams of
``vpp.store.redis_cluster``) one entry per chunk of samples instead of one
per sample. Everything version 1 wrote reads the same, so opening a version
1 namespace upgrades it in place; version 1 software then refuses it.
"""

from __future__ import annotations

import asyncio
import functools
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgpack
import redis.asyncio as aioredis
from pydantic import BaseModel, TypeAdapter
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vpp.chain import make_record
from vpp.errors import Conflict, NotFound, StoreUnavailable
from vpp.model import (
    ApiToken,
    Device,
    DispatchInstruction,
    DispatchProgress,
    DispatchState,
    DispatchStatus,
    Enterprise,
    MeteringPoint,
    MeterReading,
    Setpoint,
    TelemetrySample,
)
from vpp.store.base import Store, _corrections, _expected_head

__all__ = ["SCHEMA_VERSION", "RedisStore"]

SCHEMA_VERSION = 2
"""Version of the key layout above; a namespace written by a newer version is refused, an older one upgraded."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_CHUNK = 1000
"""Points per Lua call: bounds how long one call blocks the server (a telemetry chunk: about 7 ms)."""

_DEVICE: TypeAdapter[Device] = TypeAdapter(Device)
_SAMPLES: TypeAdapter[list[TelemetrySample]] = TypeAdapter(list[TelemetrySample])
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)
_TELEMETRY_FIELDS = ("device_id", "ts", "p_kw", "p_min_kw", "p_max_kw", "soc_kwh", "online")
"""``TelemetrySample``'s fields as ``_TelemetryEncoder.fields`` writes them (a test checks the model still has exactly these)."""

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)

# KEYS[1] stream, KEYS[2] latest hash, KEYS[3] latest-ts hash, KEYS[4..] one history zset per device of the chunk.
# ARGV[1] stream MAXLEN [entries], ARGV[2] msgpack array of those devices' ids (in KEYS order from KEYS[4]),
# ARGV[3] flat msgpack array, three items per sample: history key index, ts [us] as a string, packed sample.
# One argument per chunk, not one per sample, and no table per sample: encoding and unpacking dominated.
# The latest-ts hash holds each device's greatest accepted instant; it and the history are only written here,
# together, so a device with none has an empty history and a sample after it cannot repeat an instant: both
# skip the ZCOUNT. The latest hashes are read once and written once per chunk; the stream gets one entry per
# chunk (field ``samples``: msgpack array of the accepted samples, an array32 header before their bodies).
_APPEND_TELEMETRY = """
local devices = cmsgpack.unpack(ARGV[2])
local rows = cmsgpack.unpack(ARGV[3])
local held = {}
local found = redis.call('HMGET', KEYS[3], unpack(devices))
for i = 1, #devices do
  if found[i] then held[i + 3] = tonumber(found[i]) end
end
local accepted, moved, moved_ts = {}, {}, {}
for i = 1, #rows, 3 do
  local k, ts, body = rows[i], rows[i + 1], rows[i + 2]
  local t, h = tonumber(ts), held[k]
  local newest = (not h) or t > h
  if newest or redis.call('ZCOUNT', KEYS[k], ts, ts) == 0 then
    redis.call('ZADD', KEYS[k], ts, body)
    accepted[#accepted + 1] = body
    if newest then
      held[k], moved[k], moved_ts[k] = t, body, ts
    end
  end
end
local n = #accepted
if n == 0 then return 0 end
local latest, latest_ts = {}, {}
for k, body in pairs(moved) do
  local device = devices[k - 3]
  latest[#latest + 1] = device; latest[#latest + 1] = body
  latest_ts[#latest_ts + 1] = device; latest_ts[#latest_ts + 1] = moved_ts[k]
end
if #latest > 0 then  -- late samples only: history, not latest
  redis.call('HSET', KEYS[2], unpack(latest))
  redis.call('HSET', KEYS[3], unpack(latest_ts))
end
local header = string.char(0xdd, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'samples', header .. table.concat(accepted))
return n
"""

# KEYS[1] layout version. ARGV[1] this software's version. Raises an older (or missing) version to it; returns
# the version found (0: a new namespace), so a newer one is left alone for the caller to refuse.
_CLAIM_VERSION = """
local found = tonumber(redis.call('GET', KEYS[1]) or '0')
if found < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return found
"""

# KEYS: sorted sets. ARGV per point: key index, score [us], packed point.
_APPEND_SERIES = """
for i = 1, #ARGV, 3 do
  local key, ts = KEYS[tonumber(ARGV[i])], ARGV[i + 1]
  if redis.call('ZCOUNT', key, ts, ts) == 0 then
    redis.call('ZADD', key, ts, ARGV[i + 2])
  end
end
return 0
"""

# KEYS[1] devices, KEYS[2] device_owner, KEYS[3] enterprise_devices:{eid}.
# ARGV[1] device id, ARGV[2] enterprise id, ARGV[3] packed device. Returns 1 new, 0 replaced, -1 conflict.
_PUT_DEVICE = """
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if owner and owner ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if owner then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# KEYS[1] body hash, KEYS[2] state hash, KEYS[3] by_start, KEYS[4] status zset, KEYS[5] stream.
# ARGV[1] id, ARGV[2] packed instruction, ARGV[3] packed state, ARGV[4] start [us], ARGV[5] MAXLEN.
# Returns nil when created, else the stored packed instruction.
_PUT_INSTRUCTION = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return redis.call('HGET', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'id', ARGV[1], 'instruction', ARGV[2])
return false
"""

# KEYS[1] state hash, KEYS[2] by_start, KEYS[3..] every status zset.
# ARGV[1] id, ARGV[2] packed state, ARGV[3] KEYS index of the new status zset. Returns 0 if unknown.
_PUT_STATE = """
local start = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not start then return 0 end
for i = 3, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[tonumber(ARGV[3])], start, ARGV[1])
return 1
"""

# KEYS[1] ledger list, KEYS[2] ledgers set. ARGV[1] ledger name, ARGV[2] the packed head record the caller
# chained onto ('' = the ledger must be empty), ARGV[3..] packed records. Returns 1 appended, 0 head moved.
# Records are byte-for-byte what they hash to and the list is append-only, so an equal head is the same record.
_APPEND_LEDGER_IF = """
local head = redis.call('LINDEX', KEYS[1], -1)
if ARGV[2] == '' then
  if head then return 0 end
elseif head ~= ARGV[2] then
  return 0
end
for i = 3, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if #ARGV > 2 then redis.call('SADD', KEYS[2], ARGV[1]) end
return 1
"""


def _epoch_us(ts: datetime) -> int:
    """Integer microseconds since 1970-01-01 UTC; exact (no float rounding)."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no timezone; pass an aware UTC datetime")
    return (ts - _EPOCH) // _US


def _pack(model: BaseModel) -> bytes:
    return msgpack.packb(model.model_dump(mode="json"))


def _unpack(cls: type[M], raw: bytes) -> M:
    return cls.model_validate(msgpack.unpackb(raw))


def _unpack_device(raw: bytes) -> Device:
    return _DEVICE.validate_python(msgpack.unpackb(raw))


class _TelemetryEncoder:
    """Samples packed as ``_pack`` packs them (same bytes: tests check), without a pydantic dump per sample.

    Reading the fields directly and formatting each distinct instant once (a batch shares one) costs a
    fraction of a dump per sample. One encoder per call: it remembers the instants it formatted.
    """

    def __init__(self) -> None:
        self._stamps: dict[datetime, tuple[str, str]] = {}
        self._pack = msgpack.Packer().pack

    def stamp(self, ts: datetime) -> tuple[str, str]:
        """``(ts in pydantic's JSON form, ts [us since epoch] as a decimal string)``."""
        # Only UTC instants are remembered: an equal instant in another zone must keep its own JSON form.
        found = self._stamps.get(ts) if ts.tzinfo is UTC else None
        if found is None:
            found = (_DATETIME.dump_python(ts, mode="json"), str(_epoch_us(ts)))
            if ts.tzinfo is UTC:
                self._stamps[ts] = found
        return found

    def fields(self, s: TelemetrySample, ts_json: str) -> dict[str, Any]:
        """``s.model_dump(mode="json")``, keys in ``_TELEMETRY_FIELDS`` order (the order they are packed in)."""
        return {"device_id": s.device_id, "ts": ts_json, "p_kw": s.p_kw, "p_min_kw": s.p_min_kw,
                "p_max_kw": s.p_max_kw, "soc_kwh": s.soc_kwh, "online": s.online}  # fmt: skip

    def encode(self, s: TelemetrySample) -> tuple[str, bytes]:
        """``(ts [us] as a decimal string, _pack(s))``."""
        ts_json, ts_us = self.stamp(s.ts)
        return ts_us, self._pack(self.fields(s, ts_json))


def _chunks(items: Sequence[R], size: int = _CHUNK) -> Iterator[Sequence[R]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _redacted(url: str) -> str:
    """The url without its password, for error messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _unavailable_on_connection_error(
    method: Callable[Concatenate[RedisStore, P], Awaitable[R]],
) -> Callable[Concatenate[RedisStore, P], Awaitable[R]]:
    """Turn the client's connection and timeout errors into ``StoreUnavailable`` naming the server."""

    @functools.wraps(method)
    async def wrapper(self: RedisStore, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailable(f"Redis store at {_redacted(self.url)} is unavailable: {exc}") from exc

    return wrapper


@dataclass(frozen=True)
class _Keys:
    """Every key name of one namespace (layout in the module docstring)."""

    ns: str

    def of(self, suffix: str) -> str:
        return f"{self.ns}:{suffix}"

    def enterprise_devices(self, enterprise_id: str) -> str:
        return self.of(f"enterprise_devices:{enterprise_id}")

    def history(self, device_id: str) -> str:
        return self.of(f"telemetry:history:{device_id}")

    def meter(self, meter_id: str) -> str:
        return self.of(f"meter_readings:{meter_id}")

    def status(self, status: DispatchStatus) -> str:
        return self.of(f"instruction:status:{DispatchStatus(status).value}")

    def progress(self, instruction_id: str) -> str:
        return self.of(f"progress:{instruction_id}")

    def setpoints(self, instruction_id: str | None) -> str:
        return self.of("setpoints_unassigned") if instruction_id is None else self.of(f"setpoints:{instruction_id}")

    def ledger(self, name: str) -> str:
        return self.of(f"ledger:{name}")


class RedisStore(Store):
    """Store in a Redis server under one key namespace.

    ``url`` is a redis-py URL (``redis://[user:password@]host:port/db``).
    The stream lengths are approximate caps on the feeds, not on history:
    ``telemetry_stream_maxlen`` in samples (kept as ``maxlen // 1000``
    entries of up to 1,000 samples), ``instruction_stream_maxlen`` in entries.
    """

    def __init__(
        self,
        url: str,
        namespace: str = "vpp",
        *,
        telemetry_stream_maxlen: int = 100_000,
        instruction_stream_maxlen: int = 10_000,
        socket_timeout_s: float = 10.0,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", namespace):
            raise ValueError(f"namespace {namespace!r} must be 1-64 letters, digits, '_', '.' or '-'")
        self.url = url
        self.namespace = namespace
        self._k = _Keys(namespace)
        self._telemetry_maxlen = telemetry_stream_maxlen
        self._instruction_maxlen = instruction_stream_maxlen
        self._socket_timeout_s = socket_timeout_s
        self._r: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    # -- lifecycle --------------------------------------------------------

    @_unavailable_on_connection_error
    async def open(self) -> None:
        """Connect and check the namespace's layout version. Raises ``StoreUnavailable``.

        The client is kept even when the server does not answer, so later
        calls retry and ``close()`` releases it.
        """
        if self._r is None:
            self._r = aioredis.Redis.from_url(
                self.url,
                socket_connect_timeout=2.0,
                socket_timeout=self._socket_timeout_s,
                # A few quick retries ride out a blip; the default (10 retries,
                # up to 1 s apart) would stall a request for seconds when down.
                retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), retries=3),
            )
            self._scripts = {
                name: self._r.register_script(text)
                for name, text in (
                    ("version", _CLAIM_VERSION),
                    ("series", _APPEND_SERIES),
                    ("device", _PUT_DEVICE),
                    ("instruction", _PUT_INSTRUCTION),
                    ("state", _PUT_STATE),
                    ("ledger_if", _APPEND_LEDGER_IF),
                )
            }
        await self._check_version()

    async def _check_version(self) -> None:
        found = int(await self._run("version", [self._k.of("schema_version")], [SCHEMA_VERSION]))
        if found > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"Redis namespace {self.namespace!r} has layout version {found}; this software knows up to {SCHEMA_VERSION}"
            )

    async def close(self) -> None:
        """Close the connection pool; safe to call twice."""
        client, self._r = self._r, None
        self._scripts = {}
        if client is not None:
            await client.aclose()

    @property
    def _client(self) -> aioredis.Redis:
        if self._r is None:
            raise RuntimeError(f"RedisStore({_redacted(self.url)}) is not open; call await store.open() first")
        return self._r

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[object], client: Any = None) -> Any:
        target = self._client if client is None else client  # raises the clear "not open" error
        return await self._scripts[script](keys=keys, args=args, client=target)

    # -- park: enterprises, meters, devices --------------------------------

    @_unavailable_on_connection_error
    async def put_enterprise(self, enterprise: Enterprise) -> None:
        """Create or replace an enterprise."""
        await self._client.hset(self._k.of("enterprises"), enterprise.id, _pack(enterprise))

    @_unavailable_on_connection_error
    async def get_enterprise(self, enterprise_id: str) -> Enterprise | None:
        """The enterprise with this id, or None."""
        raw = await self._client.hget(self._k.of("enterprises"), enterprise_id)
        return None if raw is None else _unpack(Enterprise, raw)

    @_unavailable_on_connection_error
    async def list_enterprises(self) -> list[Enterprise]:
        """All enterprises, ordered by id."""
        found = await self._client.hgetall(self._k.of("enterprises"))
        return sorted((_unpack(Enterprise, raw) for raw in found.values()), key=lambda e: e.id)

    @_unavailable_on_connection_error
    async def put_meter(self, meter: MeteringPoint) -> None:
        """Create or replace a metering point."""
        await self._client.hset(self._k.of("meters"), meter.id, _pack(meter))

    @_unavailable_on_connection_error
    async def list_meters(self, enterprise_id: str | None = None) -> list[MeteringPoint]:
        """Metering points, of one enterprise or all, ordered by id."""
        # A park has a few meters per enterprise: filtering all of them is cheaper than an index.
        found = await self._client.hgetall(self._k.of("meters"))
        meters = (_unpack(MeteringPoint, raw) for raw in found.values())
        return sorted((m for m in meters if enterprise_id in (None, m.enterprise_id)), key=lambda m: m.id)

    @_unavailable_on_connection_error
    async def put_device(self, device: Device) -> bool:
        """Create or replace a device; True when new. ``Conflict`` if the id belongs to another enterprise."""
        keys = [self._k.of("devices"), self._k.of("device_owner"), self._k.enterprise_devices(device.enterprise_id)]
        outcome = await self._run("device", keys, [device.id, device.enterprise_id, _pack(device)])
        if outcome == -1:
            # The owner is not named: an enterprise must learn nothing about another.
            raise Conflict(f"device id {device.id!r} is already enrolled by another enterprise")
        return outcome == 1

    @_unavailable_on_connection_error
    async def get_device(self, device_id: str) -> Device | None:
        """The device with this id (of its own kind), or None."""
        raw = await self._client.hget(self._k.of("devices"), device_id)
        return None if raw is None else _unpack_device(raw)

    @_unavailable_on_connection_error
    async def list_devices(self, enterprise_id: str | None = None) -> list[Device]:
        """Devices, of one enterprise or all, ordered by id."""
        if enterprise_id is None:
            raws = list((await self._client.hgetall(self._k.of("devices"))).values())
        else:
            ids = sorted(await self._client.smembers(self._k.enterprise_devices(enterprise_id)))
            raws = await self._client.hmget(self._k.of("devices"), ids) if ids else []
        devices = (_unpack_device(raw) for raw in raws if raw is not None)
        return sorted(devices, key=lambda d: d.id)

    # -- telemetry and meters ----------------------------------------------

    @_unavailable_on_connection_error
    async def append_telemetry(self, samples: Sequence[TelemetrySample]) -> None:
        """Add samples to history (first per device and instant wins) and move each device's latest forward.

        Each chunk of samples is applied atomically by one Lua call taking the
        chunk as two msgpack arguments. The calls go out in order on one
        connection, each as soon as it is packed, so the server runs chunk k
        while the client packs chunk k+1; the first error is raised once
        every answer is in (a failed chunk leaves the others applied: calling
        again with the same samples is harmless, as the first sample per
        device and instant wins).
        """
        if not samples:
            return
        fixed = [self._k.of("telemetry"), self._k.of("telemetry:latest"), self._k.of("telemetry:latest_us")]
        encoder = _TelemetryEncoder()
        await self._eval_in_order(_APPEND_TELEMETRY, (self._telemetry_call(fixed, chunk, encoder) for chunk in _chunks(samples)))

    async def _eval_in_order(self, script: str, calls: Iterable[tuple[Sequence[str], Sequence[object]]]) -> None:
        """Run Lua calls on one connection, each sent as soon as it is built; the first error is raised after every answer.

        Redis runs one connection's commands in the order sent, so no call
        waits for the previous answer: the client builds call k+1 while the
        server runs call k. EVAL, not EVALSHA: a server that lost its script
        cache (restart) cannot refuse a call already sent; it keeps compiled
        scripts by hash, so the text costs only its transfer.
        """
        task = asyncio.current_task()
        pool = self._client.connection_pool
        conn = await pool.get_connection()
        sent, drained = 0, False
        try:
            for keys, args in calls:
                await conn.send_command("EVAL", script, len(keys), *keys, *args)
                sent += 1
                if task is not None and task.cancelling():
                    # redis-py sends through asyncio.wait_for, which on Python 3.11 can swallow a cancellation
                    # that arrives as the send completes: honour it here.
                    raise asyncio.CancelledError
            first_error: ResponseError | None = None
            for _ in range(sent):
                try:
                    await conn.read_response()
                except ResponseError as exc:
                    first_error = first_error or exc
            drained = True
            if first_error is not None:
                raise first_error
        finally:
            if not drained:
                await conn.disconnect()  # answers may be left unread: this socket must not serve another call
            await pool.release(conn)

    def _telemetry_call(
        self, fixed: list[str], chunk: Sequence[TelemetrySample], encoder: _TelemetryEncoder
    ) -> tuple[list[str], list[object]]:
        """KEYS and ARGV of one ``_APPEND_TELEMETRY`` call for a chunk of samples."""
        keys = list(fixed)
        history = self._k.history("")  # key prefix; + device id
        index: dict[str, int] = {}
        devices: list[str] = []
        rows: list[object] = []
        for s in chunk:
            k = index.get(s.device_id)
            if k is None:
                devices.append(s.device_id)
                keys.append(history + s.device_id)
                k = index[s.device_id] = len(keys)  # Lua KEYS are 1-based
            # ts as a string: Lua prints large numbers in %.14g and would round them.
            ts_us, body = encoder.encode(s)
            rows += (k, ts_us, body)
        # The stream holds whole chunks: about maxlen samples in entries of up to _CHUNK.
        maxlen = max(1, self._telemetry_maxlen // _CHUNK)
        # use_bin_type=False: Redis' cmsgpack reads only the raw type, which carries the bodies' bytes.
        return keys, [maxlen, msgpack.packb(devices), msgpack.packb(rows, use_bin_type=False)]

    @_unavailable_on_connection_error
    async def latest_telemetry(self) -> dict[str, TelemetrySample]:
        """Latest sample per device id."""
        found = await self._client.hgetall(self._k.of("telemetry:latest"))
        # One validator call for all of them: per-sample model_validate costs more at 10,000 devices.
        samples = _SAMPLES.validate_python([msgpack.unpackb(raw) for raw in found.values()])
        return {device.decode(): sample for device, sample in zip(found, samples)}

    @_unavailable_on_connection_error
    async def telemetry_history(self, device_id: str, start: datetime, end: datetime) -> list[TelemetrySample]:
        """Samples of one device with ``start <= ts < end``, ordered by time."""
        raws = await self._range(self._k.history(device_id), start, end)
        return [_unpack(TelemetrySample, raw) for raw in raws]

    @_unavailable_on_connection_error
    async def append_meter_readings(self, readings: Sequence[MeterReading]) -> None:
        """Add readings (first per meter and instant wins)."""
        await self._append_series([(self._k.meter(r.meter_id), _epoch_us(r.ts), _pack(r)) for r in readings])

    @_unavailable_on_connection_error
    async def meter_readings(self, meter_id: str, start: datetime, end: datetime) -> list[MeterReading]:
        """Readings of one meter with ``start <= ts < end``, ordered by time."""
        return [_unpack(MeterReading, raw) for raw in await self._range(self._k.meter(meter_id), start, end)]

    @_unavailable_on_connection_error
    async def meter_readings_many(
        self, meter_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[MeterReading]]:
        """Readings of many meters: one ZRANGE per meter, all in one pipelined round trip."""
        ids = list(dict.fromkeys(meter_ids))
        if not ids:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for meter_id in ids:
                pipe.zrange(self._k.meter(meter_id), _epoch_us(start), f"({_epoch_us(end)}", byscore=True)
            answers = await pipe.execute()
        return {meter_id: [_unpack(MeterReading, raw) for raw in raws] for meter_id, raws in zip(ids, answers)}

    async def _range(self, key: str, start: datetime, end: datetime) -> list[bytes]:
        """Members of a time-scored zset with ``start <= ts < end`` ('(' makes the end exclusive)."""
        return await self._client.zrange(key, _epoch_us(start), f"({_epoch_us(end)}", byscore=True)

    async def _append_series(self, points: Sequence[tuple[str, int, bytes]]) -> None:
        """Add (zset key, ts [us], packed) points, keeping the first point per key and instant."""
        if not points:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for chunk in _chunks(points):
                keys: list[str] = []
                index: dict[str, int] = {}
                args: list[object] = []
                for key, ts_us, packed in chunk:
                    if key not in index:
                        keys.append(key)
                        index[key] = len(keys)
                    args += [index[key], ts_us, packed]
                await self._run("series", keys, args, client=pipe)
            await pipe.execute()

    # -- dispatch ------------------------------------------------------------

    @_unavailable_on_connection_error
    async def put_instruction(self, instruction: DispatchInstruction, state: DispatchState) -> tuple[DispatchInstruction, bool]:
        """Store a new instruction with its initial state and stream entry in one Lua call; ``(stored, created)``."""
        if state.instruction_id != instruction.id:
            raise ValueError(f"state is for instruction {state.instruction_id!r}, not {instruction.id!r}")
        keys = [
            self._k.of("instruction:body"),
            self._k.of("instruction:state"),
            self._k.of("instruction:by_start"),
            self._k.status(state.status),
            self._k.of("instructions"),
        ]
        args = [instruction.id, _pack(instruction), _pack(state), _epoch_us(instruction.start), self._instruction_maxlen]
        stored = await self._run("instruction", keys, args)
        if stored is None:
            return instruction, True
        return _unpack(DispatchInstruction, stored), False

    @_unavailable_on_connection_error
    async def get_instruction(self, instruction_id: str) -> tuple[DispatchInstruction, DispatchState] | None:
        """The instruction and its state, or None."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hget(self._k.of("instruction:body"), instruction_id)
            pipe.hget(self._k.of("instruction:state"), instruction_id)
            body, state = await pipe.execute()
        if body is None or state is None:
            return None
        return _unpack(DispatchInstruction, body), _unpack(DispatchState, state)

    @_unavailable_on_connection_error
    async def list_instructions(
        self, statuses: Sequence[DispatchStatus] | None = None
    ) -> list[tuple[DispatchInstruction, DispatchState]]:
        """Instructions (optionally of some statuses), ordered by start then id."""
        wanted = set(DispatchStatus) if statuses is None else {DispatchStatus(s) for s in statuses}
        index_keys = [self._k.of("instruction:by_start")] if statuses is None else [self._k.status(s) for s in wanted]
        entries: list[tuple[float, bytes]] = []
        for key in index_keys:
            entries += [(score, member) for member, score in await self._client.zrange(key, 0, -1, withscores=True)]
        # Same order as SQLite's ORDER BY start, id: ids are ASCII, so bytes order = string order.
        ids = [member for _, member in sorted(entries, key=lambda e: (e[0], e[1]))]
        if not ids:
            return []
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hmget(self._k.of("instruction:body"), ids)
            pipe.hmget(self._k.of("instruction:state"), ids)
            bodies, states = await pipe.execute()
        pairs = [
            (_unpack(DispatchInstruction, body), _unpack(DispatchState, state))
            for body, state in zip(bodies, states)
            if body is not None and state is not None
        ]
        # A state may change between the index read and the fetch: filter on what was fetched.
        return [pair for pair in pairs if pair[1].status in wanted]

    @_unavailable_on_connection_error
    async def put_dispatch_state(self, state: DispatchState) -> None:
        """Replace the state of an existing instruction; ``NotFound`` if there is none."""
        status_keys = [self._k.status(s) for s in DispatchStatus]
        keys = [self._k.of("instruction:state"), self._k.of("instruction:by_start"), *status_keys]
        new_index = 3 + status_keys.index(self._k.status(state.status))  # 1-based KEYS position
        if not await self._run("state", keys, [state.instruction_id, _pack(state), new_index]):
            raise NotFound(f"no dispatch instruction with id {state.instruction_id!r}")

    @_unavailable_on_connection_error
    async def append_dispatch_progress(self, points: Sequence[DispatchProgress]) -> None:
        """Add progress points (first per instruction and instant wins)."""
        await self._append_series([(self._k.progress(p.instruction_id), _epoch_us(p.ts), _pack(p)) for p in points])

    @_unavailable_on_connection_error
    async def dispatch_progress(self, instruction_id: str) -> list[DispatchProgress]:
        """Progress points of one instruction, ordered by time."""
        raws = await self._client.zrange(self._k.progress(instruction_id), 0, -1)
        return [_unpack(DispatchProgress, raw) for raw in raws]

    @_unavailable_on_connection_error
    async def append_setpoints(self, setpoints: Sequence[Setpoint]) -> None:
        """Audit log of set-points handed to adapters, in the order given (one transaction)."""
        if not setpoints:
            return
        grouped: dict[str, list[bytes]] = {}
        for s in setpoints:
            grouped.setdefault(self._k.setpoints(s.instruction_id), []).append(_pack(s))
        async with self._client.pipeline(transaction=True) as pipe:
            for key, packed in grouped.items():
                pipe.rpush(key, *packed)
            await pipe.execute()

    @_unavailable_on_connection_error
    async def setpoints_for(self, instruction_id: str) -> list[Setpoint]:
        """Set-points sent for one instruction, in the order sent."""
        raws = await self._client.lrange(self._k.setpoints(instruction_id), 0, -1)
        return [_unpack(Setpoint, raw) for raw in raws]

    # -- auth ------------------------------------------------------------------

    @_unavailable_on_connection_error
    async def put_token(self, token: ApiToken) -> None:
        """Create or replace a token record (keyed by its hash)."""
        await self._client.hset(self._k.of("tokens"), token.token_sha256, _pack(token))

    @_unavailable_on_connection_error
    async def get_token(self, token_sha256: str) -> ApiToken | None:
        """The token record with this hash, or None."""
        raw = await self._client.hget(self._k.of("tokens"), token_sha256)
        return None if raw is None else _unpack(ApiToken, raw)

    @_unavailable_on_connection_error
    async def list_tokens(self) -> list[ApiToken]:
        """Every token record, ordered by ``created_at`` then hash."""
        raws = await self._client.hvals(self._k.of("tokens"))
        return sorted((_unpack(ApiToken, raw) for raw in raws), key=lambda t: (t.created_at, t.token_sha256))

    # -- ledgers -----------------------------------------------------------------

    @_unavailable_on_connection_error
    async def append_ledger(
        self, ledger: str, payloads: Sequence[Mapping[str, Any]], corrects: Sequence[int | None] | None = None
    ) -> list[dict[str, Any]]:
        """Append chained records; WATCH on the ledger list retries when another process appended first."""
        fixes = _corrections(payloads, corrects)
        key = self._k.ledger(ledger)
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    last = await pipe.lindex(key, -1)
                    previous = None if last is None else msgpack.unpackb(last)
                    written = []
                    for payload, fix in zip(payloads, fixes):
                        previous = make_record(previous, payload, corrects=fix)
                        written.append(previous)
                    pipe.multi()
                    if written:
                        pipe.rpush(key, *[msgpack.packb(r) for r in written])
                        pipe.sadd(self._k.of("ledgers"), ledger)
                    await pipe.execute()
                    return written
                except WatchError:
                    continue  # someone appended between WATCH and EXEC: chain onto their record

    @_unavailable_on_connection_error
    async def append_ledger_if(
        self,
        ledger: str,
        payloads: Sequence[Mapping[str, Any]],
        expected_last_hash: str | None,
        corrects: Sequence[int | None] | None = None,
    ) -> list[dict[str, Any]] | None:
        """Append chained records only if the head's hash is ``expected_last_hash``; the check and RPUSH are one Lua call."""
        fixes = _corrections(payloads, corrects)
        expected = _expected_head(expected_last_hash)
        key = self._k.ledger(ledger)
        head = await self._client.lindex(key, -1)
        previous = None if head is None else msgpack.unpackb(head)
        if (None if previous is None else previous["hash"]) != expected:
            return None
        written = []
        for payload, fix in zip(payloads, fixes):
            previous = make_record(previous, payload, corrects=fix)
            written.append(previous)
        packed = [msgpack.packb(r) for r in written]
        appended = await self._run("ledger_if", [key, self._k.of("ledgers")], [ledger, head or b"", *packed])
        return written if int(appended) == 1 else None

    @_unavailable_on_connection_error
    async def ledger_records(self, ledger: str, start_seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Records of one ledger from ``start_seq`` (list index = seq)."""
        stop = -1 if limit is None else start_seq + limit - 1
        raw = await self._client.lrange(self._k.ledger(ledger), start_seq, stop)
        return [msgpack.unpackb(r) for r in raw]

    @_unavailable_on_connection_error
    async def ledger_names(self) -> list[str]:
        """Ledgers holding records, sorted."""
        names = await self._client.smembers(self._k.of("ledgers"))
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    # -- health -------------------------------------------------------------------

    async def ping(self) -> bool:
        """True when the server answers; False (never raises) when it is down or the store is not open."""
        if self._r is None:
            return False
        try:
            return bool(await self._r.ping())
        except (RedisConnectionError, RedisTimeoutError):
            return False
