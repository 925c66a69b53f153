"""Carbon API: role isolation, JSON and CSV export, bad month, certificates issued and retired once."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.vpp.carbon.carbon_month_data import MONTH, seed_store
from vpp.api.app import make_app
from vpp.auth import create_token
from vpp.carbon.ledger import run_month
from vpp.carbon.registry_ledger import load_registry
from vpp.clock import ManualClock
from vpp.model import Role
from vpp.service import PlantService
from vpp.store import SqliteStore


@pytest.fixture
async def api(tmp_path):
    async with SqliteStore(tmp_path / "vpp.sqlite3") as store:
        await seed_store(store)
        await run_month(store, MONTH)
        now = datetime.now(timezone.utc)
        tokens = {
            "admin": await create_token(store, Role.ADMIN, None, now),
            "e01": await create_token(store, Role.ENTERPRISE, "e01", now),
        }
        client = TestClient(TestServer(make_app(PlantService(store, {}, ManualClock(now))), host="127.0.0.1"))
        await client.start_server()
        yield client, tokens, store
        await client.close()


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def test_an_enterprise_reads_only_its_own_carbon(api):
    client, tokens, _ = api
    own = await client.get(f"/api/v1/enterprises/e01/carbon?month={MONTH}", headers=_auth(tokens["e01"]))
    body = await own.json()
    assert own.status == 200 and body["consumption_kwh"] > 0 and len(body["days"]) == 28
    assert set(body["green_by_source_kwh"]) == {"own_pv_kwh", "shared_green_kwh", "storage_green_kwh", "contract_kwh"}
    other = await client.get(f"/api/v1/enterprises/e02/carbon?month={MONTH}", headers=_auth(tokens["e01"]))
    unknown = await client.get(f"/api/v1/enterprises/nobody/carbon?month={MONTH}", headers=_auth(tokens["e01"]))
    assert other.status == unknown.status == 403 and await other.json() == await unknown.json()
    park = await client.get(f"/api/v1/park/carbon?month={MONTH}", headers=_auth(tokens["e01"]))
    assert park.status == 403


async def test_park_view_csv_export_and_bad_month(api):
    client, tokens, _ = api
    park = await (await client.get(f"/api/v1/park/carbon?month={MONTH}&target=0.1", headers=_auth(tokens["admin"]))).json()
    assert park["park"]["target_share"] == 0.1 and park["park"]["meets_target"] is True
    assert park["reconciliation"]["reconciled"] is True
    text = await (await client.get(f"/api/v1/park/carbon?month={MONTH}&format=csv", headers=_auth(tokens["admin"]))).text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["enterprise_id"] for r in rows] == ["e01", "e02", "e03", "e04", "park", "park"]
    text = await (await client.get(f"/api/v1/enterprises/e01/carbon?month={MONTH}&format=csv", headers=_auth(tokens["e01"]))).text()
    assert len(list(csv.DictReader(io.StringIO(text)))) == 29
    bad = await client.get("/api/v1/park/carbon?month=2026-13", headers=_auth(tokens["admin"]))
    assert bad.status == 422 and (await bad.json())["error"]["fields"][0]["field"] == "month"
    never = await client.get("/api/v1/park/carbon?month=2025-01", headers=_auth(tokens["admin"]))
    assert never.status == 404


async def test_certificates_issue_then_retire_once(api):
    client, tokens, store = api
    issued = await client.post("/api/v1/enterprises/e01/certificates/issue", json={"month": MONTH, "kind": "granular"},
                               headers=_auth(tokens["admin"]))  # fmt: skip
    ids = (await issued.json())["issued"]
    assert issued.status == 201 and ids
    again = await client.post("/api/v1/enterprises/e01/certificates/issue", json={"month": MONTH}, headers=_auth(tokens["admin"]))
    assert (await again.json())["issued"] == []  # generation already certified: nothing issued twice
    retire = {"month": MONTH, "certificate_ids": [ids[0]]}
    first = await client.post("/api/v1/enterprises/e01/certificates/retire", json=retire, headers=_auth(tokens["e01"]))
    assert first.status == 201, await first.text()
    second = await client.post("/api/v1/enterprises/e01/certificates/retire", json=retire, headers=_auth(tokens["e01"]))
    assert second.status == 409 and ids[0] in (await second.json())["error"]["message"]
    registry = await load_registry(store)
    assert sum(r.certificate_id == ids[0] for r in registry.retirements) == 1
    report = await run_month(store, MONTH)  # the retirement is now contract energy: a correction
    assert report.corrections >= 1 and report.result.attribution.contract_kwh.sum() > 0
