"""A simulated February on a small park: meter readings every 15 min, battery telemetry every minute."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import cache
from zoneinfo import ZoneInfo

from simulators.park import ParkSpec, build_park
from simulators.sim import SimulatedPark
from vpp.model import Battery, MeterReading, Setpoint, TelemetrySample
from vpp.store import Store

MONTH = "2026-02"
START = datetime(2026, 1, 31, 16, tzinfo=timezone.utc)  # 2026-02-01 00:00 in Shanghai
DAYS = 28


def _battery_setpoint(battery: Battery, local_hour: int) -> float | None:
    """Charge at midday, discharge in the evening, else idle [kW]."""
    if 10 <= local_hour < 14:
        return -0.3 * battery.rated_kw
    if 18 <= local_hour < 21:
        return 0.3 * battery.rated_kw
    return None


@cache
def simulated_month() -> tuple[ParkSpec, tuple[TelemetrySample, ...], tuple[MeterReading, ...]]:
    """Drive :class:`SimulatedPark` directly over the month (no service loop)."""
    spec = build_park(seed=3, n_enterprises=4)
    t = START - timedelta(minutes=15)
    park = SimulatedPark(spec, start=t, seed=3)
    batteries = [d for d in spec.devices if isinstance(d, Battery)]
    zone = ZoneInfo(spec.timezone)
    telemetry: list[TelemetrySample] = []
    readings: list[MeterReading] = []
    end = START + timedelta(days=DAYS, minutes=15)
    while t <= end:
        park.step(t)
        if t.minute % 15 == 0:
            readings += park.meter_readings(t)
            hour = t.astimezone(zone).hour
            park.apply_setpoints([Setpoint(device_id=b.id, ts=t, p_kw=_battery_setpoint(b, hour)) for b in batteries])
        telemetry += [
            TelemetrySample(
                device_id=b.id, ts=t, p_kw=park.power_kw(b.id) + 0.0, p_min_kw=-b.rated_kw, p_max_kw=b.rated_kw,
                soc_kwh=max(park.soc_kwh(b.id), 0.0),
            )
            for b in batteries
        ]  # fmt: skip
        t += timedelta(minutes=1)
    return spec, tuple(telemetry), tuple(readings)


async def seed_store(store: Store, leave_out: tuple[MeterReading, ...] = ()) -> ParkSpec:
    """Write the park and its simulated month into ``store``, without the readings in ``leave_out``."""
    spec, telemetry, readings = simulated_month()
    if leave_out:
        readings = tuple(r for r in readings if r not in leave_out)
    for enterprise in spec.enterprises:
        await store.put_enterprise(enterprise)
    for meter in spec.meters:
        await store.put_meter(meter)
    for device in spec.devices:
        await store.put_device(device)
    await store.append_telemetry(list(telemetry))
    await store.append_meter_readings(list(readings))
    return spec
