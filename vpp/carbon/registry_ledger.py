"""The certificate registry persisted as operations in the hash-chained ledger ``"certificates"``.

Each record's payload is one operation of :mod:`vpp.carbon.certificates`
(``generation``, ``issue_granular``, ``issue_gec``, ``transfer``,
``retire``). The registry is the replay of every operation in sequence
order. An operation that breaks a rule against the state before it (e.g.
two concurrent retirements of the same certificate, both appended) is
*void*: it is kept in the ledger, has no effect, and :func:`replay` names
it with its error. So no certificate is ever counted, sold or retired
twice, whatever the interleaving of writers.

Issuance from metered generation reads the generation meter of an
enterprise (:mod:`vpp.carbon.inputs`) and records, per interval, the part
of it the park's attribution already gives to a consumer as
``claimed_wh``: only the generation that left the park is certified (one
claim per kWh, see :mod:`vpp.carbon.certificates`). Retirement checks
against the consumer's metered consumption of the period (the month for a
GEC, the certificate's own 15-minute interval for a granular one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from vpp.carbon import certificates as core
from vpp.carbon.certificates import CertificateError, Registry, RetirementRequest
from vpp.carbon.inputs import INTERVAL_S, month_period, read_inputs
from vpp.carbon.ledger import exported_generation_kwh, generator_id_of
from vpp.store.base import Store

LEDGER = "certificates"


def apply_operation(registry: Registry, op: Mapping[str, Any]) -> Registry:
    """``registry`` after one operation; CertificateError when it breaks a rule."""
    kind = op.get("op")
    if kind == "generation":
        return core.record_generation(
            registry, op["generator_id"], np.array(op["start_s"], dtype=np.int64), int(op["interval_s"]),
            np.array(op["generated_wh"], dtype=np.int64),
            None if op.get("claimed_wh") is None else np.array(op["claimed_wh"], dtype=np.int64),
        )  # fmt: skip
    if kind == "issue_granular":
        starts = op.get("start_s")
        return core.issue_granular(
            registry, op["generator_id"], op["owner_id"], None if starts is None else np.array(starts, dtype=np.int64)
        )[0]
    if kind == "issue_gec":
        return core.issue_gec(registry, op["generator_id"], op["owner_id"], tradable=op["tradable"], until_s=op["until_s"])[0]
    if kind == "transfer":
        return core.transfer(registry, op["certificate_ids"], op["from_owner"], op["to_owner"])
    if kind == "retire":
        return core.retire(registry, [RetirementRequest(**r) for r in op["requests"]])
    raise ValueError(f"certificate ledger operation {kind!r} is unknown")


def replay(records: Sequence[Mapping[str, Any]]) -> tuple[Registry, dict[int, str]]:
    """The registry after every record, and the void records: seq -> why (pure)."""
    registry, void = Registry(), {}
    for record in records:
        try:
            registry = apply_operation(registry, record["payload"])
        except CertificateError as exc:
            void[int(record["seq"])] = str(exc)
    return registry, void


async def load_registry(store: Store) -> Registry:
    """The current registry."""
    return replay(await store.ledger_records(LEDGER))[0]


async def _commit(store: Store, ops: list[dict[str, Any]]) -> Registry:
    """Append ``ops`` (after a dry run on the current state); raise the error of any that turned out void."""
    registry = await load_registry(store)
    for op in ops:
        registry = apply_operation(registry, op)  # raises before anything is written
    written = await store.append_ledger(LEDGER, ops)
    registry, void = replay(await store.ledger_records(LEDGER))
    for record in written:
        if int(record["seq"]) in void:
            raise CertificateError("*", f"lost a concurrent race: {void[int(record['seq'])]}")
    return registry


async def issue(
    store: Store, enterprise_id: str, month: str, kind: str = "granular", *, zone: str = "Asia/Shanghai",
    split_rule: str = "pro_rata",
) -> tuple[str, ...]:
    """Record the enterprise's metered generation of ``month`` (intervals not yet recorded) and issue certificates.

    ``kind`` is ``granular`` (one per 15-minute interval, Wh) or ``gec``
    (whole MWh, tradable). Only the generation that left the park is
    issuable; the rest is recorded as ``claimed_wh`` (``split_rule`` of the
    shared supplies, as in the carbon run). Returns the ids issued.
    """
    if kind not in ("granular", "gec"):
        raise ValueError(f"kind {kind!r} is not 'granular' or 'gec'")
    period = month_period(month, zone)
    inputs = await read_inputs(store, period)
    if enterprise_id not in inputs.enterprise_ids:
        raise ValueError(f"enterprise_id {enterprise_id!r} is not in the park")
    e = inputs.enterprise_ids.index(enterprise_id)
    generator = generator_id_of(enterprise_id)
    before = await load_registry(store)
    recorded = {g.start_s for g in before.generation if g.generator_id == generator}
    starts = inputs.period.start_s
    wh = np.round(inputs.generation_kwh[e] * 1000.0).astype(np.int64)
    # Floor the export so rounding never makes a claimed Wh issuable.
    free = np.minimum(np.floor(exported_generation_kwh(inputs, split_rule)[e] * 1000.0 + 1e-6).astype(np.int64), wh)
    new = ~inputs.missing[e] & ~np.isin(starts, list(recorded)) & (wh > 0)
    ops: list[dict[str, Any]] = []
    if new.any():
        ops.append({"op": "generation", "generator_id": generator, "start_s": starts[new].tolist(),
                    "interval_s": INTERVAL_S, "generated_wh": wh[new].tolist(),
                    "claimed_wh": (wh - free)[new].tolist()})  # fmt: skip
    if kind == "granular":
        ops.append({"op": "issue_granular", "generator_id": generator, "owner_id": enterprise_id, "start_s": None})
    else:
        ops.append({"op": "issue_gec", "generator_id": generator, "owner_id": enterprise_id, "tradable": True,
                    "until_s": int(period.end.timestamp())})  # fmt: skip
    known = {c.certificate_id for c in before.certificates}
    after = await _commit(store, ops)
    return tuple(c.certificate_id for c in after.certificates if c.certificate_id not in known)


async def transfer(store: Store, certificate_ids: Sequence[str], from_owner: str, to_owner: str) -> None:
    """Move certificates between owners (all or none)."""
    await _commit(store, [{"op": "transfer", "certificate_ids": list(certificate_ids), "from_owner": from_owner, "to_owner": to_owner}])


async def retire(
    store: Store, enterprise_id: str, certificate_ids: Sequence[str], month: str, *, zone: str = "Asia/Shanghai"
) -> list[dict[str, Any]]:
    """Retire certificates of ``enterprise_id`` against its metered consumption (all or none).

    A GEC is retired whole for ``month``; a granular certificate for its
    own interval, up to what the enterprise consumed in it. Returns the
    retirements made [Wh].
    """
    registry = await load_registry(store)
    period = month_period(month, zone)
    inputs = await read_inputs(store, period)
    if enterprise_id not in inputs.enterprise_ids:
        raise ValueError(f"enterprise_id {enterprise_id!r} is not in the park")
    e = inputs.enterprise_ids.index(enterprise_id)
    consumption_wh = np.round(inputs.consumption_kwh[e] * 1000.0).astype(np.int64)
    requests = []
    for cid in certificate_ids:
        certificate = registry.certificate(cid)
        if certificate.kind is core.CertificateKind.GEC:
            start, end, used = int(period.start.timestamp()), int(period.end.timestamp()), int(consumption_wh.sum())
            volume = certificate.volume_wh
        else:
            start, end = certificate.start_s, certificate.end_s
            t = int(np.searchsorted(period.start_s, start))
            if t >= period.intervals or period.start_s[t] != start:
                raise core.OutsideIntervalError(cid, f"its interval starting {start} is not in {month}")
            used = int(consumption_wh[t])
            volume = max(min(certificate.remaining_wh, used), 1)
        requests.append({"certificate_id": cid, "consumer_id": enterprise_id, "start_s": start, "end_s": end,
                         "volume_wh": volume, "consumption_wh": used})  # fmt: skip
    await _commit(store, [{"op": "retire", "requests": requests}])
    return requests


def certificate_rows(registry: Registry, owner_id: str | None = None) -> list[dict[str, Any]]:
    """Certificates (of one owner, or all) as JSON data [Wh]."""
    rows = []
    for c in registry.certificates:
        if owner_id is None or c.owner_id == owner_id:
            rows.append({
                "certificate_id": c.certificate_id, "kind": c.kind.value, "generator_id": c.generator_id,
                "start": datetime.fromtimestamp(c.start_s, tz=timezone.utc).isoformat(),
                "end": datetime.fromtimestamp(c.end_s, tz=timezone.utc).isoformat(),
                "volume_wh": c.volume_wh, "retired_wh": c.retired_wh, "owner_id": c.owner_id, "tradable": c.tradable,
            })  # fmt: skip
    return rows

