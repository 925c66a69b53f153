"""Carbon API: role isolation, JSON and CSV export, bad month, certificates issued, transferred and retired once."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.vpp.carbon.carbon_month_data import MONTH, seed_store
from vpp.api.app import make_app
from vpp.auth import create_token
from vpp.carbon.certificates import WH_PER_GEC
from vpp.carbon.ledger import run_month
from vpp.carbon.registry_ledger import LEDGER as CERTIFICATES
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
            "e02": await create_token(store, Role.ENTERPRISE, "e02", now),
            "park": await create_token(store, Role.ENTERPRISE, "park", now),
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


async def _issue_park_certificates(client, tokens) -> list[str]:
    issued = await client.post("/api/v1/enterprises/park/certificates/issue", json={"month": MONTH, "kind": "granular"},
                               headers=_auth(tokens["admin"]))  # fmt: skip
    ids = (await issued.json())["issued"]
    assert issued.status == 201 and ids
    return ids


async def _transfer(client, token: str, owner: str, body: dict):
    return await client.post(f"/api/v1/enterprises/{owner}/certificates/transfer", json=body, headers=_auth(token))


def _field(body: dict) -> str:
    return body["error"]["fields"][0]["field"]


async def test_certificates_issue_transfer_then_retire_once(api):
    client, tokens, store = api
    # Only exported generation is certified: e01 uses all its PV on site, so nothing to issue.
    own = await client.post("/api/v1/enterprises/e01/certificates/issue", json={"month": MONTH}, headers=_auth(tokens["admin"]))
    assert own.status == 201 and (await own.json())["issued"] == []
    ids = await _issue_park_certificates(client, tokens)
    again = await client.post("/api/v1/enterprises/park/certificates/issue", json={"month": MONTH}, headers=_auth(tokens["admin"]))
    assert (await again.json())["issued"] == []  # generation already certified: nothing issued twice
    moved = await _transfer(client, tokens["park"], "park", {"certificate_ids": [ids[0]], "to_enterprise_id": "e01"})
    assert moved.status == 201, await moved.text()
    listed = await (await client.get("/api/v1/enterprises/e01/certificates", headers=_auth(tokens["e01"]))).json()
    assert [c["certificate_id"] for c in listed["certificates"]] == [ids[0]]
    retire = {"month": MONTH, "certificate_ids": [ids[0]]}
    first = await client.post("/api/v1/enterprises/e01/certificates/retire", json=retire, headers=_auth(tokens["e01"]))
    assert first.status == 201, await first.text()
    second = await client.post("/api/v1/enterprises/e01/certificates/retire", json=retire, headers=_auth(tokens["e01"]))
    body = await second.json()
    assert second.status == 409 and ids[0] in body["error"]["message"] and _field(body) == "certificate_ids[0]"
    registry = await load_registry(store)
    assert sum(r.certificate_id == ids[0] for r in registry.retirements) == 1
    report = await run_month(store, MONTH)  # a new retirement: the month record is corrected
    assert report.corrections >= 1 and report.result.certificates_not_counted_kwh.sum() == 0.0
    # The certificate carries park export of an interval in which the pool had already served every
    # park load: e01's consumption is green once (physically), the certificate stays unmatched.
    a = report.result.attribution
    assert a.contract_kwh.sum() == 0.0
    assert a.unmatched_contract_kwh.sum() == pytest.approx((await first.json())["retired"][0]["volume_wh"] / 1000.0)
    # Retired: it can never move again.
    stuck = await _transfer(client, tokens["e01"], "e01", {"certificate_ids": [ids[0]], "to_enterprise_id": "e02"})
    body = await stuck.json()
    assert stuck.status == 409 and "retired" in body["error"]["message"] and _field(body) == "certificate_ids[0]"


async def test_transfer_rules_name_the_field(api):
    client, tokens, store = api
    ids = await _issue_park_certificates(client, tokens)
    # Not the owner: a certificate of another enterprise and an unknown id answer alike (nothing learnt).
    foreign = await _transfer(client, tokens["e01"], "e01", {"certificate_ids": [ids[0]], "to_enterprise_id": "e02"})
    unknown = await _transfer(client, tokens["e01"], "e01", {"certificate_ids": ["GC:nope:0"], "to_enterprise_id": "e02"})
    assert foreign.status == unknown.status == 422
    assert _field(await foreign.json()) == _field(await unknown.json()) == "certificate_ids[0]"
    foreign_says = (await foreign.json())["error"]["fields"][0]["message"].replace(ids[0], "<id>")
    assert foreign_says == (await unknown.json())["error"]["fields"][0]["message"].replace("GC:nope:0", "<id>")
    # Another enterprise's path: 403, whatever the body.
    other = await _transfer(client, tokens["e01"], "park", {"certificate_ids": [ids[0]], "to_enterprise_id": "e01"})
    assert other.status == 403
    for body, field in (
        ({"to_enterprise_id": "e01"}, "certificate_ids"),
        ({"certificate_ids": [], "to_enterprise_id": "e01"}, "certificate_ids"),
        ({"certificate_ids": [ids[0], ids[0]], "to_enterprise_id": "e01"}, "certificate_ids[1]"),
        ({"certificate_ids": [ids[0]]}, "to_enterprise_id"),
        ({"certificate_ids": [ids[0]], "to_enterprise_id": "park"}, "to_enterprise_id"),
        ({"certificate_ids": [ids[0]], "to_enterprise_id": "nobody"}, "to_enterprise_id"),
        ({"certificate_ids": [ids[0], "GC:nope:1"], "to_enterprise_id": "e01"}, "certificate_ids[1]"),
    ):
        answer = await _transfer(client, tokens["park"], "park", body)
        assert answer.status == 422 and _field(await answer.json()) == field, (body, await answer.text())
    assert (await load_registry(store)).certificate(ids[0]).owner_id == "park"  # nothing half-written
    # The admin may transfer on an enterprise's behalf, all or none, and the same transfer twice fails.
    body = {"certificate_ids": ids[:2], "to_enterprise_id": "e02"}
    assert (await _transfer(client, tokens["admin"], "park", body)).status == 201
    twice = await _transfer(client, tokens["admin"], "park", body)
    assert twice.status == 422 and _field(await twice.json()) == "certificate_ids[0]"
    registry = await load_registry(store)
    assert {registry.certificate(c).owner_id for c in ids[:2]} == {"e02"}
    assert sum(r["payload"]["op"] == "transfer" for r in await store.ledger_records(CERTIFICATES)) == 1


async def test_a_gec_is_sold_once_through_the_api(api):
    client, tokens, store = api
    # A GEC of an off-park wind farm, owned by e01 (written as the registry's own operations).
    await store.append_ledger(CERTIFICATES, [
        {"op": "generation", "generator_id": "wind-farm", "start_s": [1769875200], "interval_s": 86400,
         "generated_wh": [WH_PER_GEC]},
        {"op": "issue_gec", "generator_id": "wind-farm", "owner_id": "e01", "tradable": True, "until_s": None},
    ])  # fmt: skip
    (gec,) = [c.certificate_id for c in (await load_registry(store)).certificates]
    sold = await _transfer(client, tokens["e01"], "e01", {"certificate_ids": [gec], "to_enterprise_id": "e02"})
    assert sold.status == 201
    resold = await _transfer(client, tokens["e02"], "e02", {"certificate_ids": [gec], "to_enterprise_id": "park"})
    body = await resold.json()
    assert resold.status == 409 and "sold only once" in body["error"]["message"] and _field(body) == "certificate_ids[0]"
    assert (await load_registry(store)).certificate(gec).owner_id == "e02"


async def test_transfer_route_is_in_the_openapi_document(api):
    client, _, _ = api
    document = await (await client.get("/api/v1/openapi.json")).json()
    assert "post" in document["paths"]["/api/v1/enterprises/{enterprise_id}/certificates/transfer"]
