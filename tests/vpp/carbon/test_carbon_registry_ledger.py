"""The certificate registry persisted in the ``certificates`` ledger, on both store backends: issuance only
of generation that left the park, transfer, retirement once, concurrent writers, a hash chain that verifies."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

from tests.vpp.carbon.carbon_month_data import MONTH, seed_store
from vpp.carbon import WH_PER_GEC, CertificateError, CertificateKind
from vpp.carbon import registry_ledger as reg
from vpp.carbon.inputs import month_period, read_inputs
from vpp.carbon.ledger import exported_generation_kwh, generator_id_of, run_month
from vpp.chain import verify_chain
from vpp.model import Enterprise
from vpp.store import SqliteStore


async def test_only_exported_generation_is_certified_then_moved_and_retired_once(any_store):
    await seed_store(any_store)
    inputs = await read_inputs(any_store, month_period(MONTH))
    exported = exported_generation_kwh(inputs)
    park = inputs.enterprise_ids.index("park")
    assert exported[park].sum() > 0 and exported[: park].sum() == 0  # e01..e04 use all their PV themselves

    # e01's PV is all consumed on site: recorded, entirely claimed, nothing to certify.
    assert await reg.issue(any_store, "e01", MONTH) == ()
    registry = await reg.load_registry(any_store)
    mine = [g for g in registry.generation if g.generator_id == generator_id_of("e01")]
    assert mine and all(g.claimed_wh == g.generated_wh and g.issued_wh == 0 for g in mine)

    ids = await reg.issue(any_store, "park", MONTH)
    registry = await reg.load_registry(any_store)
    issued_wh = sum(registry.certificate(c).volume_wh for c in ids)
    assert ids and issued_wh <= exported[park].sum() * 1000.0 + len(ids)
    for cid in ids:
        c = registry.certificate(cid)
        t = int(np.searchsorted(inputs.period.start_s, c.start_s))
        assert c.kind is CertificateKind.GRANULAR and c.volume_wh <= exported[park, t] * 1000.0 + 1e-6
    assert await reg.issue(any_store, "park", MONTH) == ()  # never twice

    await reg.transfer(any_store, ids[:1], "park", "e01")
    with pytest.raises(CertificateError, match="not by 'park'"):
        await reg.transfer(any_store, ids[:1], "park", "e02")  # a second transfer of what was sold
    retired = await reg.retire(any_store, "e01", ids[:1], MONTH)
    assert retired[0]["volume_wh"] >= 1
    with pytest.raises(CertificateError, match=ids[0]):
        await reg.retire(any_store, "e01", ids[:1], MONTH)
    with pytest.raises(CertificateError, match=ids[0]):
        await reg.transfer(any_store, ids[:1], "e01", "e02")  # retired: it can no longer move
    records = await any_store.ledger_records(reg.LEDGER)
    assert verify_chain(records) == []
    registry, void = reg.replay(records)
    assert void == {} and sum(r.certificate_id == ids[0] for r in registry.retirements) == 1

    report = await run_month(any_store, MONTH)
    result = report.result
    e01 = inputs.enterprise_ids.index("e01")
    # The park exports only when the pool has served every park load: the certificate, bought back into
    # the park, finds no unserved consumption in its interval. Green once: unmatched, and still exported.
    a = result.attribution
    assert a.contract_kwh.sum() == 0.0 and result.certificates_not_counted_kwh.sum() == 0.0
    assert a.unmatched_contract_kwh[e01].sum() == pytest.approx(retired[0]["volume_wh"] / 1000.0)
    assert result.park.reclaimed_export_kwh == 0.0
    assert result.park.exported_green_kwh == pytest.approx(exported.sum(), abs=1e-6)
    assert result.park.reconciled


async def test_concurrent_transfers_of_one_certificate_one_wins_and_the_loser_is_void(any_store):
    await seed_store(any_store)
    ids = await reg.issue(any_store, "park", MONTH)
    outcomes = await asyncio.gather(
        reg.transfer(any_store, ids[:1], "park", "e02"),
        reg.transfer(any_store, ids[:1], "park", "e03"),
        return_exceptions=True,
    )
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], CertificateError), outcomes
    registry, void = reg.replay(await any_store.ledger_records(reg.LEDGER))
    winner = registry.certificate(ids[0])
    assert winner.owner_id in ("e02", "e03") and winner.sales == 1
    # Either the loser was refused before writing, or it was written and is void in the replay.
    assert len(void) <= 1 and all("not by 'park'" in why for why in void.values())


async def test_tampering_with_a_certificate_record_is_found(backend, any_store):
    await seed_store(any_store)
    ids = await reg.issue(any_store, "park", MONTH)
    await reg.transfer(any_store, ids[:1], "park", "e01")
    records = await any_store.ledger_records(reg.LEDGER)
    transfer_seq = next(r["seq"] for r in records if r["payload"]["op"] == "transfer")

    def redirect(record: dict) -> None:
        record["payload"]["to_owner"] = "e04"

    await backend.tamper_ledger(reg.LEDGER, transfer_seq, redirect)
    problems = verify_chain(await any_store.ledger_records(reg.LEDGER))
    assert [(p.seq, p.kind) for p in problems] == [(transfer_seq, "altered")]

def _cli(data_dir, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vpp.cli", "carbon", "certificates", *args, "--data-dir", str(data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


async def test_cli_transfers_a_gec_once(tmp_path):
    async with SqliteStore(tmp_path / "vpp.sqlite3") as store:
        for eid in ("e01", "e02", "e03"):
            await store.put_enterprise(Enterprise(id=eid, name=eid, region="East"))
        await store.append_ledger(reg.LEDGER, [
            {"op": "generation", "generator_id": "wind-farm", "start_s": [1769875200], "interval_s": 86400,
             "generated_wh": [WH_PER_GEC]},
            {"op": "issue_gec", "generator_id": "wind-farm", "owner_id": "e01", "tradable": True, "until_s": None},
        ])  # fmt: skip
        (gec,) = [c.certificate_id for c in (await reg.load_registry(store)).certificates]
    sold = _cli(tmp_path, "transfer", "--enterprise", "e01", "--to", "e02", "--id", gec)
    assert sold.returncode == 0 and "from e01 to e02" in sold.stdout, sold.stderr
    resold = _cli(tmp_path, "transfer", "--enterprise", "e02", "--to", "e03", "--id", gec)
    assert resold.returncode == 2 and "sold only once" in resold.stderr
    nowhere = _cli(tmp_path, "transfer", "--enterprise", "e02", "--to", "nobody", "--id", gec)
    assert nowhere.returncode == 2 and "--to 'nobody'" in nowhere.stderr
    async with SqliteStore(tmp_path / "vpp.sqlite3") as store:
        assert (await reg.load_registry(store)).certificate(gec).owner_id == "e02"
