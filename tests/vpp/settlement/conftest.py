"""A simulated month of meter data for the settlement tests, generated once per session.

``SimulatedPark`` is driven directly at 15-minute steps from 2026-06-24 to
2026-08-01 (local), its batteries discharging or charging in the windows of
a few dispatch instructions, which are stored as completed with their state.
No service loop runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from simulators.park import ParkSpec, build_park
from simulators.sim import SimulatedPark
from vpp.model import (
    Battery,
    DispatchInstruction,
    DispatchState,
    DispatchStatus,
    MeterReading,
    Setpoint,
)
from vpp.settlement import SettlementConfig, SettlementService, config_from_dict
from vpp.store import SqliteStore

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
    """An instruction and the battery power the simulated park holds in its window."""

    instruction: DispatchInstruction
    battery_fraction: float  # of rating, + = discharge (generator convention)


EVENTS = (
    # Peak shaving, weekday afternoons, day-ahead.
    PlannedEvent(DispatchInstruction(id="dr-0714", kind="delta", start=local(14, 14), end=local(14, 16), delta_kw=1000.0), 0.9),
    PlannedEvent(DispatchInstruction(id="dr-0722", kind="delta", start=local(22, 15), end=local(22, 16), delta_kw=1200.0), 0.9),
    # Valley filling at night (load raised).
    PlannedEvent(DispatchInstruction(id="vf-0716", kind="delta", start=local(16, 2), end=local(16, 3), delta_kw=-600.0), -0.6),
    # Real-time (IEC 104) peak shaving with short notice.
    PlannedEvent(
        DispatchInstruction(id="rt-0728", kind="delta", start=local(28, 10), end=local(28, 10, 45), delta_kw=800.0, source="iec104"),
        0.8,
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
        requested_kw=event.instruction.delta_kw,
        message="window ended",
    )


async def seed_store(store: SqliteStore, month: SimulatedMonth, readings: list[MeterReading] | None = None) -> None:
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


@pytest.fixture
async def settled_store(tmp_path, simulated_month):
    """An opened SQLite store seeded with the simulated month."""
    store = SqliteStore(tmp_path / "vpp.sqlite3")
    await store.open()
    await seed_store(store, simulated_month)
    yield store
    await store.close()


@pytest.fixture
def settlement(settled_store) -> SettlementService:
    """Settlement over the seeded store, its clock after July."""
    return SettlementService(settled_store, programme_config(), now=lambda: AFTER_JULY)
