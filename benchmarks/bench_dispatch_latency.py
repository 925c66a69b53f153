"""Instruction received -> every set-point handed to the adapter, for 10,000 devices, on SQLite and Redis.

Run from the repository root (Redis at 127.0.0.1:6379; loopback only; stops by itself):

    .venv/bin/python benchmarks/bench_dispatch_latency.py [--devices 10000] [--instructions 20]
        [--loop-instructions 6] [--stores sqlite,redis] [--redis-url redis://127.0.0.1:6379/0] [--quick]

Set-up per store: a seeded synthetic fleet (a quarter each of batteries, PV,
interruptible loads and EV chargers, 10 devices per enterprise, no notice,
event limit or protected hour, so every device may be dispatched) enrolled in
the store (SQLite in a temporary directory; Redis under a fresh namespace that
is deleted afterwards), and a ``PlantService`` whose only adapter is
``CountingAdapter``: it reports fresh telemetry for every device and
``write_setpoints`` notes the time it was handed each instruction's
set-points. The fleet schedule is off (``schedule_interval_s=0``), so only
instructions move devices; logging is at warning level.

Each instruction is a delta of 40-90 % of the fleet's available headroom
(alternately up and down, so most devices get a set-point), starting now.

* ``driven``: with a manual clock, as ``tests/vpp/harness.py`` does: new
  telemetry is polled for all devices, then the clock is read, then
  ``submit_instruction`` (stored before it returns) and ``control_step`` run;
  latency = submit called -> the adapter got the instruction's set-points.
  Between instructions (untimed) the instruction is cancelled, which releases
  every device.
* ``loops``: the service started with the real clock, its telemetry loop
  polling every second and its control loop woken by the submission, as in
  production; instructions are submitted at random moments, so some land
  while a 10,000-sample poll is being stored.

* ``leader`` (Redis only): the scaled-out path. The instruction is stored
  as an API replica stores it (``store_instruction``); the dispatch leader
  (``shared_store``, state written every step, telemetry published to the
  ingest streams, every write fenced by its token as ``--role dispatch``
  runs) takes it from the store in its control step and logs the set-points
  under its fencing token before handing them over. Driven by the manual
  clock as ``driven`` is.

``first`` and ``last`` are the median latency of the first and last tenth of
the instructions: all of a run is one local day, and each device's count of
today's events (``vpp.event_tally``) grows with every instruction, so a
latency that grew with it would show here. Ending the first instruction
(releasing every device it holds; not in the timed path) is timed and
printed for the first store.

``reference`` is the pure computation a control step cannot avoid, measured
on the same snapshot in the same run: ``plan_step`` (bounds and the optimal
allocation). ``ratio`` is latency over that. ``set-points`` is the mean
number handed to the adapter per instruction. Memory: traced Python
allocations (tracemalloc) and the RSS growth of loading the service's
in-memory state (devices, latest telemetry, one snapshot), scaled to 10,000
devices (RSS is only telling for the first store: the allocator reuses what
the first run freed).

Exits 1 when a ``driven`` or ``leader`` p99 is over the 100 ms budget (``loops`` has
too few instructions for a p99 that means much; it is printed beside them).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import pathlib
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import redis.asyncio as aioredis

from adapters.base import Adapter
from vpp.clock import Clock, ManualClock, RealClock
from vpp.execution import plan_step
from vpp.logs import configure_logging
from vpp.model import (
    PV,
    Battery,
    Device,
    DispatchInstruction,
    Enterprise,
    EvCharger,
    InterruptibleLoad,
    Setpoint,
    TelemetrySample,
)
from vpp.leader import Fence, LeaderElection
from vpp.service import PlantService, ServiceSettings, store_instruction
from vpp.store import RedisStore, SqliteStore, Store
from vpp.store.redis_cluster import RedisCluster

BUDGET_MS = 100.0
"""Instruction received -> all set-points handed to adapters, p99 at 10,000 devices (DESIGN.md)."""
DEVICES_PER_ENTERPRISE = 10
START = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
SETTINGS = ServiceSettings(schedule_interval_s=0.0, state_persist_interval_s=10.0)


def fleet(n_devices: int, seed: int) -> tuple[list[Enterprise], list[Device]]:
    """A quarter each of batteries, PV, interruptible loads and EV chargers; ratings seeded."""
    rng = random.Random(seed)
    enterprises = [Enterprise(id=f"ent-{i:05d}", name=f"Enterprise {i}") for i in range((n_devices + 9) // DEVICES_PER_ENTERPRISE)]
    devices: list[Device] = []
    for i in range(n_devices):
        common = {"id": f"dev-{i:06d}", "enterprise_id": enterprises[i // DEVICES_PER_ENTERPRISE].id,
                  "marginal_cost_cny_per_kwh": round(rng.uniform(0.0, 1.0), 3), "adapter": CountingAdapter.name}
        rated = round(rng.uniform(20.0, 500.0), 1)
        kind = i % 4
        if kind == 0:
            devices.append(Battery(**common, rated_kw=rated, capacity_kwh=2 * rated, soc_min_kwh=0.1 * rated))
        elif kind == 1:
            devices.append(PV(**common, rated_kw=rated))
        elif kind == 2:
            devices.append(InterruptibleLoad(**common, rated_kw=rated, max_curtail_kw=0.5 * rated))
        else:
            devices.append(EvCharger(**common, rated_kw=rated, bidirectional=rng.random() < 0.3))
    return enterprises, devices


def operating_point(device: Device) -> tuple[float, float, float, float | None]:
    """(p, p_min, p_max, soc) a device reports in the benchmark [kW, kW, kW, kWh]."""
    r = device.rated_kw
    if isinstance(device, Battery):
        return 0.0, -r, r, device.capacity_kwh / 2
    if isinstance(device, PV):
        return 0.6 * r, 0.0, 0.6 * r, None
    if isinstance(device, InterruptibleLoad):
        return -0.8 * r, -0.8 * r, -0.8 * r + device.max_curtail_kw, None
    assert isinstance(device, EvCharger)
    return -0.5 * r, -r, r if device.bidirectional else 0.0, None


class CountingAdapter(Adapter):
    """Fresh telemetry for every device at each read; notes when each instruction's set-points were handed over."""

    name = "counting"

    def __init__(self, devices: Sequence[Device], clock: Clock) -> None:
        self.clock = clock
        self._points = [(d.id, *operating_point(d)) for d in devices]
        self.handed_at: dict[str, float] = {}  # instruction id -> perf_counter of its last write [s]
        self.handed_count: dict[str, int] = {}  # instruction id -> set-points received [unitless]

    async def connect(self) -> None:
        return None

    async def read_telemetry(self) -> list[TelemetrySample]:
        now = self.clock.now()
        return [
            TelemetrySample(device_id=d, ts=now, p_kw=p, p_min_kw=lo, p_max_kw=hi, soc_kwh=soc)
            for d, p, lo, hi, soc in self._points
        ]

    async def write_setpoints(self, setpoints: Sequence[Setpoint]) -> None:
        at = time.perf_counter()
        for instruction_id in {sp.instruction_id for sp in setpoints if sp.p_kw is not None}:
            self.handed_at[instruction_id] = at
            self.handed_count[instruction_id] = sum(1 for sp in setpoints if sp.instruction_id == instruction_id)

    async def close(self) -> None:
        return None


@dataclass
class Figures:
    store: str
    mode: str
    latencies_ms: list[float]
    submit_ms: list[float]
    setpoints: list[int]
    release_s: float = float("nan")  # first instruction's end, releasing its devices, unpatched [s]
    released: int = 0

    def row(self, reference_ms: float) -> str:
        lat = np.array(self.latencies_ms)
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        sub = statistics.median(self.submit_ms) if self.submit_ms else float("nan")
        tenth = max(1, len(lat) // 10)
        first, last = np.median(lat[:tenth]), np.median(lat[-tenth:])
        return (f"{self.store:<7} {self.mode:<7} {len(lat):>5} {p50:>8.1f} {p99:>8.1f} {lat.max():>8.1f} {sub:>9.1f}"
                f" {first:>7.1f} {last:>7.1f} {statistics.mean(self.setpoints):>10,.0f} {p99 / reference_ms:>8.1f}x")


def instruction(i: int, now: datetime, headroom_up_kw: float, headroom_down_kw: float, rng: random.Random) -> DispatchInstruction:
    up = i % 2 == 0
    size = rng.uniform(0.4, 0.9) * (headroom_up_kw if up else headroom_down_kw)
    return DispatchInstruction(
        id=f"bench-{uuid.uuid4().hex[:12]}", kind="delta", start=now, end=now + timedelta(minutes=15),
        delta_kw=round(size if up else -size, 3), source="bench",
    )


async def seed(store: Store, enterprises: list[Enterprise], devices: list[Device]) -> None:
    for enterprise in enterprises:
        await store.put_enterprise(enterprise)
    for device in devices:
        await store.put_device(device)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def load_service(store: Store, devices: list[Device], clock: Clock) -> tuple[PlantService, CountingAdapter, float, float]:
    """Load a service and poll once; returns it with the traced and RSS growth of doing so [bytes]."""
    adapter = CountingAdapter(devices, clock)
    gc.collect()
    rss0 = rss_bytes()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    service = PlantService(store, {adapter.name: adapter}, clock, settings=SETTINGS)
    await service.load()
    await service.poll_telemetry()
    snapshot = service.snapshot()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    rss = rss_bytes() - rss0
    del snapshot
    return service, adapter, traced, rss


def reference_ms(service: PlantService, rng: random.Random, repeat: int = 20) -> float:
    """Median time of ``plan_step`` on the live snapshot: the allocation a step must do [ms]."""
    snapshot = service.snapshot()
    state = service.plant()
    instr = instruction(0, snapshot.ts, state["available_up_kw"], state["available_down_kw"], rng)
    baseline = snapshot.p_kw.copy()
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        plan_step(snapshot, instr, baseline, SETTINGS.control_interval_s, 0.25)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[1:])


async def run_driven(
    service: PlantService,
    adapter: CountingAdapter,
    clock: ManualClock,
    n: int,
    rng: random.Random,
    name: str,
    time_release: bool = False,
    mode: str = "driven",
    submit: Callable[[DispatchInstruction], Awaitable[object]] | None = None,
) -> Figures:
    """``n`` instructions (after two warm-up ones), each submitted then executed by one control step.

    ``submit`` stores the instruction (default: the service's own
    ``submit_instruction``); the latency runs from calling it until the
    adapter got the instruction's set-points.
    """
    submit = submit or service.submit_instruction
    figures = Figures(name, mode, [], [], [])
    for i in range(n + 2):  # the first two warm up
        clock.advance(SETTINGS.control_interval_s)
        await service.poll_telemetry()
        state = service.plant()
        instr = instruction(i, clock.now(), state["available_up_kw"], state["available_down_kw"], rng)
        gc.collect()
        t0 = time.perf_counter()
        await submit(instr)
        t1 = time.perf_counter()
        await service.control_step()
        if instr.id not in adapter.handed_at:
            raise SystemExit(f"{mode}: instruction {instr.id} handed no set-point to the adapter")
        if i >= 2:
            figures.latencies_ms.append(1e3 * (adapter.handed_at[instr.id] - t0))
            figures.submit_ms.append(1e3 * (t1 - t0))
            figures.setpoints.append(adapter.handed_count[instr.id])
        t0 = time.perf_counter()
        await service.cancel_instruction(instr.id, "benchmark: next instruction")
        if i == 0 and time_release:
            figures.release_s = time.perf_counter() - t0
            figures.released = adapter.handed_count[instr.id]
    return figures


async def run_loops(store: Store, devices: list[Device], n: int, rng: random.Random, name: str) -> Figures:
    """The started service on the real clock: telemetry loop at 1 s, control loop woken by each submission."""
    clock = RealClock()
    adapter = CountingAdapter(devices, clock)
    service = PlantService(store, {adapter.name: adapter}, clock, settings=SETTINGS)
    figures = Figures(name, "loops", [], [], [])
    await service.start()
    try:
        deadline = time.perf_counter() + 120.0
        while service.plant()["devices_online"] < len(devices):  # every device reported, so every one can be dispatched
            if time.perf_counter() > deadline:
                raise SystemExit(f"loops: only {service.plant()['devices_online']} of {len(devices)} devices online after 120 s")
            await asyncio.sleep(0.2)
        for i in range(n + 1):
            await asyncio.sleep(rng.uniform(0.05, 1.0))  # land anywhere in the telemetry cycle
            state = service.plant()
            instr = instruction(i, clock.now(), state["available_up_kw"], state["available_down_kw"], rng)
            t0 = time.perf_counter()
            await service.submit_instruction(instr)
            t1 = time.perf_counter()
            deadline = t0 + 60.0
            while instr.id not in adapter.handed_at:
                if time.perf_counter() > deadline:
                    view = (await service.instruction_view(instr.id))[1]
                    raise SystemExit(f"instruction {instr.id} (delta {instr.delta_kw} kW): no set-point handed over within 60 s; "
                                     f"status {view.status}, devices online {service.plant()['devices_online']}")
                await asyncio.sleep(0.001)
            if i >= 1:
                figures.latencies_ms.append(1e3 * (adapter.handed_at[instr.id] - t0))
                figures.submit_ms.append(1e3 * (t1 - t0))
                figures.setpoints.append(adapter.handed_count[instr.id])
            await service.cancel_instruction(instr.id, "benchmark: next instruction")
    finally:
        await service.stop()
    return figures


async def run_leader(
    store: RedisStore, devices: list[Device], clock: ManualClock, n: int, rng: random.Random, name: str
) -> Figures:
    """The scaled-out path on Redis: stored as an API replica stores it, executed by a fenced dispatch leader.

    Latency = ``store_instruction`` called (the replica's write) -> the
    leader's adapter got the set-points, the leader's control step having
    read the open instructions from the store and logged its set-points
    under its fencing token first (``Fence.setpoints``).
    """
    cluster = RedisCluster(store)
    election = LeaderElection(cluster, f"bench-{uuid.uuid4().hex[:6]}", 600.0, _nothing, _nothing)
    if not await election.try_once():
        raise SystemExit("leader: could not take the dispatch lock of a fresh namespace")
    assert election.token is not None
    adapter = CountingAdapter(devices, clock)
    settings = dataclasses.replace(SETTINGS, shared_store=True, state_persist_interval_s=0.0)  # as --role dispatch runs

    async def publish(samples: Sequence[TelemetrySample]) -> None:
        await cluster.publish_telemetry(samples, {d.id: d.enterprise_id for d in devices})

    service = PlantService(
        store, {adapter.name: adapter}, clock, settings=settings, fence=Fence(cluster, election, election.token),
        telemetry_sink=publish,
    )
    await service.load()

    async def submit(instr: DispatchInstruction) -> None:
        await store_instruction(store, instr, clock.now())  # as an API replica stores it

    try:
        return await run_driven(service, adapter, clock, n, rng, name, mode="leader", submit=submit)
    finally:
        await service.stop()
        await election.resign()


async def _nothing(_: object) -> None:
    return None


async def drop_namespace(url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
    finally:
        await client.aclose()


async def bench_store(name: str, args: argparse.Namespace, tmp: pathlib.Path, first: bool) -> tuple[list[Figures], float, float, float, int]:
    enterprises, devices = fleet(args.devices, args.seed)
    namespace = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
    store: Store = SqliteStore(tmp / f"{name}.sqlite3") if name == "sqlite" else RedisStore(args.redis_url, namespace=namespace)
    rng = random.Random(args.seed)
    await store.open()
    try:
        t0 = time.perf_counter()
        await seed(store, enterprises, devices)
        print(f"  {name}: {len(devices):,} devices enrolled in {time.perf_counter() - t0:.1f} s", flush=True)
        clock = ManualClock(START)
        service, adapter, traced, rss = await load_service(store, devices, clock)
        reference = reference_ms(service, rng)
        rows = [await run_driven(service, adapter, clock, args.instructions, rng, name, time_release=first)]
        await service.stop()
        if isinstance(store, RedisStore):
            rows.append(await run_leader(store, devices, clock, args.instructions, rng, name))
        if args.loop_instructions > 0:
            rows.append(await run_loops(store, devices, args.loop_instructions, rng, name))
        return rows, reference, traced, rss, len(devices)
    finally:
        await store.close()
        if name == "redis":
            await drop_namespace(args.redis_url, namespace)


async def main_async(args: argparse.Namespace) -> int:
    print(f"instruction received -> all set-points handed to the adapter; {args.devices:,} devices, "
          f"{args.instructions} driven + {args.loop_instructions} loop instructions per store")
    results = []
    with tempfile.TemporaryDirectory(prefix="vpp-bench-dispatch-") as tmp:
        for k, name in enumerate(args.stores.split(",")):
            results.append((name, *await bench_store(name, args, pathlib.Path(tmp), first=k == 0)))
    header = (f"{'store':<7} {'mode':<7} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'submit ms':>9}"
              f" {'first':>7} {'last':>7} {'set-points':>10} {'ratio':>9}")
    print()
    print(header)
    print("-" * len(header))
    over = False
    for name, rows, reference, traced, rss, n in results:
        for figures in rows:
            print(figures.row(reference))
            over |= figures.mode in ("driven", "leader") and np.percentile(figures.latencies_ms, 99) > BUDGET_MS
    print()
    for name, rows, reference, traced, rss, n in results:
        scale = 10_000 / n
        print(f"{name}: reference plan_step (bounds + optimal allocation) {reference:.2f} ms; in-memory state per 10,000 "
              f"devices: {traced * scale / 2**20:.1f} MiB traced, {rss * scale / 2**20:.1f} MiB RSS growth")
        for figures in rows:
            if figures.released:
                print(f"  {name}: ending the first instruction released {figures.released:,} devices in {figures.release_s:.2f} s")
    driven = [np.percentile(f.latencies_ms, 99) for _, rows, *_ in results for f in rows if f.mode in ("driven", "leader")]
    print(f"\nbudget: driven/leader p99 {max(driven):.1f} ms at {args.devices:,} devices, "
          f"{'within' if not over else 'OVER'} the {BUDGET_MS:g} ms budget ({'scaled: not the budget size' if args.devices != 10_000 else 'budget size'})")
    return 1 if over and args.devices == 10_000 else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--instructions", type=int, default=20, help="driven instructions per store (after 2 warm-up)")
    parser.add_argument("--loop-instructions", type=int, default=6, help="instructions to the started service per store; 0 skips")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="2,000 devices, 20 driven and 5 loop instructions")
    args = parser.parse_args()
    configure_logging("warning")  # the service's info lines would bury the table
    if args.quick:
        args.devices, args.instructions, args.loop_instructions = 2_000, 20, 5
    if "127.0.0.1" not in args.redis_url and "localhost" not in args.redis_url:
        parser.error("--redis-url must be a loopback address")
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
