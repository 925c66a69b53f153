"""IEC 60870-5-104 outstation: the grid dispatch centre reads the plant and sends AGC set-points.

The dispatch centre is the *master* (controlling station); the service is the
*outstation* (controlled station), listening on TCP. Built on ``c104``
(lib60870-C underneath), which does the framing, sequence numbers, t1/t2/t3
timers, general interrogation and cyclic reporting. This module adds:

* the point list (:class:`Iec104Points`, documented in docs/protocols/iec104.md);
* the pure mapping, tested on its own: plant totals -> point values
  (:func:`_encode_points`), set-point value -> :class:`DispatchInstruction`
  (:func:`_parse_setpoint`), a raw frame's APCI check (:func:`_check_apci`);
* a thin shell (:class:`Iec104Outstation`) bridging c104's threads and the
  service's asyncio loop.

Threads: c104 calls back on its own threads. Every callback hands its work to
the event loop (``run_coroutine_threadsafe`` / ``call_soon_threadsafe``); the
set-point callback waits at most ``command_timeout_s`` for the instruction to
be stored, so a confirmation is only positive once the instruction cannot be
lost. The loop in turn never calls c104 directly: values are written and
transmitted from a worker thread (``asyncio.to_thread``), so a c104 lock held
by a waiting callback can never stall the loop.

No ``from __future__ import annotations`` here: c104 checks the annotations of
its callbacks against its own classes and rejects string annotations.
"""

import asyncio
import contextlib
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone

import c104
import structlog

from adapters.base import AdapterError, GridLink, PlantPort
from vpp.clock import Clock
from vpp.errors import NotFound
from vpp.model import DispatchInstruction, InstructionKind

__all__ = ["MEASURED", "Iec104Outstation", "Iec104Points", "PointValue"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_TICK_RATE_MS = 100  # c104 thread period; cyclic intervals are whole multiples of it [ms]
_MAX_IOA = 16_777_215  # three-octet information object address
_KNOWN_TYPE_IDS = frozenset(t.value for t in c104.Type.__members__.values())
_PORT_ATTEMPTS = 5  # tries at an ephemeral port before giving up (another process may take it first)

MEASURED = ("net_kw", "available_up_kw", "available_down_kw", "agc_target_kw", "delivered_kw")
"""Names of the measured-value points, in point-list order."""


@dataclass(frozen=True)
class Iec104Points:
    """Information object addresses of the outstation's points.

    Defaults follow the address ranges of DL/T 634.5104 (the Chinese
    companion standard): single points from 0x0001, measured values from
    0x4001, set-points from 0x6201.
    """

    remote_control_accepted: int = 0x0001  # single point: AGC set-points are accepted now [on/off]
    net_kw: int = 0x4001  # plant net power, generator convention [kW]
    available_up_kw: int = 0x4002  # how far net power can rise now [kW]
    available_down_kw: int = 0x4003  # how far net power can fall now [kW]
    agc_target_kw: int = 0x4004  # net power the active instruction asks for [kW]
    delivered_kw: int = 0x4005  # active instruction: measured change from its baseline [kW]
    agc_setpoint_kw: int = 0x6201  # set-point command: net power to hold [kW]

    def __post_init__(self) -> None:
        addresses = [getattr(self, f.name) for f in fields(self)]
        for f, ioa in zip(fields(self), addresses):
            if not 1 <= ioa <= _MAX_IOA:
                raise ValueError(f"{f.name} {ioa} is not an information object address (1..{_MAX_IOA})")
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"information object addresses {addresses} are not all different")


@dataclass(frozen=True)
class PointValue:
    """A value to publish on one monitoring point; ``valid`` False sends it with the IV quality bit."""

    value: float | bool  # [kW] for measured values, on/off for the single point
    valid: bool = True


# ---------------------------------------------------------------- pure mapping ----


def _finite_kw(plant: Mapping, key: str) -> PointValue:
    value = plant.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return PointValue(float(value), valid=int(plant.get("devices_online") or 0) > 0)
    return PointValue(0.0, valid=False)


def _encode_points(plant: Mapping, requested_kw: float | None, delivered_kw: float | None) -> dict[str, PointValue]:
    """Values of the monitoring points from the plant's live totals.

    Parameters: ``plant`` as returned by ``PlantPort.plant()`` (``net_kw``,
    ``available_up_kw``, ``available_down_kw``, ``devices_online``) [kW];
    ``requested_kw`` net power the active instruction asks for, None when none
    is active [kW]; ``delivered_kw`` its measured change from baseline, None
    when unknown [kW].

    Returns point name (an :class:`Iec104Points` field) -> value. Totals of a
    plant with no device online, and instruction values when there is none,
    are marked invalid rather than sent as a plausible 0.
    """
    values = {key: _finite_kw(plant, key) for key in ("net_kw", "available_up_kw", "available_down_kw")}
    for key, kw in (("agc_target_kw", requested_kw), ("delivered_kw", delivered_kw)):
        ok = kw is not None and math.isfinite(kw)
        values[key] = PointValue(float(kw) if ok else 0.0, valid=ok)
    values["remote_control_accepted"] = PointValue(int(plant.get("devices_online") or 0) > 0)
    return values


def _reachable_kw(plant: Mapping) -> tuple[float, float]:
    """Lowest and highest net power the plant can be set to now [kW]."""
    net = float(plant.get("net_kw") or 0.0)
    return net - float(plant.get("available_down_kw") or 0.0), net + float(plant.get("available_up_kw") or 0.0)


def _instruction_id(common_address: int, ioa: int, at: datetime) -> str:
    """``iec104-<ca>-<ioa>-<UTC ms since epoch>``: the same command at the same instant gets the same id."""
    return f"iec104-{common_address}-{ioa}-{_epoch_ms(at)}"


def _epoch_ms(at: datetime) -> int:
    return (at.astimezone(timezone.utc) - _EPOCH) // timedelta(milliseconds=1)


def _parse_setpoint(
    value_kw: float,
    *,
    common_address: int,
    ioa: int,
    received_at: datetime,
    hold_s: float,
    reachable_kw: tuple[float, float],
    tolerance_kw: float,
) -> DispatchInstruction:
    """Turn one AGC set-point into a ``target`` instruction for ``[received_at, received_at + hold_s)``.

    Parameters: ``value_kw`` plant net power asked for, generator convention
    [kW]; ``received_at`` when the outstation took it (truncated to the
    millisecond, it names the instruction) [UTC]; ``hold_s`` how long the
    set-point holds if no new one comes [s]; ``reachable_kw`` lowest and
    highest net power reachable now [kW]; ``tolerance_kw`` slack around that
    range for float32 rounding [kW].

    Returns the instruction (``target_kw`` rounded to the watt [kW]). Raises
    ``ValueError`` naming the value when it is not a number or out of reach.
    """
    if not math.isfinite(value_kw):
        raise ValueError(f"agc set-point {value_kw!r} kW is not a finite number")
    low, high = reachable_kw
    if not low - tolerance_kw <= value_kw <= high + tolerance_kw:
        raise ValueError(f"agc set-point {value_kw:.3f} kW is outside the reachable range [{low:.3f}, {high:.3f}] kW")
    if hold_s <= 0:
        raise ValueError(f"hold_s {hold_s} must be positive")
    start = _EPOCH + timedelta(milliseconds=_epoch_ms(received_at))
    return DispatchInstruction(
        id=_instruction_id(common_address, ioa, start),
        kind=InstructionKind.TARGET,
        start=start,
        end=start + timedelta(seconds=hold_s),
        target_kw=round(float(value_kw), 3),
        source="iec104",
    )


def _check_apci(frame: bytes, known_type_ids: frozenset[int] = _KNOWN_TYPE_IDS) -> str:
    """Check one received APDU's framing; returns its format ``"I"``, ``"S"`` or ``"U"``.

    Raises ``ValueError`` naming the bad field: start byte, length, an
    I-frame too short for an ASDU header, an unknown type id, or a U-frame
    that is not exactly one of STARTDT/STOPDT/TESTFR act/con.
    """
    if len(frame) < 6:
        raise ValueError(f"apdu of {len(frame)} bytes is shorter than the 6-byte APCI")
    if frame[0] != 0x68:
        raise ValueError(f"start byte 0x{frame[0]:02x} is not 0x68")
    if frame[1] != len(frame) - 2:
        raise ValueError(f"length field {frame[1]} does not match the {len(frame) - 2} bytes that follow it")
    control = frame[2]
    if control & 0x01 == 0:
        if len(frame) < 15:  # APCI 6 + ASDU header 6 + one IOA 3
            raise ValueError(f"I-frame of {len(frame)} bytes has no complete ASDU header and address")
        if frame[6] not in known_type_ids:
            raise ValueError(f"type id {frame[6]} is not an IEC 60870-5-104 type")
        return "I"
    if len(frame) != 6:
        raise ValueError(f"{'S' if control & 0x03 == 0x01 else 'U'}-frame of {len(frame)} bytes must be 6 bytes")
    if control & 0x03 == 0x01:
        return "S"
    function = control & 0xFC
    if function not in (0x04, 0x08, 0x10, 0x20, 0x40, 0x80):
        raise ValueError(f"U-frame control byte 0x{control:02x} does not name exactly one function")
    return "U"


# ------------------------------------------------------------------- the shell ----


class Iec104Outstation(GridLink):
    """The plant as an IEC 104 outstation: measured values out, AGC set-points in.

    Each accepted set-point becomes a ``target`` instruction held for
    ``agc_hold_s``; a newer set-point supersedes it (the service runs the due
    instruction with the latest start). A set-point that is not a number or
    out of the plant's reach gets a negative confirmation and is counted as
    malformed.

    Attributes: ``setpoints_accepted`` and ``setpoints_rejected`` count
    commands since start [unitless]; ``last_instruction_id`` names the
    instruction of the last accepted set-point.
    """

    name = "iec104"

    def __init__(
        self,
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        common_address: int = 1,
        points: Iec104Points | None = None,
        agc_hold_s: float = 60.0,
        update_interval_s: float = 1.0,
        cyclic_interval_s: float = 10.0,
        deadband_kw: float = 1.0,
        range_tolerance_kw: float = 1.0,
        time_tagged: bool = False,
        command_timeout_s: float = 2.0,
        max_connections: int = 0,
        allowed_peers: frozenset[str] | None = None,
    ) -> None:
        """Configure; nothing is opened before :meth:`start`.

        Parameters: ``port`` 0 picks a free one (read it back from
        :attr:`port`); ``common_address`` of the station (1..65534);
        ``agc_hold_s`` how long one set-point instruction lasts [s];
        ``update_interval_s`` how often values are refreshed from the plant
        and sent spontaneously when changed, wall time [s];
        ``cyclic_interval_s`` period of the cyclic (periodic) transmission,
        0 = none [s]; ``deadband_kw`` smallest change sent spontaneously [kW];
        ``range_tolerance_kw`` slack around the reachable range [kW];
        ``time_tagged`` use M_ME_TF_1 / M_SP_TB_1 / C_SE_TC_1 instead of
        M_ME_NC_1 / M_SP_NA_1 / C_SE_NC_1; ``command_timeout_s`` longest a
        c104 thread waits for the instruction to be stored [s];
        ``max_connections`` masters at once, 0 = no limit [unitless];
        ``allowed_peers`` IP addresses that may connect, None = any.
        """
        if not 1 <= common_address <= 65534:
            raise ValueError(f"common_address {common_address} is outside 1..65534")
        if agc_hold_s <= 0:
            raise ValueError(f"agc_hold_s {agc_hold_s} must be positive")
        if update_interval_s <= 0:
            raise ValueError(f"update_interval_s {update_interval_s} must be positive")
        if cyclic_interval_s < 0:
            raise ValueError(f"cyclic_interval_s {cyclic_interval_s} must not be negative")
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is outside 0..65535")
        if deadband_kw < 0 or range_tolerance_kw < 0:
            raise ValueError(f"deadband_kw {deadband_kw} and range_tolerance_kw {range_tolerance_kw} must not be negative")
        if command_timeout_s <= 0:
            raise ValueError(f"command_timeout_s {command_timeout_s} must be positive")
        self.clock = clock
        self.host = host
        self.common_address = common_address
        self.points = points or Iec104Points()
        self.agc_hold_s = agc_hold_s
        self.update_interval_s = update_interval_s
        self.cyclic_interval_s = cyclic_interval_s
        self.deadband_kw = deadband_kw
        self.range_tolerance_kw = range_tolerance_kw
        self.time_tagged = time_tagged
        self.command_timeout_s = command_timeout_s
        self.max_connections = max_connections
        self.allowed_peers = allowed_peers
        self.setpoints_accepted = 0
        self.setpoints_rejected = 0
        self.last_instruction_id: str | None = None
        self.log = structlog.get_logger("vpp.adapters.iec104")
        self._port = port
        self._plant: PlantPort | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: c104.Server | None = None
        self._c104_points: dict[str, c104.Point] = {}
        self._sent: dict[str, PointValue] = {}  # last value sent per point, for on-change transmission
        self._last_id_ms = 0  # instruction ids stay unique even when two set-points share a millisecond
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def port(self) -> int:
        """TCP port the outstation listens on (the bound one once started) [unitless]."""
        return self._port

    @property
    def endpoint(self) -> str:
        return f"IEC 104 outstation on {self.host}:{self._port}"

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None and not self._stopping

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, plant: PlantPort) -> None:
        """Build the station with the plant's current values, then listen."""
        if self._server is not None:
            raise AdapterError("iec104 outstation: start called twice")
        self._plant = plant
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        values, measured_at = await self._current_values()  # a GI right after connecting reads real values
        self._server = await asyncio.to_thread(self._open, values, measured_at)
        self._task = asyncio.create_task(self._refresh_loop(), name="iec104-refresh")
        self.log.info("iec104 outstation listening", host=self.host, port=self._port, common_address=self.common_address)

    async def stop(self) -> None:
        """Stop refreshing and listening; safe to call twice."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        server, self._server = self._server, None
        if server is not None:
            # In a thread: stopping joins c104's threads, and one may be waiting for this loop.
            await asyncio.to_thread(server.stop)
            self.log.info("iec104 outstation stopped", port=self._port)

    def _open(self, values: Mapping[str, PointValue], measured_at: datetime) -> c104.Server:
        """Worker thread: build the server with ``values`` and listen.

        With port 0, choose a free ephemeral port here (c104 binds port 0 but
        cannot tell which port it got) and try another if a different process
        takes it first.
        """
        attempts = 1 if self._port else _PORT_ATTEMPTS
        for _ in range(attempts):
            port = self._port or _free_port(self.host)
            server = self._build_server(port)
            self._write_values(values, measured_at)
            try:
                server.start()
            except RuntimeError as exc:
                self.log.warning("iec104 port not available", host=self.host, port=port, error=str(exc))
                continue
            self._port = port
            self._sent = dict(values)
            return server
        raise AdapterError(f"iec104 outstation: cannot listen on {self.host}:{self._port or 'any free port'}")

    def _build_server(self, port: int) -> c104.Server:
        """Create the c104 server, its station and points, and register the callbacks (not yet listening)."""
        server = c104.Server(ip=self.host, port=port, tick_rate_ms=_TICK_RATE_MS, max_connections=self.max_connections)
        station = server.add_station(common_address=self.common_address)
        if station is None:
            raise AdapterError(f"iec104 outstation: cannot add station {self.common_address}")
        measured_type = c104.Type.M_ME_TF_1 if self.time_tagged else c104.Type.M_ME_NC_1
        single_type = c104.Type.M_SP_TB_1 if self.time_tagged else c104.Type.M_SP_NA_1
        command_type = c104.Type.C_SE_TC_1 if self.time_tagged else c104.Type.C_SE_NC_1
        ticks = round(self.cyclic_interval_s * 1000 / _TICK_RATE_MS)
        report_ms = _TICK_RATE_MS * max(1, ticks) if self.cyclic_interval_s > 0 else 0
        self._c104_points = {
            name: station.add_point(io_address=getattr(self.points, name), type=measured_type, report_ms=report_ms)
            for name in MEASURED
        }
        self._c104_points["remote_control_accepted"] = station.add_point(
            io_address=self.points.remote_control_accepted, type=single_type, report_ms=report_ms
        )
        command = station.add_point(io_address=self.points.agc_setpoint_kw, type=command_type)
        command.on_receive(callable=self._on_setpoint)
        server.on_connect(callable=self._on_connect)
        server.on_unexpected_message(callable=self._on_unexpected)
        server.on_receive_raw(callable=self._on_receive_raw)
        return server

    # -- values out ----------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        """Refresh values every ``update_interval_s`` of wall time, or at once after a set-point.

        Wall time, not the plant clock: this paces a network exchange, like the
        protocol's own timers (with a manual test clock the plant's time only
        moves when the test moves it).
        """
        assert self._wake is not None
        while True:
            try:
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed refresh must not end the link; the next one may succeed
                self.log.exception("iec104 refresh failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.update_interval_s)
            self._wake.clear()

    async def _refresh(self) -> None:
        """Read the plant, encode the points, write and (on change) transmit them from a worker thread."""
        values, measured_at = await self._current_values()
        await asyncio.to_thread(self._publish, values, measured_at)

    async def _current_values(self) -> tuple[dict[str, PointValue], datetime]:
        """Point values from the plant now, and the time they were measured [UTC]."""
        assert self._plant is not None
        plant = self._plant.plant()
        requested_kw, delivered_kw = await self._followed(plant.get("active_instruction"))
        return _encode_points(plant, requested_kw, delivered_kw), _parse_ts(plant.get("ts")) or self.clock.now()

    async def _followed(self, instruction_id: str | None) -> tuple[float | None, float | None]:
        """Net power the active instruction asks for and its delivered change, or Nones [kW]."""
        if not instruction_id or self._plant is None:
            return None, None
        try:
            instruction, state = await self._plant.instruction_view(instruction_id)
        except NotFound:
            return None, None
        requested = state.requested_kw if state.requested_kw is not None else instruction.target_kw
        return requested, state.delivered_kw

    def _publish(self, values: Mapping[str, PointValue], measured_at: datetime) -> None:
        """Worker thread: write every point; transmit spontaneously those that changed beyond the deadband."""
        self._write_values(values, measured_at)
        server = self._server
        connected = server is not None and server.has_active_connections
        for name, value in values.items():
            if not connected:
                self._sent[name] = value  # a master that connects interrogates first and gets this value
            elif self._changed(name, value):
                self._c104_points[name].transmit(cause=c104.Cot.SPONTANEOUS)
                self._sent[name] = value  # compared with what was last sent, so slow drift is sent too

    def _write_values(self, values: Mapping[str, PointValue], measured_at: datetime) -> None:
        recorded_at = measured_at if self.time_tagged else None
        for name, value in values.items():
            quality = c104.Quality() if value.valid else c104.Quality.Invalid
            if isinstance(value.value, bool):
                info = c104.SingleInfo(on=value.value, quality=quality, recorded_at=recorded_at)
            else:
                info = c104.ShortInfo(actual=value.value, quality=quality, recorded_at=recorded_at)
            self._c104_points[name].info = info

    def _changed(self, name: str, value: PointValue) -> bool:
        before = self._sent.get(name)
        if before is None or before.valid != value.valid:
            return True
        if isinstance(value.value, bool):
            return value.value != before.value
        return abs(float(value.value) - float(before.value)) > self.deadband_kw

    # -- c104 callbacks (c104's threads) ------------------------------------------------

    def _on_setpoint(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        """An AGC set-point arrived: store it as an instruction on the loop, then confirm (or not)."""
        try:
            loop = self._loop
            if loop is None or self._stopping or loop.is_closed():
                return c104.ResponseState.FAILURE
            if message.cot != c104.Cot.ACTIVATION or message.is_select_command or message.is_test:
                detail = f"cot={message.cot.name} select={message.is_select_command} test={message.is_test}"
                self._call_on_loop(self.note_malformed, "setpoint", f"not executed: {detail}")
                return c104.ResponseState.FAILURE
            value = float(message.info.value)
            future = asyncio.run_coroutine_threadsafe(self._accept_setpoint(value, message.info.recorded_at), loop)
            try:
                accepted = future.result(timeout=self.command_timeout_s)
            except TimeoutError:
                future.cancel()
                self._call_on_loop(self._command_timed_out, value)
                return c104.ResponseState.FAILURE
            return c104.ResponseState.SUCCESS if accepted else c104.ResponseState.FAILURE
        except Exception as exc:  # anything escaping would reach c104's thread
            self._call_on_loop(self._command_failed, exc)
            return c104.ResponseState.FAILURE

    def _on_connect(self, server: c104.Server, ip: str) -> bool:
        accept = self.allowed_peers is None or ip in self.allowed_peers
        self._call_on_loop(self._log_connect, ip, accept)
        return accept

    def _on_unexpected(self, server: c104.Server, message: c104.IncomingMessage, cause: c104.Umc) -> None:
        detail = f"{cause.name}: type={message.type.name} ca={message.common_address} ioa={message.io_address}"
        self._call_on_loop(self.note_malformed, "asdu", detail)

    def _on_receive_raw(self, server: c104.Server, data: bytes) -> None:
        try:
            _check_apci(data)
        except ValueError as exc:
            self._call_on_loop(self.note_malformed, "apdu", f"{exc} ({data[:32].hex()})")

    def _call_on_loop(self, fn, *args: object) -> None:
        """From a c104 thread: run ``fn(*args)`` on the loop; dropped when the loop is gone (shutting down)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed
            loop.call_soon_threadsafe(fn, *args)

    # -- on the loop ----------------------------------------------------------------------

    async def _accept_setpoint(self, value_kw: float, time_tag: datetime | None) -> bool:
        """Validate and store one set-point; True when it is stored and may be confirmed."""
        try:
            return await self._store_setpoint(value_kw, time_tag)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the store failed: answer negatively, the master may repeat
            self._command_failed(exc)
            return False

    async def _store_setpoint(self, value_kw: float, time_tag: datetime | None) -> bool:
        assert self._plant is not None and self._wake is not None
        at_ms = max(_epoch_ms(self.clock.now()), self._last_id_ms + 1)
        try:
            instruction = _parse_setpoint(
                value_kw,
                common_address=self.common_address,
                ioa=self.points.agc_setpoint_kw,
                received_at=_EPOCH + timedelta(milliseconds=at_ms),
                hold_s=self.agc_hold_s,
                reachable_kw=_reachable_kw(self._plant.plant()),
                tolerance_kw=self.range_tolerance_kw,
            )
        except ValueError as exc:
            self.setpoints_rejected += 1
            self.note_malformed("setpoint", exc)
            return False
        self._last_id_ms = at_ms  # taken even if the store fails late: the next id must differ
        stored, created = await self._plant.submit_instruction(instruction)
        if not created and stored.target_kw != instruction.target_kw:
            self.setpoints_rejected += 1
            self.log.warning("iec104 set-point id already taken by another target", instruction_id=instruction.id)
            return False
        self.setpoints_accepted += 1
        self.last_instruction_id = instruction.id
        self._wake.set()
        self.log.info(
            "iec104 set-point accepted", instruction_id=instruction.id, target_kw=instruction.target_kw,
            time_tag=time_tag.isoformat() if time_tag else None,
        )
        return True

    def _command_failed(self, exc: Exception) -> None:
        self.setpoints_rejected += 1
        self.log.error("iec104 set-point failed, answered negatively", error=f"{type(exc).__name__}: {exc}")

    def _command_timed_out(self, value_kw: float) -> None:
        self.setpoints_rejected += 1
        self.log.warning("iec104 set-point not stored in time, answered negatively", target_kw=value_kw, timeout_s=self.command_timeout_s)

    def _log_connect(self, ip: str, accepted: bool) -> None:
        self.log.info("iec104 master connecting", peer=ip, accepted=accepted)


def _free_port(host: str) -> int:
    """A TCP port free on ``host`` right now [unitless]."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _parse_ts(value: object) -> datetime | None:
    """The plant's ``ts`` (ISO 8601) as an aware datetime, or None."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None
