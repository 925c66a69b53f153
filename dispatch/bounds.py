"""Per-device set-point bounds for one control step.

A device's set-point must lie inside what it reports it can do now, be
reachable within one control step at its ramp rate, and, for a battery, be
sustainable for the whole instruction without leaving its SoC window.
Devices that may not be dispatched are held where they are.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dispatch._checks import first_violation as _check

FloatArray = NDArray[np.float64]


def _array(name: str, values: ArrayLike, size: int, *, allow_nan: bool = False, allow_inf: bool = False) -> FloatArray:
    """``values`` broadcast to ``size`` float64 elements; ValueError naming ``name`` on a bad shape or value."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != size):
        raise ValueError(f"{name} has shape {array.shape}, expected a scalar or ({size},) as p_kw")
    array = np.broadcast_to(array, (size,))
    bad = ~np.isfinite(array)
    if allow_nan:
        bad &= ~np.isnan(array)
    if allow_inf:
        bad &= ~np.isinf(array)
    if bad.any():
        index = int(np.argmax(bad))
        allowed = "finite or NaN" if allow_nan else "finite"
        raise ValueError(f"{name}[{index}] = {float(array[index])!r} is not allowed (must be {allowed})")
    return array


def _energy_limits(
    size: int,
    soc_kwh: ArrayLike,
    soc_min_kwh: ArrayLike,
    soc_max_kwh: ArrayLike,
    charge_efficiency: ArrayLike,
    discharge_efficiency: ArrayLike,
    duration_h: float,
) -> tuple[FloatArray, FloatArray]:
    """Largest discharge and charge power each device can hold for ``duration_h`` ``(discharge, charge)`` [kW].

    Both are >= 0; +inf where there is no energy limit (no SoC reported, no
    bound on that side, or ``duration_h`` == 0). A SoC already beyond a bound
    gives 0 on that side: the device is not pushed back, only stopped.
    """
    soc = _array("soc_kwh", soc_kwh, size, allow_nan=True)
    soc_min = _array("soc_min_kwh", soc_min_kwh, size, allow_nan=True)
    soc_max = _array("soc_max_kwh", soc_max_kwh, size, allow_nan=True)
    eta_charge = _array("charge_efficiency", charge_efficiency, size, allow_nan=True)
    eta_discharge = _array("discharge_efficiency", discharge_efficiency, size, allow_nan=True)
    battery = np.isfinite(soc)
    for name, eta in (("charge_efficiency", eta_charge), ("discharge_efficiency", eta_discharge)):
        _check(name, battery & ~((eta > 0.0) & (eta <= 1.0)), eta, "0 < efficiency <= 1 for a battery")
    _check("soc_max_kwh", battery & (soc_max < soc_min), soc_max, "soc_max_kwh >= soc_min_kwh")
    discharge = np.full(size, np.inf)
    charge = np.full(size, np.inf)
    if duration_h == 0.0 or not battery.any():
        return discharge, charge
    # A NaN bound compares False, so that side stays unlimited.
    has_min = battery & np.isfinite(soc_min)
    has_max = battery & np.isfinite(soc_max)
    # Delivering P for duration_h drains P*duration_h/eta_d; drawing P stores P*eta_c*duration_h.
    stored_above_min = np.maximum(soc - soc_min, 0.0, where=has_min, out=np.zeros(size))
    room_below_max = np.maximum(soc_max - soc, 0.0, where=has_max, out=np.zeros(size))
    np.divide(stored_above_min * eta_discharge, duration_h, out=discharge, where=has_min)
    np.divide(room_below_max, eta_charge * duration_h, out=charge, where=has_max)
    return discharge, charge


def setpoint_bounds(
    p_kw: ArrayLike,
    p_min_kw: ArrayLike,
    p_max_kw: ArrayLike,
    ramp_kw_per_s: ArrayLike,
    step_s: float,
    soc_kwh: ArrayLike,
    soc_min_kwh: ArrayLike,
    soc_max_kwh: ArrayLike,
    charge_efficiency: ArrayLike,
    discharge_efficiency: ArrayLike,
    duration_h: float,
    dispatchable: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """``(lower, upper)`` set-point bounds per device for the next control step [kW].

    Generator convention: + is power into the park network (discharge), − is
    power drawn (charging, load).

    Parameters (per device arrays, or scalars applying to all):

    - ``p_kw``: current power [kW]; defines the number of devices.
    - ``p_min_kw``, ``p_max_kw``: range the device reports it can be set to now [kW].
    - ``ramp_kw_per_s``: largest rate of change [kW/s], >= 0, inf when unlimited.
    - ``step_s``: time until the next control step [s], finite, >= 0.
    - ``soc_kwh``: state of charge [kWh]; NaN marks devices without one (non-batteries).
    - ``soc_min_kwh``, ``soc_max_kwh``: SoC window [kWh]; NaN leaves that side unlimited.
    - ``charge_efficiency``, ``discharge_efficiency``: [unitless], in (0, 1] where ``soc_kwh`` is known.
    - ``duration_h``: how long the set-point must be held [h], >= 0; 0 means no energy
      limit, inf means batteries may not move at all.
    - ``dispatchable``: bool; False (stale, protected hour, offline) holds the device at ``p_kw``.

    The bounds are the intersection of the reported range, the ramp window
    ``[p - ramp*step, p + ramp*step]``, and for batteries
    ``[-(soc_max - soc)/eta_c/duration, (soc - soc_min)*eta_d/duration]``.
    When that intersection is empty (e.g. the device is outside its reported
    range, or holds a power its SoC cannot sustain, further than one ramp
    step can fix), both bounds collapse onto whichever of the two crossing
    bounds is nearer the current power ``p`` (the lower one on a tie),
    clipped into the ramp window. The ramp window contains ``p``, so this
    is usually the ramp-limited move toward the violated limit: as far as
    the device can physically go this step. Always ``lower <= upper``, and
    for dispatchable devices both lie in the ramp window.

    Raises ValueError naming the argument and the first bad index.
    """
    p = np.asarray(p_kw, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_kw must be 1-D, got shape {p.shape}")
    size = p.shape[0]
    p = _array("p_kw", p, size)
    p_min = _array("p_min_kw", p_min_kw, size)
    p_max = _array("p_max_kw", p_max_kw, size)
    _check("p_max_kw", p_max < p_min, p_max, "p_max_kw >= p_min_kw")
    ramp = _array("ramp_kw_per_s", ramp_kw_per_s, size, allow_inf=True)
    _check("ramp_kw_per_s", ramp < 0.0, ramp, "ramp_kw_per_s >= 0")
    step = float(step_s)
    duration = float(duration_h)
    if not 0.0 <= step < np.inf:
        raise ValueError(f"step_s = {step!r} violates 0 <= step_s < inf")
    if not duration >= 0.0:
        raise ValueError(f"duration_h = {duration!r} violates duration_h >= 0")
    held = ~np.broadcast_to(np.asarray(dispatchable, dtype=bool), (size,))

    # Not ramp * step: inf * 0 is NaN, and an unlimited ramp reaches anywhere even in a zero step.
    reach = np.full(size, np.inf)
    np.multiply(ramp, step, out=reach, where=np.isfinite(ramp))
    discharge, charge = _energy_limits(
        size, soc_kwh, soc_min_kwh, soc_max_kwh, charge_efficiency, discharge_efficiency, duration
    )
    lower = np.maximum.reduce([p_min, p - reach, -charge])
    upper = np.minimum.reduce([p_max, p + reach, discharge])
    crossed = lower > upper
    if crossed.any():
        nearer = np.where(np.abs(lower - p) <= np.abs(upper - p), lower, upper)
        nearer = np.clip(nearer, p - reach, p + reach)  # the ramp is physics: never beyond it
        lower = np.where(crossed, nearer, lower)
        upper = np.where(crossed, nearer, upper)
    lower = np.where(held, p, lower)
    upper = np.where(held, p, upper)
    return lower, upper
