"""API under load: requests/s and latency of a real ``vpp serve --demo`` with hundreds of keep-alive connections.

Run from the repository root (loopback only; every process stops by itself):

    .venv/bin/python benchmarks/bench_api_load.py [--connections 200] [--seconds 20] [--enterprises 20]
        [--store URL] [--quick]

Set-up: ``vpp serve --demo`` in a child process on 127.0.0.1, a free port,
a fresh data directory (SQLite store, or ``--store redis://127.0.0.1:6379/0``
under a fresh namespace deleted afterwards), with ``VPP_API_RATE_PER_S=0``:
the per-token rate limit (``vpp/api/limits.py``, 20/s with a burst of 100 by
default) is switched off, else one token could not load the server. One
instruction is posted with the demo grid token before the clock starts.

Load: ``--connections`` client coroutines in this process, each on its own
keep-alive connection (aiohttp, connector limit = connections), sending in
turn ``GET /api/v1/plant`` (grid token), ``GET /healthz`` and
``GET /api/v1/dispatch/{id}`` (admin token), one after another, for
``--seconds``; then they stop, and the server is sent SIGTERM (SIGKILL if it
has not stopped 10 s later). Every response must be 200.

Reference, measured in the same run under the same load: a bare aiohttp
server in a child process answering the same three paths with the JSON the
real service answered before the run (no auth, no store, no live state).
``ratio`` is the service's requests/s over the reference's: the share of the
bare server's throughput left after authentication (token records cached for
2 s, ``vpp.auth.TokenCache``), the plant totals (computed per request), the
store health (a ping shared by concurrent checks, ``vpp.api.views``), the
dispatch view (encoded once per control step), the middleware and the metrics.

``cpu us/req`` is the server process's CPU time (user + system, all its
threads, from ``/proc``) over the load, per request answered: it moves less
than requests/s when other work shares the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import numpy as np
import redis.asyncio as aioredis
from aiohttp import web

URL_LINE = re.compile(r"VPP service listening on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT_S = 90.0
PATHS = ("plant", "healthz", "dispatch")


@dataclass
class Tally:
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: float = 0.0
    server_cpu_s: float | None = None  # CPU time the server process spent during the load [s]; None off Linux

    def requests(self) -> int:
        return sum(len(v) for v in self.latencies_s.values())


async def load(base: str, paths: dict[str, tuple[str, dict[str, str]]], connections: int, seconds: float) -> Tally:
    """``connections`` workers on keep-alive connections, each cycling through ``paths`` until ``seconds`` pass."""
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:
        stop_at = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            names = list(paths)
            i = offset
            while time.perf_counter() < stop_at:
                name = names[i % len(names)]
                i += 1
                path, headers = paths[name]
                t0 = time.perf_counter()
                try:
                    async with session.get(path, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    tally.latencies_s[name].append(time.perf_counter() - t0)
                else:
                    tally.errors[name] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(connections)))
        tally.seconds = time.perf_counter() - started
    return tally


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far, all threads [s]; None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_measured(
    pid: int, base: str, paths: dict[str, tuple[str, dict[str, str]]], connections: int, seconds: float
) -> Tally:
    """``load``, with the CPU time the server process ``pid`` spent meanwhile."""
    before = cpu_seconds(pid)
    tally = await load(base, paths, connections, seconds)
    after = cpu_seconds(pid)
    if before is not None and after is not None:
        tally.server_cpu_s = after - before
    return tally


def report(name: str, tally: Tally, reference_rps: float | None) -> str:
    every = np.concatenate([np.array(v) for v in tally.latencies_s.values()]) * 1e3
    rps = tally.requests() / tally.seconds
    ratio = f"{rps / reference_rps:.2f}x" if reference_rps else "1.00x"
    errors = sum(tally.errors.values())
    cpu = f"{tally.server_cpu_s / tally.requests() * 1e6:>12.0f}" if tally.server_cpu_s is not None else f"{'n/a':>12}"
    lines = [(f"{name:<10} {'all':<9} {tally.requests():>9,} {rps:>9,.0f} {np.percentile(every, 50):>8.1f} "
              f"{np.percentile(every, 99):>8.1f} {errors:>7} {ratio:>7} {cpu}")]
    for path in PATHS:
        ms = np.array(tally.latencies_s.get(path, [np.nan])) * 1e3
        lines.append(f"{'':<10} {path:<9} {len(tally.latencies_s.get(path, [])):>9,} {len(ms) / tally.seconds:>9,.0f} "
                     f"{np.percentile(ms, 50):>8.1f} {np.percentile(ms, 99):>8.1f} {tally.errors.get(path, 0):>7}")
    return "\n".join(lines)


# -- the reference: a bare aiohttp server with canned answers ------------------------------------------------


def bare_server_main(bodies: dict[str, bytes], port_queue, stop_after_s: float) -> None:
    """Child process: serve the canned bodies on 127.0.0.1 (a free port, sent back) until ``stop_after_s``."""

    async def run() -> None:
        def handler_for(body: bytes):
            async def handler(_: web.Request) -> web.Response:
                return web.Response(body=body, content_type="application/json")

            return handler

        app = web.Application()
        app.router.add_get("/api/v1/plant", handler_for(bodies["plant"]))
        app.router.add_get("/healthz", handler_for(bodies["healthz"]))
        app.router.add_get("/api/v1/dispatch/{id}", handler_for(bodies["dispatch"]))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.sleep(stop_after_s)
        await runner.cleanup()

    asyncio.run(run())


# -- the service ---------------------------------------------------------------------------------------------


async def start_service(args: argparse.Namespace, data_dir: Path, store_url: str | None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "VPP_API_RATE_PER_S": "0", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "vpp.cli", "--log-level", "warning", "serve", "--demo", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", str(data_dir), "--enterprises", str(args.enterprises)]
    if store_url:
        command += ["--store", store_url]
    # Popen returns at once (no wait); its stdout is read in an executor below.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # noqa: ASYNC220
    deadline = time.monotonic() + START_TIMEOUT_S
    assert process.stdout is not None
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        line = await loop.run_in_executor(None, process.stdout.readline)
        if not line and process.poll() is not None:
            raise SystemExit(f"vpp serve exited with {process.returncode} before listening")
        found = URL_LINE.search(line)
        if found:
            return process, found.group(1)
    process.kill()
    raise SystemExit(f"vpp serve did not listen within {START_TIMEOUT_S:g} s")


def stop_service(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def prepare(base: str, tokens: dict) -> tuple[dict[str, tuple[str, dict[str, str]]], dict[str, bytes]]:
    """Post one instruction; return the paths to load and the service's own answers (for the reference)."""
    grid = {"Authorization": f"Bearer {tokens['grid']}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    now = datetime.now(UTC)
    instruction = {"id": f"bench-{uuid.uuid4().hex[:10]}", "kind": "delta", "delta_kw": 100.0,
                   "start": now.isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}
    async with aiohttp.ClientSession(base) as session:
        async with session.post("/api/v1/dispatch", json=instruction, headers=grid) as response:
            if response.status not in (200, 201, 202):
                raise SystemExit(f"POST /api/v1/dispatch answered {response.status}: {await response.text()}")
        await asyncio.sleep(2.5)  # one control step: the plant and the instruction have live state
        paths = {"plant": ("/api/v1/plant", grid), "healthz": ("/healthz", {}),
                 "dispatch": (f"/api/v1/dispatch/{instruction['id']}", admin)}
        bodies = {}
        for name, (path, headers) in paths.items():
            async with session.get(path, headers=headers) as response:
                if response.status != 200:
                    raise SystemExit(f"GET {path} answered {response.status}: {await response.text()}")
                bodies[name] = await response.read()
    return paths, bodies


async def drop_namespace(url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
    finally:
        await client.aclose()


async def main_async(args: argparse.Namespace) -> int:
    namespace = f"bench-api-{uuid.uuid4().hex[:8]}"
    store_url = None
    if args.store:
        store_url = f"{args.store}{'&' if '?' in args.store else '?'}namespace={namespace}"
    print(f"API load: vpp serve --demo ({args.enterprises} enterprises, store {args.store or 'SQLite'}), "
          f"{args.connections} keep-alive connections, {args.seconds:g} s per row; VPP_API_RATE_PER_S=0 (rate limit off)")
    with tempfile.TemporaryDirectory(prefix="vpp-bench-api-") as tmp:
        process, base = await start_service(args, Path(tmp), store_url)
        try:
            tokens = json.loads((Path(tmp) / "demo-tokens.json").read_text())
            paths, bodies = await prepare(base, tokens)
            service = await load_measured(process.pid, base, paths, args.connections, args.seconds)
        finally:
            stop_service(process)
            if store_url:
                await drop_namespace(args.store, namespace)
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    bare = context.Process(target=bare_server_main, args=(bodies, ports, args.seconds + 60.0), daemon=True)
    bare.start()
    try:
        port = ports.get(timeout=30)
        reference = await load_measured(
            bare.pid, f"http://127.0.0.1:{port}", {k: (p, {}) for k, (p, _) in paths.items()}, args.connections, args.seconds
        )
    finally:
        bare.terminate()
        bare.join(10)
    header = (f"{'server':<10} {'path':<9} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'ratio':>7} "
              f"{'cpu us/req':>12}")
    print()
    print(header)
    print("-" * len(header))
    reference_rps = reference.requests() / reference.seconds
    print(report("reference", reference, None))
    print(report("service", service, reference_rps))
    every = np.concatenate([np.array(v) for v in service.latencies_s.values()]) * 1e3
    cpu = ""
    if service.server_cpu_s is not None and reference.server_cpu_s is not None:
        cpu = (f"; server CPU {service.server_cpu_s / service.requests() * 1e6:.0f} us/request "
               f"(reference {reference.server_cpu_s / reference.requests() * 1e6:.0f})")
    print(f"\nservice: {service.requests() / service.seconds:,.0f} requests/s at p99 {np.percentile(every, 99):.1f} ms "
          f"with {args.connections} connections{cpu}")
    return 1 if sum(service.errors.values()) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0, help="load time per row [s]")
    parser.add_argument("--enterprises", type=int, default=20, help="size of the demo park")
    parser.add_argument("--store", default=None, help="e.g. redis://127.0.0.1:6379/0 (a fresh namespace is used); default SQLite")
    parser.add_argument("--quick", action="store_true", help="50 connections, 4 s per row")
    args = parser.parse_args()
    if args.quick:
        args.connections, args.seconds = 50, 4.0
    if args.store and "127.0.0.1" not in args.store and "localhost" not in args.store:
        parser.error("--store must be on a loopback address")
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
