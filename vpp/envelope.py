"""Build the plant envelope from the live fleet and forecasts (served at ``/api/v1/plant/envelope``).

Expected operating point and settable range per device and interval:

* PV: its clear-sky forecast scaled by the ratio it achieves now; curtailable to 0;
* batteries: idle, anywhere within their rating (energy limits applied in
  ``dispatch.envelope``);
* interruptible loads: their present load persists; reducible by ``max_curtail_kw``;
* shiftable loads: present power inside their window, nothing outside; reducible to 0;
* EV chargers and anything else: their present range persists.

Devices that are stale now, or protected in an interval's local hour, offer nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from dispatch.envelope import envelope_kw
from dispatch.forecast import clear_sky_pv_kw
from vpp.aggregator import FleetSnapshot
from vpp.model import PV, Battery, Device, InterruptibleLoad, ShiftableLoad

INTERVAL = timedelta(minutes=15)


def interval_starts(now: datetime, count: int) -> list[datetime]:
    """``count`` quarter-hour starts beginning with the next quarter hour after ``now``."""
    aligned = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0) + INTERVAL
    return [aligned + k * INTERVAL for k in range(count)]


def pv_expected_kw(
    devices: Sequence[Device], snapshot: FleetSnapshot, mids: pd.DatetimeIndex, latitude: float, longitude: float
) -> np.ndarray:
    """[T, n] forecast for PV columns (0 elsewhere) [kW]."""
    n = len(devices)
    out = np.zeros((len(mids), n))
    pv_idx = [i for i, d in enumerate(devices) if isinstance(d, PV)]
    if not pv_idx:
        return out
    pvs = [devices[i] for i in pv_idx]
    tilt = [d.tilt_deg for d in pvs]
    azimuth = [d.azimuth_deg for d in pvs]
    rated = [d.rated_kw for d in pvs]
    now_index = pd.DatetimeIndex([snapshot.ts])
    clear_now = clear_sky_pv_kw(now_index, latitude, longitude, tilt, azimuth, rated)[0]
    measured = snapshot.p_max_kw[pv_idx]  # potential, even when curtailed
    ratio = np.divide(measured, clear_now, out=np.ones(len(pvs)), where=clear_now > 0.05 * np.asarray(rated))
    out[:, pv_idx] = clear_sky_pv_kw(mids, latitude, longitude, tilt, azimuth, rated) * np.clip(ratio, 0.0, 1.2)[None, :]
    return out


def plant_envelope(
    devices: Sequence[Device],
    snapshot: FleetSnapshot,
    hours: float,
    local_zone: ZoneInfo,
    latitude: float,
    longitude: float,
) -> list[dict]:
    """Up and down capability per quarter hour for ``hours`` ahead (JSON-ready rows)."""
    starts = interval_starts(snapshot.ts, max(1, int(round(hours * 4))))
    mids = pd.DatetimeIndex([s + INTERVAL / 2 for s in starts])
    local_hours = np.array([s.astimezone(local_zone).hour for s in starts])
    T, n = len(starts), len(devices)
    p_now = snapshot.p_kw
    expected = np.tile(p_now, (T, 1))
    lo = np.tile(snapshot.p_min_kw, (T, 1))
    hi = np.tile(snapshot.p_max_kw, (T, 1))
    pv_expected = pv_expected_kw(devices, snapshot, mids, latitude, longitude)
    for i, device in enumerate(devices):
        if isinstance(device, PV):
            expected[:, i], lo[:, i], hi[:, i] = pv_expected[:, i], 0.0, pv_expected[:, i]
        elif isinstance(device, Battery):
            expected[:, i], lo[:, i], hi[:, i] = 0.0, -device.rated_kw, device.rated_kw
        elif isinstance(device, InterruptibleLoad):
            lo[:, i] = p_now[i]
            hi[:, i] = min(0.0, p_now[i] + device.max_curtail_kw)
        elif isinstance(device, ShiftableLoad):
            open_ = (local_hours >= device.window_start_hour) & (local_hours < device.window_end_hour)
            expected[:, i] = np.where(open_, p_now[i], 0.0)
            lo[:, i] = np.where(open_, -device.rated_kw, 0.0)
            hi[:, i] = 0.0
    protected = np.array([[d.is_protected(int(h)) for d in devices] for h in local_hours], dtype=bool).reshape(T, n)
    available = snapshot.fresh[None, :] & ~protected
    up, down = envelope_kw(
        expected, lo, hi, available,
        snapshot.soc_kwh, snapshot.soc_min_kwh, snapshot.soc_max_kwh,
        snapshot.charge_efficiency, snapshot.discharge_efficiency,
        INTERVAL.total_seconds() / 3600.0,
    )
    return [
        {"start": s.isoformat(), "end": (s + INTERVAL).isoformat(), "up_kw": round(float(u), 3), "down_kw": round(float(d), 3),
         "expected_kw": round(float(e), 3)}
        for s, u, d, e in zip(starts, up, down, (expected * snapshot.fresh[None, :]).sum(axis=1))
    ]
