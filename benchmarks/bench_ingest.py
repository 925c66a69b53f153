"""Telemetry ingest into the store, sustained: samples/s through ``Store.append_telemetry`` on Redis and SQLite.

Run from the repository root (Redis at 127.0.0.1:6379; loopback only; stops by itself):

    .venv/bin/python benchmarks/bench_ingest.py [--devices 10000] [--seconds 15] [--stores redis,sqlite]
        [--redis-url redis://127.0.0.1:6379/0] [--quick]

What is measured: a fleet of ``--devices`` devices reporting once per
simulated second, written batch by batch (one batch = every device at one
instant, as ``PlantService.poll_telemetry`` writes an adapter's read) for
``--seconds`` of wall time per store. The samples are built before the clock
starts (one pool of batches, each re-stamped to a new instant by
``model_copy``), so the figure is the store's, not pydantic's.

* ``redis``: ``RedisStore.append_telemetry`` (history zset per device,
  ``telemetry`` stream, latest hashes; one Lua call per 1,000 samples, one
  round trip per batch) under a fresh namespace deleted afterwards;
* ``sqlite``: ``SqliteStore.append_telemetry`` (one WAL transaction with
  ``synchronous=FULL`` per batch) in a temporary directory;
* ``reference``: the floor on the same server in the same run: redis-py
  pipelines doing only ``XADD`` of the same msgpack bodies (one stream entry
  per sample, 1,000 per round trip): what a store could reach that kept
  nothing but the stream.

Columns: ``samples/s`` accepted samples per second of wall time while
appending; ``ratio`` over the reference; ``batch p50/p99`` time of one
``append_telemetry`` call [ms]; ``cpu`` process CPU per sample [us] (the
Redis server's own CPU is not in it). Also the Redis server's CPU seconds
over the window, from ``INFO cpu``.

Exits 1 when the Redis store ingests below 50,000 samples/s (the budget).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgpack
import redis.asyncio as aioredis

from vpp.model import TelemetrySample
from vpp.store import RedisStore, SqliteStore, Store

BUDGET_SAMPLES_PER_S = 50_000
"""Sustained telemetry ingest into the store (DESIGN.md)."""
T0 = datetime(2026, 7, 1, tzinfo=UTC)
POOL_INSTANTS = 4  # distinct sample contents cycled through (re-stamped each batch)


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
        server = f"{self.server_cpu_s:.1f}" if self.server_cpu_s is not None else "-"
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


async def main_async(args: argparse.Namespace) -> int:
    stores = args.stores.split(",")
    print(f"telemetry ingest: {args.devices:,} devices, one batch per simulated second, {args.seconds:g} s of appending per row")
    t0 = time.perf_counter()
    pool = sample_pool(args.devices)
    print(f"  (sample pool built in {time.perf_counter() - t0:.1f} s, off the clock)", flush=True)
    rows: list[Row] = []
    namespace = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(args.redis_url)
    try:
        if "redis" in stores:
            rows.append(await reference_xadd(client, f"{namespace}:reference", pool, args.seconds))
            await drop_namespace(client, namespace)
        with tempfile.TemporaryDirectory(prefix="vpp-bench-ingest-") as tmp:
            for name in stores:
                store: Store = (
                    RedisStore(args.redis_url, namespace=namespace) if name == "redis" else SqliteStore(pathlib.Path(tmp) / "ingest.sqlite3")
                )
                await store.open()
                try:
                    rows.append(await ingest(name, store, pool, args.seconds, client if name == "redis" else None))
                    await check_latest(store, args.devices)
                finally:
                    await store.close()
                    if name == "redis":
                        await drop_namespace(client, namespace)
    finally:
        await client.aclose()
    reference = next((r.rate for r in rows if r.name == "reference"), None)
    header = f"{'path':<10} {'samples':>10} {'samples/s':>11} {'ratio':>7} {'batch p50':>9} {'batch p99':>9} {'cpu us':>8} {'redis cpu':>10}"
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        print(row.line(reference))
    redis_row = next((r for r in rows if r.name == "redis"), None)
    if redis_row is None:
        return 0
    ok = redis_row.rate >= BUDGET_SAMPLES_PER_S
    print(f"\nbudget: Redis store {redis_row.rate:,.0f} samples/s sustained, {'within' if ok else 'BELOW'} the "
          f"{BUDGET_SAMPLES_PER_S:,} samples/s budget")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=15.0, help="wall time of appending per row [s]")
    parser.add_argument("--stores", default="redis,sqlite")
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
