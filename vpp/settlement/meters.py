"""Meter registers to 15-minute interval load: differences of cumulative registers, never filled.

A grid meter reports cumulative import and export registers [kWh] at its
own instants. The register at a quarter-hour boundary is taken from the
readings that bracket it: a reading exactly on it, or linear interpolation
between the last reading before and the first after, when those are at most
``max_gap_s`` apart (a measurement, not a fill). Where no such pair exists
the boundary is unknown and both intervals touching it are missing (NaN).
A register that runs backwards (meter exchange, reset) makes its interval
missing too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from market.baselines import INTERVAL_H
from vpp.model import MeterReading

__all__ = ["QUARTER", "interval_starts", "missing_ranges", "net_load_kw", "register_at"]

QUARTER = timedelta(minutes=15)
"""Length of a settlement interval."""


def interval_starts(start_utc: datetime, count: int) -> np.ndarray:
    """``count`` consecutive quarter-hour starts from ``start_utc``, ``datetime64[s]`` UTC [s]."""
    first = np.datetime64(int(start_utc.timestamp()), "s")
    return first + np.arange(count) * np.timedelta64(15 * 60, "s")


def register_at(ts_s: np.ndarray, register_kwh: np.ndarray, boundaries_s: np.ndarray, max_gap_s: float) -> np.ndarray:
    """A cumulative register's value at each boundary, NaN where no readings bracket it closely enough.

    Parameters
    ----------
    ts_s : reading instants, ascending, epoch seconds [s].
    register_kwh : the register at each reading [kWh].
    boundaries_s : instants wanted, epoch seconds [s].
    max_gap_s : largest distance between the two bracketing readings [s].

    Returns
    -------
    Register at each boundary [kWh].
    """
    value = np.full(boundaries_s.shape, np.nan)
    if ts_s.size == 0:
        return value
    after = np.searchsorted(ts_s, boundaries_s, side="left")  # first reading >= boundary
    exact = (after < ts_s.size) & (ts_s[np.minimum(after, ts_s.size - 1)] == boundaries_s)
    value[exact] = register_kwh[after[exact]]
    inside = ~exact & (after > 0) & (after < ts_s.size)
    lo, hi = after[inside] - 1, after[inside]
    gap = ts_s[hi] - ts_s[lo]
    close = gap <= max_gap_s
    fraction = (boundaries_s[inside] - ts_s[lo]) / np.where(gap > 0, gap, 1.0)
    interpolated = register_kwh[lo] + fraction * (register_kwh[hi] - register_kwh[lo])
    value[np.flatnonzero(inside)[close]] = interpolated[close]
    return value


def net_load_kw(readings: Sequence[MeterReading], start_utc: datetime, intervals: int, max_gap_s: float) -> np.ndarray:
    """Average net load drawn from the grid per interval, import − export, NaN where missing [kW].

    Parameters
    ----------
    readings : one meter's readings, ordered by time [kWh].
    start_utc : start of the first interval, on a quarter hour [datetime].
    intervals : number of 15-minute intervals [-].
    max_gap_s : largest distance between readings bracketing a boundary [s].

    Returns
    -------
    Net load per interval, shape (intervals,) [kW].
    """
    if not readings:
        return np.full(intervals, np.nan)
    ts = np.array([r.ts.timestamp() for r in readings])
    imported = np.array([r.import_kwh for r in readings])
    exported = np.array([r.export_kwh for r in readings])
    boundaries = start_utc.timestamp() + 900.0 * np.arange(intervals + 1)
    import_d = np.diff(register_at(ts, imported, boundaries, max_gap_s))
    export_d = np.diff(register_at(ts, exported, boundaries, max_gap_s))
    backwards = (import_d < 0) | (export_d < 0)
    return np.where(backwards, np.nan, (import_d - export_d) / INTERVAL_H)


def missing_ranges(missing: np.ndarray, start_utc: datetime) -> list[dict[str, str]]:
    """Runs of missing intervals as ``{"start", "end"}`` ISO UTC instants (end exclusive) [-].

    Parameters
    ----------
    missing : True per missing interval, shape (intervals,) [-].
    start_utc : start of the first interval [datetime].
    """
    flags = np.concatenate([[False], np.asarray(missing, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(flags.astype(np.int8)))
    return [
        {"start": (start_utc + int(a) * QUARTER).isoformat(), "end": (start_utc + int(b) * QUARTER).isoformat()}
        for a, b in zip(edges[::2], edges[1::2])
    ]
