"""The battery schedule drives the simulated park between instructions."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from adapters.simulator import SimulatorAdapter
from market.tariff import default_tariff
from tests.vpp.harness import NOON, SETTINGS, Plant, make_plant
from vpp.model import Battery, DispatchInstruction, DispatchStatus, Setpoint
from vpp.scheduling import battery_schedule_problem, horizon_start, plan_batteries, scheduled_batteries
from vpp.service import PlantService

ZONE = ZoneInfo("Asia/Shanghai")
VALLEY_HOURS = range(0, 8)  # default tariff, local time
PEAK_HOURS = (8, 9, 10, 17, 18, 19, 21)  # 20:00 is the critical peak in July
CRITICAL_PEAK = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)  # 20:00 in Shanghai: batteries discharge


@pytest.fixture
async def opened():
    """Stores opened by a test, closed after it (an open aiosqlite thread keeps the process alive)."""
    stores: list = []
    yield stores
    for store in stores:
        await store.close()


async def _plant(opened: list, tmp_path, start: datetime = NOON, **settings: float) -> tuple[Plant, list[Setpoint]]:
    """The harness park with a service using ``settings``; returns it and a log of unassigned set-points."""
    plant = await make_plant(tmp_path, start=start)
    opened.append(plant.store)
    service = PlantService(
        plant.store, {"simulator": SimulatorAdapter(plant.park, plant.clock)}, plant.clock,
        settings=replace(SETTINGS, **settings),
    )
    await service.load()
    await service.poll_telemetry()
    plant.service = service
    unassigned: list[Setpoint] = []
    append = plant.store.append_setpoints

    async def recording(setpoints):
        unassigned.extend(sp for sp in setpoints if sp.instruction_id is None)
        await append(setpoints)

    plant.store.append_setpoints = recording  # observe what reaches the store, without a new Store method
    return plant, unassigned


def _battery_ids(plant: Plant) -> list[str]:
    return [d.id for d in plant.spec.devices if isinstance(d, Battery)]


async def test_the_problem_holds_the_parks_batteries_with_their_soc(tmp_path, opened):
    plant, _ = await _plant(opened, tmp_path, schedule_interval_s=0)
    devices, snapshot = plant.service.devices, plant.service.snapshot()
    problem = battery_schedule_problem(devices, snapshot, horizon_start(snapshot.ts), default_tariff())
    ids = [devices[i].id for i in scheduled_batteries(devices, snapshot)]
    assert ids and sorted(ids) == sorted(_battery_ids(plant))
    assert problem.intervals == 96 and problem.batteries.size == len(ids)
    by_id = {d.id: d for d in devices}
    np.testing.assert_allclose(problem.batteries.soc0_kwh, [plant.park.soc_kwh(d) for d in ids], atol=0.5)
    np.testing.assert_allclose(problem.batteries.p_discharge_max_kw, [by_id[d].rated_kw for d in ids])
    assert (problem.signals.export_price_cny_per_kwh <= problem.signals.import_price_cny_per_kwh).all()


async def test_the_demo_sized_park_solves_well_under_a_second(tmp_path, opened):
    plant = await make_plant(tmp_path, n_enterprises=20, seed=7)
    opened.append(plant.store)
    plan = plan_batteries(plant.service.devices, plant.service.snapshot(), default_tariff())
    assert plan.status == "Optimal" and len(plan.device_ids) >= 5
    assert plan.solve_time_s < 0.5


async def test_over_a_day_batteries_charge_in_the_valley_and_discharge_at_the_peak(tmp_path, opened):
    plant, unassigned = await _plant(opened, tmp_path)
    ids = _battery_ids(plant)
    bounds = {d.id: (d.soc_min_kwh, d.soc_upper_kwh) for d in plant.spec.devices if isinstance(d, Battery)}
    by_hour: dict[int, list[float]] = {}
    for _ in range(24 * 60):
        await plant.run(60, step_s=60)
        hour = plant.clock.now().astimezone(ZONE).hour
        by_hour.setdefault(hour, []).append(sum(plant.park.power_kw(d) for d in ids))
        for d in ids:
            low, high = bounds[d]
            assert low - 1e-6 <= plant.park.soc_kwh(d) <= high + 1e-6
    valley = np.mean([p for h in VALLEY_HOURS for p in by_hour[h]])
    peak = np.mean([p for h in PEAK_HOURS for p in by_hour[h]])
    assert valley < -10.0, f"batteries should charge in the valley (mean {valley:.1f} kW)"
    assert peak > 10.0, f"batteries should discharge at the peak (mean {peak:.1f} kW)"
    assert unassigned and {sp.device_id for sp in unassigned} <= set(ids)
    valley_sent = [sp.p_kw for sp in unassigned if sp.p_kw is not None and sp.ts.astimezone(ZONE).hour in VALLEY_HOURS]
    assert valley_sent and all(p <= 1e-6 for p in valley_sent)
    solves = plant.service.metrics.schedule_solves.labels(result="optimal")._value.get()
    assert 90 <= solves <= 100  # one per quarter hour


async def test_an_instruction_runs_on_top_and_the_schedule_resumes_after(tmp_path, opened):
    plant, unassigned = await _plant(opened, tmp_path, start=CRITICAL_PEAK)
    await plant.run(60)
    plan = plant.service.last_schedule
    assert plan is not None and unassigned
    start = plant.clock.now()
    instruction = DispatchInstruction(id="i-1", kind="delta", start=start, end=start + timedelta(minutes=5), delta_kw=60.0)
    await plant.service.submit_instruction(instruction)
    await plant.run(3 * 60)
    _, state = await plant.service.instruction_view("i-1")
    assert state.status is DispatchStatus.ACTIVE
    assert state.delivered_kw == pytest.approx(60.0, rel=0.05)
    before = len(unassigned)
    await plant.run(3 * 60)
    _, state = await plant.service.instruction_view("i-1")
    assert state.status is DispatchStatus.COMPLETED
    assert plant.service.last_schedule is not plan, "a new schedule is solved once the instruction ends"
    targets = plant.service.last_schedule.setpoints_at(plant.clock.now())
    assert len(unassigned) > before
    for device_id, p_kw in targets.items():
        assert plant.park.power_kw(device_id) == pytest.approx(p_kw, abs=0.5)


async def test_schedule_disabled_sends_nothing_unassigned(tmp_path, opened):
    plant, unassigned = await _plant(opened, tmp_path, schedule_interval_s=0)
    await plant.run(20 * 60, step_s=60)
    assert plant.service.last_schedule is None and unassigned == []
    assert all(plant.park.power_kw(d) == 0.0 for d in _battery_ids(plant))


async def test_a_failed_solve_is_counted_and_the_service_goes_on(tmp_path, opened, monkeypatch):
    plant, unassigned = await _plant(opened, tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr("vpp.service.plan_batteries", broken)
    await plant.run(60, step_s=60)
    await plant.run(60, step_s=60)
    assert plant.service.metrics.schedule_solves.labels(result="error")._value.get() == 1  # retried next quarter hour
    assert plant.service.last_schedule is None and unassigned == []
