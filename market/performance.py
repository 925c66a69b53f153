"""Delivery performance of a dispatch: energy delivered toward a request, per enterprise, and the ratio."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def enterprise_delivered_kwh(
    enterprise_ids: Sequence[str], device_delivered_kw: np.ndarray, request_sign: float, dt_h: float
) -> dict[str, float]:
    """Energy each enterprise delivered toward the request over one step.

    Parameters
    ----------
    enterprise_ids : owner of each device, aligned with ``device_delivered_kw``.
    device_delivered_kw : measured power minus baseline per device, generator convention [kW].
    request_sign : +1 when the request raises fleet power (reduce park load), −1 when it lowers it [unitless].
    dt_h : length of the step [h].

    Returns
    -------
    Energy per enterprise, + where it helped the request, − where it worked against it [kWh].
    Enterprises that moved nothing are absent.
    """
    delivered = np.asarray(device_delivered_kw, dtype=float) * request_sign * dt_h
    if len(enterprise_ids) != delivered.shape[0]:
        raise ValueError(f"enterprise_ids has {len(enterprise_ids)} entries, device_delivered_kw {delivered.shape[0]}")
    names, index = np.unique(np.asarray(enterprise_ids, dtype=object), return_inverse=True)
    totals = np.bincount(index, weights=delivered, minlength=len(names)) if len(names) else np.zeros(0)
    return {str(name): float(kwh) for name, kwh in zip(names, totals) if kwh != 0.0}


def response_ratio(delivered_kwh: float, requested_kwh: float) -> float | None:
    """Delivered over requested energy [unitless]; None when nothing was requested."""
    if requested_kwh <= 0:
        return None
    return delivered_kwh / requested_kwh
