"""Spot prices pushed through the API, or loaded from CSV by the CLI, pay the events when the programme says so."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta

import pytest

from market import load_price_csv_rows
from tests.vpp.settlement.conftest import (
    AFTER_JULY,
    MONTH,
    auth,
    local,
    programme_config,
    seed_store,
)
from vpp.settlement import PRICES_LEDGER, SettlementService, config_from_dict
from vpp.store import SqliteStore

SPOT_CONFIG = "[programme]\nhistory_days = 7\nuse_spot_prices = true\n"


def _quarters(first, count: int) -> list:
    return [first + timedelta(minutes=15 * k) for k in range(count)]


def _events(park: dict) -> dict[str, dict]:
    return {e["event_id"]: e for e in park["events"]}


async def test_pushed_prices_pay_the_events_they_cover(api, tmp_path):
    client, tokens, store = api
    (tmp_path / "programme.toml").write_text(SPOT_CONFIG)  # the routes read the file named by the fixture's env
    # July at 500 CNY/MWh as CSV, then dr-0722's hour (15:00-16:00 local) at 1200 and 1400 as JSON: the latest upload wins.
    july = _quarters(local(1, 0), 31 * 96)
    text = "interval_start,price_cny_per_mwh\n" + "".join(f"{t.isoformat()},500\n" for t in july)
    answer = await client.post("/api/v1/market/prices", data=text, headers=auth(tokens["grid"]) | {"Content-Type": "text/csv"})
    assert answer.status == 201 and (await answer.json())["intervals"] == 31 * 96
    hour = [{"interval_start": t.isoformat(), "price_cny_per_mwh": p} for t, p in zip(_quarters(local(22, 15), 4), (1200, 1200, 1400, 1400))]
    assert (await client.post("/api/v1/market/prices?source=day_ahead", json=hour, headers=auth(tokens["admin"]))).status == 201
    assert len(await store.ledger_records(PRICES_LEDGER)) == 2

    body = await (await client.get(f"/api/v1/park/settlement?month={MONTH}", headers=auth(tokens["admin"]))).json()
    events = _events(body["park"]["statement"])
    assert events["dr-0722"]["price_cny_per_kwh"] == pytest.approx(1.3)  # mean of the four intervals / 1000
    assert events["vf-0716"]["price_cny_per_kwh"] == pytest.approx(0.5)
    # Energy payments are proportional to the price: against the programme's 3 CNY/kWh without spot prices.
    fixed = _events((await SettlementService(store, programme_config(), now=lambda: AFTER_JULY).compute(MONTH)).park)
    assert fixed["dr-0722"]["price_cny_per_kwh"] is None and fixed["dr-0722"]["payment_fen"] > 0
    for event_id, price in (("dr-0722", 1.3), ("vf-0716", 0.5)):
        assert events[event_id]["payment_fen"] == pytest.approx(fixed[event_id]["payment_fen"] * price / 3.0, abs=1)


async def test_an_event_not_fully_priced_keeps_the_programme_price(settled_store):
    service = SettlementService(settled_store, config_from_dict({"programme": {"history_days": 7, "use_spot_prices": True}}),
                                now=lambda: AFTER_JULY)
    first_three = _quarters(local(22, 15), 3)  # dr-0722 has four intervals
    series = load_price_csv_rows(["interval_start,price_cny_per_kwh"] + [f"{t.isoformat()},9.9" for t in first_three])
    await service.push_prices(series, "spot", "test")
    events = _events((await service.compute(MONTH)).park)
    assert events["dr-0722"]["price_cny_per_kwh"] is None
    assert len(await service.prices()) == 3


def _vpp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vpp.cli", *args], check=False, capture_output=True, text=True, timeout=60)


def test_prices_loaded_from_csv_by_the_cli_feed_the_settlement_run(tmp_path, simulated_month):
    async def seed() -> None:
        async with SqliteStore(tmp_path / "vpp.sqlite3") as store:
            await seed_store(store, simulated_month)

    asyncio.run(seed())
    prices = tmp_path / "spot.csv"
    rows = [f"{t.isoformat()},{0.8 if k % 2 else 0.6}" for k, t in enumerate(_quarters(local(16, 2), 4))]
    prices.write_text("interval_start,price_cny_per_kwh,comment\n" + "".join(f"{r},x\n" for r in rows))
    loaded = _vpp("settlement", "prices", "--data-dir", str(tmp_path), "--file", str(prices))
    assert loaded.returncode == 0, loaded.stderr
    assert "4 spot price(s)" in loaded.stdout and "record 0" in loaded.stdout
    config = tmp_path / "programme.toml"
    config.write_text(SPOT_CONFIG)
    common = ["--data-dir", str(tmp_path), "--month", MONTH, "--config", str(config)]
    assert _vpp("settlement", "run", *common).returncode == 0
    payloads = json.loads(_vpp("settlement", "export", *common, "--format", "json").stdout)
    park = next(p for p in payloads if p["kind"] == "park_summary")
    assert _events(park)["vf-0716"]["price_cny_per_kwh"] == pytest.approx(0.7)  # (0.6 + 0.8) / 2
    assert _events(park)["dr-0722"]["price_cny_per_kwh"] is None


def test_a_bad_price_file_names_the_line(tmp_path):
    prices = tmp_path / "bad.csv"
    prices.write_text("interval_start,price_cny_per_mwh\n2026-07-16T02:00:00+08:00,400\n2026-07-16T02:07:00+08:00,410\n")
    result = _vpp("settlement", "prices", "--data-dir", str(tmp_path), "--file", str(prices))
    assert result.returncode == 2 and "line 3" in result.stderr
    missing = _vpp("settlement", "prices", "--data-dir", str(tmp_path), "--file", str(tmp_path / "none.csv"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
