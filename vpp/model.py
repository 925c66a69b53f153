"""Domain model: enterprises, meters, devices, telemetry, instructions, set-points.

Conventions (see ../shared/DESIGN.md):

* power in kW, energy in kWh, time as timezone-aware UTC ``datetime``;
* generator sign convention for device power: ``+`` is power delivered into
  the park network (PV output, battery discharge), ``-`` is power drawn
  (load, battery charging);
* meter registers are two non-negative, monotonically increasing numbers,
  ``import_kwh`` and ``export_kwh``.

Every model validates on construction and raises ``pydantic.ValidationError``
naming the field and the bad value; the API turns that into HTTP 422.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

__all__ = [
    "Battery",
    "Device",
    "DeviceKind",
    "DispatchInstruction",
    "DispatchStatus",
    "Enterprise",
    "EvCharger",
    "InstructionKind",
    "InterruptibleLoad",
    "MeterReading",
    "MeteringPoint",
    "PV",
    "Setpoint",
    "ShiftableLoad",
    "TelemetrySample",
    "DEVICE_ADAPTER",
    "ApiToken",
    "DispatchProgress",
    "DispatchState",
    "Role",
    "device_json_schema",
    "parse_device",
]

Identifier = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        description="identifier: letters, digits, '_', '.', ':' or '-'",
    ),
]


def _require_utc(value: datetime) -> datetime:
    """Reject naive datetimes; normalise aware ones to UTC."""
    if value.tzinfo is timezone.utc:
        return value  # already UTC: the common case, and hot (every sample and set-point passes here)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"timestamp {value.isoformat()} has no timezone; send UTC, e.g. '2026-01-01T00:00:00Z'")
    return value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]


class _Model(BaseModel):
    # Unknown fields are errors: a misspelt limit must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# ---------------------------------------------------------------- park ----


class Enterprise(_Model):
    """An enterprise in the park that enrols flexible assets."""

    id: Identifier
    name: str = Field(min_length=1, max_length=200, description="display name")
    region: str = Field(default="East", description="grid region for emission factors")


class MeteringPoint(_Model):
    """A revenue meter of one enterprise (grid connection or generation)."""

    id: Identifier
    enterprise_id: Identifier
    purpose: Literal["grid", "generation"] = Field(
        default="grid", description="grid consumption meter, or a separate generation meter"
    )


class MeterReading(_Model):
    """Cumulative meter registers at one instant."""

    meter_id: Identifier
    ts: UtcDatetime
    import_kwh: float = Field(ge=0, allow_inf_nan=False, description="cumulative energy imported [kWh]")
    export_kwh: float = Field(ge=0, allow_inf_nan=False, description="cumulative energy exported [kWh]")


# ------------------------------------------------------------- devices ----


class DeviceKind(StrEnum):
    BATTERY = "battery"
    PV = "pv"
    INTERRUPTIBLE_LOAD = "interruptible_load"
    SHIFTABLE_LOAD = "shiftable_load"
    EV_CHARGER = "ev_charger"


DEVICE_ADAPTER = "simulator"
"""Adapter used when an enrolment does not name one."""


class HourRange(_Model):
    """Local-time hours ``[start_hour, end_hour)`` during which a device is never touched."""

    start_hour: int = Field(ge=0, le=23, description="first protected local hour [h]")
    end_hour: int = Field(ge=1, le=24, description="local hour the protection ends (exclusive) [h]")

    @model_validator(mode="after")
    def _ordered(self) -> HourRange:
        if self.end_hour <= self.start_hour:
            raise ValueError(
                f"end_hour {self.end_hour} must be after start_hour {self.start_hour}; split ranges that cross midnight"
            )
        return self

    def contains(self, local_hour: int) -> bool:
        return self.start_hour <= local_hour < self.end_hour


class _DeviceBase(_Model):
    """Limits shared by every device kind. Each field's description is its API doc."""

    id: Identifier
    enterprise_id: Identifier
    name: str = Field(default="", max_length=200, description="display name")
    rated_kw: float = Field(gt=0, le=1_000_000, allow_inf_nan=False, description="nameplate power [kW]")
    ramp_kw_per_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="largest change of power per second; none = any step within a second [kW/s]",
    )
    protected_hours: list[HourRange] = Field(
        default_factory=list, description="local-time hour ranges during which the device is never dispatched [h]"
    )
    max_interruption_min: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="longest single dispatch the device accepts [min]"
    )
    notice_min: float = Field(default=0, ge=0, allow_inf_nan=False, description="notice it needs before a dispatch [min]")
    max_events_per_day: int | None = Field(default=None, ge=1, description="dispatch events it accepts per local day [1/day]")
    marginal_cost_cny_per_kwh: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="cost of moving the device away from its own schedule (wear, comfort) [CNY/kWh]",
    )
    adapter: str = Field(default=DEVICE_ADAPTER, min_length=1, max_length=64, description="adapter that talks to it")
    address: str | None = Field(
        default=None,
        max_length=200,
        description="where the adapter reaches the device, in the adapter's own form "
        "(e.g. modbus 'host:port/unit'); none = the adapter's default for this device id",
    )

    def is_protected(self, local_hour: int) -> bool:
        """True when the device must not be dispatched at this local hour."""
        return any(r.contains(local_hour) for r in self.protected_hours)


class Battery(_DeviceBase):
    kind: Literal[DeviceKind.BATTERY] = DeviceKind.BATTERY
    capacity_kwh: float = Field(gt=0, allow_inf_nan=False, description="usable energy capacity [kWh]")
    soc_min_kwh: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="lowest allowed state of charge [kWh]")
    soc_max_kwh: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="highest allowed state of charge [kWh]; defaults to capacity"
    )
    charge_efficiency: float = Field(default=0.95, gt=0, le=1, description="grid-to-cell efficiency [unitless]")
    discharge_efficiency: float = Field(default=0.95, gt=0, le=1, description="cell-to-grid efficiency [unitless]")

    @model_validator(mode="after")
    def _soc_bounds(self) -> Battery:
        soc_max = self.soc_max_kwh if self.soc_max_kwh is not None else self.capacity_kwh
        if soc_max > self.capacity_kwh:
            raise ValueError(f"soc_max_kwh {soc_max} exceeds capacity_kwh {self.capacity_kwh}")
        if self.soc_min_kwh >= soc_max:
            raise ValueError(f"soc_min_kwh {self.soc_min_kwh} must be below soc_max_kwh {soc_max}")
        return self

    @property
    def soc_upper_kwh(self) -> float:
        """Highest allowed state of charge [kWh]."""
        return self.soc_max_kwh if self.soc_max_kwh is not None else self.capacity_kwh


class PV(_DeviceBase):
    kind: Literal[DeviceKind.PV] = DeviceKind.PV
    tilt_deg: float = Field(default=20.0, ge=0, le=90, description="panel tilt from horizontal [deg]")
    azimuth_deg: float = Field(default=180.0, ge=0, lt=360, description="panel azimuth, 180 = south [deg]")
    shared: bool = Field(default=False, description="park-shared PV rather than the enterprise's own")


class InterruptibleLoad(_DeviceBase):
    kind: Literal[DeviceKind.INTERRUPTIBLE_LOAD] = DeviceKind.INTERRUPTIBLE_LOAD
    max_curtail_kw: float = Field(gt=0, allow_inf_nan=False, description="largest load reduction it accepts [kW]")

    @model_validator(mode="after")
    def _curtail_within_rating(self) -> InterruptibleLoad:
        if self.max_curtail_kw > self.rated_kw:
            raise ValueError(f"max_curtail_kw {self.max_curtail_kw} exceeds rated_kw {self.rated_kw}")
        return self


class ShiftableLoad(_DeviceBase):
    kind: Literal[DeviceKind.SHIFTABLE_LOAD] = DeviceKind.SHIFTABLE_LOAD
    energy_per_day_kwh: float = Field(gt=0, allow_inf_nan=False, description="energy the process must receive each day [kWh]")
    window_start_hour: int = Field(default=0, ge=0, le=23, description="first local hour it may run [h]")
    window_end_hour: int = Field(default=24, ge=1, le=24, description="local hour by which the energy is delivered [h]")

    @model_validator(mode="after")
    def _window_fits(self) -> ShiftableLoad:
        hours = self.window_end_hour - self.window_start_hour
        if hours <= 0:
            raise ValueError(f"window_end_hour {self.window_end_hour} must be after window_start_hour {self.window_start_hour}")
        if self.energy_per_day_kwh > self.rated_kw * hours:
            raise ValueError(
                f"energy_per_day_kwh {self.energy_per_day_kwh} cannot be delivered at rated_kw {self.rated_kw} in {hours} h"
            )
        return self


class EvCharger(_DeviceBase):
    kind: Literal[DeviceKind.EV_CHARGER] = DeviceKind.EV_CHARGER
    ports: int = Field(default=1, ge=1, le=64, description="connectors sharing the rated power [unitless]")
    bidirectional: bool = Field(default=False, description="can discharge vehicles into the park (V2G)")


Device = Annotated[
    Union[Battery, PV, InterruptibleLoad, ShiftableLoad, EvCharger],
    Field(discriminator="kind"),
]

_device_adapter: TypeAdapter[Device] = TypeAdapter(Device)


def parse_device(payload: object) -> Battery | PV | InterruptibleLoad | ShiftableLoad | EvCharger:
    """Validate a JSON-like mapping as a device of the kind it names."""
    return _device_adapter.validate_python(payload)


def device_json_schema() -> dict:
    """JSON schema of the device union (for the OpenAPI document)."""
    return _device_adapter.json_schema(ref_template="#/components/schemas/{model}")


# ----------------------------------------------------------- telemetry ----


class TelemetrySample(_Model):
    """What a device reports at one instant. Powers in generator convention."""

    device_id: Identifier
    ts: UtcDatetime
    p_kw: float = Field(allow_inf_nan=False, description="measured power, + into the park [kW]")
    p_min_kw: float = Field(allow_inf_nan=False, description="lowest power it can be set to now [kW]")
    p_max_kw: float = Field(allow_inf_nan=False, description="highest power it can be set to now [kW]")
    soc_kwh: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="state of charge [kWh]")
    online: bool = Field(default=True, description="the device accepts set-points")

    @model_validator(mode="after")
    def _range_ordered(self) -> TelemetrySample:
        if self.p_min_kw > self.p_max_kw:
            raise ValueError(f"p_min_kw {self.p_min_kw} exceeds p_max_kw {self.p_max_kw}")
        return self


# ------------------------------------------------------------ dispatch ----


class InstructionKind(StrEnum):
    DELTA = "delta"
    """Change the fleet's net power by ``delta_kw`` from its baseline (+ = reduce park load / deliver more)."""
    TARGET = "target"
    """Hold the fleet's net power at ``target_kw``."""


class DispatchStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class DispatchInstruction(_Model):
    """A grid instruction to the plant. Receiving the same ``id`` twice changes nothing."""

    id: Identifier
    kind: InstructionKind
    start: UtcDatetime
    end: UtcDatetime
    target_kw: float | None = Field(default=None, allow_inf_nan=False, description="fleet net power to hold [kW]")
    delta_kw: float | None = Field(
        default=None, allow_inf_nan=False, description="change from baseline, + = reduce park load [kW]"
    )
    source: str = Field(default="rest", max_length=32, description="channel it arrived on")

    @model_validator(mode="after")
    def _consistent(self) -> DispatchInstruction:
        if self.end <= self.start:
            raise ValueError(f"end {self.end.isoformat()} must be after start {self.start.isoformat()}")
        if self.kind is InstructionKind.TARGET and (self.target_kw is None or self.delta_kw is not None):
            raise ValueError("kind 'target' needs target_kw and no delta_kw")
        if self.kind is InstructionKind.DELTA and (self.delta_kw is None or self.target_kw is not None):
            raise ValueError("kind 'delta' needs delta_kw and no target_kw")
        return self

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        return value.lower()


class Setpoint(_Model):
    """A power set-point handed to an adapter. ``p_kw=None`` releases the device to its own schedule."""

    device_id: Identifier
    p_kw: float | None = Field(allow_inf_nan=False, description="power to hold, + into the park [kW]")
    ts: UtcDatetime
    instruction_id: Identifier | None = None


class DispatchState(_Model):
    """What the service knows of an instruction's execution; stored beside the instruction."""

    instruction_id: Identifier
    status: DispatchStatus = DispatchStatus.PENDING
    updated_at: UtcDatetime
    received_at: UtcDatetime | None = Field(default=None, description="when the service accepted it (notice time counts from here)")
    device_joined_at: dict[str, UtcDatetime] = Field(
        default_factory=dict, description="when each device first got a set-point for it (longest interruption counts from here)"
    )
    baseline_kw: float | None = Field(default=None, description="fleet net power frozen at activation [kW]")
    requested_kw: float | None = Field(default=None, description="fleet net power asked for [kW]")
    delivered_kw: float | None = Field(default=None, description="last measured change from baseline [kW]")
    requested_kwh: float = Field(default=0.0, description="energy asked for so far, |requested - baseline| integrated [kWh]")
    delivered_kwh: float = Field(default=0.0, description="energy delivered so far, signed toward the request [kWh]")
    enterprise_delivered_kwh: dict[str, float] = Field(
        default_factory=dict, description="delivered energy per enterprise, signed toward the request [kWh]"
    )
    devices_dispatched: int = Field(default=0, ge=0, description="devices holding a set-point for it")
    reallocations: int = Field(default=0, ge=0, description="times the set-points were recomputed")
    shortfall_kw: float = Field(default=0.0, description="part of the request the fleet could not reach [kW]")
    message: str = Field(default="", max_length=500)
    device_baseline_kw: dict[str, float] = Field(
        default_factory=dict, description="each device's power frozen when it joined the instruction [kW]"
    )


class DispatchProgress(_Model):
    """One point of requested vs delivered for an instruction."""

    instruction_id: Identifier
    ts: UtcDatetime
    requested_kw: float = Field(description="fleet net power asked for [kW]")
    measured_kw: float = Field(description="fleet net power measured [kW]")


class Role(StrEnum):
    GRID = "grid"
    ENTERPRISE = "enterprise"
    ADMIN = "admin"


class ApiToken(_Model):
    """A bearer token as stored: only the SHA-256 of the secret is kept.

    ``expires_at`` and ``revoked_at`` came after the first stored tokens; a
    record written without them reads as "never expires" and "not revoked"
    (with ``revoked`` still honoured), so older stores need no migration.
    """

    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: Role
    enterprise_id: Identifier | None = None
    created_at: UtcDatetime
    label: str = Field(default="", max_length=200)
    revoked: bool = False
    expires_at: UtcDatetime | None = Field(default=None, description="refused from this instant on; None = never")
    revoked_at: UtcDatetime | None = Field(default=None, description="when it was revoked, if known")

    @model_validator(mode="after")
    def _enterprise_bound(self) -> ApiToken:
        if (self.role is Role.ENTERPRISE) != (self.enterprise_id is not None):
            raise ValueError("an enterprise token needs enterprise_id; grid and admin tokens take none")
        if self.expires_at is not None and self.expires_at <= self.created_at:
            raise ValueError(f"expires_at {self.expires_at.isoformat()} is not after created_at {self.created_at.isoformat()}")
        return self

    def refusal(self, now: datetime) -> str | None:
        """Why the token may not be used at ``now`` (revoked, expired), or None when it may [-]."""
        if self.revoked or self.revoked_at is not None:
            when = f" at {self.revoked_at.isoformat()}" if self.revoked_at else ""
            return f"token was revoked{when}"
        if self.expires_at is not None and now >= self.expires_at:
            return f"token expired at {self.expires_at.isoformat()}"
        return None
