"""Settlement of a simulated month: statements add up to the fen, reruns are idempotent, corrections chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.vpp.settlement.conftest import (
    AFTER_JULY,
    MONTH,
    PlannedEvent,
    completed_state,
    local,
    programme_config,
    seed_store,
)
from vpp.chain import verify_chain
from vpp.errors import InvalidInput
from vpp.model import DispatchInstruction, DispatchState, DispatchStatus, MeterReading
from vpp.settlement import (
    SETTLEMENT_LEDGER,
    SettlementConfigError,
    SettlementService,
    config_from_dict,
    load_config,
)
from vpp.settlement.events import dr_events
from vpp.settlement.meters import net_load_kw, register_at
from vpp.store import SqliteStore


def _total(payload: dict) -> dict:
    return next(row for row in payload["rows"] if row["kind"] == "total")


async def test_month_statements_add_up_to_the_fen(settlement, settled_store):
    result = await settlement.run(MONTH)
    park = result.settlement.park
    assert [e["event_id"] for e in park["events"]] == ["dr-0714", "vf-0716", "dr-0722", "rt-0728"]
    assert {e["programme"] for e in park["events"]} == {"park-dr", "park-dr-real-time"}
    assert [e["direction"] for e in park["events"]][:2] == ["peak_shaving", "valley_filling"]
    enterprises = result.settlement.enterprises
    assert sorted(enterprises) == ["e01", "e02", "e03", "e04", "park"]
    for key in ("payment_fen", "penalty_fen", "capacity_fen", "net_fen"):
        assert sum(_total(p)[key] for p in enterprises.values()) == park["totals"][key]
    for event in park["events"]:  # each event's money goes out to the fen
        rows = [r for p in enterprises.values() for r in p["rows"] if r["event_id"] == event["event_id"]]
        assert sum(r["payment_fen"] for r in rows) == event["payment_fen"]
        assert sum(r["penalty_fen"] for r in rows) == event["penalty_fen"]
        assert all(r["payment_fen"] >= 0 and r["penalty_fen"] >= 0 for r in rows)
        assert sum(r["delivered_kwh"] for r in rows) == pytest.approx(event["delivered_kwh"], abs=0.01)
    # The batteries did the work: e03 and e04 (the battery owners) delivered the most.
    delivered = {eid: _total(p)["delivered_kwh"] for eid, p in enterprises.items()}
    assert max(delivered, key=delivered.get) in ("e03", "e04")
    assert park["totals"]["capacity_fen"] > 0 and park["missing_intervals"] == 0
    records = await settled_store.ledger_records(SETTLEMENT_LEDGER)
    assert len(records) == len(result.written) == 6 and verify_chain(records) == []


async def test_rerun_with_the_same_numbers_writes_nothing(settlement, settled_store):
    first = await settlement.run(MONTH)
    second = await settlement.run(MONTH)
    assert len(first.written) == 6
    assert second.written == [] and second.unchanged == 6
    assert len(await settled_store.ledger_records(SETTLEMENT_LEDGER)) == 6


async def test_changed_data_writes_corrections_pointing_at_the_originals(settlement, settled_store):
    first = await settlement.run(MONTH)
    original = {(r["payload"]["kind"], r["payload"]["enterprise_id"]): r["seq"] for r in first.written}
    late = DispatchInstruction(id="dr-0729", kind="delta", start=local(29, 14), end=local(29, 15), delta_kw=500.0)
    await settled_store.put_instruction(late, completed_state(PlannedEvent(late, 0.0)))
    second = await settlement.run(MONTH)
    assert second.written and len(second.corrections) == len(second.written)
    for record in second.written:
        assert record["corrects"] == original[(record["payload"]["kind"], record["payload"]["enterprise_id"])]
    latest = await settlement.latest(MONTH)
    assert "dr-0729" in [e["event_id"] for e in latest[("park_summary", "")]["payload"]["events"]]
    assert verify_chain(await settled_store.ledger_records(SETTLEMENT_LEDGER)) == []


async def test_missing_meter_intervals_are_reported_not_filled(tmp_path, simulated_month):
    gap = {local(10, 5, 15), local(10, 5, 30), local(10, 5, 45)}
    readings = [r for r in simulated_month.readings if not (r.meter_id == "e01-grid" and r.ts in gap)]
    store = SqliteStore(tmp_path / "gap.sqlite3")
    await store.open()
    try:
        await seed_store(store, simulated_month, readings)
        result = await SettlementService(store, programme_config(), now=lambda: AFTER_JULY).run(MONTH)
    finally:
        await store.close()
    missing = result.settlement.enterprises["e01"]["missing_intervals"]
    assert missing["count"] == 4
    assert missing["ranges"] == [{"start": local(10, 5).isoformat(), "end": local(10, 6).isoformat()}]
    assert result.settlement.enterprises["e02"]["missing_intervals"]["count"] == 0


async def test_open_and_future_months(settlement):
    with pytest.raises(InvalidInput) as not_over:
        await SettlementService(settlement.store, programme_config(), now=lambda: local(20, 0)).run(MONTH)
    assert not_over.value.field == "month"
    provisional, entries = await SettlementService(settlement.store, programme_config(), now=lambda: local(20, 0)).statements(MONTH)
    assert provisional and entries[("park_summary", "")]["record"] is None
    with pytest.raises(InvalidInput):
        await settlement.statements("2027-01")
    with pytest.raises(InvalidInput):
        await settlement.statements("2026-7")


def test_registers_are_differenced_and_interpolated_only_between_close_readings():
    ts = np.array([0.0, 900.0, 1500.0, 1860.0, 3600.0])
    register = np.array([0.0, 10.0, 20.0, 26.0, 50.0])
    at = register_at(ts, register, np.array([0.0, 900.0, 1800.0, 2700.0]), max_gap_s=600.0)
    assert at[:3] == pytest.approx([0.0, 10.0, 25.0]) and np.isnan(at[3])
    start = datetime(2026, 7, 1, tzinfo=UTC)
    readings = [
        MeterReading(meter_id="m", ts=start + timedelta(minutes=15 * k), import_kwh=100.0 + 25.0 * k, export_kwh=5.0 * k)
        for k in (0, 1, 2, 4)
    ]
    load = net_load_kw(readings, start, 4, max_gap_s=300.0)
    assert load[:2] == pytest.approx([80.0, 80.0]) and np.isnan(load[2:]).all()


def test_instructions_become_events_split_at_local_midnight():
    at = datetime(2026, 7, 3, 15, 50, tzinfo=UTC)  # 23:50 local
    target = DispatchInstruction(id="t1", kind="target", start=at, end=at + timedelta(minutes=30), target_kw=-900.0)
    state = DispatchState(instruction_id="t1", status=DispatchStatus.COMPLETED, updated_at=at, baseline_kw=-1200.0)
    events = dr_events([(target, state)], "Asia/Shanghai", "p", "p-rt", frozenset({"iec104"}))
    assert [(e.event.id, str(e.event.window.date), e.event.window.start_interval, e.event.window.end_interval) for e in events] == [
        ("t1@2026-07-03", "2026-07-03", 95, 96), ("t1@2026-07-04", "2026-07-04", 0, 2),  # 00:20 rounds out to 00:30
    ]
    assert {e.event.direction for e in events} == {"peak_shaving"} and events[0].event.requested_kw == 300.0
    down = DispatchInstruction(id="d1", kind="delta", start=at, end=at + timedelta(minutes=5), delta_kw=-50.0, source="iec104")
    pending = DispatchState(instruction_id="d2", status=DispatchStatus.CANCELLED, updated_at=at)
    only = dr_events([(down, state), (down.model_copy(update={"id": "d2"}), pending)], "Asia/Shanghai", "p", "p-rt", frozenset({"iec104"}))
    assert [(e.event.direction, e.event.programme) for e in only] == [("valley_filling", "p-rt")]


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "programme.toml"
    bad.write_text('[payment]\ncap_ratio = "high"\n')
    with pytest.raises(SettlementConfigError) as error:
        load_config(bad)
    assert error.value.key == "payment.cap_ratio" and "'high'" in str(error.value)
    for data, key in (
        ({"baseline": {"method": "guess"}}, "baseline.method"),
        ({"baseline": {"method": "ten_in_ten", "days": 10, "window": 3}}, "baseline.window"),
        ({"payment": {"bands": [{"min_ratio": 0.5}]}}, "payment.bands[0].coefficient"),
        ({"calendar": {"holidays": ["2026-13-01"]}}, "calendar.holidays[0]"),
        ({"programme": {"zone": "Mars/Olympus"}}, "programme.zone"),
        ({"surprise": {}}, "surprise"),
    ):
        with pytest.raises(SettlementConfigError) as error:
            config_from_dict(data)
        assert error.value.key == key
    json_file = tmp_path / "programme.json"
    json_file.write_text('{"baseline": {"method": "pjm_high_4_of_5"}, "payment": {"energy_price_cny_per_kwh": 4.5}}')
    config = load_config(json_file)
    assert type(config.programme.baseline).__name__ == "PjmHighFourOfFive"
    assert config.programme.payment.energy_price_cny_per_kwh == 4.5 and config.digest != load_config().digest
