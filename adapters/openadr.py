"""OpenADR 2.0b VEN: the park as a virtual end node of the grid operator's VTN (openleadr).

The VEN registers with the VTN, polls it, and for every demand-response
event it receives:

1. parses the event (``_parse_event``, pure) into requested intervals, each a
   change of the park's net power in kW (generator convention: ``+`` = reduce
   park load);
2. decides to opt in or out (``_opt_decision``, pure): in when the plant's
   capability covers every interval, out otherwise;
3. on opt-in stores one ``DispatchInstruction`` per interval through the
   :class:`~adapters.base.PlantPort` *before* the opt goes back to the VTN;
   the instruction id is derived from event id, modification number and
   interval index, so a re-sent event changes nothing.

It also offers one TELEMETRY_USAGE report (net load, available up, available
down, kW) that the VTN may request at any granularity the VEN offers.

openleadr builds, signs and parses every message; this module adds what the
service needs around it: a supervisor that registers with backoff and
re-registers with a fresh client when the link is lost or the VTN asks for it,
a timeout on every request, and a count of dropped payloads
(:meth:`~adapters.base.GridLink.note_malformed`). See docs/protocols/openadr.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import math
import re
import ssl
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from types import MappingProxyType

import aiohttp
import structlog
from openleadr import OpenADRClient, enums, objects
from openleadr.messaging import (
    parse_message,
    validate_xml_schema,
    validate_xml_signature,
)
from openleadr.utils import certificate_fingerprint as _openleadr_fingerprint

from adapters.base import GridLink, PlantPort
from vpp.clock import Clock
from vpp.errors import NotFound
from vpp.model import DispatchInstruction, DispatchStatus, InstructionKind

__all__ = [
    "EventRequest",
    "MalformedEvent",
    "OpenAdrSettings",
    "OpenAdrVen",
    "RequestedInterval",
    "REPORT_R_IDS",
    "certificate_fingerprint",
]

SOURCE = "openadr"  # DispatchInstruction.source of everything this VEN submits
OPT_IN, OPT_OUT = enums.OPT.OPT_IN, enums.OPT.OPT_OUT
REPORT_R_IDS = ("net_load_kw", "available_up_kw", "available_down_kw")
"""r_ids of the TELEMETRY_USAGE report, in the order they are registered."""

# SI scale codes of an EMIX itemBase, as a factor to kW (a signal in W with scale "k" is kW).
_SCALE_TO_KW = MappingProxyType({
    "p": 1e-15, "n": 1e-12, "micro": 1e-9, "m": 1e-6, "c": 1e-5, "d": 1e-4,
    "none": 1e-3, "k": 1.0, "M": 1e3, "G": 1e6, "T": 1e9,
})
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")  # vpp.model.Identifier's pattern
_ID_MAX_LEN = 64


@dataclass(frozen=True)
class OpenAdrSettings:
    """Timing and programme rules of the VEN."""

    request_timeout_s: float = 10.0  # longest wait for one VTN answer [s]
    registration_timeout_s: float = 30.0  # longest registration handshake (query, register, reports, first poll) [s]
    link_timeout_s: float = 60.0  # no good VTN answer for this long (or 3 poll periods, if longer) = link lost [s]
    watch_interval_s: float = 1.0  # how often the link is checked [s]
    backoff_initial_s: float = 1.0  # wait after the first failed registration; doubles per failure [s]
    backoff_max_s: float = 60.0  # longest wait between registration attempts [s]
    # Load reduction the programme attaches to SIMPLE levels 1, 2, 3; None = SIMPLE-only events are opted out [kW].
    simple_level_kw: tuple[float, float, float] | None = None
    min_coverage: float = 1.0  # opt in when capability >= min_coverage x requested, in every interval [unitless]
    envelope_max_hours: float = 48.0  # events ending later than this are opted out (no forecast that far) [h]
    instruction_prefix: str = "oadr"  # first part of every instruction id
    check_hostname: bool = True  # TLS: the VTN certificate must name the host of vtn_url

    def __post_init__(self) -> None:
        if not 0 < self.min_coverage <= 10:
            raise ValueError(f"min_coverage {self.min_coverage} must be in (0, 10]")
        if self.simple_level_kw is not None and (
            len(self.simple_level_kw) != 3 or any(not math.isfinite(v) or v < 0 for v in self.simple_level_kw)
        ):
            raise ValueError(f"simple_level_kw {self.simple_level_kw} must be three finite kW values >= 0 (levels 1, 2, 3)")
        if not _IDENTIFIER.match(self.instruction_prefix) or len(self.instruction_prefix) > 16:
            raise ValueError(f"instruction_prefix '{self.instruction_prefix}' must be an identifier of at most 16 characters")
        for name in ("request_timeout_s", "registration_timeout_s", "link_timeout_s", "watch_interval_s", "backoff_initial_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} {getattr(self, name)} must be positive")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"backoff_max_s {self.backoff_max_s} is below backoff_initial_s {self.backoff_initial_s}")


class MalformedEvent(ValueError):
    """An event that breaks OpenADR or this programme's rules; the message names the field and value."""


@dataclass(frozen=True)
class RequestedInterval:
    """One interval of an event as the park reads it."""

    index: int  # position among the signal's intervals [unitless]
    start: datetime
    end: datetime
    delta_kw: float  # change of the park's net power asked for, + = reduce park load [kW]


@dataclass(frozen=True)
class EventRequest:
    """What an event asks of the park."""

    event_id: str
    modification_number: int
    status: str  # OpenADR event status: far, near, active, completed, cancelled
    signal: str  # the signal read, "NAME/type"; "" when none
    intervals: tuple[RequestedInterval, ...]  # intervals asking for a non-zero change
    unsupported: str | None = None  # why a well-formed event is nothing this park can act on


# ------------------------------------------------------------------ parsing ----

# Dispatchable signals, most specific first: a 2.0b event usually carries SIMPLE as well (2.0a compatibility).
_SIGNAL_PREFERENCE = (
    ("LOAD_DISPATCH", "delta"),
    ("LOAD_DISPATCH", "x-loadControlCapacity"),
    ("LOAD_CONTROL", "x-loadControlCapacity"),
    ("SIMPLE", "level"),
    ("simple", "level"),
)


def _parse_event(event: Mapping, simple_level_kw: Sequence[float] | None) -> EventRequest:
    """Read an openleadr event dict (as handed to ``on_event``) into an :class:`EventRequest`.

    Parameters
    ----------
    event : the event as openleadr parsed it.
    simple_level_kw : load reduction of SIMPLE levels 1, 2, 3, or None when not configured [kW].

    Returns
    -------
    The request; ``unsupported`` says why a well-formed event cannot be acted on.
    Raises :class:`MalformedEvent` naming the field and value that make the event unusable.
    """
    event_id, modification, status = _parse_descriptor(event)
    if status == enums.EVENT_STATUS.CANCELLED:
        return EventRequest(event_id, modification, status, "", ())
    active = _field(event, "active_period", Mapping)
    dtstart = _aware(_field(active, "dtstart", datetime, "active_period."), "active_period.dtstart")
    duration = _field(active, "duration", timedelta, "active_period.")
    signals = event.get("event_signals")
    if isinstance(signals, Mapping):  # openleadr nests them one level deeper in some messages
        signals = signals.get("event_signals")
    if not isinstance(signals, list) or not signals:
        raise MalformedEvent(f"event_signals {signals!r} holds no signal")
    if duration.total_seconds() < 0:
        raise MalformedEvent(f"active_period.duration {duration} is negative")
    if duration.total_seconds() == 0:
        return EventRequest(event_id, modification, status, "", (), "open-ended event (active_period.duration 0)")
    signal = _select_signal(signals)
    if signal is None:
        names = sorted({f"{s.get('signal_name')}/{s.get('signal_type')}" for s in signals if isinstance(s, Mapping)})
        return EventRequest(event_id, modification, status, "", (), f"no dispatchable signal (got {', '.join(names)})")
    name, kind = signal["signal_name"], signal["signal_type"]
    if kind == "level" and simple_level_kw is None:
        return EventRequest(event_id, modification, status, f"{name}/{kind}", (), "SIMPLE levels have no kW configured")
    to_kw = 1.0 if kind == "level" else _kw_factor(_signal_measurement(signal))
    intervals = []
    for index, (start, end, payload) in enumerate(_signal_intervals(signal, dtstart)):
        delta_kw = _delta_kw(name, kind, payload, to_kw, simple_level_kw, index)
        if delta_kw != 0.0:
            intervals.append(RequestedInterval(index, start, end, delta_kw))
    return EventRequest(event_id, modification, status, f"{name}/{kind}", tuple(intervals))


def _parse_descriptor(event: Mapping) -> tuple[str, int, str]:
    """(event id, modification number, status) of an event."""
    if not isinstance(event, Mapping):
        raise MalformedEvent(f"event is a {type(event).__name__}, not a mapping")
    descriptor = _field(event, "event_descriptor", Mapping)
    event_id = str(_field(descriptor, "event_id", (str, int), "event_descriptor."))
    if not event_id:
        raise MalformedEvent("event_descriptor.event_id is empty")
    modification = _field(descriptor, "modification_number", int, "event_descriptor.")
    if isinstance(modification, bool) or modification < 0:
        raise MalformedEvent(f"event_descriptor.modification_number {modification!r} is not a non-negative integer")
    return event_id, modification, str(descriptor.get("event_status") or "far")


def _field(mapping: Mapping, key: str, kind: type | tuple[type, ...], where: str = ""):
    """``mapping[key]`` checked for type; a missing or wrong field is a :class:`MalformedEvent` naming ``where + key``."""
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise MalformedEvent(f"{where}{key} is missing")
    value = mapping[key]
    if not isinstance(value, kind):
        names = "/".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
        raise MalformedEvent(f"{where}{key} {value!r} is not a {names}")
    return value


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise MalformedEvent(f"{name} {value.isoformat()} has no timezone")
    return value


def _select_signal(signals: Sequence) -> Mapping | None:
    """The most specific dispatchable signal of an event, or None."""
    by_kind = {
        (s.get("signal_name"), s.get("signal_type")): s for s in signals if isinstance(s, Mapping)
    }
    return next((by_kind[k] for k in _SIGNAL_PREFERENCE if k in by_kind), None)


def _signal_measurement(signal: Mapping) -> Mapping | None:
    """The signal's EMIX itemBase as ``{name, unit, scale}``, or None when it has none.

    openleadr 0.5.36 renames the itemBase to ``measurement`` only up to the
    first signal without one; later signals keep the raw element (e.g.
    ``powerReal`` with ``item_units`` and ``si_scale_code``), so both forms are read.
    """
    if "measurement" in signal:
        return signal["measurement"]
    for key, value in signal.items():
        if isinstance(value, Mapping) and "item_units" in value:
            return {"name": key, "unit": value.get("item_units"), "scale": value.get("si_scale_code")}
    return None


def _kw_factor(measurement: Mapping | None) -> float:
    """Factor from a signal's payload to kW; a signal without itemBase is in kW (programme agreement)."""
    if measurement is None:
        return 1.0
    if not isinstance(measurement, Mapping):
        raise MalformedEvent(f"event signal measurement {measurement!r} is not a mapping")
    name, unit, scale = measurement.get("name"), measurement.get("unit"), measurement.get("scale") or "none"
    if name != "powerReal" or unit != "W":
        raise MalformedEvent(f"event signal measurement {name!r} in {unit!r} is not real power in W")
    if scale not in _SCALE_TO_KW:
        raise MalformedEvent(f"event signal measurement scale {scale!r} is not an SI scale code")
    return _SCALE_TO_KW[scale]


def _signal_intervals(signal: Mapping, dtstart: datetime) -> list[tuple[datetime, datetime, float]]:
    """(start, end, payload) of each interval; an interval without dtstart follows the one before it."""
    intervals = signal.get("intervals")
    if not isinstance(intervals, list) or not intervals:
        raise MalformedEvent(f"signal {signal.get('signal_name')} intervals {intervals!r} holds no interval")
    out = []
    cursor = dtstart
    for index, interval in enumerate(intervals):
        if not isinstance(interval, Mapping):
            raise MalformedEvent(f"intervals[{index}] {interval!r} is not a mapping")
        start = interval.get("dtstart") or cursor
        if not isinstance(start, datetime):
            raise MalformedEvent(f"intervals[{index}].dtstart {start!r} is not a date-time")
        start = _aware(start, f"intervals[{index}].dtstart")
        duration = _field(interval, "duration", timedelta, f"intervals[{index}].")
        if duration.total_seconds() <= 0:
            raise MalformedEvent(f"intervals[{index}].duration {duration} is not positive")
        payload = interval.get("signal_payload")
        if isinstance(payload, bool) or not isinstance(payload, (int, float)) or not math.isfinite(payload):
            raise MalformedEvent(f"intervals[{index}].signal_payload {payload!r} is not a finite number")
        out.append((start, start + duration, float(payload)))
        cursor = start + duration
    return out


def _delta_kw(name: str, kind: str, payload: float, to_kw: float, simple_level_kw: Sequence[float] | None, index: int) -> float:
    """The change of park net power one interval asks for, + = reduce park load [kW]."""
    if kind == "level":
        if payload != int(payload) or not 0 <= payload <= 3:
            raise MalformedEvent(f"intervals[{index}] SIMPLE level {payload!r} is not 0, 1, 2 or 3")
        level = int(payload)
        return 0.0 if level == 0 else float(simple_level_kw[level - 1])  # type: ignore[index]
    if kind == "delta":
        # LOAD_DISPATCH delta is a change of consumption: -500 kW asks the park to shed 500 kW.
        return round(-payload * to_kw, 6) + 0.0
    if payload < 0:
        raise MalformedEvent(f"intervals[{index}] {name} x-loadControlCapacity {payload!r} is negative")
    return round(payload * to_kw, 6)


# ------------------------------------------------------------- instructions ----


def _instruction_id(prefix: str, event_id: str, modification_number: int, index: int) -> str:
    """Deterministic instruction id of one event interval (readable when the event id allows it)."""
    tail = f"-m{modification_number:04d}-i{index:03d}"
    readable = f"{prefix}-{event_id}{tail}"
    if _IDENTIFIER.match(event_id) and len(readable) <= _ID_MAX_LEN:
        return readable
    digest = hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:24]
    return f"{prefix}-{digest}{tail}"


def _instructions(request: EventRequest, prefix: str) -> list[DispatchInstruction]:
    """One delta instruction per requested interval."""
    return [
        DispatchInstruction(
            id=_instruction_id(prefix, request.event_id, request.modification_number, iv.index),
            kind=InstructionKind.DELTA,
            start=iv.start,
            end=iv.end,
            delta_kw=round(iv.delta_kw, 3),
            source=SOURCE,
        )
        for iv in request.intervals
    ]


# --------------------------------------------------------------- opt rule ----


@dataclass(frozen=True)
class _EnvelopeRow:
    start: datetime
    end: datetime
    up_kw: float  # [kW]
    down_kw: float  # [kW]


def _envelope_rows(rows: Sequence[Mapping]) -> list[_EnvelopeRow]:
    """PlantPort.envelope rows (ISO strings) as typed rows, in time order."""
    parsed = []
    for row in rows:
        start = row["start"] if isinstance(row["start"], datetime) else datetime.fromisoformat(row["start"])
        end = row["end"] if isinstance(row["end"], datetime) else datetime.fromisoformat(row["end"])
        parsed.append(_EnvelopeRow(start, end, float(row["up_kw"]), float(row["down_kw"])))
    return sorted(parsed, key=lambda r: r.start)


def _capability_kw(
    start: datetime, end: datetime, up: bool, now: datetime, live_kw: float, rows: Sequence[_EnvelopeRow]
) -> float | None:
    """Least capability over ``[start, end)`` in one direction; None when the window outruns the envelope.

    The running quarter hour (before the envelope's first row) counts with the
    live figure; later quarter hours with their envelope row.

    Parameters
    ----------
    start, end : the interval; a start in the past counts from ``now``.
    up : True for load reduction (up capability), False for load increase (down).
    now : the plant's time.
    live_kw : available now in that direction [kW].
    rows : the plant envelope, in time order.

    Returns
    -------
    The smallest capability over the window [kW], or None.
    """
    start = max(start, now)
    if not rows or end > rows[-1].end:
        return None
    caps = [live_kw] if start < rows[0].start else []
    caps += [(r.up_kw if up else r.down_kw) for r in rows if r.start < end and r.end > start]
    return min(caps) if caps else None


def _opt_decision(
    intervals: Sequence[RequestedInterval],
    now: datetime,
    live_up_kw: float,
    live_down_kw: float,
    rows: Sequence[_EnvelopeRow],
    min_coverage: float,
) -> tuple[bool, str]:
    """Opt in only when every interval still to come is covered by the plant's capability.

    An interval asking ``x`` kW of load reduction (``delta_kw > 0``) is covered
    when the least up-capability over its window is at least
    ``min_coverage * x``; a load increase likewise with down-capability.

    Parameters
    ----------
    intervals : the event's requested intervals.
    now : the plant's time.
    live_up_kw : available up now [kW].
    live_down_kw : available down now [kW].
    rows : the plant envelope, in time order.
    min_coverage : share of the request the capability must reach [unitless].

    Returns
    -------
    (opt in, reason).
    """
    coming = [iv for iv in intervals if iv.end > now]
    if intervals and not coming:
        return False, "every interval is already over"
    for iv in coming:
        up = iv.delta_kw > 0
        cap = _capability_kw(iv.start, iv.end, up, now, live_up_kw if up else live_down_kw, rows)
        direction = "up (load reduction)" if up else "down (load increase)"
        if cap is None:
            return False, f"interval {iv.index} ends {iv.end.isoformat()}, beyond the plant envelope"
        if cap + 1e-6 < min_coverage * abs(iv.delta_kw):
            return False, f"interval {iv.index} asks {abs(iv.delta_kw):.1f} kW {direction}; the plant offers {cap:.1f} kW"
    return True, "capability covers every interval"


def _envelope_hours(intervals: Sequence[RequestedInterval], now: datetime, max_hours: float) -> float:
    """Hours of envelope needed to see the last interval's end, at most ``max_hours`` [h]."""
    last_end = max(iv.end for iv in intervals)
    hours = (last_end - now).total_seconds() / 3600.0 + 0.25
    return min(max(0.25, math.ceil(hours * 4) / 4), max_hours)


def _report_values(totals: Mapping) -> dict[str, float]:
    """The report's data points from PlantPort.plant() totals [kW].

    ``net_load_kw`` follows OpenADR usage convention (+ = the fleet draws), the
    opposite of the plant's generator-convention ``net_kw``.
    """
    return {
        "net_load_kw": round(-float(totals["net_kw"]), 3) + 0.0,
        "available_up_kw": round(float(totals["available_up_kw"]), 3),
        "available_down_kw": round(float(totals["available_down_kw"]), 3),
    }


def _backoff_s(failures: int, initial_s: float, max_s: float) -> float:
    """Wait before the next registration attempt after ``failures`` failed ones in a row [s]."""
    if failures <= 0:
        return initial_s
    return min(max_s, initial_s * 2 ** min(failures - 1, 30))


def certificate_fingerprint(cert_path: str | Path) -> str:
    """OpenADR fingerprint of a PEM certificate file (what the other party must be told) [unitless]."""
    return _openleadr_fingerprint(Path(cert_path).read_text())


# ---------------------------------------------------------------- client ----


class _VenClient(OpenADRClient):
    """openleadr's client with a bounded, counted transport step.

    ``_perform_request`` is openleadr 0.5.36's single exit to the network; it
    is replaced so that every request has a timeout, every good answer marks
    the link alive, and every answer dropped for schema or signature reasons
    is counted. Messages are still built, signed, verified and parsed by
    openleadr. The client hooks (``add_hook``) are not run.
    """

    def __init__(self, *args, log, note_malformed, request_timeout_s: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._log = log
        self._note_malformed = note_malformed
        self._request_timeout_s = request_timeout_s
        self.last_ok: float | None = None  # loop time of the last good VTN answer [s]
        self.reregistration_requested = False

    async def _perform_request(self, service, message):
        await self._ensure_client_session()
        url = f"{self.vtn_url}/{service}"
        try:
            async with asyncio.timeout(self._request_timeout_s):
                async with self.client_session.post(url, data=message) as response:
                    content = await response.read()
                    status = response.status
        except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError) as exc:
            self._log.debug("VTN request failed", service=service, error=f"{type(exc).__name__}: {exc}")
            return None, {}
        if status != HTTPStatus.OK:
            body = content[:200].decode("utf-8", "replace")
            self._log.warning("VTN refused a request", service=service, status=status, body=body)
            return None, {}
        if not content:  # an acknowledgement without body
            self.last_ok = asyncio.get_running_loop().time()
            return None, {}
        try:
            tree = validate_xml_schema(content)
            if self.vtn_fingerprint:
                validate_xml_signature(tree, cert_fingerprint=self.vtn_fingerprint)
            parsed = parse_message(content)
        except Exception as exc:  # schema, signature, fingerprint or parse: the answer is unusable
            self._note_malformed(f"{service} answer", f"{type(exc).__name__}: {exc}")
            return None, {}
        # Only usable answers keep the link alive: a VTN answering garbage gets re-registered with backoff.
        self.last_ok = asyncio.get_running_loop().time()
        return parsed

    async def create_party_reregistration(self, registration_id=None):
        # OpenAdrVen re-registers with a fresh client, so no report job or queue of this one lingers.
        self.reregistration_requested = True


# ------------------------------------------------------------------- VEN ----


class OpenAdrVen(GridLink):
    """The park's OpenADR 2.0b VEN; ``start(plant)`` returns at once, registration runs in the background.

    Attributes
    ----------
    registrations : int
        Successful registrations since start (a re-registration counts again).
    registration_failures : int
        Failed registration attempts since start.
    decisions : deque
        Recent ``(event_id, modification_number, opt, reason)`` decisions, newest last.
    """

    name = "openadr"

    def __init__(
        self,
        vtn_url: str,
        ven_name: str,
        clock: Clock,
        *,
        cert_path: str | Path | None = None,
        key_path: str | Path | None = None,
        ca_path: str | Path | None = None,
        key_passphrase: str | None = None,
        vtn_fingerprint: str | None = None,
        report_interval_s: float = 10.0,
        settings: OpenAdrSettings | None = None,
    ) -> None:
        """
        Parameters
        ----------
        vtn_url : the VTN's base URL, e.g. ``https://vtn:8080/OpenADR2/Simple/2.0b``.
        ven_name : the name the VEN registers with.
        clock : time of the plant (report timestamps, what counts as "now" for events).
        cert_path : PEM certificate that signs messages and is the TLS client certificate.
        key_path : its private key (PEM).
        ca_path : PEM bundle the VTN's TLS certificate is checked against (required with a certificate).
        key_passphrase : passphrase of the key, if it is encrypted.
        vtn_fingerprint : the VTN certificate's OpenADR fingerprint; when set, unsigned or
            differently signed VTN messages are dropped (and counted as malformed).
        report_interval_s : shortest report granularity offered to the VTN [s].
        settings : timing and programme rules.
        """
        if (cert_path is None) != (key_path is None):
            raise ValueError("cert_path and key_path go together: give both to sign messages, or neither")
        if cert_path is not None and ca_path is None:
            raise ValueError("ca_path is required with cert_path: openleadr checks the VTN's TLS certificate against it")
        if not vtn_url.startswith(("http://", "https://")):
            raise ValueError(f"vtn_url '{vtn_url}' must start with http:// or https://")
        if not ven_name:
            raise ValueError("ven_name must not be empty")
        if not report_interval_s >= 1:
            raise ValueError(f"report_interval_s {report_interval_s} must be at least 1 s")
        self.vtn_url = vtn_url
        self.ven_name = ven_name
        self.clock = clock
        self.cert_path, self.key_path, self.ca_path = cert_path, key_path, ca_path
        self.key_passphrase = key_passphrase
        self.vtn_fingerprint = vtn_fingerprint
        self.report_interval_s = float(report_interval_s)
        self.settings = settings or OpenAdrSettings()
        self.registrations = 0
        self.registration_failures = 0
        self.decisions: deque[tuple[str, int, str, str]] = deque(maxlen=100)
        self._plant: PlantPort | None = None
        self._client: _VenClient | None = None
        self._registered = False
        self._task: asyncio.Task | None = None
        self._log = structlog.get_logger("vpp.adapters.openadr").bind(ven=ven_name)

    # -- lifecycle ---------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"OpenADR VEN of {self.vtn_url}"

    @property
    def registered(self) -> bool:
        """True while a registration is held and the link answers."""
        return self._registered

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``: the VEN registers, polls or waits to retry."""
        return self._task is not None and not self._task.done()

    @property
    def ven_id(self) -> str | None:
        """The venID the VTN assigned in the current registration."""
        return self._client.ven_id if self._client is not None and self._registered else None

    async def start(self, plant: PlantPort) -> None:
        """Start registering with the VTN in the background; grid events go to ``plant`` from now on."""
        if self._task is not None:
            return
        self._plant = plant
        if self.cert_path is not None:
            self._log.info("VEN certificate fingerprint (give it to the VTN)", fingerprint=certificate_fingerprint(self.cert_path))
        self._task = asyncio.create_task(self._supervise(), name=f"openadr-ven-{self.ven_name}")

    async def stop(self) -> None:
        """Stop polling and reporting, close the connection; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._close_client(self._client)
            self._client = None
        self._registered = False

    # -- supervision ---------------------------------------------------------------

    async def _supervise(self) -> None:
        """Register, watch the link, re-register with backoff; never returns until cancelled."""
        failures = 0
        while True:
            client = None
            try:
                client = self._client = self._new_client()
                if await self._register(client):
                    failures = 0
                    self.registrations += 1
                    self._registered = True
                    self._log.info("registered with VTN", ven_id=client.ven_id, registration_id=client.registration_id)
                    reason = await self._watch(client)
                    self._log.warning("VTN link lost; registering again", reason=reason)
                else:
                    failures += 1
                    self.registration_failures += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or a surprise from openleadr must not end the VEN
                failures += 1
                self.registration_failures += 1
                self._log.exception("VEN supervisor step failed")
            self._registered = False
            if client is not None:
                await self._close_client(client)
                self._client = None
            delay_s = _backoff_s(failures, self.settings.backoff_initial_s, self.settings.backoff_max_s)
            self._log.info("next registration attempt", in_s=delay_s, failures=failures)
            await asyncio.sleep(delay_s)  # network backoff runs on wall time, whatever the plant clock does

    def _new_client(self) -> _VenClient:
        client = _VenClient(
            ven_name=self.ven_name,
            vtn_url=self.vtn_url,
            cert=str(self.cert_path) if self.cert_path else None,
            key=str(self.key_path) if self.key_path else None,
            passphrase=self.key_passphrase,
            vtn_fingerprint=self.vtn_fingerprint,
            show_fingerprint=False,
            ca_file=str(self.ca_path) if self.ca_path else None,
            check_hostname=self.settings.check_hostname,
            log=self._log,
            note_malformed=self.note_malformed,
            request_timeout_s=self.settings.request_timeout_s,
        )
        client.add_handler("on_event", self._on_event)
        client.add_handler("on_update_event", self._on_event)
        interval = timedelta(seconds=self.report_interval_s)
        for r_id in REPORT_R_IDS:
            client.add_report(
                callback=lambda r_id=r_id: self._report_sample(r_id),
                resource_id=self.ven_name,
                measurement="power_real",
                unit="W",
                scale="k",  # values are kW
                report_specifier_id=f"{self.ven_name}-telemetry",
                r_id=r_id,
                report_name=enums.REPORT_NAME.TELEMETRY_USAGE,
                reading_type=enums.READING_TYPE.DIRECT_READ if r_id == "net_load_kw" else enums.READING_TYPE.DERIVED,
                report_duration=interval,
                sampling_rate=objects.SamplingRate(min_period=interval, max_period=max(interval, timedelta(hours=1)), on_change=False),
            )
        return client

    async def _register(self, client: _VenClient) -> bool:
        """openleadr's full registration (query, register, reports, event sync, polling), bounded in time."""
        try:
            async with asyncio.timeout(self.settings.registration_timeout_s):
                await client.run()
        except TimeoutError:
            self._log.warning("registration timed out", timeout_s=self.settings.registration_timeout_s)
            return False
        if client.registration_id is None or not client.scheduler.running:
            self._log.warning("registration refused or unanswered", vtn_url=self.vtn_url)
            return False
        return True

    async def _watch(self, client: _VenClient) -> str:
        """Wait until the link is lost; returns why."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.watch_interval_s)
            if client.reregistration_requested:
                return "VTN requested re-registration"
            if client.registration_id is None:
                return "VTN cancelled the registration"
            if not client.scheduler.running:
                return "openleadr client stopped"
            poll_s = client.poll_frequency.total_seconds() if client.poll_frequency else 0.0
            timeout_s = max(self.settings.link_timeout_s, 3 * poll_s)
            if client.last_ok is None or loop.time() - client.last_ok > timeout_s:
                return f"no answer from the VTN for {timeout_s:.0f} s"

    async def _close_client(self, client: _VenClient) -> None:
        """Shut the client's scheduler, report worker and HTTP session; never raises."""
        try:
            if client.scheduler.running:
                client.scheduler.shutdown(wait=False)
            if client.report_queue_task is not None:
                client.report_queue_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await client.report_queue_task
            if client.client_session is not None:
                await client.client_session.close()
            await asyncio.sleep(0)  # let cancelled poll and report jobs unwind
        except Exception:
            self._log.exception("closing the openleadr client failed")

    # -- events ----------------------------------------------------------------------

    async def _on_event(self, event: dict) -> str:
        """openleadr's on_event / on_update_event: decide, store instructions, answer optIn or optOut."""
        try:
            request = _parse_event(event, self.settings.simple_level_kw)
        except MalformedEvent as exc:
            self.note_malformed("event", exc)
            return self._decided(_event_key(event), OPT_OUT, f"malformed: {exc}")
        key = (request.event_id, request.modification_number)
        if request.status == enums.EVENT_STATUS.CANCELLED:
            try:
                cancelled = await self._cancel_event(request)
            except Exception as exc:  # the store is down: the VTN is told, the instructions stay
                self._log.exception("event cancellation failed", event_id=request.event_id)
                return self._decided(key, OPT_OUT, f"cancellation failed: {type(exc).__name__}: {exc}")
            return self._decided(key, OPT_IN, f"cancellation acknowledged ({cancelled} instructions cancelled)")
        if request.unsupported:
            return self._decided(key, OPT_OUT, request.unsupported)
        try:
            opt, reason = await self._decide_and_submit(request)
        except Exception as exc:  # e.g. the store is down: nothing was promised, so opt out
            self._log.exception("event handling failed", event_id=request.event_id)
            opt, reason = OPT_OUT, f"failed: {type(exc).__name__}: {exc}"
        return self._decided(key, opt, reason)

    async def _decide_and_submit(self, request: EventRequest) -> tuple[str, str]:
        plant = self._plant
        assert plant is not None, "start(plant) sets the plant before any client exists"
        if not request.intervals:
            return OPT_IN, "nothing asked (level 0 or zero change)"
        now = self.clock.now()
        instructions = [i for i in _instructions(request, self.settings.instruction_prefix) if i.end > now]
        if not instructions:
            return OPT_OUT, "every interval is already over"
        if await self._any_stored(plant, instructions):
            # Accepted before (a re-sent event, or a restart): the answer stays, nothing new is stored.
            for instruction in instructions:
                await plant.submit_instruction(instruction)
            return OPT_IN, "accepted before"
        totals = plant.plant()
        hours = _envelope_hours(request.intervals, now, self.settings.envelope_max_hours)
        rows = _envelope_rows(plant.envelope(hours))
        opt_in, reason = _opt_decision(
            request.intervals, now, float(totals["available_up_kw"]), float(totals["available_down_kw"]), rows, self.settings.min_coverage
        )
        if not opt_in:
            return OPT_OUT, reason
        for instruction in instructions:  # stored before the optIn goes out
            await plant.submit_instruction(instruction)
        return OPT_IN, reason

    async def _cancel_event(self, request: EventRequest) -> int:
        """Cancel every instruction stored for any modification of the event; returns how many were open.

        Ids are deterministic (:func:`_instruction_id`) and intervals numbered
        from 0, so each modification's instructions are found by probing until
        the first missing interval; nothing has to be remembered across restarts.
        """
        plant = self._plant
        assert plant is not None, "start(plant) sets the plant before any client exists"
        cancelled = 0
        for modification in range(request.modification_number + 1):
            for index in itertools.count():
                instruction_id = _instruction_id(self.settings.instruction_prefix, request.event_id, modification, index)
                try:
                    _, before = await plant.instruction_view(instruction_id)
                except NotFound:
                    break
                if before.status in (DispatchStatus.PENDING, DispatchStatus.ACTIVE):
                    await plant.cancel_instruction(instruction_id, f"OpenADR event {request.event_id} cancelled by the VTN")
                    cancelled += 1
        return cancelled

    @staticmethod
    async def _any_stored(plant: PlantPort, instructions: Sequence[DispatchInstruction]) -> bool:
        for instruction in instructions:
            try:
                await plant.instruction_view(instruction.id)
            except NotFound:
                continue
            return True
        return False

    def _decided(self, key: tuple[str, int], opt: str, reason: str) -> str:
        self.decisions.append((key[0], key[1], opt, reason))
        self._log.info("event answered", event_id=key[0], modification_number=key[1], opt=opt, reason=reason)
        return opt

    # -- reports -----------------------------------------------------------------------

    def _report_sample(self, r_id: str) -> list[tuple[datetime, float]]:
        """One report data point from the live plant, stamped with the plant clock [kW]."""
        assert self._plant is not None
        return [(self.clock.now(), _report_values(self._plant.plant())[r_id])]


def _event_key(event: object) -> tuple[str, int]:
    """(event id, modification number) of an event as far as they can be read, for logs."""
    try:
        descriptor = event["event_descriptor"]  # type: ignore[index]
        return str(descriptor.get("event_id", "?")), int(descriptor.get("modification_number", -1))
    except Exception:
        return "?", -1
