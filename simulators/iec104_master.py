"""The grid dispatch centre as an IEC 60870-5-104 master (c104 client), for tests and demos.

It connects to the plant's outstation (``adapters.iec104``), starts data
transfer and sends a general interrogation on every (re)connection, records
every value it receives, and sends AGC set-points: on demand
(:meth:`Iec104Master.send_setpoint`) or every ``interval_s`` from a signal
function. Every set-point's confirmation (positive, or negative / none before
the timeout) is recorded.

c104's calls block (a command waits for its confirmation), so they run in
worker threads; c104 calls back on its own threads, which only record under a
lock. c104 2.2.1's own connection init (``Init.INTERROGATION``) sometimes
leaves a fresh connection muted, so the master opens every connection muted
and a supervising task sends STARTDT and the interrogation itself.

No ``from __future__ import annotations``: c104 checks callback annotations
against its own classes.
"""

import asyncio
import contextlib
import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import c104
import structlog

from adapters.iec104 import MEASURED, Iec104Points

__all__ = ["Ack", "Iec104Master", "Reading"]

_TICK_RATE_MS = 50
_REFUSAL_COTS = frozenset({44, 45, 46, 47})  # unknown type id, cause, common address, object address


def _is_refusal(frame: bytes, type_id: int, ioa: int) -> bool:
    """True when ``frame`` answers a command of ``type_id`` to ``ioa`` negatively.

    Negative means the P/N bit set, or a cause of transmission 44..47 (unknown
    type, cause, common address or object address). A c104 2.2.1 outstation
    answers a command to an unknown address twice (ACT_CON negative, then
    cause 47 with P/N clear) and the c104 client may take the second reply as
    a positive confirmation, so the master also reads the raw replies.
    """
    if len(frame) < 15 or frame[0] != 0x68 or frame[2] & 0x01:
        return False  # not an I-frame with an ASDU
    cot_byte = frame[8]
    frame_ioa = int.from_bytes(frame[12:15], "little")
    return frame[6] == type_id and frame_ioa == ioa and (bool(cot_byte & 0x40) or (cot_byte & 0x3F) in _REFUSAL_COTS)


@dataclass(frozen=True)
class Reading:
    """One monitoring value as the master received it."""

    value: float | bool  # [kW] for measured values, on/off for the single point
    valid: bool  # quality without the IV (invalid) bit
    cot: str  # cause of transmission, e.g. INTERROGATED_BY_STATION, SPONTANEOUS, PERIODIC
    recorded_at: datetime | None  # time tag carried by the value (time-tagged types only) [UTC]
    received_at: datetime  # master's wall-clock time of reception [UTC]


@dataclass(frozen=True)
class Ack:
    """The outcome of one set-point command."""

    target_kw: float  # value sent [kW]
    accepted: bool  # positive activation confirmation, and no negative reply seen before it
    sent_at: datetime  # master's wall-clock time of sending [UTC]


Signal = Callable[[Mapping[str, Reading]], float | None]
"""Next AGC target from the latest readings [kW]; None = send nothing this round."""


class Iec104Master:
    """A c104 client connected to one outstation station.

    Parameters: ``host``/``port`` of the outstation (loopback in tests);
    ``common_address`` of its station; ``points`` its point list;
    ``interval_s`` period of the AGC loop [s]; ``signal`` computes each AGC
    target (None = no AGC loop, only :meth:`send_setpoint`); ``time_tagged``
    use the time-tagged types (M_ME_TF_1, M_SP_TB_1, C_SE_TC_1);
    ``command_timeout_s`` longest wait for a confirmation [s].
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2404,
        *,
        common_address: int = 1,
        points: Iec104Points | None = None,
        interval_s: float = 4.0,
        signal: Signal | None = None,
        time_tagged: bool = False,
        command_timeout_s: float = 5.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s {interval_s} must be positive")
        self.host = host
        self.port = port
        self.common_address = common_address
        self.points = points or Iec104Points()
        self.interval_s = interval_s
        self.signal = signal
        self.time_tagged = time_tagged
        self.command_timeout_s = command_timeout_s
        self.log = structlog.get_logger("vpp.simulators.iec104_master")
        self._lock = threading.Lock()
        self._readings: dict[str, Reading] = {}
        self._by_cause: Counter[str] = Counter()
        self._acks: list[Ack] = []
        self._names = {getattr(self.points, name): name for name in (*MEASURED, "remote_control_accepted")}
        self._client: c104.Client | None = None
        self._connection: c104.Connection | None = None
        self._command: c104.Point | None = None
        self._agc_task: asyncio.Task | None = None
        self._link_task: asyncio.Task | None = None
        self._refused = threading.Event()  # a negative reply to the command in flight arrived
        self.refusals = 0
        """Negative replies to set-points seen in the raw traffic, late ones included [unitless]."""
        self.interrogations_sent = 0
        """General interrogations sent on (re)connection so far [unitless]."""

    # -- lifecycle -------------------------------------------------------------

    async def start(self, connect_timeout_s: float = 10.0) -> None:
        """Connect (c104 reconnects by itself when the link drops) and start the AGC loop if a signal is set."""
        if self._client is not None:
            raise RuntimeError("iec104 master: start called twice")
        await asyncio.to_thread(self._open)
        self._link_task = asyncio.create_task(self._supervise(), name="iec104-master-link")
        await self.wait_connected(connect_timeout_s)
        if self.signal is not None:
            self._agc_task = asyncio.create_task(self._agc_loop(), name="iec104-master-agc")

    async def stop(self) -> None:
        """Stop the AGC loop and disconnect; safe to call twice."""
        for task in (self._agc_task, self._link_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._agc_task = self._link_task = None
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.stop)

    def _open(self) -> None:
        client = c104.Client(tick_rate_ms=_TICK_RATE_MS, command_timeout_ms=int(self.command_timeout_s * 1000))
        connection = client.add_connection(ip=self.host, port=self.port, init=c104.Init.MUTED)
        if connection is None:
            raise RuntimeError(f"iec104 master: cannot add connection to {self.host}:{self.port}")
        station = connection.add_station(common_address=self.common_address)
        measured_type = c104.Type.M_ME_TF_1 if self.time_tagged else c104.Type.M_ME_NC_1
        single_type = c104.Type.M_SP_TB_1 if self.time_tagged else c104.Type.M_SP_NA_1
        command_type = c104.Type.C_SE_TC_1 if self.time_tagged else c104.Type.C_SE_NC_1
        for ioa, name in self._names.items():
            point = station.add_point(io_address=ioa, type=single_type if name == "remote_control_accepted" else measured_type)
            point.on_receive(callable=self._on_value)
        self._command = station.add_point(io_address=self.points.agc_setpoint_kw, type=command_type)
        connection.on_receive_raw(callable=self._on_raw)
        client.start()
        self._client, self._connection = client, connection

    @property
    def connected(self) -> bool:
        """True while the connection is open and transferring data (STARTDT confirmed)."""
        return self._connection is not None and self._connection.state == c104.ConnectionState.OPEN

    async def _supervise(self) -> None:
        """Unmute every new connection, then send it one general interrogation (c104 reconnects by itself).

        The interrogation is sent without waiting for its confirmation: its
        values arrive as they come (cause INTERROGATED_BY_STATION), and a
        confirmation c104 fails to match would otherwise hold a thread for the
        whole command timeout.
        """
        assert self._connection is not None
        connection, interrogation_due = self._connection, True
        while True:
            state = connection.state
            try:
                if state == c104.ConnectionState.OPEN_MUTED:
                    interrogation_due = True
                    await asyncio.to_thread(connection.unmute)
                elif state == c104.ConnectionState.OPEN and interrogation_due:
                    interrogation_due = not await asyncio.to_thread(
                        connection.interrogation, common_address=self.common_address, wait_for_response=False
                    )
                    self.interrogations_sent += 0 if interrogation_due else 1
                elif state != c104.ConnectionState.OPEN:
                    interrogation_due = True
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round tries again
                self.log.exception("iec104 master link step failed")
            await asyncio.sleep(0.05)

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Wait until the connection transfers data; raises ``TimeoutError`` after ``timeout_s`` [s]."""
        async with asyncio.timeout(timeout_s):
            while not self.connected:
                await asyncio.sleep(0.02)

    async def disconnect(self) -> None:
        """Close the connection (the outstation sees the master go away)."""
        if self._connection is not None:
            await asyncio.to_thread(self._connection.disconnect)

    async def connect(self, timeout_s: float = 10.0) -> None:
        """Reopen the connection after :meth:`disconnect`; a general interrogation follows."""
        if self._connection is None:
            raise RuntimeError("iec104 master: connect before start")
        await asyncio.to_thread(self._connection.connect)
        await self.wait_connected(timeout_s)

    # -- reading ---------------------------------------------------------------------

    async def interrogate(self) -> bool:
        """General interrogation of the station; True when the outstation confirmed it."""
        if self._connection is None:
            raise RuntimeError("iec104 master: interrogate before start")
        return await asyncio.to_thread(self._connection.interrogation, common_address=self.common_address)

    def readings(self) -> dict[str, Reading]:
        """Latest reading per point name (an ``Iec104Points`` field)."""
        with self._lock:
            return dict(self._readings)

    def received(self, cause: str) -> int:
        """Values received with this cause of transmission so far, e.g. ``"PERIODIC"`` [unitless]."""
        with self._lock:
            return self._by_cause[cause]

    def clear_readings(self) -> None:
        """Forget every reading (to see which arrive next)."""
        with self._lock:
            self._readings.clear()

    async def wait_for(self, predicate: Callable[[Mapping[str, Reading]], bool], timeout_s: float = 10.0) -> dict[str, Reading]:
        """Wait until ``predicate(readings)`` holds; returns the readings. Raises ``TimeoutError`` [s]."""
        async with asyncio.timeout(timeout_s):
            while not predicate(readings := self.readings()):
                await asyncio.sleep(0.02)
        return readings

    def _on_value(self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage) -> c104.ResponseState:
        """c104 thread: record one received monitoring value."""
        name = self._names.get(point.io_address)
        if name is not None:
            info = point.info
            recorded_at = info.recorded_at.replace(tzinfo=timezone.utc) if info.recorded_at is not None else None
            value = bool(info.value) if name == "remote_control_accepted" else float(info.value)
            reading = Reading(value, bool(info.quality.is_good()), message.cot.name, recorded_at, datetime.now(timezone.utc))
            with self._lock:
                self._readings[name] = reading
                self._by_cause[reading.cot] += 1
        return c104.ResponseState.NONE

    # -- set-points --------------------------------------------------------------------

    @property
    def acks(self) -> list[Ack]:
        """Every set-point sent so far and its confirmation, oldest first."""
        with self._lock:
            return list(self._acks)

    async def send_setpoint(self, target_kw: float) -> Ack:
        """Send one AGC set-point and wait for its confirmation (or the command timeout)."""
        sent_at = datetime.now(timezone.utc)
        accepted = await asyncio.to_thread(self._transmit, float(target_kw), sent_at)
        ack = Ack(float(target_kw), accepted, sent_at)
        with self._lock:
            self._acks.append(ack)
        self.log.info("agc set-point sent", target_kw=target_kw, accepted=accepted)
        return ack

    def _transmit(self, target_kw: float, sent_at: datetime) -> bool:
        if self._command is None:
            raise RuntimeError("iec104 master: send_setpoint before start")
        self._command.info = c104.ShortCmd(target=target_kw, recorded_at=sent_at if self.time_tagged else None)
        self._refused.clear()
        confirmed = self._command.transmit(cause=c104.Cot.ACTIVATION)
        return confirmed and not self._refused.is_set()

    def _on_raw(self, connection: c104.Connection, data: bytes) -> None:
        """c104 thread: note a negative reply to the set-point command."""
        if self._command is not None and _is_refusal(data, self._command.type.value, self.points.agc_setpoint_kw):
            with self._lock:
                self.refusals += 1
            self._refused.set()

    async def _agc_loop(self) -> None:
        """Every ``interval_s`` (wall time, as a real dispatch centre runs): next target from the signal, sent."""
        assert self.signal is not None
        while True:
            try:
                target_kw = self.signal(self.readings())
                if target_kw is not None and math.isfinite(target_kw) and self.connected:
                    await self.send_setpoint(target_kw)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad signal value must not stop the loop
                self.log.exception("agc round failed")
            await asyncio.sleep(self.interval_s)
