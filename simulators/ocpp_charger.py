"""OCPP 1.6J charge points driven by the simulated park's EV chargers.

Each :class:`~vpp.model.EvCharger` of the park becomes one charge point that
connects to a central system at ``ws://host:port/<charge point id>`` (the
device's ``address``, else its id) with subprotocol ``ocpp1.6``, and
reconnects with exponential backoff whenever the link drops. Once connected
it sends ``BootNotification``, a ``StatusNotification`` per connector,
``StartTransaction``/``StopTransaction`` as the park's vehicles come and go,
``MeterValues`` of its main meter (connector 0) every sample interval of the
clock, and ``Heartbeat``\\ s. ``SetChargingProfile`` limits become park
set-points; ``ClearChargingProfile`` of the last profile releases the device.

Time: meter values are stamped with ``clock.now()`` and sent when the clock
has moved on by the sample interval (checked every ``poll_s`` wall seconds),
so a :class:`~vpp.clock.ManualClock` test decides when samples happen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as _LibChargePoint
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    ChargePointErrorCode,
    ChargePointStatus,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    ConfigurationStatus,
    RegistrationStatus,
    TriggerMessageStatus,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from adapters.ocpp import (
    CHARGE_POINT_MAX_PROFILE,
    OCPP_SUBPROTOCOL,
    TX_DEFAULT_PROFILE,
    TX_PROFILE,
    OcppParseError,
    ProfileLimit,
    cancel_and_wait,
    charge_point_id_of,
    decode_charging_profile,
    iso_utc,
)
from simulators.sim import SimulatedPark
from vpp.clock import Clock
from vpp.model import Device, EvCharger, Setpoint

__all__ = ["InstalledProfile", "OcppChargers", "effective_limit_kw"]

_DRAW_EPS_KW = 1e-6


@dataclass(frozen=True)
class InstalledProfile:
    """A charging profile as installed on one connector of a charger (0 = the whole charger)."""

    limit: ProfileLimit
    connector_id: int


def effective_limit_kw(
    profiles: Sequence[InstalledProfile], occupied: Sequence[int], transactions: dict[int, int], port_kw: float
) -> float | None:
    """Total power cap of a charger under its charging profiles (OCPP 1.6 stacking); None = no profile.

    Per occupied connector: its ``TxProfile`` (for the transaction on it), else
    a ``TxDefaultProfile`` for that connector, else one for connector 0 (each
    the highest stack level), capped at the port's rating; summed, then capped
    by the highest ``ChargePointMaxProfile``.

    Parameters
    ----------
    profiles : sequence of InstalledProfile
        The installed profiles.
    occupied : sequence of int
        Connector ids with a vehicle.
    transactions : dict
        Connector id -> running transaction id.
    port_kw : float
        Rating of one connector [kW].

    Returns
    -------
    float or None
        The cap, >= 0 [kW].
    """
    if not profiles:
        return None

    def top(group: list[InstalledProfile]) -> float:
        return max(group, key=lambda p: p.limit.stack_level).limit.limit_kw

    total = 0.0
    for c in occupied:
        tx = [p for p in profiles if p.limit.purpose == TX_PROFILE and p.limit.transaction_id == transactions.get(c)]
        own = [p for p in profiles if p.limit.purpose == TX_DEFAULT_PROFILE and p.connector_id == c]
        shared = [p for p in profiles if p.limit.purpose == TX_DEFAULT_PROFILE and p.connector_id == 0]
        chosen = next((group for group in (tx, own, shared) if group), [])
        total += min(top(chosen), port_kw) if chosen else port_kw
    station = [p for p in profiles if p.limit.purpose == CHARGE_POINT_MAX_PROFILE]
    return min(total, top(station)) if station else total


@dataclass
class _Charger:
    """One simulated charge point's own state; survives reconnects (a real one keeps profiles in flash)."""

    device: EvCharger
    cp_id: str
    profiles: dict[int, InstalledProfile] = field(default_factory=dict)  # chargingProfileId -> profile
    status: dict[int, str] = field(default_factory=dict)  # connector -> status last reported
    transactions: dict[int, int] = field(default_factory=dict)  # connector -> transaction id
    applied_kw: float | None | object = object()  # set-point last handed to the park (unset at first)
    import_wh: float = 0.0  # energy import register [Wh]
    last_energy_kwh: float | None = None  # park energy counter at the last reading [kWh]
    meter_interval_s: float = 2.0  # clock seconds between MeterValues [s]
    heartbeat_interval_s: float = 60.0
    last_meter_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    boots: int = 0
    connected: bool = False
    stopping: bool = False  # set while stop() winds the charger down
    received: list[str] = field(default_factory=list)  # actions received from the central system, in order

    @property
    def port_kw(self) -> float:
        return self.device.rated_kw / self.device.ports


class _ChargePointSide(_LibChargePoint):
    """Handlers of what the central system sends to one simulated charger."""

    def __init__(self, fleet: OcppChargers, charger: _Charger, connection: Any) -> None:
        super().__init__(charger.cp_id, connection, response_timeout=fleet.response_timeout_s)
        self.fleet = fleet
        self.charger = charger

    @on("SetChargingProfile")
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict, **_: Any):
        self.charger.received.append("SetChargingProfile")
        try:
            limit = decode_charging_profile(cs_charging_profiles, voltage_v=self.fleet.voltage_v)
        except OcppParseError as exc:
            self.fleet.log.warning("charging profile rejected", charge_point=self.id, error=str(exc))
            return call_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
        ok = (
            (limit.purpose == CHARGE_POINT_MAX_PROFILE and connector_id == 0)
            or (limit.purpose == TX_DEFAULT_PROFILE and 0 <= connector_id <= self.charger.device.ports)
            or (limit.purpose == TX_PROFILE and limit.transaction_id in self.charger.transactions.values())
        )
        if not ok:
            return call_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
        self.charger.profiles[limit.profile_id] = InstalledProfile(limit, connector_id)
        self.fleet._apply_limits(self.charger)
        return call_result.SetChargingProfile(status=ChargingProfileStatus.accepted)

    @on("ClearChargingProfile")
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ):
        self.charger.received.append("ClearChargingProfile")
        profiles = self.charger.profiles
        if id is not None:
            gone = [id] if id in profiles else []
        else:
            gone = [
                pid
                for pid, p in profiles.items()
                if (connector_id is None or p.connector_id == connector_id)
                and (charging_profile_purpose is None or p.limit.purpose == charging_profile_purpose)
                and (stack_level is None or p.limit.stack_level == stack_level)
            ]
        for pid in gone:
            del profiles[pid]
        self.fleet._apply_limits(self.charger)
        status = ClearChargingProfileStatus.accepted if gone else ClearChargingProfileStatus.unknown
        return call_result.ClearChargingProfile(status=status)

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str, **_: Any):
        self.charger.received.append(f"ChangeConfiguration:{key}")
        if key == "MeterValueSampleInterval" and value.isdigit() and int(value) > 0:
            self.charger.meter_interval_s = float(value)
        elif key == "HeartbeatInterval" and value.isdigit() and int(value) > 0:
            self.charger.heartbeat_interval_s = float(value)
        elif key != "MeterValuesSampledData":  # it always samples what the VPP asks for
            return call_result.ChangeConfiguration(status=ConfigurationStatus.not_supported)
        return call_result.ChangeConfiguration(status=ConfigurationStatus.accepted)

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None, **_: Any):
        self.charger.received.append(f"TriggerMessage:{requested_message}")
        if requested_message == "MeterValues":
            self.charger.last_meter_at = None  # sent on the next tick
        elif requested_message == "Heartbeat":
            self.charger.last_heartbeat_at = None
        elif requested_message == "StatusNotification":
            self.charger.status.clear()  # everything re-announced on the next tick
        else:
            return call_result.TriggerMessage(status=TriggerMessageStatus.not_implemented)
        return call_result.TriggerMessage(status=TriggerMessageStatus.accepted)


class OcppChargers:
    """The park's EV chargers as OCPP 1.6J charge points of a central system at ``host:port``.

    Parameters
    ----------
    park : SimulatedPark
        The park whose EV chargers they are; stepped to ``clock.now()`` before every reading.
    clock : Clock
        Time of the simulated world.
    devices : sequence of Device
        The chargers to run (other kinds are refused).
    host, port : str, int
        The central system (the OCPP adapter) to connect to.
    meter_interval_s : float
        Clock seconds between MeterValues until the central system sets ``MeterValueSampleInterval`` [s].
    poll_s : float
        Wall seconds between looks at the clock [s].
    reconnect_min_s, reconnect_max_s : float
        Backoff between connection attempts, doubling from min to max [s].
    voltage_v : float
        Phase-to-neutral voltage for current limits [V].
    """

    def __init__(
        self,
        park: SimulatedPark,
        clock: Clock,
        devices: Sequence[Device],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        meter_interval_s: float = 2.0,
        poll_s: float = 0.05,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 5.0,
        response_timeout_s: float = 10.0,
        voltage_v: float = 230.0,
        vendor: str = "VPP-Sim",
        model: str = "SimCharger-16J",
    ) -> None:
        self.park = park
        self.clock = clock
        self.host = host
        self.port = port
        self.poll_s = poll_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.response_timeout_s = response_timeout_s
        self.voltage_v = voltage_v
        self.vendor = vendor
        self.model = model
        self.log = structlog.get_logger("vpp.simulators.ocpp")
        self._chargers: dict[str, _Charger] = {}
        for d in devices:
            if not isinstance(d, EvCharger):
                raise ValueError(f"device {d.id} of kind '{d.kind}' is not an ev_charger")
            self._chargers[d.id] = _Charger(device=d, cp_id=charge_point_id_of(d), meter_interval_s=meter_interval_s)
        self._tasks: dict[str, asyncio.Task] = {}

    # -- control ---------------------------------------------------------------

    def address_of(self, device_id: str) -> str:
        """The charge point id the charger connects with."""
        return self._chargers[device_id].cp_id

    def url_of(self, device_id: str) -> str:
        """The URL the charger connects to."""
        return f"ws://{self.host}:{self.port}/{self.address_of(device_id)}"

    def is_connected(self, device_id: str) -> bool:
        """Whether the charger has a booted connection to the central system now."""
        return self._chargers[device_id].connected

    def boots(self, device_id: str) -> int:
        """BootNotifications the charger has had accepted [unitless]."""
        return self._chargers[device_id].boots

    def received(self, device_id: str) -> list[str]:
        """Actions the central system sent this charger, oldest first."""
        return list(self._chargers[device_id].received)

    def limit_kw(self, device_id: str) -> float | None:
        """The total cap the charger's profiles put on it now; None = no profile [kW]."""
        c = self._chargers[device_id]
        return effective_limit_kw(list(c.profiles.values()), self._occupied(c), c.transactions, c.port_kw)

    def profiles(self, device_id: str) -> list[InstalledProfile]:
        """The charging profiles installed on the charger."""
        return list(self._chargers[device_id].profiles.values())

    async def start(self, device_ids: Sequence[str] | None = None) -> None:
        """Start (or restart) the chargers' connection loops; all of them by default."""
        for device_id in device_ids if device_ids is not None else list(self._chargers):
            task = self._tasks.get(device_id)
            if task is None or task.done():
                self._tasks[device_id] = asyncio.create_task(self._run(self._chargers[device_id]), name=f"ocpp-cp-{device_id}")

    async def stop(self, device_ids: Sequence[str] | None = None) -> None:
        """Drop the chargers' connections and stop them reconnecting; all of them by default."""
        ids = device_ids if device_ids is not None else list(self._tasks)
        for d in ids:
            self._chargers[d].stopping = True
        await cancel_and_wait([self._tasks.pop(d) for d in ids if d in self._tasks])
        for d in ids:
            self._chargers[d].stopping = False

    def send_meter_values_soon(self, device_id: str) -> None:
        """Send MeterValues on the next tick whatever the interval (like a TriggerMessage)."""
        self._chargers[device_id].last_meter_at = None

    # -- connection loop -----------------------------------------------------------

    async def _run(self, charger: _Charger) -> None:
        """Connect, boot, run; on any link failure wait (doubling from min to max) and connect again."""
        backoff = self.reconnect_min_s
        while not charger.stopping:
            boots_before = charger.boots
            try:
                async with connect(
                    self.url_of(charger.device.id),
                    subprotocols=[OCPP_SUBPROTOCOL],  # type: ignore[list-item]
                    open_timeout=self.response_timeout_s,
                ) as ws:
                    await self._session(charger, ws)
            except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake, OCPPError) as exc:
                self.log.info("charger link down", charge_point=charger.cp_id, error=str(exc) or type(exc).__name__)
            if charger.boots > boots_before:  # it had a working link: start over from the shortest wait
                backoff = self.reconnect_min_s
            await asyncio.sleep(backoff)  # wall time: link retries are about the network, not the simulated world
            backoff = min(backoff * 2, self.reconnect_max_s)

    async def _session(self, charger: _Charger, ws: Any) -> None:
        cp = _ChargePointSide(self, charger, ws)
        receiver = asyncio.create_task(cp.start(), name=f"ocpp-cp-recv-{charger.cp_id}")
        try:
            boot = await cp.call(call.BootNotification(charge_point_model=self.model, charge_point_vendor=self.vendor))
            if boot is None or boot.status != RegistrationStatus.accepted:
                raise OCPPError(f"boot not accepted: {getattr(boot, 'status', None)}")
            charger.boots += 1
            charger.connected = True
            if boot.interval > 0:
                charger.heartbeat_interval_s = float(boot.interval)
            charger.status.clear()  # announce every connector after a boot
            charger.last_meter_at = None
            charger.last_heartbeat_at = self.clock.now()
            while not charger.stopping:
                await self._tick(charger, cp)
                done, _ = await asyncio.wait({receiver}, timeout=self.poll_s)
                if done:
                    receiver.result()  # raises ConnectionClosed
                    return
        finally:
            charger.connected = False
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                await receiver

    # -- one look at the simulated world -------------------------------------------

    def _occupied(self, charger: _Charger) -> list[int]:
        n = min(self.park.ev_connected_sessions(charger.device.id), charger.device.ports)
        return list(range(1, n + 1))

    def _connector_status(self, charger: _Charger) -> dict[int, str]:
        """Status of connector 0 and each connector from the park's sessions, power and range."""
        device_id = charger.device.id
        occupied = set(self._occupied(charger))
        lo, _hi = self.park.limits_kw(device_id)
        p = self.park.power_kw(device_id)
        if lo < -_DRAW_EPS_KW:
            busy = ChargePointStatus.charging if p < -_DRAW_EPS_KW else ChargePointStatus.suspended_evse
        else:
            busy = ChargePointStatus.suspended_ev  # plugged in, but the vehicle takes nothing
        status = {0: ChargePointStatus.available.value}
        for c in range(1, charger.device.ports + 1):
            status[c] = (busy if c in occupied else ChargePointStatus.available).value
        return status

    def _apply_limits(self, charger: _Charger) -> None:
        """Hand the park the set-point the installed profiles mean (release when none is left)."""
        now = self.clock.now()
        self.park.step(now)
        limit = effective_limit_kw(
            list(charger.profiles.values()), self._occupied(charger), charger.transactions, charger.port_kw
        )
        p_kw = None if limit is None else -limit + 0.0
        if p_kw != charger.applied_kw:
            self.park.apply_setpoints([Setpoint(device_id=charger.device.id, p_kw=p_kw, ts=now)])
            charger.applied_kw = p_kw

    async def _tick(self, charger: _Charger, cp: _ChargePointSide) -> None:
        now = self.clock.now()
        self.park.step(now)
        await self._sync_transactions(charger, cp, now)
        self._apply_limits(charger)
        for connector, status in self._connector_status(charger).items():
            if charger.status.get(connector) != status:
                await cp.call(
                    call.StatusNotification(
                        connector_id=connector, error_code=ChargePointErrorCode.no_error, status=status, timestamp=iso_utc(now)
                    )
                )
                charger.status[connector] = status
        if charger.last_meter_at is None or (now - charger.last_meter_at).total_seconds() >= charger.meter_interval_s:
            await cp.call(call.MeterValues(connector_id=0, meter_value=[self._meter_value(charger, now)]))
            charger.last_meter_at = now
        if (
            charger.last_heartbeat_at is None
            or (now - charger.last_heartbeat_at).total_seconds() >= charger.heartbeat_interval_s
        ):
            await cp.call(call.Heartbeat())
            charger.last_heartbeat_at = now

    async def _sync_transactions(self, charger: _Charger, cp: _ChargePointSide, now: datetime) -> None:
        """Start a transaction on each newly occupied connector, stop those whose vehicle left."""
        occupied = set(self._occupied(charger))
        register = round(self._import_wh(charger))
        for c in sorted(occupied - set(charger.transactions)):
            result = await cp.call(
                call.StartTransaction(connector_id=c, id_tag=f"SIM{c:02d}", meter_start=register, timestamp=iso_utc(now))
            )
            if result is not None:
                charger.transactions[c] = result.transaction_id
        for c in sorted(set(charger.transactions) - occupied):
            tx = charger.transactions.pop(c)
            await cp.call(call.StopTransaction(meter_stop=register, timestamp=iso_utc(now), transaction_id=tx))
            for pid in [pid for pid, p in charger.profiles.items() if p.limit.purpose == TX_PROFILE and p.limit.transaction_id == tx]:
                del charger.profiles[pid]  # a TxProfile ends with its transaction

    def _import_wh(self, charger: _Charger) -> float:
        """The monotonic import register: energy drawn since start [Wh]."""
        energy = self.park.energy_kwh(charger.device.id)
        if charger.last_energy_kwh is not None:
            charger.import_wh += max(0.0, charger.last_energy_kwh - energy) * 1e3
        charger.last_energy_kwh = energy
        return charger.import_wh

    def _meter_value(self, charger: _Charger, now: datetime) -> dict:
        """The main meter's MeterValue (snake_case, as the ``ocpp`` library serialises it)."""
        p_kw = self.park.power_kw(charger.device.id)
        sampled = [
            {"value": f"{max(0.0, -p_kw) * 1e3:.1f}", "measurand": "Power.Active.Import", "unit": "W", "context": "Sample.Periodic"},
            {"value": f"{self._import_wh(charger):.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh", "context": "Sample.Periodic"},
        ]
        if p_kw > _DRAW_EPS_KW:  # a V2G charger under its own schedule; 1.6 set-points never ask for this
            sampled.append({"value": f"{p_kw * 1e3:.1f}", "measurand": "Power.Active.Export", "unit": "W", "context": "Sample.Periodic"})
        return {"timestamp": iso_utc(now), "sampled_value": sampled}
