"""Live plant state: the fleet as aligned numpy arrays, and what it can do up and down.

``build_snapshot`` turns the enrolled devices and their latest telemetry into
arrays (one row per device); ``plant_state`` sums them into the figures the
grid reads. Both are pure; the service calls them on every control step.

The enrolment columns (limits, efficiencies, protected hours by local hour)
change only when the fleet does, so they are computed once into a
``FleetStatics`` and a caller-owned ``SnapshotCache`` reuses them. The
service also keeps the telemetry as columns, updated as batches arrive
(``vpp.live_telemetry``), so its control step only copies arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from vpp.live_telemetry import LiveTelemetry, TelemetryColumns
from vpp.model import Battery, Device, TelemetrySample

SUSTAIN_DURATIONS_MIN = (15, 60, 240)
"""Durations for which the plant reports how much it can hold up or down [min]."""


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet at one instant, one array element per enrolled device (same order as ``device_ids``)."""

    ts: datetime
    device_ids: tuple[str, ...]
    enterprise_ids: tuple[str, ...]
    kinds: tuple[str, ...]
    adapters: tuple[str, ...]
    p_kw: np.ndarray  # measured power, + into the park [kW]; 0 where never seen
    p_min_kw: np.ndarray  # lowest settable power now [kW]
    p_max_kw: np.ndarray  # highest settable power now [kW]
    soc_kwh: np.ndarray  # state of charge [kWh]; NaN for non-batteries
    soc_min_kwh: np.ndarray  # [kWh]; NaN for non-batteries
    soc_max_kwh: np.ndarray  # [kWh]; NaN for non-batteries
    charge_efficiency: np.ndarray  # [unitless]; 1 for non-batteries
    discharge_efficiency: np.ndarray  # [unitless]; 1 for non-batteries
    ramp_kw_per_s: np.ndarray  # [kW/s]; inf when unlimited
    cost_cny_per_kwh: np.ndarray  # marginal cost of moving the device [CNY/kWh]
    max_interruption_h: np.ndarray  # longest dispatch accepted [h]; inf when unlimited
    notice_h: np.ndarray  # notice needed before a dispatch [h]
    max_events_per_day: np.ndarray  # dispatch events accepted per local day [1/day]; inf when unlimited
    fresh: np.ndarray  # bool: online and reported within the staleness limit
    protected: np.ndarray  # bool: inside one of its protected hours now
    last_seen: tuple[datetime | None, ...]

    @property
    def dispatchable(self) -> np.ndarray:
        """Devices that may receive a set-point now [bool]."""
        return self.fresh & ~self.protected

    def __len__(self) -> int:
        return len(self.device_ids)


@dataclass(frozen=True, eq=False)
class FleetStatics:
    """The enrolment-side columns of a snapshot: what does not change between two control steps.

    Built once per device list by ``FleetStatics.of``; ``snapshot_from_statics``
    then only gathers the telemetry part. The arrays are never handed out:
    every snapshot gets its own copies.
    """

    devices: tuple[Device, ...]
    device_ids: tuple[str, ...]
    enterprise_ids: tuple[str, ...]
    kinds: tuple[str, ...]
    adapters: tuple[str, ...]
    soc_min_kwh: np.ndarray  # [kWh]; NaN for non-batteries
    soc_max_kwh: np.ndarray  # [kWh]; NaN for non-batteries
    charge_efficiency: np.ndarray  # [unitless]; 1 for non-batteries
    discharge_efficiency: np.ndarray  # [unitless]; 1 for non-batteries
    ramp_kw_per_s: np.ndarray  # [kW/s]; inf when unlimited
    cost_cny_per_kwh: np.ndarray  # [CNY/kWh]
    max_interruption_h: np.ndarray  # [h]; inf when unlimited
    notice_h: np.ndarray  # [h]
    max_events_per_day: np.ndarray  # [1/day]; inf when unlimited
    protected_by_hour: np.ndarray  # bool, shape (24, devices): row h = protected at local hour h

    @classmethod
    def of(cls, devices: Sequence[Device]) -> FleetStatics:
        """Columns of ``devices`` in their order (one Python pass over the fleet)."""
        n = len(devices)
        soc_min, soc_max = np.full(n, np.nan), np.full(n, np.nan)
        eta_c, eta_d = np.ones(n), np.ones(n)
        protected = np.zeros((24, n), dtype=bool)
        for i, device in enumerate(devices):
            if isinstance(device, Battery):
                soc_min[i] = device.soc_min_kwh
                soc_max[i] = device.soc_upper_kwh
                eta_c[i] = device.charge_efficiency
                eta_d[i] = device.discharge_efficiency
            for hours in device.protected_hours:
                protected[hours.start_hour : hours.end_hour, i] = True
        return cls(
            devices=tuple(devices),
            device_ids=tuple(d.id for d in devices),
            enterprise_ids=tuple(d.enterprise_id for d in devices),
            kinds=tuple(str(d.kind) for d in devices),
            adapters=tuple(d.adapter for d in devices),
            soc_min_kwh=soc_min,
            soc_max_kwh=soc_max,
            charge_efficiency=eta_c,
            discharge_efficiency=eta_d,
            ramp_kw_per_s=_column(devices, "ramp_kw_per_s", np.inf),
            cost_cny_per_kwh=_column(devices, "marginal_cost_cny_per_kwh", 0.0),
            max_interruption_h=_column(devices, "max_interruption_min", np.inf) / 60.0,
            notice_h=_column(devices, "notice_min", 0.0) / 60.0,
            max_events_per_day=_column(devices, "max_events_per_day", np.inf),
            protected_by_hour=protected,
        )

    def matches(self, devices: Sequence[Device]) -> bool:
        """True when ``devices`` are these devices in this order (identity first, so a kept list checks fast)."""
        return len(devices) == len(self.devices) and self.devices == tuple(devices)

    def __len__(self) -> int:
        return len(self.devices)


class SnapshotCache:
    """Keeps the ``FleetStatics`` of the last device list its owner asked about.

    Owned by the caller (one per service): a snapshot of an unchanged fleet
    skips the per-device enrolment work; a changed list rebuilds the statics.
    """

    def __init__(self) -> None:
        self._statics: FleetStatics | None = None

    def statics(self, devices: Sequence[Device]) -> FleetStatics:
        """The statics of ``devices``, rebuilt only when the list changed."""
        if self._statics is None or not self._statics.matches(devices):
            self._statics = FleetStatics.of(devices)
        return self._statics

    def build(
        self,
        devices: Sequence[Device],
        latest: Mapping[str, TelemetrySample],
        now: datetime,
        stale_after_s: float,
        local_zone: ZoneInfo,
    ) -> FleetSnapshot:
        """Same as ``build_snapshot`` (same arguments and units), reusing the statics of an unchanged fleet."""
        return snapshot_from_statics(self.statics(devices), latest, now, stale_after_s, local_zone)

    def build_live(
        self, devices: Sequence[Device], live: LiveTelemetry, now: datetime, stale_after_s: float, local_zone: ZoneInfo
    ) -> FleetSnapshot:
        """``build`` from telemetry kept as columns (``LiveTelemetry``): no per-device work for an unchanged fleet."""
        statics = self.statics(devices)
        return snapshot_from_columns(statics, live.columns(statics.device_ids), now, stale_after_s, local_zone)


def build_snapshot(
    devices: Sequence[Device],
    latest: Mapping[str, TelemetrySample],
    now: datetime,
    stale_after_s: float,
    local_zone: ZoneInfo,
) -> FleetSnapshot:
    """Align devices with their latest telemetry.

    A device is *fresh* when its latest sample is online and no older than
    ``stale_after_s`` [s]; a stale device keeps its last values in the arrays
    but is excluded from totals and dispatch. Callers that build snapshots of
    one fleet repeatedly should hold a ``SnapshotCache`` instead.
    """
    return snapshot_from_statics(FleetStatics.of(devices), latest, now, stale_after_s, local_zone)


_AGE_EXACT_WITHIN_S = 1e-3
"""Float ages this close to the staleness limit are recomputed exactly from the datetimes [s]."""


def snapshot_from_statics(
    statics: FleetStatics,
    latest: Mapping[str, TelemetrySample],
    now: datetime,
    stale_after_s: float,
    local_zone: ZoneInfo,
) -> FleetSnapshot:
    """``build_snapshot`` for the fleet ``statics`` describes: only the telemetry is gathered per call.

    ``now`` must be timezone-aware; ``stale_after_s`` [s].
    """
    return snapshot_from_columns(statics, TelemetryColumns.gather(statics.device_ids, latest), now, stale_after_s, local_zone)


def snapshot_from_columns(
    statics: FleetStatics,
    columns: TelemetryColumns,
    now: datetime,
    stale_after_s: float,
    local_zone: ZoneInfo,
) -> FleetSnapshot:
    """The snapshot of the fleet ``statics`` describes, its telemetry already in ``columns`` (same device order).

    ``now`` must be timezone-aware; ``stale_after_s`` [s]. Every array is a copy.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now {now.isoformat()} has no timezone; pass an aware UTC datetime")
    if columns.device_ids != statics.device_ids:
        raise ValueError("telemetry columns are of another fleet than the statics (device order differs)")
    return FleetSnapshot(
        ts=now,
        device_ids=statics.device_ids,
        enterprise_ids=statics.enterprise_ids,
        kinds=statics.kinds,
        adapters=statics.adapters,
        p_kw=columns.p_kw.copy(),
        p_min_kw=columns.p_min_kw.copy(),
        p_max_kw=columns.p_max_kw.copy(),
        soc_kwh=columns.soc_kwh.copy(),
        soc_min_kwh=statics.soc_min_kwh.copy(),
        soc_max_kwh=statics.soc_max_kwh.copy(),
        charge_efficiency=statics.charge_efficiency.copy(),
        discharge_efficiency=statics.discharge_efficiency.copy(),
        ramp_kw_per_s=statics.ramp_kw_per_s.copy(),
        cost_cny_per_kwh=statics.cost_cny_per_kwh.copy(),
        max_interruption_h=statics.max_interruption_h.copy(),
        notice_h=statics.notice_h.copy(),
        max_events_per_day=statics.max_events_per_day.copy(),
        fresh=columns.online & _within_age(columns.ts_s, columns.last_seen, now, stale_after_s),
        protected=statics.protected_by_hour[now.astimezone(local_zone).hour].copy(),
        last_seen=tuple(columns.last_seen),
    )


def _within_age(ts_s: np.ndarray, last_seen: Sequence[datetime | None], now: datetime, stale_after_s: float) -> np.ndarray:
    """Per device, ``(now - last_seen).total_seconds() <= stale_after_s`` [bool], exactly as the datetimes say.

    Ages are taken from the float timestamps ``ts_s`` [s] (fast); the few
    within a millisecond of the limit, where float rounding could tip the
    comparison, are redone with exact datetime arithmetic. Never seen (NaN): False.
    """
    age_s = now.timestamp() - ts_s
    with np.errstate(invalid="ignore"):
        within = age_s <= stale_after_s
        near = np.abs(age_s - stale_after_s) <= _AGE_EXACT_WITHIN_S
    for i in np.flatnonzero(near).tolist():
        seen = last_seen[i]
        within[i] = seen is not None and (now - seen).total_seconds() <= stale_after_s
    return within


def _column(devices: Sequence[Device], name: str, missing: float) -> np.ndarray:
    """One optional numeric enrolment field as an array; ``missing`` where it is None [field's unit]."""
    return np.array([missing if (v := getattr(d, name)) is None else v for d in devices], dtype=float)


def sustained_headroom_kw(snapshot: FleetSnapshot, duration_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Per device, the upward and downward change it can hold for ``duration_h`` [h].

    Batteries are limited by the energy between their SoC and its bounds
    (through the efficiencies); devices whose longest interruption is shorter
    than the duration offer nothing for it; non-dispatchable devices offer 0.

    Returns ``(up_kw, down_kw)``, both non-negative [kW].
    """
    ok = snapshot.dispatchable
    up_kw = np.where(ok, np.maximum(snapshot.p_max_kw - snapshot.p_kw, 0.0), 0.0)
    down_kw = np.where(ok, np.maximum(snapshot.p_kw - snapshot.p_min_kw, 0.0), 0.0)
    if duration_h <= 0:
        return up_kw, down_kw
    battery = np.isfinite(snapshot.soc_kwh) & np.isfinite(snapshot.soc_min_kwh)
    # Energy available above the current power for the whole duration.
    up_energy_kwh = np.maximum(snapshot.soc_kwh - snapshot.soc_min_kwh, 0.0) * snapshot.discharge_efficiency
    down_energy_kwh = np.maximum(snapshot.soc_max_kwh - snapshot.soc_kwh, 0.0) / snapshot.charge_efficiency
    # A battery already discharging at p uses p of its energy budget before any extra.
    up_cap = np.where(battery, up_energy_kwh / duration_h - np.maximum(snapshot.p_kw, 0.0), np.inf)
    down_cap = np.where(battery, down_energy_kwh / duration_h + np.minimum(snapshot.p_kw, 0.0), np.inf)
    up_kw = np.minimum(up_kw, np.maximum(up_cap, 0.0))
    down_kw = np.minimum(down_kw, np.maximum(down_cap, 0.0))
    too_long = snapshot.max_interruption_h < duration_h
    return np.where(too_long, 0.0, up_kw), np.where(too_long, 0.0, down_kw)


def plant_state(snapshot: FleetSnapshot) -> dict:
    """Totals the grid reads: net power, available up/down now and sustained, devices online (JSON-ready)."""
    fresh = snapshot.fresh
    up_kw, down_kw = sustained_headroom_kw(snapshot, 0.0)
    by_kind: dict[str, dict] = {}
    kinds = np.asarray(snapshot.kinds, dtype=object)
    for kind in sorted(set(snapshot.kinds)):
        mask = kinds == kind
        by_kind[kind] = {
            "devices": int(mask.sum()),
            "online": int((mask & fresh).sum()),
            "net_kw": _kw(snapshot.p_kw[mask & fresh].sum()),
            "available_up_kw": _kw(up_kw[mask].sum()),
            "available_down_kw": _kw(down_kw[mask].sum()),
        }
    sustained = []
    for minutes in SUSTAIN_DURATIONS_MIN:
        s_up, s_down = sustained_headroom_kw(snapshot, minutes / 60.0)
        sustained.append({"duration_min": minutes, "up_kw": _kw(s_up.sum()), "down_kw": _kw(s_down.sum())})
    return {
        "ts": snapshot.ts.isoformat(),
        "net_kw": _kw(snapshot.p_kw[fresh].sum()),
        "available_up_kw": _kw(up_kw.sum()),
        "available_down_kw": _kw(down_kw.sum()),
        "sustained": sustained,
        "devices_enrolled": len(snapshot),
        "devices_online": int(fresh.sum()),
        "devices_stale": int(len(snapshot) - fresh.sum()),
        "devices_protected_now": int((snapshot.protected & fresh).sum()),
        "by_kind": by_kind,
    }


def device_rows(snapshot: FleetSnapshot) -> list[dict]:
    """Per-device live state (JSON-ready), in snapshot order."""
    up_kw, down_kw = sustained_headroom_kw(snapshot, 0.0)
    rows = []
    for i, device_id in enumerate(snapshot.device_ids):
        seen = snapshot.last_seen[i]
        rows.append(
            {
                "device_id": device_id,
                "enterprise_id": snapshot.enterprise_ids[i],
                "kind": snapshot.kinds[i],
                "p_kw": _kw(snapshot.p_kw[i]),
                "available_up_kw": _kw(up_kw[i]),
                "available_down_kw": _kw(down_kw[i]),
                "soc_kwh": None if np.isnan(snapshot.soc_kwh[i]) else _kw(snapshot.soc_kwh[i]),
                "online": bool(snapshot.fresh[i]),
                "protected_now": bool(snapshot.protected[i]),
                "last_seen": seen.isoformat() if seen else None,
            }
        )
    return rows


def _kw(value: float) -> float:
    """Round a power or energy to 0.001 for JSON [kW] or [kWh]."""
    return round(float(value), 3)
