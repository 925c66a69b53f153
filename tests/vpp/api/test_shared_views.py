"""Answers shared between requests (store health, dispatch views, shared reads) stay as fresh as a read per request."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from tests.vpp.api.security_support import start_client
from vpp.api.shared_reads import SharedReads
from vpp.api.views import HEALTH_REUSE_S, DispatchViews, StoreHealth, dispatch_view
from vpp.auth import create_token
from vpp.errors import StoreUnavailable
from vpp.model import DispatchInstruction, Role


class FakeMonotonic:
    """A monotonic clock the test moves [s]."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Gated:
    """An async read that returns how many times it was called, each call held until the test releases it."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        number = self.calls
        self.started.set()
        await self.gate.wait()
        self.gate.clear()
        return number

    async def release(self) -> None:
        self.started.clear()
        self.gate.set()
        await asyncio.sleep(0)


async def _until(predicate) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never met")


# -- SharedReads -----------------------------------------------------------------------------------------------


async def test_callers_arriving_during_a_read_share_the_next_one_not_the_running_one():
    reads, fn = SharedReads(), Gated()
    first = asyncio.ensure_future(reads.read("k", fn))
    await fn.started.wait()
    during_first = [asyncio.ensure_future(reads.read("k", fn)) for _ in range(5)]
    await asyncio.sleep(0)
    assert fn.calls == 1  # nobody else starts a read while one runs
    await fn.release()
    assert await first == 1
    await fn.started.wait()  # the next read starts as soon as the first ends
    during_second = asyncio.ensure_future(reads.read("k", fn))
    await fn.release()
    assert [await f for f in during_first] == [2] * 5  # one read begun after they asked, shared by all five
    await fn.started.wait()
    await fn.release()
    assert await during_second == 3
    assert fn.calls == 3 and len(reads) == 0


async def test_other_keys_do_not_wait_for_each_other():
    reads, slow = SharedReads(), Gated()
    held = asyncio.ensure_future(reads.read("slow", slow))
    await slow.started.wait()

    async def fast() -> str:
        return "fast"

    assert await reads.read("other", fast) == "fast"
    await slow.release()
    assert await held == 1


async def test_an_error_reaches_every_caller_of_that_read_and_the_next_read_runs_anew():
    reads = SharedReads()
    outcomes = iter([StoreUnavailable("store is down"), "back"])

    async def flaky() -> str:
        await asyncio.sleep(0)
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    results = await asyncio.gather(*(reads.read("k", flaky) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert await reads.read("k", flaky) == "back"


async def test_a_caller_that_goes_away_does_not_cancel_the_read_of_the_others():
    reads, fn = SharedReads(), Gated()
    leaving = asyncio.ensure_future(reads.read("k", fn))
    staying = asyncio.ensure_future(reads.read("k", fn))
    await fn.started.wait()
    leaving.cancel()
    await fn.release()
    assert await staying == 1
    assert leaving.cancelled()


# -- StoreHealth -----------------------------------------------------------------------------------------------


@pytest.fixture
def pings(plant, monkeypatch) -> list[bool]:
    """Every ping the plant's store answers, with its answer (the real ping still runs)."""
    answered: list[bool] = []
    ping = plant.store.ping

    async def counted() -> bool:
        answered.append(await ping())
        return answered[-1]

    monkeypatch.setattr(plant.store, "ping", counted)
    return answered


async def test_a_successful_ping_answers_for_the_reuse_time_then_the_store_is_pinged_again(plant, pings):
    clock = FakeMonotonic()
    health = StoreHealth(clock)
    assert await health.ok(plant.store) and await health.ok(plant.store)
    assert pings == [True]
    clock.t += HEALTH_REUSE_S
    assert await health.ok(plant.store)
    assert pings == [True, True]


async def test_a_failed_ping_is_never_reused(plant, pings, monkeypatch):
    health = StoreHealth(FakeMonotonic())

    async def down() -> bool:
        pings.append(False)
        return False

    monkeypatch.setattr(plant.store, "ping", down)
    assert not await health.ok(plant.store)
    assert not await health.ok(plant.store)
    assert pings == [False, False]


async def test_healthz_pings_again_once_a_request_met_an_unavailable_store(plant, pings, monkeypatch):
    admin = await create_token(plant.store, Role.ADMIN, None, datetime.now(UTC))
    client = await start_client(plant)
    try:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/healthz")).status == 200
        assert pings == [True]  # the second check reused the first ping

        async def unavailable(*_args, **_kwargs):
            raise StoreUnavailable("SQLite store is unavailable: disk I/O error")

        monkeypatch.setattr(plant.store, "list_enterprises", unavailable)
        answer = await client.get("/api/v1/enterprises", headers={"Authorization": f"Bearer {admin}"})
        assert answer.status == 503
        down = await client.get("/healthz")
        assert len(pings) == 2  # pinged again instead of vouching for the store from the earlier ping
        assert down.status == 200  # the ping itself still answers: the store file is fine
    finally:
        await client.close()


# -- DispatchViews ---------------------------------------------------------------------------------------------


def _instruction(plant) -> dict:
    start = plant.clock.now()
    return {"id": "view-1", "kind": "delta", "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(), "delta_kw": 100.0}  # fmt: skip


async def _fresh_view(plant, instruction_id: str) -> dict:
    """The dispatch view built from scratch, as the route built it before views were kept."""
    body = dispatch_view(*await plant.service.instruction_view(instruction_id))
    points = await plant.store.dispatch_progress(instruction_id)
    body["progress"] = [
        {"ts": p.ts.isoformat(), "requested_kw": round(p.requested_kw, 3), "measured_kw": round(p.measured_kw, 3)} for p in points
    ]
    return body


@pytest.fixture
def progress_reads(plant, monkeypatch) -> list[str]:
    reads: list[str] = []
    read = plant.store.dispatch_progress

    async def counted(instruction_id: str):
        reads.append(instruction_id)
        return await read(instruction_id)

    monkeypatch.setattr(plant.store, "dispatch_progress", counted)
    return reads


async def test_the_view_of_an_active_instruction_is_built_once_per_control_step_and_equals_a_fresh_one(plant, progress_reads):
    now = datetime.now(UTC)
    grid = {"Authorization": f"Bearer {await create_token(plant.store, Role.GRID, None, now)}"}
    client = await start_client(plant)
    try:
        assert (await client.post("/api/v1/dispatch", json=_instruction(plant), headers=grid)).status == 201
        await plant.run(6)
        first = await client.get("/api/v1/dispatch/view-1", headers=grid)
        again = await client.get("/api/v1/dispatch/view-1", headers=grid)
        assert first.status == again.status == 200
        assert first.headers["Content-Type"] == "application/json; charset=utf-8"
        body = await first.read()
        assert await again.read() == body
        assert len(progress_reads) == 1  # the second answer was the kept one
        assert json.loads(body) == await _fresh_view(plant, "view-1")
        assert json.loads(body)["state"]["status"] == "active"

        await plant.run(2)  # one control step: a new state and one more progress point
        after = json.loads(await (await client.get("/api/v1/dispatch/view-1", headers=grid)).read())
        assert len(progress_reads) == 3  # 2 from _fresh_view and this request: the new state is not served from the old
        assert len(after["progress"]) == len(json.loads(body)["progress"]) + 1
        assert after == await _fresh_view(plant, "view-1")
    finally:
        await client.close()


async def test_a_view_whose_progress_lacks_the_states_step_is_not_kept(plant, progress_reads):
    await plant.service.submit_instruction(DispatchInstruction.model_validate(_instruction(plant)))
    await plant.run(4)
    instruction, state = await plant.service.instruction_view("view-1")
    # The moment between a control step's new state and the store holding that step's progress point:
    ahead = state.model_copy(update={"updated_at": state.updated_at + timedelta(seconds=2)})

    async def view(_: str):
        return instruction, ahead

    views = DispatchViews()
    for _ in range(2):
        body = json.loads((await views.answer(SimpleNamespace(instruction_view=view, store=plant.store), "view-1")).body)
        assert datetime.fromisoformat(body["state"]["updated_at"]) == ahead.updated_at
    assert len(progress_reads) == 2 and len(views) == 0  # read each time: never kept without the state's own point

    async def complete(_: str):
        return instruction, state

    for _ in range(2):
        await views.answer(SimpleNamespace(instruction_view=complete, store=plant.store), "view-1")
    assert len(progress_reads) == 3 and len(views) == 1
