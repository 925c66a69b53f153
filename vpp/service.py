"""The service loop: telemetry in, instructions executed, set-points out.

``PlantService`` is a thin async shell around pure pieces:
``vpp.aggregator`` (live state), ``vpp.execution`` (one control step) and
``dispatch`` (allocation). Two loops run while it is started:

* telemetry: every ``telemetry_interval_s`` read each adapter, store the
  samples, keep the latest per device;
* control: every ``control_interval_s`` (or at once when an instruction
  arrives) activate, execute or finish the current instruction; with none
  active, the fleet follows the day-ahead schedule (``schedule_step``).

Tests drive ``poll_telemetry`` and ``control_step`` directly with a manual clock.

Scaled out (``vpp.cluster``), the dispatch leader runs this service with a
``fence`` (every set-point and state write carries its fencing token and is
refused once another process leads), a ``telemetry_sink`` (samples go to the
ingest streams for the ingest workers) and ``shared_store`` (instructions and
devices other processes put in the store are picked up every step).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import structlog

from adapters.base import Adapter, AdapterError, GridLink
from market import enterprise_delivered_kwh
from market.tariff import TouTariff, default_tariff
from vpp.aggregator import FleetSnapshot, SnapshotCache, device_rows, plant_state
from vpp.clock import Clock
from vpp.envelope import plant_envelope
from vpp.errors import Conflict, InvalidInput, NotFound, VppError
from vpp.event_tally import EventTally
from vpp.execution import StepPlan, allowed_devices, baseline_array, plan_step
from vpp.live_telemetry import LiveTelemetry
from vpp.metrics import Metrics
from vpp.model import (
    Device,
    DispatchInstruction,
    DispatchProgress,
    DispatchState,
    DispatchStatus,
    MeteringPoint,
    MeterReading,
    Setpoint,
    TelemetrySample,
)
from vpp.network import FleetCaps, NetworkConfig, exchange_kw, fleet_caps
from vpp.scheduling import (
    DEFAULT_EXPORT_PRICE_CNY_PER_KWH,
    DEFAULT_KINDS,
    BlockOffer,
    FleetPlan,
    ScheduleInputs,
    block_offer,
    energy_taken_kwh,
    horizon_start,
    plan_fleet,
)
from vpp.settlement.service import PRICES_LEDGER, apply_price_records
from vpp.store.base import Store

OPEN_STATUSES = (DispatchStatus.PENDING, DispatchStatus.ACTIVE)


@dataclass(frozen=True)
class ServiceSettings:
    """Timing and policy of the service loop."""

    telemetry_interval_s: float = 1.0  # how often adapters are read [s]
    control_interval_s: float = 2.0  # how often set-points are recomputed [s]
    stale_after_s: float = 10.0  # telemetry older than this marks a device unavailable [s]
    meter_interval_s: float = 60.0  # how often meter registers are read [s]
    state_persist_interval_s: float = 10.0  # how often an active instruction's state is written [s]
    setpoint_deadband_kw: float = 0.05  # smaller changes of a set-point are not re-sent [kW]
    local_zone: str = "Asia/Shanghai"  # park's zone, for protected hours
    latitude: float = 31.3  # park site, for PV forecasts [deg north]
    longitude: float = 120.6  # [deg east]
    adapter_backoff_max_s: float = 30.0  # longest wait between reconnect attempts [s]
    # Fleet schedule between instructions: re-solved when its first interval started this long ago
    # (900: at every quarter hour), at once after an instruction ends; 0 disables it [s].
    schedule_interval_s: float = 900.0
    schedule_intervals: int = 96  # horizon [quarter hours]
    schedule_kinds: tuple[str, ...] = DEFAULT_KINDS  # device kinds the schedule steers (vpp.scheduling)
    tariff: TouTariff | None = None  # TOU import tariff of the schedule; None = market.tariff.default_tariff()
    export_price_cny_per_kwh: float = DEFAULT_EXPORT_PRICE_CNY_PER_KWH  # feed-in price of the schedule [CNY/kWh]
    rebound_fraction: float = 0.3  # curtailed energy an interruptible load takes back in the next hour [unitless]
    emission_factor_kg_per_kwh: float = 0.0  # grid factor the schedule prices carbon with [kgCO2/kWh]
    carbon_price_cny_per_t: float = 0.0  # [CNY/tCO2]; 0 leaves carbon out of the schedule
    # Other processes (API replicas) write instructions and devices into the store: read them every
    # control step (instructions) and every device_refresh_s (devices). Off in a single process.
    shared_store: bool = False
    device_refresh_s: float = 10.0  # [s]


class Fence(Protocol):
    """Writes of a dispatch leader stamped with its fencing token (``vpp.leader.Fence``); each raises when fenced out."""

    async def setpoints(self, setpoints: Sequence[Setpoint]) -> int: ...

    async def state(self, state: DispatchState) -> None: ...

    async def live(self, fields: Mapping[str, Any]) -> None: ...


TelemetrySink = Callable[[Sequence[TelemetrySample]], Awaitable[None]]


@dataclass
class _Execution:
    """In-memory state of the active instruction."""

    instruction: DispatchInstruction
    state: DispatchState
    last_step: datetime | None = None
    last_persist: datetime | None = None
    sent_kw: dict[str, float] = field(default_factory=dict)  # device id -> set-point it holds [kW]
    joined_at: dict[str, datetime] = field(default_factory=dict)  # device id -> first set-point for this instruction
    dispatchable: frozenset[str] = frozenset()


def _hours_since(joined_at: Mapping[str, datetime], device_ids: Sequence[str], now: datetime) -> np.ndarray:
    """Per device, hours since it joined; NaN for one that has not [h].

    Exact datetime arithmetic (not float epochs): an interruption limit is compared at its boundary.
    """
    if not joined_at:
        return np.full(len(device_ids), np.nan)  # an instruction's first step
    return np.fromiter(
        ((now - t).total_seconds() / 3600.0 if (t := joined_at.get(d)) is not None else np.nan for d in device_ids),
        dtype=float, count=len(device_ids),
    )


def freeze_loaded_heap() -> None:
    """Move every object alive now out of the cyclic collector's reach (``gc.freeze``), after collecting garbage.

    What a process has loaded by the time it starts working (the fleet, its
    statics, the imported libraries) lives as long as the process; full
    collections rescanning it paused a 10,000-device control step by ~100 ms
    and cost ingest ~1.5 us per sample. Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()


@dataclass(frozen=True, eq=False)
class _PlantAnswer:
    """The last ``plant()`` totals and everything they were computed from; valid while all of it holds."""

    devices: list  # the fleet list (identity: every fleet change assigns a new list)
    live: LiveTelemetry  # identity: load() starts a new one
    live_version: int  # LiveTelemetry.version
    active_id: str | None
    local_hour: int  # protected hours change on the local hour
    computed_at: datetime
    fresh_until: datetime  # the first fresh device turns stale after this instant
    body: dict  # plant_state(...) with active_instruction; "ts" replaced per answer


@dataclass
class _AdapterHealth:
    connected: bool = False
    failures: int = 0
    retry_at: float = 0.0  # monotonic time of the next reconnect attempt [s]


async def store_instruction(
    store: Store, instruction: DispatchInstruction, now: datetime
) -> tuple[DispatchInstruction, bool, DispatchState]:
    """Store a new instruction, pending (or cancelled when its window is already over), before anyone is told.

    Returns ``(stored, created, state)``; a repeated id returns what was stored first and writes nothing.
    """
    state = DispatchState(instruction_id=instruction.id, status=DispatchStatus.PENDING, updated_at=now, received_at=now)
    stored, created = await store.put_instruction(instruction, state)
    if created and instruction.end <= now:
        # Stored so the id stays taken, but there is nothing left to do.
        state = state.model_copy(update={"status": DispatchStatus.CANCELLED, "message": "window already over when received"})
        await store.put_dispatch_state(state)
    return stored, created, state


class PlantService:
    """Runs the plant: owns the adapters, the live state and the active instruction."""

    def __init__(
        self,
        store: Store,
        adapters: Mapping[str, Adapter],
        clock: Clock,
        metrics: Metrics | None = None,
        settings: ServiceSettings | None = None,
        network: NetworkConfig | None = None,
        grid_links: Sequence[GridLink] = (),
        fence: Fence | None = None,
        telemetry_sink: TelemetrySink | None = None,
    ) -> None:
        self.store = store
        self.fence = fence
        """When set, set-points, instruction states and live state are written through it (fenced), set-points before the adapters get them."""
        self.telemetry_sink = telemetry_sink
        """Where samples read from adapters go; default ``store.append_telemetry``."""
        self.adapters = dict(adapters)
        self.grid_links = list(grid_links)
        """Grid-side protocol endpoints (OpenADR VEN, IEC 104 outstation), started after the loops."""
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.settings = settings or ServiceSettings()
        self.log = structlog.get_logger("vpp.service")
        self._zone = ZoneInfo(self.settings.local_zone)
        self._devices: list[Device] = []
        self._snapshots = SnapshotCache()  # per-device enrolment arrays, rebuilt only when the fleet changes
        self._adapter_by_device: dict[str, str] = {}  # device id -> its adapter's name (see _adapter_of)
        self._adapter_map_of: list[Device] | None = None  # the device list that map was built from
        self._live = LiveTelemetry()  # latest sample per device, also as columns for the snapshot
        self._plant_answer: _PlantAnswer | None = None  # last plant() totals, reused while their inputs are unchanged
        self._pending: dict[str, tuple[DispatchInstruction, DispatchState]] = {}
        self._active: _Execution | None = None
        self._health = {name: _AdapterHealth() for name in self.adapters}
        self._last_meter_read: datetime | None = None
        self._malformed_exported: dict[str, int] = {}  # adapter name -> malformed frames already in /metrics
        self.network = network or NetworkConfig()
        """Grid connection and feeder limits the dispatch keeps to (``vpp.network``)."""
        self._meters: list[MeteringPoint] = []
        self._meter_last: dict[str, MeterReading] = {}  # meter id -> latest reading
        self._meter_prev: dict[str, MeterReading] = {}  # meter id -> the reading before it
        self._fleet_at_read: list[dict[str, float]] = []  # per enterprise fleet power at the last two meter reads [kW]
        self._unmeasured_logged: frozenset[str] = frozenset()
        self._events = EventTally(self._zone)
        """Instructions and scheduled curtailments each device joined today (``max_events_per_day``)."""
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._tariff = self.settings.tariff or default_tariff()
        self.last_schedule: FleetPlan | None = None
        """The fleet schedule being followed (None before the first successful solve)."""
        self._scheduler = None  # HorizonScheduler kept between solves while the fleet keeps its shape
        self._scheduler_start: datetime | None = None  # first interval of the scheduler's last horizon
        self._prices: dict[int, float] = {}  # interval start [epoch s] -> pushed market price [CNY/MWh]
        self._prices_next_seq = 0  # first prices-ledger record not read yet
        self._scheduler_lock = asyncio.Lock()  # one worker thread at a time uses the kept HiGHS model
        self._schedule_tried_at: datetime | None = None  # last solve attempt, successful or not
        self._schedule_resolve = True  # solve on the next schedule step whatever the age
        self._schedule_sent: dict[str, float] = {}  # device id -> scheduled set-point it holds [kW]
        self._releases_owed: dict[str, str | None] = {}  # device id -> instruction whose release its adapter refused
        self._devices_read_at: float = 0.0  # monotonic time the device list was last read (shared store) [s]

    # -- lifecycle -----------------------------------------------------------

    async def load(self) -> None:
        """Read devices, latest telemetry and open instructions from the store; connect adapters."""
        self._devices = await self.store.list_devices()
        self._devices_read_at = time.monotonic()
        self._live = LiveTelemetry(await self.store.latest_telemetry())
        self._meters = await self.store.list_meters()
        for instruction, state in await self.store.list_instructions():
            if state.status in OPEN_STATUSES:
                self._pending[instruction.id] = (instruction, state)
            for device_id, joined in state.device_joined_at.items():
                self._events.note((device_id,), joined, instruction.id)
        if self._pending:
            self.log.info("resuming instructions", ids=sorted(self._pending))
        self.metrics.devices_enrolled.set(len(self._devices))
        for name in self.adapters:
            await self._ensure_connected(name)

    async def start(self) -> None:
        """Load, then run the telemetry and control loops in the background."""
        await self.load()
        freeze_loaded_heap()  # ``stop`` thaws it
        self._tasks = [
            asyncio.create_task(self._telemetry_loop(), name="vpp-telemetry"),
            asyncio.create_task(self._control_loop(), name="vpp-control"),
        ]
        for link in self.grid_links:
            await link.start(self)

    async def stop(self, close_adapters: bool = True) -> None:
        """Stop the grid links and loops, close the adapters. Open instructions stay in the store and resume on restart.

        ``close_adapters=False`` keeps them open for a later service on the same
        adapters (a dispatch process that lost leadership may win it back).
        Devices are not released: they hold their last set-point until the next leader steps in.
        """
        gc.unfreeze()
        for link in self.grid_links:
            try:
                await link.stop()
            except Exception as exc:  # stopping must not keep the others running
                self.log.warning("grid link stop failed", link=link.name, error=str(exc))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._active is not None:
            try:
                await self._persist(self._active, force=True)
            except VppError as exc:  # fenced out or store down: the stored state is the last good one
                self.log.warning("active state not written at stop", error=str(exc))
        if not close_adapters:
            return
        for name, adapter in self.adapters.items():
            try:
                await adapter.close()
            except Exception as exc:  # closing must not stop the others from closing
                self.log.warning("adapter close failed", adapter=name, error=str(exc))

    async def _telemetry_loop(self) -> None:
        while True:
            await self._guarded(self.poll_telemetry, "telemetry")
            await self.clock.sleep(self.settings.telemetry_interval_s)

    async def _control_loop(self) -> None:
        while True:
            await self._guarded(self.control_step, "control")
            await self._sleep_or_wake(self.settings.control_interval_s)

    async def _guarded(self, step, what: str) -> None:
        """Run one loop iteration; an error is logged and the loop goes on (the service never dies of one)."""
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("loop step failed", loop=what)

    async def _sleep_or_wake(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            self._wake.clear()

    # -- devices -------------------------------------------------------------

    @property
    def devices(self) -> list[Device]:
        return list(self._devices)

    @property
    def latest_telemetry(self) -> Mapping[str, TelemetrySample]:
        """Latest sample per device id (read-only view, updated by every poll)."""
        return self._live.latest

    def wake(self) -> None:
        """Run a control step now (e.g. another process stored an instruction)."""
        self._wake.set()

    async def enrol_device(self, device: Device) -> bool:
        """Store a device (new or changed) and take it into the fleet. Returns True when new."""
        if await self.store.get_enterprise(device.enterprise_id) is None:
            raise NotFound(f"enterprise '{device.enterprise_id}' does not exist")
        if device.adapter not in self.adapters:
            known = ", ".join(sorted(self.adapters)) or "none"
            raise InvalidInput("adapter", f"'{device.adapter}' is not running in this service (running: {known})")
        add_device = getattr(self.adapters[device.adapter], "add_device", None)
        if add_device is not None:
            # The adapter first: a device it cannot take is refused before anything is stored.
            try:
                await add_device(device)
            except AdapterError as exc:
                raise InvalidInput("adapter", str(exc)) from None
        created = await self.store.put_device(device)
        self._devices = await self.store.list_devices()
        self._meters = await self.store.list_meters()  # a new PV may bring a generation meter
        self.metrics.devices_enrolled.set(len(self._devices))
        self.log.info("device enrolled", device_id=device.id, enterprise_id=device.enterprise_id, created=created)
        return created

    # -- telemetry -------------------------------------------------------------

    async def poll_telemetry(self) -> int:
        """Read every adapter once, store the samples; returns how many were ingested."""
        adapter_of = {d.id: d.adapter for d in self._devices}
        ingested = 0
        now = self.clock.now()
        meters_due = (
            self._last_meter_read is None
            or (now - self._last_meter_read).total_seconds() >= self.settings.meter_interval_s
        )
        for name, adapter in self.adapters.items():
            if not await self._ensure_connected(name):
                continue
            try:
                # Only devices enrolled on this adapter: two adapters over one simulated park must not both report them.
                samples = [s for s in await adapter.read_telemetry() if adapter_of.get(s.device_id) == name]
                readings = await adapter.read_meters() if meters_due and hasattr(adapter, "read_meters") else []
            except Exception as exc:
                self._adapter_failed(name, "read", exc)
                continue
            if samples:
                self._live.update(samples)  # live state first: a control step running while they are stored sees them
                await (self.telemetry_sink or self.store.append_telemetry)(samples)
                self.metrics.telemetry_samples.labels(adapter=name).inc(len(samples))
                ingested += len(samples)
            if readings:
                await self.store.append_meter_readings(readings)
                self._note_meter_readings(readings)
        self._export_malformed()
        if meters_due:
            self._last_meter_read = now
        return ingested

    def _note_meter_readings(self, readings: Sequence[MeterReading]) -> None:
        """Keep the last two readings per meter and the fleet power at this read, for network limits."""
        for reading in readings:
            last = self._meter_last.get(reading.meter_id)
            if last is not None and reading.ts <= last.ts:
                continue
            if last is not None:
                self._meter_prev[reading.meter_id] = last
            self._meter_last[reading.meter_id] = reading
        if self.network.limited:
            snapshot = self.snapshot()
            per_enterprise: dict[str, float] = {}
            for enterprise_id, p_kw, fresh in zip(snapshot.enterprise_ids, snapshot.p_kw.tolist(), snapshot.fresh):
                if fresh:
                    per_enterprise[enterprise_id] = per_enterprise.get(enterprise_id, 0.0) + p_kw
            self._fleet_at_read = [*self._fleet_at_read[-1:], per_enterprise]

    def network_caps(self, snapshot: FleetSnapshot) -> FleetCaps | None:
        """The network limits as fleet ranges now; None when no limit is configured."""
        if not self.network.limited:
            return None
        exchange = exchange_kw(self._meters, self._meter_prev, self._meter_last)
        reads = self._fleet_at_read or [{}]
        enterprises = set().union(*reads)
        # The fleet over the meter interval: the mean of its power at the interval's two ends.
        fleet = {e: sum(r.get(e, 0.0) for r in reads) / len(reads) for e in enterprises}
        caps, unmeasured = fleet_caps(self.network, snapshot.enterprise_ids, fleet, exchange)
        if frozenset(unmeasured) != self._unmeasured_logged:
            self._unmeasured_logged = frozenset(unmeasured)
            if unmeasured:
                self.log.warning("network limits not applied: no measured grid exchange yet", limits=sorted(unmeasured))
        return caps

    def _export_malformed(self) -> None:
        """Bring ``vpp_adapter_malformed`` up to each adapter's own count of dropped frames."""
        for name, adapter in [*self.adapters.items(), *((link.name, link) for link in self.grid_links)]:
            count = getattr(adapter, "malformed_frames", 0)  # duck-typed adapters may not count
            seen = self._malformed_exported.get(name, 0)
            if count > seen:
                self.metrics.adapter_malformed.labels(adapter=name).inc(count - seen)
                self._malformed_exported[name] = count

    async def _ensure_connected(self, name: str) -> bool:
        """Connect an adapter if it is not, with exponential backoff between failed attempts."""
        health = self._health[name]
        if health.connected:
            return True
        if time.monotonic() < health.retry_at:
            return False
        try:
            await self.adapters[name].connect()
        except Exception as exc:
            self._adapter_failed(name, "connect", exc)
            return False
        health.connected, health.failures = True, 0
        self.log.info("adapter connected", adapter=name)
        return True

    def _adapter_failed(self, name: str, operation: str, exc: Exception) -> None:
        health = self._health[name]
        health.connected = False
        health.failures += 1
        backoff_s = min(self.settings.adapter_backoff_max_s, 0.5 * 2 ** min(health.failures, 10))
        health.retry_at = time.monotonic() + backoff_s
        self.metrics.adapter_errors.labels(adapter=name, operation=operation).inc()
        self.log.warning("adapter failed", adapter=name, operation=operation, error=str(exc), retry_in_s=backoff_s)

    # -- live state --------------------------------------------------------------

    def snapshot(self, now: datetime | None = None) -> FleetSnapshot:
        """The fleet at ``now`` (default: the clock's now), from the latest telemetry."""
        now = self.clock.now() if now is None else now
        return self._snapshots.build_live(self._devices, self._live, now, self.settings.stale_after_s, self._zone)

    def envelope(self, hours: float) -> list[dict]:
        """Up/down capability per quarter hour for ``hours`` ahead (JSON-ready rows)."""
        s = self.settings
        return plant_envelope(self._devices, self.snapshot(), hours, self._zone, s.latitude, s.longitude)

    async def flexibility(self, start: datetime, end: datetime, direction: str) -> BlockOffer:
        """The block the fleet can hold from ``start`` to ``end`` on top of its schedule (see ``block_offer``).

        Raises ``Conflict`` before the first schedule is solved, ``InvalidInput`` for a bad window or direction.
        """
        async with self._scheduler_lock:
            scheduler, horizon = self._scheduler, self._scheduler_start
            if scheduler is None or horizon is None:
                raise Conflict("no fleet schedule is solved yet; ask again in a few seconds")
            try:
                return await asyncio.to_thread(block_offer, scheduler, horizon, start, end, direction)
            except ValueError as exc:
                field, _, message = str(exc).partition(": ")
                raise InvalidInput(field, message) from None

    def plant_devices(self) -> list[dict]:
        """Live state of every device (JSON-ready)."""
        return device_rows(self.snapshot())

    def plant(self) -> dict:
        """Live plant totals (JSON-ready), with the active instruction's id.

        Computed again only when an input changed: the fleet, the telemetry, the
        active instruction, the local hour, or the clock passing the instant a
        fresh device turns stale. Otherwise the last totals are exact and only
        ``ts`` is new.
        """
        now = self.clock.now()
        active_id = self._active.instruction.id if self._active else None
        hour = now.astimezone(self._zone).hour
        kept = self._plant_answer
        if not (
            kept is not None and kept.devices is self._devices and kept.live is self._live and kept.live_version == self._live.version
            and kept.active_id == active_id and kept.local_hour == hour and kept.computed_at <= now <= kept.fresh_until
        ):
            snapshot = self.snapshot(now)
            body = plant_state(snapshot)
            body["active_instruction"] = active_id
            seen = [t for t, fresh in zip(snapshot.last_seen, snapshot.fresh.tolist()) if fresh and t is not None]
            fresh_until = min(seen) + timedelta(seconds=self.settings.stale_after_s) if seen else datetime.max.replace(tzinfo=now.tzinfo)
            kept = self._plant_answer = _PlantAnswer(
                self._devices, self._live, self._live.version, active_id, hour, now, fresh_until, body
            )
        return {**kept.body, "ts": now.isoformat()}

    # -- instructions --------------------------------------------------------------

    async def submit_instruction(self, instruction: DispatchInstruction) -> tuple[DispatchInstruction, bool]:
        """Store an instruction (before anyone is told it was accepted) and wake the control loop.

        Returns ``(stored, created)``; a repeated id returns what was stored first.
        """
        stored, created, state = await store_instruction(self.store, instruction, self.clock.now())
        if created:
            if state.status is DispatchStatus.PENDING:
                self._pending[instruction.id] = (instruction, state)
                self._wake.set()
            self.log.info("instruction accepted", instruction_id=instruction.id, kind=str(instruction.kind))
        self.metrics.instructions.labels(kind=str(instruction.kind), result="created" if created else "repeat").inc()
        return stored, created

    async def cancel_instruction(self, instruction_id: str, reason: str) -> DispatchState:
        """Cancel a pending or active instruction (e.g. the grid cancelled the event); returns its state.

        An active one releases its devices at once. One already finished keeps
        its final state (cancelling twice, or too late, changes nothing).
        Raises ``NotFound``.
        """
        now = self.clock.now()
        if self._active is not None and self._active.instruction.id == instruction_id:
            await self._finish(self._active, DispatchStatus.CANCELLED, reason)
            return (await self.instruction_view(instruction_id))[1]
        if instruction_id in self._pending:
            _, state = self._pending.pop(instruction_id)
            state = state.model_copy(update={"status": DispatchStatus.CANCELLED, "updated_at": now, "message": reason})
            await self._put_state(state)
            self.log.info("instruction cancelled", instruction_id=instruction_id, reason=reason)
            return state
        return (await self.instruction_view(instruction_id))[1]

    async def control_step(self) -> None:
        """Activate, execute or finish instructions at the current time."""
        now = self.clock.now()
        if self.settings.shared_store:
            await self._read_shared()
        snapshot = self.snapshot()
        self.metrics.devices_online.set(int(snapshot.fresh.sum()))
        self._update_plant_gauges(snapshot)
        await self._expire_missed(now)
        if self._active is not None and now >= self._active.instruction.end:
            await self._finish(self._active, DispatchStatus.COMPLETED, "window ended")
        due = [(i, s) for i, s in self._pending.values() if i.start <= now < i.end]
        if due:
            instruction, state = max(due, key=lambda pair: (pair[0].start, pair[0].id))
            if self._active is not None and self._active.instruction.id != instruction.id:
                await self._finish(self._active, DispatchStatus.COMPLETED, f"superseded by {instruction.id}")
            if self._active is None:
                self._active = self._activate(instruction, state, snapshot, now)
        if self._active is not None:
            await self._execute(self._active, snapshot, now)
        else:
            await self.schedule_step(snapshot, now)
        await self._retry_releases(now)
        if self.fence is not None:
            await self.fence.live(
                {"ts": now.isoformat(), "active_instruction": self._active.instruction.id if self._active else None,
                 "adapters": sorted(self.adapters)}
            )

    async def _retry_releases(self, now: datetime) -> None:
        """Send again the releases an adapter refused: a device must not keep an ended instruction's set-point.

        Runs after the step's own set-points: a device that got a newer one
        (a new instruction, the schedule) no longer needs its release. Only
        adapters that reconnected are tried (``poll_telemetry`` reconnects with backoff).
        """
        if not self._releases_owed:
            return
        held = set(self._schedule_sent) | (set(self._active.sent_kw) if self._active is not None else set())
        owed = {d: iid for d, iid in self._releases_owed.items() if d not in held}
        ready = {d: iid for d, iid in owed.items() if self._health.get(self._adapter_of(d), _AdapterHealth()).connected}
        outgoing = [(self._adapter_of(d), self._release(d, now, iid)) for d, iid in ready.items()]
        undelivered = await self._deliver(outgoing)
        self._releases_owed = {d: iid for d, iid in owed.items() if d not in ready or d in undelivered}
        if len(self._releases_owed) < len(owed):
            self.log.info("owed releases sent", devices=len(owed) - len(self._releases_owed), still_owed=len(self._releases_owed))

    async def _read_shared(self) -> None:
        """Take in instructions other processes stored, and (every ``device_refresh_s``) devices they enrolled."""
        for instruction, state in await self.store.list_instructions(OPEN_STATUSES):
            if instruction.id not in self._pending:  # one whose window passed is closed by _expire_missed
                self._pending[instruction.id] = (instruction, state)
                self.log.info("instruction taken from the store", instruction_id=instruction.id)
        if time.monotonic() - self._devices_read_at < self.settings.device_refresh_s:
            return
        known = {d.id: d for d in self._devices}
        devices = await self.store.list_devices()
        self._devices_read_at = time.monotonic()
        for device in devices:
            if known.get(device.id) == device:
                continue
            add_device = getattr(self.adapters.get(device.adapter), "add_device", None)
            if add_device is not None:
                try:
                    await add_device(device)
                except AdapterError as exc:
                    self.log.warning("enrolled device refused by its adapter", device_id=device.id, error=str(exc))
        self._devices = devices
        self._meters = await self.store.list_meters()
        self.metrics.devices_enrolled.set(len(self._devices))

    # -- fleet schedule ------------------------------------------------------------

    async def schedule_step(self, snapshot: FleetSnapshot | None = None, now: datetime | None = None) -> None:
        """Between instructions: re-solve the fleet schedule when due, then send its present set-points.

        Set-points go out with ``instruction_id=None``. A device an instruction
        holds is not touched here (this runs only when none is active).
        """
        if self.settings.schedule_interval_s <= 0:
            return
        now = now if now is not None else self.clock.now()
        snapshot = snapshot if snapshot is not None else self.snapshot()
        if self._schedule_due(now):
            await self._solve_schedule(snapshot, now)
        await self._follow_schedule(snapshot, now)

    def _schedule_due(self, now: datetime) -> bool:
        """First step, after an instruction ended, or the last attempt's first interval began ``schedule_interval_s`` ago."""
        if self._schedule_resolve or self._schedule_tried_at is None:
            return True
        age_s = (now - horizon_start(self._schedule_tried_at)).total_seconds()
        return age_s >= self.settings.schedule_interval_s

    async def _solve_schedule(self, snapshot: FleetSnapshot, now: datetime) -> None:
        """Solve in a worker thread (CPU-bound); a failure is logged and counted, the previous plan stays."""
        s = self.settings
        self._schedule_tried_at, self._schedule_resolve = now, False
        try:
            inputs = await self._schedule_inputs(snapshot, now)
            async with self._scheduler_lock:
                plan, scheduler = await asyncio.to_thread(
                    plan_fleet, list(self._devices), snapshot, self._tariff, inputs, self._scheduler, self._scheduler_start,
                    local_zone=s.local_zone, latitude=s.latitude, longitude=s.longitude, intervals=s.schedule_intervals,
                    export_price_cny_per_kwh=s.export_price_cny_per_kwh, kinds=s.schedule_kinds,
                    rebound_fraction=s.rebound_fraction, emission_factor_kg_per_kwh=s.emission_factor_kg_per_kwh,
                    carbon_price_cny_per_t=s.carbon_price_cny_per_t,
                )
                self._scheduler, self._scheduler_start = scheduler, plan.start if scheduler is not None else None
        except Exception:
            self._scheduler = self._scheduler_start = None  # a failed step may have left the kept model half-updated
            self.metrics.schedule_solves.labels(result="error").inc()
            self.log.exception("fleet schedule failed")
            return
        if not plan.has_solution:
            self.metrics.schedule_solves.labels(result="no_solution").inc()
            self.log.warning("fleet schedule has no solution", status=plan.status)
            return
        self.metrics.schedule_solves.labels(result="optimal" if plan.status == "Optimal" else "feasible").inc()
        self.last_schedule = plan
        self.log.info(
            "fleet schedule solved", devices=plan.scheduled, status=plan.status, cost_cny=round(plan.objective_cny, 2),
            solve_ms=round(plan.solve_time_s * 1000, 1), reused_model=plan.reused_model, grid_limited=plan.grid_limited,
        )

    async def _schedule_inputs(self, snapshot: FleetSnapshot, now: datetime) -> ScheduleInputs:
        """Energy shiftable loads took today, events used today, and the park load outside the fleet."""
        local_now = now.astimezone(self._zone)
        midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
        energy: dict[str, float] = {}
        for device in self._devices:
            if str(device.kind) == "shiftable_load" and "shiftable_load" in self.settings.schedule_kinds:
                samples = await self.store.telemetry_history(device.id, midnight, now)
                ts = np.array([x.ts.timestamp() for x in samples])
                energy[device.id] = energy_taken_kwh(ts, np.array([x.p_kw for x in samples]))
        events = dict(self._events.counts(now))
        uncontrolled = None
        exchange = exchange_kw(self._meters, self._meter_prev, self._meter_last)
        grid_meter_owners = {m.enterprise_id for m in self._meters if m.purpose == "grid"}
        if grid_meter_owners and grid_meter_owners <= set(exchange):
            uncontrolled = sum(exchange.values()) + float(snapshot.p_kw[snapshot.fresh].sum())
        limit = self.network.connection
        return ScheduleInputs(
            energy, events, uncontrolled, limit.import_limit_kw, limit.export_limit_kw, await self._market_prices()
        )

    async def _market_prices(self) -> dict[int, float]:
        """Latest pushed spot / day-ahead price per interval start [CNY/MWh], reading only new ledger records."""
        records = await self.store.ledger_records(PRICES_LEDGER, start_seq=self._prices_next_seq)
        if records:
            apply_price_records(self._prices, records)
            self._prices_next_seq = int(records[-1]["seq"]) + 1
        return self._prices

    async def _follow_schedule(self, snapshot: FleetSnapshot, now: datetime) -> None:
        """Send the present interval's set-points that changed; release batteries the plan no longer covers."""
        targets = self.last_schedule.setpoints_at(now) if self.last_schedule else {}
        deadband = self.settings.setpoint_deadband_kw
        outgoing: list[tuple[str, Setpoint]] = []
        for i, device_id in enumerate(snapshot.device_ids):
            target = targets.get(device_id) if snapshot.dispatchable[i] else None
            held = self._schedule_sent.get(device_id)
            if target is None:
                if held is not None:
                    outgoing.append((snapshot.adapters[i], self._release(device_id, now, None)))
                    del self._schedule_sent[device_id]
                continue
            reference = held if held is not None else float(snapshot.p_kw[i])
            if abs(target - reference) <= deadband:
                continue
            outgoing.append((snapshot.adapters[i], Setpoint(device_id=device_id, p_kw=target, ts=now)))
            if held is None and snapshot.kinds[i] == "interruptible_load":
                self._events.note((device_id,), now, f"schedule-{now.isoformat()}")  # a curtailment counts as an event
            self._schedule_sent[device_id] = target
        for device_id in await self._deliver(outgoing):
            if self._schedule_sent.pop(device_id, None) is None:  # not delivered: a set-point is sent again next step,
                self._releases_owed[device_id] = None  # a release once its adapter is back

    async def _expire_missed(self, now: datetime) -> None:
        """Instructions whose window passed while they waited (e.g. service down) are closed, not run late."""
        for instruction_id, (instruction, state) in list(self._pending.items()):
            if instruction.end <= now and (self._active is None or self._active.instruction.id != instruction_id):
                del self._pending[instruction_id]
                await self._put_state(
                    state.model_copy(
                        update={"status": DispatchStatus.CANCELLED, "updated_at": now, "message": "window passed before it could run"}
                    )
                )

    def _activate(
        self, instruction: DispatchInstruction, state: DispatchState, snapshot: FleetSnapshot, now: datetime
    ) -> _Execution:
        if state.status is DispatchStatus.ACTIVE and state.device_baseline_kw:
            baselines = dict(state.device_baseline_kw)  # resumed after a restart: keep the original baseline
            self.log.info("instruction resumed", instruction_id=instruction.id)
        else:
            baselines = {d: p for d, p, ok in zip(snapshot.device_ids, snapshot.p_kw.tolist(), snapshot.fresh) if ok}
            self.log.info("instruction activated", instruction_id=instruction.id, devices=len(baselines))
        baseline_total = sum(baselines.values())
        state = state.model_copy(
            update={
                "status": DispatchStatus.ACTIVE,
                "updated_at": now,
                "device_baseline_kw": baselines,
                "baseline_kw": round(baseline_total, 3),
            }
        )
        return _Execution(instruction=instruction, state=state, joined_at=dict(state.device_joined_at))

    async def _execute(self, execution: _Execution, snapshot: FleetSnapshot, now: datetime) -> None:
        instruction = execution.instruction
        baseline = baseline_array(snapshot, execution.state.device_baseline_kw)
        remaining_h = (instruction.end - now).total_seconds() / 3600.0
        started = time.perf_counter()
        received = execution.state.received_at or instruction.start
        joined_h_ago = _hours_since(execution.joined_at, snapshot.device_ids, now)
        allowed = allowed_devices(
            snapshot,
            # Received after its start: no notice at all, not a negative amount.
            notice_given_h=max(0.0, (instruction.start - received).total_seconds() / 3600.0),
            joined_h_ago=joined_h_ago,
            events_today=self._events.counts_array(snapshot.device_ids, now, excluding=instruction.id),
        )
        plan = plan_step(
            snapshot, instruction, baseline, self.settings.control_interval_s, remaining_h, allowed, self.network_caps(snapshot)
        )
        self.metrics.allocation_seconds.observe(time.perf_counter() - started)
        await self._send_setpoints(execution, snapshot, plan, now, baseline)
        execution.state = self._account(execution, snapshot, plan, now, baseline)
        execution.last_step = now
        await self.store.append_dispatch_progress(
            [DispatchProgress(instruction_id=instruction.id, ts=now, requested_kw=plan.requested_kw, measured_kw=plan.measured_kw)]
        )
        await self._persist(execution)

    def _account(
        self, execution: _Execution, snapshot: FleetSnapshot, plan: StepPlan, now: datetime, baseline: np.ndarray
    ) -> DispatchState:
        """Integrate requested and delivered energy since the last step; note newly seen baselines."""
        state = execution.state
        dt_h = (now - execution.last_step).total_seconds() / 3600.0 if execution.last_step else 0.0
        sign = plan.request_sign
        per_enterprise = dict(state.enterprise_delivered_kwh)
        for enterprise_id, kwh in enterprise_delivered_kwh(snapshot.enterprise_ids, plan.device_delivered_kw, sign, dt_h).items():
            per_enterprise[enterprise_id] = per_enterprise.get(enterprise_id, 0.0) + kwh
        baselines = dict(state.device_baseline_kw)
        for device_id, p_kw, fresh in zip(snapshot.device_ids, baseline.tolist(), snapshot.fresh):
            if fresh and device_id not in baselines:
                baselines[device_id] = p_kw  # a device that joined mid-instruction starts from where it is
        return state.model_copy(
            update={
                "updated_at": now,
                "requested_kw": round(plan.requested_kw, 3),
                "delivered_kw": round(plan.delivered_kw, 3),
                "requested_kwh": state.requested_kwh + abs(plan.requested_kw - plan.baseline_kw) * dt_h,
                "delivered_kwh": state.delivered_kwh + plan.delivered_kw * sign * dt_h,
                "enterprise_delivered_kwh": per_enterprise,
                "devices_dispatched": len(execution.sent_kw),
                "shortfall_kw": round(plan.shortfall_kw, 3),
                "device_baseline_kw": baselines,
                "device_joined_at": dict(execution.joined_at),
                "reallocations": state.reallocations,
            }
        )

    async def _send_setpoints(
        self, execution: _Execution, snapshot: FleetSnapshot, plan: StepPlan, now: datetime, baseline_kw: np.ndarray
    ) -> None:
        """Send changed set-points; release devices that dropped out of the dispatchable set.

        ``baseline_kw`` is the frozen baseline in snapshot order [kW]: a device
        not yet holding a set-point is left alone when asked to stay within the
        deadband of it. Which devices get a set-point is decided on arrays; only
        those are turned into ``Setpoint`` objects (the fleet may be 10,000 devices).
        """
        self._note_fleet_change(execution, snapshot)
        ids, iid = snapshot.device_ids, execution.instruction.id
        sent = execution.sent_kw
        held_kw = np.fromiter((sent.get(d, np.nan) for d in ids), dtype=float, count=len(ids)) if sent else np.full(len(ids), np.nan)
        target_kw = plan.setpoints_kw
        holds, has_target = ~np.isnan(held_kw), ~np.isnan(target_kw)
        reference_kw = np.where(holds, held_kw, baseline_kw)
        with np.errstate(invalid="ignore"):  # NaN targets compare False, as they should
            changed = has_target & (np.abs(target_kw - reference_kw) > self.settings.setpoint_deadband_kw)
        released = np.flatnonzero(holds & ~has_target).tolist()
        changed_at = np.flatnonzero(changed)
        targets = target_kw[changed_at].tolist()
        changed_ids = [ids[i] for i in changed_at.tolist()]
        # Validated construction: in pydantic 2 it is faster than model_construct, which runs in Python.
        outgoing = [(snapshot.adapters[i], self._release(ids[i], now, iid)) for i in released]
        outgoing += [
            (snapshot.adapters[i], Setpoint(device_id=device_id, p_kw=p_kw, ts=now, instruction_id=iid))
            for i, device_id, p_kw in zip(changed_at.tolist(), changed_ids, targets)
        ]
        for i in released:
            del sent[ids[i]]
        joined = execution.joined_at
        newcomers = [d for d in changed_ids if d not in joined]
        sent.update(zip(changed_ids, targets))
        joined.update(dict.fromkeys(newcomers, now))
        self._events.note(newcomers, now, iid)
        for device_id in await self._deliver(outgoing):
            sent.pop(device_id, None)  # not delivered: sent again next step

    def _note_fleet_change(self, execution: _Execution, snapshot: FleetSnapshot) -> None:
        """Count a re-allocation when the dispatchable set differs from the last step's, and log who moved."""
        dispatchable = frozenset(d for d, ok in zip(snapshot.device_ids, snapshot.dispatchable.tolist()) if ok)
        if execution.dispatchable and dispatchable != execution.dispatchable:
            execution.state = execution.state.model_copy(update={"reallocations": execution.state.reallocations + 1})
            self.log.info(
                "fleet changed, re-allocated",
                instruction_id=execution.instruction.id,
                lost=sorted(execution.dispatchable - dispatchable)[:20],
                gained=sorted(dispatchable - execution.dispatchable)[:20],
            )
        execution.dispatchable = dispatchable

    async def _deliver(self, outgoing: Sequence[tuple[str, Setpoint]]) -> set[str]:
        """Hand set-points to their adapters (grouped), then log the ones they took in the store.

        A fenced leader instead logs every one under its token before handing
        them over (a stale leader must be refused before any adapter sees one).
        Returns the ids of devices whose adapter failed to take them: the
        callers forget those as held, so the next step sends them again
        (releases: ``_retry_releases``).
        """
        if not outgoing:
            return set()
        if self.fence is not None:
            # Logged under the fencing token first: a stale leader is refused here, before any adapter sees a set-point.
            await self.fence.setpoints([sp for _, sp in outgoing])
        undelivered: set[str] = set()
        by_adapter: dict[str, list[Setpoint]] = {}
        for adapter_name, setpoint in outgoing:
            by_adapter.setdefault(adapter_name, []).append(setpoint)
        for adapter_name, setpoints in by_adapter.items():
            adapter = self.adapters.get(adapter_name)
            if adapter is None:
                self.metrics.adapter_errors.labels(adapter=adapter_name, operation="missing").inc()
                undelivered.update(sp.device_id for sp in setpoints)
                continue
            try:
                await adapter.write_setpoints(setpoints)
            except Exception as exc:
                self._adapter_failed(adapter_name, "write", exc)
                undelivered.update(sp.device_id for sp in setpoints)
                continue
            self.metrics.setpoints_sent.labels(adapter=adapter_name).inc(len(setpoints))
        if self.fence is None:  # the audit log holds what adapters took (a fenced leader logged all before handing)
            await self.store.append_setpoints([sp for _, sp in outgoing if sp.device_id not in undelivered])
        return undelivered

    async def _finish(self, execution: _Execution, status: DispatchStatus, message: str) -> None:
        """Release every device the instruction holds and write its final state."""
        now = self.clock.now()
        release = [(self._adapter_of(d), self._release(d, now, execution.instruction.id)) for d in execution.sent_kw]
        for device_id in await self._deliver(release):
            self._releases_owed[device_id] = execution.instruction.id  # sent again once its adapter is back
        for device_id in set(execution.sent_kw) | set(execution.joined_at):
            self._schedule_sent.pop(device_id, None)  # the instruction overrode (and released) it
        self._schedule_resolve = True  # released devices return to a fresh schedule on the next step
        execution.sent_kw.clear()
        execution.state = execution.state.model_copy(
            update={"status": status, "updated_at": now, "message": message, "devices_dispatched": 0}
        )
        await self._persist(execution, force=True)
        self._pending.pop(execution.instruction.id, None)
        self._active = None
        self.log.info(
            "instruction finished",
            instruction_id=execution.instruction.id,
            status=str(status),
            requested_kwh=round(execution.state.requested_kwh, 3),
            delivered_kwh=round(execution.state.delivered_kwh, 3),
            message=message,
        )

    async def _persist(self, execution: _Execution, force: bool = False) -> None:
        now = execution.state.updated_at
        due = execution.last_persist is None or (
            (now - execution.last_persist).total_seconds() >= self.settings.state_persist_interval_s
        )
        if force or due:
            await self._put_state(execution.state)
            execution.last_persist = now

    async def _put_state(self, state: DispatchState) -> None:
        """Write an instruction's state: through the fence when leading a cluster, else straight to the store."""
        if self.fence is not None:
            await self.fence.state(state)
        else:
            await self.store.put_dispatch_state(state)

    @staticmethod
    def _release(device_id: str, now: datetime, instruction_id: str | None) -> Setpoint:
        """The set-point that hands a device back to its own control (``p_kw=None``)."""
        return Setpoint(device_id=device_id, p_kw=None, ts=now, instruction_id=instruction_id)

    def _adapter_of(self, device_id: str) -> str:
        if self._adapter_map_of is not self._devices:  # every fleet change assigns a new list
            self._adapter_by_device = {d.id: d.adapter for d in self._devices}
            self._adapter_map_of = self._devices
        return self._adapter_by_device.get(device_id, "")

    def _update_plant_gauges(self, snapshot: FleetSnapshot) -> None:
        totals = plant_state(snapshot)
        self.metrics.plant_net_kw.set(totals["net_kw"])
        self.metrics.plant_available_up_kw.set(totals["available_up_kw"])
        self.metrics.plant_available_down_kw.set(totals["available_down_kw"])

    async def list_instructions(self) -> list[tuple[DispatchInstruction, DispatchState]]:
        """Every instruction with its freshest state (the active one's from memory)."""
        pairs = await self.store.list_instructions()
        if self._active is None:
            return pairs
        active = self._active
        return [(i, active.state if i.id == active.instruction.id else s) for i, s in pairs]

    async def instruction_view(self, instruction_id: str) -> tuple[DispatchInstruction, DispatchState]:
        """The instruction and its freshest state (in memory when active). Raises ``NotFound``."""
        if self._active is not None and self._active.instruction.id == instruction_id:
            return self._active.instruction, self._active.state
        found = await self.store.get_instruction(instruction_id)
        if found is None:
            raise NotFound(f"instruction '{instruction_id}' does not exist")
        return found
