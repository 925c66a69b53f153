"""The Store contract (vpp/store/base.py), run against SQLite and Redis by the ``store`` fixture."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpp.errors import Conflict, NotFound, StoreUnavailable
from vpp.model import (
    PV,
    ApiToken,
    Battery,
    DispatchInstruction,
    DispatchProgress,
    DispatchState,
    DispatchStatus,
    Enterprise,
    EvCharger,
    InstructionKind,
    InterruptibleLoad,
    MeterReading,
    MeteringPoint,
    Role,
    Setpoint,
    ShiftableLoad,
    TelemetrySample,
)
from vpp.store import RedisStore, SqliteStore, Store, open_store

StoreFactory = Callable[[], Store]
"""The ``store_factory`` fixture (conftest.py): unopened stores sharing one data set."""

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    """T0 plus some seconds."""
    return T0 + timedelta(seconds=seconds)


def sample(device_id: str, ts: datetime, p_kw: float = 1.0) -> TelemetrySample:
    return TelemetrySample(device_id=device_id, ts=ts, p_kw=p_kw, p_min_kw=-10.0, p_max_kw=10.0, soc_kwh=5.0)


def instruction(iid: str, start: datetime, delta_kw: float = 100.0) -> DispatchInstruction:
    return DispatchInstruction(id=iid, kind=InstructionKind.DELTA, start=start, end=start + timedelta(hours=1), delta_kw=delta_kw)


def state(iid: str, status: DispatchStatus = DispatchStatus.PENDING, **extra: object) -> DispatchState:
    return DispatchState(instruction_id=iid, status=status, updated_at=T0, **extra)


def devices_of_every_kind(enterprise_id: str = "ent-a") -> list:
    """One device of each of the five kinds, with non-default fields set so round-trips are meaningful."""
    return [
        Battery(
            id="bat-1", enterprise_id=enterprise_id, rated_kw=500, capacity_kwh=1000, soc_min_kwh=100,
            soc_max_kwh=900, protected_hours=[{"start_hour": 8, "end_hour": 10}], ramp_kw_per_s=50.5,
        ),
        PV(id="pv-1", enterprise_id=enterprise_id, rated_kw=300, tilt_deg=25, azimuth_deg=170, shared=True),
        InterruptibleLoad(
            id="il-1", enterprise_id=enterprise_id, rated_kw=800, max_curtail_kw=400, max_interruption_min=120,
            notice_min=30, max_events_per_day=2, marginal_cost_cny_per_kwh=0.8,
        ),
        ShiftableLoad(
            id="sl-1", enterprise_id=enterprise_id, rated_kw=200, energy_per_day_kwh=1200, window_start_hour=6,
            window_end_hour=22,
        ),
        EvCharger(id="ev-1", enterprise_id=enterprise_id, rated_kw=120, ports=4, bidirectional=True, adapter="ocpp"),
    ]


def token(n: int, role: Role = Role.ADMIN, enterprise_id: str | None = None, **extra: object) -> ApiToken:
    return ApiToken(token_sha256=f"{n:064x}", role=role, enterprise_id=enterprise_id, created_at=T0, **extra)


# ------------------------------------------------------------------ lifecycle --


async def test_ping_is_true_when_open_and_close_is_idempotent(store_factory: StoreFactory) -> None:
    store = store_factory()
    await store.open()
    assert await store.ping() is True
    await store.close()
    await store.close()
    assert await store.ping() is False


async def test_async_context_manager_opens_and_closes(store_factory: StoreFactory) -> None:
    async with store_factory() as store:
        await store.put_enterprise(Enterprise(id="e1", name="One"))
        assert await store.ping()
    assert await store.ping() is False


async def test_use_before_open_is_a_clear_error(store_factory: StoreFactory) -> None:
    with pytest.raises(RuntimeError, match="open"):
        await store_factory().get_enterprise("e1")


# ----------------------------------------------------------------------- park --


async def test_enterprises_round_trip_replace_and_order(store: Store) -> None:
    await store.put_enterprise(Enterprise(id="e2", name="Two", region="North"))
    await store.put_enterprise(Enterprise(id="e1", name="One"))
    await store.put_enterprise(Enterprise(id="e1", name="One, renamed"))

    assert await store.get_enterprise("e2") == Enterprise(id="e2", name="Two", region="North")
    assert await store.get_enterprise("nope") is None
    assert [e.name for e in await store.list_enterprises()] == ["One, renamed", "Two"]


async def test_meters_round_trip_filtered_and_ordered(store: Store) -> None:
    meters = [
        MeteringPoint(id="m3", enterprise_id="e1", purpose="generation"),
        MeteringPoint(id="m1", enterprise_id="e2"),
        MeteringPoint(id="m2", enterprise_id="e1"),
    ]
    for meter in meters:
        await store.put_meter(meter)

    assert await store.list_meters() == sorted(meters, key=lambda m: m.id)
    assert [m.id for m in await store.list_meters("e1")] == ["m2", "m3"]
    assert await store.list_meters("e9") == []

    await store.put_meter(MeteringPoint(id="m2", enterprise_id="e2"))  # replaced, moved
    assert [m.id for m in await store.list_meters("e1")] == ["m3"]
    assert [m.id for m in await store.list_meters("e2")] == ["m1", "m2"]


async def test_devices_of_every_kind_round_trip(store: Store) -> None:
    devices = devices_of_every_kind()
    for device in devices:
        assert await store.put_device(device) is True

    for device in devices:
        stored = await store.get_device(device.id)
        assert type(stored) is type(device)
        assert stored == device
    assert await store.get_device("nope") is None
    assert await store.list_devices() == sorted(devices, key=lambda d: d.id)
    assert await store.list_devices("ent-a") == sorted(devices, key=lambda d: d.id)
    assert await store.list_devices("ent-b") == []


async def test_put_device_returns_true_then_false_and_replaces(store: Store) -> None:
    pv = PV(id="pv-1", enterprise_id="e1", rated_kw=100)
    assert await store.put_device(pv) is True
    bigger = pv.model_copy(update={"rated_kw": 150.0})
    assert await store.put_device(bigger) is False
    assert await store.get_device("pv-1") == bigger
    assert await store.list_devices("e1") == [bigger]


async def test_device_id_under_another_enterprise_is_a_conflict(store: Store) -> None:
    mine = PV(id="pv-1", enterprise_id="e1", rated_kw=100)
    await store.put_device(mine)

    with pytest.raises(Conflict) as raised:
        await store.put_device(PV(id="pv-1", enterprise_id="e2", rated_kw=999))
    assert "e1" not in str(raised.value)  # the other enterprise learns nothing about the owner
    assert await store.get_device("pv-1") == mine
    assert await store.list_devices("e2") == []


# ------------------------------------------------------------------ telemetry --


async def test_telemetry_round_trip_and_latest_per_device(store: Store) -> None:
    a1, a2, b1 = sample("a", at(1), 1.0), sample("a", at(2), 2.0), sample("b", at(1), -3.0)
    await store.append_telemetry([a1, b1, a2])

    assert await store.latest_telemetry() == {"a": a2, "b": b1}
    assert await store.telemetry_history("a", at(0), at(10)) == [a1, a2]


async def test_latest_telemetry_only_moves_forward(store: Store) -> None:
    new, late = sample("a", at(10), 10.0), sample("a", at(5), 5.0)
    await store.append_telemetry([new])
    await store.append_telemetry([late])

    assert (await store.latest_telemetry())["a"] == new
    assert await store.telemetry_history("a", at(0), at(60)) == [late, new]  # the late one is kept in history


async def test_latest_telemetry_within_one_batch_is_the_newest(store: Store) -> None:
    samples = [sample("a", at(3)), sample("a", at(7)), sample("a", at(1))]
    await store.append_telemetry(samples)
    assert (await store.latest_telemetry())["a"] == samples[1]


async def test_telemetry_history_is_half_open_and_per_device(store: Store) -> None:
    us = timedelta(microseconds=1)
    samples = [sample("a", at(s)) for s in (4, 0, 3, 1, 2)]
    edge = [sample("a", at(3) - us), sample("b", at(2))]
    await store.append_telemetry(samples + edge)

    got = await store.telemetry_history("a", at(1), at(3))
    assert [s.ts for s in got] == [at(1), at(2), at(3) - us]
    assert await store.telemetry_history("a", at(3), at(3)) == []
    assert await store.telemetry_history("zzz", at(0), at(9)) == []


async def test_repeated_instant_keeps_the_first_sample(store: Store) -> None:
    first, again = sample("a", at(1), 1.0), sample("a", at(1), 99.0)
    await store.append_telemetry([first])
    await store.append_telemetry([again])

    assert await store.telemetry_history("a", at(0), at(2)) == [first]
    assert (await store.latest_telemetry())["a"] == first


async def test_empty_batches_are_no_ops(store: Store) -> None:
    await store.append_telemetry([])
    await store.append_meter_readings([])
    await store.append_dispatch_progress([])
    await store.append_setpoints([])
    assert await store.latest_telemetry() == {}


async def test_naive_range_bounds_are_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone"):
        await store.telemetry_history("a", datetime(2026, 1, 1), at(1))


async def test_large_telemetry_batch(store: Store) -> None:
    samples = [sample(f"d{i % 50}", at(i // 50)) for i in range(5_000)]
    await store.append_telemetry(samples)
    latest = await store.latest_telemetry()
    assert len(latest) == 50 and all(s.ts == at(99) for s in latest.values())
    assert len(await store.telemetry_history("d7", T0, at(100))) == 100


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 20), st.integers(-100, 100)), max_size=12),
        min_size=1,
        max_size=4,
    )
)
async def test_latest_is_the_newest_sample_of_any_batching(store: Store, batches: list[list[tuple[str, int, int]]]) -> None:
    # One store serves every example: fresh device ids keep the examples apart.
    run = uuid.uuid4().hex[:8]
    sent = [[sample(f"{run}-{d}", at(t), float(p)) for d, t, p in batch] for batch in batches]
    for batch in sent:
        await store.append_telemetry(batch)

    expected: dict[str, TelemetrySample] = {}
    for s in (s for batch in sent for s in batch):
        if s.device_id not in expected or s.ts > expected[s.device_id].ts:  # the first of equal instants wins
            expected[s.device_id] = s
    latest = {k: v for k, v in (await store.latest_telemetry()).items() if k.startswith(run)}
    assert latest == expected


# --------------------------------------------------------------------- meters --


async def test_meter_readings_half_open_and_ordered(store: Store) -> None:
    readings = [MeterReading(meter_id="m1", ts=at(900 * k), import_kwh=10.0 * k, export_kwh=k) for k in (3, 0, 2, 1)]
    other = MeterReading(meter_id="m2", ts=at(900), import_kwh=1, export_kwh=0)
    await store.append_meter_readings(readings + [other])

    got = await store.meter_readings("m1", at(0), at(2700))
    assert got == sorted((r for r in readings if r.ts < at(2700)), key=lambda r: r.ts)
    assert await store.meter_readings("m2", at(0), at(901)) == [other]


# ------------------------------------------------------------------- dispatch --


async def test_put_instruction_then_get(store: Store) -> None:
    ins, st0 = instruction("i1", at(60)), state("i1", baseline_kw=-1200.0)
    assert await store.put_instruction(ins, st0) == (ins, True)
    assert await store.get_instruction("i1") == (ins, st0)
    assert await store.get_instruction("nope") is None


async def test_put_instruction_is_idempotent(store: Store) -> None:
    first = instruction("i1", at(60), delta_kw=100)
    await store.put_instruction(first, state("i1"))
    await store.put_dispatch_state(state("i1", DispatchStatus.ACTIVE, devices_dispatched=3))

    resent = instruction("i1", at(120), delta_kw=999)
    stored, created = await store.put_instruction(resent, state("i1"))

    assert (stored, created) == (first, False)
    assert await store.get_instruction("i1") == (first, state("i1", DispatchStatus.ACTIVE, devices_dispatched=3))
    assert len(await store.list_instructions()) == 1


async def test_concurrent_duplicates_create_exactly_once(store: Store) -> None:
    # The same instruction arriving on two channels at once, and writes interleaving with it.
    copies = [instruction("i1", at(60), delta_kw=float(k)) for k in range(10)]
    results = await asyncio.gather(
        *(store.put_instruction(c, state("i1")) for c in copies),
        *(store.append_telemetry([sample(f"d{k}", at(k))]) for k in range(10)),
    )

    outcomes = results[:10]
    assert sum(created for _, created in outcomes) == 1
    winner = next(stored for stored, created in outcomes if created)
    assert all(stored == winner for stored, _ in outcomes)
    assert await store.get_instruction("i1") == (winner, state("i1"))
    assert len(await store.latest_telemetry()) == 10


async def test_put_instruction_rejects_a_state_of_another_instruction(store: Store) -> None:
    with pytest.raises(ValueError, match="i2"):
        await store.put_instruction(instruction("i1", T0), state("i2"))
    assert await store.get_instruction("i1") is None


async def test_put_dispatch_state_replaces_and_unknown_id_is_not_found(store: Store) -> None:
    await store.put_instruction(instruction("i1", T0), state("i1"))
    done = state("i1", DispatchStatus.COMPLETED, delivered_kwh=42.5, enterprise_delivered_kwh={"e1": 40.0, "e2": 2.5})
    await store.put_dispatch_state(done)
    assert (await store.get_instruction("i1"))[1] == done

    with pytest.raises(NotFound, match="ghost"):
        await store.put_dispatch_state(state("ghost", DispatchStatus.ACTIVE))
    assert await store.get_instruction("ghost") is None


async def test_list_instructions_ordered_by_start_then_id_and_filtered(store: Store) -> None:
    for iid, start in [("c", at(60)), ("b", at(0)), ("a", at(60)), ("d", at(30))]:
        await store.put_instruction(instruction(iid, start), state(iid))
    await store.put_dispatch_state(state("a", DispatchStatus.ACTIVE))
    await store.put_dispatch_state(state("d", DispatchStatus.COMPLETED))

    assert [i.id for i, _ in await store.list_instructions()] == ["b", "d", "a", "c"]
    live = await store.list_instructions([DispatchStatus.PENDING, DispatchStatus.ACTIVE])
    assert [(i.id, s.status) for i, s in live] == [
        ("b", DispatchStatus.PENDING),
        ("a", DispatchStatus.ACTIVE),
        ("c", DispatchStatus.PENDING),
    ]
    assert [i.id for i, _ in await store.list_instructions([DispatchStatus.COMPLETED])] == ["d"]
    assert await store.list_instructions([DispatchStatus.CANCELLED]) == []
    assert await store.list_instructions([]) == []

    await store.put_dispatch_state(state("a", DispatchStatus.CANCELLED))  # leaves ACTIVE
    assert await store.list_instructions([DispatchStatus.ACTIVE]) == []
    assert [i.id for i, _ in await store.list_instructions([DispatchStatus.CANCELLED])] == ["a"]


async def test_dispatch_progress_ordered_by_time_per_instruction(store: Store) -> None:
    points = [DispatchProgress(instruction_id="i1", ts=at(s), requested_kw=-500, measured_kw=-480 + s) for s in (8, 0, 4)]
    await store.append_dispatch_progress(points + [DispatchProgress(instruction_id="i2", ts=at(1), requested_kw=0, measured_kw=0)])

    assert await store.dispatch_progress("i1") == sorted(points, key=lambda p: p.ts)
    assert await store.dispatch_progress("nope") == []


async def test_setpoints_in_the_order_sent_per_instruction(store: Store) -> None:
    first = [Setpoint(device_id=d, p_kw=p, ts=at(5), instruction_id="i1") for d, p in [("z", 5.0), ("a", None)]]
    stray = Setpoint(device_id="x", p_kw=1.0, ts=at(0))
    second = [Setpoint(device_id="m", p_kw=-2.0, ts=at(1), instruction_id="i1")]  # earlier ts, sent later
    await store.append_setpoints(first + [stray, Setpoint(device_id="y", p_kw=0.0, ts=at(5), instruction_id="i2")])
    await store.append_setpoints(second)

    assert await store.setpoints_for("i1") == first + second
    assert [s.device_id for s in await store.setpoints_for("i2")] == ["y"]
    assert await store.setpoints_for("nope") == []


# ----------------------------------------------------------------------- auth --


async def test_tokens_round_trip_and_replace(store: Store) -> None:
    ent = token(1, Role.ENTERPRISE, "e1", label="ops laptop")
    await store.put_token(ent)
    await store.put_token(token(2, Role.GRID))

    assert await store.get_token(ent.token_sha256) == ent
    assert await store.get_token(f"{3:064x}") is None
    revoked = ent.model_copy(update={"revoked": True})
    await store.put_token(revoked)
    assert await store.get_token(ent.token_sha256) == revoked


# ---------------------------------------------------------------- persistence --


async def test_everything_survives_close_and_reopen(store_factory: StoreFactory) -> None:
    devices = devices_of_every_kind("e1")
    ins, st1 = instruction("i1", at(60)), state("i1", DispatchStatus.ACTIVE, requested_kw=-300.0)
    async with store_factory() as store:
        await store.put_enterprise(Enterprise(id="e1", name="One"))
        await store.put_meter(MeteringPoint(id="m1", enterprise_id="e1"))
        for device in devices:
            await store.put_device(device)
        await store.append_telemetry([sample("bat-1", at(1)), sample("bat-1", at(2))])
        await store.append_meter_readings([MeterReading(meter_id="m1", ts=T0, import_kwh=1, export_kwh=2)])
        await store.put_instruction(ins, state("i1"))
        await store.put_dispatch_state(st1)
        await store.append_dispatch_progress([DispatchProgress(instruction_id="i1", ts=T0, requested_kw=1, measured_kw=2)])
        await store.append_setpoints([Setpoint(device_id="bat-1", p_kw=3.0, ts=T0, instruction_id="i1")])
        await store.put_token(token(7))

    async with store_factory() as again:
        assert [e.id for e in await again.list_enterprises()] == ["e1"]
        assert [m.id for m in await again.list_meters("e1")] == ["m1"]
        assert await again.list_devices("e1") == sorted(devices, key=lambda d: d.id)
        assert await again.put_device(devices[0]) is False
        assert (await again.latest_telemetry())["bat-1"].ts == at(2)
        assert len(await again.telemetry_history("bat-1", T0, at(3))) == 2
        assert len(await again.meter_readings("m1", T0, at(1))) == 1
        assert await again.get_instruction("i1") == (ins, st1)
        assert await again.put_instruction(instruction("i1", T0), state("i1")) == (ins, False)
        assert [i.id for i, _ in await again.list_instructions([DispatchStatus.ACTIVE])] == ["i1"]
        assert len(await again.dispatch_progress("i1")) == 1
        assert len(await again.setpoints_for("i1")) == 1
        assert await again.get_token(f"{7:064x}") == token(7)


# ------------------------------------------------------------- backend edges --


async def test_redis_down_raises_store_unavailable_and_ping_is_false() -> None:
    store = RedisStore("redis://:secret@127.0.0.1:1/0", namespace="down")
    try:
        with pytest.raises(StoreUnavailable, match="127.0.0.1:1"):
            await store.open()
        with pytest.raises(StoreUnavailable) as raised:
            await store.put_enterprise(Enterprise(id="e1", name="One"))
        assert "secret" not in str(raised.value)
        assert await store.ping() is False
    finally:
        await store.close()


async def test_sqlite_refuses_a_newer_schema(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "vpp.sqlite3"
    async with SqliteStore(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    db.close()
    with pytest.raises(StoreUnavailable, match="99"):
        await SqliteStore(path).open()


def test_open_store_dispatches_by_url_without_connecting(tmp_path: pathlib.Path) -> None:
    default = open_store(None, tmp_path)
    assert isinstance(default, SqliteStore) and default.path == tmp_path / "vpp.sqlite3"
    assert open_store("sqlite:", tmp_path).path == tmp_path / "vpp.sqlite3"
    assert open_store("sqlite:///var/lib/vpp/x.db", tmp_path).path == pathlib.Path("/var/lib/vpp/x.db")
    assert open_store("sqlite:data/x.db", tmp_path).path == tmp_path / "data" / "x.db"
    assert not (tmp_path / "vpp.sqlite3").exists()  # nothing opened

    down = open_store("redis://127.0.0.1:1/0?namespace=park7", tmp_path)  # a dead server: building must not connect
    assert isinstance(down, RedisStore) and down.namespace == "park7" and down.url == "redis://127.0.0.1:1/0"
    assert open_store("redis://127.0.0.1:6379/0", tmp_path).namespace == "vpp"

    with pytest.raises(ValueError, match="postgres://db/vpp"):
        open_store("postgres://db/vpp", tmp_path)


# -- ledgers -------------------------------------------------------------------


async def test_ledger_records_chain_in_order_and_verify(store):
    from vpp.chain import GENESIS_HASH, verify_chain

    first = await store.append_ledger("settlement", [{"enterprise": "e1", "fen": 1234}, {"enterprise": "e2", "fen": 5}])
    second = await store.append_ledger("settlement", [{"enterprise": "e1", "fen": 1200}], corrects=[0])
    assert [r["seq"] for r in first + second] == [0, 1, 2]
    assert first[0]["prev_hash"] == GENESIS_HASH and second[0]["prev_hash"] == first[1]["hash"]
    assert second[0]["corrects"] == 0
    stored = await store.ledger_records("settlement")
    assert stored == first + second
    assert verify_chain(stored) == []
    assert await store.ledger_records("settlement", start_seq=1, limit=1) == [first[1]]
    assert await store.ledger_records("carbon") == []
    await store.append_ledger("carbon", [{"interval": "2026-07-01T00:00:00Z", "green_kwh": 0.1 + 0.2}])
    assert await store.ledger_names() == ["carbon", "settlement"]
    # Floats survive the round trip exactly, so the hash still verifies.
    assert (await store.ledger_records("carbon"))[0]["payload"]["green_kwh"] == 0.1 + 0.2


async def test_ledger_refuses_a_correction_of_nothing_and_writes_nothing(store):
    await store.append_ledger("l", [{"a": 1}])
    with pytest.raises(ValueError, match="must name an earlier record"):
        await store.append_ledger("l", [{"a": 2}, {"a": 3}], corrects=[None, 7])
    assert len(await store.ledger_records("l")) == 1


async def test_concurrent_ledger_appends_never_fork_the_chain(store_factory):
    import asyncio

    from vpp.chain import verify_chain

    writers = [store_factory() for _ in range(4)]
    for writer in writers:
        await writer.open()
    try:
        await asyncio.gather(*(w.append_ledger("busy", [{"writer": i, "n": n}]) for i, w in enumerate(writers) for n in range(10)))
        records = await writers[0].ledger_records("busy")
        assert len(records) == 40 and verify_chain(records) == []
    finally:
        for writer in writers:
            await writer.close()
