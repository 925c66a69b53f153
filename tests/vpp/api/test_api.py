"""HTTP API v1 over a real aiohttp server on loopback, the simulated park behind it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from aiohttp.test_utils import TestClient, TestServer

from vpp.api.app import make_app
from vpp.auth import create_token
from vpp.model import Role


@pytest.fixture
async def api(plant):
    now = datetime.now(timezone.utc)
    enterprises = [e.id for e in plant.spec.enterprises]
    tokens = {
        "grid": await create_token(plant.store, Role.GRID, None, now),
        "admin": await create_token(plant.store, Role.ADMIN, None, now),
        "e1": await create_token(plant.store, Role.ENTERPRISE, enterprises[0], now),
    }
    client = TestClient(TestServer(make_app(plant.service), host="127.0.0.1"))
    await client.start_server()
    yield client, tokens, plant, enterprises
    await client.close()


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _instruction(plant, instruction_id="api-1", delta_kw=100.0, minutes=15) -> dict:
    start = plant.clock.now()
    return {
        "id": instruction_id, "kind": "delta", "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(), "delta_kw": delta_kw,
    }


async def test_health_metrics_and_openapi_need_no_token(api):
    client, _, _, _ = api
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["store"] is True
    metrics = await (await client.get("/metrics")).text()
    for name in ("vpp_instructions", "vpp_allocation_seconds", "vpp_devices_online", "vpp_telemetry_samples"):
        assert name in metrics
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/v1/plant", "/api/v1/dispatch", "/api/v1/enterprises/{enterprise_id}/devices"} <= set(doc["paths"])
    assert "Device" in doc["components"]["schemas"]


async def test_plant_needs_a_grid_or_admin_token(api):
    client, tokens, _, _ = api
    assert (await client.get("/api/v1/plant")).status == 401
    assert (await client.get("/api/v1/plant", headers=_auth("vpp_not-a-token"))).status == 401
    assert (await client.get("/api/v1/plant", headers=_auth(tokens["e1"]))).status == 403
    answer = await client.get("/api/v1/plant?devices=true", headers=_auth(tokens["grid"]))
    body = await answer.json()
    assert answer.status == 200
    assert body["devices_online"] > 0 and body["available_up_kw"] > 0
    assert len(body["devices"]) == body["devices_enrolled"]


async def test_dispatch_is_idempotent_on_its_id(api):
    client, tokens, plant, _ = api
    instruction = _instruction(plant)
    first = await client.post("/api/v1/dispatch", json=instruction, headers=_auth(tokens["grid"]))
    assert first.status == 201
    again = await client.post("/api/v1/dispatch", json=instruction, headers=_auth(tokens["grid"]))
    assert again.status == 200
    assert (await again.json())["instruction"] == (await first.json())["instruction"]
    changed = await client.post("/api/v1/dispatch", json={**instruction, "delta_kw": 999}, headers=_auth(tokens["grid"]))
    assert changed.status == 409
    assert len(await plant.store.list_instructions()) == 1


async def test_only_the_grid_may_dispatch(api):
    client, tokens, plant, _ = api
    for who in ("admin", "e1"):
        answer = await client.post("/api/v1/dispatch", json=_instruction(plant), headers=_auth(tokens[who]))
        assert answer.status == 403
    assert await plant.store.list_instructions() == []


async def test_bad_json_and_bad_fields_are_refused_naming_the_field_and_nothing_is_written(api):
    client, tokens, plant, _ = api
    not_json = await client.post("/api/v1/dispatch", data=b"{nope", headers=_auth(tokens["grid"]))
    assert not_json.status == 400 and "not valid JSON" in (await not_json.json())["error"]["message"]
    bad = {**_instruction(plant), "delta_kw": "lots", "end": "yesterday"}
    answer = await client.post("/api/v1/dispatch", json=bad, headers=_auth(tokens["grid"]))
    assert answer.status == 422
    fields = {f["field"] for f in (await answer.json())["error"]["fields"]}
    assert fields == {"delta_kw", "end"}
    assert await plant.store.list_instructions() == []


async def test_dispatch_view_shows_progress_and_shares(api):
    client, tokens, plant, _ = api
    await client.post("/api/v1/dispatch", json=_instruction(plant, delta_kw=100.0), headers=_auth(tokens["grid"]))
    await plant.run(120)
    answer = await client.get("/api/v1/dispatch/api-1", headers=_auth(tokens["admin"]))
    body = await answer.json()
    assert answer.status == 200
    assert body["state"]["status"] == "active"
    assert len(body["progress"]) > 10
    assert body["enterprise_shares"] and sum(s["share"] for s in body["enterprise_shares"]) == pytest.approx(1.0, abs=1e-3)
    assert "device_baseline_kw" not in body["state"]
    assert (await client.get("/api/v1/dispatch/nope", headers=_auth(tokens["grid"]))).status == 404
    listing = await (await client.get("/api/v1/dispatch", headers=_auth(tokens["grid"]))).json()
    assert [i["instruction"]["id"] for i in listing["instructions"]] == ["api-1"]


async def test_an_enterprise_sees_only_its_own_devices(api):
    client, tokens, plant, enterprises = api
    own = await client.get(f"/api/v1/enterprises/{enterprises[0]}/devices", headers=_auth(tokens["e1"]))
    assert own.status == 200
    devices = (await own.json())["devices"]
    assert devices and all(d["enterprise_id"] == enterprises[0] for d in devices)
    other = await client.get(f"/api/v1/enterprises/{enterprises[1]}/devices", headers=_auth(tokens["e1"]))
    missing = await client.get("/api/v1/enterprises/no-such/devices", headers=_auth(tokens["e1"]))
    # Same answer for another enterprise and for one that does not exist: nothing is learnt.
    assert other.status == missing.status == 403
    assert (await other.json()) == (await missing.json())
    assert (await client.get("/api/v1/enterprises", headers=_auth(tokens["e1"]))).status == 403
    assert (await client.get("/api/v1/enterprises/no-such/devices", headers=_auth(tokens["admin"]))).status == 404


async def test_enrolment_creates_then_changes_a_device_and_names_bad_fields(api):
    client, tokens, plant, enterprises = api
    url = f"/api/v1/enterprises/{enterprises[0]}/devices"
    battery = {"kind": "battery", "id": "new-bat", "rated_kw": 50, "capacity_kwh": 100, "soc_min_kwh": 10}
    created = await client.post(url, json=battery, headers=_auth(tokens["e1"]))
    assert created.status == 201 and (await created.json())["enterprise_id"] == enterprises[0]
    changed = await client.post(url, json={**battery, "rated_kw": 60}, headers=_auth(tokens["e1"]))
    assert changed.status == 200
    assert (await plant.store.get_device("new-bat")).rated_kw == 60
    assert any(d.id == "new-bat" for d in plant.service.devices)

    bad = await client.post(url, json={**battery, "id": "bad-bat", "rated_kw": -1, "soc_min_kwh": "low"}, headers=_auth(tokens["e1"]))
    assert bad.status == 422
    assert {f["field"] for f in (await bad.json())["error"]["fields"]} == {"rated_kw", "soc_min_kwh"}
    foreign = await client.post(url, json={**battery, "id": "x-bat", "enterprise_id": enterprises[1]}, headers=_auth(tokens["e1"]))
    assert foreign.status == 422 and (await foreign.json())["error"]["fields"][0]["field"] == "enterprise_id"
    other = await client.post(f"/api/v1/enterprises/{enterprises[1]}/devices", json={**battery, "id": "y-bat"}, headers=_auth(tokens["e1"]))
    assert other.status == 403
    assert {await plant.store.get_device(i) for i in ("bad-bat", "x-bat", "y-bat")} == {None}


async def test_unknown_routes_answer_json_404(api):
    client, _, _, _ = api
    answer = await client.get("/api/v1/nothing-here")
    assert answer.status == 404 and (await answer.json())["error"]["status"] == 404


async def test_the_admin_registers_enterprises_and_only_the_admin(api):
    client, tokens, plant, _ = api
    body = {"id": "newco", "name": "New Co", "region": "East"}
    assert (await client.post("/api/v1/enterprises", json=body, headers=_auth(tokens["e1"]))).status == 403
    assert (await client.post("/api/v1/enterprises", json=body, headers=_auth(tokens["admin"]))).status == 201
    assert (await client.post("/api/v1/enterprises", json={**body, "name": "New Co Ltd"}, headers=_auth(tokens["admin"]))).status == 200
    assert (await plant.store.get_enterprise("newco")).name == "New Co Ltd"
    bad = await client.post("/api/v1/enterprises", json={"id": "bad id!", "name": ""}, headers=_auth(tokens["admin"]))
    assert bad.status == 422 and {f["field"] for f in (await bad.json())["error"]["fields"]} == {"id", "name"}


async def test_the_envelope_covers_the_horizon_in_quarter_hours(api):
    client, tokens, plant, _ = api
    assert (await client.get("/api/v1/plant/envelope", headers=_auth(tokens["e1"]))).status == 403
    answer = await client.get("/api/v1/plant/envelope?hours=6", headers=_auth(tokens["grid"]))
    body = await answer.json()
    assert answer.status == 200 and len(body["intervals"]) == 24
    starts = [datetime.fromisoformat(i["start"]) for i in body["intervals"]]
    assert all(s.minute % 15 == 0 and s.second == 0 for s in starts)
    assert all(b - a == timedelta(minutes=15) for a, b in zip(starts, starts[1:]))
    assert all(i["up_kw"] >= 0 and i["down_kw"] >= 0 for i in body["intervals"])
    # Noon now, evening later: the PV that can be curtailed (down) fades toward sunset.
    assert body["intervals"][0]["down_kw"] > body["intervals"][-1]["down_kw"]
    bad = await client.get("/api/v1/plant/envelope?hours=500", headers=_auth(tokens["grid"]))
    assert bad.status == 422 and (await bad.json())["error"]["fields"][0]["field"] == "hours"


async def test_the_flexibility_offer_is_a_block_the_fleet_then_delivers(api):
    client, tokens, plant, _ = api
    now = plant.clock.now()
    window = {"start": (now + timedelta(hours=1)).isoformat(), "end": (now + timedelta(hours=2)).isoformat()}
    before = await client.get("/api/v1/plant/flexibility", params={**window, "direction": "up"}, headers=_auth(tokens["grid"]))
    assert before.status == 409 and "no fleet schedule" in (await before.json())["error"]["message"]
    await plant.run(2)  # the first control step solves the schedule
    up = await client.get("/api/v1/plant/flexibility", params={**window, "direction": "up"}, headers=_auth(tokens["grid"]))
    body = await up.json()
    assert up.status == 200, body
    assert body["offered_kw"] > 50.0 and body["extra_cost_cny"] >= 0.0
    assert body["start"] <= window["start"] and body["end"] >= window["end"]
    # Measured from the schedule, not from idle: batteries planned to charge then can also stop charging, so the
    # block may exceed the envelope's weakest interval by at most the batteries' rating, and is of its order.
    envelope = (await (await client.get("/api/v1/plant/envelope?hours=3", headers=_auth(tokens["grid"]))).json())["intervals"]
    inside = [row["up_kw"] for row in envelope if window["start"] <= row["start"] < window["end"]]
    battery_kw = sum(d.rated_kw for d in plant.spec.devices if str(d.kind) == "battery")
    assert 0.5 * min(inside) <= body["offered_kw"] <= min(inside) + battery_kw
    bad = await client.get("/api/v1/plant/flexibility", params={**window, "direction": "sideways"}, headers=_auth(tokens["grid"]))
    assert bad.status == 422 and (await bad.json())["error"]["fields"][0]["field"] == "direction"
    late = {"start": (now + timedelta(days=3)).isoformat(), "end": (now + timedelta(days=3, hours=1)).isoformat()}
    outside = await client.get("/api/v1/plant/flexibility", params=late, headers=_auth(tokens["grid"]))
    assert outside.status == 422
    assert (await client.get("/api/v1/plant/flexibility", params=window, headers=_auth(tokens["e1"]))).status == 403
