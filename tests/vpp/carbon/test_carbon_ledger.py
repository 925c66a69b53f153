"""A simulated month attributed end to end on both store backends: balance, reconciliation to the meters,
idempotent reruns, corrections, tamper detection by ``vpp ledger verify``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.vpp.carbon.carbon_month_data import MONTH, seed_store, simulated_month
from tests.vpp.carbon.conftest import Backend
from vpp.carbon.ledger import LEDGER, latest_view, run_month
from vpp.carbon.ledger import MONTH as MONTH_KIND


async def test_month_balances_per_enterprise_and_interval_and_reconciles(any_store):
    await seed_store(any_store)
    report = await run_month(any_store, MONTH)
    result, a = report.result, report.result.attribution
    assert a.consumption_kwh.shape == (5, 28 * 96)
    np.testing.assert_allclose(a.green_kwh + a.grid_kwh, a.consumption_kwh, atol=1e-9)
    assert not result.inputs.missing.any() and result.inputs.issues == ()
    assert a.shared_green_kwh.sum() > 0 and a.own_pv_kwh.sum() > 0  # no owner of a battery has PV surplus here
    # The attribution's flows give back every grid meter's import - export, interval by interval.
    inputs = result.inputs
    park = result.park
    assert park.reconciled and np.abs(park.meter_gap_kwh).max() < 1e-6
    assert park.metered_import_kwh == pytest.approx(inputs.import_kwh.sum(), rel=1e-12)
    assert park.metered_import_kwh - park.metered_export_kwh == pytest.approx(park.grid_import_kwh - park.exported_kwh, rel=1e-9)
    view = await latest_view(any_store, MONTH)
    recon = view[MONTH_KIND]["reconciliation"]
    assert recon["reconciled"] and abs(recon["consumption_gap_kwh"]) < 1e-6 and abs(recon["generation_gap_kwh"]) < 1e-6
    assert abs(recon["net_import_gap_kwh"]) < 1e-6
    metered = recon["import_kwh"] - recon["export_kwh"] + recon["generation_kwh"] + recon["battery_discharge_kwh"] - recon["battery_charge_kwh"]
    assert recon["metered_consumption_kwh"] == pytest.approx(metered, rel=1e-9)
    assert report.written == 29 and len(view["days"]) == 28
    day_total = sum(d["enterprises"]["e01"]["consumption_kwh"] for d in view["days"].values())
    assert day_total == pytest.approx(view[MONTH_KIND]["enterprises"]["e01"]["consumption_kwh"], abs=1e-3)
    # Park figures are the sums of the enterprises' (same per-interval factors).
    rows = view[MONTH_KIND]["enterprises"]
    for name in ("consumption_kwh", "location_based_kg", "exported_green_kwh", "grid_import_kwh"):
        assert sum(r[name] for r in rows.values()) == pytest.approx(view[MONTH_KIND]["park"][name], abs=1e-3)


async def test_rerun_writes_nothing_and_a_late_reading_writes_corrections(any_store):
    _, _, readings = simulated_month()
    late = [r for r in readings if r.meter_id == "e01-grid"][-300]  # a reading inside the month, arriving late
    await seed_store(any_store, leave_out=(late,))
    first = await run_month(any_store, MONTH)
    gaps = [i for i in first.result.inputs.issues if i.kind == "missing"]
    assert [(i.source, i.intervals) for i in gaps] == [("e01-grid", 2)]
    assert first.result.inputs.missing.sum() == 2
    assert (await run_month(any_store, MONTH)).written == 0
    before = await any_store.ledger_records(LEDGER)
    await any_store.append_meter_readings([late])
    report = await run_month(any_store, MONTH)
    new = (await any_store.ledger_records(LEDGER))[len(before):]
    assert report.written == len(new) >= 2 and report.corrections == len(new)
    assert all(r["corrects"] < len(before) for r in new)
    assert {before[r["corrects"]]["payload"]["kind"] for r in new} == {"carbon.day", "carbon.month"}
    view = await latest_view(any_store, MONTH)
    assert view[MONTH_KIND]["issue_count"] == 0 and view[MONTH_KIND]["seq"] == new[-1]["seq"]


def _verify(backend: Backend) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vpp.cli", "ledger", "verify", "--store", backend.url, "--data-dir", str(backend.data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


async def test_ledger_verify_is_intact_then_finds_a_tampered_carbon_record(backend, any_store):
    await seed_store(any_store)
    await run_month(any_store, MONTH)
    result = _verify(backend)
    assert result.returncode == 0 and "carbon: 29 records, chain intact" in result.stdout, result.stdout + result.stderr

    def lower_grid(record: dict) -> None:
        record["payload"]["enterprises"]["e01"]["grid_kwh"] -= 100.0

    await backend.tamper_ledger(LEDGER, 3, lower_grid)
    result = _verify(backend)
    assert result.returncode == 1 and "carbon: record 3: altered" in result.stdout, result.stdout + result.stderr
