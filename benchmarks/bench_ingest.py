"""Telemetry ingest into the store, sustained: samples/s through ``Store.append_telemetry`` on Redis and SQLite,
and through the scale-out path (partition streams -> ingest workers -> store).

Run from the repository root (Redis at 127.0.0.1:6379; loopback only; stops by itself):

    .venv/bin/python benchmarks/bench_ingest.py [--devices 10000] [--seconds 15] [--stores redis,ingest,sqlite]
        [--ingest-workers 2] [--redis-url redis://127.0.0.1:6379/0] [--quick]

What is measured: a fleet of ``--devices`` devices reporting once per
simulated second, written batch by batch (one batch = every device at one
instant, as ``PlantService.poll_telemetry`` writes an adapter's read) for
``--seconds`` of wall time per row. The samples are built before the clock
starts (one pool of batches, each re-stamped to a new instant by
``model_copy``), so the figure is the store's, not pydantic's; the pool is
frozen out of the garbage collector's scans (``gc.freeze``), as no real
writer holds 40,000 samples for good.

* ``redis``: ``RedisStore.append_telemetry`` (history zset per device,
  ``telemetry`` stream entry per 1,000 samples, latest hashes; one Lua call
  per 1,000 samples, pipelined on one connection) under a fresh namespace
  deleted afterwards;
* ``ingest``: the scale-out path of ``vpp serve --role ingest``, sustained: a
  producer (this process, as the dispatch leader's adapters) appends each
  batch with ``RedisCluster.publish_telemetry`` to the partition streams
  ``ns:ingest:{p}`` (4 partitions, 50 enterprises) while ``--ingest-workers``
  worker processes (default 2, one per core, next to Redis and the producer;
  0: one worker task in the producer's process) run
  ``IngestWorker.step`` (read as consumers of the group ``ingest``, write
  with ``append_telemetry``, XACK). The producer keeps at most 5 batches
  unacknowledged. Figure: samples acknowledged by the workers (in the store)
  per second of the window; ``batch`` columns time one ``publish_telemetry``
  of a batch; ``cpu`` is producer plus workers. Printed after it: the lag
  (published, not yet in the store) at the end of the window. Then the
  workers drain, and every sample is checked in the store (each device's
  history holds every instant once, its latest is the last one, nothing is
  left pending). The producer re-stamps batches with a shallow copy (about
  1.5 us per sample, on the clock);
* ``sqlite``: ``SqliteStore.append_telemetry`` (one WAL transaction with
  ``synchronous=FULL`` per batch) in a temporary directory;
* ``reference``: the floor on the same server in the same run: redis-py
  pipelines doing only ``XADD`` of the same msgpack bodies (one stream entry
  per sample, 1,000 per round trip): what a store could reach that kept
  nothing but the stream.

Columns: ``samples/s`` accepted samples per second of wall time while
appending; ``ratio`` over the reference; ``batch p50/p99`` time of one
``append_telemetry`` call [ms]; ``cpu`` process CPU per sample [us] (the
Redis server's own CPU is not in it); ``redis`` the Redis server's CPU per
sample over the window [us], from ``INFO cpu`` (the server is shared: other
clients' work lands in it too).

Exits 1 when the Redis store or the ingest path takes below 50,000 samples/s (the budget).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import pathlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import redis.asyncio as aioredis

from vpp.ingest import INGEST_GROUP, IngestWorker
from vpp.model import TelemetrySample
from vpp.store import RedisStore, SqliteStore, Store
from vpp.store.redis_cluster import RedisCluster

BUDGET_SAMPLES_PER_S = 50_000
"""Sustained telemetry ingest into the store (DESIGN.md)."""
T0 = datetime(2026, 7, 1, tzinfo=UTC)
POOL_INSTANTS = 4  # distinct sample contents cycled through (re-stamped each batch)
PARTITIONS = 4  # ingest streams
ENTERPRISES = 50  # device i belongs to enterprise i % 50
MAX_LAG_BATCHES = 5  # the ingest producer waits while this many batches are published and not yet in the store
WORKER_BATCH = 5000  # IngestWorker.batch: samples read per partition per step, about


@dataclass
class Row:
    name: str
    samples: int
    seconds: float
    batch_s: list[float]
    cpu_s: float
    server_cpu_s: float | None = None

    @property
    def rate(self) -> float:
        return self.samples / self.seconds

    def line(self, reference: float | None) -> str:
        ratio = f"{self.rate / reference:.2f}x" if reference else "1.00x"
        ms = sorted(1e3 * b for b in self.batch_s)
        p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
        server = f"{1e6 * self.server_cpu_s / self.samples:.1f}" if self.server_cpu_s is not None else "-"
        return (f"{self.name:<10} {self.samples:>10,} {self.rate:>11,.0f} {ratio:>7} {statistics.median(ms):>9.1f} {p99:>9.1f}"
                f" {1e6 * self.cpu_s / self.samples:>8.1f} {server:>10}")


def sample_pool(n_devices: int) -> list[list[TelemetrySample]]:
    """A few batches of every device; batteries (every fourth) report SoC."""
    pool = []
    for k in range(POOL_INSTANTS):
        pool.append([
            TelemetrySample(device_id=f"dev-{i:06d}", ts=T0, p_kw=round(((i * 7 + k) % 200) - 100.0, 1), p_min_kw=-100.0,
                            p_max_kw=100.0, soc_kwh=50.0 + k if i % 4 == 0 else None)
            for i in range(n_devices)
        ])
    return pool


def stamped(pool: list[list[TelemetrySample]], second: int) -> list[TelemetrySample]:
    ts = T0 + timedelta(seconds=second)
    return [s.model_copy(update={"ts": ts}) for s in pool[second % len(pool)]]


async def ingest(name: str, store: Store, pool: list[list[TelemetrySample]], seconds: float, server: aioredis.Redis | None) -> Row:
    """Append batches (prepared two ahead, off the clock) until ``seconds`` of appending have passed."""
    await store.append_telemetry(stamped(pool, 0))  # warm-up: scripts loaded, tables created
    row = Row(name, 0, 0.0, [], 0.0)
    cpu0 = await server_cpu(server)
    second = 1
    while row.seconds < seconds:
        batch = stamped(pool, second)
        second += 1
        c0, t0 = time.process_time(), time.perf_counter()
        await store.append_telemetry(batch)
        elapsed = time.perf_counter() - t0
        row.cpu_s += time.process_time() - c0
        row.seconds += elapsed
        row.batch_s.append(elapsed)
        row.samples += len(batch)
    if server is not None:
        row.server_cpu_s = await server_cpu(server) - cpu0
    return row


async def reference_xadd(client: aioredis.Redis, stream: str, pool: list[list[TelemetrySample]], seconds: float) -> Row:
    """Only XADD of the same packed bodies, 1,000 per pipelined round trip."""
    row = Row("reference", 0, 0.0, [], 0.0)
    cpu0 = await server_cpu(client)
    second = 1
    while row.seconds < seconds:
        batch = stamped(pool, second)
        second += 1
        c0, t0 = time.process_time(), time.perf_counter()
        bodies = [msgpack.packb(s.model_dump(mode="json")) for s in batch]
        for i in range(0, len(bodies), 1000):
            async with client.pipeline(transaction=False) as pipe:
                for body in bodies[i : i + 1000]:
                    pipe.xadd(stream, {"s": body}, maxlen=100_000, approximate=True)
                await pipe.execute()
        elapsed = time.perf_counter() - t0
        row.cpu_s += time.process_time() - c0
        row.seconds += elapsed
        row.batch_s.append(elapsed)
        row.samples += len(batch)
    row.server_cpu_s = await server_cpu(client) - cpu0
    return row


def restamped(pool: list[list[TelemetrySample]], second: int) -> list[TelemetrySample]:
    """``stamped`` by a shallow copy of each sample's state (~1.5 us a sample, a third of ``model_copy``): the
    ingest producer runs on the clock, next to the workers. ``main_async`` checks it equals ``stamped``."""
    ts = T0 + timedelta(seconds=second)
    new, set_state = object.__new__, object.__setattr__  # what pydantic's own __copy__ does, minus the copies
    batch = []
    for s in pool[second % len(pool)]:
        copy = new(TelemetrySample)
        fields = s.__dict__.copy()
        fields["ts"] = ts
        set_state(copy, "__dict__", fields)
        set_state(copy, "__pydantic_fields_set__", s.__pydantic_fields_set__)  # frozen models never change it
        set_state(copy, "__pydantic_extra__", s.__pydantic_extra__)
        set_state(copy, "__pydantic_private__", s.__pydantic_private__)
        batch.append(copy)
    return batch


class Workers:
    """``--ingest-workers`` processes (or one task in this process when 0) running ``IngestWorker.step``."""

    def __init__(self, url: str, namespace: str, processes: int) -> None:
        self.url, self.namespace, self.processes = url, namespace, processes
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        n = max(1, processes)
        self._written = [ctx.Value("q", 0) for _ in range(n)]  # samples in the store and acknowledged, per worker
        self._cpu = [ctx.Value("d", 0.0) for _ in range(n)]  # process CPU of each worker process [s]
        self._ready = [ctx.Event() for _ in range(n)]
        self._procs = [
            ctx.Process(target=worker_process, args=(url, namespace, f"w{i}", WORKER_BATCH, self._stop, self._ready[i], self._written[i], self._cpu[i]))
            for i in range(processes)
        ]
        self._task: asyncio.Task | None = None
        self._stopped = False

    async def start(self) -> None:
        if self.processes == 0:
            self._task = asyncio.create_task(work(self.url, self.namespace, "w0", WORKER_BATCH, self._stop, self._ready[0], self._written[0], None))
        for proc in self._procs:
            proc.start()
        while not all(r.is_set() for r in self._ready):
            if self._task is not None and self._task.done():
                self._task.result()  # raises what killed it
            if any(p.exitcode is not None for p in self._procs):
                raise SystemExit("an ingest worker process died while starting")
            await asyncio.sleep(0.05)

    def landed(self) -> int:
        """Samples the workers wrote to the store and acknowledged [unitless]; raises when a worker died."""
        if (self._task is not None and self._task.done()) or any(p.exitcode is not None for p in self._procs):
            if self._task is not None and self._task.done():
                self._task.result()
            raise SystemExit("an ingest worker died; see its traceback above")
        return sum(v.value for v in self._written)

    def cpu_s(self) -> float:
        """CPU of the worker processes so far [s] (0 for an in-process worker: it is this process's)."""
        return sum(v.value for v in self._cpu) if self.processes else 0.0

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._task is not None:
            await self._task
        for proc in self._procs:
            await asyncio.to_thread(proc.join, 30)
            if proc.exitcode != 0:
                raise SystemExit(f"ingest worker process exited with {proc.exitcode}")


def worker_process(url: str, namespace: str, name: str, batch: int, stop: Any, ready: Any, written: Any, cpu: Any) -> None:
    asyncio.run(work(url, namespace, name, batch, stop, ready, written, cpu))


async def work(url: str, namespace: str, name: str, batch: int, stop: Any, ready: Any, written: Any, cpu: Any) -> None:
    """One ingest worker: steps until ``stop``, counting what it wrote (and its CPU when in its own process).

    ``stop``, ``ready``: multiprocessing events; ``written``, ``cpu``: multiprocessing values (``cpu`` None in-process).
    """
    store = RedisStore(url, namespace=namespace)
    await store.open()
    try:
        cluster = RedisCluster(store)
        await cluster.ensure_group(INGEST_GROUP)
        worker = IngestWorker(store, cluster, name, batch=batch, block_s=0.05)
        ready.set()
        while not stop.is_set():
            n = await worker.step()
            with written.get_lock():
                written.value += n
            if cpu is not None:
                cpu.value = time.process_time()
    finally:
        await store.close()


async def ingest_path(url: str, namespace: str, pool: list[list[TelemetrySample]], seconds: float, processes: int,
                      server: aioredis.Redis) -> tuple[Row, str]:  # fmt: skip
    """Producer appends batches to the partition streams; workers drain them into the store. Row and a report line."""
    store = RedisStore(url, namespace=namespace)
    await store.open()
    cluster = RedisCluster(store)
    await cluster.partitions(PARTITIONS)
    await cluster.ensure_group(INGEST_GROUP)
    enterprise_of = {s.device_id: f"e{i % ENTERPRISES:03d}" for i, s in enumerate(pool[0])}
    workers = Workers(url, namespace, processes)
    row = Row("ingest", 0, 0.0, [], 0.0)
    try:
        await workers.start()
        published, second = 0, 0

        async def publish() -> None:
            nonlocal published, second
            batch = restamped(pool, second)
            second += 1
            t = time.perf_counter()
            await cluster.publish_telemetry(batch, enterprise_of)
            row.batch_s.append(time.perf_counter() - t)
            published += len(batch)

        await publish()  # warm-up: groups, scripts, connections
        await until(lambda: workers.landed() == published, "the warm-up batch landing", 60.0)
        row.batch_s.clear()
        landed0, c0, w0, s0, t0 = workers.landed(), time.process_time(), workers.cpu_s(), await server_cpu(server), time.perf_counter()
        max_lag = MAX_LAG_BATCHES * len(pool[0])
        while time.perf_counter() - t0 < seconds:
            if published - workers.landed() >= max_lag:
                await asyncio.sleep(0.002)
                continue
            await publish()
        row.seconds = time.perf_counter() - t0
        landed = workers.landed()
        row.samples = landed - landed0
        producer_cpu_s, workers_cpu_s = time.process_time() - c0, workers.cpu_s() - w0
        row.cpu_s = producer_cpu_s + workers_cpu_s
        row.server_cpu_s = await server_cpu(server) - s0
        lag = published - landed
        t_drain = time.perf_counter()
        await until(lambda: workers.landed() == published, "the workers draining the streams", 120.0)
        drained_s = time.perf_counter() - t_drain
        await workers.stop()
        await check_ingested(store, cluster, enterprise_of, second)
    finally:
        await workers.stop()
        await store.close()
    how = (f"{processes} worker processes (cpu per sample: producer {1e6 * producer_cpu_s / row.samples:.1f} us, "
           f"workers {1e6 * workers_cpu_s / row.samples:.1f} us)" if processes else "1 worker task in the producer's process")  # fmt: skip
    report = (f"ingest path: {how}; lag at the end of the window {lag:,} samples ({lag / len(pool[0]):.1f} batches), "
              f"drained in {drained_s:.2f} s; all {published:,} samples in the store once, none pending")  # fmt: skip
    return row, report


async def until(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while not check():
        if time.perf_counter() > deadline:
            raise SystemExit(f"ingest benchmark: {what} took over {timeout_s:g} s")
        await asyncio.sleep(0.005)


async def check_ingested(store: RedisStore, cluster: RedisCluster, enterprise_of: dict[str, str], instants: int) -> None:
    """Every published sample landed once: each device's history holds every instant, its latest is the last; none pending."""
    pending = await cluster.pending_telemetry(INGEST_GROUP)
    if pending:
        raise SystemExit(f"ingest path: {pending} entries still pending after the drain")
    devices = list(enterprise_of)
    counts: list[int] = []
    for i in range(0, len(devices), 1000):
        async with store._client.pipeline(transaction=False) as pipe:
            for device in devices[i : i + 1000]:
                pipe.zcard(store._k.history(device))
            counts += await pipe.execute()
    short = [(d, c) for d, c in zip(devices, counts) if c != instants]
    if short:
        raise SystemExit(f"ingest path: {len(short)} devices do not hold {instants} samples, e.g. {short[:3]}")
    last = T0 + timedelta(seconds=instants - 1)
    stale = [d for d, s in (await store.latest_telemetry()).items() if s.ts != last]
    if stale or len(await store.latest_telemetry()) != len(devices):
        raise SystemExit(f"ingest path: the latest sample of {len(stale)} devices is not the last one, e.g. {stale[:3]}")


async def server_cpu(client: aioredis.Redis | None) -> float:
    """Redis server CPU used so far, user + system [s]."""
    if client is None:
        return 0.0
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def check_latest(store: Store, n_devices: int) -> None:
    """Every device's latest sample landed (a benchmark that loses data measures nothing)."""
    latest = await store.latest_telemetry()
    if len(latest) != n_devices:
        raise SystemExit(f"store holds the latest of {len(latest)} devices, expected {n_devices}")


async def drop_namespace(client: aioredis.Redis, namespace: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
    for i in range(0, len(keys), 1000):
        await client.delete(*keys[i : i + 1000])


async def store_row(name: str, args: argparse.Namespace, pool: list[list[TelemetrySample]], tmp: pathlib.Path, namespace: str,
                    client: aioredis.Redis) -> Row:  # fmt: skip
    """The ``redis`` or ``sqlite`` row: ``append_telemetry`` batch after batch, then every device's latest checked."""
    store: Store = RedisStore(args.redis_url, namespace=namespace) if name == "redis" else SqliteStore(tmp / "ingest.sqlite3")
    await store.open()
    try:
        row = await ingest(name, store, pool, args.seconds, client if name == "redis" else None)
        await check_latest(store, args.devices)
        return row
    finally:
        await store.close()


async def main_async(args: argparse.Namespace) -> int:
    stores = args.stores.split(",")
    print(f"telemetry ingest: {args.devices:,} devices, one batch per simulated second, {args.seconds:g} s of appending per row")
    t0 = time.perf_counter()
    pool = sample_pool(args.devices)
    gc.freeze()  # the pool lives all run long: no collection should scan it (a producer holds no such pool)
    print(f"  (sample pool built in {time.perf_counter() - t0:.1f} s, off the clock)", flush=True)
    if restamped(pool, 1) != stamped(pool, 1):
        raise SystemExit("restamped() no longer copies samples faithfully (pydantic changed?)")
    if unknown := set(stores) - {"redis", "ingest", "sqlite"}:
        raise SystemExit(f"--stores: unknown rows {sorted(unknown)}; pick from redis, ingest, sqlite")
    rows: list[Row] = []
    reports: list[str] = []
    namespace = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(args.redis_url)
    try:
        if "redis" in stores or "ingest" in stores:
            rows.append(await reference_xadd(client, f"{namespace}:reference", pool, args.seconds))
            await drop_namespace(client, namespace)
        with tempfile.TemporaryDirectory(prefix="vpp-bench-ingest-") as tmp:
            for name in stores:
                try:
                    if name == "ingest":
                        row, report = await ingest_path(args.redis_url, namespace, pool, args.seconds, args.ingest_workers, client)
                        rows.append(row)
                        reports.append(report)
                    else:
                        rows.append(await store_row(name, args, pool, pathlib.Path(tmp), namespace, client))
                finally:
                    await drop_namespace(client, namespace)
    finally:
        await client.aclose()
    reference = next((r.rate for r in rows if r.name == "reference"), None)
    header = f"{'path':<10} {'samples':>10} {'samples/s':>11} {'ratio':>7} {'batch p50':>9} {'batch p99':>9} {'cpu us':>8} {'redis us':>10}"
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        print(row.line(reference))
    for report in reports:
        print(report)
    budgeted = [r for r in rows if r.name in ("redis", "ingest")]
    for row in budgeted:
        what = "Redis store" if row.name == "redis" else "ingest path"
        print(f"budget: {what} {row.rate:,.0f} samples/s sustained, {'within' if row.rate >= BUDGET_SAMPLES_PER_S else 'BELOW'} the "
              f"{BUDGET_SAMPLES_PER_S:,} samples/s budget")  # fmt: skip
    return 0 if all(r.rate >= BUDGET_SAMPLES_PER_S for r in budgeted) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=15.0, help="wall time of appending per row [s]")
    parser.add_argument("--stores", default="redis,ingest,sqlite", help="rows to run, of redis, ingest, sqlite")
    parser.add_argument("--ingest-workers", type=int, default=2, help="worker processes of the ingest row (0: one task in-process)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--quick", action="store_true", help="3 s per row")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 3.0
    if "127.0.0.1" not in args.redis_url and "localhost" not in args.redis_url:
        parser.error("--redis-url must be a loopback address")
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
