"""Hash chain of the append-only ledgers (settlement, carbon): canonical hashing, corrections, tampering found."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp.chain import (
    GENESIS_HASH,
    append,
    canonical_json,
    make_record,
    record_hash,
    verify_chain,
)


def _chain(count: int) -> list[dict]:
    records: list[dict] = []
    for i in range(count):
        records = append(records, {"interval": f"2026-01-01T00:{i:02d}", "green_kwh": 1.5 * i, "enterprise": "e1"})
    return records


def _kinds_at(records: list, **kwargs: object) -> set[tuple[int | None, str]]:
    return {(p.seq, p.kind) for p in verify_chain(records, **kwargs)}


def test_canonical_json_sorts_keys_drops_spaces_and_writes_floats_as_repr() -> None:
    assert canonical_json({"b": 0.1, "a": [1, (2, 3)], "c": np.float64(1e-7), "d": np.int64(4)}) == (
        '{"a":[1,[2,3]],"b":0.1,"c":1e-07,"d":4}'
    )
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(TypeError, match="payload: key 1"):
        canonical_json({1: "x"})


def test_record_hash_covers_predecessor_and_every_byte_of_the_payload() -> None:
    h = record_hash(GENESIS_HASH, {"a": 1})
    assert len(h) == 64 and h == record_hash(GENESIS_HASH, {"a": 1})
    assert h != record_hash(GENESIS_HASH, {"a": 1.0})  # 1 and 1.0 are different JSON
    assert h != record_hash("1" * 64, {"a": 1})


def test_an_untouched_chain_with_corrections_verifies() -> None:
    records = _chain(4)
    records = append(records, {"green_kwh": 2.0}, corrects=2)
    assert records[-1]["corrects"] == 2 and records[-1]["seq"] == 4
    assert verify_chain(records) == []
    assert verify_chain(records, head_hash=records[-1]["hash"]) == []
    assert verify_chain([]) == []
    with pytest.raises(ValueError, match="corrects = 5"):
        make_record(records[-1], {}, corrects=5)


def test_altered_record_is_named() -> None:
    records = _chain(5)
    records[2]["payload"]["green_kwh"] = 99.0
    assert _kinds_at(records) == {(2, "altered")}


def test_altered_and_rehashed_record_is_named_by_its_broken_link() -> None:
    records = _chain(5)
    records[2]["payload"]["green_kwh"] = 99.0
    body = {k: v for k, v in records[2].items() if k not in ("hash", "prev_hash")}
    records[2]["hash"] = record_hash(records[2]["prev_hash"], body)
    assert _kinds_at(records) == {(2, "altered")}


def test_removed_record_is_named() -> None:
    records = _chain(5)
    del records[1]
    assert _kinds_at(records) == {(1, "removed")}
    assert _kinds_at(_chain(5)[1:]) == {(0, "removed")}


def test_reordered_records_are_named() -> None:
    records = _chain(5)
    records[1], records[3] = records[3], records[1]
    assert _kinds_at(records) == {(1, "reordered"), (2, "reordered")}


def test_inserted_record_is_named() -> None:
    records = _chain(5)
    forged = make_record(records[1], {"green_kwh": 1000.0})  # a well-formed record claiming seq 2
    records.insert(2, forged)
    assert _kinds_at(records) == {(2, "inserted")}
    records = _chain(5)
    records.insert(3, copy.deepcopy(records[2]))  # a duplicate copy
    assert _kinds_at(records) == {(2, "inserted")}


def test_truncation_and_full_rewrites_need_the_anchor() -> None:
    records = _chain(5)
    head = records[-1]["hash"]
    assert verify_chain(records[:-1]) == []  # undetectable from the chain alone
    assert _kinds_at(records[:-1], head_hash=head) == {(3, "head_mismatch")}
    rewritten = _chain(2)
    for record in records[2:]:
        rewritten = append(rewritten, {**record["payload"], "green_kwh": 0.0})
    assert verify_chain(rewritten) == []
    assert _kinds_at(rewritten, head_hash=head) == {(4, "head_mismatch")}


def test_malformed_and_bad_corrections_are_reported() -> None:
    records = _chain(3)
    records[1]["hash"] = "xyz"
    assert (None, "malformed") not in _kinds_at(records)
    assert (1, "malformed") in _kinds_at(records)
    records = _chain(3)
    records.append(make_record(records[-1], {"note": "fix"}))
    records[-1]["corrects"] = 7
    assert (3, "bad_correction") in _kinds_at(records)
    assert (None, "malformed") in _kinds_at([*_chain(1), "not a record"])


@st.composite
def tampered(draw: st.DrawFn) -> tuple[list[dict], str, int]:
    """A chain with one random tampering, its kind and the seq it hit."""
    payloads = draw(
        st.lists(
            st.dictionaries(
                st.sampled_from(["kwh", "kg", "id"]),
                st.one_of(st.floats(-1e6, 1e6), st.integers(), st.text(max_size=5)),
                max_size=3,
            ),
            min_size=3,
            max_size=12,
        )
    )
    records: list[dict] = []
    for payload in payloads:
        records = append(records, payload)
    kind = draw(st.sampled_from(["alter", "delete", "reorder", "insert"]))
    k = draw(st.integers(0, len(records) - 2))  # not the newest: that needs the anchor (tested above)
    if kind == "alter":
        records[k]["payload"] = {**records[k]["payload"], "tampered": True}
    elif kind == "delete":
        del records[k]
    elif kind == "reorder":
        j = draw(st.integers(k + 1, len(records) - 1))
        records[k], records[j] = records[j], records[k]
    else:
        records.insert(k + 1, make_record(records[k], {"forged": draw(st.integers())}))
        k += 1
    return records, kind, k


@settings(max_examples=200, deadline=None)
@given(tampered())
def test_any_tampering_is_detected_and_located(case: tuple[list[dict], str, int]) -> None:
    records, kind, seq = case
    problems = verify_chain(records)
    expected = {"alter": "altered", "delete": "removed", "reorder": "reordered", "insert": "inserted"}[kind]
    assert problems, kind
    assert {p.kind for p in problems} == {expected}
    assert min(p.seq for p in problems) == seq
