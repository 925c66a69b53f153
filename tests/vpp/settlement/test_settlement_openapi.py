"""The OpenAPI document describes the settlement routes' bodies, and real answers validate against it."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from tests.vpp.settlement.conftest import MONTH, auth


async def _document(client) -> dict:
    answer = await client.get("/api/v1/openapi.json")
    assert answer.status == 200
    return await answer.json()


def _validator(document: dict, schema: dict) -> Draft202012Validator:
    """A validator of ``schema`` whose ``#/components/...`` references resolve in the document."""
    root = {**schema, "components": document["components"]}
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root, format_checker=FormatChecker())


def _response_schema(document: dict, method: str, path: str, status: str) -> dict:
    return document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


async def test_the_statement_routes_describe_their_bodies_and_answers_validate(api):
    client, tokens, _ = api
    document = await _document(client)
    park_schema = _response_schema(document, "get", "/api/v1/park/settlement", "200")
    own_schema = _response_schema(document, "get", "/api/v1/enterprises/{enterprise_id}/settlement", "200")
    assert park_schema == {"$ref": "#/components/schemas/ParkSettlement"}
    assert own_schema == {"$ref": "#/components/schemas/EnterpriseSettlement"}
    csv = document["paths"]["/api/v1/park/settlement"]["get"]["responses"]["200"]["content"]["text/csv"]
    assert csv["schema"] == {"type": "string"}

    for month in (MONTH, "2026-08"):  # a recorded month and a provisional one (the clock is in August)
        park = await (await client.get(f"/api/v1/park/settlement?month={month}", headers=auth(tokens["admin"]))).json()
        _validator(document, park_schema).validate(park)
        own = await (await client.get(f"/api/v1/enterprises/e01/settlement?month={month}", headers=auth(tokens["e01"]))).json()
        _validator(document, own_schema).validate(own)
        assert (park["park"]["record"] is None) is (month == "2026-08")


async def test_a_body_that_breaks_the_description_fails_validation(api):
    client, tokens, _ = api
    document = await _document(client)
    validator = _validator(document, _response_schema(document, "get", "/api/v1/park/settlement", "200"))
    park = await (await client.get(f"/api/v1/park/settlement?month={MONTH}", headers=auth(tokens["admin"]))).json()
    assert validator.is_valid(park)
    breakages = [
        lambda b: b["park"]["statement"].pop("totals"),
        lambda b: b["enterprises"][0]["statement"]["rows"][0].update(kind="bonus"),
        lambda b: b["enterprises"][0]["statement"]["rows"][0].update(payment_fen=1.5),
        lambda b: b["park"]["record"].update(hash="not-a-hash"),
        lambda b: b.update(month="July"),
    ]
    for breakage in breakages:
        broken = copy.deepcopy(park)
        breakage(broken)
        assert not validator.is_valid(broken)


async def test_price_and_cost_posts_answer_as_described(api):
    client, tokens, _ = api
    document = await _document(client)
    prices = [{"interval_start": "2026-08-03T08:00:00+08:00", "price_cny_per_mwh": 412.5}]
    answer = await client.post("/api/v1/market/prices", json=prices, headers=auth(tokens["grid"]))
    assert answer.status == 201
    _validator(document, _response_schema(document, "post", "/api/v1/market/prices", "201")).validate(await answer.json())

    request = document["paths"]["/api/v1/park/costs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    cost = {"month": MONTH, "kind": "platform_fee", "amount_cny": 99.5, "benefit_key": "capacity", "note": "fee"}
    _validator(document, request).validate(cost)
    assert not _validator(document, request).is_valid(cost | {"benefit_key": "luck"})
    answer = await client.post("/api/v1/park/costs", json=cost, headers=auth(tokens["admin"]))
    assert answer.status == 201
    _validator(document, _response_schema(document, "post", "/api/v1/park/costs", "201")).validate(await answer.json())


@pytest.mark.parametrize("path", ["/api/v1/park/costs", "/api/v1/market/prices"])
async def test_error_answers_are_described(api, path):
    client, tokens, _ = api
    document = await _document(client)
    answer = await client.post(path, json=[] if "prices" in path else {}, headers=auth(tokens["admin"]))
    assert answer.status == 422
    _validator(document, _response_schema(document, "post", path, "422")).validate(await answer.json())
