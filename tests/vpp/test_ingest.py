"""Telemetry-ingest workers sharing the partition streams through a consumer group, on the machine's real Redis."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import msgpack
import pytest

from tests.redis_support import drop_namespace, redis_url
from vpp.ingest import INGEST_GROUP, IngestWorker
from vpp.model import TelemetrySample
from vpp.store import RedisStore
from vpp.store.redis_cluster import RedisCluster, partition_of

T0 = datetime(2026, 7, 1, 4, 0, tzinfo=UTC)
ENTERPRISES = [f"e{i:02d}" for i in range(8)]


@pytest.fixture
async def cluster():
    namespace = f"test-ingest-{uuid.uuid4().hex}"
    await drop_namespace(redis_url(), namespace)
    store = RedisStore(redis_url(), namespace=namespace)
    await store.open()
    try:
        cluster = RedisCluster(store)
        await cluster.partitions(4)
        yield cluster
    finally:
        await store.close()
        await drop_namespace(redis_url(), namespace)


def _samples(seconds: int) -> tuple[list[TelemetrySample], dict[str, str]]:
    """One sample per device per second: two devices per enterprise."""
    enterprise_of = {f"{e}-d{k}": e for e in ENTERPRISES for k in range(2)}
    samples = [
        TelemetrySample(device_id=d, ts=T0 + timedelta(seconds=t), p_kw=float(t), p_min_kw=-10.0, p_max_kw=10.0)
        for t in range(seconds)
        for d in enterprise_of
    ]
    return samples, enterprise_of


async def _publish_each_second(cluster: RedisCluster, samples: list[TelemetrySample], enterprise_of: dict[str, str]) -> None:
    """One publish per instant, as an adapter's reads come: one entry per partition and second."""
    for ts in sorted({s.ts for s in samples}):
        await cluster.publish_telemetry([s for s in samples if s.ts == ts], enterprise_of)


async def _history_counts(store: RedisStore, devices) -> dict[str, int]:
    return {d: len(await store.telemetry_history(d, T0, T0 + timedelta(hours=1))) for d in devices}


def test_enterprises_spread_over_partitions_the_same_way_everywhere():
    assert partition_of("e01", 4) == partition_of("e01", 4)
    assert {partition_of(e, 4) for e in ENTERPRISES} == {0, 1, 2, 3}


async def test_partition_count_is_fixed_by_the_first_process(cluster):
    late = RedisCluster(cluster.store)
    assert await late.partitions(16) == 4


async def test_two_workers_share_the_streams_and_every_sample_lands_once(cluster):
    samples, enterprise_of = _samples(25)  # 400 samples
    await _publish_each_second(cluster, samples, enterprise_of)
    a = IngestWorker(cluster.store, cluster, "a", batch=50, block_s=0.05)
    b = IngestWorker(cluster.store, cluster, "b", batch=50, block_s=0.05)
    await cluster.ensure_group(INGEST_GROUP)
    while await a.step() + await b.step():
        pass
    assert a.written > 0 and b.written > 0 and a.written + b.written == len(samples)
    assert await _history_counts(cluster.store, enterprise_of) == {d: 25 for d in enterprise_of}
    assert await cluster.pending_telemetry(INGEST_GROUP) == 0
    latest = await cluster.store.latest_telemetry()
    assert {s.p_kw for s in latest.values()} == {24.0}


async def test_entries_of_a_dead_worker_are_reclaimed_and_stored_exactly_once(cluster):
    samples, enterprise_of = _samples(10)
    await _publish_each_second(cluster, samples, enterprise_of)
    await cluster.ensure_group(INGEST_GROUP)
    # The dead worker read a batch, wrote half of it, and died before acknowledging anything.
    taken = await cluster.read_telemetry(INGEST_GROUP, "dead", count=3, block_ms=10)  # 3 entries (seconds) per partition
    assert 0 < len(taken) < len(samples)
    await cluster.store.append_telemetry([e.sample for e in taken[: len(taken) // 2]])
    survivor = IngestWorker(cluster.store, cluster, "survivor", batch=1000, claim_idle_s=0.2, block_s=0.05)
    await survivor.step()  # new entries only: the dead one's are not idle long enough yet
    held = len({(e.stream, e.entry_id) for e in taken})  # pending counts stream entries, each of several samples
    assert survivor.claimed == 0 and await cluster.pending_telemetry(INGEST_GROUP) == held == 12
    await asyncio.sleep(0.3)
    await survivor.step()
    assert survivor.claimed == len(taken)
    assert await cluster.pending_telemetry(INGEST_GROUP) == 0
    assert await _history_counts(cluster.store, enterprise_of) == {d: 10 for d in enterprise_of}


async def test_a_stopped_worker_returns_with_its_batch_written_and_acknowledged(cluster):
    samples, enterprise_of = _samples(5)
    worker = IngestWorker(cluster.store, cluster, "w", block_s=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await cluster.publish_telemetry(samples, enterprise_of)
    for _ in range(200):
        if worker.written == len(samples):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await running
    assert worker.written == len(samples)
    assert await cluster.pending_telemetry(INGEST_GROUP) == 0


async def test_an_undecodable_entry_is_dropped_and_acknowledged_not_retried_forever(cluster):
    samples, enterprise_of = _samples(1)
    await cluster.publish_telemetry(samples, enterprise_of)
    await cluster.store._client.xadd(cluster.ingest_stream(0), {"s": b"\xc1 not msgpack"})
    worker = IngestWorker(cluster.store, cluster, "w", block_s=0.05)
    await cluster.ensure_group(INGEST_GROUP)
    assert await worker.step() == len(samples)
    assert await cluster.pending_telemetry(INGEST_GROUP) == 0
    assert b'vpp_adapter_malformed_total{adapter="ingest"} 1.0' in worker.metrics.render()


async def test_a_publish_makes_entries_of_up_to_1000_samples_per_partition(cluster):
    samples = [
        TelemetrySample(device_id=f"big-{i}", ts=T0, p_kw=float(i), p_min_kw=-10.0, p_max_kw=10.0) for i in range(2500)
    ]
    await cluster.publish_telemetry(samples, {s.device_id: "e01" for s in samples})  # one enterprise: one partition
    entries = await cluster.telemetry_entries(partition_of("e01", 4))
    assert [e.sample for e in entries] == samples
    per_entry = [sum(1 for e in entries if e.entry_id == entry_id) for entry_id in dict.fromkeys(e.entry_id for e in entries)]
    assert per_entry == [1000, 1000, 500]


async def test_the_read_count_follows_the_samples_per_entry(cluster):
    samples, enterprise_of = _samples(20)  # 20 publishes of 16 samples: one entry per partition each
    await _publish_each_second(cluster, samples, enterprise_of)
    await cluster.ensure_group(INGEST_GROUP)
    worker = IngestWorker(cluster.store, cluster, "w", batch=40, block_s=0.05)
    assert await worker.step() == 16  # entries assumed full (1,000): one per partition
    assert await worker.step() == 10 * 16  # 4 samples per entry seen: 10 entries per partition for ~40 samples
    assert await worker.step() == 9 * 16
    assert await cluster.pending_telemetry(INGEST_GROUP) == 0


async def test_a_bad_sample_in_an_entry_drops_only_itself(cluster):
    good = [TelemetrySample(device_id=f"d{i}", ts=T0, p_kw=1.0, p_min_kw=0.0, p_max_kw=2.0) for i in range(3)]
    rows = [g.model_dump(mode="json") for g in good]
    rows.insert(1, {**rows[0], "device_id": "bad", "p_min_kw": 5.0})  # p_min_kw above p_max_kw
    await cluster.store._client.xadd(cluster.ingest_stream(0), {"samples": msgpack.packb(rows)})
    worker = IngestWorker(cluster.store, cluster, "w", block_s=0.05)
    await cluster.ensure_group(INGEST_GROUP)
    assert await worker.step() == 3
    assert set(await cluster.store.latest_telemetry()) == {"d0", "d1", "d2"}
    assert await cluster.pending_telemetry(INGEST_GROUP) == 0
    assert b'vpp_adapter_malformed_total{adapter="ingest"} 1.0' in worker.metrics.render()


async def test_entries_of_version_1_writers_are_still_read(cluster):
    old = TelemetrySample(device_id="old-1", ts=T0, p_kw=3.0, p_min_kw=0.0, p_max_kw=5.0, soc_kwh=1.5)
    await cluster.store._client.xadd(cluster.ingest_stream(2), {"s": msgpack.packb(old.model_dump(mode="json"))})
    worker = IngestWorker(cluster.store, cluster, "w", block_s=0.05)
    await cluster.ensure_group(INGEST_GROUP)
    assert await worker.step() == 1
    assert (await cluster.store.latest_telemetry())["old-1"] == old
    assert await cluster.pending_telemetry(INGEST_GROUP) == 0
