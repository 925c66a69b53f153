"""The plant's envelope: how far it can go up and down in each interval ahead.

Each interval is offered on its own: the figure for interval ``k`` is what
the fleet can hold for the whole of ``k`` if called for ``k`` alone, from
its expected operating point. Batteries are limited by the energy between
their state of charge and its bounds over one interval; everything else by
its expected settable range.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def envelope_kw(
    expected_kw: ArrayLike,
    p_min_kw: ArrayLike,
    p_max_kw: ArrayLike,
    available: ArrayLike,
    soc_kwh: ArrayLike,
    soc_min_kwh: ArrayLike,
    soc_max_kwh: ArrayLike,
    charge_efficiency: ArrayLike,
    discharge_efficiency: ArrayLike,
    interval_h: float,
) -> tuple[FloatArray, FloatArray]:
    """Upward and downward capability of the fleet per interval.

    Parameters
    ----------
    expected_kw : expected power of each device in each interval, shape ``(T, n)``, + into the park [kW].
    p_min_kw, p_max_kw : expected settable range, shape ``(T, n)`` [kW].
    available : device may be dispatched in the interval (not protected, online), shape ``(T, n)`` [bool].
    soc_kwh, soc_min_kwh, soc_max_kwh : per device, NaN for non-batteries, shape ``(n,)`` [kWh].
    charge_efficiency, discharge_efficiency : per device, shape ``(n,)`` [unitless].
    interval_h : interval length [h].

    Returns
    -------
    ``(up_kw, down_kw)``, each shape ``(T,)``, non-negative [kW].
    """
    expected = np.asarray(expected_kw, dtype=float)
    lo = np.minimum(np.asarray(p_min_kw, dtype=float), expected)
    hi = np.maximum(np.asarray(p_max_kw, dtype=float), expected)
    ok = np.asarray(available, dtype=bool)
    if not (expected.shape == lo.shape == hi.shape == ok.shape) or expected.ndim != 2:
        raise ValueError(
            f"expected_kw {expected.shape}, p_min_kw {lo.shape}, p_max_kw {hi.shape} and available {ok.shape} must be (T, n)"
        )
    if interval_h <= 0:
        raise ValueError(f"interval_h {interval_h} must be positive")
    soc = np.asarray(soc_kwh, dtype=float)
    battery = np.isfinite(soc)
    # Power a battery can hold for one whole interval from its present energy.
    discharge_cap = np.where(battery, (soc - np.asarray(soc_min_kwh, dtype=float)) * np.asarray(discharge_efficiency, dtype=float) / interval_h, np.inf)
    charge_cap = np.where(battery, (np.asarray(soc_max_kwh, dtype=float) - soc) / np.asarray(charge_efficiency, dtype=float) / interval_h, np.inf)
    hi = np.minimum(hi, np.maximum(discharge_cap, 0.0)[None, :])
    lo = np.maximum(lo, -np.maximum(charge_cap, 0.0)[None, :])
    up = np.where(ok, np.maximum(hi - expected, 0.0), 0.0)
    down = np.where(ok, np.maximum(expected - lo, 0.0), 0.0)
    return up.sum(axis=1), down.sum(axis=1)
