"""Park costs ("who benefits, bears"): from the configuration and posted by the admin, shared to the fen, on both stores."""

from __future__ import annotations

import asyncio

import pytest

from tests.vpp.settlement.conftest import AFTER_JULY, MONTH, auth, total_row
from vpp.chain import verify_chain
from vpp.errors import InvalidInput
from vpp.settlement import (
    COSTS_LEDGER,
    SETTLEMENT_LEDGER,
    ParkCost,
    SettlementConfigError,
    SettlementService,
    config_from_dict,
)

PLATFORM_FEE = {"month": MONTH, "kind": "platform_fee", "amount_cny": 1234.57, "benefit_key": "event_revenue", "note": "VPP platform"}
OTHER_MONTH = {"month": "2026-06", "kind": "platform_fee", "amount_cny": 99.0}


def _config(*costs: dict):
    return config_from_dict({
        "programme": {"history_days": 7},
        "payment": {"capacity_price_cny_per_kw_month": 2.5},
        "costs": list(costs),
    })


def _cost_rows(payload: dict) -> list[dict]:
    return [row for row in payload["rows"] if row["kind"] == "cost"]


async def test_configured_and_posted_costs_are_shared_to_the_fen_by_their_keys(settled_store):
    service = SettlementService(settled_store, _config(PLATFORM_FEE, OTHER_MONTH), now=lambda: AFTER_JULY)
    posted = await service.post_cost(ParkCost(MONTH, "ancillary_service", 50_001, "consumption", "grid AS charge"), "admin")
    assert posted["payload"]["amount_fen"] == 50_001
    result = await service.run(MONTH)
    park, enterprises = result.settlement.park, result.settlement.enterprises
    assert [(c["kind"], c["amount_fen"], c["benefit_key_used"], c["source"]) for c in park["costs"]] == [
        ("platform_fee", 123_457, "event_revenue", "config"),
        ("ancillary_service", 50_001, "consumption", f"{COSTS_LEDGER}#0"),
    ]  # the June cost stays in June
    assert park["totals"]["cost_fen"] == 173_458
    totals = {eid: total_row(p) for eid, p in enterprises.items()}
    assert sum(t["cost_fen"] for t in totals.values()) == 173_458
    assert sum(t["net_fen"] for t in totals.values()) == park["totals"]["net_fen"]
    assert park["totals"]["net_fen"] == (
        park["totals"]["payment_fen"] + park["totals"]["capacity_fen"] - park["totals"]["penalty_fen"] - 173_458
    )
    for kind, amount in (("platform_fee", 123_457), ("ancillary_service", 50_001)):
        rows = [r for p in enterprises.values() for r in _cost_rows(p) if r["note"].startswith(kind)]
        assert sum(r["cost_fen"] for r in rows) == amount and all(r["cost_fen"] > 0 for r in rows)
    # The platform fee follows event revenue: whoever earned nothing from events bears none of it.
    for eid, total in totals.items():
        fee = sum(r["cost_fen"] for r in _cost_rows(enterprises[eid]) if r["note"].startswith("platform_fee"))
        assert (fee > 0) == (total["payment_fen"] > 0)
    assert any(total["payment_fen"] == 0 for total in totals.values())  # the key does exclude someone here
    assert "shared by event_revenue" in _cost_rows(enterprises["e03"])[0]["note"]


async def test_a_correction_replaces_the_posted_cost_and_the_rerun_corrects_the_statements(settled_store):
    service = SettlementService(settled_store, _config(), now=lambda: AFTER_JULY)
    first = await service.run(MONTH)
    assert first.settlement.park["costs"] == [] and len(first.written) == 6
    original = await service.post_cost(ParkCost(MONTH, "platform_fee", 10_000, "equal"), "admin")
    fixed = await service.post_cost(ParkCost(MONTH, "platform_fee", 20_000, "equal"), "admin", corrects=original["seq"])
    assert fixed["corrects"] == 0
    assert [c.amount_fen for c in await service.costs(MONTH)] == [20_000]
    second = await service.run(MONTH)
    assert len(second.written) == 6 and len(second.corrections) == 6  # equal shares: every statement changed
    assert sorted(total_row(p)["cost_fen"] for p in second.settlement.enterprises.values()) == [4000] * 5
    assert verify_chain(await settled_store.ledger_records(COSTS_LEDGER)) == []
    with pytest.raises(InvalidInput) as twice:
        await service.post_cost(ParkCost(MONTH, "platform_fee", 1, "equal"), "admin", corrects=original["seq"])
    assert twice.value.field == "corrects"
    with pytest.raises(InvalidInput):
        await service.post_cost(ParkCost(MONTH, "platform_fee", 1, "equal"), "admin", corrects=99)


def test_cost_configuration_errors_name_the_key():
    for cost, key in (
        ({"month": "2026-7", "kind": "fee", "amount_cny": 1}, "costs[0].month"),
        ({"month": MONTH, "kind": "fee", "amount_cny": "1.005"}, "costs[0].amount_cny"),
        ({"month": MONTH, "kind": "fee", "amount_cny": -1}, "costs[0].amount_cny"),
        ({"month": MONTH, "kind": "fee", "amount_cny": 1, "benefit_key": "luck"}, "costs[0].benefit_key"),
        ({"month": MONTH, "kind": "a fee", "amount_cny": 1}, "costs[0].kind"),
        ({"month": MONTH, "kind": "fee", "amount_cny": 1, "colour": "red"}, "costs[0].colour"),
    ):
        with pytest.raises(SettlementConfigError) as error:
            _config(cost)
        assert error.value.key == key
    assert _config({"month": MONTH, "kind": "fee", "amount_cny": "0.10"}).costs[0].amount_fen == 10


async def test_admin_posts_a_cost_and_the_settled_month_is_corrected(api):
    client, tokens, store = api
    park = await (await client.get(f"/api/v1/park/settlement?month={MONTH}", headers=auth(tokens["admin"]))).json()
    assert park["park"]["statement"]["totals"]["cost_fen"] == 0
    body = {"month": MONTH, "kind": "ancillary_service", "amount_cny": "800.03", "benefit_key": "consumption"}
    answer = await client.post("/api/v1/park/costs", json=body, headers=auth(tokens["admin"]))
    assert answer.status == 201
    posted = await answer.json()
    assert posted["ledger"] == COSTS_LEDGER and posted["amount_fen"] == 80_003 and posted["corrects"] is None
    assert posted["statements_written"] == 6  # everyone consumes: every statement and the summary corrected
    park = await (await client.get(f"/api/v1/park/settlement?month={MONTH}", headers=auth(tokens["admin"]))).json()
    summary = park["park"]["statement"]
    assert summary["totals"]["cost_fen"] == 80_003 and park["park"]["record"]["corrects"] is not None
    assert sum(total_row(e["statement"])["cost_fen"] for e in park["enterprises"]) == 80_003
    assert len(await store.ledger_records(SETTLEMENT_LEDGER)) == 12
    own = await (await client.get(f"/api/v1/enterprises/e01/settlement?month={MONTH}", headers=auth(tokens["e01"]))).json()
    assert _cost_rows(own["statement"])[0]["note"].startswith("ancillary_service")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"month": MONTH, "kind": "fee", "amount_cny": "12.345"}, "amount_cny"),
        ({"month": MONTH, "kind": "fee", "amount_cny": True}, "amount_cny"),
        ({"month": "2026-13", "kind": "fee", "amount_cny": 1}, "month"),
        ({"month": MONTH, "kind": "fee", "amount_cny": 1, "benefit_key": "luck"}, "benefit_key"),
        ({"month": MONTH, "kind": "fee", "amount_cny": 1, "payer": "e01"}, "payer"),
        ({"month": MONTH, "kind": "fee", "amount_cny": 1, "corrects": 5}, "corrects"),
        ({"month": MONTH, "kind": "fee", "amount_cny": 1, "corrects": -1}, "corrects"),
        (["not", "an", "object"], "body"),
    ],
)
async def test_a_bad_cost_is_422_naming_the_field_and_nothing_is_written(api, body, field):
    client, tokens, store = api
    answer = await client.post("/api/v1/park/costs", json=body, headers=auth(tokens["admin"]))
    assert answer.status == 422
    assert (await answer.json())["error"]["fields"][0]["field"] == field
    assert await store.ledger_records(COSTS_LEDGER) == []


async def test_only_the_admin_posts_costs(api):
    client, tokens, store = api
    for who in ("grid", "e01"):
        answer = await client.post("/api/v1/park/costs", json=PLATFORM_FEE, headers=auth(tokens[who]))
        assert answer.status == 403
    assert await store.ledger_records(COSTS_LEDGER) == []


async def test_two_corrections_of_one_cost_at_once_let_exactly_one_through(settled_store):
    service = SettlementService(settled_store, _config(), now=lambda: AFTER_JULY)
    original = await service.post_cost(ParkCost(MONTH, "platform_fee", 10_000, "equal"), "admin")
    outcomes = await asyncio.gather(
        *(service.post_cost(ParkCost(MONTH, "platform_fee", amount, "equal"), "admin", corrects=original["seq"])
          for amount in (20_000, 30_000)),
        return_exceptions=True,
    )  # fmt: skip
    refused = [o for o in outcomes if isinstance(o, InvalidInput)]
    assert len(refused) == 1 and refused[0].field == "corrects"
    assert len(await settled_store.ledger_records(COSTS_LEDGER)) == 2
    assert len(await service.costs(MONTH)) == 1
