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
``ns:ingest:{p}``                           stream  raw telemetry of the enterprises of partition p
``ns:setpoint_ids:{instruction_id}``        hash    set-point id -> fencing token it was sent under
``ns:setpoint_ids_unassigned``              hash    the same for schedule set-points
==========================================  ======  ==========================================

Fencing: a leader's writes of set-points, dispatch state and live state go
through Lua scripts that first compare the token the writer holds with the
one in ``ns:leader``; a writer whose lease lapsed or was taken over is
refused (the script returns -1 and writes nothing). A set-point's id is
``{instruction or '-'}/{device}/{ts [us]}``; the script records each id once,
so a retried write (its answer lost in a Redis restart) is not doubled.

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
from vpp.store.redis import RedisStore, _epoch_us, _pack, _redacted, _unpack

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

# KEYS[1] lock, KEYS[2..] set-point lists and id hashes. ARGV[1] fence prefix, ARGV[2] token,
# then per set-point: list key index, ids key index, id, packed. Returns set-points written (repeats skipped), -1 fenced out.
_SETPOINTS_FENCED = _FENCE_CHECK + """
local written = 0
for i = 3, #ARGV, 4 do
  if redis.call('HSETNX', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[2]) == 1 then
    redis.call('RPUSH', KEYS[tonumber(ARGV[i])], ARGV[i + 3])
    written = written + 1
  end
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
    """The idempotency id of a set-point: ``{instruction or '-'}/{device}/{ts [us]}``."""
    return f"{setpoint.instruction_id or '-'}/{setpoint.device_id}/{_epoch_us(setpoint.ts)}"


def partition_of(enterprise_id: str, partitions: int) -> int:
    """The ingest partition of an enterprise: stable across processes and restarts (CRC-32) [unitless]."""
    return zlib.crc32(enterprise_id.encode()) % partitions


@dataclass(frozen=True)
class IngestEntry:
    """One raw telemetry entry read from an ingest stream."""

    stream: str
    entry_id: str
    sample: TelemetrySample | None
    """None when the entry could not be decoded (it is acknowledged and dropped, never retried forever)."""


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
        index: dict[str, int] = {}

        def at(key: str) -> int:
            if key not in index:
                keys.append(key)
                index[key] = len(keys)  # Lua KEYS are 1-based
            return index[key]

        args: list[object] = [f"{token}|", token]
        for s in setpoints:
            ids_key = self._key("setpoint_ids_unassigned" if s.instruction_id is None else f"setpoint_ids:{s.instruction_id}")
            args += [at(self.store._k.setpoints(s.instruction_id)), at(ids_key), setpoint_id(s), _pack(s)]
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
        """Append raw samples to their enterprise's partition stream (one pipelined round trip).

        ``maxlen`` caps each stream (approximately): entries beyond it are
        trimmed even if no ingest worker took them, so it must exceed what
        piles up while every worker is down.
        """
        if not samples:
            return
        n = await self.partitions()
        async with self._client.pipeline(transaction=False) as pipe:
            for s in samples:
                stream = self.ingest_stream(partition_of(enterprise_of.get(s.device_id, ""), n))
                pipe.xadd(stream, {"s": _pack(s)}, maxlen=maxlen, approximate=True)
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
            _entry(stream, entry_id, fields)
            for stream, entries in (answer or [])
            for entry_id, fields in entries
            if fields  # an entry trimmed while pending comes back without fields
        ]

    @_unavailable
    async def claim_telemetry(self, group: str, consumer: str, min_idle_s: float, count: int) -> list[IngestEntry]:
        """Take over entries another (dead or stuck) consumer read but did not acknowledge within ``min_idle_s``."""
        claimed: list[IngestEntry] = []
        for p in range(await self.partitions()):
            stream = self.ingest_stream(p)
            _, entries, *_ = await self._client.xautoclaim(stream, group, consumer, _ms(min_idle_s), "0-0", count=count)
            claimed += [_entry(stream, entry_id, fields) for entry_id, fields in entries if fields]
        return claimed

    @_unavailable
    async def ack_telemetry(self, group: str, entries: Sequence[IngestEntry]) -> None:
        """Acknowledge entries whose samples are in the store."""
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.entry_id)
        async with self._client.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, group, *ids)
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
        return [_entry(stream, entry_id, fields) for entry_id, fields in await self._client.xrange(stream)]


def _entry(stream: bytes | str, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> IngestEntry:
    try:
        sample: TelemetrySample | None = _unpack(TelemetrySample, fields[b"s"])
    except (KeyError, ValueError, msgpack.UnpackException):  # pydantic's ValidationError is a ValueError
        sample = None
    return IngestEntry(
        stream=stream.decode() if isinstance(stream, bytes) else stream,
        entry_id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        sample=sample,
    )


def _ms(seconds: float) -> int:
    if not seconds > 0:
        raise ValueError(f"lease / idle time must be positive, got {seconds} s")
    return max(1, int(round(seconds * 1000)))


def _check_holder(holder: str) -> None:
    if not holder or "|" in holder:
        raise ValueError(f"holder {holder!r} must be non-empty and contain no '|'")
