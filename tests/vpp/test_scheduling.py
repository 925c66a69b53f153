"""The fleet schedule drives the simulated park between instructions."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from adapters.simulator import SimulatorAdapter
from market.tariff import default_tariff
from tests.vpp.harness import NOON, SETTINGS, Plant, make_plant
from vpp.aggregator import build_snapshot
from vpp.model import Battery, DispatchInstruction, DispatchStatus, Setpoint
from vpp.scheduling import ScheduleInputs, energy_taken_kwh, fleet_schedule_problem, horizon_start, plan_fleet
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
    problem, columns = fleet_schedule_problem(devices, snapshot, horizon_start(snapshot.ts), default_tariff())
    ids = [devices[i].id for i in columns.battery]
    assert ids and sorted(ids) == sorted(_battery_ids(plant))
    assert problem.intervals == 96 and problem.batteries.size == len(ids)
    by_id = {d.id: d for d in devices}
    np.testing.assert_allclose(problem.batteries.soc0_kwh, [plant.park.soc_kwh(d) for d in ids], atol=0.5)
    np.testing.assert_allclose(problem.batteries.p_discharge_max_kw, [by_id[d].rated_kw for d in ids])
    assert (problem.signals.export_price_cny_per_kwh <= problem.signals.import_price_cny_per_kwh).all()


async def test_the_demo_sized_park_schedules_every_steerable_kind(tmp_path, opened):
    plant = await make_plant(tmp_path, n_enterprises=20, seed=7)
    opened.append(plant.store)
    plan, _ = plan_fleet(plant.service.devices, plant.service.snapshot(), default_tariff())
    assert plan.status == "Optimal" and plan.scheduled["battery"] >= 5
    assert plan.scheduled["pv"] >= 5 and plan.scheduled["shiftable_load"] >= 1 and plan.scheduled["interruptible_load"] >= 5


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
    steered = {d.id for d in plant.spec.devices if str(d.kind) != "ev_charger"}
    assert unassigned and {sp.device_id for sp in unassigned} <= steered, "EV chargers are left to their sessions"
    valley_sent = [
        sp.p_kw for sp in unassigned
        if sp.p_kw is not None and sp.device_id in ids and sp.ts.astimezone(ZONE).hour in VALLEY_HOURS
    ]
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

    monkeypatch.setattr("vpp.service.plan_fleet", broken)
    await plant.run(60, step_s=60)
    await plant.run(60, step_s=60)
    assert plant.service.metrics.schedule_solves.labels(result="error")._value.get() == 1  # retried next quarter hour
    assert plant.service.last_schedule is None and unassigned == []


def test_energy_taken_integrates_only_what_a_load_draws():
    ts = np.array([0.0, 1800.0, 3600.0, 5400.0])
    p_kw = np.array([-100.0, -100.0, 0.0, 50.0])  # drawing 100 kW, stopping, then (nonsense for a load) feeding in
    assert energy_taken_kwh(ts, p_kw) == pytest.approx(50.0 + 25.0 + 0.0)
    assert energy_taken_kwh(ts[:1], p_kw[:1]) == 0.0


async def test_a_re_solve_in_the_kept_model_gives_the_same_optimum_as_a_fresh_build(tmp_path, opened):
    plant = await make_plant(tmp_path, n_enterprises=20, seed=7)
    opened.append(plant.store)
    devices, tariff = plant.service.devices, default_tariff()
    first, scheduler = plan_fleet(devices, plant.service.snapshot(), tariff)
    await plant.run(15 * 60, step_s=60)  # the park moves on a quarter hour
    snapshot = plant.service.snapshot()
    reused, _ = plan_fleet(devices, snapshot, tariff, scheduler=scheduler, previous_start=first.start)
    fresh, _ = plan_fleet(devices, snapshot, tariff)
    assert reused.reused_model and not fresh.reused_model
    assert reused.start == first.start + timedelta(minutes=15)
    assert reused.objective_cny == pytest.approx(fresh.objective_cny, rel=1e-6, abs=1e-3)


async def test_an_export_limit_makes_the_schedule_curtail_pv_at_noon(tmp_path, opened):
    plant = await make_plant(tmp_path, n_enterprises=20, seed=7)
    opened.append(plant.store)
    # PV and batteries only: the park's loads would otherwise take all the PV at noon.
    devices = [d for d in plant.service.devices if str(d.kind) in ("pv", "battery")]
    snapshot = build_snapshot(devices, plant.service.latest_telemetry, plant.clock.now(), SETTINGS.stale_after_s, ZONE)
    tariff = default_tariff()
    pv_ids = {d.id for d in devices if str(d.kind) == "pv"}
    free, _ = plan_fleet(devices, snapshot, tariff, ScheduleInputs(uncontrolled_kw=0.0))
    capped, _ = plan_fleet(devices, snapshot, tariff, ScheduleInputs(uncontrolled_kw=0.0, export_limit_kw=0.0))
    assert capped.grid_limited and not free.grid_limited
    assert not pv_ids & set(free.setpoints_at(snapshot.ts)), "no reason to curtail without a limit"
    curtailed = {d: p for d, p in capped.setpoints_at(snapshot.ts).items() if d in pv_ids}
    assert curtailed, "the park cannot feed back at noon: PV is capped"
    assert all(p >= -1e-6 for p in curtailed.values())


async def test_over_a_day_shiftable_loads_get_their_energy_and_interruptions_keep_their_limits(tmp_path, opened):
    plant, unassigned = await _plant(opened, tmp_path, start=datetime(2026, 6, 30, 16, 0, tzinfo=timezone.utc))  # 00:00 local
    await plant.run(24 * 60 * 60, step_s=120)
    shiftable = [d for d in plant.spec.devices if str(d.kind) == "shiftable_load"]
    for load in shiftable:
        # The schedule's plan covers the daily energy; the park then has nothing left to catch up.
        assert plant.park.shiftable_remaining_kwh(load.id) <= 0.02 * load.energy_per_day_kwh
    steered = {sp.device_id for sp in unassigned}
    assert {d.id for d in shiftable} <= steered, "the schedule steers the shiftable loads"
    for load in (d for d in plant.spec.devices if str(d.kind) == "interruptible_load" and d.id in steered):
        sent = sorted((sp for sp in unassigned if sp.device_id == load.id), key=lambda sp: sp.ts)
        starts = [sp for k, sp in enumerate(sent) if sp.p_kw is not None and (k == 0 or sent[k - 1].p_kw is None)]
        if load.max_events_per_day is not None:
            assert len(starts) <= load.max_events_per_day, f"{load.id}: {len(starts)} interruptions in a day"
        for begin in starts:
            end = next((sp.ts for sp in sent if sp.ts > begin.ts and sp.p_kw is None), plant.clock.now())
            assert (end - begin.ts) <= timedelta(minutes=load.max_interruption_min or 24 * 60) + timedelta(minutes=2)


async def test_pushed_market_prices_reach_the_schedule(tmp_path, opened):
    from market.tariff import PriceSeries
    from vpp.settlement.service import SettlementService

    plant, _ = await _plant(opened, tmp_path)
    start = horizon_start(plant.clock.now())
    starts = np.array([np.datetime64(int((start + timedelta(minutes=15 * k)).timestamp()), "s") for k in range(8)])
    prices = np.array([1000.0, 2000.0, 3000.0, 4000.0, 0.0, 0.0, 0.0, 0.0])
    await SettlementService(plant.store).push_prices(PriceSeries(starts, prices), "spot", "test")
    inputs = await plant.service._schedule_inputs(plant.service.snapshot(), plant.clock.now())
    devices, snapshot = plant.service.devices, plant.service.snapshot()
    problem, _ = fleet_schedule_problem(devices, snapshot, start, default_tariff(), inputs)
    np.testing.assert_allclose(problem.signals.market_price_cny_per_mwh[:8], prices)
    assert (problem.signals.market_price_cny_per_mwh[8:] == 0).all()
    # A second push for the same intervals wins; only the new ledger record is read.
    await SettlementService(plant.store).push_prices(PriceSeries(starts[:1], np.array([5.0])), "spot", "test")
    again = await plant.service._schedule_inputs(snapshot, plant.clock.now())
    assert again.market_price_cny_per_mwh[int(start.timestamp())] == 5.0
