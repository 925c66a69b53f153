"""What an API replica serves from: the store, read by a process that never drives a device.

``ReplicaService`` offers the API the same methods as ``PlantService`` (plant,
devices, envelope, instructions, enrolment) without adapters or control loop:

* live plant totals and device rows are computed, with the same pure
  functions as the leader's, from the devices and the latest telemetry in
  the store (kept current by the ingest workers), re-read every
  ``refresh_s``; the active instruction's id comes from what the dispatch
  leader publishes every control step (``ns:live``);
* an instruction is stored (``store_instruction``) before the answer; the
  store's instruction stream wakes the leader, which executes it and writes
  its state every step, so ``GET /dispatch/{id}`` reads it from the store;
* when the store cannot be read for ``stale_after_s`` the live views answer
  503 (``StoreUnavailable``) rather than old numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog

from vpp.aggregator import FleetSnapshot, SnapshotCache, device_rows, plant_state
from vpp.clock import Clock
from vpp.envelope import plant_envelope
from vpp.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from vpp.metrics import Metrics
from vpp.model import Device, DispatchInstruction, DispatchState, TelemetrySample
from vpp.scheduling import BlockOffer
from vpp.service import ServiceSettings, store_instruction
from vpp.store.redis import RedisStore
from vpp.store.redis_cluster import RedisCluster

__all__ = ["ReplicaService"]


class ReplicaService:
    """The API's view of a plant run by other processes (see the module docstring).

    Parameters
    ----------
    refresh_s : float
        How often devices, latest telemetry and the leader's live fields are re-read [s].
    unavailable_after_s : float
        With no successful read for this long, live views answer 503 [s].
    """

    def __init__(
        self,
        store: RedisStore,
        cluster: RedisCluster,
        clock: Clock,
        metrics: Metrics | None = None,
        settings: ServiceSettings | None = None,
        refresh_s: float = 1.0,
        unavailable_after_s: float = 5.0,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.settings = settings or ServiceSettings()
        self.refresh_s = refresh_s
        self.unavailable_after_s = unavailable_after_s
        self.log = structlog.get_logger("vpp.replica")
        self._zone = ZoneInfo(self.settings.local_zone)
        self._devices: list[Device] = []
        self._snapshots = SnapshotCache()  # enrolment arrays, rebuilt only when a refresh brings a changed fleet
        self._latest: dict[str, TelemetrySample] = {}
        self._live: dict = {}
        self._read_at: float | None = None  # monotonic time of the last successful read [s]
        self._problem = "not read from the store yet"
        self._task: asyncio.Task | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Read once (a store that is down now is retried by the loop), then keep reading in the background."""
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(), name="vpp-replica-refresh")

    async def stop(self) -> None:
        """Stop reading; the replica holds no work of its own to hand back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:  # a bad record must not stop the reads; the views go 503 when they age
                self.log.exception("live state refresh failed")

    async def refresh(self) -> bool:
        """Re-read devices, latest telemetry and the leader's live fields; False (logged once) when the store is down."""
        try:
            devices = await self.store.list_devices()
            latest = await self.store.latest_telemetry()
            live = await self.cluster.live()
        except StoreUnavailable as exc:
            if self._problem != str(exc):
                self.log.warning("store unavailable; live views answer 503", error=str(exc))
            self._problem = str(exc)
            return False
        if self._read_at is None or self._problem:
            self.log.info("reading live state from the store")
        self._devices, self._latest, self._live = devices, latest, live
        self._read_at, self._problem = time.monotonic(), ""
        self.metrics.devices_enrolled.set(len(devices))
        totals = plant_state(self._snapshot_unchecked())
        self.metrics.devices_online.set(totals["devices_online"])
        self.metrics.plant_net_kw.set(totals["net_kw"])
        return True

    # -- live state ------------------------------------------------------------------

    @property
    def devices(self) -> list[Device]:
        return list(self._devices)

    def _snapshot_unchecked(self) -> FleetSnapshot:
        return self._snapshots.build(self._devices, self._latest, self.clock.now(), self.settings.stale_after_s, self._zone)

    def snapshot(self) -> FleetSnapshot:
        """The fleet as the store last showed it; ``StoreUnavailable`` when that is older than ``unavailable_after_s``."""
        if self._read_at is None or time.monotonic() - self._read_at > self.unavailable_after_s:
            raise StoreUnavailable(f"live state could not be read from the store: {self._problem or 'no read for too long'}")
        return self._snapshot_unchecked()

    def plant(self) -> dict:
        """Live plant totals (JSON-ready), with the active instruction the leader last published."""
        state = plant_state(self.snapshot())
        state["active_instruction"] = self._live.get("active_instruction")
        return state

    def plant_devices(self) -> list[dict]:
        """Live state of every device (JSON-ready)."""
        return device_rows(self.snapshot())

    def envelope(self, hours: float) -> list[dict]:
        """Up/down capability per quarter hour for ``hours`` ahead (JSON-ready rows)."""
        s = self.settings
        return plant_envelope(self._devices, self.snapshot(), hours, self._zone, s.latitude, s.longitude)

    async def flexibility(self, start: datetime, end: datetime, direction: str) -> BlockOffer:
        """Not served by a replica: the fleet schedule's model lives in the dispatch leader. Raises ``Conflict``."""
        raise Conflict("flexibility is priced from the fleet schedule held by the dispatch leader; ask a --role all service")

    # -- instructions ------------------------------------------------------------------

    async def submit_instruction(self, instruction: DispatchInstruction) -> tuple[DispatchInstruction, bool]:
        """Store an instruction before the answer; the dispatch leader picks it up from the store."""
        stored, created, _ = await store_instruction(self.store, instruction, self.clock.now())
        if created:
            self.log.info("instruction accepted", instruction_id=instruction.id, kind=str(instruction.kind))
        self.metrics.instructions.labels(kind=str(instruction.kind), result="created" if created else "repeat").inc()
        return stored, created

    async def list_instructions(self) -> list[tuple[DispatchInstruction, DispatchState]]:
        """Every instruction with its stored state (the leader writes an active one's every step)."""
        return await self.store.list_instructions()

    async def instruction_view(self, instruction_id: str) -> tuple[DispatchInstruction, DispatchState]:
        """The instruction and its stored state. Raises ``NotFound``."""
        found = await self.store.get_instruction(instruction_id)
        if found is None:
            raise NotFound(f"instruction '{instruction_id}' does not exist")
        return found

    async def enrol_device(self, device: Device) -> bool:
        """Store a device; the leader hands it to its adapter within ``device_refresh_s``. Returns True when new."""
        if await self.store.get_enterprise(device.enterprise_id) is None:
            raise NotFound(f"enterprise '{device.enterprise_id}' does not exist")
        running = self._live.get("adapters")
        if running is not None and device.adapter not in running:
            known = ", ".join(running) or "none"
            raise InvalidInput("adapter", f"'{device.adapter}' is not running in the dispatch leader (running: {known})")
        created = await self.store.put_device(device)
        self.log.info("device enrolled", device_id=device.id, enterprise_id=device.enterprise_id, created=created)
        return created
