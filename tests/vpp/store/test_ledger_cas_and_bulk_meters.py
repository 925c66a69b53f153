"""Store contract, both backends: compare-and-append on a ledger, and many meters' readings in one query."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.vpp.store.conftest import StoreFactory
from vpp.chain import GENESIS_HASH, verify_chain
from vpp.model import MeterReading
from vpp.store import Store

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -------------------------------------------------------- compare-and-append --


async def test_append_if_appends_on_the_expected_head_and_refuses_a_moved_one(store: Store) -> None:
    first = await store.append_ledger_if("statements", [{"n": 0}, {"n": 1}], None)
    assert first is not None and [r["seq"] for r in first] == [0, 1]
    assert first[0]["prev_hash"] == GENESIS_HASH
    # The caller read an empty ledger, but it is not empty any more: nothing written.
    assert await store.append_ledger_if("statements", [{"n": "late"}], None) is None
    assert await store.append_ledger_if("statements", [{"n": "late"}], GENESIS_HASH) is None
    # A stale head (record 0 instead of 1) is refused too.
    assert await store.append_ledger_if("statements", [{"n": "stale"}], first[0]["hash"]) is None
    second = await store.append_ledger_if("statements", [{"n": 2}], first[1]["hash"], corrects=[0])
    assert second is not None and second[0]["seq"] == 2 and second[0]["corrects"] == 0
    stored = await store.ledger_records("statements")
    assert stored == first + second and verify_chain(stored) == []
    assert "statements" in await store.ledger_names()


async def test_append_if_on_an_empty_ledger_accepts_the_genesis_hash(store: Store) -> None:
    written = await store.append_ledger_if("fresh", [{"a": 1}], GENESIS_HASH)
    assert written is not None and (await store.ledger_records("fresh")) == written


async def test_append_if_with_nothing_to_append_only_checks(store: Store) -> None:
    assert await store.append_ledger_if("quiet", [], None) == []
    assert await store.ledger_names() == []  # an empty append does not create the ledger
    await store.append_ledger("quiet", [{"a": 1}])
    assert await store.append_ledger_if("quiet", [], None) is None


async def test_append_if_refuses_a_bad_correction_and_writes_nothing(store: Store) -> None:
    head = (await store.append_ledger("l", [{"a": 1}]))[-1]["hash"]
    with pytest.raises(ValueError, match="must name an earlier record"):
        await store.append_ledger_if("l", [{"a": 2}], head, corrects=[5])
    assert len(await store.ledger_records("l")) == 1


async def test_concurrent_compare_and_appends_on_one_head_let_exactly_one_through(store_factory: StoreFactory) -> None:
    writers = [store_factory() for _ in range(4)]
    for writer in writers:
        await writer.open()
    try:
        head = (await writers[0].append_ledger("race", [{"setup": True}]))[-1]["hash"]
        results = await asyncio.gather(
            *(w.append_ledger_if("race", [{"writer": i, "k": k} for k in range(3)], head) for i, w in enumerate(writers))
        )
        won = [r for r in results if r is not None]
        assert len(won) == 1 and len(won[0]) == 3
        records = await writers[1].ledger_records("race")
        assert len(records) == 4 and verify_chain(records) == [] and records[1:] == won[0]
    finally:
        for writer in writers:
            await writer.close()


async def test_a_large_batch_is_appended_atomically(store: Store) -> None:
    payloads = [{"i": i} for i in range(2500)]  # more than one RPUSH chunk in the Redis script
    written = await store.append_ledger_if("big", payloads, None)
    assert written is not None and len(written) == 2500
    records = await store.ledger_records("big")
    assert len(records) == 2500 and verify_chain(records) == []


# ----------------------------------------------------------- meters in bulk --


async def test_meter_readings_many_returns_every_meter_half_open_and_ordered(store: Store) -> None:
    readings = [
        MeterReading(meter_id=meter, ts=at(900 * k), import_kwh=10.0 * k + n, export_kwh=float(k))
        for n, meter in enumerate(("m1", "m2", "m:3"))
        for k in (4, 0, 2, 1, 3)
    ]
    await store.append_meter_readings(readings)
    got = await store.meter_readings_many(["m2", "m1", "m:3", "nobody"], at(900), at(3600))
    assert set(got) == {"m1", "m2", "m:3", "nobody"} and got["nobody"] == []
    for meter in ("m1", "m2", "m:3"):
        assert got[meter] == await store.meter_readings(meter, at(900), at(3600))
        assert [r.ts for r in got[meter]] == [at(900), at(1800), at(2700)]
    assert await store.meter_readings_many([], at(0), at(3600)) == {}


async def test_meter_readings_many_over_many_meters(store: Store) -> None:
    meters = [f"e{n:03d}-grid" for n in range(120)]
    await store.append_meter_readings(
        [MeterReading(meter_id=m, ts=at(900 * k), import_kwh=float(k), export_kwh=0.0) for m in meters for k in range(8)]
    )
    got = await store.meter_readings_many(meters, at(0), at(900 * 8))
    assert list(got) == meters and all(len(got[m]) == 8 for m in meters)
    assert got[meters[77]][5].import_kwh == 5.0
