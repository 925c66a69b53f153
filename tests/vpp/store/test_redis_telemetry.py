"""The Redis store's telemetry path: its packing, its chunked Lua calls and its stream, on the machine's real Redis.

The shared contract (test_contract.py) checks what both backends answer; this
checks what only Redis has: bodies packed field by field must be the bytes
``_pack`` gives (stored bodies and readers do not change), the stream gets one
entry per chunk holding exactly the accepted samples, a failing chunk does not
stop the others, and the layout version is upgraded or refused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import msgpack
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from tests.redis_support import drop_namespace, redis_url
from vpp.errors import StoreUnavailable
from vpp.model import TelemetrySample
from vpp.store import RedisStore
from vpp.store.redis import (
    _TELEMETRY_FIELDS,
    SCHEMA_VERSION,
    _epoch_us,
    _pack,
    _TelemetryEncoder,
    _unpack,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sample(device_id: str, ts: datetime, p_kw: float = 1.0) -> TelemetrySample:
    return TelemetrySample(device_id=device_id, ts=ts, p_kw=p_kw, p_min_kw=-10.0, p_max_kw=10.0, soc_kwh=5.0)


@pytest.fixture
async def store() -> AsyncIterator[RedisStore]:
    namespace = f"test-telemetry-{uuid.uuid4().hex}"
    await drop_namespace(redis_url(), namespace)
    opened = RedisStore(redis_url(), namespace=namespace)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
        await drop_namespace(redis_url(), namespace)


async def stream_chunks(store: RedisStore) -> list[list[TelemetrySample]]:
    """The ``ns:telemetry`` stream, one list of samples per entry."""
    entries = await store._client.xrange(store._k.of("telemetry"))
    return [[TelemetrySample.model_validate(row) for row in msgpack.unpackb(fields[b"samples"])] for _, fields in entries]


# ----------------------------------------------------------------- packing --


def test_the_encoder_writes_every_field_of_the_model_in_its_order() -> None:
    assert _TELEMETRY_FIELDS == tuple(TelemetrySample.model_fields)


finite = st.floats(allow_nan=False, allow_infinity=False)
zones = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))])


@st.composite
def samples(draw: st.DrawFn, instants: list[datetime]) -> TelemetrySample:
    low, high = sorted((draw(finite), draw(finite)))
    return TelemetrySample(
        device_id=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,30}", fullmatch=True)),
        # Instants shared between samples exercise the encoder's memory of what it formatted.
        ts=draw(st.sampled_from(instants) | st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=zones)),
        p_kw=draw(finite),
        p_min_kw=low,
        p_max_kw=high,
        soc_kwh=draw(st.none() | st.floats(min_value=0.0, allow_infinity=False)),
        online=draw(st.booleans()),
    )


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_packing_field_by_field_gives_the_bytes_of_pack_and_reads_back(data: st.DataObject) -> None:
    instants = [at(0), at(0.000001), datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    batch = data.draw(st.lists(samples(instants), min_size=1, max_size=20))
    encoder = _TelemetryEncoder()
    for s in batch:
        ts_us, body = encoder.encode(s)
        assert (ts_us, body) == (str(_epoch_us(s.ts)), _pack(s))
        assert _unpack(TelemetrySample, body) == s


def test_an_unvalidated_sample_in_another_zone_keeps_its_own_form() -> None:
    utc = sample("a", at(0))
    shanghai = TelemetrySample.model_construct(**{**utc.__dict__, "ts": at(0).astimezone(timezone(timedelta(hours=8)))})
    encoder = _TelemetryEncoder()
    assert encoder.encode(utc) == (str(_epoch_us(utc.ts)), _pack(utc))
    assert encoder.encode(shanghai) == (str(_epoch_us(utc.ts)), _pack(shanghai))  # same instant, not the cached form
    assert _pack(shanghai) != _pack(utc) and _unpack(TelemetrySample, _pack(shanghai)) == utc


# ------------------------------------------------------------ Lua and stream --


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 15), st.integers(-100, 100)), max_size=15),
        min_size=1,
        max_size=5,
    )
)
async def test_history_latest_and_stream_hold_the_first_sample_per_instant_in_any_order(
    store: RedisStore, batches: list[list[tuple[str, int, int]]]
) -> None:
    run = uuid.uuid4().hex[:8]  # one store serves every example: fresh device ids keep them apart
    sent = [[sample(f"{run}-{d}", at(t), float(p)) for d, t, p in batch] for batch in batches]
    for batch in sent:
        await store.append_telemetry(batch)

    accepted: dict[tuple[str, datetime], TelemetrySample] = {}
    for s in (s for batch in sent for s in batch):
        accepted.setdefault((s.device_id, s.ts), s)  # first wins
    for device in {s.device_id for s in accepted.values()}:
        history = await store.telemetry_history(device, at(0), at(16))
        assert history == sorted((s for s in accepted.values() if s.device_id == device), key=lambda s: s.ts)
        assert (await store.latest_telemetry())[device] == history[-1]  # the latest instant, not the last sent
    # The stream: one entry per batch that added anything, holding what it added, in the order sent.
    entries = [[s for s in chunk if s.device_id.startswith(run)] for chunk in await stream_chunks(store)]
    expected = []
    seen: set[tuple[str, datetime]] = set()
    for batch in sent:
        added = []
        for s in batch:
            if (s.device_id, s.ts) not in seen:
                seen.add((s.device_id, s.ts))
                added.append(s)
        if added:
            expected.append(added)
    assert [chunk for chunk in entries if chunk] == expected


async def test_a_large_batch_goes_in_chunks_of_1000_and_repeats_across_chunks_lose(store: RedisStore) -> None:
    first = [sample("x", at(t), 1.0) for t in range(1500)]
    again = [sample("x", at(t), 2.0) for t in range(1000)]  # every instant already sent, partly in the same chunk
    await store.append_telemetry(first + again)
    assert await store.telemetry_history("x", at(0), at(2000)) == first
    assert (await store.latest_telemetry())["x"] == first[-1]
    assert [len(chunk) for chunk in await stream_chunks(store)] == [1000, 500]  # the third chunk added nothing


async def test_a_failing_chunk_is_raised_after_the_others_are_applied(store: RedisStore) -> None:
    await store._client.set(store._k.history("wrong"), "not a sorted set")
    batch = [sample(f"d{i}", at(0)) for i in range(3000)]
    batch[1000] = sample("wrong", at(0))  # first sample of the second chunk
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.append_telemetry(batch)
    latest = await store.latest_telemetry()
    assert set(latest) == {s.device_id for s in batch[:1000] + batch[2000:]}
    await store.append_telemetry([sample("after", at(1))])  # the store's connections are still in step
    assert (await store.latest_telemetry())["after"].ts == at(1)


async def test_a_cancelled_append_leaves_no_answer_behind_for_the_next_call(store: RedisStore) -> None:
    batch = [sample(f"d{i}", at(0)) for i in range(20_000)]
    running = asyncio.create_task(store.append_telemetry(batch))
    await asyncio.sleep(0.005)  # some chunks sent, their answers not all read
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for k in range(3):  # every pooled connection answers its own calls
        await store.append_telemetry([sample("after", at(1 + k))])
        assert (await store.latest_telemetry())["after"].ts == at(1 + k)


async def test_telemetry_to_a_server_that_is_down_is_store_unavailable() -> None:
    down = RedisStore("redis://127.0.0.1:1/0", namespace="down")
    try:
        with pytest.raises(StoreUnavailable):
            await down.open()
        with pytest.raises(StoreUnavailable, match="127.0.0.1:1"):
            await down.append_telemetry([sample("a", at(0))])
    finally:
        await down.close()


# ----------------------------------------------------------------- versions --


@pytest.mark.parametrize(("found", "after"), [(None, SCHEMA_VERSION), (1, SCHEMA_VERSION), (SCHEMA_VERSION, SCHEMA_VERSION)])
async def test_opening_sets_or_upgrades_the_layout_version(found: int | None, after: int) -> None:
    namespace = f"test-version-{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(redis_url())
    try:
        if found is not None:
            await client.set(f"{namespace}:schema_version", found)
        async with RedisStore(redis_url(), namespace=namespace):
            pass
        assert int(await client.get(f"{namespace}:schema_version")) == after == 2
    finally:
        await client.aclose()
        await drop_namespace(redis_url(), namespace)


async def test_a_newer_layout_is_refused_and_left_alone() -> None:
    namespace = f"test-version-{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(redis_url())
    try:
        await client.set(f"{namespace}:schema_version", SCHEMA_VERSION + 1)
        refused = RedisStore(redis_url(), namespace=namespace)
        try:
            with pytest.raises(StoreUnavailable, match=f"layout version {SCHEMA_VERSION + 1}"):
                await refused.open()
        finally:
            await refused.close()  # open() keeps its client even when it refuses
        assert int(await client.get(f"{namespace}:schema_version")) == SCHEMA_VERSION + 1
    finally:
        await client.aclose()
        await drop_namespace(redis_url(), namespace)
