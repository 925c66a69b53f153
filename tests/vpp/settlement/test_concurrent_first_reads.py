"""Two first reads of a closed month at once record one set of statements (compare-and-append), on both stores."""

from __future__ import annotations

import asyncio

from tests.vpp.settlement.conftest import (
    AFTER_JULY,
    MONTH,
    auth,
    programme_config,
    seed_store,
)
from vpp.chain import verify_chain
from vpp.settlement import SETTLEMENT_LEDGER, SettlementService


async def test_two_services_on_two_connections_record_the_month_once(store_factory, simulated_month):
    first, second = store_factory(), store_factory()  # two connections to one file / namespace, as two processes
    await first.open()
    await second.open()
    try:
        await seed_store(first, simulated_month)
        readers = [SettlementService(s, programme_config(), now=lambda: AFTER_JULY) for s in (first, second)]
        (p1, one), (p2, two) = await asyncio.gather(*(r.statements(MONTH) for r in readers))
        records = await first.ledger_records(SETTLEMENT_LEDGER)
        assert len(records) == 6 and verify_chain(records) == []
        assert not p1 and not p2
        assert {k: e["record"]["seq"] for k, e in one.items()} == {k: e["record"]["seq"] for k, e in two.items()}
        again = await asyncio.gather(*(r.run(MONTH) for r in readers))  # and reruns at once write nothing
        assert [len(r.written) for r in again] == [0, 0] and len(await second.ledger_records(SETTLEMENT_LEDGER)) == 6
    finally:
        await first.close()
        await second.close()


async def test_a_burst_of_first_reads_on_one_store_records_the_month_once(settled_store):
    readers = [SettlementService(settled_store, programme_config(), now=lambda: AFTER_JULY) for _ in range(4)]
    answers = await asyncio.gather(*(r.statements(MONTH) for r in readers))
    seqs = [sorted(e["record"]["seq"] for e in entries.values()) for _, entries in answers]
    assert seqs == [list(range(6))] * 4
    assert len(await settled_store.ledger_records(SETTLEMENT_LEDGER)) == 6


async def test_two_concurrent_first_requests_produce_one_set_of_statements(api):
    client, tokens, store = api
    answers = await asyncio.gather(
        client.get(f"/api/v1/park/settlement?month={MONTH}", headers=auth(tokens["admin"])),
        client.get(f"/api/v1/enterprises/e01/settlement?month={MONTH}", headers=auth(tokens["e01"])),
    )
    assert [a.status for a in answers] == [200, 200]
    park, own = [await a.json() for a in answers]
    assert len(await store.ledger_records(SETTLEMENT_LEDGER)) == 6
    from_park = next(e for e in park["enterprises"] if e["enterprise_id"] == "e01")
    assert from_park["record"] == own["record"]
