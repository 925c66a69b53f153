"""A simulated month attributed end to end: balance, reconciliation, idempotent reruns, corrections, tamper detection."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from tests.vpp.carbon.carbon_month_data import MONTH, seed_store, simulated_month
from vpp.carbon.ledger import LEDGER, MONTH as MONTH_KIND, latest_view, run_month
from vpp.store import SqliteStore


@pytest.fixture
async def store(tmp_path):
    async with SqliteStore(tmp_path / "vpp.sqlite3") as store:
        await seed_store(store)
        yield store


async def test_month_balances_per_enterprise_and_interval_and_reconciles(store):
    report = await run_month(store, MONTH)
    result, a = report.result, report.result.attribution
    assert a.consumption_kwh.shape == (5, 28 * 96)
    np.testing.assert_allclose(a.green_kwh + a.grid_kwh, a.consumption_kwh, atol=1e-9)
    assert not result.inputs.missing.any() and result.inputs.issues == ()
    assert a.shared_green_kwh.sum() > 0 and a.own_pv_kwh.sum() > 0  # no owner of a battery has PV surplus here
    view = await latest_view(store, MONTH)
    recon = view[MONTH_KIND]["reconciliation"]
    assert recon["reconciled"] and abs(recon["consumption_gap_kwh"]) < 1e-6 and abs(recon["generation_gap_kwh"]) < 1e-6
    metered = recon["import_kwh"] - recon["export_kwh"] + recon["generation_kwh"] + recon["battery_discharge_kwh"] - recon["battery_charge_kwh"]
    assert recon["metered_consumption_kwh"] == pytest.approx(metered, rel=1e-9)
    assert report.written == 29 and len(view["days"]) == 28
    day_total = sum(d["enterprises"]["e01"]["consumption_kwh"] for d in view["days"].values())
    assert day_total == pytest.approx(view[MONTH_KIND]["enterprises"]["e01"]["consumption_kwh"], abs=1e-3)


async def test_rerun_writes_nothing_and_a_late_reading_writes_corrections(store, tmp_path):
    _, _, readings = simulated_month()
    late = [r for r in readings if r.meter_id == "e01-grid"][-300]  # a reading inside the month, arriving late
    with sqlite3.connect(tmp_path / "vpp.sqlite3") as db:
        db.execute("DELETE FROM meter_readings WHERE meter_id = 'e01-grid' AND ts_us = ?", (int(late.ts.timestamp() * 1e6),))
    first = await run_month(store, MONTH)
    gaps = [i for i in first.result.inputs.issues if i.kind == "missing"]
    assert [(i.source, i.intervals) for i in gaps] == [("e01-grid", 2)]
    assert first.result.inputs.missing.sum() == 2
    assert (await run_month(store, MONTH)).written == 0
    before = await store.ledger_records(LEDGER)
    await store.append_meter_readings([late])
    report = await run_month(store, MONTH)
    new = (await store.ledger_records(LEDGER))[len(before):]
    assert report.written == len(new) >= 2 and report.corrections == len(new)
    assert all(r["corrects"] < len(before) for r in new)
    assert {before[r["corrects"]]["payload"]["kind"] for r in new} == {"carbon.day", "carbon.month"}
    view = await latest_view(store, MONTH)
    assert view[MONTH_KIND]["issue_count"] == 0 and view[MONTH_KIND]["seq"] == new[-1]["seq"]


def _verify(data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vpp.cli", "ledger", "verify", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


async def test_ledger_verify_is_intact_then_finds_a_tampered_carbon_record(store, tmp_path):
    await run_month(store, MONTH)
    await store.close()
    result = _verify(tmp_path)
    assert result.returncode == 0 and "carbon: 29 records, chain intact" in result.stdout
    with sqlite3.connect(tmp_path / "vpp.sqlite3") as db:
        record = json.loads(db.execute("SELECT record FROM ledger WHERE name='carbon' AND seq=3").fetchone()[0])
        record["payload"]["enterprises"]["e01"]["grid_kwh"] -= 100.0
        db.execute("UPDATE ledger SET record=? WHERE name='carbon' AND seq=3", (json.dumps(record),))
    result = _verify(tmp_path)
    assert result.returncode == 1 and "carbon: record 3: altered" in result.stdout
    await store.open()
