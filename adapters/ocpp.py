"""OCPP 1.6J central system: EV chargers connect to the VPP over websocket.

The adapter *is* the central system. ``connect`` starts a websocket server
(subprotocol ``ocpp1.6``); every charger connects by itself to
``ws://host:port/<charge point id>``, where the charge point id is the
device's ``address`` (or its id when it has none), and reconnects by itself
when the link drops. Message handling is the ``ocpp`` library's; this module
adds the VPP's meaning:

* ``MeterValues`` become :class:`~vpp.model.TelemetrySample` (charging is
  power drawn, so ``p_kw`` is negative: generator convention);
* ``StatusNotification`` tells which connectors have a vehicle that can draw,
  which gives the range ``p_min_kw .. p_max_kw``;
* a set-point becomes ``SetChargingProfile`` (a limit in W, or A at a stated
  voltage), a release becomes ``ClearChargingProfile``.

The protocol logic is pure functions (``parse_meter_values``,
``encode_charging_profile``, ``decode_charging_profile``, ``charger_sample``)
driven by a thin async shell. See ``docs/protocols/ocpp.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import structlog
from ocpp.charge_point import camel_to_snake_case
from ocpp.exceptions import FormatViolationError, OCPPError
from ocpp.messages import Call, CallError, CallResult, MessageType, unpack
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as _LibChargePoint
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    AuthorizationStatus,
    ChargePointStatus,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    RegistrationStatus,
)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from adapters.base import Adapter, AdapterError
from vpp.clock import Clock, RealClock
from vpp.model import Device, EvCharger, Setpoint, TelemetrySample

__all__ = [
    "OCPP_SUBPROTOCOL",
    "ChargerReading",
    "OcppAdapter",
    "OcppParseError",
    "ProfileLimit",
    "cancel_and_wait",
    "charge_point_id_of",
    "charger_sample",
    "decode_charging_profile",
    "encode_charging_profile",
    "iso_utc",
    "parse_meter_values",
    "parse_ocpp_time",
    "profile_purpose_for",
]

OCPP_SUBPROTOCOL = "ocpp1.6"
TX_DEFAULT_PROFILE = "TxDefaultProfile"
CHARGE_POINT_MAX_PROFILE = "ChargePointMaxProfile"
TX_PROFILE = "TxProfile"

# A charge point id travels in the URL path: keep it to characters that need no escaping.
_CHARGE_POINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# Statuses of a connector whose vehicle can draw power now (SuspendedEVSE: the EVSE, e.g. our limit 0, holds it back).
_DRAWING_STATUSES = frozenset({ChargePointStatus.charging.value, ChargePointStatus.suspended_evse.value})
_INOPERATIVE_STATUSES = frozenset({ChargePointStatus.unavailable.value, ChargePointStatus.faulted.value})
_POWER_UNITS_KW = {"W": 1e-3, "kW": 1.0}
_ENERGY_UNITS_KWH = {"Wh": 1e-3, "kWh": 1.0}
_PHASE_TOTAL = None  # a sampled value without phase is the total over phases


class OcppParseError(ValueError):
    """An OCPP payload that passed the schema but cannot be used (bad number, unit, time)."""


# ------------------------------------------------------------ pure parts ----


def iso_utc(when: datetime) -> str:
    """An OCPP ``dateTime``: ISO 8601 in UTC with ``Z``, millisecond resolution."""
    if when.tzinfo is None:
        raise ValueError(f"timestamp {when.isoformat()} has no timezone")
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ocpp_time(text: object) -> datetime:
    """Parse an OCPP ``dateTime`` to an aware UTC datetime.

    Raises
    ------
    OcppParseError
        Not a string, not ISO 8601, or without a UTC offset (OCPP times are UTC, say so with ``Z``).
    """
    if not isinstance(text, str):
        raise OcppParseError(f"timestamp {text!r} is not a string")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise OcppParseError(f"timestamp {text!r} is not ISO 8601") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise OcppParseError(f"timestamp {text!r} has no UTC offset; send e.g. '2026-07-01T04:00:00Z'")
    return when.astimezone(timezone.utc)


def charge_point_id_of(device: Device) -> str:
    """The charge point id a device's charger connects with: its ``address``, else its id.

    Raises
    ------
    AdapterError
        The address is not a usable charge point id (field ``address`` named).
    """
    cp_id = device.address if device.address is not None else device.id
    if not _CHARGE_POINT_ID.match(cp_id):
        raise AdapterError(
            f"ocpp adapter: address {cp_id!r} of device {device.id} is not a charge point id "
            "(1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit)"
        )
    return cp_id


def _charge_point_id_from_path(path: str) -> str:
    """The last non-empty segment of a websocket request path (``/ocpp/CP1`` -> ``CP1``)."""
    segments = [s for s in urlsplit(path).path.split("/") if s]
    return unquote(segments[-1]) if segments else ""


@dataclass(frozen=True)
class ChargerReading:
    """What one ``MeterValue`` of a charger says, in VPP units.

    ``p_kw`` follows the generator convention: charging (import) is negative.
    Fields the charger did not send are ``None``.
    """

    ts: datetime
    p_kw: float | None = None
    """Active power, + = into the park (V2G export), - = charging [kW]."""
    current_a: float | None = None
    """Import current summed over phases [A]."""
    soc_pct: float | None = None
    """Vehicle state of charge [%]."""
    energy_import_kwh: float | None = None
    """Energy import register [kWh]."""


def _number(sampled: Mapping[str, Any]) -> float:
    """The finite number in a sampled value's ``value`` string."""
    raw = sampled.get("value")
    if not isinstance(raw, str):  # OCPP sends numbers as strings; anything else is not a reading
        raise OcppParseError(f"sampledValue value {raw!r} of {sampled.get('measurand')} is not a string")
    try:
        value = float(raw)
    except ValueError:
        raise OcppParseError(f"sampledValue value {raw!r} of {sampled.get('measurand')} is not a number") from None
    if not math.isfinite(value):
        raise OcppParseError(f"sampledValue value {raw!r} of {sampled.get('measurand')} is not finite")
    return value


def _scaled(sampled: Mapping[str, Any], units: Mapping[str, float], default_unit: str) -> float:
    unit = sampled.get("unit") or default_unit
    if not isinstance(unit, str) or unit not in units:
        raise OcppParseError(
            f"sampledValue unit {unit!r} of {sampled.get('measurand')} is not one of {sorted(units)}"
        )
    return _number(sampled) * units[unit]


def _over_phases(values: list[tuple[str | None, float]]) -> float | None:
    """Total over phases: the value without phase if sent, else the sum of the per-phase values.

    Line-to-line values (``L1-L2``) are not a per-phase quantity and are left out.
    """
    if not values:
        return None
    totals = [v for phase, v in values if phase is _PHASE_TOTAL]
    if totals:
        return totals[-1]
    per_phase = [v for phase, v in values if phase in ("L1", "L2", "L3", "L1-N", "L2-N", "L3-N")]
    return sum(per_phase) if per_phase else None


def _parse_meter_value(entry: Mapping[str, Any], *, voltage_v: float, phases: int) -> ChargerReading:
    """One ``MeterValue`` (snake_case keys, as the ``ocpp`` library hands it over) -> reading."""
    if not isinstance(entry, Mapping):
        raise OcppParseError(f"meterValue entry {entry!r} is not an object")
    ts = parse_ocpp_time(entry.get("timestamp"))
    sampled_values = entry.get("sampled_value")
    if not isinstance(sampled_values, list) or not sampled_values:
        raise OcppParseError(f"meterValue sampledValue {sampled_values!r} is not a non-empty list")
    imports: list[tuple[str | None, float]] = []
    exports: list[tuple[str | None, float]] = []
    currents: list[tuple[str | None, float]] = []
    voltages: list[float] = []
    soc = energy = None
    for sampled in sampled_values:
        if not isinstance(sampled, Mapping):
            raise OcppParseError(f"sampledValue {sampled!r} is not an object")
        if sampled.get("format") == "SignedData":
            continue  # a signed meter blob, not a number
        measurand = sampled.get("measurand") or "Energy.Active.Import.Register"  # the OCPP default
        phase = sampled.get("phase")
        if measurand == "Power.Active.Import":
            imports.append((phase, _scaled(sampled, _POWER_UNITS_KW, "W")))
        elif measurand == "Power.Active.Export":
            exports.append((phase, _scaled(sampled, _POWER_UNITS_KW, "W")))
        elif measurand == "Current.Import":
            currents.append((phase, _scaled(sampled, {"A": 1.0}, "A")))
        elif measurand == "Voltage" and phase in (None, "L1-N", "L2-N", "L3-N", "L1", "L2", "L3"):
            voltages.append(_scaled(sampled, {"V": 1.0}, "V"))
        elif measurand == "SoC":
            soc = _scaled(sampled, {"Percent": 1.0}, "Percent")
            if not 0.0 <= soc <= 100.0:
                raise OcppParseError(f"SoC {soc} is not within 0..100 %")
        elif measurand == "Energy.Active.Import.Register":
            energy = _scaled(sampled, _ENERGY_UNITS_KWH, "Wh")
    current = _over_phases(currents)
    p_import, p_export = _over_phases(imports), _over_phases(exports)
    if p_import is None and p_export is None and current is not None:
        # No power sent: estimate it from the current at the measured (else nominal) phase voltage.
        v = sum(voltages) / len(voltages) if voltages else voltage_v
        per_phase_only = all(phase is not _PHASE_TOTAL for phase, _ in currents)
        amps = current if per_phase_only else current * phases  # a phase-less current is each phase's
        p_import = amps * v * 1e-3
    p_kw = None
    if p_import is not None or p_export is not None:
        p_kw = (p_export or 0.0) - (p_import or 0.0) + 0.0
    return ChargerReading(ts=ts, p_kw=p_kw, current_a=current, soc_pct=soc, energy_import_kwh=energy)


def parse_meter_values(meter_value: object, *, voltage_v: float = 230.0, phases: int = 3) -> ChargerReading | None:
    """The newest reading that carries power in a ``MeterValues.req`` ``meterValue`` list.

    Parameters
    ----------
    meter_value : list of dict
        The ``meterValue`` list with snake_case keys, as the ``ocpp`` library
        passes it to a handler (``timestamp``, ``sampled_value`` with
        ``value``, ``measurand``, ``unit``, ``phase``, ...).
    voltage_v : float
        Nominal phase-to-neutral voltage, used when only current is sent and no voltage [V].
    phases : int
        Phases a current without phase tag flows on [unitless].

    Returns
    -------
    ChargerReading or None
        ``None`` when no entry carries power or current (e.g. only an energy register).

    Raises
    ------
    OcppParseError
        A value that is not a finite number, a wrong unit, a bad timestamp, a SoC outside 0..100.
    """
    if not isinstance(meter_value, list) or not meter_value:
        raise OcppParseError(f"meterValue {meter_value!r} is not a non-empty list")
    readings = [_parse_meter_value(entry, voltage_v=voltage_v, phases=phases) for entry in meter_value]
    with_power = [r for r in readings if r.p_kw is not None]
    if not with_power:
        return None
    newest = max(with_power, key=lambda r: r.ts)
    # SoC and energy may come in a separate entry of the same instant.
    soc = next((r.soc_pct for r in reversed(readings) if r.soc_pct is not None and r.ts == newest.ts), newest.soc_pct)
    return ChargerReading(newest.ts, newest.p_kw, newest.current_a, soc, newest.energy_import_kwh)


def profile_purpose_for(device: EvCharger) -> str:
    """Profile purpose that caps a charger's *total* power.

    A ``TxDefaultProfile`` on connector 0 limits each connector, so it is the
    total only for a one-port charger; a several-port charger gets a
    ``ChargePointMaxProfile``, the only OCPP 1.6 purpose that caps the sum.
    """
    return TX_DEFAULT_PROFILE if device.ports == 1 else CHARGE_POINT_MAX_PROFILE


def encode_charging_profile(
    p_kw: float,
    *,
    start: datetime,
    profile_id: int = 1,
    stack_level: int = 1,
    purpose: str = TX_DEFAULT_PROFILE,
    rate_unit: Literal["W", "A"] = "W",
    voltage_v: float = 230.0,
    phases: int = 3,
) -> dict[str, Any]:
    """The ``csChargingProfiles`` object (wire form, camelCase) holding a charger at a set-point.

    Parameters
    ----------
    p_kw : float
        Set-point in generator convention; charging is negative, so the limit
        is ``-p_kw``. OCPP 1.6 cannot discharge a vehicle: a positive set-point
        is a limit of 0 [kW].
    start : datetime
        When the profile starts (``startSchedule``), aware [UTC].
    profile_id : int
        ``chargingProfileId``; the same id replaces the previous profile [unitless].
    stack_level : int
        ``stackLevel`` [unitless].
    purpose : str
        ``TxDefaultProfile`` or ``ChargePointMaxProfile`` (see :func:`profile_purpose_for`).
    rate_unit : {"W", "A"}
        ``chargingRateUnit``; with ``"A"`` the limit is the per-phase current at ``voltage_v`` on ``phases``.
    voltage_v : float
        Phase-to-neutral voltage for an ``A`` limit [V].
    phases : int
        Phases the vehicle charges on for an ``A`` limit [unitless].

    Raises
    ------
    ValueError
        A non-finite ``p_kw``, an unknown ``rate_unit`` or ``purpose``, or a non-positive voltage or phase count.
    """
    if not math.isfinite(p_kw):
        raise ValueError(f"p_kw {p_kw} is not finite")
    if purpose not in (TX_DEFAULT_PROFILE, CHARGE_POINT_MAX_PROFILE):
        raise ValueError(f"purpose {purpose!r} must be {TX_DEFAULT_PROFILE} or {CHARGE_POINT_MAX_PROFILE}")
    if voltage_v <= 0 or phases < 1:
        raise ValueError(f"voltage_v {voltage_v} and phases {phases} must be positive")
    limit_w = max(0.0, -p_kw) * 1e3
    period: dict[str, Any] = {"startPeriod": 0}
    if rate_unit == "W":
        period["limit"] = round(limit_w, 1)  # the 1.6 schema: multipleOf 0.1
    elif rate_unit == "A":
        period["limit"] = round(limit_w / (voltage_v * phases), 1)
        period["numberPhases"] = phases
    else:
        raise ValueError(f"rate_unit {rate_unit!r} must be 'W' or 'A'")
    return {
        "chargingProfileId": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "startSchedule": iso_utc(start),
            "chargingRateUnit": rate_unit,
            "chargingSchedulePeriod": [period],
        },
    }


@dataclass(frozen=True)
class ProfileLimit:
    """What a charging profile asks of a charger now."""

    profile_id: int
    purpose: str
    stack_level: int
    limit_kw: float
    """Power cap, >= 0: per connector for Tx(Default)Profile, for the charger for ChargePointMaxProfile [kW]."""
    transaction_id: int | None = None


def decode_charging_profile(profile: Mapping[str, Any], *, voltage_v: float = 230.0) -> ProfileLimit:
    """The limit in force at the start of a charging profile (camelCase or snake_case keys).

    The inverse of :func:`encode_charging_profile`; the charger side uses it.
    An ``A`` limit is converted at ``voltage_v`` on ``numberPhases`` (3 if absent, as OCPP says).

    Raises
    ------
    OcppParseError
        A missing field, no period starting at 0, a negative or non-finite limit, an unknown unit.
    """
    try:
        p = camel_to_snake_case(dict(profile))
        schedule = p["charging_schedule"]
        periods = schedule["charging_schedule_period"]
        unit = schedule["charging_rate_unit"]
        first = min(periods, key=lambda x: x["start_period"])
        limit = float(first["limit"])
        phases = int(first.get("number_phases") or 3)
        result = ProfileLimit(
            profile_id=int(p["charging_profile_id"]),
            purpose=str(p["charging_profile_purpose"]),
            stack_level=int(p["stack_level"]),
            limit_kw=0.0,
            transaction_id=None if p.get("transaction_id") is None else int(p["transaction_id"]),
        )
        start_period = first["start_period"]
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise OcppParseError(f"charging profile {profile!r} is incomplete: {exc!r}") from None
    if start_period != 0:
        raise OcppParseError(f"charging profile {result.profile_id} has no period starting at 0")
    if not math.isfinite(limit) or limit < 0:
        raise OcppParseError(f"charging profile limit {limit} is not a finite number >= 0")
    if unit == "W":
        limit_kw = limit * 1e-3
    elif unit == "A":
        limit_kw = limit * voltage_v * phases * 1e-3
    else:
        raise OcppParseError(f"chargingRateUnit {unit!r} must be 'W' or 'A'")
    return ProfileLimit(result.profile_id, result.purpose, result.stack_level, limit_kw, result.transaction_id)


def charger_sample(
    device: EvCharger,
    reading: ChargerReading,
    connector_status: Mapping[int, str],
) -> TelemetrySample:
    """A telemetry sample from a charger's latest reading and its connectors' status.

    The range is ``p_max_kw = 0`` (1.6 cannot discharge a vehicle) and
    ``p_min_kw = -(rated_kw / ports) x connectors whose vehicle can draw``
    (status ``Charging`` or ``SuspendedEVSE``), widened to the measured power
    when the charger draws more than that. Connector 0 ``Unavailable`` or
    ``Faulted`` marks the charger offline (it takes no set-points).

    Parameters
    ----------
    device : EvCharger
        The charger's enrolment (rated power [kW], ports [unitless]).
    reading : ChargerReading
        Its latest reading with power (``p_kw`` not None) [kW].
    connector_status : mapping of int to str
        Latest ``StatusNotification`` status per connector id (0 = the charger itself).
    """
    if reading.p_kw is None:
        raise ValueError(f"reading of {device.id} at {reading.ts.isoformat()} has no power")
    port_kw = device.rated_kw / device.ports
    drawing = sum(1 for c, s in connector_status.items() if c > 0 and s in _DRAWING_STATUSES)
    p_min = -port_kw * min(drawing, device.ports)
    p_min = min(p_min, reading.p_kw, 0.0)
    online = connector_status.get(0) not in _INOPERATIVE_STATUSES
    return TelemetrySample(
        device_id=device.id,
        ts=reading.ts,
        p_kw=reading.p_kw,
        p_min_kw=p_min + 0.0,
        p_max_kw=0.0,
        soc_kwh=None,  # the vehicle's SoC is in percent of a capacity the VPP does not know
        online=online,
    )


def _combined_reading(
    by_connector: Mapping[int, ChargerReading], transactions: Mapping[int, int]
) -> ChargerReading | None:
    """The charger's reading: its main meter (connector 0) if it sends one, else the sum of its connectors.

    The sum covers connectors with a running transaction (others count 0 kW:
    a connector whose vehicle left stops reporting), or every connector that
    has reported when no transaction is known (e.g. the adapter restarted
    mid-session). It is stamped with the oldest reading in it, so a connector
    that stops reporting makes the charger stale.
    """
    if 0 in by_connector:
        return by_connector[0]
    chosen = [r for c, r in by_connector.items() if c in transactions] or list(by_connector.values())
    if not chosen:
        return None
    return ChargerReading(ts=min(r.ts for r in chosen), p_kw=sum(r.p_kw or 0.0 for r in chosen) + 0.0)


# ------------------------------------------------------------ async shell ----


async def cancel_and_wait(tasks: Sequence[asyncio.Task], retry_s: float = 0.5) -> None:
    """Cancel tasks and wait until they are done, cancelling again any that swallowed it.

    Python 3.11's ``asyncio.wait_for`` (used by the ``ocpp`` library for every
    request) can lose a cancellation that lands as the answer arrives; one
    ``cancel()`` is then not enough to stop a loop.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=retry_s)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            structlog.get_logger("vpp.adapters.ocpp").warning("task ended with an error", error=repr(task.exception()))


@dataclass
class _ChargerState:
    """What the central system knows of one charger; survives reconnects."""

    device: EvCharger
    cp_id: str
    readings: dict[int, ChargerReading] = field(default_factory=dict)  # connector -> latest reading with power
    status: dict[int, str] = field(default_factory=dict)  # connector -> latest StatusNotification status
    transactions: dict[int, int] = field(default_factory=dict)  # connector -> running transaction id
    soc_pct: float | None = None
    session: _CentralChargePoint | None = None
    booted_at: datetime | None = None


_UNSET = object()


class _CentralChargePoint(_LibChargePoint):
    """One connected charger, seen from the central system (handlers of what chargers send)."""

    def __init__(self, adapter: OcppAdapter, state: _ChargerState, connection: ServerConnection) -> None:
        super().__init__(state.cp_id, connection, response_timeout=adapter.response_timeout_s)
        self.adapter = adapter
        self.state = state
        self.sent: object = _UNSET  # p_kw the charger holds from this session (None = cleared)
        self.wake = asyncio.Event()
        self.log = structlog.get_logger("vpp.adapters.ocpp").bind(charge_point=state.cp_id)

    async def serve(self) -> None:
        """Receive until the connection closes; every frame goes through :meth:`route_message`."""
        with contextlib.suppress(ConnectionClosed):
            async for raw in self._connection:
                if isinstance(raw, bytes):
                    self.adapter.note_malformed("binary frame", f"{self.id}: {raw[:60]!r}")
                    continue
                await self.route_message(raw)

    async def route_message(self, raw_msg: str) -> None:
        """The library's routing, counting every frame it cannot use instead of only logging it."""
        try:
            msg = unpack(raw_msg)
        except OCPPError as exc:
            self.adapter.note_malformed("frame", f"{self.id}: {exc.description}: {raw_msg[:120]!r}")
            return
        if isinstance(msg, Call) and msg.message_type_id == MessageType.Call:
            try:
                await self._handle_call(msg)
            except OCPPError as error:  # unknown action, schema violation: answered with a CALLERROR
                self.adapter.note_malformed(f"call {msg.action!r}", f"{self.id}: {error}")
                with contextlib.suppress(ConnectionClosed):
                    await self._send(msg.create_call_error(error).to_json())
            except ConnectionClosed:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a non-string action trips the library's routing
                self.adapter.note_malformed("call", f"{self.id}: {exc!r}: {raw_msg[:120]!r}")
                with contextlib.suppress(ConnectionClosed):
                    await self._send(msg.create_call_error(FormatViolationError(str(exc))).to_json())
        elif isinstance(msg, (CallResult, CallError)):
            self._response_queue.put_nowait(msg)

    # -- what the charger sends ------------------------------------------------

    @on("BootNotification")
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str, **_: Any):
        self.state.booted_at = self.adapter.clock.now()
        self.log.info("charger booted", vendor=charge_point_vendor, model=charge_point_model)
        return call_result.BootNotification(
            current_time=iso_utc(self.adapter.clock.now()),
            interval=self.adapter.heartbeat_interval_s,
            status=RegistrationStatus.accepted,
        )

    @after("BootNotification")
    def after_boot_notification(self, **_: Any) -> None:
        # A rebooted charger is configured again and gets the held set-point again.
        self.adapter._spawn(self._configure_and_resync())

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any):
        return call_result.Heartbeat(current_time=iso_utc(self.adapter.clock.now()))

    @on("StatusNotification")
    def on_status_notification(self, connector_id: int, error_code: str, status: str, **_: Any):
        self.state.status[connector_id] = status
        if connector_id > 0 and status == ChargePointStatus.available.value:
            self.state.transactions.pop(connector_id, None)  # the vehicle left
            self.state.readings.pop(connector_id, None)
        return call_result.StatusNotification()

    @on("MeterValues")
    def on_meter_values(self, connector_id: int, meter_value: list, transaction_id: int | None = None, **_: Any):
        self.adapter._take_meter_values(self.state, connector_id, meter_value)
        return call_result.MeterValues()  # answered even when dropped, so the charger does not resend it

    @on("StartTransaction")
    def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any):
        transaction_id = self.adapter._next_transaction_id()
        self.state.transactions[connector_id] = transaction_id
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on("StopTransaction")
    def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int, **_: Any):
        for connector, tx in list(self.state.transactions.items()):
            if tx == transaction_id:
                del self.state.transactions[connector]
                self.state.readings.pop(connector, None)
        return call_result.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})

    @on("Authorize")
    def on_authorize(self, id_tag: str, **_: Any):
        # The VPP steers power, it does not bill: every id tag may charge.
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, status: str, **_: Any):
        return call_result.FirmwareStatusNotification()

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status(self, status: str, **_: Any):
        return call_result.DiagnosticsStatusNotification()

    # -- what the central system sends -------------------------------------------

    async def _configure_and_resync(self) -> None:
        """Ask for the measurands and sample interval the VPP needs, then resend the held set-point."""
        settings = {
            "MeterValuesSampledData": "Power.Active.Import,Current.Import,SoC,Energy.Active.Import.Register",
            "MeterValueSampleInterval": str(self.adapter.meter_interval_s),
        }
        for key, value in settings.items():
            try:
                result = await self.call(call.ChangeConfiguration(key=key, value=value))
            except (TimeoutError, ConnectionClosed, OCPPError) as exc:
                self.log.warning("change configuration failed", key=key, error=str(exc) or type(exc).__name__)
                break  # still resend the set-point below
            if result is None or result.status != "Accepted":
                self.log.warning("change configuration refused", key=key, status=getattr(result, "status", None))
        self.sent = _UNSET
        self.wake.set()

    async def send_setpoints(self) -> None:
        """Keep the charger at the held set-point: send whenever it differs from what it holds; retry on failure."""
        retry_s = self.adapter.retry_min_s
        while not self.adapter._closed:
            await self.wake.wait()
            self.wake.clear()
            held = self.adapter._held.get(self.state.device.id, _UNSET)
            if held is _UNSET or held == self.sent:
                continue
            try:
                ok = await self._send_setpoint(held)  # type: ignore[arg-type]
            except (TimeoutError, OCPPError) as exc:
                self.log.warning("set-point not delivered", p_kw=held, error=str(exc) or type(exc).__name__)
                ok = False
            if ok:
                self.sent = held
                self.adapter.delivered[self.state.device.id] = held  # type: ignore[assignment]
                retry_s = self.adapter.retry_min_s
            else:
                self.adapter.setpoint_failures += 1
                await asyncio.sleep(retry_s)  # wall time: the charger link's own pace
                retry_s = min(retry_s * 2, self.adapter.retry_max_s)
                self.wake.set()

    async def _send_setpoint(self, p_kw: float | None) -> bool:
        device = self.state.device
        purpose = profile_purpose_for(device)
        if p_kw is None:
            result = await self.call(call.ClearChargingProfile(id=self.adapter.profile_id))
            # Unknown: it holds no such profile, which is what a release wants.
            return result is not None and result.status in (
                ClearChargingProfileStatus.accepted, ClearChargingProfileStatus.unknown
            )
        profile = encode_charging_profile(
            p_kw,
            start=self.adapter.clock.now(),
            profile_id=self.adapter.profile_id,
            stack_level=self.adapter.stack_level,
            purpose=purpose,
            rate_unit=self.adapter.rate_unit,
            voltage_v=self.adapter.voltage_v,
            phases=self.adapter.phases,
        )
        result = await self.call(call.SetChargingProfile(connector_id=0, cs_charging_profiles=profile))
        if result is None or result.status != ChargingProfileStatus.accepted:
            self.log.warning("charging profile refused", p_kw=p_kw, status=getattr(result, "status", "CALLERROR"))
            return False
        return True


class OcppAdapter(Adapter):
    """OCPP 1.6J central system for the park's EV chargers.

    Parameters
    ----------
    devices : sequence of Device
        EV chargers it serves (``adapter == "ocpp"``); ``address`` is the charge point id (default: device id).
    host, port : str, int
        Where the websocket server listens; port 0 picks a free port, read it from :attr:`port` after ``connect``.
    clock : Clock
        Time for ``Heartbeat``/``BootNotification`` answers and profile start times (default: real time).
    response_timeout_s : float
        Longest wait for a charger's answer to a request [s].
    heartbeat_interval_s : int
        Heartbeat interval given to chargers at boot [s].
    meter_interval_s : int
        ``MeterValueSampleInterval`` asked of chargers at boot; keep it well under the service's stale time [s].
    rate_unit : {"W", "A"}
        Unit of the charging profiles' limits.
    voltage_v : float
        Phase-to-neutral voltage for current limits and current-only meter values [V].
    phases : int
        Phases assumed for current limits and phase-less currents [unitless].
    profile_id, stack_level : int
        ``chargingProfileId`` and ``stackLevel`` of the VPP's profile on every charger [unitless].
    ping_interval_s, ping_timeout_s : float
        Websocket keepalive: a charger that does not answer a ping in time is disconnected [s].
    retry_min_s, retry_max_s : float
        Backoff between attempts to deliver a set-point a charger refused or did not answer [s].

    Attributes
    ----------
    delivered : dict
        Device id -> the set-point its charger last accepted (``None`` = released) [kW].
    unknown_setpoints, setpoint_failures, unknown_chargers : int
        Set-points for devices it does not serve; failed deliveries; connections from unknown charge point ids.
    """

    name = "ocpp"

    def __init__(
        self,
        devices: Sequence[Device] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock | None = None,
        response_timeout_s: float = 10.0,
        heartbeat_interval_s: int = 60,
        meter_interval_s: int = 2,
        rate_unit: Literal["W", "A"] = "W",
        voltage_v: float = 230.0,
        phases: int = 3,
        profile_id: int = 1,
        stack_level: int = 1,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 20.0,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        if rate_unit not in ("W", "A"):
            raise ValueError(f"rate_unit {rate_unit!r} must be 'W' or 'A'")
        self.host = host
        self._requested_port = port
        self.clock: Clock = clock or RealClock()
        self.response_timeout_s = response_timeout_s
        self.heartbeat_interval_s = int(heartbeat_interval_s)
        self.meter_interval_s = int(meter_interval_s)
        self.rate_unit = rate_unit
        self.voltage_v = voltage_v
        self.phases = phases
        self.profile_id = profile_id
        self.stack_level = stack_level
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.delivered: dict[str, float | None] = {}
        self.unknown_setpoints = 0
        self.setpoint_failures = 0
        self.unknown_chargers = 0
        self._chargers: dict[str, _ChargerState] = {}  # device id -> state
        self._by_cp: dict[str, str] = {}  # charge point id -> device id
        self._held: dict[str, float | None] = {}  # device id -> set-point to hold (None = released)
        self._server: Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._transaction_seq = 0
        self._closed = False
        self.log = structlog.get_logger("vpp.adapters.ocpp")
        for device in devices:
            self._add(device)

    # -- enrolment -----------------------------------------------------------

    def _add(self, device: Device) -> None:
        if not isinstance(device, EvCharger):
            raise AdapterError(f"ocpp adapter: device {device.id} of kind '{device.kind}' is not an ev_charger")
        cp_id = charge_point_id_of(device)
        owner = self._by_cp.get(cp_id)
        if owner is not None and owner != device.id:
            raise AdapterError(f"ocpp adapter: address {cp_id!r} of device {device.id} is already used by {owner}")
        old = self._chargers.get(device.id)
        if old is not None and old.cp_id != cp_id:
            del self._by_cp[old.cp_id]
            if old.session is not None:
                self._spawn(old.session._connection.close(1008, "charge point id changed"))
            old = None
        if old is not None:
            old.device = device  # new limits, same connection and readings
        else:
            self._chargers[device.id] = _ChargerState(device=device, cp_id=cp_id)
        self._by_cp[cp_id] = device.id

    async def add_device(self, device: Device) -> None:
        """Serve a newly enrolled (or changed) charger; it may connect from now on.

        Raises
        ------
        AdapterError
            Not an EV charger (field ``kind``), or an ``address`` that is no charge point id or is taken.
        """
        if self._closed:
            raise AdapterError("ocpp adapter: add_device after close")
        self._add(device)

    # -- lifecycle -----------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the central system listens on (the bound one when 0 was asked for)."""
        if self._server is None:
            raise AdapterError("ocpp adapter: port before connect")
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """Base websocket URL chargers connect to (append ``/<charge point id>``)."""
        return f"ws://{self.host}:{self.port}"

    def connected_chargers(self) -> list[str]:
        """Ids of the devices whose charger is connected now."""
        return [d for d, s in self._chargers.items() if s.session is not None]

    def vehicle_soc_pct(self, device_id: str) -> float | None:
        """Last SoC a charger reported for its vehicle [%]."""
        return self._chargers[device_id].soc_pct

    async def connect(self) -> None:
        """Start listening (once; again after a failed start).

        Raises
        ------
        AdapterError
            After ``close``, or the address cannot be bound.
        """
        if self._closed:
            raise AdapterError("ocpp adapter: connect after close")
        if self._server is not None:
            return
        try:
            self._server = await serve(
                self._serve_charger,
                self.host,
                self._requested_port,
                subprotocols=[OCPP_SUBPROTOCOL],  # type: ignore[list-item]
                process_request=self._check_path,
                ping_interval=self.ping_interval_s,
                ping_timeout=self.ping_timeout_s,
            )
        except OSError as exc:
            raise AdapterError(f"ocpp adapter: cannot listen on {self.host}:{self._requested_port}: {exc}") from exc
        self.log.info("central system listening", url=self.url)

    async def close(self) -> None:
        """Stop listening and drop every charger connection; safe to call twice."""
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        await cancel_and_wait(list(self._tasks))

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise AdapterError(f"ocpp adapter: {what} after close")
        if self._server is None:
            raise AdapterError(f"ocpp adapter: {what} before connect")

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _next_transaction_id(self) -> int:
        self._transaction_seq += 1
        return self._transaction_seq

    # -- connections ---------------------------------------------------------

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse (HTTP 404) a charge point id no enrolled charger has, before the upgrade."""
        cp_id = _charge_point_id_from_path(request.path)
        if cp_id in self._by_cp:
            return None
        self.unknown_chargers += 1
        self.log.warning("unknown charge point refused", charge_point=cp_id, path=request.path[:120])
        return connection.respond(HTTPStatus.NOT_FOUND, f"unknown charge point {cp_id!r}\n")

    async def _serve_charger(self, connection: ServerConnection) -> None:
        cp_id = _charge_point_id_from_path(connection.request.path)  # type: ignore[union-attr]
        device_id = self._by_cp.get(cp_id)
        if device_id is None:  # removed between handshake and here
            await connection.close(1008, "unknown charge point")
            return
        if connection.subprotocol != OCPP_SUBPROTOCOL:  # websockets already refuses such handshakes (HTTP 400)
            self.log.warning("charger without subprotocol ocpp1.6 refused", charge_point=cp_id)
            await connection.close(1002, "subprotocol ocpp1.6 required")
            return
        state = self._chargers[device_id]
        if state.session is not None:  # a charger that reconnects before its old link timed out
            self.log.info("charger replaced its connection", charge_point=cp_id)
            await state.session._connection.close(1000, "replaced by a new connection")
        session = _CentralChargePoint(self, state, connection)
        state.session = session
        self.log.info("charger connected", charge_point=cp_id, device_id=device_id)
        sender = self._spawn(session.send_setpoints())
        session.wake.set()  # bring it to the held set-point at once
        try:
            await session.serve()
        finally:
            sender.cancel()
            if state.session is session:
                state.session = None
            self.log.info("charger disconnected", charge_point=cp_id, device_id=device_id)

    def _take_meter_values(self, state: _ChargerState, connector_id: int, meter_value: list) -> None:
        """Store a MeterValues.req's newest power reading; an unusable one is counted and dropped."""
        try:
            reading = parse_meter_values(meter_value, voltage_v=self.voltage_v, phases=self.phases)
        except OcppParseError as exc:
            self.note_malformed("MeterValues", f"{state.cp_id}: {exc}")
            return
        if reading is None:
            return
        if reading.soc_pct is not None:
            state.soc_pct = reading.soc_pct
        old = state.readings.get(connector_id)
        if old is None or reading.ts >= old.ts:  # a late resend of an old value does not go back in time
            state.readings[connector_id] = reading

    # -- adapter API -----------------------------------------------------------

    async def read_telemetry(self) -> list[TelemetrySample]:
        """The latest sample of every connected charger that has sent power, stamped with its meter time."""
        self._check_open("read_telemetry")
        samples = []
        for state in self._chargers.values():
            if state.session is None:
                continue  # gone: its samples stop and the service marks it stale
            reading = _combined_reading(state.readings, state.transactions)
            if reading is None or reading.p_kw is None:
                continue
            samples.append(charger_sample(state.device, reading, state.status))
        return samples

    async def write_setpoints(self, setpoints: Sequence[Setpoint]) -> None:
        """Hold each charger at its set-point (``None`` releases it); returns without waiting for chargers.

        Each connected charger's sender delivers the newest set-point
        (``SetChargingProfile`` / ``ClearChargingProfile``) and retries with
        backoff; a charger that is away gets it when it reconnects.
        """
        self._check_open("write_setpoints")
        for sp in setpoints:
            state = self._chargers.get(sp.device_id)
            if state is None:
                self.unknown_setpoints += 1
                continue
            self._held[sp.device_id] = sp.p_kw
            if state.session is not None:
                state.session.wake.set()

    def held_setpoints(self) -> dict[str, float | None]:
        """Device id -> the set-point the adapter holds it at (None = released) [kW]."""
        return dict(self._held)
