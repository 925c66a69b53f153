"""Scale-out primitives on the Redis store: the leader lock with its fencing token, fenced writes, ingest streams.

Several ``vpp serve`` processes share one Redis namespace (see docs/scale-out.md).
This module adds, over a :class:`~vpp.store.redis.RedisStore`'s connection and
key layout, the keys they coordinate through:

==========================================  ======  ==========================================
key                                         type    content
==========================================  ======  ==========================================
``ns:leader``                               string  ``{token}|{holder}`` of the dispatch leader, PX = lease
``ns:leader:fence``                         string  last fencing token issued (INCR)
``ns:live``                                 hash    what the leader publishes each control step
``ns:ingest:partitions``                    string  number of ingest partitions (fixed at first use)
``ns:ingest:{p}``                           stream  raw telemetry of the enterprises of partition p, entries of up
                                                    to 1,000 samples (field ``samples``: msgpack array of them)
``ns:setpoint_ids:{instruction_id}``        hash    set-point id -> fencing token it was sent under
``ns:setpoint_ids_unassigned``              hash    the same for schedule set-points
==========================================  ======  ==========================================

Fencing: a leader's writes of set-points, dispatch state and live state go
through Lua scripts that first compare the token the writer holds with the
one in ``ns:leader``; a writer whose lease lapsed or was taken over is
refused (the script returns -1 and writes nothing). A set-point's id is
``{instruction or '-'}/{device}/{ts [us]}``; the script records each id once,
so a retried write (its answer lost in a Redis restart) is not doubled.

Ingest entries: one per partition and chunk of up to 1,000 samples of one
``publish_telemetry`` call (layout version 2), not one per sample: the
stream commands and their answers then cost next to nothing per sample,
where redis-py's per-entry parsing dominated. Entries of version 1 writers
(field ``s``: one packed sample) are still read.

This module lives in the store package and uses the store's private client
and key helper on purpose: the key layout stays in one package.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgpack
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vpp.errors import NotFound, StoreUnavailable
from vpp.model import DispatchState, DispatchStatus, Setpoint, TelemetrySample
from vpp.store.redis import (
    _CHUNK,
    _SAMPLES,
    RedisStore,
    _epoch_us,
    _pack,
    _redacted,
    _TelemetryEncoder,
    _unpack,
)

__all__ = ["DEFAULT_PARTITIONS", "IngestEntry", "RedisCluster", "partition_of", "setpoint_id"]

DEFAULT_PARTITIONS = 4
"""Ingest partitions of a namespace when the first process to use it does not say otherwise [unitless]."""

P = ParamSpec("P")
R = TypeVar("R")

# KEYS[1] lock, KEYS[2] fence counter. ARGV[1] holder, ARGV[2] lease [ms].
# Returns the token: a new one (INCR) when the lock was free, the held one when this holder has it; 0 when another has it.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local token, holder = string.match(cur, '^(%d+)|(.*)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. '|' .. ARGV[1], 'PX', ARGV[2])
return token
"""

# KEYS[1] lock. ARGV[1] the value held, ARGV[2] lease [ms]. 1 renewed, 0 not held.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lock. ARGV[1] the value held. 1 released, 0 not held.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# Every fenced script starts with this: ARGV[1] is '{token}|', the prefix of the lock's value while the token holds it.
_FENCE_CHECK = """
local held = redis.call('GET', KEYS[1])
if (not held) or string.sub(held, 1, #ARGV[1]) ~= ARGV[1] then return -1 end
"""

# KEYS[1] lock, KEYS[2..] set-point lists and id hashes. ARGV[1] fence prefix, ARGV[2] token, ARGV[3] msgpack array
# of set-points, each [list key index, ids key index, id, packed]: one argument for the batch, not four per set-point
# (encoding 40,000 arguments cost the client more than the script). Returns set-points written (repeats skipped),
# -1 fenced out. One call for the whole batch: it is logged under the token entirely or not at all. Commands are
# batched (HMGET, HSET, RPUSH of up to 1,000 at a time, Lua's unpack limit in mind): a call per set-point made the
# script several times slower at 10,000.
_SETPOINTS_FENCED = _FENCE_CHECK + """
local rows = cmsgpack.unpack(ARGV[3])
local ids_of = {}  -- ids key index -> ids of the batch, to look up in one HMGET
for _, row in ipairs(rows) do
  local ids = ids_of[row[2]]
  if not ids then ids = {}; ids_of[row[2]] = ids end
  ids[#ids + 1] = row[3]
end
local known = {}  -- ids key index -> set of ids already logged (or earlier in this batch)
for key, ids in pairs(ids_of) do
  local seen = {}
  for i = 1, #ids, 1000 do
    local found = redis.call('HMGET', KEYS[key], unpack(ids, i, math.min(i + 999, #ids)))
    for j, value in ipairs(found) do
      if value then seen[ids[i + j - 1]] = true end
    end
  end
  known[key] = seen
end
local fresh_ids, fresh_bodies = {}, {}  -- key index -> new id/token pairs, new bodies (in batch order)
for _, row in ipairs(rows) do
  local seen = known[row[2]]
  if not seen[row[3]] then
    seen[row[3]] = true
    local pairs_ = fresh_ids[row[2]]
    if not pairs_ then pairs_ = {}; fresh_ids[row[2]] = pairs_ end
    pairs_[#pairs_ + 1] = row[3]; pairs_[#pairs_ + 1] = ARGV[2]
    local bodies = fresh_bodies[row[1]]
    if not bodies then bodies = {}; fresh_bodies[row[1]] = bodies end
    bodies[#bodies + 1] = row[4]
  end
end
for key, pairs_ in pairs(fresh_ids) do
  for i = 1, #pairs_, 2000 do redis.call('HSET', KEYS[key], unpack(pairs_, i, math.min(i + 1999, #pairs_))) end
end
local written = 0
for key, bodies in pairs(fresh_bodies) do
  for i = 1, #bodies, 1000 do redis.call('RPUSH', KEYS[key], unpack(bodies, i, math.min(i + 999, #bodies))) end
  written = written + #bodies
end
return written
"""

# KEYS[1] lock, KEYS[2] state hash, KEYS[3] by_start, KEYS[4..] every status zset.
# ARGV[1] fence prefix, ARGV[2] id, ARGV[3] packed state, ARGV[4] KEYS index of the new status zset.
# Returns 1 written, 0 unknown instruction, -1 fenced out.
_STATE_FENCED = _FENCE_CHECK + """
local start = redis.call('ZSCORE', KEYS[3], ARGV[2])
if not start then return 0 end
for i = 4, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[tonumber(ARGV[4])], start, ARGV[2])
return 1
"""

# KEYS[1] lock, KEYS[2] live hash. ARGV[1] fence prefix, ARGV[2..] field, value pairs. 1 written, -1 fenced out.
_LIVE_FENCED = _FENCE_CHECK + """
redis.call('HSET', KEYS[2], unpack(ARGV, 2, #ARGV))
return 1
"""


def setpoint_id(setpoint: Setpoint) -> str:
    """The idempotency id of a set-point: ``{instruction or '-'}/{device}/{ts [us]}`` (``append_setpoints_fenced`` writes the same)."""
    return f"{setpoint.instruction_id or '-'}/{setpoint.device_id}/{_epoch_us(setpoint.ts)}"


def partition_of(enterprise_id: str, partitions: int) -> int:
    """The ingest partition of an enterprise: stable across processes and restarts (CRC-32) [unitless]."""
    return zlib.crc32(enterprise_id.encode()) % partitions


@dataclass(frozen=True, slots=True)
class IngestEntry:
    """One raw telemetry sample read from an ingest stream, with the id of the stream entry that holds it.

    An entry holds up to 1,000 samples; each comes as its own ``IngestEntry``
    with the entry's id (acknowledging one acknowledges the entry).
    """

    stream: str
    entry_id: str
    sample: TelemetrySample | None
    """None when the sample (or its whole entry) could not be decoded: acknowledged and dropped, never retried forever."""


def _unavailable(
    method: Callable[Concatenate[RedisCluster, P], Awaitable[R]],
) -> Callable[Concatenate[RedisCluster, P], Awaitable[R]]:
    """Connection and timeout errors become ``StoreUnavailable`` naming the server (as in the store)."""

    @functools.wraps(method)
    async def wrapper(self: RedisCluster, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailable(f"Redis store at {_redacted(self.store.url)} is unavailable: {exc}") from exc

    return wrapper


class RedisCluster:
    """Leader lock, fenced writes, live state and ingest streams of one Redis store's namespace.

    The store must be open before any call (the cluster shares its connection pool).
    """

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._scripts: dict[str, Any] = {}
        self._partitions: int | None = None

    # -- plumbing -----------------------------------------------------------------

    def _key(self, suffix: str) -> str:
        return self.store._k.of(suffix)

    @property
    def _client(self):
        return self.store._client  # raises the store's clear "not open" error

    async def _run(self, name: str, text: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(text)
        return await script(keys=keys, args=args, client=self._client)

    # -- leader lock --------------------------------------------------------------

    @property
    def lock_key(self) -> str:
        """The key of the dispatch leader lock."""
        return self._key("leader")

    @_unavailable
    async def acquire(self, holder: str, lease_s: float) -> int:
        """Take the leader lock for ``lease_s`` (or extend it if ``holder`` has it); the fencing token, 0 if another holds it."""
        _check_holder(holder)
        return int(await self._run("acquire", _ACQUIRE, [self.lock_key, self._key("leader:fence")], [holder, _ms(lease_s)]))

    @_unavailable
    async def renew(self, holder: str, token: int, lease_s: float) -> bool:
        """Extend the lease of the lock ``holder`` took with ``token``; False when it is no longer theirs."""
        return bool(await self._run("renew", _RENEW, [self.lock_key], [f"{token}|{holder}", _ms(lease_s)]))

    @_unavailable
    async def release(self, holder: str, token: int) -> bool:
        """Give the lock up at once (graceful shutdown) so another candidate takes it; False when not held."""
        return bool(await self._run("release", _RELEASE, [self.lock_key], [f"{token}|{holder}"]))

    @_unavailable
    async def leader(self) -> tuple[int, str] | None:
        """``(token, holder)`` of the current leader, or None when the lock is free."""
        raw = await self._client.get(self.lock_key)
        if raw is None:
            return None
        token, _, holder = raw.decode().partition("|")
        return int(token), holder

    # -- fenced writes ------------------------------------------------------------

    @_unavailable
    async def append_setpoints_fenced(self, setpoints: Sequence[Setpoint], token: int) -> int:
        """Log set-points sent under ``token``; returns how many were new (a repeated id is skipped), -1 when fenced out."""
        if not setpoints:
            return 0
        keys = [self.lock_key]
        key_indexes: dict[str | None, tuple[int, int]] = {}  # instruction id -> KEYS indexes of its list and id hash

        def indexes_of(instruction_id: str | None) -> tuple[int, int]:
            found = key_indexes.get(instruction_id)
            if found is None:
                ids_key = "setpoint_ids_unassigned" if instruction_id is None else f"setpoint_ids:{instruction_id}"
                keys.extend((self.store._k.setpoints(instruction_id), self._key(ids_key)))
                found = key_indexes[instruction_id] = (len(keys) - 1, len(keys))  # Lua KEYS are 1-based
            return found

        rows = []
        stamps = _TelemetryEncoder()  # formats each distinct instant once: a batch shares one or a few
        pack = msgpack.Packer().pack
        for s in setpoints:
            ts_json, ts_us = stamps.stamp(s.ts)
            # What _pack(s) gives (a property test checks the bytes), without a pydantic dump per set-point.
            body = pack({"device_id": s.device_id, "p_kw": s.p_kw, "ts": ts_json, "instruction_id": s.instruction_id})
            rows.append((*indexes_of(s.instruction_id), f"{s.instruction_id or '-'}/{s.device_id}/{ts_us}", body))
        # use_bin_type=False: Redis' cmsgpack reads only the raw type, which carries the bodies' bytes.
        args = [f"{token}|", token, msgpack.packb(rows, use_bin_type=False)]
        return int(await self._run("setpoints", _SETPOINTS_FENCED, keys, args))

    @_unavailable
    async def put_dispatch_state_fenced(self, state: DispatchState, token: int) -> bool:
        """Replace an instruction's state if ``token`` still holds the lock; False when fenced out. ``NotFound`` if unknown."""
        k = self.store._k
        status_keys = [k.status(s) for s in DispatchStatus]
        keys = [self.lock_key, k.of("instruction:state"), k.of("instruction:by_start"), *status_keys]
        new_index = 4 + status_keys.index(k.status(state.status))
        done = int(await self._run("state", _STATE_FENCED, keys, [f"{token}|", state.instruction_id, _pack(state), new_index]))
        if done == 0:
            raise NotFound(f"no dispatch instruction with id {state.instruction_id!r}")
        return done == 1

    @_unavailable
    async def setpoint_tokens(self, instruction_id: str | None) -> dict[str, int]:
        """Set-point id -> fencing token it was sent under, for one instruction (None: the schedule's)."""
        key = self._key("setpoint_ids_unassigned" if instruction_id is None else f"setpoint_ids:{instruction_id}")
        found = await self._client.hgetall(key)
        return {k.decode(): int(v) for k, v in found.items()}

    # -- live state ---------------------------------------------------------------

    @_unavailable
    async def publish_live(self, fields: Mapping[str, Any], token: int) -> bool:
        """Write the leader's live fields (msgpack values) if ``token`` holds the lock; False when fenced out."""
        args: list[object] = [f"{token}|"]
        for name, value in fields.items():
            args += [name, msgpack.packb(value)]
        return int(await self._run("live", _LIVE_FENCED, [self.lock_key, self._key("live")], args)) == 1

    @_unavailable
    async def live(self) -> dict[str, Any]:
        """The leader's last published live fields (empty before any leader published)."""
        found = await self._client.hgetall(self._key("live"))
        return {k.decode(): msgpack.unpackb(v) for k, v in found.items()}

    # -- instruction feed -----------------------------------------------------------

    @_unavailable
    async def wait_instruction(self, after: str, block_s: float) -> str | None:
        """Wait up to ``block_s`` for an instruction stored after stream entry ``after`` ('$': from now).

        Returns the id of the newest entry seen, or None when none came.
        """
        answer = await self._client.xread({self.store._k.of("instructions"): after}, count=100, block=_ms(block_s))
        if not answer:
            return None
        last = answer[0][1][-1][0]
        return last.decode() if isinstance(last, bytes) else last

    # -- ingest streams -----------------------------------------------------------

    @_unavailable
    async def partitions(self, wanted: int | None = None) -> int:
        """The namespace's number of ingest partitions: fixed by the first process that asks (``wanted`` or the default)."""
        if self._partitions is None:
            key = self._key("ingest:partitions")
            await self._client.set(key, int(wanted or DEFAULT_PARTITIONS), nx=True)
            self._partitions = int(await self._client.get(key))
        return self._partitions

    def ingest_stream(self, partition: int) -> str:
        """The stream key of one ingest partition."""
        return self._key(f"ingest:{partition}")

    @_unavailable
    async def publish_telemetry(
        self, samples: Sequence[TelemetrySample], enterprise_of: Mapping[str, str], maxlen: int = 1_000_000
    ) -> None:
        """Append raw samples to their enterprise's partition stream, up to 1,000 per entry (one pipelined round trip).

        ``maxlen`` [samples] caps each stream (approximately) at
        ``maxlen // 1000`` entries: entries beyond it are trimmed even if no
        ingest worker took them, so it must exceed what piles up while every
        worker is down (smaller batches make smaller entries, so fewer samples).
        """
        if not samples:
            return
        n = await self.partitions()
        encoder = _TelemetryEncoder()
        by_partition: dict[int, list[dict[str, Any]]] = {}
        partitions: dict[str, int] = {}  # enterprise id -> its partition, computed once per call
        for s in samples:
            enterprise = enterprise_of.get(s.device_id, "")
            p = partitions.get(enterprise)
            if p is None:
                p = partitions[enterprise] = partition_of(enterprise, n)
            by_partition.setdefault(p, []).append(encoder.fields(s, encoder.stamp(s.ts)[0]))
        entries = max(1, maxlen // _CHUNK)
        async with self._client.pipeline(transaction=False) as pipe:
            for p, rows in sorted(by_partition.items()):
                for i in range(0, len(rows), _CHUNK):
                    packed = msgpack.packb(rows[i : i + _CHUNK])
                    pipe.xadd(self.ingest_stream(p), {"samples": packed}, maxlen=entries, approximate=True)
            await pipe.execute()

    @_unavailable
    async def ensure_group(self, group: str) -> None:
        """Create the consumer group on every partition stream (from the stream's start); nothing if it exists."""
        for p in range(await self.partitions()):
            try:
                await self._client.xgroup_create(self.ingest_stream(p), group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @_unavailable
    async def read_telemetry(self, group: str, consumer: str, count: int, block_ms: int) -> list[IngestEntry]:
        """New entries for ``consumer`` from every partition (waits up to ``block_ms`` when there are none)."""
        streams = {self.ingest_stream(p): ">" for p in range(await self.partitions())}
        answer = await self._client.xreadgroup(group, consumer, streams, count=count, block=block_ms)
        return [
            decoded
            for stream, entries in (answer or [])
            for entry_id, fields in entries
            if fields  # an entry trimmed while pending comes back without fields
            for decoded in _entries(stream, entry_id, fields)
        ]

    @_unavailable
    async def claim_telemetry(self, group: str, consumer: str, min_idle_s: float, count: int) -> list[IngestEntry]:
        """Take over entries another (dead or stuck) consumer read but did not acknowledge within ``min_idle_s``."""
        claimed: list[IngestEntry] = []
        for p in range(await self.partitions()):
            stream = self.ingest_stream(p)
            _, entries, *_ = await self._client.xautoclaim(stream, group, consumer, _ms(min_idle_s), "0-0", count=count)
            claimed += [decoded for entry_id, fields in entries if fields for decoded in _entries(stream, entry_id, fields)]
        return claimed

    @_unavailable
    async def ack_telemetry(self, group: str, entries: Sequence[IngestEntry]) -> None:
        """Acknowledge entries whose samples are in the store (each stream entry once, however many samples it held)."""
        by_stream: dict[str, dict[str, None]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, {})[e.entry_id] = None
        if not by_stream:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, group, *ids)  # dict keys: distinct, in the order read
            await pipe.execute()

    @_unavailable
    async def pending_telemetry(self, group: str) -> int:
        """Entries read by some consumer of ``group`` and not yet acknowledged, over every partition."""
        total = 0
        for p in range(await self.partitions()):
            total += int((await self._client.xpending(self.ingest_stream(p), group))["pending"])
        return total

    @_unavailable
    async def telemetry_entries(self, partition: int) -> list[IngestEntry]:
        """Every entry still in one partition stream (for audits and tests)."""
        stream = self.ingest_stream(partition)
        return [decoded for entry_id, fields in await self._client.xrange(stream) for decoded in _entries(stream, entry_id, fields)]


def _entries(stream: bytes | str, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> list[IngestEntry]:
    """The samples of one stream entry: ``samples`` (a msgpack array of them) or, from version 1 writers, ``s`` (one)."""
    stream = stream.decode() if isinstance(stream, bytes) else stream
    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return [IngestEntry(stream, entry_id, sample) for sample in _decode_samples(fields)]


def _decode_samples(fields: Mapping[bytes, bytes]) -> list[TelemetrySample | None]:
    """Decoded samples of an entry's fields; None for each one that is not a valid sample (one None: nothing usable)."""
    try:
        if b"samples" not in fields:
            return [_unpack(TelemetrySample, fields[b"s"])]
        rows = msgpack.unpackb(fields[b"samples"])
    except (KeyError, ValueError, msgpack.UnpackException):  # pydantic's ValidationError is a ValueError
        return [None]
    if not isinstance(rows, list) or not rows:
        return [None]
    try:
        return list(_SAMPLES.validate_python(rows))  # one validator call for the entry
    except ValueError:
        return [_valid_or_none(row) for row in rows]  # keep the good ones, drop only the bad


def _valid_or_none(row: Any) -> TelemetrySample | None:
    try:
        return TelemetrySample.model_validate(row)
    except ValueError:
        return None


def _ms(seconds: float) -> int:
    if not seconds > 0:
        raise ValueError(f"lease / idle time must be positive, got {seconds} s")
    return max(1, int(round(seconds * 1000)))


def _check_holder(holder: str) -> None:
    if not holder or "|" in holder:
        raise ValueError(f"holder {holder!r} must be non-empty and contain no '|'")
