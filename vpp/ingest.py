"""Telemetry-ingest workers: raw samples from the partition streams into the store, shared through a consumer group.

The process that reads the devices (the dispatch leader's adapters, or any
gateway) appends raw samples to ``ns:ingest:{p}``, one stream per partition
of enterprises (``vpp.store.redis_cluster.partition_of``), in entries of up
to 1,000 samples. Every ingest
worker reads all partitions as one consumer of the group ``ingest``, so
Redis hands each entry to exactly one of them; the worker writes the batch
to the store (history and latest per device) and only then acknowledges it.

A worker that dies between reading and acknowledging leaves its entries
pending; every ``claim_idle_s`` each worker takes over (XAUTOCLAIM) entries
pending longer than that and writes them. A sample written twice (by the
dead worker before it died and by the one that re-claimed it) is stored
once: the store keeps the first sample per device and instant.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from vpp.errors import StoreUnavailable
from vpp.metrics import Metrics
from vpp.store.redis import _CHUNK, RedisStore
from vpp.store.redis_cluster import IngestEntry, RedisCluster

__all__ = ["INGEST_GROUP", "IngestWorker"]

INGEST_GROUP = "ingest"


class IngestWorker:
    """One consumer of the ingest group.

    Parameters
    ----------
    consumer : str
        This worker's name in the group (unique per process).
    batch : int
        Samples read per partition per call, about [unitless]: the stream
        count is this over the samples per entry of the last read (entries
        hold up to 1,000 samples; those of version 1 writers one).
    claim_idle_s : float
        Entries pending this long with another consumer are taken over [s].
    block_s : float
        Longest wait for new entries; also how soon ``stop`` is noticed [s].
    """

    def __init__(
        self,
        store: RedisStore,
        cluster: RedisCluster,
        consumer: str,
        metrics: Metrics | None = None,
        batch: int = 5000,
        claim_idle_s: float = 10.0,
        block_s: float = 0.5,
        group: str = INGEST_GROUP,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.consumer = consumer
        self.metrics = metrics or Metrics()
        self.batch = batch
        self.claim_idle_s = claim_idle_s
        self.block_s = block_s
        self.group = group
        self.written = 0
        """Samples this worker wrote to the store (re-claimed ones included) [unitless]."""
        self.claimed = 0
        """Samples this worker took over from others [unitless]."""
        self._per_entry = float(_CHUNK)  # samples per stream entry in the last read [unitless]
        self._claimed_at = 0.0  # monotonic time of the last re-claim pass [s]
        self.log = structlog.get_logger("vpp.ingest").bind(consumer=consumer)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; a batch in hand is written and acknowledged before returning.

        A store outage is waited out (the entries stay in the streams); the worker never dies of one.
        """
        ready = False
        while not stop.is_set():
            try:
                if not ready:
                    await self.cluster.ensure_group(self.group)
                    ready = True
                    self.log.info("ingest worker reading", partitions=await self.cluster.partitions())
                await self.step()
            except StoreUnavailable as exc:
                self.log.warning("store unavailable; ingest waits", error=str(exc))
                try:
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                except TimeoutError:
                    pass
        self.log.info("ingest worker stopped", written=self.written, claimed=self.claimed)

    async def step(self) -> int:
        """Re-claim stuck entries when due, read new ones, write them, acknowledge; samples written [unitless]."""
        entries: list[IngestEntry] = []
        if time.monotonic() - self._claimed_at >= self.claim_idle_s / 2:
            # Own entries left pending by a failed write are re-claimed here too.
            claimed = await self.cluster.claim_telemetry(self.group, self.consumer, self.claim_idle_s, self._count())
            self._claimed_at = time.monotonic()
            if claimed:
                self.claimed += len(claimed)
                self.log.info("re-claimed pending telemetry", samples=len(claimed))
            entries += claimed
        entries += await self.cluster.read_telemetry(self.group, self.consumer, self._count(), int(self.block_s * 1000))
        if not entries:
            return 0
        self._per_entry = len(entries) / len({(e.stream, e.entry_id) for e in entries})
        samples = [e.sample for e in entries if e.sample is not None]
        if len(samples) < len(entries):
            self.metrics.adapter_malformed.labels(adapter="ingest").inc(len(entries) - len(samples))
            self.log.warning("undecodable telemetry entries dropped", entries=len(entries) - len(samples))
        await self.store.append_telemetry(samples)
        await self.cluster.ack_telemetry(self.group, entries)
        self.written += len(samples)
        self.metrics.telemetry_samples.labels(adapter="ingest").inc(len(samples))
        return len(samples)

    def _count(self) -> int:
        """Stream entries to ask for per partition: about ``batch`` samples [unitless]."""
        return max(1, min(self.batch, round(self.batch / self._per_entry)))
