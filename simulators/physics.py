"""Physics of the simulated park: PV, batteries, industrial loads, EV charging.

Pure functions on numpy arrays (one element per device, session or time
step); no state, no I/O. :mod:`simulators.sim` strings them together.

Conventions follow ``shared/DESIGN.md``: power in kW with the generator sign
(+ into the park network, − drawn from it), energy in kWh, time steps in
seconds, irradiance in W/m². Names carry their unit as a suffix
(``p_kw``, ``soc_kwh``, ``dt_s``).

Energy-limited power: a battery or a load with a finite energy budget
reports and accepts only the power it can hold for ``horizon_s`` seconds
without crossing its limit, ``p <= energy * 3600 / horizon_s``. The
simulator never integrates over more than ``horizon_s`` at once, so a power
inside the limit can never overshoot an energy bound within one step; near
the bound the power tapers off smoothly (like the constant-voltage phase of a
real charger).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import pandas as pd
import pvlib
import scipy.signal
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DEFAULT_PV_DERATE",
    "ENERGY_HORIZON_S",
    "SECONDS_PER_HOUR",
    "SHIFT_PATTERNS",
    "EvSessions",
    "ShiftPattern",
    "ar1_noise",
    "battery_limits_kw",
    "battery_step",
    "clearsky_poa_w_per_m2",
    "cloud_factor",
    "ev_allocate_kw",
    "ev_limits_kw",
    "ev_sessions",
    "interruptible_limits_kw",
    "linke_turbidity_for_day",
    "load_shape",
    "monthly_linke_turbidity",
    "pv_ac_kw",
    "ramp_toward",
    "shiftable_limits_kw",
    "split_import_export",
]

FloatArray = NDArray[np.float64]

SECONDS_PER_HOUR = 3600.0
ENERGY_HORIZON_S = 60.0
"""Longest integration step, and the horizon of energy-limited power [s]."""
DEFAULT_PV_DERATE = 0.85
"""DC-to-AC system derate: soiling, wiring, mismatch, inverter, temperature [unitless]."""

ShiftPattern = Literal["three_shift", "two_shift", "day_shift"]
SHIFT_PATTERNS: tuple[ShiftPattern, ...] = ("three_shift", "two_shift", "day_shift")

# Load shapes as (local hour, fraction of peak) break points, linearly
# interpolated; transitions take about half an hour as machines start in turn.
# Weekday values; see load_shape for the weekend.
_SHAPE_POINTS: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = MappingProxyType({
    # 24/7 production, short dips at the 06/14/22 shift changes.
    "three_shift": (
        (0.0, 5.75, 6.0, 6.25, 13.75, 14.0, 14.25, 21.75, 22.0, 22.25, 24.0),
        (0.92, 0.92, 0.80, 0.92, 0.92, 0.80, 0.92, 0.92, 0.80, 0.92, 0.92),
    ),
    # 06:00-22:00 production, lunch and dinner breaks, standby at night.
    "two_shift": (
        (0.0, 5.5, 6.25, 11.5, 12.0, 12.5, 13.0, 17.5, 18.0, 18.5, 21.75, 22.5, 24.0),
        (0.30, 0.30, 1.00, 1.00, 0.80, 0.80, 1.00, 1.00, 0.85, 1.00, 1.00, 0.30, 0.30),
    ),
    # Office-hours production, lunch break, little at night.
    "day_shift": (
        (0.0, 7.5, 8.25, 11.75, 12.0, 13.0, 13.25, 17.0, 17.75, 24.0),
        (0.15, 0.15, 1.00, 1.00, 0.70, 0.70, 1.00, 1.00, 0.15, 0.15),
    ),
})
_STANDBY_FRACTION: Mapping[str, float] = MappingProxyType({"three_shift": 0.92, "two_shift": 0.30, "day_shift": 0.15})


# ------------------------------------------------------------------- PV ----


def monthly_linke_turbidity(latitude: float, longitude: float) -> FloatArray:
    """Monthly Linke turbidity climatology of a site, January first.

    Read from pvlib's ``LinkeTurbidities.h5``. Call once per site and pass
    :func:`linke_turbidity_for_day` to the clear-sky model; pvlib's own
    per-timestamp lookup uses a pandas attribute deprecated in pandas 3.

    Parameters
    ----------
    latitude : float
        Site latitude, north positive [deg].
    longitude : float
        Site longitude, east positive [deg].

    Returns
    -------
    numpy.ndarray
        Twelve Linke turbidity values [unitless].
    """
    mid_month = pd.DatetimeIndex([pd.Timestamp(2001, m, 15, tz="UTC") for m in range(1, 13)])
    lt = pvlib.clearsky.lookup_linke_turbidity(mid_month, latitude, longitude, interp_turbidity=False)
    return np.asarray(lt, dtype=float)


def linke_turbidity_for_day(monthly: ArrayLike, day_of_year: int, days_in_year: int = 365) -> float:
    """Linke turbidity of one day, interpolated between mid-month values.

    Parameters
    ----------
    monthly : array_like
        Twelve monthly values, January first [unitless].
    day_of_year : int
        Day of the year, 1 = 1 January [day].
    days_in_year : int
        365 or 366 [day].

    Returns
    -------
    float
        Linke turbidity [unitless].
    """
    lts = np.asarray(monthly, dtype=float)
    month_days = np.array([31, 29 if days_in_year == 366 else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=float)
    middles = np.cumsum(month_days) - month_days / 2.0
    x = np.concatenate([[middles[-1] - days_in_year], middles, [middles[0] + days_in_year]])
    y = np.concatenate([[lts[-1]], lts, [lts[0]]])
    return float(np.interp(day_of_year - 0.5, x, y))


def clearsky_poa_w_per_m2(
    times: pd.DatetimeIndex,
    latitude: float,
    longitude: float,
    tilt_deg: ArrayLike,
    azimuth_deg: ArrayLike,
    *,
    altitude_m: float = 0.0,
    linke_turbidity: float = 3.0,
) -> FloatArray:
    """Clear-sky plane-of-array irradiance of several panel orientations.

    Ineichen clear-sky model (``pvlib.location.Location.get_clearsky``)
    transposed with the isotropic sky model
    (``pvlib.irradiance.get_total_irradiance``).

    Parameters
    ----------
    times : pandas.DatetimeIndex
        Timezone-aware instants, typically one day at 1-min spacing.
    latitude, longitude : float
        Site, north and east positive [deg].
    tilt_deg : array_like
        Panel tilt of each system, shape ``(n_systems,)`` [deg].
    azimuth_deg : array_like
        Panel azimuth of each system, 180 = south, shape ``(n_systems,)`` [deg].
    altitude_m : float
        Site altitude [m].
    linke_turbidity : float
        Linke turbidity for these times [unitless].

    Returns
    -------
    numpy.ndarray
        Plane-of-array global irradiance, shape ``(len(times), n_systems)``,
        zero at night, never negative or NaN [W/m²].
    """
    tilt = np.atleast_1d(np.asarray(tilt_deg, dtype=float))
    azimuth = np.atleast_1d(np.asarray(azimuth_deg, dtype=float))
    if tilt.shape != azimuth.shape or tilt.ndim != 1:
        raise ValueError(f"tilt_deg {tilt.shape} and azimuth_deg {azimuth.shape} must be 1-d of equal length")
    if len(times) == 0 or tilt.size == 0:
        return np.zeros((len(times), tilt.size))
    location = pvlib.location.Location(latitude, longitude, altitude=altitude_m)
    solpos = location.get_solarposition(times)
    # dni_extra from the numeric day of year: pvlib's DatetimeIndex path uses
    # DatetimeIndex.dayofyear, deprecated (a warning) in pandas 3.
    doy = np.asarray(times.tz_convert("UTC").day_of_year, dtype=float)
    dni_extra = pvlib.irradiance.get_extra_radiation(doy)
    clearsky = location.get_clearsky(
        times, model="ineichen", solar_position=solpos, dni_extra=dni_extra, linke_turbidity=linke_turbidity
    )
    column = (slice(None), None)
    poa = pvlib.irradiance.get_total_irradiance(
        tilt[None, :],
        azimuth[None, :],
        solpos["apparent_zenith"].to_numpy()[column],
        solpos["azimuth"].to_numpy()[column],
        clearsky["dni"].to_numpy()[column],
        clearsky["ghi"].to_numpy()[column],
        clearsky["dhi"].to_numpy()[column],
        model="isotropic",
    )["poa_global"]
    poa = np.broadcast_to(np.asarray(poa, dtype=float), (len(times), tilt.size))
    return np.clip(np.nan_to_num(poa, nan=0.0), 0.0, None)


def pv_ac_kw(
    poa_w_per_m2: ArrayLike,
    rated_kw: ArrayLike,
    derate: float = DEFAULT_PV_DERATE,
    cloud_factor: ArrayLike | None = None,
) -> FloatArray:
    """Potential AC output of PV systems: the power they make when not curtailed.

    ``p = min(poa / 1000 W/m² * rated_kw * derate * cloud_factor, rated_kw)``
    (rating at standard test conditions; the inverter clips at the rating).

    Parameters
    ----------
    poa_w_per_m2 : array_like
        Plane-of-array irradiance, broadcastable against ``rated_kw`` [W/m²].
    rated_kw : array_like
        Nameplate power of each system [kW].
    derate : float
        System derate [unitless].
    cloud_factor : array_like, optional
        Fraction of the clear-sky irradiance that gets through, broadcastable
        [unitless]. None = clear sky.

    Returns
    -------
    numpy.ndarray
        Potential AC power, ``0 <= p <= rated_kw`` [kW].
    """
    poa = np.asarray(poa_w_per_m2, dtype=float)
    rated = np.asarray(rated_kw, dtype=float)
    p = poa / 1000.0 * rated * derate
    if cloud_factor is not None:
        p = p * np.asarray(cloud_factor, dtype=float)
    return np.clip(p, 0.0, rated)


def cloud_factor(rng: np.random.Generator, n_steps: int, step_s: float = 60.0) -> FloatArray:
    """Seeded cloud transmission for one day.

    The day is drawn as clear (40 %), broken cloud (35 %) or overcast (25 %);
    within it the factor wanders as an AR(1) process with a ~10 min memory.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source; the same state gives the same day.
    n_steps : int
        Number of values [unitless].
    step_s : float
        Spacing of the values [s].

    Returns
    -------
    numpy.ndarray
        Factors in ``[0.05, 1]``, shape ``(n_steps,)`` [unitless].
    """
    kind = rng.choice(3, p=[0.40, 0.35, 0.25])
    mean, std = ((0.97, 0.02), (0.65, 0.20), (0.30, 0.08))[kind]
    noise = ar1_noise(rng, n_steps, std, tau_s=600.0, step_s=step_s)
    return np.clip(mean + noise, 0.05, 1.0)


# -------------------------------------------------------------- common ----


def ar1_noise(rng: np.random.Generator, n_steps: int, std: float, tau_s: float, step_s: float = 60.0) -> FloatArray:
    """Stationary AR(1) (Ornstein-Uhlenbeck) noise with zero mean.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    n_steps : int
        Number of values [unitless].
    std : float
        Stationary standard deviation, in the unit of the caller.
    tau_s : float
        Correlation time [s].
    step_s : float
        Spacing of the values [s].

    Returns
    -------
    numpy.ndarray
        Shape ``(n_steps,)``.
    """
    if n_steps <= 0:
        return np.zeros(0)
    phi = math.exp(-step_s / tau_s)
    eps = rng.standard_normal(n_steps) * std * math.sqrt(1.0 - phi * phi)
    x0 = rng.standard_normal() * std
    # x[i] = phi * x[i-1] + eps[i], starting from a stationary draw x0
    out, _ = scipy.signal.lfilter([1.0], [1.0, -phi], eps, zi=[phi * x0])
    return np.asarray(out, dtype=float)


def ramp_toward(p_kw: ArrayLike, target_kw: ArrayLike, ramp_kw_per_s: ArrayLike, dt_s: float) -> FloatArray:
    """Move power toward a target, at most ``ramp * dt`` per step.

    Parameters
    ----------
    p_kw : array_like
        Power now [kW].
    target_kw : array_like
        Power wanted [kW].
    ramp_kw_per_s : array_like
        Largest change per second, ``inf`` for none [kW/s].
    dt_s : float
        Step length [s].

    Returns
    -------
    numpy.ndarray
        Power after the step [kW].
    """
    p = np.asarray(p_kw, dtype=float)
    step = np.asarray(ramp_kw_per_s, dtype=float) * dt_s
    return p + np.minimum(np.maximum(np.asarray(target_kw, dtype=float) - p, -step), step)


def split_import_export(net_kwh: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Split signed net energy at a meter into its two registers.

    Parameters
    ----------
    net_kwh : array_like
        Energy delivered to the grid, + export / − import [kWh].

    Returns
    -------
    import_kwh, export_kwh : numpy.ndarray
        Both non-negative [kWh].
    """
    net = np.asarray(net_kwh, dtype=float)
    return np.maximum(-net, 0.0), np.maximum(net, 0.0)


# ------------------------------------------------------------- battery ----


def battery_limits_kw(
    soc_kwh: ArrayLike,
    soc_min_kwh: ArrayLike,
    soc_max_kwh: ArrayLike,
    rated_kw: ArrayLike,
    charge_efficiency: ArrayLike,
    discharge_efficiency: ArrayLike,
    horizon_s: float = ENERGY_HORIZON_S,
) -> tuple[FloatArray, FloatArray]:
    """Terminal power range a battery can hold for ``horizon_s`` now.

    Parameters
    ----------
    soc_kwh : array_like
        State of charge [kWh].
    soc_min_kwh, soc_max_kwh : array_like
        Allowed state-of-charge bounds [kWh].
    rated_kw : array_like
        Converter rating, both directions [kW].
    charge_efficiency : array_like
        Terminal-to-cell efficiency [unitless].
    discharge_efficiency : array_like
        Cell-to-terminal efficiency [unitless].
    horizon_s : float
        Time the power must be sustainable for [s].

    Returns
    -------
    p_min_kw, p_max_kw : numpy.ndarray
        Largest charge (negative) and discharge (positive) power [kW].
    """
    soc = np.asarray(soc_kwh, dtype=float)
    rated = np.asarray(rated_kw, dtype=float)
    per_s = SECONDS_PER_HOUR / horizon_s
    headroom_up = np.maximum(np.asarray(soc_max_kwh, dtype=float) - soc, 0.0)
    headroom_down = np.maximum(soc - np.asarray(soc_min_kwh, dtype=float), 0.0)
    p_min = -np.minimum(rated, headroom_up / np.asarray(charge_efficiency, dtype=float) * per_s)
    p_max = np.minimum(rated, headroom_down * np.asarray(discharge_efficiency, dtype=float) * per_s)
    return p_min, p_max


def battery_step(
    soc_kwh: ArrayLike,
    p_kw: ArrayLike,
    dt_s: float,
    soc_min_kwh: ArrayLike,
    soc_max_kwh: ArrayLike,
    rated_kw: ArrayLike,
    charge_efficiency: ArrayLike,
    discharge_efficiency: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """Hold a terminal power for ``dt_s`` and update the state of charge.

    The power is first clipped to the rating, then curtailed so the state of
    charge does not cross its bounds within the step. Discharging ``p`` for
    ``dt`` takes ``p * dt / discharge_efficiency`` from the cells; charging
    stores ``|p| * dt * charge_efficiency``.

    Parameters
    ----------
    soc_kwh : array_like
        State of charge at the start of the step [kWh].
    p_kw : array_like
        Requested terminal power, + discharge / − charge [kW].
    dt_s : float
        Step length [s].
    soc_min_kwh, soc_max_kwh : array_like
        Allowed state-of-charge bounds [kWh].
    rated_kw : array_like
        Converter rating [kW].
    charge_efficiency, discharge_efficiency : array_like
        One-way efficiencies [unitless].

    Returns
    -------
    p_kw : numpy.ndarray
        Terminal power actually held [kW].
    soc_kwh : numpy.ndarray
        State of charge at the end of the step, within the bounds [kWh].
    """
    soc = np.asarray(soc_kwh, dtype=float)
    soc_min = np.asarray(soc_min_kwh, dtype=float)
    soc_max = np.asarray(soc_max_kwh, dtype=float)
    eta_c = np.asarray(charge_efficiency, dtype=float)
    eta_d = np.asarray(discharge_efficiency, dtype=float)
    rated = np.asarray(rated_kw, dtype=float)
    # np.minimum/np.maximum rather than np.clip: this runs every simulated second.
    p = np.minimum(np.maximum(np.asarray(p_kw, dtype=float), -rated), rated)
    if dt_s <= 0:
        return p, soc.copy()
    hours = dt_s / SECONDS_PER_HOUR
    p_max = np.maximum(soc - soc_min, 0.0) * (eta_d / hours)
    p_min = np.maximum(soc_max - soc, 0.0) * (-1.0 / hours / eta_c)
    p = np.minimum(np.maximum(p, p_min), p_max)
    cell_kwh = np.where(p > 0.0, p / eta_d, p * eta_c) * hours
    new_soc = np.minimum(np.maximum(soc - cell_kwh, np.minimum(soc_min, soc)), np.maximum(soc_max, soc))
    return p, new_soc


# --------------------------------------------------------------- loads ----


def load_shape(local_hour: ArrayLike, pattern: str, weekend: bool = False, weekend_factor: float = 0.5) -> FloatArray:
    """Daily production profile of an industrial site as a fraction of its peak.

    Parameters
    ----------
    local_hour : array_like
        Local clock time as fractional hours, ``0 <= h <= 24`` [h].
    pattern : str
        ``"three_shift"`` (24/7), ``"two_shift"`` (06-22) or ``"day_shift"`` (08-17).
    weekend : bool
        Saturday or Sunday: production above standby is scaled by ``weekend_factor``.
    weekend_factor : float
        Weekend production relative to a weekday [unitless].

    Returns
    -------
    numpy.ndarray
        Fraction of peak load in ``[0, 1]`` [unitless].
    """
    try:
        hours, values = _SHAPE_POINTS[pattern]
    except KeyError:
        raise ValueError(f"unknown shift pattern {pattern!r}; expected one of {SHIFT_PATTERNS}") from None
    shape = np.interp(np.asarray(local_hour, dtype=float), hours, values)
    if weekend:
        standby = min(_STANDBY_FRACTION[pattern], 0.3)
        shape = standby + (shape - standby) * weekend_factor
    return shape


def interruptible_limits_kw(load_kw: ArrayLike, max_curtail_kw: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Power range of an interruptible process load.

    It can run at its natural load or be curtailed by up to ``max_curtail_kw``
    (never below zero consumption); it cannot be made to draw more.

    Parameters
    ----------
    load_kw : array_like
        Natural consumption, positive [kW].
    max_curtail_kw : array_like
        Largest reduction [kW].

    Returns
    -------
    p_min_kw, p_max_kw : numpy.ndarray
        ``-load`` and ``-(load - curtailable)``, generator convention [kW].
    """
    load = np.maximum(np.asarray(load_kw, dtype=float), 0.0)
    return -load, -np.maximum(load - np.asarray(max_curtail_kw, dtype=float), 0.0)


def shiftable_limits_kw(
    remaining_kwh: ArrayLike,
    time_left_s: ArrayLike,
    rated_kw: ArrayLike,
    horizon_s: float = ENERGY_HORIZON_S,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Power range and natural power of a shiftable load inside its window.

    The process needs ``remaining_kwh`` more before its window closes in
    ``time_left_s``. Left alone it spreads the remainder evenly over the time
    left, so energy deferred by a dispatch is caught up later and energy run
    ahead is saved later. Within the next ``h = min(horizon, time_left)`` it
    cannot draw more than the remainder, and must draw at least enough that
    the rest still fits at rated power: ``(remaining - rated * (time_left - h)) / h``.

    Parameters
    ----------
    remaining_kwh : array_like
        Energy still to be delivered today, >= 0 [kWh].
    time_left_s : array_like
        Time until the window closes; <= 0 (or under 1 ms) means outside the window [s].
    rated_kw : array_like
        Nameplate power [kW].
    horizon_s : float
        Energy-limit horizon [s].

    Returns
    -------
    p_min_kw, p_max_kw, p_natural_kw : numpy.ndarray
        Generator convention (all <= 0); zeros outside the window [kW].
    """
    remaining = np.maximum(np.asarray(remaining_kwh, dtype=float), 0.0)
    left_s = np.asarray(time_left_s, dtype=float)
    rated = np.asarray(rated_kw, dtype=float)
    inside = left_s > 1e-3  # a window closing within a millisecond is closed
    left_h = np.where(inside, left_s, 1.0) / SECONDS_PER_HOUR
    h = np.minimum(horizon_s / SECONDS_PER_HOUR, left_h)
    most = np.minimum(rated, remaining / h)
    least = np.minimum(np.maximum((remaining - rated * (left_h - h)) / h, 0.0), most)
    natural = np.minimum(np.maximum(remaining / left_h, least), most)
    return np.where(inside, -most, 0.0), np.where(inside, -least, 0.0), np.where(inside, -natural, 0.0)


# ------------------------------------------------------------------ EV ----


@dataclass(frozen=True)
class EvSessions:
    """Charging sessions of one day, one element per session.

    Times are minutes after local midnight; a vehicle is connected for
    ``arrive_min <= minute < depart_min``.
    """

    charger: NDArray[np.intp]
    """Index of the charger the vehicle is plugged into [unitless]."""
    arrive_min: NDArray[np.int64]
    """Arrival, minutes after local midnight [min]."""
    depart_min: NDArray[np.int64]
    """Departure, minutes after local midnight [min]."""
    cap_kw: FloatArray
    """Largest charge or discharge power of the vehicle on that port [kW]."""
    need_kwh: FloatArray
    """Energy the driver wants added before leaving [kWh]."""
    v2g_kwh: FloatArray
    """Energy the vehicle lets a bidirectional charger take back below its arrival state [kWh]."""

    def __len__(self) -> int:
        return int(self.charger.size)


def ev_sessions(
    rng: np.random.Generator,
    port_kw: ArrayLike,
    ports: ArrayLike,
    bidirectional: ArrayLike,
    minutes_in_day: int = 1440,
    weekend: bool = False,
) -> EvSessions:
    """Draw one day of EV charging sessions for a set of chargers.

    Slow ports (<= 22 kW) see workplace charging: most vehicles arrive
    around 08:30 and leave in the late afternoon needing 8-45 kWh, a few
    return in the evening. Fast ports (>= 50 kW) serve fleet vans and
    trucks: short sessions of 20-120 kWh from 06:00 to 23:00. Weekends
    are quieter. Sessions on one port never overlap and all end by midnight.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    port_kw : array_like
        Power of each port of each charger [kW].
    ports : array_like
        Number of ports of each charger [unitless].
    bidirectional : array_like
        Whether each charger can discharge vehicles (V2G) [bool].
    minutes_in_day : int
        Length of the local day [min].
    weekend : bool
        Saturday or Sunday.

    Returns
    -------
    EvSessions
    """
    port_kw_a = np.asarray(port_kw, dtype=float)
    ports_a = np.asarray(ports, dtype=int)
    bidir_a = np.asarray(bidirectional, dtype=bool)
    rows: list[tuple[int, int, int, float, float]] = []
    last = minutes_in_day
    for c in range(port_kw_a.size):
        kw = float(port_kw_a[c])
        for _port in range(int(ports_a[c])):
            if kw <= 22.0:
                if rng.random() < (0.2 if weekend else 0.75):
                    arrive = int(np.clip(rng.normal(510.0, 45.0), 360, 660))
                    depart = min(arrive + int(rng.uniform(300, 570)), last - 1)
                    vehicle_kw = float(rng.choice([6.6, 7.0, 11.0, 22.0]))
                    rows.append((c, arrive, depart, min(kw, vehicle_kw), float(rng.uniform(8.0, 45.0))))
                    if rng.random() < 0.25:
                        arrive2 = max(depart + 30, int(rng.uniform(1080, 1200)))
                        depart2 = min(arrive2 + int(rng.uniform(60, 180)), last - 1)
                        if depart2 > arrive2:
                            rows.append((c, arrive2, depart2, min(kw, vehicle_kw), float(rng.uniform(5.0, 25.0))))
            else:
                gap_mean = 180.0 if weekend else 45.0
                t = 360.0 + rng.exponential(gap_mean)
                while t < min(1380.0, last - 30):
                    arrive = int(t)
                    depart = min(arrive + int(rng.uniform(25, 75)), last - 1)
                    vehicle_kw = float(rng.uniform(50.0, 150.0))
                    rows.append((c, arrive, depart, min(kw, vehicle_kw), float(rng.uniform(20.0, 120.0))))
                    t = depart + 5 + rng.exponential(gap_mean)
    if not rows:
        empty_f = np.zeros(0)
        empty_i = np.zeros(0, dtype=np.int64)
        return EvSessions(np.zeros(0, dtype=np.intp), empty_i, empty_i.copy(), empty_f, empty_f.copy(), empty_f.copy())
    charger, arrive, depart, cap, need = (np.array(col) for col in zip(*rows, strict=True))
    v2g = np.where(bidir_a[charger], 0.3 * need, 0.0)
    return EvSessions(
        charger=charger.astype(np.intp),
        arrive_min=arrive.astype(np.int64),
        depart_min=depart.astype(np.int64),
        cap_kw=cap.astype(float),
        need_kwh=need.astype(float),
        v2g_kwh=v2g.astype(float),
    )


def ev_limits_kw(
    connected: NDArray[np.bool_],
    cap_kw: ArrayLike,
    remaining_kwh: ArrayLike,
    v2g_left_kwh: ArrayLike,
    horizon_s: float = ENERGY_HORIZON_S,
) -> tuple[FloatArray, FloatArray]:
    """Per-session charge and discharge capability.

    Parameters
    ----------
    connected : numpy.ndarray of bool
        Vehicle is plugged in now.
    cap_kw : array_like
        Session power cap [kW].
    remaining_kwh : array_like
        Energy the vehicle still wants [kWh].
    v2g_left_kwh : array_like
        Energy a bidirectional charger may still take from it; 0 otherwise [kWh].
    horizon_s : float
        Energy-limit horizon [s].

    Returns
    -------
    charge_kw, discharge_kw : numpy.ndarray
        Non-negative capabilities per session [kW].
    """
    per_s = SECONDS_PER_HOUR / horizon_s
    cap = np.asarray(cap_kw, dtype=float)
    charge = np.where(connected, np.minimum(cap, np.maximum(np.asarray(remaining_kwh, dtype=float), 0.0) * per_s), 0.0)
    discharge = np.where(connected, np.minimum(cap, np.maximum(np.asarray(v2g_left_kwh, dtype=float), 0.0) * per_s), 0.0)
    return charge, discharge


def ev_allocate_kw(
    p_kw: ArrayLike,
    charger: NDArray[np.intp],
    charge_kw: ArrayLike,
    discharge_kw: ArrayLike,
) -> FloatArray:
    """Share each charger's power among its connected sessions.

    Every session gets the same fraction of its own capability (proportional
    sharing), so no session exceeds its cap when the charger power is within
    ``[-sum(charge_kw), +sum(discharge_kw)]``.

    Parameters
    ----------
    p_kw : array_like
        Charger power, generator convention (− charging), per charger [kW].
    charger : numpy.ndarray of int
        Charger index of each session.
    charge_kw, discharge_kw : array_like
        Capabilities per session (from :func:`ev_limits_kw`) [kW].

    Returns
    -------
    numpy.ndarray
        Power into each vehicle, + charging / − discharging [kW].
    """
    p = np.asarray(p_kw, dtype=float)
    charge = np.asarray(charge_kw, dtype=float)
    discharge = np.asarray(discharge_kw, dtype=float)
    total_charge = np.bincount(charger, weights=charge, minlength=p.size)
    total_discharge = np.bincount(charger, weights=discharge, minlength=p.size)
    f_charge = np.divide(np.maximum(-p, 0.0), total_charge, out=np.zeros(p.shape), where=total_charge > 0)
    f_discharge = np.divide(np.maximum(p, 0.0), total_discharge, out=np.zeros(p.shape), where=total_discharge > 0)
    return np.minimum(f_charge, 1.0)[charger] * charge - np.minimum(f_discharge, 1.0)[charger] * discharge
