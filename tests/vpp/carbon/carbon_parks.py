"""Random parks for the carbon property tests: interval energies, the meters and telemetry that measure
them, and certificate registries built the way :mod:`vpp.carbon.registry_ledger` builds them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vpp.carbon.certificates import CertificateError, Registry
from vpp.carbon.inputs import (
    INTERVAL_S,
    BatteryInfo,
    Captured,
    Inputs,
    Layout,
    Period,
    PowerSamples,
    Registers,
)
from vpp.carbon.ledger import exported_generation_kwh, generator_id_of
from vpp.carbon.registry_ledger import apply_operation

T0 = datetime(2026, 6, 30, 16, tzinfo=timezone.utc)  # 2026-07-01 00:00 in Shanghai
SAMPLE_S = 300
"""Battery telemetry period [s]."""


def energies(shape: tuple[int, ...], high: float = 50.0) -> st.SearchStrategy[np.ndarray]:
    """Interval energies with many exact zeros, as metered data has [kWh]."""
    element = st.one_of(st.just(0.0), st.sampled_from([1.0, 2.5, 10.0]), st.floats(0.0, high, allow_subnormal=False))
    return arrays(np.float64, shape, elements=element)


@dataclass(frozen=True)
class ParkEnergies:
    """What physically happened, per interval [kWh]; the last enterprise, ``park``, owns the shared PV."""

    period: Period
    enterprise_ids: tuple[str, ...]
    consumption_kwh: np.ndarray
    """(E, T), excluding battery charging [kWh]."""
    generation_kwh: np.ndarray
    """(E, T): own PV, and the park row's shared PV [kWh]."""
    battery_owner: np.ndarray
    """(B,) [unitless]."""
    charge_kwh: np.ndarray
    """(B, T) [kWh]."""
    discharge_kwh: np.ndarray
    """(B, T) [kWh]."""
    efficiency: float
    """Charge and discharge efficiency of every battery [unitless]."""

    @property
    def net_import_kwh(self) -> np.ndarray:
        """Import - export of each grid meter, (E, T) [kWh]."""
        net = self.consumption_kwh - self.generation_kwh
        np.add.at(net, self.battery_owner, self.charge_kwh - self.discharge_kwh)
        return net


@st.composite
def park_energies(draw: st.DrawFn, days: tuple[int, int] = (0, 0), intervals: tuple[int, int] = (2, 12)) -> ParkEnergies:
    """A park of 1-3 enterprises plus ``park`` (shared PV) over some intervals or days."""
    count = draw(st.integers(*days)) * 96 if days[1] else draw(st.integers(*intervals))
    enterprises = draw(st.integers(1, 3)) + 1
    ids = tuple(f"e{i:02d}" for i in range(1, enterprises)) + ("park",)
    consumption = draw(energies((enterprises, count)))
    consumption[-1] *= draw(st.sampled_from([0.0, 0.1, 1.0]))  # the park operator consumes little
    generation = draw(energies((enterprises, count), high=80.0))
    generation[:-1] *= draw(arrays(np.float64, (enterprises - 1, 1), elements=st.sampled_from([0.0, 1.0])))
    batteries = draw(st.integers(0, 2))
    return ParkEnergies(
        period=Period(T0, T0 + timedelta(seconds=INTERVAL_S * count), label="2026-07"),
        enterprise_ids=ids,
        consumption_kwh=consumption,
        generation_kwh=generation,
        battery_owner=draw(arrays(np.intp, batteries, elements=st.integers(0, enterprises - 1))),
        charge_kwh=draw(energies((batteries, count), high=20.0)),
        discharge_kwh=draw(energies((batteries, count), high=20.0)),
        efficiency=draw(st.sampled_from([0.9, 0.95, 1.0])),
    )


def as_inputs(park: ParkEnergies) -> Inputs:
    """The :class:`Inputs` that parsing the park's meters would give."""
    net = park.net_import_kwh
    shared = park.generation_kwh[-1:].copy()
    own = park.generation_kwh.copy()
    own[-1] = 0.0
    count = park.battery_owner.size
    return Inputs(
        period=park.period,
        enterprise_ids=park.enterprise_ids,
        import_kwh=np.maximum(net, 0.0),
        export_kwh=np.maximum(-net, 0.0),
        generation_kwh=park.generation_kwh,
        own_pv_kwh=own,
        consumption_kwh=park.consumption_kwh,
        shared_ids=("park",),
        shared_green_kwh=shared,
        battery_ids=tuple(f"b{b}" for b in range(count)),
        battery_owner=park.battery_owner,
        charge_kwh=park.charge_kwh,
        discharge_kwh=park.discharge_kwh,
        charge_efficiency=np.full(count, park.efficiency),
        discharge_efficiency=np.full(count, park.efficiency),
        initial_soc_kwh=np.full(count, np.nan),
        missing=np.zeros(park.consumption_kwh.shape, dtype=bool),
    )


# ------------------------------------------------------------- metering ----


def _registers(boundaries_s: np.ndarray, imports: np.ndarray, exports: np.ndarray, offset: float) -> Registers:
    """Cumulative registers read on every interval boundary [kWh]."""
    return Registers(
        ts_s=boundaries_s.copy(),
        import_kwh=offset + np.concatenate([[0.0], np.cumsum(imports)]),
        export_kwh=offset + np.concatenate([[0.0], np.cumsum(exports)]),
    )


def _battery_samples(start_s: float, charge: np.ndarray, discharge: np.ndarray) -> PowerSamples:
    """Telemetry every 5 minutes: the first third of each interval charging, the rest discharging [kW]."""
    per = INTERVAL_S // SAMPLE_S
    power = np.zeros((charge.size, per))
    power[:, 0] = -charge / (SAMPLE_S / 3600.0)
    power[:, 1:] = (discharge / ((per - 1) * SAMPLE_S / 3600.0))[:, None]
    p_kw = np.concatenate([[0.0], power.reshape(-1)])
    ts_s = start_s + SAMPLE_S * np.arange(p_kw.size, dtype=np.float64)
    return PowerSamples(ts_s=ts_s, p_kw=p_kw, soc_kwh=np.full(p_kw.size, 5.0))


def as_captured(park: ParkEnergies) -> Captured:
    """The meter readings and battery telemetry that measure the park (the input of :func:`vpp.carbon.inputs.parse`)."""
    boundaries = park.period.boundaries_s
    net = park.net_import_kwh
    ids = park.enterprise_ids
    meters = {}
    for e, eid in enumerate(ids):
        meters[f"{eid}-grid"] = _registers(boundaries, np.maximum(net[e], 0.0), np.maximum(-net[e], 0.0), 1000.0 * e)
        meters[f"{eid}-gen"] = _registers(boundaries, np.zeros(boundaries.size - 1), park.generation_kwh[e], 50.0)
    telemetry = {
        f"b{b}": _battery_samples(boundaries[0], park.charge_kwh[b], park.discharge_kwh[b])
        for b in range(park.battery_owner.size)
    }
    layout = Layout(
        enterprise_ids=ids,
        grid_meter={eid: f"{eid}-grid" for eid in ids},
        generation_meter={eid: f"{eid}-gen" for eid in ids},
        own_pv={eid: (f"{eid}-pv",) for eid in ids[:-1]},
        shared_pv={"park": ("park-pv",)},
        batteries=tuple(
            BatteryInfo(f"b{b}", ids[int(o)], park.efficiency, park.efficiency) for b, o in enumerate(park.battery_owner)
        ),
    )
    return Captured(period=park.period, layout=layout, meters=meters, telemetry=telemetry)


# --------------------------------------------------------- certificates ----


@st.composite
def registry_ops(draw: st.DrawFn, inputs: Inputs, legacy: bool) -> list[dict]:
    """Certificate-ledger operations on the park: each enterprise's generation recorded and certified, an
    off-park wind farm's too, random transfers, and retirements against metered consumption.

    With ``legacy`` the park's generation is recorded without ``claimed_wh``
    (gross issuance, as before the one-claim rule), so certificates of
    self-consumed PV exist and the attribution must refuse to count them.
    """
    starts = inputs.period.start_s
    ids = inputs.enterprise_ids
    exported = exported_generation_kwh(inputs)
    ops: list[dict] = []
    for e, eid in enumerate(ids):
        wh = np.round(inputs.generation_kwh[e] * 1000.0).astype(np.int64)
        free = np.minimum(np.floor(exported[e] * 1000.0 + 1e-6).astype(np.int64), wh)
        keep = wh > 0
        if keep.any():
            op = {"op": "generation", "generator_id": generator_id_of(eid), "start_s": starts[keep].tolist(),
                  "interval_s": INTERVAL_S, "generated_wh": wh[keep].tolist()}  # fmt: skip
            if not legacy:
                op["claimed_wh"] = (wh - free)[keep].tolist()
            ops.append(op)
            ops.append({"op": "issue_granular", "generator_id": generator_id_of(eid), "owner_id": eid, "start_s": None})
    wind = draw(arrays(np.int64, starts.size, elements=st.integers(0, 30_000)))
    ops.append({"op": "generation", "generator_id": "wind", "start_s": starts.tolist(), "interval_s": INTERVAL_S,
                "generated_wh": wind.tolist()})  # fmt: skip
    ops.append({"op": "issue_granular", "generator_id": "wind", "owner_id": draw(st.sampled_from(ids)), "start_s": None})
    registry = Registry()
    for op in ops:
        registry = apply_operation(registry, op)
    consumption_wh = np.round(inputs.consumption_kwh * 1000.0).astype(np.int64)
    rows = {eid: e for e, eid in enumerate(ids)}
    for _ in range(draw(st.integers(0, 12))):
        if not registry.certificates:
            break
        c = draw(st.sampled_from(registry.certificates))
        if draw(st.booleans()):
            op = {"op": "transfer", "certificate_ids": [c.certificate_id], "from_owner": c.owner_id,
                  "to_owner": draw(st.sampled_from(ids))}  # fmt: skip
        else:
            t = int(np.searchsorted(starts, c.start_s))
            used = int(consumption_wh[rows[c.owner_id], t])
            volume = draw(st.integers(1, max(1, min(c.remaining_wh, used))))
            op = {"op": "retire", "requests": [{"certificate_id": c.certificate_id, "consumer_id": c.owner_id,
                  "start_s": c.start_s, "end_s": c.end_s, "volume_wh": volume, "consumption_wh": used}]}  # fmt: skip
        try:
            registry = apply_operation(registry, op)
        except CertificateError:
            continue  # a refused operation is not written to the ledger
        ops.append(op)
    return ops


def check_retirements(registry: Registry, inputs: Inputs) -> None:
    """No certificate retired beyond its volume; no consumer-interval claimed beyond its consumption [Wh]."""
    by_certificate: dict[str, int] = {}
    by_claim: dict[tuple[str, int], int] = {}
    for r in registry.retirements:
        by_certificate[r.certificate_id] = by_certificate.get(r.certificate_id, 0) + r.volume_wh
        by_claim[(r.consumer_id, r.start_s)] = by_claim.get((r.consumer_id, r.start_s), 0) + r.volume_wh
    for c in registry.certificates:
        assert by_certificate.get(c.certificate_id, 0) == c.retired_wh <= c.volume_wh
    consumption_wh = np.round(inputs.consumption_kwh * 1000.0).astype(np.int64)
    rows = {eid: e for e, eid in enumerate(inputs.enterprise_ids)}
    for (consumer, start), wh in by_claim.items():
        t = int(np.searchsorted(inputs.period.start_s, start))
        assert wh <= consumption_wh[rows[consumer], t]
