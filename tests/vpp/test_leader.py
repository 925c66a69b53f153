"""The dispatch leader lock, its fencing token and the fenced writes, against the machine's real Redis.

A "paused" leader is one whose lease ran out while it did nothing; these tests
then make it write, as it would when it resumed, and check the store refuses.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import Adapter
from tests.redis_support import drop_namespace, redis_url
from tests.vpp.harness import make_plant
from vpp.leader import Fence, FencedOut, LeaderElection
from vpp.model import DispatchInstruction, DispatchStatus, Setpoint
from vpp.service import PlantService, ServiceSettings
from vpp.store import RedisStore
from vpp.store.redis import _pack
from vpp.store.redis_cluster import RedisCluster, setpoint_id

T0 = datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)


@pytest.fixture
async def cluster():
    namespace = f"test-leader-{uuid.uuid4().hex}"
    await drop_namespace(redis_url(), namespace)
    store = RedisStore(redis_url(), namespace=namespace)
    await store.open()
    try:
        yield RedisCluster(store)
    finally:
        await store.close()
        await drop_namespace(redis_url(), namespace)


async def _instruction(store: RedisStore, instruction_id: str = "i1") -> None:
    from vpp.service import store_instruction

    instruction = DispatchInstruction(id=instruction_id, kind="delta", start=T0, end=T0 + timedelta(minutes=15), delta_kw=10.0)
    await store_instruction(store, instruction, T0)


def _sp(device: str, seconds: float, instruction_id: str | None = "i1", p_kw: float | None = 1.0) -> Setpoint:
    return Setpoint(device_id=device, p_kw=p_kw, ts=T0 + timedelta(seconds=seconds), instruction_id=instruction_id)


async def test_one_holder_at_a_time_and_each_new_term_gets_a_larger_token(cluster):
    first = await cluster.acquire("a", 0.3)
    assert first > 0
    assert await cluster.acquire("b", 0.3) == 0  # held by a
    assert await cluster.acquire("a", 0.3) == first  # a asking again keeps its token
    assert await cluster.leader() == (first, "a")
    await asyncio.sleep(0.45)  # a's lease runs out without renewal
    second = await cluster.acquire("b", 5.0)
    assert second > first
    assert not await cluster.renew("a", first, 5.0)
    assert await cluster.leader() == (second, "b")


async def test_a_stale_token_writes_no_setpoint_state_or_live_field(cluster):
    await _instruction(cluster.store)
    old = await cluster.acquire("a", 0.3)
    assert await cluster.append_setpoints_fenced([_sp("d1", 0)], old) == 1
    await asyncio.sleep(0.45)
    new = await cluster.acquire("b", 5.0)
    # a resumes after its pause and tries to go on: every write is refused and nothing lands.
    assert await cluster.append_setpoints_fenced([_sp("d1", 2), _sp("d2", 2)], old) == -1
    _, state = await cluster.store.get_instruction("i1")
    assert not await cluster.put_dispatch_state_fenced(state.model_copy(update={"status": DispatchStatus.COMPLETED}), old)
    assert not await cluster.publish_live({"active_instruction": "i1"}, old)
    assert [s.ts for s in await cluster.store.setpoints_for("i1")] == [T0]
    assert (await cluster.store.get_instruction("i1"))[1].status is DispatchStatus.PENDING
    assert await cluster.live() == {}
    # The new leader's writes go through, stamped with its token.
    assert await cluster.append_setpoints_fenced([_sp("d1", 2)], new) == 1
    assert await cluster.put_dispatch_state_fenced(state.model_copy(update={"status": DispatchStatus.ACTIVE}), new)
    tokens = await cluster.setpoint_tokens("i1")
    assert tokens == {setpoint_id(_sp("d1", 0)): old, setpoint_id(_sp("d1", 2)): new}


async def test_a_repeated_setpoint_write_is_logged_once(cluster):
    token = await cluster.acquire("a", 5.0)
    batch = [_sp("d1", 0), _sp("d2", 0, p_kw=None), _sp("d3", 0, instruction_id=None)]
    assert await cluster.append_setpoints_fenced(batch, token) == 3
    assert await cluster.append_setpoints_fenced(batch, token) == 0  # e.g. retried after a lost answer
    assert len(await cluster.store.setpoints_for("i1")) == 2
    assert len(await cluster.store.setpoints_for(None)) == 1


setpoint_batches = st.lists(
    st.lists(
        st.tuples(st.sampled_from(["d1", "d2", "d3"]), st.integers(0, 3), st.sampled_from(["i1", "i2", None]),
                  st.one_of(st.none(), st.floats(-50, 50))),
        max_size=12,
    ),
    min_size=1, max_size=4,
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=setpoint_batches)
async def test_batches_log_each_setpoint_id_once_in_the_order_first_sent(cluster, batches):
    """Against a plain model: the first set-point per id is logged, in batch order per instruction; repeats are not."""
    # The first example takes the lock; later ones (same namespace, lease still running) write under its token.
    token = await cluster.acquire(f"h-{uuid.uuid4().hex}", 30.0) or (await cluster.leader())[0]
    logged: dict[str | None, list[Setpoint]] = {"i1": [], "i2": [], None: []}
    before = {key: len(await cluster.store.setpoints_for(key)) for key in logged}
    seen = {setpoint_id(sp) for key in logged for sp in await cluster.store.setpoints_for(key)}
    for batch in batches:
        setpoints = [_sp(device, seconds, instruction_id, p_kw) for device, seconds, instruction_id, p_kw in batch]
        new = 0
        for sp in setpoints:
            if setpoint_id(sp) not in seen:
                seen.add(setpoint_id(sp))
                logged[sp.instruction_id].append(sp)
                new += 1
        assert await cluster.append_setpoints_fenced(setpoints, token) == new
    for key, expected in logged.items():
        assert (await cluster.store.setpoints_for(key))[before[key] :] == expected
        raw = await cluster.store._client.lrange(cluster.store._k.setpoints(key), before[key], -1)
        assert raw == [_pack(sp) for sp in expected]  # byte for byte what the store's own packing gives


async def test_release_hands_the_lock_over_at_once(cluster):
    token = await cluster.acquire("a", 60.0)
    assert await cluster.release("a", token)
    assert not await cluster.release("a", token)
    assert await cluster.acquire("b", 60.0) > token  # no need to wait out a's 60 s lease


async def test_the_election_steps_down_when_another_takes_over_and_its_fence_refuses(cluster):
    events: list[tuple[str, object]] = []

    async def elected(token: int) -> None:
        events.append(("elected", token))

    async def deposed(reason: str) -> None:
        events.append(("deposed", reason))

    election = LeaderElection(cluster, "a", 0.6, elected, deposed)
    stop = asyncio.Event()
    await election._turn()
    token = election.token
    assert events == [("elected", token)] and election.leading
    fence = Fence(cluster, election, token)
    await fence.setpoints([_sp("d1", 0)])
    # a stalls (no renewal) past its lease; b takes over.
    await asyncio.sleep(0.8)
    assert not election.leading
    with pytest.raises(FencedOut):
        await fence.setpoints([_sp("d1", 2)])  # refused on a's own clock already
    taken = await cluster.acquire("b", 5.0)
    election._lease_until += 3600  # even a clock that missed the pause is caught by the store
    with pytest.raises(FencedOut):
        await fence.setpoints([_sp("d1", 4)])
    assert [s.ts for s in await cluster.store.setpoints_for("i1")] == [T0]
    runner = asyncio.create_task(election.run(stop))
    for _ in range(50):
        if events[-1][0] == "deposed":
            break
        await asyncio.sleep(0.05)
    stop.set()
    await runner
    assert events[-1][0] == "deposed" and election.token is None
    assert await cluster.leader() == (taken, "b")


class _Recording(Adapter):
    """The simulator adapter, recording every set-point it is handed."""

    name = "simulator"

    def __init__(self, inner: Adapter) -> None:
        self.inner = inner
        self.written: list[Setpoint] = []

    async def connect(self) -> None:
        await self.inner.connect()

    async def read_telemetry(self):
        return await self.inner.read_telemetry()

    async def write_setpoints(self, setpoints) -> None:
        self.written += setpoints
        await self.inner.write_setpoints(setpoints)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_fenced_service_hands_no_setpoint_to_its_adapter_once_fenced_out(tmp_path, cluster):
    """The whole path: a leader's PlantService whose token went stale sends nothing more to its devices."""
    plant = await make_plant(tmp_path, store=cluster.store)
    adapter = _Recording(plant.service.adapters["simulator"])
    try:
        election = LeaderElection(cluster, "a", 60.0, _nothing, _nothing)
        await election._turn()
        settings = ServiceSettings(shared_store=True, state_persist_interval_s=0.0, schedule_interval_s=0.0)
        service = PlantService(
            cluster.store, {"simulator": adapter}, plant.clock, settings=settings, fence=Fence(cluster, election, election.token)
        )
        await service.load()
        await _instruction(cluster.store, "shed")  # stored by an API replica: the leader takes it from the store
        plant.clock.advance(2)
        await service.poll_telemetry()
        await service.control_step()
        _, state = await cluster.store.get_instruction("shed")
        assert state.status is DispatchStatus.ACTIVE and state.baseline_kw is not None
        sent = await cluster.store.setpoints_for("shed")
        assert sent and adapter.written == sent  # logged under the token, then handed to the adapter
        assert set((await cluster.setpoint_tokens("shed")).values()) == {election.token}
        assert (await cluster.live())["active_instruction"] == "shed"
        # Another process takes the lock (as after a pause past the lease); a's lease looks valid to a.
        assert await cluster.release("a", election.token)
        await cluster.acquire("b", 60.0)
        with pytest.raises(FencedOut):
            await service._finish(service._active, DispatchStatus.COMPLETED, "window ended")
        assert adapter.written == sent  # not one release reached the devices
        assert len(await cluster.store.setpoints_for("shed")) == len(sent)
        assert (await cluster.store.get_instruction("shed"))[1].status is DispatchStatus.ACTIVE  # a did not finish it
        await service.stop(close_adapters=False)
    finally:
        await plant.service.stop()


async def _nothing(*_: object) -> None:
    return None
