"""The simulated park in time: devices follow set-points within their physics.

:class:`SimulatedPark` holds the state of every device of a
:class:`~simulators.park.ParkSpec` (battery SoC, energy a shiftable process
still needs, EV sessions, meter registers) and advances it with
:meth:`SimulatedPark.step`. All devices of one kind are stepped together as
numpy arrays, so one step of a park of ~60 devices costs tens of
microseconds.

Time handling
-------------
* Time is advanced in sub-steps that end on the UTC minute grid and are at
  most 60 s long, so stepping by one large jump gives the same result as
  stepping every minute, and energy budgets can never overshoot within a
  sub-step (see :data:`simulators.physics.ENERGY_HORIZON_S`).
* Exogenous profiles (PV potential, natural load, base load) are computed once
  per local day at 1-min resolution (pvlib clear sky, seeded clouds and
  noise, seeded EV sessions) and linearly interpolated to the middle of each
  sub-step; the random streams are keyed by (seed, stream, day), so a day
  looks the same whatever the step pattern that reaches it.
* Over one sub-step a device holds one power (the value reported in
  telemetry); meters integrate it and the base load over the sub-step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from simulators import physics
from simulators.park import ParkSpec, generation_meter_id, grid_meter_id
from vpp.model import (
    PV,
    Battery,
    EvCharger,
    InterruptibleLoad,
    MeterReading,
    Setpoint,
    ShiftableLoad,
    TelemetrySample,
)

__all__ = ["SimulatedPark"]

_STREAM_CLOUDS = 1
_STREAM_LOADS = 2
_STREAM_EV = 3
_LOAD_HEADROOM = 0.9
"""Process loads peak at this fraction of their rating, leaving room for noise [unitless]."""


@dataclass
class _Day:
    """Exogenous profiles of one local day, at 1-min resolution, plus its EV sessions."""

    local_date: date
    start_s: float
    """Local midnight [s since the Unix epoch]."""
    end_s: float
    n_min: int
    local_hour: NDArray[np.float64]
    """Local clock hour at each minute, shape (n_min + 1,) [h]."""
    profile: NDArray[np.float64]
    """Columns: PV potential | interruptible natural load | enterprise base load, shape (n_min + 1, n_cols) [kW]."""
    ev: physics.EvSessions
    ev_charged_kwh: NDArray[np.float64]
    """Energy put into each session's vehicle so far (negative after V2G) [kWh]."""


def _epoch_s(when: datetime) -> float:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"time {when.isoformat()} has no timezone; pass an aware UTC datetime")
    return when.timestamp()


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc)


class SimulatedPark:
    """A park of simulated devices and meters, deterministic for a given seed.

    Parameters
    ----------
    spec : ParkSpec
        What is in the park.
    start : datetime
        Timezone-aware instant the simulation starts at.
    seed : int
        Seed of the weather, load noise and EV sessions.
    clouds : bool
        Seeded cloud cover on the PV (clear, broken-cloud or overcast days,
        minute-scale variability); the default ``False`` gives clear-sky PV.
    pv_derate : float
        PV system derate [unitless].
    """

    def __init__(
        self,
        spec: ParkSpec,
        start: datetime,
        seed: int,
        *,
        clouds: bool = False,
        pv_derate: float = physics.DEFAULT_PV_DERATE,
    ) -> None:
        self.spec = spec
        self.seed = int(seed)
        self.clouds = clouds
        self.pv_derate = pv_derate
        self._tz = ZoneInfo(spec.timezone)
        self._t = _epoch_s(start)

        # Devices sorted by kind so each kind is one contiguous slice.
        kinds = (PV, Battery, InterruptibleLoad, ShiftableLoad, EvCharger)
        ordered = [d for k in kinds for d in spec.devices if isinstance(d, k)]
        self._devices = ordered
        self._index = {d.id: i for i, d in enumerate(ordered)}
        self._spec_order = np.array([self._index[d.id] for d in spec.devices], dtype=np.intp)
        bounds = np.cumsum([0] + [sum(isinstance(d, k) for d in ordered) for k in kinds])
        self._pv, self._bat, self._il, self._sl, self._ev = (
            slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        )
        n = len(ordered)
        pvs = [d for d in ordered if isinstance(d, PV)]
        bats = [d for d in ordered if isinstance(d, Battery)]
        ils = [d for d in ordered if isinstance(d, InterruptibleLoad)]
        sls = [d for d in ordered if isinstance(d, ShiftableLoad)]
        evs = [d for d in ordered if isinstance(d, EvCharger)]

        self._enterprise_ids = [e.id for e in spec.enterprises]
        ent_pos = {eid: i for i, eid in enumerate(self._enterprise_ids)}
        self._ent_idx = np.array([ent_pos[d.enterprise_id] for d in ordered], dtype=np.intp)
        self._ramp = np.array([np.inf if d.ramp_kw_per_s is None else d.ramp_kw_per_s for d in ordered], dtype=float)
        self._protected_by_hour = np.array([[d.is_protected(h) for d in ordered] for h in range(24)], dtype=bool)
        self._has_protected = bool(self._protected_by_hour.any())

        # PV
        self._pv_rated = np.array([d.rated_kw for d in pvs], dtype=float)
        self._pv_tilt = np.array([d.tilt_deg for d in pvs], dtype=float)
        self._pv_azimuth = np.array([d.azimuth_deg for d in pvs], dtype=float)
        gen_owners = sorted({d.enterprise_id for d in pvs}, key=self._enterprise_ids.index)
        self._gen_meter_ids = [generation_meter_id(eid) for eid in gen_owners]
        self._pv_gen_idx = np.array([gen_owners.index(d.enterprise_id) for d in pvs], dtype=np.intp)
        self._linke_monthly = physics.monthly_linke_turbidity(spec.latitude, spec.longitude) if pvs else np.full(12, 3.0)
        # Batteries
        self._bat_soc_min = np.array([d.soc_min_kwh for d in bats], dtype=float)
        self._bat_soc_max = np.array([d.soc_upper_kwh for d in bats], dtype=float)
        self._bat_eta_c = np.array([d.charge_efficiency for d in bats], dtype=float)
        self._bat_eta_d = np.array([d.discharge_efficiency for d in bats], dtype=float)
        self._bat_rated = np.array([d.rated_kw for d in bats], dtype=float)
        self._soc = np.array(
            [spec.initial_soc_kwh.get(d.id, (d.soc_min_kwh + d.soc_upper_kwh) / 2.0) for d in bats], dtype=float
        )
        # Interruptible loads
        self._il_max_curtail = np.array([d.max_curtail_kw for d in ils], dtype=float)
        # Shiftable loads
        self._sl_rated = np.array([d.rated_kw for d in sls], dtype=float)
        self._sl_energy = np.array([d.energy_per_day_kwh for d in sls], dtype=float)
        self._sl_start_h = np.array([d.window_start_hour for d in sls], dtype=float)
        self._sl_end_h = np.array([d.window_end_hour for d in sls], dtype=float)
        self._sl_delivered = np.zeros(len(sls))
        # EV chargers
        self._ev_ports = np.array([d.ports for d in evs], dtype=int)
        self._ev_port_kw = np.array([d.rated_kw / d.ports for d in evs], dtype=float)
        self._ev_bidir = np.array([d.bidirectional for d in evs], dtype=bool)
        self._ev_charge = np.zeros(0)
        self._ev_discharge = np.zeros(0)
        self._ev_connected = np.zeros(0, dtype=bool)

        # Per-device state
        self._p = np.zeros(n)
        self._lo = np.zeros(n)
        self._hi = np.zeros(n)
        self._nat = np.zeros(n)
        self._sp = np.zeros(n)
        self._sp_active = np.zeros(n, dtype=bool)
        self._online = np.ones(n, dtype=bool)
        self._energy = np.zeros(n)
        self._protected_s = np.zeros(n)
        # Meters
        n_ent = len(self._enterprise_ids)
        self._base = np.zeros(n_ent)
        self._import = np.zeros(n_ent)
        self._export = np.zeros(n_ent)
        self._gen_export = np.zeros(len(self._gen_meter_ids))

        self._day = self._load_day(self._t)
        self._start_of_day_progress(self._t)
        self._advance(self._t, self._t, settle=True)

    # ------------------------------------------------------------ public --

    @property
    def now(self) -> datetime:
        """Time the park has been advanced to (UTC)."""
        return _utc(self._t)

    @property
    def device_ids(self) -> list[str]:
        """Ids of all devices, in park order."""
        return [d.id for d in self.spec.devices]

    def step(self, now: datetime) -> None:
        """Advance all physics to ``now``; a time at or before the last step does nothing.

        Parameters
        ----------
        now : datetime
            Timezone-aware instant.
        """
        end = _epoch_s(now)
        t = self._t
        while t < end:
            t_next = min(end, (math.floor(t / physics.ENERGY_HORIZON_S) + 1.0) * physics.ENERGY_HORIZON_S)
            self._advance(t, t_next)
            t = t_next
        self._t = max(self._t, end)

    def apply_setpoints(self, setpoints: Iterable[Setpoint]) -> list[str]:
        """Store set-points; they act from the next step. ``p_kw=None`` releases a device.

        Set-points for offline devices are ignored.

        Parameters
        ----------
        setpoints : iterable of Setpoint
            Powers in generator convention [kW].

        Returns
        -------
        list of str
            Ids of set-points naming no device of this park (ignored).
        """
        unknown: list[str] = []
        for sp in setpoints:
            i = self._index.get(sp.device_id)
            if i is None:
                unknown.append(sp.device_id)
            elif self._online[i]:
                self._sp_active[i] = sp.p_kw is not None
                self._sp[i] = 0.0 if sp.p_kw is None else sp.p_kw
        return unknown

    def set_online(self, device_id: str, online: bool) -> None:
        """Simulate a device losing (or regaining) its connection.

        An offline device reports nothing, drops its set-point, ignores new
        ones and runs naturally.
        """
        i = self._index[device_id]
        self._online[i] = online
        if not online:
            self._sp_active[i] = False
            self._sp[i] = 0.0

    def is_online(self, device_id: str) -> bool:
        """Whether the device currently accepts set-points and reports telemetry."""
        return bool(self._online[self._index[device_id]])

    def telemetry(self, now: datetime) -> list[TelemetrySample]:
        """Step to ``now``, then one sample per online device, in park order.

        ``p_kw`` is the power held over the last sub-step; ``p_min_kw`` and
        ``p_max_kw`` the physical range it could be set to now (protected
        hours are an enrolment rule, not physics, and are not applied here).
        """
        self.step(now)
        ts = now.astimezone(timezone.utc)
        samples = []
        bat_start = self._bat.start
        for i in self._spec_order.tolist():
            if not self._online[i]:
                continue
            soc = None
            if self._bat.start <= i < self._bat.stop:
                soc = max(float(self._soc[i - bat_start]), 0.0)
            samples.append(
                TelemetrySample(
                    device_id=self._devices[i].id,
                    ts=ts,
                    p_kw=float(self._p[i]) + 0.0,  # + 0.0 turns -0.0 into 0.0
                    p_min_kw=float(self._lo[i]) + 0.0,
                    p_max_kw=float(self._hi[i]) + 0.0,
                    soc_kwh=soc,
                )
            )
        return samples

    def meter_readings(self, now: datetime) -> list[MeterReading]:
        """Step to ``now``, then the cumulative registers of every meter, in park order."""
        self.step(now)
        ts = now.astimezone(timezone.utc)
        grid = {grid_meter_id(eid): k for k, eid in enumerate(self._enterprise_ids)}
        gen = {mid: k for k, mid in enumerate(self._gen_meter_ids)}
        out = []
        for m in self.spec.meters:
            if m.purpose == "grid":
                k = grid[m.id]
                imp, exp = float(self._import[k]), float(self._export[k])
            else:
                imp, exp = 0.0, (float(self._gen_export[gen[m.id]]) if m.id in gen else 0.0)
            out.append(MeterReading(meter_id=m.id, ts=ts, import_kwh=imp, export_kwh=exp))
        return out

    # --------------------------------------------------- introspection --

    def power_kw(self, device_id: str) -> float:
        """Power held over the last sub-step, generator convention [kW]."""
        return float(self._p[self._index[device_id]])

    def limits_kw(self, device_id: str) -> tuple[float, float]:
        """Physical power range at the last sub-step [kW]."""
        i = self._index[device_id]
        return float(self._lo[i]), float(self._hi[i])

    def energy_kwh(self, device_id: str) -> float:
        """Energy delivered since the start, generator convention (negative for loads) [kWh]."""
        return float(self._energy[self._index[device_id]])

    def soc_kwh(self, device_id: str) -> float:
        """State of charge of a battery [kWh]."""
        return float(self._soc[self._index[device_id] - self._bat.start])

    def shiftable_remaining_kwh(self, device_id: str) -> float:
        """Energy a shiftable load still needs today [kWh]."""
        k = self._index[device_id] - self._sl.start
        return float(max(self._sl_energy[k] - self._sl_delivered[k], 0.0))

    def ev_connected_sessions(self, device_id: str) -> int:
        """Vehicles plugged into a charger at the last sub-step."""
        c = self._index[device_id] - self._ev.start
        return int(np.count_nonzero(self._ev_connected & (self._day.ev.charger == c)))

    def ev_session_energy_kwh(self, device_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Today's sessions at a charger: energy put into each vehicle so far and energy it wanted [kWh]."""
        c = self._index[device_id] - self._ev.start
        mine = self._day.ev.charger == c
        return self._day.ev_charged_kwh[mine].copy(), self._day.ev.need_kwh[mine].copy()

    def base_load_kw(self) -> dict[str, float]:
        """Uncontrolled load of each enterprise at the last sub-step, positive [kW]."""
        return {eid: float(v) for eid, v in zip(self._enterprise_ids, self._base, strict=True)}

    def protected_violation_s(self) -> dict[str, float]:
        """Seconds each device spent under a set-point during its protected hours (only non-zero ones) [s]."""
        return {self._devices[i].id: float(s) for i, s in enumerate(self._protected_s) if s > 0.0}

    # ---------------------------------------------------------- physics --

    def _load_day(self, t: float) -> _Day:
        """Build the profiles of the local day containing epoch second ``t``."""
        local_date = datetime.fromtimestamp(t, tz=self._tz).date()
        start = datetime(local_date.year, local_date.month, local_date.day, tzinfo=self._tz)
        nxt = local_date + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self._tz)
        start_s, end_s = start.timestamp(), end.timestamp()
        n_min = int(round((end_s - start_s) / 60.0))
        times = pd.date_range(start=_utc(start_s), periods=n_min + 1, freq="1min")
        local = times.tz_convert(self.spec.timezone)
        local_hour = np.asarray(local.hour + local.minute / 60.0, dtype=float)
        local_hour[-1] = 24.0
        weekend = local_date.weekday() >= 5
        ordinal = local_date.toordinal()

        # PV potential
        pot = np.zeros((n_min + 1, self._pv_rated.size))
        if self._pv_rated.size:
            days_in_year = 366 if pd.Timestamp(local_date).is_leap_year else 365
            turbidity = physics.linke_turbidity_for_day(
                self._linke_monthly, local_date.timetuple().tm_yday, days_in_year
            )
            poa = physics.clearsky_poa_w_per_m2(
                times,
                self.spec.latitude,
                self.spec.longitude,
                self._pv_tilt,
                self._pv_azimuth,
                altitude_m=self.spec.altitude_m,
                linke_turbidity=turbidity,
            )
            cloud = None
            if self.clouds:
                cloud = physics.cloud_factor(np.random.default_rng([self.seed, _STREAM_CLOUDS, ordinal]), n_min + 1)
                cloud = cloud[:, None]
            pot = physics.pv_ac_kw(poa, self._pv_rated, self.pv_derate, cloud)

        # Natural process loads and base loads: shift pattern x (1 + noise)
        rng = np.random.default_rng([self.seed, _STREAM_LOADS, ordinal])
        il_cols = []
        for d in self._devices[self._il]:
            base = self.spec.base_loads[d.enterprise_id]
            shape = physics.load_shape(local_hour, base.shift_pattern, weekend, base.weekend_factor)
            noise = physics.ar1_noise(rng, n_min + 1, base.noise_std, tau_s=900.0)
            il_cols.append(np.clip(d.rated_kw * _LOAD_HEADROOM * shape * (1.0 + noise), 0.0, d.rated_kw))
        base_cols = []
        for eid in self._enterprise_ids:
            base = self.spec.base_loads[eid]
            shape = physics.load_shape(local_hour, base.shift_pattern, weekend, base.weekend_factor)
            noise = physics.ar1_noise(rng, n_min + 1, base.noise_std, tau_s=600.0)
            base_cols.append(np.maximum(base.peak_kw * shape * (1.0 + noise), 0.0))
        profile = np.ascontiguousarray(np.column_stack([pot, *il_cols, *base_cols]), dtype=float)

        ev = physics.ev_sessions(
            np.random.default_rng([self.seed, _STREAM_EV, ordinal]),
            self._ev_port_kw,
            self._ev_ports,
            self._ev_bidir,
            minutes_in_day=n_min,
            weekend=weekend,
        )
        return _Day(local_date, start_s, end_s, n_min, local_hour, profile, ev, np.zeros(len(ev)))

    def _start_of_day_progress(self, t: float) -> None:
        """At a mid-day start, assume shiftable loads have run their natural schedule so far."""
        x = (t - self._day.start_s) / 60.0
        hour = float(np.interp(x, np.arange(self._day.n_min + 1), self._day.local_hour))
        span = self._sl_end_h - self._sl_start_h
        self._sl_delivered[:] = self._sl_energy * np.clip((hour - self._sl_start_h) / span, 0.0, 1.0)

    def _advance(self, t0: float, t1: float, *, settle: bool = False) -> None:
        """One sub-step from ``t0`` to ``t1`` (same local day, at most 60 s).

        Membership (windows, sessions, protected hours) is taken at ``t0``,
        exogenous profiles at the midpoint (exact energy for the piecewise
        linear profiles, since a sub-step never crosses a minute boundary);
        the resulting power is held over the sub-step. ``settle`` sets every device to its natural power without
        integrating (used once at the start).
        """
        dt = t1 - t0
        day = self._day
        if not day.start_s <= t0 < day.end_s:
            day = self._day = self._load_day(t0)
            self._sl_delivered[:] = 0.0  # a new day's energy requirement
        x0 = (t0 - day.start_s) / 60.0
        xm = (t0 + t1 - 2.0 * day.start_s) / 120.0
        im = min(int(xm), day.n_min - 1)
        f = xm - im
        prof = day.profile
        row = prof[im] + f * (prof[im + 1] - prof[im])
        i0 = min(int(x0), day.n_min - 1)
        hour0 = float(day.local_hour[i0]) + (x0 - i0) / 60.0

        lo, hi, nat = self._lo, self._hi, self._nat
        n_pv = self._pv_rated.size
        n_il = self._il_max_curtail.size
        # PV: anything from zero (lo stays 0) to the potential
        pot = row[:n_pv]
        hi[self._pv] = pot
        nat[self._pv] = pot
        # Batteries: idle unless dispatched (nat stays 0)
        if self._soc.size:
            lo[self._bat], hi[self._bat] = physics.battery_limits_kw(
                self._soc, self._bat_soc_min, self._bat_soc_max, self._bat_rated, self._bat_eta_c, self._bat_eta_d
            )
        # Interruptible loads
        if n_il:
            load = row[n_pv : n_pv + n_il]
            lo[self._il], hi[self._il] = physics.interruptible_limits_kw(load, self._il_max_curtail)
            nat[self._il] = -load
        # Shiftable loads
        if self._sl_rated.size:
            inside = (self._sl_start_h <= hour0) & (hour0 < self._sl_end_h)
            left_s = np.where(inside, (self._sl_end_h - hour0) * physics.SECONDS_PER_HOUR, 0.0)
            lo[self._sl], hi[self._sl], nat[self._sl] = physics.shiftable_limits_kw(
                self._sl_energy - self._sl_delivered, left_s, self._sl_rated
            )
        # EV chargers: natural = charge every connected vehicle as fast as it takes
        ev = day.ev
        n_ev = self._ev_ports.size
        if n_ev:
            if len(ev):
                self._ev_connected = (ev.arrive_min <= x0) & (x0 < ev.depart_min)
                self._ev_charge, self._ev_discharge = physics.ev_limits_kw(
                    self._ev_connected, ev.cap_kw, ev.need_kwh - day.ev_charged_kwh, day.ev_charged_kwh + ev.v2g_kwh
                )
                lo[self._ev] = -np.bincount(ev.charger, weights=self._ev_charge, minlength=n_ev)
                hi[self._ev] = np.bincount(ev.charger, weights=self._ev_discharge, minlength=n_ev)
            else:
                lo[self._ev] = 0.0
                hi[self._ev] = 0.0
            nat[self._ev] = lo[self._ev]
        self._base = row[n_pv + n_il :]

        if settle:
            self._p = np.clip(nat, lo, hi)
            return

        # Follow the set-point (online devices) or natural behaviour, within ramp and range.
        target = np.where(self._sp_active, np.minimum(np.maximum(self._sp, lo), hi), nat)
        p = physics.ramp_toward(self._p, target, self._ramp, dt)
        p = np.minimum(np.maximum(p, lo), hi)

        hours = dt / physics.SECONDS_PER_HOUR
        if self._soc.size:
            p[self._bat], self._soc = physics.battery_step(
                self._soc, p[self._bat], dt, self._bat_soc_min, self._bat_soc_max,
                self._bat_rated, self._bat_eta_c, self._bat_eta_d,
            )  # fmt: skip
        if self._sl_rated.size:
            self._sl_delivered -= p[self._sl] * hours
        if n_ev and len(ev):
            into_vehicle = physics.ev_allocate_kw(p[self._ev], ev.charger, self._ev_charge, self._ev_discharge)
            day.ev_charged_kwh += into_vehicle * hours
        self._p = p
        self._energy += p * hours
        if self._has_protected:
            self._protected_s += (self._protected_by_hour[min(int(hour0), 23)] & self._sp_active) * dt

        net = np.bincount(self._ent_idx, weights=p, minlength=self._base.size) - self._base
        imp, exp = physics.split_import_export(net * hours)
        self._import += imp
        self._export += exp
        if n_pv:
            self._gen_export += np.bincount(self._pv_gen_idx, weights=p[self._pv], minlength=self._gen_export.size) * hours
