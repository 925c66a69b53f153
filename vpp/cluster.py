"""``vpp serve --role api|ingest|dispatch``: one part of the plant per process, sharing a Redis store.

* ``api``: the HTTP API over ``vpp.replica.ReplicaService``; never drives a device.
* ``ingest``: an ``vpp.ingest.IngestWorker`` moving raw telemetry from the partition streams into the store.
* ``dispatch``: a candidate for dispatch leader (``vpp.leader``). The leader runs
  ``PlantService`` with the adapters: it reads devices (publishing the samples to
  the ingest streams), executes instructions and sends set-points, every write
  fenced by its token. The others wait and take over when its lease lapses.

``ingest`` and ``dispatch`` processes serve ``/healthz`` and ``/metrics`` on ``--port``.
On SIGTERM each stops taking work, finishes or hands back what it holds
(the leader writes its instruction's state and releases the lock at once;
an ingest worker writes and acknowledges the batch in hand) and closes the store.
Layout and examples: docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiohttp import web

from adapters.base import Adapter
from vpp.clock import Clock, RealClock
from vpp.errors import Conflict, StoreUnavailable
from vpp.ingest import IngestWorker
from vpp.leader import Fence, LeaderElection
from vpp.metrics import CONTENT_TYPE, Metrics
from vpp.model import TelemetrySample
from vpp.network import NetworkConfig, load_network
from vpp.replica import ReplicaService
from vpp.service import PlantService, ServiceSettings, freeze_loaded_heap
from vpp.store import open_store
from vpp.store.redis import RedisStore
from vpp.store.redis_cluster import RedisCluster

__all__ = ["ROLES", "DispatchCandidate", "SoleDispatcher", "process_name", "serve_role"]

ROLES = ("all", "api", "ingest", "dispatch")


def process_name(given: str | None = None) -> str:
    """This process's name as lock holder and consumer: ``host:pid:random`` unless given."""
    return given or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class DispatchCandidate:
    """Campaigns for dispatch leader; while leading, runs a fenced ``PlantService`` over the adapters.

    The adapters stay open across terms (a candidate may lose and win the
    lock again); they are closed on ``shutdown``.
    """

    def __init__(
        self,
        store: RedisStore,
        cluster: RedisCluster,
        adapters: dict[str, Adapter],
        clock: Clock,
        settings: ServiceSettings,
        holder: str,
        lease_s: float,
        metrics: Metrics | None = None,
        network: NetworkConfig | None = None,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.adapters = adapters
        self.clock = clock
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.network = network
        self.election = LeaderElection(cluster, holder, lease_s, self._elected, self._deposed)
        self.service: PlantService | None = None
        self._starting: asyncio.Task | None = None
        self.terms = 0
        """Times this candidate became leader [unitless]."""
        self.log = structlog.get_logger("vpp.cluster").bind(holder=holder)

    async def _elected(self, token: int) -> None:
        # Started in its own task: loading a large fleet must not hold up the lease renewals.
        self._starting = asyncio.create_task(self._lead(token), name="vpp-leader-start")

    async def _lead(self, token: int) -> None:
        service = PlantService(
            self.store, self.adapters, self.clock, metrics=self.metrics, settings=self.settings, network=self.network,
            fence=Fence(self.cluster, self.election, token), telemetry_sink=self._publish,
        )
        try:
            await service.start()  # loads open instructions: an active one resumes from its stored state
        except asyncio.CancelledError:
            await service.stop(close_adapters=False)
            raise
        except Exception:
            self.log.exception("could not start as leader; stepping down")
            await service.stop(close_adapters=False)
            self.election.lost()
            return
        self.service = service
        self.terms += 1

    async def _deposed(self, reason: str) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        service, self.service = self.service, None
        if service is not None:
            await service.stop(close_adapters=False)  # devices keep their last set-point for the next leader

    async def _publish(self, samples: Sequence[TelemetrySample]) -> None:
        service = self.service
        enterprise_of = {d.id: d.enterprise_id for d in service.devices} if service is not None else {}
        await self.cluster.publish_telemetry(samples, enterprise_of)

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign until ``stop``; wake the leader's control loop as instructions are stored by API replicas."""
        watcher = asyncio.create_task(self._watch_instructions(stop), name="vpp-instruction-watch")
        try:
            await self.election.run(stop)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch_instructions(self, stop: asyncio.Event) -> None:
        after = "$"
        while not stop.is_set():
            try:
                seen = await self.cluster.wait_instruction(after, block_s=1.0)
            except Exception as exc:  # only a wake-up: the control loop reads the store every step anyway
                if not isinstance(exc, StoreUnavailable):
                    self.log.exception("instruction watch failed")
                await asyncio.sleep(1.0)
                continue
            if seen is not None:
                after = seen
                if self.service is not None:
                    self.service.wake()

    async def shutdown(self) -> None:
        """Stop leading (state written under the token), release the lock at once, close the adapters."""
        await self._deposed("shutting down")
        await self.election.resign()
        for name, adapter in self.adapters.items():
            try:
                await adapter.close()
            except Exception as exc:  # one failing must not keep the others open
                self.log.warning("adapter close failed", adapter=name, error=str(exc))

    async def health(self) -> dict:
        return {"role": "dispatch", "leader": self.election.leading, "token": self.election.token, "terms": self.terms}


class SoleDispatcher:
    """``--role all`` on a Redis store: this process must be the only one driving the devices.

    It takes the dispatch leader lock before its service starts (refusing to
    start when another process holds it) and renews it while it runs; its
    service's set-point and state writes go through a ``Fence``. Should the
    lock be lost (a pause past the lease, Redis losing it), the process stops
    (``lost`` says why) rather than run on beside another leader: a supervisor
    restarts it, and it campaigns again.
    """

    def __init__(self, store: RedisStore, holder: str, lease_s: float, stop: asyncio.Event) -> None:
        self.cluster = RedisCluster(store)
        self.election = LeaderElection(self.cluster, holder, lease_s, self._elected, self._deposed)
        self.lost: str | None = None
        """Why the lock was lost (the process then stops), else None."""
        self._stop = stop
        self._task: asyncio.Task | None = None
        self.log = structlog.get_logger("vpp.cluster").bind(holder=holder)

    async def start(self) -> Fence:
        """Take the lock and keep renewing it; the fence for the service. Raises ``Conflict`` when another process holds it."""
        if not await self.election.try_once():
            held = await self.cluster.leader()
            holder = f"'{held[1]}' (token {held[0]})" if held else "another process"
            raise Conflict(
                f"{holder} already drives the devices of this Redis store (dispatch leader lock); "
                "stop it, or run this process with --role api or --role ingest beside it"
            )
        assert self.election.token is not None
        self._task = asyncio.create_task(self.election.run(self._stop), name="vpp-sole-dispatcher")
        return Fence(self.cluster, self.election, self.election.token)

    async def _elected(self, token: int) -> None:
        self.log.info("holding the dispatch leader lock", token=token)

    async def _deposed(self, reason: str) -> None:
        self.lost = reason
        self.log.error("lost the dispatch leader lock; stopping so two processes never drive the devices", reason=reason)
        self._stop.set()

    async def stop(self) -> None:
        """Stop renewing and release the lock (the service has stopped first)."""
        if self._task is not None:
            self._stop.set()
            await self._task
        await self.election.resign()


def _worker_app(metrics: Metrics, store: RedisStore, health: Callable[[], Awaitable[dict]]) -> web.Application:
    """``/healthz`` and ``/metrics`` of an ingest or dispatch process."""

    async def healthz(_: web.Request) -> web.Response:
        store_ok = await store.ping()
        body = {"status": "ok" if store_ok else "degraded", "store": store_ok, **await health()}
        return web.json_response(body, status=200 if store_ok else 503)

    async def metrics_text(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.content_type = CONTENT_TYPE.split(";")[0]
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_text)
    return app


async def _listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, f"http://{host}:{runner.addresses[0][1]}"


async def serve_role(
    args: argparse.Namespace, stop: asyncio.Event, on_listening: Callable[[str], None] | None = None
) -> int:
    """Run one role until ``stop`` is set (SIGTERM / SIGINT), then shut it down gracefully.

    ``on_listening(url)`` is called once the process's HTTP port is open.
    """
    from vpp.server import _banner, mint_demo_tokens, seed_demo_park

    log = structlog.get_logger("vpp.cluster")
    network = load_network(args.network) if args.network else None
    args.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(args.store, args.data_dir)
    if not isinstance(store, RedisStore):
        raise ValueError(f"--role {args.role} needs a Redis store (--store redis://...); with SQLite only --role all runs")
    await store.open()
    cluster = RedisCluster(store)
    await cluster.partitions(args.partitions)
    clock = RealClock()
    metrics = Metrics()
    name = process_name(args.name)
    adapters: dict[str, Adapter] = {}
    tokens = None
    if args.demo and args.role in ("api", "dispatch"):
        # Every such process seeds the same park (idempotent puts); only the dispatch leader drives it.
        adapters, _ = await seed_demo_park(store, clock, args.enterprises, args.seed)
        if args.role == "api":
            adapters = {}
            tokens = await mint_demo_tokens(store, args.data_dir, (await store.list_enterprises())[0].id)
    store_url = args.store
    try:
        if args.role == "api":
            from vpp.api.app import make_app

            replica = ReplicaService(store, cluster, clock, metrics=metrics)
            await replica.start()
            runner, url = await _listen(make_app(replica), args.host, args.port)
            print(_banner(url, tokens, store_url), flush=True)
            if on_listening is not None:
                on_listening(url)
            log.info("API replica serving", url=url, name=name)
            try:
                await stop.wait()
            finally:
                log.info("API replica shutting down")
                await runner.cleanup()  # stop accepting, let requests in flight finish
                await replica.stop()
        elif args.role == "ingest":
            worker = IngestWorker(store, cluster, name, metrics=metrics, claim_idle_s=args.claim_idle)
            freeze_loaded_heap()

            async def ingest_health() -> dict:
                return {"role": "ingest", "consumer": name, "written": worker.written, "claimed": worker.claimed}

            runner, url = await _listen(_worker_app(metrics, store, ingest_health), args.host, args.port)
            print(f"\nVPP ingest worker {name} listening on {url}   (store: {store_url})\n", flush=True)
            if on_listening is not None:
                on_listening(url)
            try:
                await worker.run(stop)  # returns after the batch in hand is written and acknowledged
            finally:
                await runner.cleanup()
        else:
            settings = ServiceSettings(
                control_interval_s=args.control_interval, telemetry_interval_s=1.0, shared_store=True,
                state_persist_interval_s=0.0,  # every step: a successor resumes from the last step, not 10 s back
            )
            candidate = DispatchCandidate(store, cluster, adapters, clock, settings, name, args.lease, metrics, network)
            runner, url = await _listen(_worker_app(metrics, store, candidate.health), args.host, args.port)
            print(f"\nVPP dispatch candidate {name} listening on {url}   (store: {store_url})\n", flush=True)
            if on_listening is not None:
                on_listening(url)
            try:
                await candidate.run(stop)
            finally:
                await candidate.shutdown()
                await runner.cleanup()
    finally:
        await store.close()
    return 0
