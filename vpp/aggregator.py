"""Live plant state: the fleet as aligned numpy arrays, and what it can do up and down.

``build_snapshot`` turns the enrolled devices and their latest telemetry into
arrays (one row per device); ``plant_state`` sums them into the figures the
grid reads. Both are pure; the service calls them on every control step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

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
    but is excluded from totals and dispatch.
    """
    n = len(devices)
    local_hour = now.astimezone(local_zone).hour
    arrays = {
        name: np.zeros(n)
        for name in ("p_kw", "p_min_kw", "p_max_kw")
    }
    soc, soc_min, soc_max = (np.full(n, np.nan) for _ in range(3))
    eta_c, eta_d = np.ones(n), np.ones(n)
    ramp = np.full(n, np.inf)
    cost = np.zeros(n)
    max_interruption_h = np.full(n, np.inf)
    notice_h = np.zeros(n)
    max_events = np.full(n, np.inf)
    fresh = np.zeros(n, dtype=bool)
    protected = np.zeros(n, dtype=bool)
    last_seen: list[datetime | None] = []
    for i, device in enumerate(devices):
        sample = latest.get(device.id)
        last_seen.append(sample.ts if sample else None)
        if sample is not None:
            arrays["p_kw"][i] = sample.p_kw
            arrays["p_min_kw"][i] = sample.p_min_kw
            arrays["p_max_kw"][i] = sample.p_max_kw
            age_s = (now - sample.ts).total_seconds()
            fresh[i] = sample.online and age_s <= stale_after_s
            if sample.soc_kwh is not None:
                soc[i] = sample.soc_kwh
        if isinstance(device, Battery):
            soc_min[i] = device.soc_min_kwh
            soc_max[i] = device.soc_upper_kwh
            eta_c[i] = device.charge_efficiency
            eta_d[i] = device.discharge_efficiency
        if device.ramp_kw_per_s is not None:
            ramp[i] = device.ramp_kw_per_s
        if device.max_interruption_min is not None:
            max_interruption_h[i] = device.max_interruption_min / 60.0
        if device.max_events_per_day is not None:
            max_events[i] = device.max_events_per_day
        notice_h[i] = device.notice_min / 60.0
        cost[i] = device.marginal_cost_cny_per_kwh
        protected[i] = device.is_protected(local_hour)
    return FleetSnapshot(
        ts=now,
        device_ids=tuple(d.id for d in devices),
        enterprise_ids=tuple(d.enterprise_id for d in devices),
        kinds=tuple(str(d.kind) for d in devices),
        adapters=tuple(d.adapter for d in devices),
        soc_kwh=soc,
        soc_min_kwh=soc_min,
        soc_max_kwh=soc_max,
        charge_efficiency=eta_c,
        discharge_efficiency=eta_d,
        ramp_kw_per_s=ramp,
        cost_cny_per_kwh=cost,
        max_interruption_h=max_interruption_h,
        notice_h=notice_h,
        max_events_per_day=max_events,
        fresh=fresh,
        protected=protected,
        last_seen=tuple(last_seen),
        **arrays,
    )


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
