"""Forecasts feeding the horizon schedule: PV per system and load per enterprise, and their error.

PV: clear-sky potential per system and interval, scaled by the ratio the
system has recently achieved against its own clear-sky potential (soiling,
shading, clouds persisting). The clear-sky model here is deliberately the
simple one a forecaster without site data would use (Haurwitz GHI, Erbs
decomposition, isotropic transposition); the simulated park uses Ineichen
with Linke turbidity, so the forecast is not judged against its own model.

Load: similar-day profile, the mean of the most recent days of the same day
type (working day / rest day) at each interval.

All functions are pure: arrays (and a pandas time index for pvlib) in,
numpy arrays out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pvlib
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

DEFAULT_PV_DERATE = 0.85
"""System losses assumed by the forecast [unitless]."""
RATIO_BOUNDS = (0.0, 1.2)
"""A system's measured/clear-sky ratio is clipped to this range [unitless]."""


def clear_sky_pv_kw(
    times: pd.DatetimeIndex,
    latitude: float,
    longitude: float,
    tilt_deg: ArrayLike,
    azimuth_deg: ArrayLike,
    rated_kw: ArrayLike,
    derate: float = DEFAULT_PV_DERATE,
) -> FloatArray:
    """Clear-sky AC potential of PV systems at ``times``.

    Parameters
    ----------
    times : timezone-aware instants (interval mid-points for interval means).
    latitude, longitude : site, north and east positive [deg].
    tilt_deg, azimuth_deg : per system, azimuth 180 = south [deg].
    rated_kw : per system nameplate power [kW].
    derate : system losses [unitless].

    Returns
    -------
    Potential power, shape ``(len(times), n_systems)``, in ``[0, rated_kw]`` [kW].
    """
    tilt = np.atleast_1d(np.asarray(tilt_deg, dtype=float))
    azimuth = np.atleast_1d(np.asarray(azimuth_deg, dtype=float))
    rated = np.atleast_1d(np.asarray(rated_kw, dtype=float))
    if not (tilt.shape == azimuth.shape == rated.shape) or tilt.ndim != 1:
        raise ValueError(f"tilt_deg {tilt.shape}, azimuth_deg {azimuth.shape} and rated_kw {rated.shape} must be 1-d of equal length")
    if len(times) == 0 or tilt.size == 0:
        return np.zeros((len(times), tilt.size))
    solpos = pvlib.solarposition.get_solarposition(times, latitude, longitude)
    zenith = solpos["apparent_zenith"].to_numpy()
    ghi = pvlib.clearsky.haurwitz(solpos["apparent_zenith"])["ghi"].to_numpy()
    doy = np.asarray(times.tz_convert("UTC").day_of_year, dtype=float)
    erbs = pvlib.irradiance.erbs(ghi, zenith, doy)
    column = (slice(None), None)
    poa = pvlib.irradiance.get_total_irradiance(
        tilt[None, :],
        azimuth[None, :],
        zenith[column],
        solpos["azimuth"].to_numpy()[column],
        np.asarray(erbs["dni"])[column],
        ghi[column],
        np.asarray(erbs["dhi"])[column],
        model="isotropic",
    )["poa_global"]
    poa = np.clip(np.nan_to_num(np.broadcast_to(np.asarray(poa, dtype=float), (len(times), tilt.size))), 0.0, None)
    return np.clip(poa / 1000.0 * rated[None, :] * derate, 0.0, rated[None, :])


def measured_ratio(
    measured_kw: ArrayLike, clear_sky_kw: ArrayLike, min_fraction: float = 0.1
) -> FloatArray:
    """Per system, recent measured output over its clear-sky potential.

    Only intervals where the clear-sky potential exceeds ``min_fraction`` of
    the system's largest potential in the window count (dawn and dusk ratios
    are noise). A system with no such interval keeps ratio 1.

    Parameters
    ----------
    measured_kw : recent measured output, shape ``(k, n_systems)``; NaN = missing [kW].
    clear_sky_kw : clear-sky potential at the same intervals, same shape [kW].
    min_fraction : threshold on the potential [unitless].

    Returns
    -------
    Ratio per system, clipped to ``RATIO_BOUNDS`` [unitless].
    """
    measured = np.asarray(measured_kw, dtype=float)
    clear = np.asarray(clear_sky_kw, dtype=float)
    if measured.shape != clear.shape or measured.ndim != 2:
        raise ValueError(f"measured_kw {measured.shape} and clear_sky_kw {clear.shape} must be 2-d of equal shape")
    peak = clear.max(axis=0, initial=0.0)
    use = (clear > min_fraction * peak[None, :]) & np.isfinite(measured)
    produced = np.where(use, measured, 0.0).sum(axis=0)
    possible = np.where(use, clear, 0.0).sum(axis=0)
    # Below a watt of potential the ratio means nothing (and could overflow).
    ratio = np.divide(produced, possible, out=np.ones_like(possible), where=possible > 1e-3)
    return np.clip(ratio, *RATIO_BOUNDS)


def pv_forecast_kw(clear_sky_kw: ArrayLike, ratio: ArrayLike) -> FloatArray:
    """PV forecast: clear-sky potential [T, n] [kW] times each system's ratio [n] [unitless] → [T, n] [kW]."""
    return np.asarray(clear_sky_kw, dtype=float) * np.asarray(ratio, dtype=float)[None, :]


def similar_day_load_kw(history_kw: ArrayLike, history_day_types: ArrayLike, day_type: int, n_days: int = 5) -> FloatArray:
    """Similar-day load profile: mean of the last ``n_days`` days of the same type.

    Parameters
    ----------
    history_kw : past load, shape ``(n_entities, n_days_history, intervals_per_day)``,
        oldest day first; NaN = missing interval (ignored in the mean) [kW].
    history_day_types : day type of each history day (e.g. 0 working day, 1 rest day) [unitless].
    day_type : type of the day to forecast [unitless].
    n_days : how many recent similar days to average [day].

    Returns
    -------
    Forecast, shape ``(n_entities, intervals_per_day)`` [kW]. Where fewer similar
    days exist, those there are used; with none, the most recent days of any type.
    """
    history = np.asarray(history_kw, dtype=float)
    types = np.asarray(history_day_types)
    if history.ndim != 3 or history.shape[1] != types.shape[0]:
        raise ValueError(f"history_kw {history.shape} must be (entities, days, intervals) with one day type per day ({types.shape[0]})")
    if n_days < 1:
        raise ValueError(f"n_days {n_days} must be at least 1")
    similar = np.flatnonzero(types == day_type)[-n_days:]
    if similar.size == 0:
        similar = np.arange(types.shape[0])[-n_days:]
    if similar.size == 0:
        raise ValueError("history_kw holds no day to forecast from")
    days = history[:, similar, :]
    counts = np.isfinite(days).sum(axis=1)
    sums = np.nansum(days, axis=1)
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)


def mae(forecast: ArrayLike, actual: ArrayLike) -> float:
    """Mean absolute error, over finite pairs [same unit as the inputs]."""
    f, a = np.asarray(forecast, dtype=float), np.asarray(actual, dtype=float)
    ok = np.isfinite(f) & np.isfinite(a)
    return float(np.abs(f[ok] - a[ok]).mean()) if ok.any() else float("nan")


def mape(forecast: ArrayLike, actual: ArrayLike, min_actual: float = 1e-9) -> float:
    """Mean absolute percentage error over pairs with ``|actual| > min_actual`` [unitless, 0.1 = 10 %].

    Night-time PV (actual 0) is excluded by ``min_actual``: a percentage of
    nothing is undefined, so callers pass a floor such as 5 % of rating.
    """
    f, a = np.asarray(forecast, dtype=float), np.asarray(actual, dtype=float)
    ok = np.isfinite(f) & np.isfinite(a) & (np.abs(a) > min_actual)
    return float((np.abs(f[ok] - a[ok]) / np.abs(a[ok])).mean()) if ok.any() else float("nan")
