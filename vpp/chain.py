"""Hash chain of an append-only ledger: pure helpers to build and verify it.

A record is a mapping::

    {"seq": 7, "prev_hash": "<64 hex>", "hash": "<64 hex>", "payload": {...}}

optionally with ``"corrects": 3`` when it corrects record 3 (records are
never changed; a correction is a new record). ``seq`` starts at 0 and
grows by one. The record's *body* is everything but ``hash`` and
``prev_hash`` (so ``seq``, ``payload`` and ``corrects`` are all covered),
and

    hash = record_hash(prev_hash, body)
         = SHA-256( prev_hash + "\\n" + canonical JSON of body ), hex

where the first record's ``prev_hash`` is :data:`GENESIS_HASH` and every
other's is its predecessor's ``hash``. Canonical JSON: keys sorted, no
whitespace, UTF-8, floats as Python's ``repr`` (shortest round-trip), NaN
and infinities refused, numpy scalars as their Python values, tuples as
lists; keys must be strings.

:func:`verify_chain` reports, by sequence number, records that were
altered (content does not match its hash, or it no longer chains to its
successor), removed (a gap in ``seq``), reordered (stored out of ``seq``
order), inserted (a second record claiming a ``seq``) and corrections
pointing nowhere. A chain rewritten from some record to the end, every
hash recomputed, is consistent in itself: only an anchor kept elsewhere
(``head_hash``, e.g. published or stored apart) reveals that, or a
truncation of the newest records.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

GENESIS_HASH: Final = "0" * 64
"""``prev_hash`` of the first record."""

_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")

ProblemKind = Literal["malformed", "altered", "removed", "reordered", "inserted", "bad_correction", "head_mismatch"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a chain."""

    seq: int | None
    """Sequence number concerned; None when a record has no readable one [unitless]."""
    kind: ProblemKind
    message: str


# --------------------------------------------------------------- hashing ----


def _plain(value: Any, path: str = "payload") -> Any:
    """``value`` with numpy scalars/arrays and tuples turned into JSON types; TypeError naming ``path`` otherwise."""
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{path}: key {key!r} is not a string")
        return {key: _plain(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), path)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"{path}: {type(value).__name__} is not JSON data")


def canonical_json(value: Any) -> str:
    """Canonical JSON text of ``value`` (rules in the module docstring)."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(prev_hash: str, payload: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``prev_hash`` and the canonical JSON of ``payload``.

    Parameters
    ----------
    prev_hash : str
        Hash of the previous record, or :data:`GENESIS_HASH` [hex].
    payload : mapping
        Content hashed; for a record, its body (all but ``hash`` and ``prev_hash``).
    """
    text = prev_hash + "\n" + canonical_json(payload)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _body(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in ("hash", "prev_hash")}


def make_record(
    previous: Mapping[str, Any] | None, payload: Mapping[str, Any], *, corrects: int | None = None
) -> dict[str, Any]:
    """The record that follows ``previous`` (None for the first) with ``payload``.

    Parameters
    ----------
    previous : mapping or None
        Last record of the chain.
    payload : mapping
        Content of the new record.
    corrects : int, optional
        Sequence number of the earlier record this one corrects [unitless].
    """
    seq = 0 if previous is None else int(previous["seq"]) + 1
    if corrects is not None and not 0 <= corrects < seq:
        raise ValueError(f"corrects = {corrects} must name an earlier record (0..{seq - 1})")
    body: dict[str, Any] = {"seq": seq, "payload": _plain(payload)}
    if corrects is not None:
        body["corrects"] = int(corrects)
    prev_hash = GENESIS_HASH if previous is None else str(previous["hash"])
    return {**body, "prev_hash": prev_hash, "hash": record_hash(prev_hash, body)}


def append(records: Sequence[Mapping[str, Any]], payload: Mapping[str, Any], *, corrects: int | None = None) -> list:
    """A new list: ``records`` plus the record for ``payload``."""
    return [*records, make_record(records[-1] if records else None, payload, corrects=corrects)]


# ------------------------------------------------------------- verifying ----


def _malformed(record: Any) -> str | None:
    """Why ``record`` is not a well-formed record, or None."""
    if not isinstance(record, Mapping):
        return f"is a {type(record).__name__}, not a mapping"
    seq = record.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return f"seq {seq!r} is not a non-negative integer"
    for key in ("hash", "prev_hash"):
        if not isinstance(record.get(key), str) or not _HEX64.match(record[key]):
            return f"{key} is not 64 lowercase hex digits"
    if not isinstance(record.get("payload"), Mapping):
        return "payload is not a mapping"
    return None


def _self_consistent(record: Mapping[str, Any]) -> bool:
    try:
        return record_hash(record["prev_hash"], _body(record)) == record["hash"]
    except (TypeError, ValueError):
        return False


def _reordered(records: list[Mapping[str, Any]]) -> list[Problem]:
    problems, highest = [], -1
    for record in records:
        if record["seq"] < highest:
            problems.append(
                Problem(record["seq"], "reordered", f"record {record['seq']} is stored after record {highest}")
            )
        highest = max(highest, record["seq"])
    return problems


def _pick(candidates: list[Mapping[str, Any]], prev_hash: str | None, next_prev: set[str]) -> Mapping[str, Any]:
    """The genuine record among those claiming one seq: self-consistent, chained from before and to after."""

    def score(record: Mapping[str, Any]) -> tuple[bool, bool, bool]:
        return (_self_consistent(record), record["prev_hash"] == prev_hash, record["hash"] in next_prev)

    return max(candidates, key=score)


def verify_chain(records: Sequence[Any], *, head_hash: str | None = None) -> list[Problem]:
    """Everything wrong with a stored chain, by sequence number; empty when it verifies.

    Parameters
    ----------
    records : sequence of mappings
        The chain as stored, in stored order.
    head_hash : str, optional
        Hash the newest record must have (an anchor kept outside the
        ledger); detects truncation and wholesale rewrites [hex].
    """
    problems: list[Problem] = []
    good: list[Mapping[str, Any]] = []
    for position, record in enumerate(records):
        reason = _malformed(record)
        if reason is None:
            good.append(record)
        else:
            seq = record.get("seq") if isinstance(record, Mapping) and isinstance(record.get("seq"), int) else None
            problems.append(Problem(seq, "malformed", f"record at position {position} {reason}"))
    problems += _reordered(good)
    by_seq: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for record in good:
        by_seq[record["seq"]].append(record)
    problems += _walk(by_seq, head_hash)
    return sorted(problems, key=lambda p: (-1 if p.seq is None else p.seq, p.kind))


def _walk(by_seq: dict[int, list[Mapping[str, Any]]], head_hash: str | None) -> list[Problem]:
    """Walk seq 0..max: gaps, duplicates, content and links, corrections, head."""
    problems: list[Problem] = []
    accepted: dict[int, Mapping[str, Any]] = {}
    last = max(by_seq, default=-1)
    for seq in range(last + 1):
        if seq not in by_seq:
            problems.append(Problem(seq, "removed", f"record {seq} is missing (gap in the sequence)"))
            continue
        before = accepted.get(seq - 1)
        prev_hash = GENESIS_HASH if seq == 0 else (before["hash"] if before is not None else None)
        following = {r["prev_hash"] for r in by_seq.get(seq + 1, [])}
        record = _pick(by_seq[seq], prev_hash, following)
        for other in by_seq[seq]:
            if other is not record:
                problems.append(
                    Problem(seq, "inserted", f"a second record claims seq {seq}; it does not fit the chain")
                )
        accepted[seq] = record
        problems += _check_record(seq, record, prev_hash, before is not None or seq == 0)
    if head_hash is not None and (last < 0 or accepted[last]["hash"] != head_hash):
        problems.append(
            Problem(
                last if last >= 0 else None,
                "head_mismatch",
                f"the newest record {last} does not carry the anchored head hash: records were truncated or rewritten",
            )
        )
    return problems


def _broken_link(seq: int) -> Problem:
    """Record ``seq`` is intact but does not follow its predecessor: the predecessor was replaced."""
    if seq == 0:
        return Problem(0, "altered", "record 0 does not start from the genesis hash")
    return Problem(
        seq - 1,
        "altered",
        f"record {seq} does not chain to record {seq - 1}: record {seq - 1} was replaced (re-hashed) "
        f"or record {seq}'s link was rewritten",
    )


def _check_record(seq: int, record: Mapping[str, Any], prev_hash: str | None, linked: bool) -> list[Problem]:
    """Content, link to the accepted predecessor, and correction target of one accepted record."""
    problems: list[Problem] = []
    if not _self_consistent(record):
        problems.append(Problem(seq, "altered", f"record {seq} does not match its hash: its content was changed"))
    elif linked and record["prev_hash"] != prev_hash:
        problems.append(_broken_link(seq))
    corrects = record.get("corrects")
    if corrects is not None and (
        isinstance(corrects, bool) or not isinstance(corrects, int) or not 0 <= corrects < seq
    ):
        problems.append(
            Problem(seq, "bad_correction", f"record {seq} corrects {corrects!r}, which is not an earlier record")
        )
    return problems
