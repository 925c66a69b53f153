"""``vpp settlement run`` and ``vpp settlement export`` against a SQLite store holding the simulated month."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys

from tests.vpp.settlement.conftest import MONTH, seed_store
from vpp.store import SqliteStore


def _vpp(*args: str) -> subprocess.CompletedProcess:
    """Run the ``vpp`` command in a child process (it configures logging for its own process)."""
    return subprocess.run([sys.executable, "-m", "vpp.cli", *args], check=False, capture_output=True, text=True, timeout=60)


async def _seed(path, month) -> None:
    store = SqliteStore(path)
    await store.open()
    try:
        await seed_store(store, month)
    finally:
        await store.close()


def test_run_prints_a_summary_and_export_parses(tmp_path, simulated_month):
    asyncio.run(_seed(tmp_path / "vpp.sqlite3", simulated_month))
    config = tmp_path / "programme.toml"
    config.write_text("[programme]\nhistory_days = 7\n[payment]\ncapacity_price_cny_per_kw_month = 2.5\n")
    common = ["--data-dir", str(tmp_path), "--month", MONTH, "--config", str(config)]
    first = _vpp("settlement", "run", *common)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert out.splitlines()[0].split()[:3] == ["enterprise", "events", "delivered"]
    assert "e03" in out and "6 record(s) written (0 correction(s)), 0 unchanged" in out
    assert "0 record(s) written (0 correction(s)), 6 unchanged" in _vpp("settlement", "run", *common).stdout
    exported = _vpp("settlement", "export", *common, "--format", "csv", "--enterprise", "e04")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert {r["enterprise_id"] for r in rows} == {"e04"} and rows[-1]["kind"] == "total"
    payloads = json.loads(_vpp("settlement", "export", *common, "--format", "json").stdout)
    assert [p["kind"] for p in payloads].count("enterprise_statement") == 5


def test_export_of_an_unsettled_month_says_what_to_do(tmp_path, simulated_month):
    asyncio.run(_seed(tmp_path / "vpp.sqlite3", simulated_month))
    result = _vpp("settlement", "export", "--data-dir", str(tmp_path), "--month", "2026-06")
    assert result.returncode == 2 and "vpp settlement run --month 2026-06" in result.stderr
