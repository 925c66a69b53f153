"""`vpp ledger verify` on a real SQLite store: intact chains pass, any tampering is named."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from vpp.store import SqliteStore


def _verify(data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vpp.cli", "ledger", "verify", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
async def ledger_dir(tmp_path):
    async with SqliteStore(tmp_path / "vpp.sqlite3") as store:
        await store.append_ledger("settlement", [{"enterprise": "e1", "fen": 100 * i} for i in range(5)])
        await store.append_ledger("carbon", [{"interval": i, "green_kwh": 0.5 * i} for i in range(3)])
    return tmp_path


def test_intact_ledgers_verify(ledger_dir):
    result = _verify(ledger_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "settlement: 5 records, chain intact" in result.stdout and "carbon: 3 records, chain intact" in result.stdout


def _tamper(data_dir, sql: str, params=()) -> None:
    with sqlite3.connect(data_dir / "vpp.sqlite3") as db:
        db.execute(sql, params)


def test_an_altered_record_is_named(ledger_dir):
    with sqlite3.connect(ledger_dir / "vpp.sqlite3") as db:
        record = json.loads(db.execute("SELECT record FROM ledger WHERE name='settlement' AND seq=2").fetchone()[0])
        record["payload"]["fen"] = 999_999
        db.execute("UPDATE ledger SET record=? WHERE name='settlement' AND seq=2", (json.dumps(record),))
    result = _verify(ledger_dir)
    assert result.returncode == 1
    assert "settlement: record 2: altered" in result.stdout
    assert "carbon: 3 records, chain intact" in result.stdout


def test_a_removed_record_is_named(ledger_dir):
    _tamper(ledger_dir, "DELETE FROM ledger WHERE name='settlement' AND seq=1")
    result = _verify(ledger_dir)
    assert result.returncode == 1 and "settlement: record 1: removed" in result.stdout


def test_swapped_records_are_found(ledger_dir):
    with sqlite3.connect(ledger_dir / "vpp.sqlite3") as db:
        one, three = (db.execute("SELECT record FROM ledger WHERE name='settlement' AND seq=?", (s,)).fetchone()[0] for s in (1, 3))
        db.execute("UPDATE ledger SET record=? WHERE name='settlement' AND seq=1", (three,))
        db.execute("UPDATE ledger SET record=? WHERE name='settlement' AND seq=3", (one,))
    result = _verify(ledger_dir)
    assert result.returncode == 1 and "settlement: record" in result.stdout and "chain intact" not in result.stdout.split("carbon")[0]
