"""The simulated park in time: devices follow set-points within their physics.

:class:`SimulatedPark` holds the state of every device of a
:class:`~simulators.park.ParkSpec` (battery SoC, energy a shiftable process
still needs, EV sessions, meter registers) and advances it with
:meth:`SimulatedPark.step`. All devices of one kind are stepped together as
numpy arrays, so one step of a park of ~60 devices costs tens of
microseconds. :meth:`SimulatedPark.add_device` lets a device enrolled at run
time join (or a changed one replace its old self) without disturbing the rest.

Time handling
-------------
* Time is advanced in sub-steps that end on the UTC minute grid and are at
  most 60 s long, so stepping by one large jump gives the same result as
  stepping every minute, and energy budgets can never overshoot within a
  sub-step (see :data:`simulators.physics.ENERGY_HORIZON_S`).
* Exogenous profiles (PV potential, natural load, base load) are computed once
  per local day at 1-min resolution (pvlib clear sky, seeded clouds and
  noise, seeded EV sessions) and linearly interpolated to the middle of each
  sub-step; the random streams are keyed by (seed, stream, day) and, for
  anything drawn per device or per enterprise, by its id, so a day looks the
  same whatever the step pattern that reaches it and a device's profile does
  not change when another device joins the park.
* Over one sub-step a device holds one power (the value reported in
  telemetry); meters integrate it and the base load over the sub-step.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from simulators import physics
from simulators.park import ParkSpec, generation_meter_id, grid_meter_id
from vpp.model import (
    PV,
    Battery,
    Device,
    EvCharger,
    InterruptibleLoad,
    MeteringPoint,
    MeterReading,
    Setpoint,
    ShiftableLoad,
    TelemetrySample,
)

__all__ = ["SimulatedPark"]

_STREAM_CLOUDS = 1
_STREAM_LOADS = 2
_STREAM_EV = 3
_STREAM_BASE = 4
_LOAD_HEADROOM = 0.9
"""Process loads peak at this fraction of their rating, leaving room for noise [unitless]."""
_KINDS = (PV, Battery, InterruptibleLoad, ShiftableLoad, EvCharger)
"""Device classes in the order of their slices in the per-device arrays."""
_DEVICE_STATE = ("_p", "_sp", "_sp_active", "_online", "_energy", "_protected_s")
"""Per-device state arrays a device keeps when the device list changes."""
_DEVICE_LIMITS = ("_lo", "_hi", "_nat")
"""Per-device range and natural power at the last sub-step [kW]."""
_EV_SESSION_IDENTITY = ("arrive_min", "depart_min", "need_kwh")
"""Fields that make two drawn EV sessions the same vehicle visit."""
_D = TypeVar("_D", PV, Battery, InterruptibleLoad, ShiftableLoad, EvCharger)


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


def _stream_key(name: str) -> int:
    """Stable 64-bit number naming a device or enterprise in a random stream (``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _concat_sessions(parts: list[physics.EvSessions]) -> physics.EvSessions:
    """The sessions of several chargers as one set; ``parts[c]`` holds charger ``c``'s, drawn alone."""
    typed_empty = physics.ev_sessions(np.random.default_rng(0), [], [], [])  # no chargers: the right dtypes
    columns = {
        f.name: np.concatenate([getattr(s, f.name) for s in (typed_empty, *parts)])
        for f in dataclasses.fields(physics.EvSessions)
    }
    columns["charger"] = np.concatenate(
        [typed_empty.charger, *(np.full(len(s), c, dtype=np.intp) for c, s in enumerate(parts))]
    )
    return physics.EvSessions(**columns)


def _with_device(spec: ParkSpec, device: Device) -> ParkSpec:
    """``spec`` with ``device`` appended, or replacing the device with its id.

    A PV owner without a generation meter gets one; a replaced battery's
    initial SoC is clipped into its new capacity.
    """
    devices = list(spec.devices)
    ids = [d.id for d in devices]
    if device.id in ids:
        devices[ids.index(device.id)] = device
    else:
        devices.append(device)
    meters = list(spec.meters)
    eid = device.enterprise_id
    if isinstance(device, PV) and not any(m.enterprise_id == eid and m.purpose == "generation" for m in meters):
        meters.append(MeteringPoint(id=generation_meter_id(eid), enterprise_id=eid, purpose="generation"))
    soc = {k: v for k, v in spec.initial_soc_kwh.items() if k != device.id}
    if isinstance(device, Battery) and device.id in spec.initial_soc_kwh:
        soc[device.id] = min(spec.initial_soc_kwh[device.id], device.capacity_kwh)
    return dataclasses.replace(spec, devices=devices, meters=meters, initial_soc_kwh=soc)


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
        self._linke_monthly: NDArray[np.float64] | None = None
        self._build(spec)
        self._day = self._load_day(self._t)
        self._start_of_day_progress(self._t)
        self._advance(self._t, self._t, settle=True)

    # ------------------------------------------------------------ layout --

    def _build(self, spec: ParkSpec) -> None:
        """Lay out the devices of ``spec`` as per-kind arrays with fresh state (no day loaded)."""
        self._layout(spec)
        self._kind_parameters(spec)
        self._fresh_state()

    def _layout(self, spec: ParkSpec) -> None:
        """Order devices by kind, so each kind is one contiguous slice of the per-device arrays."""
        ordered = [d for k in _KINDS for d in spec.devices if isinstance(d, k)]
        self._devices = ordered
        self._index = {d.id: i for i, d in enumerate(ordered)}
        self._spec_order = np.array([self._index[d.id] for d in spec.devices], dtype=np.intp)
        bounds = np.cumsum([0] + [sum(isinstance(d, k) for d in ordered) for k in _KINDS])
        self._pv, self._bat, self._il, self._sl, self._ev = (
            slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        )
        self._enterprise_ids = [e.id for e in spec.enterprises]
        self._ent_pos = {eid: i for i, eid in enumerate(self._enterprise_ids)}
        self._ent_idx = np.array([self._ent_pos[d.enterprise_id] for d in ordered], dtype=np.intp)
        self._ramp = np.array([np.inf if d.ramp_kw_per_s is None else d.ramp_kw_per_s for d in ordered], dtype=float)
        self._protected_by_hour = np.array([[d.is_protected(h) for d in ordered] for h in range(24)], dtype=bool)
        self._has_protected = bool(self._protected_by_hour.any())

    def _of_kind(self, kind: type[_D]) -> list[_D]:
        """The devices of one kind, in array order."""
        return [d for d in self._devices if isinstance(d, kind)]

    def _kind_parameters(self, spec: ParkSpec) -> None:
        """Per-kind parameter arrays, a battery's initial SoC and the generation meters."""
        # PV
        pvs = self._of_kind(PV)
        self._pv_rated = np.array([d.rated_kw for d in pvs], dtype=float)
        self._pv_tilt = np.array([d.tilt_deg for d in pvs], dtype=float)
        self._pv_azimuth = np.array([d.azimuth_deg for d in pvs], dtype=float)
        gen_owners = sorted({d.enterprise_id for d in pvs}, key=self._ent_pos.__getitem__)
        self._gen_meter_ids = [generation_meter_id(eid) for eid in gen_owners]
        self._pv_gen_idx = np.array([gen_owners.index(d.enterprise_id) for d in pvs], dtype=np.intp)
        if pvs and self._linke_monthly is None:
            self._linke_monthly = physics.monthly_linke_turbidity(spec.latitude, spec.longitude)
        # Batteries
        bats = self._of_kind(Battery)
        self._bat_soc_min = np.array([d.soc_min_kwh for d in bats], dtype=float)
        self._bat_soc_max = np.array([d.soc_upper_kwh for d in bats], dtype=float)
        self._bat_eta_c = np.array([d.charge_efficiency for d in bats], dtype=float)
        self._bat_eta_d = np.array([d.discharge_efficiency for d in bats], dtype=float)
        self._bat_rated = np.array([d.rated_kw for d in bats], dtype=float)
        self._soc = np.array(
            [spec.initial_soc_kwh.get(d.id, (d.soc_min_kwh + d.soc_upper_kwh) / 2.0) for d in bats], dtype=float
        )
        # Interruptible loads
        self._il_max_curtail = np.array([d.max_curtail_kw for d in self._of_kind(InterruptibleLoad)], dtype=float)
        # Shiftable loads
        sls = self._of_kind(ShiftableLoad)
        self._sl_rated = np.array([d.rated_kw for d in sls], dtype=float)
        self._sl_energy = np.array([d.energy_per_day_kwh for d in sls], dtype=float)
        self._sl_start_h = np.array([d.window_start_hour for d in sls], dtype=float)
        self._sl_end_h = np.array([d.window_end_hour for d in sls], dtype=float)
        # EV chargers
        evs = self._of_kind(EvCharger)
        self._ev_ports = np.array([d.ports for d in evs], dtype=int)
        self._ev_port_kw = np.array([d.rated_kw / d.ports for d in evs], dtype=float)
        self._ev_bidir = np.array([d.bidirectional for d in evs], dtype=bool)

    def _fresh_state(self) -> None:
        """Zero power, no set-points, everyone online, zero counters and meter registers."""
        n = len(self._devices)
        self._p = np.zeros(n)
        self._lo = np.zeros(n)
        self._hi = np.zeros(n)
        self._nat = np.zeros(n)
        self._sp = np.zeros(n)
        self._sp_active = np.zeros(n, dtype=bool)
        self._online = np.ones(n, dtype=bool)
        self._energy = np.zeros(n)
        self._protected_s = np.zeros(n)
        self._sl_delivered = np.zeros(self._sl_rated.size)
        self._ev_charge = np.zeros(0)
        self._ev_discharge = np.zeros(0)
        self._ev_connected = np.zeros(0, dtype=bool)
        # Meters
        n_ent = len(self._enterprise_ids)
        self._base = np.zeros(n_ent)
        self._import = np.zeros(n_ent)
        self._export = np.zeros(n_ent)
        self._gen_export = np.zeros(len(self._gen_meter_ids))

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

    # ------------------------------------------------------- enrolment --

    def add_device(self, device: Device) -> None:
        """Add a device at the park's current time, or replace the device with its id (changed limits).

        Every other device keeps its state exactly (power, set-point, online
        flag, SoC, energy a shiftable load delivered today, EV sessions,
        energy and protected-hour counters, range at the last sub-step), and
        so do the meter registers, which stay continuous. A replaced device
        of the same kind keeps its state too, with a battery's SoC clipped
        into its new bounds and its power into its new range; a device that
        changes kind starts afresh. A new device starts at its natural power:
        a battery idle at ``spec.initial_soc_kwh`` or mid-range SoC, a
        shiftable load as if it had followed its natural schedule so far
        today. A PV owner without a generation meter gets one
        (:func:`~simulators.park.generation_meter_id`). Re-adding an
        unchanged device does nothing.

        Parameters
        ----------
        device : Battery | PV | InterruptibleLoad | ShiftableLoad | EvCharger
            The device, owned by one of the park's enterprises.

        Raises
        ------
        ValueError
            The device's enterprise is not in the park.
        """
        if device.enterprise_id not in self._ent_pos:
            known = ", ".join(self._enterprise_ids)
            raise ValueError(
                f"device {device.id!r}: enterprise {device.enterprise_id!r} is not in the simulated park "
                f"(enterprises: {known})"
            )
        i = self._index.get(device.id)
        if i is not None and self._devices[i] == device:
            return
        before = copy.copy(self)  # shallow: the rebuild rebinds every array, it never writes into the old ones
        self.spec = _with_device(self.spec, device)
        self._build(self.spec)
        self._day = self._load_day(before._day.start_s)
        self._start_of_day_progress(self._t)  # for a new shiftable load; the others' progress is carried over
        new, old = self._kept_devices(before)
        self._carry_device_state(before, new, old)
        self._carry_meters(before)
        sessions = self._kept_sessions(before, new, old)
        self._day.ev_charged_kwh[sessions[0]] = before._day.ev_charged_kwh[sessions[1]]
        self._settle_joined(before, device.id, new, old, sessions)

    def _kept_devices(self, before: SimulatedPark) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Indices now and before of the devices that were in the park before, with the same kind."""
        pairs = [
            (i, before._index[d.id])
            for i, d in enumerate(self._devices)
            if d.id in before._index and type(before._devices[before._index[d.id]]) is type(d)
        ]
        new = np.array([i for i, _ in pairs], dtype=np.intp)
        old = np.array([j for _, j in pairs], dtype=np.intp)
        return new, old

    def _carry_device_state(self, before: SimulatedPark, new: NDArray[np.intp], old: NDArray[np.intp]) -> None:
        """Copy per-device and per-kind state from ``before`` (indices ``old``) to this layout (``new``)."""
        for name in _DEVICE_STATE:
            getattr(self, name)[new] = getattr(before, name)[old]
        for kind, values in (("_bat", "_soc"), ("_sl", "_sl_delivered")):
            now_slice, then_slice = getattr(self, kind), getattr(before, kind)
            inside = (new >= now_slice.start) & (new < now_slice.stop)
            carried = getattr(before, values)[old[inside] - then_slice.start]
            getattr(self, values)[new[inside] - now_slice.start] = carried

    def _carry_meters(self, before: SimulatedPark) -> None:
        """Copy the registers (the enterprises are the same; generation meters by id) and the base loads."""
        self._base = before._base.copy()
        self._import = before._import.copy()
        self._export = before._export.copy()
        gen = {mid: k for k, mid in enumerate(before._gen_meter_ids)}
        for k, mid in enumerate(self._gen_meter_ids):
            if mid in gen:
                self._gen_export[k] = before._gen_export[gen[mid]]

    def _kept_sessions(
        self, before: SimulatedPark, new: NDArray[np.intp], old: NDArray[np.intp]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Indices now and before of today's EV sessions that are the same vehicle visit.

        A charger's sessions are drawn from its own stream, so they are the
        same unless its ports or power changed.
        """
        now_ev, then_ev = self._day.ev, before._day.ev
        inside = (new >= self._ev.start) & (new < self._ev.stop)
        kept_now, kept_then = [np.zeros(0, dtype=np.intp)], [np.zeros(0, dtype=np.intp)]
        for c_now, c_then in zip(new[inside] - self._ev.start, old[inside] - before._ev.start, strict=True):
            s_now = np.flatnonzero(now_ev.charger == c_now)
            s_then = np.flatnonzero(then_ev.charger == c_then)
            if s_now.size == s_then.size and all(
                np.array_equal(getattr(now_ev, f)[s_now], getattr(then_ev, f)[s_then]) for f in _EV_SESSION_IDENTITY
            ):
                kept_now.append(s_now)
                kept_then.append(s_then)
        return np.concatenate(kept_now), np.concatenate(kept_then)

    def _settle_joined(
        self,
        before: SimulatedPark,
        device_id: str,
        new: NDArray[np.intp],
        old: NDArray[np.intp],
        sessions: tuple[NDArray[np.intp], NDArray[np.intp]],
    ) -> None:
        """Give the joined device its range now and a power within it; leave every other device as it was."""
        i = self._index[device_id]
        replaced = bool(np.any(new == i))
        if replaced and isinstance(self._devices[i], Battery):
            k = i - self._bat.start
            self._soc[k] = min(max(self._soc[k], self._bat_soc_min[k]), self._bat_soc_max[k])
        self._evaluate(self._t, self._t)  # ranges of all devices at this instant ...
        others = new != i
        for name in _DEVICE_LIMITS:  # ... of which only the joined device's is new
            getattr(self, name)[new[others]] = getattr(before, name)[old[others]]
        self._base = before._base.copy()
        if before._ev_connected.size == len(before._day.ev) and self._ev_connected.size == len(self._day.ev):
            self._ev_connected[sessions[0]] = before._ev_connected[sessions[1]]
        start = self._p[i] if replaced else self._nat[i]
        self._p[i] = min(max(start, self._lo[i]), self._hi[i])

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
        pot = self._pv_potential_kw(times, local_date)
        il_cols, base_cols = self._natural_loads_kw(local_hour, local_date)
        profile = np.ascontiguousarray(np.column_stack([pot, *il_cols, *base_cols]), dtype=float)
        ev = self._ev_sessions(local_date, n_min, weekend)
        return _Day(local_date, start_s, end_s, n_min, local_hour, profile, ev, np.zeros(len(ev)))

    def _rng(self, stream: int, day: date, name: str | None = None) -> np.random.Generator:
        """Random source of one stream on one local day, for one device or enterprise if ``name`` is given."""
        key = [self.seed, stream, day.toordinal()]
        return np.random.default_rng(key if name is None else [*key, _stream_key(name)])

    def _pv_potential_kw(self, times: pd.DatetimeIndex, day: date) -> NDArray[np.float64]:
        """AC power each PV system could deliver at each minute, shape (n_min + 1, n_pv) [kW]."""
        if not self._pv_rated.size or self._linke_monthly is None:
            return np.zeros((times.size, self._pv_rated.size))
        days_in_year = 366 if pd.Timestamp(day).is_leap_year else 365
        turbidity = physics.linke_turbidity_for_day(self._linke_monthly, day.timetuple().tm_yday, days_in_year)
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
            cloud = physics.cloud_factor(self._rng(_STREAM_CLOUDS, day), times.size)[:, None]
        return physics.pv_ac_kw(poa, self._pv_rated, self.pv_derate, cloud)

    def _natural_loads_kw(
        self, local_hour: NDArray[np.float64], day: date
    ) -> tuple[list[NDArray[np.float64]], list[NDArray[np.float64]]]:
        """Natural load of each interruptible load and base load of each enterprise at each minute [kW].

        Shift pattern x (1 + AR(1) noise), each from its own stream.
        """
        weekend = day.weekday() >= 5
        n = local_hour.size
        shapes = {
            eid: physics.load_shape(local_hour, base.shift_pattern, weekend, base.weekend_factor)
            for eid, base in self.spec.base_loads.items()
        }
        il_cols = []
        for d in self._of_kind(InterruptibleLoad):
            base = self.spec.base_loads[d.enterprise_id]
            noise = physics.ar1_noise(self._rng(_STREAM_LOADS, day, d.id), n, base.noise_std, tau_s=900.0)
            load = d.rated_kw * _LOAD_HEADROOM * shapes[d.enterprise_id] * (1.0 + noise)
            il_cols.append(np.clip(load, 0.0, d.rated_kw))
        base_cols = []
        for eid in self._enterprise_ids:
            base = self.spec.base_loads[eid]
            noise = physics.ar1_noise(self._rng(_STREAM_BASE, day, eid), n, base.noise_std, tau_s=600.0)
            base_cols.append(np.maximum(base.peak_kw * shapes[eid] * (1.0 + noise), 0.0))
        return il_cols, base_cols

    def _ev_sessions(self, day: date, n_min: int, weekend: bool) -> physics.EvSessions:
        """The day's EV sessions, each charger's drawn from its own stream."""
        parts = [
            physics.ev_sessions(
                self._rng(_STREAM_EV, day, d.id),
                self._ev_port_kw[c : c + 1],
                self._ev_ports[c : c + 1],
                self._ev_bidir[c : c + 1],
                minutes_in_day=n_min,
                weekend=weekend,
            )
            for c, d in enumerate(self._of_kind(EvCharger))
        ]
        return _concat_sessions(parts)

    def _start_of_day_progress(self, t: float) -> None:
        """At a mid-day start, assume shiftable loads have run their natural schedule so far."""
        x = (t - self._day.start_s) / 60.0
        hour = float(np.interp(x, np.arange(self._day.n_min + 1), self._day.local_hour))
        span = self._sl_end_h - self._sl_start_h
        self._sl_delivered[:] = self._sl_energy * np.clip((hour - self._sl_start_h) / span, 0.0, 1.0)

    def _advance(self, t0: float, t1: float, *, settle: bool = False) -> None:
        """One sub-step from ``t0`` to ``t1`` (same local day, at most 60 s).

        ``settle`` sets every device to its natural power without
        integrating (used once at the start).
        """
        if not self._day.start_s <= t0 < self._day.end_s:
            self._day = self._load_day(t0)
            self._sl_delivered[:] = 0.0  # a new day's energy requirement
        hour0 = self._evaluate(t0, t1)
        if settle:
            self._p = np.clip(self._nat, self._lo, self._hi)
            return
        self._integrate(t1 - t0, hour0)

    def _evaluate(self, t0: float, t1: float) -> float:
        """Range, natural power and base loads for a sub-step of the loaded day; returns the local hour at ``t0``.

        Membership (windows, sessions) is taken at ``t0``, exogenous profiles
        at the midpoint (exact energy for the piecewise linear profiles, since
        a sub-step never crosses a minute boundary).
        """
        day = self._day
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
        if self._ev_ports.size:
            self._evaluate_ev(x0)
        self._base = row[n_pv + n_il :]
        return hour0

    def _evaluate_ev(self, x0: float) -> None:
        """Connected sessions at minute ``x0`` of the day and the chargers' range and natural power [kW]."""
        day, n_ev = self._day, self._ev_ports.size
        ev = day.ev
        self._ev_connected = (ev.arrive_min <= x0) & (x0 < ev.depart_min)
        self._ev_charge, self._ev_discharge = physics.ev_limits_kw(
            self._ev_connected, ev.cap_kw, ev.need_kwh - day.ev_charged_kwh, day.ev_charged_kwh + ev.v2g_kwh
        )
        self._lo[self._ev] = -np.bincount(ev.charger, weights=self._ev_charge, minlength=n_ev)
        self._hi[self._ev] = np.bincount(ev.charger, weights=self._ev_discharge, minlength=n_ev)
        self._nat[self._ev] = self._lo[self._ev]

    def _integrate(self, dt: float, hour0: float) -> None:
        """Follow the set-point (online devices) or natural behaviour, within ramp and range, for ``dt`` seconds."""
        lo, hi = self._lo, self._hi
        target = np.where(self._sp_active, np.minimum(np.maximum(self._sp, lo), hi), self._nat)
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
        ev = self._day.ev
        if self._ev_ports.size and len(ev):
            into_vehicle = physics.ev_allocate_kw(p[self._ev], ev.charger, self._ev_charge, self._ev_discharge)
            self._day.ev_charged_kwh += into_vehicle * hours
        self._p = p
        self._energy += p * hours
        if self._has_protected:
            self._protected_s += (self._protected_by_hour[min(int(hour0), 23)] & self._sp_active) * dt

        net = np.bincount(self._ent_idx, weights=p, minlength=self._base.size) - self._base
        imp, exp = physics.split_import_export(net * hours)
        self._import += imp
        self._export += exp
        if self._pv_rated.size:
            gen = np.bincount(self._pv_gen_idx, weights=p[self._pv], minlength=self._gen_export.size)
            self._gen_export += gen * hours
