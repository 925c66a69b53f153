"""``vpp serve``: wire store, adapters, service and API together and run until a signal."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from adapters.base import Adapter, GridLink
from vpp.api.app import make_app
from vpp.auth import create_token
from vpp.clock import Clock, RealClock, ScaledClock
from vpp.cluster import SoleDispatcher, process_name
from vpp.grid_links import grid_links_from_args
from vpp.model import Role
from vpp.network import load_network
from vpp.service import PlantService, ServiceSettings
from vpp.store import open_store
from vpp.store.base import Store
from vpp.store.redis import RedisStore

if TYPE_CHECKING:
    from simulators.sim import SimulatedPark
    from vpp.protocol_demo import ProtocolDemo


@dataclass(frozen=True)
class DemoTokens:
    grid: str
    admin: str
    enterprise: str
    enterprise_id: str


async def seed_demo_park(store: Store, clock: Clock, n_enterprises: int, seed: int) -> tuple[dict[str, Adapter], SimulatedPark]:
    """Put the simulated park's enterprises, meters and devices in the store; return its adapter and the park."""
    from adapters.simulator import SimulatorAdapter
    from simulators.park import build_park
    from simulators.sim import SimulatedPark

    spec = build_park(seed=seed, n_enterprises=n_enterprises)
    for enterprise in spec.enterprises:
        await store.put_enterprise(enterprise)
    for device in spec.devices:
        await store.put_device(device)
    park = SimulatedPark(spec, start=clock.now(), seed=seed)
    adapter = SimulatorAdapter(park, clock)
    # Devices enrolled through the API in an earlier run join the simulation too.
    known = {d.id for d in spec.devices}
    for device in await store.list_devices():
        if device.id not in known and device.adapter == "simulator":
            await adapter.add_device(device)
    for meter in park.spec.meters:  # a PV added to an enterprise without one brings a generation meter
        await store.put_meter(meter)
    return {"simulator": adapter}, park


async def mint_demo_tokens(store: Store, data_dir: Path, enterprise_id: str) -> DemoTokens:
    """Fresh grid, admin and enterprise tokens, also written to ``data_dir/demo-tokens.json`` (mode 600)."""
    now = datetime.now(timezone.utc)
    tokens = DemoTokens(
        grid=await create_token(store, Role.GRID, None, now, "demo grid"),
        admin=await create_token(store, Role.ADMIN, None, now, "demo admin"),
        enterprise=await create_token(store, Role.ENTERPRISE, enterprise_id, now, f"demo {enterprise_id}"),
        enterprise_id=enterprise_id,
    )
    path = data_dir / "demo-tokens.json"
    path.write_text(json.dumps(tokens.__dict__, indent=2))
    path.chmod(0o600)
    return tokens


def _banner(url: str, tokens: DemoTokens | None, store_url: str, endpoints: dict[str, str] | None = None) -> str:
    lines = [
        "",
        f"VPP service listening on {url}   (store: {store_url})",
        f"  dashboard: {url}/",
        f"  health:   {url}/healthz      metrics: {url}/metrics",
        f"  API doc:  {url}/api/v1/openapi.json",
    ]
    if endpoints:
        lines += ["", "Protocols:"]
        lines += [f"  {name + ':':<9} {where}" for name, where in endpoints.items()]
    if tokens:
        lines += [
            "",
            "Demo tokens (also in the data directory, demo-tokens.json):",
            f"  grid:        {tokens.grid}",
            f"  admin:       {tokens.admin}",
            f"  enterprise:  {tokens.enterprise}   ({tokens.enterprise_id})",
            "",
            "Try:",
            f"  curl -H 'Authorization: Bearer {tokens.grid}' {url}/api/v1/plant",
            f"  vpp dispatch send --url {url} --token {tokens.grid} --delta-kw 500 --minutes 15 --wait",
        ]
    return "\n".join(lines + [""])


async def serve(args: argparse.Namespace) -> int:
    """Run until SIGINT or SIGTERM; then stop taking work, close adapters and the store."""
    log = structlog.get_logger("vpp.server")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # first: a signal during start-up still shuts down cleanly
    if getattr(args, "role", "all") != "all":
        from vpp.cluster import serve_role

        return await serve_role(args, stop)  # one part of a scaled-out plant (docs/scale-out.md)
    network = load_network(args.network) if args.network else None  # before anything starts: a bad file stops here
    now = datetime.now(timezone.utc)
    clock: Clock = RealClock() if args.speed == 1.0 else ScaledClock(now, args.speed)
    if getattr(args, "protocols", False):
        args.iec104 = True  # the demo's grid speaks IEC 104
    grid_links: list[GridLink] = grid_links_from_args(args, clock)  # checks its files before anything starts
    args.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(args.store, args.data_dir)
    await store.open()
    sole = None
    fence = None
    if isinstance(store, RedisStore):
        # Another process may share this Redis: hold the dispatch lock, so two never drive the devices.
        sole = SoleDispatcher(store, process_name(getattr(args, "name", None)), getattr(args, "lease", 10.0), stop)
        try:
            fence = await sole.start()
        except BaseException:
            await store.close()
            raise
    adapters: dict[str, Adapter] = {}
    protocols: ProtocolDemo | None = None
    tokens = None
    if args.demo:
        adapters, park = await seed_demo_park(store, clock, args.enterprises, args.seed)
        if args.protocols:
            from vpp.protocol_demo import ProtocolSettings, start_protocol_demo

            settings_ = ProtocolSettings(
                host=args.host, mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port, mqtt_prefix=args.mqtt_prefix,
            )
            protocols = await start_protocol_demo(store, park, clock, settings_)
            adapters.update(protocols.adapters)
        first = (await store.list_enterprises())[0].id
        tokens = await mint_demo_tokens(store, args.data_dir, first)
    settings = ServiceSettings(control_interval_s=args.control_interval, telemetry_interval_s=1.0)
    service = PlantService(store, adapters, clock, settings=settings, network=network, grid_links=grid_links, fence=fence)
    await service.start()
    if protocols is not None:
        await protocols.start_peers()
    endpoints = dict(protocols.endpoints) if protocols is not None else {}
    endpoints.update((link.name, link.endpoint) for link in grid_links)
    runner = web.AppRunner(make_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://{args.host}:{port}"
    store_url = args.store or f"sqlite:///{args.data_dir / 'vpp.sqlite3'}"
    print(_banner(url, tokens, store_url, endpoints or None), flush=True)
    log.info("serving", url=url, demo=args.demo, devices=len(service.devices))
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()  # stop taking requests first
        await service.stop()
        if sole is not None:
            await sole.stop()
        if protocols is not None:
            await protocols.stop()
        await store.close()
    if sole is not None and sole.lost is not None:
        print(f"vpp: stopped: lost the dispatch leader lock ({sole.lost})", file=sys.stderr)
        return 1
    return 0
