"""MQTT telemetry ingest: 1,000 simulated devices at 1 Hz through Mosquitto into the store.

Run from the repository root (needs the broker at 127.0.0.1:1883; loopback only; stops by itself):

    .venv/bin/python benchmarks/bench_mqtt_ingest.py [--devices 1000] [--rate-hz 1] [--seconds 20]
        [--format json|msgpack] [--poll-s 1.0] [--gateways 0] [--port 1883]

Set-up: a seeded park (``build_park``, ~2.9 devices per enterprise, so about
345 enterprise gateways for 1,000 devices) whose first ``--devices`` devices
are published by :class:`simulators.mqtt_gateway.MqttGatewayFleet` in a child
process (its own core and event loop), one MQTT client per enterprise, their
publications spread evenly over each period, every sample stamped with the
wall time just before it is published. Topics go under a fresh random prefix.

Measured in this process over ``--seconds`` after a warm-up, all at once on
the same stream:

* ``reference``: a bare aiomqtt subscriber that only counts the telemetry
  messages and reads their ``ts`` (broker transit only);
* ``adapter``: :class:`adapters.mqtt.MqttAdapter` receiving and parsing them
  (lag = stamp -> parsed sample held by the adapter);
* ``adapter+store``: the service's poll path, ``PlantService.poll_telemetry``
  every ``--poll-s`` (as the service does) reading the adapter and writing a
  SQLite store in a temporary directory (lag = stamp -> committed to the
  store, so it includes waiting for the next poll: about half the poll
  period on average).

Columns: ``samples/s`` unique (device, ts) samples stamped during the
window that reached that point, per second of window; ``ratio`` samples/s of the row over the
reference's (1.00x = nothing lost or left behind); lag percentiles in ms.
Then two CPU figures: process time of this process during the window and
of the publishers over their run (on a shared machine the end-to-end rate is
capped by whichever process gets too little CPU: usually the ~340 publishing
clients); and process time per message of the adapter's handling (parse,
validate, keep) against the reference's reading of ``ts``, measured on 20,000
messages without the network, which holds however busy the machine is.
``--gateways 20`` puts the devices behind 20 gateways instead of one per
enterprise (fewer clients to publish from).

Exits 1 when the store path ingests less than 99 % of what the reference saw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import aiomqtt
import msgpack

from adapters.mqtt import MqttAdapter, _encode_telemetry, device_address
from simulators.mqtt_gateway import MqttGatewayFleet
from simulators.park import build_park
from simulators.sim import SimulatedPark
from vpp.clock import RealClock
from vpp.model import Device, TelemetrySample
from vpp.service import PlantService, ServiceSettings
from vpp.store import SqliteStore

WARMUP_S = 4.0
TAIL_MAX_S = 20.0
"""Longest wait after the window for the store path to take in the window's last samples [s]."""
MAX_RUN_S = 600.0
"""The publishers stop by themselves after this, whatever happens to this process [s]."""
DEVICES_PER_ENTERPRISE = 2.9  # build_park's average; enterprises are drawn with some to spare


def fleet_devices(n_devices: int, seed: int, gateways: int = 0) -> tuple[list[Device], int]:
    """The first ``n_devices`` devices of a park large enough, set to the mqtt adapter; and the park's enterprise count.

    ``gateways`` > 0 puts them behind that many gateways (address ``gw<k>/<id>``)
    instead of one per enterprise.
    """
    n_enterprises = int(n_devices / DEVICES_PER_ENTERPRISE * 1.1) + 2
    spec = build_park(seed=seed, n_enterprises=n_enterprises)
    if len(spec.devices) < n_devices:
        raise SystemExit(f"park of {n_enterprises} enterprises has only {len(spec.devices)} devices")
    devices = []
    for k, device in enumerate(spec.devices[:n_devices]):
        address = f"gw{k % gateways:04d}/{device.id}" if gateways > 0 else None
        devices.append(device.model_copy(update={"adapter": "mqtt", "address": address}))
    return devices, n_enterprises


def publisher_main(args: argparse.Namespace, prefix: str, stop, published) -> None:
    """Child process: the gateway fleet publishing until ``stop`` is set (or ``MAX_RUN_S`` passed), then stopped."""

    async def run() -> None:
        devices, n_enterprises = fleet_devices(args.devices, args.seed, args.gateways)
        spec = build_park(seed=args.seed, n_enterprises=n_enterprises)
        park = SimulatedPark(spec, datetime.now(timezone.utc), seed=args.seed)
        fleet = MqttGatewayFleet(
            park, RealClock(), devices, args.host, args.port,
            prefix=prefix, payload_format=args.format, interval_s=1.0 / args.rate_hz, keepalive_s=30,
            min_step_s=0.1,  # the ~345 gateways share one park: step it ten times a second, not once per gateway
        )  # fmt: skip
        await fleet.start(timeout_s=120.0)
        started = time.monotonic()
        while not stop.is_set() and time.monotonic() - started < MAX_RUN_S:
            await asyncio.sleep(0.2)
        published.value = fleet.published
        await fleet.stop()

    asyncio.run(run())


class Window:
    """Samples first seen by one path during the measurement window, and their lags."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.seen: set[tuple[str, float]] = set()
        self.lags_s: list[float] = []

    def note(self, device_id: str, ts_s: float, at_s: float) -> None:
        """A sample stamped ``ts_s`` reached this point at ``at_s`` [s since the epoch]; counted once if stamped in the window."""
        key = (device_id, ts_s)
        if key in self.seen:
            return
        self.seen.add(key)
        if self.start <= ts_s < self.end:
            self.lags_s.append(at_s - ts_s)

    def row(self, name: str, seconds: float, reference_rate: float | None) -> str:
        rate = len(self.lags_s) / seconds
        ratio = f"{rate / reference_rate:>7.2f}x" if reference_rate else f"{'':>8}"
        if self.lags_s:
            cuts = statistics.quantiles(self.lags_s, n=100, method="inclusive")
            p50, p99, worst = 1e3 * cuts[49], 1e3 * cuts[98], 1e3 * max(self.lags_s)
        else:
            p50 = p99 = worst = float("nan")
        return f"{name:<15} {rate:>10.1f} {ratio} {p50:>10.1f} {p99:>10.1f} {worst:>10.1f}"


def _ts_of(payload: bytes) -> float:
    """Epoch seconds of the ``ts`` of a telemetry payload (JSON ISO text or msgpack timestamp)."""
    if payload[:1] == b"{":
        return datetime.fromisoformat(json.loads(payload)["ts"]).timestamp()
    return msgpack.unpackb(payload, timestamp=3)["ts"].timestamp()


async def clear_retained(args: argparse.Namespace, prefix: str) -> None:
    """Leave nothing behind on the broker: delete the retained availability messages below ``prefix``."""
    topics: set[str] = set()
    async with aiomqtt.Client(args.host, args.port) as client:
        await client.subscribe(f"{prefix}/#")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    if message.retain and message.payload:
                        topics.add(message.topic.value)
        client.pending_calls_threshold = len(topics) + 1  # all at once is the point
        await asyncio.gather(*(client.publish(topic, b"", qos=1, retain=True) for topic in topics))


async def reference_subscriber(args: argparse.Namespace, prefix: str, window: Window, ready: asyncio.Event) -> None:
    """Bare aiomqtt: count messages, read their stamp, nothing else."""
    async with aiomqtt.Client(args.host, args.port, identifier=f"bench-ref-{prefix}") as client:
        await client.subscribe(f"{prefix}/+/+/telemetry", qos=1)
        ready.set()
        async for message in client.messages:
            at = time.time()
            window.note(message.topic.value.rsplit("/", 2)[1], _ts_of(message.payload), at)


def cpu_per_message_us(devices: list[Device], fmt: str, n: int = 20_000) -> tuple[float, float]:
    """Process time per telemetry message [us]: the adapter's handling, and the reference's reading of ``ts``.

    Process time, not wall time, so it holds on a busy machine: the cost of
    one message on one core, whatever else runs.
    """
    adapter = MqttAdapter(devices, prefix="cost")  # never connected: only its message handling runs
    now = datetime.now(timezone.utc)
    messages = [
        (
            f"cost/{device_address(d)}/telemetry",
            _encode_telemetry(TelemetrySample(device_id=d.id, ts=now, p_kw=-12.5, p_min_kw=-50.0, p_max_kw=50.0,
                                              soc_kwh=20.0), fmt),  # fmt: skip
        )
        for d in devices
    ]
    rounds = max(1, n // len(messages))
    t = time.process_time()
    for _ in range(rounds):
        for topic, payload in messages:
            adapter._on_message(topic, payload)
    ours = (time.process_time() - t) / (rounds * len(messages))
    t = time.process_time()
    for _ in range(rounds):
        for _topic, payload in messages:
            _ts_of(payload)
    reference = (time.process_time() - t) / (rounds * len(messages))
    assert adapter.malformed_frames == 0
    return 1e6 * ours, 1e6 * reference


async def main_async(args: argparse.Namespace) -> int:
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    devices, _ = fleet_devices(args.devices, args.seed, args.gateways)
    n_gateways = len({device_address(d).split("/")[0] for d in devices})
    t0 = time.perf_counter()

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {what}", file=sys.stderr, flush=True)

    reference, parsed, stored = Window(), Window(), Window()

    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        store = SqliteStore(Path(tmp) / "vpp.sqlite3")
        await store.open()
        for device in devices:
            await store.put_device(device)
        adapter = MqttAdapter(devices, args.host, args.port, prefix=prefix, keepalive_s=30)
        on_message = adapter._on_message

        def timed_on_message(topic: str, payload: object) -> None:  # records when each sample is parsed
            on_message(topic, payload)
            device_id = topic.rsplit("/", 2)[1]
            sample = adapter._latest.get(device_id)
            if sample is not None:
                parsed.note(device_id, sample.ts.timestamp(), time.time())

        adapter._on_message = timed_on_message  # type: ignore[method-assign]
        settings = ServiceSettings(schedule_interval_s=0)
        service = PlantService(store, {"mqtt": adapter}, RealClock(), settings=settings)
        read = adapter.read_telemetry
        batch: list = []

        async def read_and_keep():
            batch[:] = await read()
            return batch

        adapter.read_telemetry = read_and_keep  # type: ignore[method-assign]
        await service.load()
        progress(f"store seeded with {len(devices):,} devices, adapter connected")

        ready = asyncio.Event()
        ref_task = asyncio.create_task(reference_subscriber(args, prefix, reference, ready))
        await ready.wait()

        spawn = multiprocessing.get_context("spawn")
        published, stop = spawn.Value("q", 0), spawn.Event()
        child = spawn.Process(target=publisher_main, args=(args, prefix, stop, published), daemon=True)
        child.start()
        loop = asyncio.get_running_loop()
        # Warm-up: wait for every gateway to be heard from, then a little more.
        deadline = loop.time() + 120.0
        while len({d for d, _ in reference.seen}) < len(devices):
            if loop.time() > deadline or not child.is_alive():
                print(f"only {len({d for d, _ in reference.seen})} of {len(devices)} devices heard from", file=sys.stderr)
                break
            await asyncio.sleep(0.1)
        progress("every device heard from; warming up")
        await asyncio.sleep(WARMUP_S / 2)
        progress(f"measuring for {args.seconds:g} s")
        start = time.time()
        cpu_start = time.process_time()
        for w in (reference, parsed, stored):
            w.start, w.end = start, start + args.seconds
        poll_s = args.poll_s
        next_poll = loop.time()
        end = start + args.seconds
        # Poll past the window until the store has every window sample the adapter parsed (bounded).
        while time.time() < end + poll_s or (len(stored.lags_s) < len(parsed.lags_s) and time.time() < end + TAIL_MAX_S):
            await service.poll_telemetry()
            at = time.time()
            for sample in batch:
                stored.note(sample.device_id, sample.ts.timestamp(), at)
            next_poll += poll_s
            await asyncio.sleep(max(0.0, next_poll - loop.time()))
        cpu_main = (time.process_time() - cpu_start) / (time.time() - start)
        progress("window over; stopping the publishers")
        stop.set()
        child.join(timeout=60)
        if child.is_alive():
            child.terminate()
            child.join()
        child_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_child_s = child_usage.ru_utime + child_usage.ru_stime
        progress(f"publishers stopped (exit code {child.exitcode})")
        ref_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ref_task
        await service.stop()
        await store.close()
    await clear_retained(args, prefix)
    progress("retained messages cleared")

    seconds = args.seconds
    print(
        f"MQTT telemetry ingest: {len(devices):,} devices at {args.rate_hz:g} Hz from {n_gateways} gateways "
        f"through Mosquitto {args.host}:{args.port}, {args.format}, {seconds:g} s measured, store polled every {poll_s:g} s"
    )
    print(f"machine load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: lags include waiting for a core")
    header = f"{'path':<15} {'samples/s':>10} {'ratio':>8} {'lag p50 ms':>10} {'lag p99 ms':>10} {'max ms':>10}"
    print(header)
    print("-" * len(header))
    ref_rate = len(reference.lags_s) / seconds
    print(reference.row("reference", seconds, None))
    print(parsed.row("adapter", seconds, ref_rate))
    print(stored.row("adapter+store", seconds, ref_rate))
    print(
        f"published {published.value:,} samples in all (warm-up and tail included); adapter malformed {adapter.malformed_frames}"
    )
    print(
        f"CPU: this process (adapter + store + reference subscriber) {cpu_main:.2f} core-s per s in the window; "
        f"publishers {cpu_child_s:.1f} core-s over their whole run"
    )
    ours_us, reference_us = cpu_per_message_us(devices, args.format)
    print(
        f"CPU per message, process time: adapter (parse, validate, keep) {ours_us:.1f} us = {1e6 / ours_us:,.0f} msg/s "
        f"per core; reference (read ts only) {reference_us:.1f} us; ratio {ours_us / reference_us:.1f}x"
    )
    ok = ref_rate > 0 and len(stored.lags_s) / seconds >= 0.99 * ref_rate
    if not ok:
        print("FAIL: the store path ingested less than 99 % of what the reference received", file=sys.stderr)
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate-hz", type=float, default=1.0, help="publications per device per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window [s]")
    parser.add_argument("--format", choices=["json", "msgpack"], default="json")
    parser.add_argument("--poll-s", type=float, default=1.0, help="service poll period [s]")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gateways", type=int, default=0, help="gateways to spread the devices over; 0 = one per enterprise")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--host must be a loopback address")
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
