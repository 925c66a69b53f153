"""One claim per kWh: a certificate of generation the park already consumed is neither issuable nor counted.

The rule and its reasoning are in the docstring of :mod:`vpp.carbon.certificates`.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vpp.carbon.carbon_parks import (
    T0,
    as_inputs,
    check_retirements,
    park_energies,
    registry_ops,
)
from vpp.carbon import (
    InvalidQuantityError,
    IssuanceError,
    Registry,
    RetirementRequest,
    issue_gec,
    issue_granular,
    record_generation,
    retire,
    transfer,
)
from vpp.carbon.inputs import INTERVAL_S, Inputs, Period
from vpp.carbon.ledger import (
    CarbonSettings,
    compute_month,
    exported_generation_kwh,
    generator_id_of,
)
from vpp.carbon.registry_ledger import replay

Q = INTERVAL_S
START = int(T0.timestamp())


def _enterprises(consumption: list[list[float]], pv: list[list[float]]) -> Inputs:
    """Enterprises with own PV and no battery, over ``len(consumption[0])`` intervals [kWh]."""
    c, g = np.array(consumption, dtype=float), np.array(pv, dtype=float)
    count, net = c.shape[1], c - g
    return Inputs(
        period=Period(T0, T0 + timedelta(seconds=Q * count), label="2026-07"),
        enterprise_ids=tuple(f"e{i + 1:02d}" for i in range(c.shape[0])),
        import_kwh=np.maximum(net, 0), export_kwh=np.maximum(-net, 0),
        generation_kwh=g, own_pv_kwh=g, consumption_kwh=c, shared_ids=(), shared_green_kwh=np.zeros((0, count)),
        battery_ids=(), battery_owner=np.zeros(0, dtype=np.intp), charge_kwh=np.zeros((0, count)),
        discharge_kwh=np.zeros((0, count)), charge_efficiency=np.zeros(0), discharge_efficiency=np.zeros(0),
        initial_soc_kwh=np.zeros(0), missing=np.zeros(c.shape, dtype=bool),
    )  # fmt: skip


def test_self_consumed_pv_is_not_issuable_only_its_export_is() -> None:
    # t0: 10 kWh PV all consumed on site; t1: 10 kWh PV, 4 consumed, 6 exported.
    inputs = _enterprises([[10.0, 4.0]], [[10.0, 10.0]])
    np.testing.assert_allclose(exported_generation_kwh(inputs), [[0.0, 6.0]])
    gid = generator_id_of("e01")
    registry = record_generation(Registry(), gid, [START, START + Q], Q, [10_000, 10_000], claimed_wh=[10_000, 4_000])
    registry, ids = issue_granular(registry, gid, "e01")
    assert ids == (f"GC:{gid}:{START + Q}",) and registry.certificate(ids[0]).volume_wh == 6_000
    with pytest.raises(IssuanceError, match=f"GC:{gid}:{START}.*already fully certified"):
        issue_granular(registry, gid, "e01", [START])
    assert issue_gec(registry, gid, "e01")[1] == ()  # nothing left for a GEC either
    with pytest.raises(InvalidQuantityError, match=r"claimed_wh\[0\] = 11 exceeds generated_wh\[0\] = 10"):
        record_generation(Registry(), "pv", [START], Q, [10], claimed_wh=[11])


def test_gecs_take_only_unclaimed_generation() -> None:
    hours = [START + 3600 * h for h in range(3)]
    registry = record_generation(Registry(), "pv", hours, 3600, [900_000, 900_000, 900_000], claimed_wh=[500_000, 0, 0])
    registry, ids = issue_gec(registry, "pv", "gen-co")
    assert len(ids) == 2 and [g.free_wh for g in registry.generation] == [0, 0, 200_000]


def test_a_legacy_certificate_of_self_consumed_pv_retired_by_its_producer_counts_once() -> None:
    # Gross issuance (before the rule): 10 kWh of PV consumed on site, certified and retired by the
    # same enterprise. Counting both would make 20 kWh green out of 10 generated.
    inputs = _enterprises([[10.0]], [[10.0]])
    gid = generator_id_of("e01")
    registry = record_generation(Registry(), gid, [START], Q, [10_000])
    registry, (cid,) = issue_granular(registry, gid, "e01")
    registry = retire(registry, [RetirementRequest(cid, "e01", START, START + Q, 10_000, 10_000)])
    result = compute_month(inputs, CarbonSettings(), {}, registry)
    a = result.attribution
    assert a.own_pv_kwh.sum() == 10.0 and a.contract_kwh.sum() == 0.0 and a.green_kwh.sum() == 10.0
    np.testing.assert_allclose(result.certificates_not_counted_kwh, [[10.0]])
    assert result.park.renewable_share == pytest.approx(1.0)


def test_a_certificate_of_exported_pv_bought_inside_the_park_adds_nothing_the_pool_gave() -> None:
    # e01: 10 kWh PV, 4 consumed; its 6 kWh surplus serves e02's 2 kWh through the pool, 4 kWh leave the park.
    inputs = _enterprises([[4.0], [2.0]], [[10.0], [0.0]])
    np.testing.assert_allclose(exported_generation_kwh(inputs), [[4.0], [0.0]])
    gid = generator_id_of("e01")
    registry = record_generation(Registry(), gid, [START], Q, [10_000], claimed_wh=[6_000])
    registry, (cid,) = issue_granular(registry, gid, "e01")
    assert registry.certificate(cid).volume_wh == 4_000  # only what left the park
    registry = transfer(registry, [cid], "e01", "e02")
    registry = retire(registry, [RetirementRequest(cid, "e02", START, START + Q, 2_000, 2_000)])
    result = compute_month(inputs, CarbonSettings(), {}, registry)
    a = result.attribution
    # e02's 2 kWh are green once, by the pool; the certificate finds nothing left to match.
    np.testing.assert_allclose(a.shared_green_kwh[:, 0], [0.0, 2.0])
    np.testing.assert_allclose(a.contract_kwh[:, 0], [0.0, 0.0])
    np.testing.assert_allclose(a.unmatched_contract_kwh[:, 0], [0.0, 2.0])
    assert a.green_kwh.sum() == pytest.approx(6.0) and result.park.exported_green_kwh == pytest.approx(4.0)
    assert result.park.reclaimed_export_kwh == 0.0


@settings(max_examples=120, deadline=None)
@given(park_energies(), st.booleans(), st.data())
def test_green_attributed_never_exceeds_generation_plus_certified_supply(park, legacy: bool, data) -> None:
    inputs = as_inputs(park)
    ops = data.draw(registry_ops(inputs, legacy))
    registry, void = replay([{"seq": i, "payload": op} for i, op in enumerate(ops)])
    assert void == {}
    check_retirements(registry, inputs)
    result = compute_month(inputs, CarbonSettings(), {}, registry)
    a = result.attribution
    np.testing.assert_allclose(a.green_kwh + a.grid_kwh, inputs.consumption_kwh, atol=1e-9)

    external_retired = sum(
        r.volume_wh for r in registry.retirements if registry.certificate(r.certificate_id).generator_id == "wind"
    ) / 1000.0
    generation = inputs.generation_kwh.sum()
    # Every green kWh consumed is generation in the park or a retired certificate of outside generation.
    assert a.green_kwh.sum() <= generation + external_retired + 1e-6
    # Physical claims and claims by certificates of park generation together never exceed that generation,
    physical = (a.own_pv_kwh + a.shared_green_kwh + a.storage_green_kwh).sum()
    assert physical + result.reclaimed_export_kwh.sum() <= generation + 1e-6
    # generator by generator and interval: a certificate counts only what left the park.
    exported = exported_generation_kwh(inputs)
    assert (result.reclaimed_export_kwh <= exported + 1e-9).all()
    counted = a.contract_kwh.sum() + a.unmatched_contract_kwh.sum()
    retired = sum(r.volume_wh for r in registry.retirements) / 1000.0
    assert counted + result.certificates_not_counted_kwh.sum() == pytest.approx(retired, abs=1e-6)
    if not legacy:
        # Issued under the rule, nothing retired ever needs refusing.
        assert result.certificates_not_counted_kwh.sum() == pytest.approx(0.0, abs=1e-9)
