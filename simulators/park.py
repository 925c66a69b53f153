"""A seeded, believable industrial park: enterprises, meters, devices and base loads.

``build_park(seed)`` draws a park like Suzhou Industrial Park: about twenty
manufacturers on two- or three-shift patterns, most with rooftop PV, half
with a battery, some with EV chargers, every one with at least one flexible
process load (interruptible or shiftable), plus the park operator itself
(enterprise ``"park"``) owning a shared PV plant and the service centre's
HVAC. The same seed always gives the same park.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np

from simulators.physics import SHIFT_PATTERNS, ShiftPattern
from vpp.model import (
    PV,
    Battery,
    Device,
    Enterprise,
    EvCharger,
    HourRange,
    InterruptibleLoad,
    MeteringPoint,
    ShiftableLoad,
)

__all__ = ["PARK_ENTERPRISE_ID", "BaseLoad", "ParkSpec", "build_park", "generation_meter_id", "grid_meter_id"]

PARK_ENTERPRISE_ID = "park"
"""Enterprise id of the park operator, owner of the shared assets."""


def grid_meter_id(enterprise_id: str) -> str:
    """Id of an enterprise's grid-connection meter."""
    return f"{enterprise_id}-grid"


def generation_meter_id(enterprise_id: str) -> str:
    """Id of an enterprise's PV generation meter."""
    return f"{enterprise_id}-gen"


@dataclass(frozen=True)
class BaseLoad:
    """Uncontrolled consumption of one enterprise (lighting, offices, non-flexible machines).

    Its process loads follow the same ``shift_pattern``.
    """

    enterprise_id: str
    shift_pattern: ShiftPattern
    """Daily production pattern: three_shift (24/7), two_shift (06-22), day_shift (08-17)."""
    peak_kw: float
    """Weekday peak of the uncontrolled load [kW]."""
    weekend_factor: float
    """Weekend production above standby relative to a weekday [unitless]."""
    noise_std: float
    """Relative standard deviation of the minute-scale fluctuation [unitless]."""


@dataclass(frozen=True)
class ParkSpec:
    """Static description of a park: who is in it, what they own, how they consume."""

    enterprises: list[Enterprise]
    meters: list[MeteringPoint]
    devices: list[Device]
    base_loads: dict[str, BaseLoad]
    """Uncontrolled load per enterprise id."""
    latitude: float
    """Site latitude, north positive [deg]."""
    longitude: float
    """Site longitude, east positive [deg]."""
    timezone: str = "Asia/Shanghai"
    """IANA zone of local time (load shapes, windows, protected hours)."""
    altitude_m: float = 5.0
    """Site altitude [m]."""
    initial_soc_kwh: dict[str, float] = field(default_factory=dict)
    """State of charge of each battery at the start of a simulation [kWh]; default mid-range."""

    def __post_init__(self) -> None:
        if not -90.0 <= self.latitude <= 90.0:
            raise ValueError(f"latitude {self.latitude} outside [-90, 90]")
        if not -180.0 <= self.longitude <= 180.0:
            raise ValueError(f"longitude {self.longitude} outside [-180, 180]")
        ZoneInfo(self.timezone)  # raises for an unknown zone
        enterprise_ids = [e.id for e in self.enterprises]
        _unique("enterprise", enterprise_ids)
        _unique("meter", [m.id for m in self.meters])
        _unique("device", [d.id for d in self.devices])
        known = set(enterprise_ids)
        for thing in (*self.meters, *self.devices):
            if thing.enterprise_id not in known:
                raise ValueError(f"{thing.id}: unknown enterprise_id {thing.enterprise_id!r}")
        grid = {m.enterprise_id for m in self.meters if m.purpose == "grid"}
        gen = {m.enterprise_id for m in self.meters if m.purpose == "generation"}
        for eid in enterprise_ids:
            if eid not in grid:
                raise ValueError(f"enterprise {eid!r} has no grid meter")
            if eid not in self.base_loads:
                raise ValueError(f"enterprise {eid!r} has no base load")
        for eid in {d.enterprise_id for d in self.devices if isinstance(d, PV)}:
            if eid not in gen:
                raise ValueError(f"enterprise {eid!r} owns PV but has no generation meter")
        for eid, base in self.base_loads.items():
            if eid != base.enterprise_id or eid not in known:
                raise ValueError(f"base load {eid!r} does not match a known enterprise")
            if base.shift_pattern not in SHIFT_PATTERNS:
                raise ValueError(f"base load {eid!r}: unknown shift pattern {base.shift_pattern!r}")
        batteries = {d.id: d for d in self.devices if isinstance(d, Battery)}
        for did, soc in self.initial_soc_kwh.items():
            if did not in batteries:
                raise ValueError(f"initial_soc_kwh names {did!r}, which is not a battery")
            if not 0.0 <= soc <= batteries[did].capacity_kwh:
                raise ValueError(f"initial_soc_kwh[{did!r}] = {soc} outside [0, capacity]")

    def device(self, device_id: str) -> Device:
        """The device with this id (KeyError if none)."""
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(device_id)

    def devices_of(self, enterprise_id: str) -> list[Device]:
        """Devices owned by one enterprise, in park order."""
        return [d for d in self.devices if d.enterprise_id == enterprise_id]


def _unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"duplicate {what} id {i!r}")
        seen.add(i)


# (industry, shift pattern); names are fictional.
_INDUSTRIES: tuple[tuple[str, ShiftPattern], ...] = (
    ("Precision Machining", "two_shift"),
    ("Semiconductor Packaging", "three_shift"),
    ("Textile Dyeing", "three_shift"),
    ("Electronics Assembly", "two_shift"),
    ("Pharmaceuticals", "three_shift"),
    ("Food Processing", "two_shift"),
    ("Cold Chain Logistics", "three_shift"),
    ("Injection Moulding", "two_shift"),
    ("Data Centre", "three_shift"),
    ("Auto Parts", "two_shift"),
    ("Printing & Packaging", "day_shift"),
    ("Furniture", "day_shift"),
    ("Metal Stamping", "two_shift"),
    ("Battery Materials", "three_shift"),
    ("Medical Devices", "day_shift"),
    ("Optical Fibre", "three_shift"),
    ("Industrial Gases", "three_shift"),
    ("Glass Processing", "three_shift"),
    ("Paper Products", "two_shift"),
    ("Garments", "day_shift"),
    ("Coatings", "two_shift"),
    ("Bearings", "two_shift"),
    ("Cable Manufacturing", "two_shift"),
    ("Robotics R&D", "day_shift"),
)
_BRANDS: tuple[str, ...] = (
    "Jinhe", "Hengtai", "Suhua", "Donghu", "Xinyuan", "Ruifeng", "Tianli", "Huaxin", "Zhongda", "Lianhe",
    "Kaiyue", "Baosheng", "Minghua", "Yongxing", "Anda", "Shengda", "Fuhai", "Weilong", "Jiarun", "Haitong",
)  # fmt: skip
_INTERRUPTIBLE_NAMES: tuple[str, ...] = (
    "Air compressors", "Chiller plant", "Induction furnace", "Grinding line", "Process HVAC",
    "Drying ovens", "Extruder line", "Paint shop fans",
)  # fmt: skip
_SHIFTABLE_NAMES: tuple[str, ...] = (
    "Wastewater treatment", "Cold store pre-cooling", "Ice storage", "Electrolysis cells",
    "Water pumping", "Batch mixers",
)  # fmt: skip
# (first hour, end hour) local windows a shiftable process may run in.
_WINDOWS: tuple[tuple[int, int], ...] = ((0, 8), (8, 20), (0, 24), (12, 24), (0, 12))


def _pick(rng: np.random.Generator, n: int, share: float, at_least: int = 0) -> set[int]:
    """A seeded subset of ``range(n)`` of about ``share * n`` members."""
    k = min(n, max(at_least, int(round(share * n))))
    return {int(i) for i in rng.choice(n, size=k, replace=False)}


def _r(x: float, step: float = 10.0) -> float:
    """Round a rating to a readable multiple of ``step``."""
    return float(max(step, round(x / step) * step))


def build_park(
    seed: int = 7,
    n_enterprises: int = 20,
    latitude: float = 31.3,
    longitude: float = 120.6,
) -> ParkSpec:
    """Draw a reproducible industrial park.

    Parameters
    ----------
    seed : int
        Random seed; the same seed gives an equal ``ParkSpec``.
    n_enterprises : int
        Manufacturing enterprises ``e01``... (the park operator ``"park"`` comes on top).
    latitude, longitude : float
        Site, default Suzhou Industrial Park [deg].

    Returns
    -------
    ParkSpec
        Every enterprise has a grid meter and a base load and at least one
        interruptible or shiftable process load; about 80 % have rooftop PV
        (100-2000 kW) and a generation meter, about half a 0.5C battery
        (200-2000 kWh), about 30 % EV chargers (2-10 ports at 7-120 kW), a
        few a process load with protected hours. The park owns a shared PV
        plant and an interruptible HVAC load.
    """
    if n_enterprises < 1:
        raise ValueError(f"n_enterprises {n_enterprises} must be at least 1")
    rng = np.random.default_rng(seed)
    width = max(2, len(str(n_enterprises)))
    enterprise_ids = [f"e{i + 1:0{width}d}" for i in range(n_enterprises)]

    with_pv = _pick(rng, n_enterprises, 0.8, at_least=1)
    with_battery = _pick(rng, n_enterprises, 0.5, at_least=1)
    with_ev = _pick(rng, n_enterprises, 0.3, at_least=1)
    with_protected = _pick(rng, n_enterprises, 0.15, at_least=1)
    industry_order = rng.permutation(len(_INDUSTRIES))
    brand_order = rng.permutation(len(_BRANDS))

    enterprises: list[Enterprise] = []
    meters: list[MeteringPoint] = []
    devices: list[Device] = []
    base_loads: dict[str, BaseLoad] = {}
    initial_soc: dict[str, float] = {}

    for i, eid in enumerate(enterprise_ids):
        industry, pattern = _INDUSTRIES[int(industry_order[i % len(_INDUSTRIES)])]
        brand = _BRANDS[int(brand_order[i % len(_BRANDS)])]
        enterprises.append(Enterprise(id=eid, name=f"Suzhou {brand} {industry} Co., Ltd."))
        meters.append(MeteringPoint(id=grid_meter_id(eid), enterprise_id=eid, purpose="grid"))
        peak_kw = _r(float(np.exp(rng.uniform(np.log(300.0), np.log(4000.0)))))
        weekend_factor = {"three_shift": 0.9, "two_shift": 0.5, "day_shift": 0.2}[pattern]
        base_loads[eid] = BaseLoad(
            enterprise_id=eid,
            shift_pattern=pattern,
            peak_kw=peak_kw,
            weekend_factor=weekend_factor,
            noise_std=round(float(rng.uniform(0.02, 0.06)), 3),
        )

        # Process loads: at least one of interruptible / shiftable.
        has_interruptible = rng.random() < 0.75
        has_shiftable = rng.random() < 0.45 or not has_interruptible
        if has_interruptible:
            rated = _r(peak_kw * rng.uniform(0.2, 0.6))
            protected = []
            if i in with_protected:
                start = int(rng.choice([8, 9, 13, 14]))
                protected = [HourRange(start_hour=start, end_hour=start + int(rng.choice([2, 3, 4])))]
            devices.append(
                InterruptibleLoad(
                    id=f"{eid}-load1",
                    enterprise_id=eid,
                    name=str(rng.choice(_INTERRUPTIBLE_NAMES)),
                    rated_kw=rated,
                    max_curtail_kw=_r(rated * rng.uniform(0.3, 0.8)),
                    ramp_kw_per_s=round(rated / float(rng.uniform(30.0, 300.0)), 3),
                    protected_hours=protected,
                    max_interruption_min=float(rng.choice([60, 120, 240])),
                    notice_min=float(rng.choice([0, 0, 5, 15, 30])),
                    max_events_per_day=int(rng.choice([1, 2, 3])),
                    marginal_cost_cny_per_kwh=round(float(rng.uniform(0.8, 2.5)), 2),
                )
            )
        if has_shiftable:
            rated = _r(float(rng.uniform(100.0, 800.0)))
            start, end = _WINDOWS[int(rng.integers(len(_WINDOWS)))]
            devices.append(
                ShiftableLoad(
                    id=f"{eid}-shift1",
                    enterprise_id=eid,
                    name=str(rng.choice(_SHIFTABLE_NAMES)),
                    rated_kw=rated,
                    energy_per_day_kwh=_r(rated * (end - start) * rng.uniform(0.35, 0.6)),
                    window_start_hour=start,
                    window_end_hour=end,
                    ramp_kw_per_s=round(rated / 60.0, 3),
                    max_interruption_min=float(rng.choice([120, 240])),
                    marginal_cost_cny_per_kwh=round(float(rng.uniform(0.2, 0.6)), 2),
                )
            )
        if i in with_pv:
            rated = _r(float(np.exp(rng.uniform(np.log(100.0), np.log(2000.0)))))
            meters.append(MeteringPoint(id=generation_meter_id(eid), enterprise_id=eid, purpose="generation"))
            devices.append(
                PV(
                    id=f"{eid}-pv1",
                    enterprise_id=eid,
                    name="Rooftop PV",
                    rated_kw=rated,
                    tilt_deg=round(float(rng.uniform(5.0, 25.0)), 1),
                    azimuth_deg=round(float(np.clip(rng.normal(180.0, 20.0), 90.0, 270.0)), 1),
                    ramp_kw_per_s=round(rated * 0.1, 3),
                    marginal_cost_cny_per_kwh=round(float(rng.uniform(0.35, 0.45)), 2),
                )
            )
        if i in with_battery:
            capacity = _r(float(rng.uniform(200.0, 2000.0)))
            efficiency = round(float(rng.uniform(0.93, 0.96)), 3)
            devices.append(
                Battery(
                    id=f"{eid}-bat1",
                    enterprise_id=eid,
                    name="Battery storage",
                    rated_kw=capacity * 0.5,
                    capacity_kwh=capacity,
                    soc_min_kwh=round(capacity * 0.1, 1),
                    soc_max_kwh=round(capacity * 0.95, 1),
                    charge_efficiency=efficiency,
                    discharge_efficiency=efficiency,
                    ramp_kw_per_s=capacity * 0.5 / 2.0,
                    marginal_cost_cny_per_kwh=round(float(rng.uniform(0.05, 0.15)), 3),
                )
            )
            initial_soc[f"{eid}-bat1"] = round(capacity * float(rng.uniform(0.3, 0.7)), 1)
        if i in with_ev:
            port_kw = float(rng.choice([7.0, 11.0, 22.0, 60.0, 120.0], p=[0.3, 0.2, 0.2, 0.15, 0.15]))
            ports = int(rng.integers(2, 11)) if port_kw <= 22.0 else int(rng.integers(2, 5))
            devices.append(
                EvCharger(
                    id=f"{eid}-ev1",
                    enterprise_id=eid,
                    name="EV charging" if port_kw <= 22.0 else "Fleet fast charging",
                    rated_kw=port_kw * ports,
                    ports=ports,
                    bidirectional=bool(port_kw <= 22.0 and rng.random() < 0.3),
                    ramp_kw_per_s=port_kw * ports / 5.0,
                    marginal_cost_cny_per_kwh=round(float(rng.uniform(0.3, 0.6)), 2),
                )
            )

    # The park operator: shared PV on car-park canopies, service-centre HVAC.
    pid = PARK_ENTERPRISE_ID
    enterprises.append(Enterprise(id=pid, name="Park operator (shared assets)"))
    meters.append(MeteringPoint(id=grid_meter_id(pid), enterprise_id=pid, purpose="grid"))
    meters.append(MeteringPoint(id=generation_meter_id(pid), enterprise_id=pid, purpose="generation"))
    base_loads[pid] = BaseLoad(enterprise_id=pid, shift_pattern="day_shift", peak_kw=150.0, weekend_factor=0.3, noise_std=0.03)
    shared_kw = _r(float(rng.uniform(2000.0, 5000.0)), 100.0)
    devices.append(
        PV(
            id=f"{pid}-pv1",
            enterprise_id=pid,
            name="Shared canopy PV",
            rated_kw=shared_kw,
            tilt_deg=10.0,
            azimuth_deg=180.0,
            shared=True,
            ramp_kw_per_s=shared_kw * 0.1,
            marginal_cost_cny_per_kwh=0.4,
        )
    )
    devices.append(
        InterruptibleLoad(
            id=f"{pid}-load1",
            enterprise_id=pid,
            name="Service centre HVAC",
            rated_kw=200.0,
            max_curtail_kw=120.0,
            ramp_kw_per_s=2.0,
            max_interruption_min=60.0,
            max_events_per_day=2,
            marginal_cost_cny_per_kwh=0.6,
        )
    )
    return ParkSpec(
        enterprises=enterprises,
        meters=meters,
        devices=devices,
        base_loads=base_loads,
        latitude=latitude,
        longitude=longitude,
        initial_soc_kwh=initial_soc,
    )
