"""The whole carbon pipeline over random parks and a few days: meter registers and battery telemetry ->
interval inputs -> certificates -> attribution -> ledger records -> hash chain, checked end to end."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vpp.carbon.carbon_parks import (
    as_captured,
    check_retirements,
    park_energies,
    registry_ops,
)
from vpp.carbon.inputs import parse
from vpp.carbon.ledger import CarbonSettings, compute_month, initial_stocks, payloads
from vpp.carbon.registry_ledger import replay
from vpp.chain import append, verify_chain


def _chain(payloads_: list[dict]) -> list[dict]:
    records: list[dict] = []
    for payload in payloads_:
        records = append(records, payload)
    return records


def _numbers(value: object, path: tuple = ()) -> list[tuple]:
    """Paths to every number inside a payload."""
    if isinstance(value, dict):
        return [p for key in sorted(value) for p in _numbers(value[key], (*path, key))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _numbers(item, (*path, i))]
    return [path] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _bump(record: dict, path: tuple) -> None:
    target = record["payload"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = target[path[-1]] + 1


@settings(max_examples=30, deadline=None)
@given(park_energies(days=(1, 3)), st.sampled_from(["pro_rata", "priority"]), st.data())
def test_random_park_from_meters_to_a_verified_ledger(park, rule: str, data: st.DataObject) -> None:
    # Meters and telemetry -> interval energies: what the meters measured, nothing lost or invented.
    inputs = parse(as_captured(park))
    assert inputs.issues == () and not inputs.missing.any()
    np.testing.assert_allclose(inputs.consumption_kwh, park.consumption_kwh, atol=1e-6)
    np.testing.assert_allclose(inputs.charge_kwh, park.charge_kwh, atol=1e-9)
    np.testing.assert_allclose(inputs.discharge_kwh, park.discharge_kwh, atol=1e-9)

    # Certificates, through the ledger's own operations (replayed from their records).
    ops = data.draw(registry_ops(inputs, legacy=data.draw(st.booleans())))
    certificate_records = _chain(ops)
    assert verify_chain(certificate_records) == []
    registry, void = replay(certificate_records)
    assert void == {}
    check_retirements(registry, inputs)

    settings_ = CarbonSettings(split_rule=rule)
    result = compute_month(inputs, settings_, {}, registry, initial_stocks(inputs, None))
    a = result.attribution
    # Every interval's consumption is the sum of its sources, for every enterprise.
    sources = a.own_pv_kwh + a.shared_green_kwh + a.storage_green_kwh + a.contract_kwh + a.grid_kwh
    np.testing.assert_allclose(sources, park.consumption_kwh, atol=1e-6)
    # No certificate counted twice: the contract energy is at most what was retired, consumer by interval.
    retired = np.zeros_like(a.contract_kwh)
    for r in registry.retirements:
        t = int(np.searchsorted(inputs.period.start_s, r.start_s))
        retired[inputs.enterprise_ids.index(r.consumer_id), t] += r.volume_wh / 1000.0
    assert (a.contract_kwh <= retired + 1e-9).all()
    np.testing.assert_allclose(
        a.contract_kwh + a.unmatched_contract_kwh + result.certificates_not_counted_kwh, retired, atol=1e-9
    )
    # Storage never gives back more green than it took in.
    assert a.battery_green_out_kwh.sum() <= a.battery_green_in_kwh.sum() * park.efficiency**2 + 1e-9
    # The park reconciles to its meters, interval by interval.
    assert result.park.reconciled, (result.park.meter_gap_kwh, result.park.reconciliation_gap_kwh)

    # The ledger: one record per local day and one for the month, chained; it verifies.
    records = _chain(payloads(result, settings_))
    assert len(records) == len({p["day"] for p in (r["payload"] for r in records[:-1])}) + 1
    assert verify_chain(records) == []
    day_total = sum(r["payload"]["enterprises"]["e01"]["consumption_kwh"] for r in records[:-1])
    assert day_total == pytest.approx(park.consumption_kwh[0].sum(), abs=1e-3)

    # Altering any number of any record is found, and named by its sequence number.
    seq = data.draw(st.integers(0, len(records) - 1))
    path = data.draw(st.sampled_from(_numbers(records[seq]["payload"])))
    tampered = copy.deepcopy(records)
    _bump(tampered[seq], path)
    assert [(p.seq, p.kind) for p in verify_chain(tampered)] == [(seq, "altered")]
    # So is a record removed.
    gone = data.draw(st.integers(0, len(records) - 2))
    assert [(p.seq, p.kind) for p in verify_chain(records[:gone] + records[gone + 1 :])] == [(gone, "removed")]
