"""The service loop on the simulated park: instructions executed, delivered, re-allocated, resumed."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta

import pytest

from adapters.simulator import SimulatorAdapter
from tests.redis_support import drop_namespace, redis_url
from tests.vpp.harness import SETTINGS, make_plant
from vpp.aggregator import plant_state
from vpp.service import PlantService
from vpp.store import RedisStore
from vpp.model import DispatchInstruction, DispatchStatus, TelemetrySample


def _sustained_up_kw(service, minutes: int) -> float:
    return next(s["up_kw"] for s in service.plant()["sustained"] if s["duration_min"] == minutes)


def _delta(plant, delta_kw: float, minutes: float = 15, instruction_id: str = "i-1", offset_s: float = 0) -> DispatchInstruction:
    start = plant.clock.now() + timedelta(seconds=offset_s)
    return DispatchInstruction(id=instruction_id, kind="delta", start=start, end=start + timedelta(minutes=minutes), delta_kw=delta_kw)


async def test_a_feasible_reduction_is_delivered_and_devices_released_after(plant):
    delta_kw = round(0.5 * _sustained_up_kw(plant.service, 15), 1)
    assert delta_kw > 50, "the test park should offer upward flexibility at noon"
    await plant.service.submit_instruction(_delta(plant, delta_kw))
    await plant.run(5 * 60)
    instruction, state = await plant.service.instruction_view("i-1")
    assert state.status is DispatchStatus.ACTIVE
    assert state.delivered_kw == pytest.approx(delta_kw, rel=0.05)
    points = await plant.store.dispatch_progress("i-1")
    assert points[-1].measured_kw == pytest.approx(points[-1].requested_kw, abs=0.05 * delta_kw)

    await plant.run(11 * 60)
    _, state = await plant.service.instruction_view("i-1")
    assert state.status is DispatchStatus.COMPLETED
    assert state.delivered_kwh == pytest.approx(state.requested_kwh, rel=0.1)
    assert sum(state.enterprise_delivered_kwh.values()) == pytest.approx(state.delivered_kwh, rel=1e-6)
    last_by_device = {sp.device_id: sp.p_kw for sp in await plant.store.setpoints_for("i-1")}
    assert last_by_device and all(p is None for p in last_by_device.values()), "every device is released at the end"


async def test_the_same_instruction_twice_changes_nothing(plant):
    instruction = _delta(plant, 100.0)
    first, created = await plant.service.submit_instruction(instruction)
    again, created_again = await plant.service.submit_instruction(instruction)
    assert created and not created_again and again == first
    assert len(await plant.store.list_instructions()) == 1


async def test_a_device_that_drops_out_is_excluded_and_the_rest_take_over(plant):
    delta_kw = round(0.4 * _sustained_up_kw(plant.service, 15), 1)
    await plant.service.submit_instruction(_delta(plant, delta_kw))
    await plant.run(60)
    held = {sp.device_id: sp.p_kw for sp in await plant.store.setpoints_for("i-1")}
    # Drop the device carrying the largest share of the reduction.
    baseline = (await plant.service.instruction_view("i-1"))[1].device_baseline_kw
    dropped = max(held, key=lambda d: abs(held[d] - baseline[d]))
    plant.park.set_online(dropped, False)
    stale_from = plant.clock.now() + timedelta(seconds=SETTINGS.stale_after_s)
    await plant.run(3 * 60)
    _, state = await plant.service.instruction_view("i-1")
    assert state.reallocations >= 1
    assert state.delivered_kw == pytest.approx(delta_kw, rel=0.05)
    after_stale = [sp for sp in await plant.store.setpoints_for("i-1") if sp.device_id == dropped and sp.ts > stale_from]
    # Once stale, the dropped device gets at most its release, never a new set-point.
    assert len(after_stale) <= 1 and all(sp.p_kw is None for sp in after_stale)
    snapshot = plant.service.snapshot()
    assert not snapshot.fresh[snapshot.device_ids.index(dropped)]


async def test_an_infeasible_request_reports_its_shortfall(plant):
    huge_kw = 10 * plant.service.plant()["available_up_kw"] + 1000
    await plant.service.submit_instruction(_delta(plant, huge_kw))
    await plant.run(60)
    _, state = await plant.service.instruction_view("i-1")
    assert state.shortfall_kw > 0.5 * huge_kw


async def test_an_active_instruction_resumes_after_a_restart_with_its_baseline(tmp_path):
    plant = await make_plant(tmp_path)
    await plant.service.submit_instruction(_delta(plant, 100.0))
    await plant.run(30)
    _, before = await plant.service.instruction_view("i-1")
    await plant.service.stop()  # persists the active state

    restarted = PlantService(plant.store, {"simulator": SimulatorAdapter(plant.park, plant.clock)}, plant.clock, settings=SETTINGS)
    await restarted.load()
    plant.service = restarted
    await plant.run(10)
    _, after = await restarted.instruction_view("i-1")
    assert after.status is DispatchStatus.ACTIVE
    assert after.device_baseline_kw == before.device_baseline_kw
    assert after.delivered_kwh >= before.delivered_kwh
    await restarted.stop()
    await plant.store.close()


async def test_an_instruction_whose_window_passed_is_cancelled_not_run(plant):
    await plant.service.submit_instruction(_delta(plant, 100.0, minutes=1, offset_s=10))
    plant.clock.advance(3600)  # the service was "down" over the whole window
    await plant.service.control_step()
    _, state = await plant.service.instruction_view("i-1")
    assert state.status is DispatchStatus.CANCELLED
    assert await plant.store.setpoints_for("i-1") == []


async def test_a_newer_instruction_supersedes_the_active_one(plant):
    await plant.service.submit_instruction(_delta(plant, 100.0, instruction_id="first"))
    await plant.run(20)
    await plant.service.submit_instruction(_delta(plant, 50.0, instruction_id="second"))
    await plant.run(4)
    _, first = await plant.service.instruction_view("first")
    _, second = await plant.service.instruction_view("second")
    assert first.status is DispatchStatus.COMPLETED and "superseded by second" in first.message
    assert second.status is DispatchStatus.ACTIVE


class _BrokenAdapter:
    """An adapter whose peer is gone: every call fails."""

    name = "broken"

    def __init__(self) -> None:
        self.connects = 0

    async def connect(self) -> None:
        self.connects += 1
        raise ConnectionError("peer unreachable")

    async def read_telemetry(self) -> list[TelemetrySample]:
        raise ConnectionError("peer unreachable")

    async def write_setpoints(self, setpoints) -> None:
        raise ConnectionError("peer unreachable")

    async def close(self) -> None:
        pass


async def test_a_failing_adapter_is_counted_and_retried_with_backoff_without_stopping_the_others(plant):
    broken = _BrokenAdapter()
    adapters = {"simulator": plant.service.adapters["simulator"], "broken": broken}
    service = PlantService(plant.store, adapters, plant.clock, settings=SETTINGS)
    await service.load()  # first connect attempt fails, a backoff starts
    assert await service.poll_telemetry() > 0, "the simulator adapter keeps delivering"
    assert await service.poll_telemetry() > 0
    assert broken.connects == 1, "no reconnect attempt inside the backoff"
    metrics = service.metrics.render().decode()
    assert 'vpp_adapter_errors_total{adapter="broken",operation="connect"} 1.0' in metrics


async def test_the_service_runs_an_instruction_on_the_redis_store_too(tmp_path):
    namespace = f"test-{uuid.uuid4().hex}"
    await drop_namespace(redis_url(), namespace)  # fails with a clear message when Redis is down
    plant = await make_plant(tmp_path, store=RedisStore(redis_url(), namespace=namespace))
    try:
        delta_kw = round(0.5 * _sustained_up_kw(plant.service, 15), 1)
        await plant.service.submit_instruction(_delta(plant, delta_kw, minutes=3))
        await plant.run(4 * 60)
        instruction, state = await plant.store.get_instruction("i-1")
        assert state.status is DispatchStatus.COMPLETED
        assert state.delivered_kwh == pytest.approx(state.requested_kwh, rel=0.15)
        assert len(await plant.store.dispatch_progress("i-1")) >= 60
    finally:
        await plant.service.stop()
        await plant.store.close()
        await drop_namespace(redis_url(), namespace)


async def test_a_device_the_adapter_refuses_is_not_stored(plant):
    from vpp.errors import InvalidInput
    from vpp.model import Enterprise, PV

    await plant.store.put_enterprise(Enterprise(id="not-in-park", name="Registered but not simulated"))
    with pytest.raises(InvalidInput) as info:
        await plant.service.enrol_device(PV(id="orphan-pv", enterprise_id="not-in-park", rated_kw=10))
    assert info.value.field == "adapter" and "not-in-park" in info.value.message
    assert await plant.store.get_device("orphan-pv") is None


async def test_an_enrolled_device_joins_the_simulated_park_and_reports(plant):
    from vpp.model import PV

    enterprise_id = plant.spec.enterprises[0].id
    assert await plant.service.enrol_device(PV(id="late-pv", enterprise_id=enterprise_id, rated_kw=200))
    await plant.run(4)
    row = next(r for r in plant.service.plant_devices() if r["device_id"] == "late-pv")
    assert row["online"] and row["p_kw"] > 0


async def _limit_every_device(plant, **limits) -> None:
    for device in plant.service.devices:
        await plant.service.enrol_device(device.model_copy(update=limits))


async def test_devices_needing_more_notice_than_given_are_left_alone(plant):
    await _limit_every_device(plant, notice_min=30)
    await plant.service.submit_instruction(_delta(plant, 100.0, instruction_id="short-notice"))
    await plant.run(20)
    assert await plant.store.setpoints_for("short-notice") == []
    _, state = await plant.service.instruction_view("short-notice")
    assert state.shortfall_kw == pytest.approx(100.0, abs=1.0)

    await plant.service.submit_instruction(_delta(plant, 100.0, instruction_id="planned", offset_s=40 * 60))
    await plant.run(41 * 60, step_s=60)
    assert any(sp.p_kw is not None for sp in await plant.store.setpoints_for("planned"))


async def test_a_device_is_released_at_its_longest_interruption_and_others_take_over(plant):
    await _limit_every_device(plant, max_interruption_min=2)
    await plant.service.submit_instruction(_delta(plant, 100.0))
    await plant.run(5 * 60)
    _, state = await plant.service.instruction_view("i-1")
    setpoints = await plant.store.setpoints_for("i-1")
    held = [sp for sp in setpoints if sp.p_kw is not None]
    assert held
    # No device holds a set-point longer than 2 minutes (plus one control step) after it joined.
    assert all((sp.ts - state.device_joined_at[sp.device_id]).total_seconds() <= 2 * 60 + 2 for sp in held)
    first = min(state.device_joined_at, key=state.device_joined_at.get)
    assert any(sp.device_id == first and sp.p_kw is None for sp in setpoints), "the first device was let go"
    assert len(state.device_joined_at) > 1, "others took over"


async def test_a_device_takes_part_in_at_most_its_events_per_day(plant):
    await _limit_every_device(plant, max_events_per_day=1)
    await plant.service.submit_instruction(_delta(plant, 100.0, minutes=2, instruction_id="morning"))
    await plant.run(3 * 60)
    used = {sp.device_id for sp in await plant.store.setpoints_for("morning") if sp.p_kw is not None}
    assert used
    await plant.service.submit_instruction(_delta(plant, 100.0, minutes=2, instruction_id="later"))
    await plant.run(60)
    again = {sp.device_id for sp in await plant.store.setpoints_for("later") if sp.p_kw is not None}
    assert not (used & again), "no device joins a second event the same day"


async def test_cancelling_an_active_instruction_releases_its_devices_and_a_pending_one_never_runs(plant):
    delta_kw = round(0.4 * _sustained_up_kw(plant.service, 15), 1)
    await plant.service.submit_instruction(_delta(plant, delta_kw))
    await plant.service.submit_instruction(_delta(plant, delta_kw, instruction_id="later", offset_s=600))
    await plant.run(60)
    state = await plant.service.cancel_instruction("i-1", "grid cancelled the event")
    assert state.status is DispatchStatus.CANCELLED and state.message == "grid cancelled the event"
    last_by_device = {sp.device_id: sp.p_kw for sp in await plant.store.setpoints_for("i-1")}
    assert last_by_device and all(p is None for p in last_by_device.values()), "every device is released at once"
    pending = await plant.service.cancel_instruction("later", "not needed")
    assert pending.status is DispatchStatus.CANCELLED
    await plant.run(11 * 60)
    assert await plant.store.setpoints_for("later") == [], "a cancelled pending instruction never starts"
    again = await plant.service.cancel_instruction("i-1", "twice")
    assert again.message == "grid cancelled the event", "cancelling again changes nothing"
    _, stored = await plant.store.get_instruction("i-1")
    assert stored.status is DispatchStatus.CANCELLED


class _FlakyWrites:
    """The simulator adapter, except that set-point writes fail while ``failing``."""

    def __init__(self, inner) -> None:
        self.inner, self.failing, self.name = inner, False, inner.name

    async def connect(self) -> None:
        await self.inner.connect()

    async def read_telemetry(self) -> list[TelemetrySample]:
        return await self.inner.read_telemetry()

    async def write_setpoints(self, setpoints) -> None:
        if self.failing:
            raise ConnectionError("peer dropped the write")
        await self.inner.write_setpoints(setpoints)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_release_the_adapter_refused_is_sent_once_it_is_back(plant):
    flaky = _FlakyWrites(plant.service.adapters["simulator"])
    no_schedule = dataclasses.replace(SETTINGS, schedule_interval_s=0.0)  # only the instruction moves devices
    service = PlantService(plant.store, {"simulator": flaky}, plant.clock, settings=no_schedule)
    plant.service = service
    await service.load()
    await service.submit_instruction(_delta(plant, 100.0))
    await plant.run(10)
    held = {sp.device_id for sp in await plant.store.setpoints_for("i-1") if sp.p_kw is not None}
    assert held
    flaky.failing = True
    await service.cancel_instruction("i-1", "grid cancelled")
    assert not [sp for sp in await plant.store.setpoints_for("i-1") if sp.p_kw is None], "nothing was taken, nothing logged"
    await plant.run(4)  # the adapter is still refusing: the releases stay owed
    flaky.failing = False
    await asyncio.sleep(1.1)  # the reconnect backoff after one failure [s of real time]
    await plant.run(4)
    released = {sp.device_id for sp in await plant.store.setpoints_for("i-1") if sp.p_kw is None}
    assert released == held
    assert service._releases_owed == {}


async def test_plant_totals_reused_between_changes_always_equal_a_fresh_computation(plant):
    """``plant()`` keeps its last totals while nothing they depend on changed; every answer must be exact."""
    service = plant.service
    answers = reused = 0

    def check() -> None:
        nonlocal answers, reused
        before = service._plant_answer
        got = service.plant()
        reused += service._plant_answer is before
        fresh = plant_state(service.snapshot())
        fresh["active_instruction"] = service._active.instruction.id if service._active else None
        assert got == fresh
        answers += 1

    for _ in range(3):
        check()
    await plant.run(4)
    check()
    await service.submit_instruction(_delta(plant, 50.0))
    check()
    await service.control_step()
    check()
    for _ in range(60):  # no telemetry: devices turn stale one by one as the clock passes each one's limit
        plant.clock.advance(0.25)
        check()
    await plant.run(2)
    check()
    plant.clock.advance(3600 - 1)  # across a local hour: protected hours change
    await service.poll_telemetry()
    check()
    for _ in range(8):
        plant.clock.advance(0.25)
        check()
    assert 0 < reused < answers  # both paths were taken
