"""Settlement and price endpoints over a real aiohttp server on loopback, the simulated month behind it."""

from __future__ import annotations

import csv
import io

import pytest

from tests.vpp.settlement.conftest import MONTH
from vpp.settlement import PRICES_LEDGER, SETTLEMENT_LEDGER


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def test_enterprise_reads_its_statement_computed_once(api):
    client, tokens, store = api
    answer = await client.get(f"/api/v1/enterprises/e01/settlement?month={MONTH}", headers=_auth(tokens["e01"]))
    assert answer.status == 200
    body = await answer.json()
    assert body["enterprise_id"] == "e01" and not body["provisional"] and body["record"]["corrects"] is None
    assert [r["kind"] for r in body["statement"]["rows"]][-1] == "total"
    again = await (await client.get(f"/api/v1/enterprises/e01/settlement?month={MONTH}", headers=_auth(tokens["e01"]))).json()
    assert again["record"] == body["record"]
    assert len(await store.ledger_records(SETTLEMENT_LEDGER)) == 6


async def test_an_enterprise_learns_nothing_about_another(api):
    client, tokens, _ = api
    other = await client.get(f"/api/v1/enterprises/e02/settlement?month={MONTH}", headers=_auth(tokens["e01"]))
    unknown = await client.get(f"/api/v1/enterprises/nobody/settlement?month={MONTH}", headers=_auth(tokens["e01"]))
    bad_month_other = await client.get("/api/v1/enterprises/e02/settlement?month=July", headers=_auth(tokens["e01"]))
    assert other.status == unknown.status == bad_month_other.status == 403
    assert await other.json() == await unknown.json() == await bad_month_other.json()
    park = await client.get(f"/api/v1/park/settlement?month={MONTH}", headers=_auth(tokens["e01"]))
    assert park.status == 403
    admin_unknown = await client.get(f"/api/v1/enterprises/nobody/settlement?month={MONTH}", headers=_auth(tokens["admin"]))
    assert admin_unknown.status == 404


@pytest.mark.parametrize("month", ["2026-13", "2026-7", "", "July"])
async def test_a_bad_month_is_422_naming_month(api, month):
    client, tokens, _ = api
    answer = await client.get(f"/api/v1/park/settlement?month={month}", headers=_auth(tokens["admin"]))
    assert answer.status == 422
    assert (await answer.json())["error"]["fields"][0]["field"] == "month"


async def test_park_statements_as_json_and_csv_add_up(api):
    client, tokens, _ = api
    body = await (await client.get(f"/api/v1/park/settlement?month={MONTH}", headers=_auth(tokens["admin"]))).json()
    assert [e["enterprise_id"] for e in body["enterprises"]] == ["e01", "e02", "e03", "e04", "park"]
    answer = await client.get(f"/api/v1/park/settlement?month={MONTH}&format=csv", headers=_auth(tokens["admin"]))
    assert answer.status == 200 and answer.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await answer.text())))
    totals = [r for r in rows if r["kind"] == "total"]
    assert len(totals) == 5
    assert sum(int(r["net_fen"]) for r in totals) == body["park"]["statement"]["totals"]["net_fen"]
    assert all(f"{int(r['net_fen']) / 100:.2f}" == r["net_cny"] for r in rows)
    own = await client.get(f"/api/v1/enterprises/e01/settlement?month={MONTH}&format=csv", headers=_auth(tokens["e01"]))
    assert {r["enterprise_id"] for r in csv.DictReader(io.StringIO(await own.text()))} == {"e01"}


async def test_prices_are_pushed_into_the_ledger(api):
    client, tokens, store = api
    prices = [
        {"interval_start": "2026-08-03T08:00:00+08:00", "price_cny_per_mwh": 412.5},
        {"interval_start": "2026-08-03T08:15:00+08:00", "price_cny_per_mwh": 430.0},
    ]
    answer = await client.post("/api/v1/market/prices", json=prices, headers=_auth(tokens["grid"]))
    assert answer.status == 201 and (await answer.json())["intervals"] == 2
    text = "interval_start,price_cny_per_kwh\n2026-08-03T08:30:00+08:00,0.45\n"
    answer = await client.post(
        "/api/v1/market/prices?source=day_ahead", data=text, headers=_auth(tokens["admin"]) | {"Content-Type": "text/csv"}
    )
    assert answer.status == 201
    records = await store.ledger_records(PRICES_LEDGER)
    assert [r["payload"]["source"] for r in records] == ["spot", "day_ahead"]
    assert records[1]["payload"]["intervals"] == [["2026-08-03T00:30:00+00:00", 450.0]]
    assert (await client.post("/api/v1/market/prices", json=prices, headers=_auth(tokens["e01"]))).status == 403


async def test_a_bad_price_upload_is_422_naming_line_and_column(api):
    client, tokens, store = api
    text = "interval_start,price_cny_per_mwh\n2026-08-03T08:00:00+08:00,400\n2026-08-03T08:15:00+08:00,cheap\n"
    answer = await client.post("/api/v1/market/prices", data=text, headers=_auth(tokens["grid"]) | {"Content-Type": "text/csv"})
    assert answer.status == 422
    field = (await answer.json())["error"]["fields"][0]
    assert field["field"] == "csv.line[3].price_cny_per_mwh" and "line 3" in field["message"]
    bad_json = [{"interval_start": "2026-08-03T08:07:00+08:00", "price_cny_per_mwh": 1.0}]
    answer = await client.post("/api/v1/market/prices", json=bad_json, headers=_auth(tokens["grid"]))
    assert answer.status == 422 and (await answer.json())["error"]["fields"][0]["field"] == "[0].interval_start"
    assert await store.ledger_records(PRICES_LEDGER) == []
