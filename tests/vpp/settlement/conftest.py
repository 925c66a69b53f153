"""A simulated month of meter data for the settlement tests, generated once per session.

``SimulatedPark`` is driven directly at 15-minute steps from 2026-06-24 to
2026-08-01 (local), its batteries discharging or charging in the windows of
a few dispatch instructions, which are stored as completed with their state.
No service loop runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.simulator import SimulatorAdapter
from simulators.park import ParkSpec, build_park
from simulators.sim import SimulatedPark
from tests.redis_support import drop_namespace, redis_url
from tests.vpp.harness import SETTINGS
from vpp.api.app import make_app
from vpp.auth import create_token
from vpp.clock import ManualClock
from vpp.model import (
    Battery,
    DispatchInstruction,
    DispatchState,
    DispatchStatus,
    MeterReading,
    Role,
    Setpoint,
)
from vpp.service import PlantService
from vpp.settlement import SettlementConfig, SettlementService, config_from_dict
from vpp.store import RedisStore, SqliteStore, Store

SHANGHAI = ZoneInfo("Asia/Shanghai")
SIM_START = datetime(2026, 6, 24, tzinfo=SHANGHAI).astimezone(UTC)
SIM_END = datetime(2026, 8, 1, tzinfo=SHANGHAI).astimezone(UTC)
AFTER_JULY = datetime(2026, 8, 2, tzinfo=UTC)
MONTH = "2026-07"
SEED = 3


def local(day: int, hour: int, minute: int = 0, month: int = 7) -> datetime:
    """A July 2026 local time in Shanghai as UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


@dataclass(frozen=True)
class PlannedEvent:
    """An instruction, the battery power the simulated park holds in its window, and the notice it came with."""

    instruction: DispatchInstruction
    battery_fraction: float  # of rating, + = discharge (generator convention)
    notice: timedelta | None = timedelta(hours=20)  # start − received; None = receipt time unknown


EVENTS = (
    # Peak shaving, weekday afternoons, day-ahead.
    PlannedEvent(DispatchInstruction(id="dr-0714", kind="delta", start=local(14, 14), end=local(14, 16), delta_kw=1000.0), 0.9),
    PlannedEvent(DispatchInstruction(id="dr-0722", kind="delta", start=local(22, 15), end=local(22, 16), delta_kw=1200.0), 0.9),
    # Valley filling at night (load raised).
    PlannedEvent(DispatchInstruction(id="vf-0716", kind="delta", start=local(16, 2), end=local(16, 3), delta_kw=-600.0), -0.6),
    # Real-time peak shaving: received five minutes before control starts.
    PlannedEvent(
        DispatchInstruction(id="rt-0728", kind="delta", start=local(28, 10), end=local(28, 10, 45), delta_kw=800.0),
        0.8,
        timedelta(minutes=5),
    ),
)


@dataclass(frozen=True)
class SimulatedMonth:
    spec: ParkSpec
    readings: list[MeterReading]
    events: tuple[PlannedEvent, ...]


def _simulate() -> SimulatedMonth:
    spec = build_park(seed=SEED, n_enterprises=4)
    park = SimulatedPark(spec, start=SIM_START, seed=SEED)
    batteries = [d for d in spec.devices if isinstance(d, Battery)]
    readings: list[MeterReading] = []
    now = SIM_START
    while now < SIM_END:
        active = [e for e in EVENTS if e.instruction.start <= now < e.instruction.end]
        fraction = active[0].battery_fraction if active else None
        park.apply_setpoints(
            Setpoint(device_id=b.id, p_kw=None if fraction is None else fraction * b.rated_kw, ts=now) for b in batteries
        )
        now += timedelta(minutes=15)
        readings.extend(r for r in park.meter_readings(now) if r.meter_id.endswith("-grid"))
    return SimulatedMonth(spec, readings, EVENTS)


@pytest.fixture(scope="session")
def simulated_month() -> SimulatedMonth:
    """Five weeks of 15-minute grid meter readings of a four-enterprise park and its events."""
    return _simulate()


def completed_state(event: PlannedEvent) -> DispatchState:
    """The state the service leaves behind after an instruction's window."""
    return DispatchState(
        instruction_id=event.instruction.id,
        status=DispatchStatus.COMPLETED,
        updated_at=event.instruction.end,
        received_at=None if event.notice is None else event.instruction.start - event.notice,
        requested_kw=event.instruction.delta_kw,
        message="window ended",
    )


async def seed_store(store: Store, month: SimulatedMonth, readings: list[MeterReading] | None = None) -> None:
    """Enterprises, meters, devices, readings and completed instructions into an opened store."""
    for enterprise in month.spec.enterprises:
        await store.put_enterprise(enterprise)
    for meter in month.spec.meters:
        await store.put_meter(meter)
    for device in month.spec.devices:
        await store.put_device(device)
    await store.append_meter_readings(month.readings if readings is None else readings)
    for event in month.events:
        await store.put_instruction(event.instruction, completed_state(event))


def programme_config(**payment: object) -> SettlementConfig:
    """Default programme with 7 days of history and a capacity price, payment keys overridable."""
    return config_from_dict({
        "programme": {"history_days": 7},
        "payment": {"capacity_price_cny_per_kw_month": 2.5, **payment},
    })


@pytest.fixture(params=["sqlite", "redis"])
async def store_factory(request, tmp_path) -> AsyncIterator[Callable[[], Store]]:
    """Builds unopened stores of one backend sharing one data set (one file / one Redis namespace)."""
    if request.param == "sqlite":
        path = tmp_path / "vpp.sqlite3"
        yield lambda: SqliteStore(path)
        return
    url, namespace = redis_url(), f"test-settlement-{uuid.uuid4().hex}"
    await drop_namespace(url, namespace)  # fails the test, with a clear message, when Redis does not answer
    try:
        yield lambda: RedisStore(url, namespace=namespace)
    finally:
        await drop_namespace(url, namespace)


@pytest.fixture
async def settled_store(store_factory, simulated_month):
    """An opened store (SQLite, then Redis) seeded with the simulated month."""
    store = store_factory()
    await store.open()
    await seed_store(store, simulated_month)
    yield store
    await store.close()


@pytest.fixture
def settlement(settled_store) -> SettlementService:
    """Settlement over the seeded store, its clock after July."""
    return SettlementService(settled_store, programme_config(), now=lambda: AFTER_JULY)


@pytest.fixture
async def api(settled_store, simulated_month, monkeypatch, tmp_path):
    """The app over the seeded store on loopback, its clock after July; yields (client, tokens, store)."""
    config = tmp_path / "programme.toml"
    config.write_text("[programme]\nhistory_days = 7\n")
    monkeypatch.setenv("VPP_SETTLEMENT_CONFIG", str(config))
    clock = ManualClock(AFTER_JULY)
    park = SimulatedPark(simulated_month.spec, start=AFTER_JULY, seed=SEED)
    service = PlantService(settled_store, {"simulator": SimulatorAdapter(park, clock)}, clock, settings=SETTINGS)
    await service.load()
    tokens = {
        role: await create_token(settled_store, Role(role), None, AFTER_JULY) for role in ("grid", "admin")
    } | {
        "e01": await create_token(settled_store, Role.ENTERPRISE, "e01", AFTER_JULY),
    }
    client = TestClient(TestServer(make_app(service), host="127.0.0.1"))
    await client.start_server()
    yield client, tokens, settled_store
    await client.close()
    await service.stop()


def auth(token: str) -> dict[str, str]:
    """The Authorization header of a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def total_row(payload: dict) -> dict:
    """The total row of an enterprise statement payload."""
    return next(row for row in payload["rows"] if row["kind"] == "total")
