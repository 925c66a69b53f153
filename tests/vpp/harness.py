"""A small simulated park on SQLite driven by a manual clock: the service without real time.

Shared by the service and API tests (imported as ``tests.vpp.harness``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from adapters.simulator import SimulatorAdapter
from simulators.park import ParkSpec, build_park
from simulators.sim import SimulatedPark
from vpp.clock import ManualClock
from vpp.network import NetworkConfig
from vpp.service import PlantService, ServiceSettings
from vpp.store import SqliteStore, Store

# 12:00 in Shanghai on a summer weekday: PV producing, factories running.
NOON = datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)
SETTINGS = ServiceSettings(telemetry_interval_s=1.0, control_interval_s=2.0, stale_after_s=10.0, state_persist_interval_s=10.0)


@dataclass
class Plant:
    service: PlantService
    store: Store
    clock: ManualClock
    park: SimulatedPark
    spec: ParkSpec

    async def run(self, seconds: float, step_s: float = 2.0) -> None:
        """Advance simulated time, polling telemetry and stepping control every ``step_s``."""
        for _ in range(int(round(seconds / step_s))):
            self.clock.advance(step_s)
            await self.service.poll_telemetry()
            await self.service.control_step()


async def make_plant(
    tmp_path,
    start: datetime = NOON,
    n_enterprises: int = 5,
    seed: int = 3,
    store: Store | None = None,
    network: NetworkConfig | None = None,
) -> Plant:
    """Seed ``store`` (default: SQLite in ``tmp_path``) with a simulated park and load a service on it."""
    store = store or SqliteStore(tmp_path / "vpp.sqlite3")
    await store.open()
    spec = build_park(seed=seed, n_enterprises=n_enterprises)
    for enterprise in spec.enterprises:
        await store.put_enterprise(enterprise)
    for meter in spec.meters:
        await store.put_meter(meter)
    for device in spec.devices:
        await store.put_device(device)
    clock = ManualClock(start)
    park = SimulatedPark(spec, start=start, seed=seed)
    service = PlantService(store, {"simulator": SimulatorAdapter(park, clock)}, clock, settings=SETTINGS, network=network)
    await service.load()
    await service.poll_telemetry()
    return Plant(service=service, store=store, clock=clock, park=park, spec=spec)
