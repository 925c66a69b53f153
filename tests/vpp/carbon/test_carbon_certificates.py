"""Certificates: issue from generation, transfer, retire; never counted, sold or retired twice."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp.carbon import (
    WH_PER_GEC,
    AlreadyRetiredError,
    AlreadySoldError,
    CertificateError,
    CertificateKind,
    ExceedsConsumptionError,
    ExceedsVolumeError,
    InvalidQuantityError,
    IssuanceError,
    NotOwnerError,
    NotTradableError,
    OutsideIntervalError,
    Registry,
    RetirementRequest,
    UnknownCertificateError,
    attribute,
    from_plain,
    issue_gec,
    issue_granular,
    record_generation,
    retire,
    retired_gec_kwh,
    retired_kwh_matrix,
    to_plain,
    transfer,
)

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
Q = 900


def _granular_park() -> tuple[Registry, tuple[str, ...]]:
    registry = record_generation(Registry(), "pv1", [T0, T0 + Q, T0 + 2 * Q], Q, [1200, 0, 800])
    return issue_granular(registry, "pv1", "gen-co")


def test_granular_certificates_carry_exactly_the_metered_generation() -> None:
    registry, ids = _granular_park()
    assert ids == (f"GC:pv1:{T0}", f"GC:pv1:{T0 + 2 * Q}")  # nothing issued for an interval without generation
    assert [c.volume_wh for c in registry.certificates] == [1200, 800]
    assert all(g.issued_wh == g.generated_wh for g in registry.generation)
    with pytest.raises(IssuanceError, match=f"GC:pv1:{T0}.*already fully certified"):
        issue_granular(registry, "pv1", "gen-co", [T0])
    assert issue_granular(registry, "pv1", "gen-co")[1] == ()


def test_generation_is_recorded_once_and_intervals_never_overlap() -> None:
    registry, _ = _granular_park()
    with pytest.raises(IssuanceError, match=f"GC:pv1:{T0 + Q}.*overlaps or repeats"):
        record_generation(registry, "pv1", [T0 + Q], Q, [5])
    with pytest.raises(IssuanceError, match="overlaps"):
        record_generation(registry, "pv1", [T0 + 3 * Q - 60], 3600, [5])
    with pytest.raises(IssuanceError, match=f"no generation of pv1 recorded at {T0 + 9 * Q}"):
        issue_granular(registry, "pv1", "gen-co", [T0 + 9 * Q])
    with pytest.raises(InvalidQuantityError, match="generated_wh"):
        record_generation(Registry(), "pv2", [T0], Q, [1.5])
    with pytest.raises(InvalidQuantityError, match=r"generated_wh\[0\] = -1"):
        record_generation(Registry(), "pv2", [T0], Q, [-1])


def test_gecs_take_whole_mwh_in_time_order_and_leave_the_rest() -> None:
    hours = [T0 + 3600 * h for h in range(5)]
    registry = record_generation(Registry(), "wind", hours, 3600, [400_000, 700_000, 900_000, 300_000, 200_000])
    registry, ids = issue_gec(registry, "wind", "gen-co")
    assert ids == ("GEC:wind:00000000", "GEC:wind:00000001")
    first, second = registry.certificate(ids[0]), registry.certificate(ids[1])
    assert (first.start_s, first.end_s) == (hours[0], hours[1] + 3600)
    assert (second.start_s, second.end_s) == (hours[1], hours[2] + 3600)
    assert [g.issued_wh for g in registry.generation] == [400_000, 700_000, 900_000, 0, 0]
    # The rest can still be certified granularly, never twice.
    registry, granular = issue_granular(registry, "wind", "gen-co")
    assert [registry.certificate(cid).volume_wh for cid in granular] == [300_000, 200_000]
    assert issue_gec(registry, "wind", "gen-co")[1] == ()
    total = sum(c.volume_wh for c in registry.certificates)
    assert total == sum(g.generated_wh for g in registry.generation)


def test_a_tradable_gec_is_sold_only_once_and_a_non_tradable_one_never() -> None:
    registry = record_generation(Registry(), "pv", [T0], 86_400, [2 * WH_PER_GEC])
    registry, (sold, kept) = issue_gec(registry, "pv", "gen-co")
    registry = transfer(registry, [sold], "gen-co", "buyer")
    assert registry.certificate(sold).owner_id == "buyer"
    with pytest.raises(AlreadySoldError, match=f"certificate {sold}: .*sold only once"):
        transfer(registry, [sold], "buyer", "someone-else")
    with pytest.raises(NotOwnerError, match=f"certificate {kept}: owned by 'gen-co', not by 'buyer'"):
        transfer(registry, [kept], "buyer", "x")
    fixed = record_generation(Registry(), "hydro", [T0], 86_400, [WH_PER_GEC])
    fixed, (cid,) = issue_gec(fixed, "hydro", "gen-co", tradable=False)
    with pytest.raises(NotTradableError, match=cid):
        transfer(fixed, [cid], "gen-co", "buyer")
    with pytest.raises(UnknownCertificateError, match="GEC:nope"):
        transfer(fixed, ["GEC:nope"], "gen-co", "buyer")


def test_granular_certificates_move_freely_until_retired() -> None:
    registry, (cid, _) = _granular_park()
    registry = transfer(registry, [cid], "gen-co", "a")
    registry = transfer(registry, [cid], "a", "b")
    assert registry.certificate(cid).sales == 2
    registry = retire(registry, [RetirementRequest(cid, "b", T0, T0 + Q, 100, 5_000)])
    with pytest.raises(AlreadyRetiredError, match=cid):
        transfer(registry, [cid], "b", "c")


def test_retirement_rules() -> None:
    registry, (cid, other) = _granular_park()
    registry = transfer(registry, [cid, other], "gen-co", "factory")
    registry = retire(registry, [RetirementRequest(cid, "factory", T0, T0 + Q, 700, 10_000)])
    registry = retire(registry, [RetirementRequest(cid, "factory", T0, T0 + Q, 500, 10_000)])
    assert registry.certificate(cid).retired_wh == 1200
    with pytest.raises(AlreadyRetiredError, match=f"certificate {cid}: already fully retired"):
        retire(registry, [RetirementRequest(cid, "factory", T0, T0 + Q, 1, 10_000)])
    with pytest.raises(ExceedsVolumeError, match=f"certificate {other}: 801 Wh asked, 800 Wh left"):
        retire(registry, [RetirementRequest(other, "factory", T0 + 2 * Q, T0 + 3 * Q, 801, 10_000)])
    with pytest.raises(OutsideIntervalError, match=other):
        retire(registry, [RetirementRequest(other, "factory", T0, T0 + Q, 10, 10_000)])
    with pytest.raises(NotOwnerError, match=other):
        retire(registry, [RetirementRequest(other, "gen-co", T0 + 2 * Q, T0 + 3 * Q, 10, 10_000)])
    with pytest.raises(ExceedsConsumptionError, match=f"certificate {other}: 'factory' consumed 300 Wh"):
        retire(registry, [RetirementRequest(other, "factory", T0 + 2 * Q, T0 + 3 * Q, 301, 300)])


def test_a_batch_applies_entirely_or_not_at_all() -> None:
    registry, (cid, other) = _granular_park()
    registry = transfer(registry, [cid, other], "gen-co", "factory")
    before = registry
    with pytest.raises(ExceedsConsumptionError):
        retire(
            registry,
            [
                RetirementRequest(cid, "factory", T0, T0 + Q, 600, 1000),
                RetirementRequest(cid, "factory", T0, T0 + Q, 600, 1000),  # same quarter hour: 1200 > 1000 consumed
            ],
        )
    assert registry == before and registry.retirements == ()
    gecs = record_generation(Registry(), "pv", [T0], 86_400, [WH_PER_GEC])
    gecs, (gec,) = issue_gec(gecs, "pv", "g")
    with pytest.raises(UnknownCertificateError, match="GEC:pv:99"):
        transfer(gecs, [gec, "GEC:pv:99"], "g", "g2")
    assert gecs.certificate(gec).owner_id == "g" and gecs.certificate(gec).sales == 0


def test_gecs_are_retired_whole_and_counted_for_the_month() -> None:
    registry = record_generation(Registry(), "pv", [T0], 86_400, [WH_PER_GEC])
    registry, (gec,) = issue_gec(registry, "pv", "factory")
    month = (T0, T0 + 31 * 86_400)
    with pytest.raises(ExceedsVolumeError, match=f"certificate {gec}: a GEC is retired whole"):
        retire(registry, [RetirementRequest(gec, "factory", *month, 500_000, 2 * WH_PER_GEC)])
    registry = retire(registry, [RetirementRequest(gec, "factory", *month, WH_PER_GEC, 2 * WH_PER_GEC)])
    np.testing.assert_allclose(retired_gec_kwh(registry, ["factory", "other"], *month), [1000.0, 0.0])


def test_retired_granular_certificates_feed_the_attribution_as_contract_energy() -> None:
    registry, (cid, other) = _granular_park()
    registry = transfer(registry, [cid, other], "gen-co", "factory")
    registry = retire(
        registry,
        [
            RetirementRequest(cid, "factory", T0, T0 + Q, 1200, 2000),
            RetirementRequest(other, "factory", T0 + 2 * Q, T0 + 3 * Q, 500, 500),
        ],
    )
    contract = retired_kwh_matrix(registry, ["office", "factory"], [T0, T0 + Q, T0 + 2 * Q], Q)
    np.testing.assert_allclose(contract, [[0.0, 0.0, 0.0], [1.2, 0.0, 0.5]])
    result = attribute([[1.0, 1.0, 1.0], [2.0, 2.0, 0.5]], contract_kwh=contract)
    np.testing.assert_allclose(result.contract_kwh[1], [1.2, 0.0, 0.5])


def test_registry_round_trips_through_plain_json() -> None:
    registry, (cid, _) = _granular_park()
    registry = transfer(registry, [cid], "gen-co", "factory")
    registry = retire(registry, [RetirementRequest(cid, "factory", T0, T0 + Q, 100, 1000)])
    text = json.dumps(to_plain(registry))
    assert from_plain(json.loads(text)) == registry


# ------------------------------------------------------------- properties ----

GENERATORS = ("g0", "g1")
PARTIES = ("gen-co", "a", "b")


@st.composite
def operations(draw: st.DrawFn) -> list[tuple]:
    """A random sequence of registry operations, many of them invalid."""
    ops: list[tuple] = [
        ("record", "g0", [T0, T0 + Q, T0 + 2 * Q], draw(st.lists(st.integers(0, 1_500_000), min_size=3, max_size=3))),
        ("gec", "g0", "gen-co", draw(st.booleans())),
        ("granular", "g0", "gen-co"),
        ("transfer", 0, True, "a"),  # certificate 0 is a GEC when the generation reached 1 MWh
    ]
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(
            st.sampled_from(["record", "granular", "gec", "transfer", "transfer", "transfer", "retire", "retire"])
        )
        gen = draw(st.sampled_from(GENERATORS))
        if kind == "record":
            starts = draw(st.lists(st.integers(3, 9), min_size=1, max_size=3))
            amounts = draw(st.lists(st.integers(0, 1_500_000), min_size=len(starts), max_size=len(starts)))
            ops.append(("record", gen, [T0 + Q * s for s in starts], amounts))
        elif kind == "granular":
            ops.append(("granular", gen, draw(st.sampled_from(PARTIES))))
        elif kind == "gec":
            ops.append(("gec", gen, draw(st.sampled_from(PARTIES)), draw(st.booleans())))
        elif kind == "transfer":
            ops.append(
                (
                    "transfer",
                    draw(st.one_of(st.just(0), st.integers(0, 12))),
                    draw(st.sampled_from([True, True, False])),
                    draw(st.sampled_from(PARTIES)),
                )
            )
        else:
            ops.append(
                (
                    "retire",
                    draw(st.integers(0, 12)),
                    draw(st.sampled_from([True, True, True, False])),
                    draw(st.sampled_from([True, True, False])),
                    draw(st.floats(0.0, 1.3)),
                )
            )
    return ops


def _consumption_wh(consumer: str, start: int) -> int:
    """Deterministic consumption of a party in a period, so repeated claims see the same meter [Wh]."""
    return 1_500_000 if consumer == "a" else 400_000 + (start // Q) % 3 * 100_000


def _apply(registry: Registry, op: tuple) -> Registry:
    ids = [c.certificate_id for c in registry.certificates]
    if op[0] == "record":
        return record_generation(registry, op[1], op[2], Q, op[3])
    if op[0] == "granular":
        return issue_granular(registry, op[1], op[2])[0]
    if op[0] == "gec":
        return issue_gec(registry, op[1], op[2], tradable=op[3])[0]
    if not ids:
        return transfer(registry, ["missing"], "a", "b")
    c = registry.certificate(ids[op[1] % len(ids)])
    if op[0] == "transfer":
        return transfer(registry, [c.certificate_id], c.owner_id if op[2] else "a", op[3])
    consumer = c.owner_id if op[2] else "b"
    if c.kind is CertificateKind.GEC:
        period = (T0, T0 + 31 * 86_400)
    else:
        start = c.start_s if op[3] else c.start_s + Q
        period = (start, start + Q)
    volume = round(op[4] * max(c.remaining_wh, 1))
    return retire(
        registry, [RetirementRequest(c.certificate_id, consumer, *period, volume, _consumption_wh(consumer, period[0]))]
    )


def _check_invariants(registry: Registry) -> None:
    for g in registry.generation:
        assert 0 <= g.issued_wh <= g.generated_wh
    for gen in GENERATORS:
        issued = sum(g.issued_wh for g in registry.generation if g.generator_id == gen)
        assert sum(c.volume_wh for c in registry.certificates if c.generator_id == gen) == issued
    retired: dict[str, int] = defaultdict(int)
    claims: dict[tuple, int] = defaultdict(int)
    for r in registry.retirements:
        retired[r.certificate_id] += r.volume_wh
        claims[(r.consumer_id, r.start_s, r.end_s)] += r.volume_wh
        assert r.volume_wh > 0
    assert len({c.certificate_id for c in registry.certificates}) == len(registry.certificates)
    for c in registry.certificates:
        assert 0 <= c.retired_wh == retired[c.certificate_id] <= c.volume_wh
        if c.kind is CertificateKind.GEC:
            assert c.volume_wh == WH_PER_GEC and c.sales <= (1 if c.tradable else 0)
            assert c.retired_wh in (0, WH_PER_GEC)
    for r in registry.retirements:
        c = registry.certificate(r.certificate_id)
        if c.kind is CertificateKind.GRANULAR:
            assert c.start_s <= r.start_s < r.end_s <= c.end_s
    for (consumer, start, _end), wh in claims.items():
        assert wh <= _consumption_wh(consumer, start)


@settings(max_examples=200, deadline=None)
@given(operations())
def test_no_certificate_is_ever_issued_beyond_generation_sold_twice_or_retired_twice(ops: list[tuple]) -> None:
    registry = Registry()
    for op in ops:
        try:
            new = _apply(registry, op)
        except CertificateError as error:
            assert error.certificate_id in str(error)
            continue
        _check_invariants(new)
        registry = new
    for c in registry.certificates:
        if c.remaining_wh == 0:
            with pytest.raises(AlreadyRetiredError, match=c.certificate_id):
                retire(registry, [RetirementRequest(c.certificate_id, c.owner_id, c.start_s, c.start_s + 1, 1, 10**9)])
