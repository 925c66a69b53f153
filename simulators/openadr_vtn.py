"""The grid operator's OpenADR 2.0b VTN, built on openleadr's ``OpenADRServer``.

It accepts VENs (checking their certificate fingerprint when signing is on),
pushes demand-response events, and records what comes back: registrations,
opt responses and report values. ``stop`` and ``start`` again on the same port
behave like a restarted VTN process: every registration and event is
forgotten, so VENs must register again.

openleadr keeps some handler state on its ``VTNService`` class, so run one
VTN per process at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from aiohttp import web
from openleadr import OpenADRServer, objects, utils

__all__ = ["GridOperatorVtn", "OptResponse", "ReceivedReport", "Registration"]

PATH_PREFIX = "/OpenADR2/Simple/2.0b"


@dataclass(frozen=True)
class Registration:
    """A VEN the VTN accepted."""

    ven_id: str
    ven_name: str
    registration_id: str
    fingerprint: str | None  # of the VEN's TLS client certificate; None over plain HTTP


@dataclass(frozen=True)
class OptResponse:
    """A VEN's answer to an event."""

    ven_id: str
    event_id: str
    opt_type: str  # "optIn" or "optOut"


@dataclass(frozen=True)
class ReceivedReport:
    """One reported value (openleadr's report handler does not name the VEN; the specifier does)."""

    report_specifier_id: str
    r_id: str
    ts: datetime
    value: float  # in the report's unit, kW for the park's telemetry [kW]


class GridOperatorVtn:
    """An OpenADR VTN on loopback for tests and demos.

    With ``cert_path``, ``key_path`` and ``ca_path`` it serves HTTPS, requires a
    client certificate trusted by ``ca_path`` and signs its messages; openleadr
    then checks each VEN message's signature and TLS certificate against the
    fingerprint given for the VEN in ``ven_fingerprints`` (by VEN name).
    """

    def __init__(
        self,
        vtn_id: str = "GRID-VTN",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_path: str | Path | None = None,
        key_path: str | Path | None = None,
        ca_path: str | Path | None = None,
        ven_fingerprints: Mapping[str, str] | None = None,
        poll_interval_s: float = 10.0,
        report_interval_s: float = 10.0,
    ) -> None:
        """
        Parameters
        ----------
        vtn_id : the VTN's identity in every message.
        host : loopback address to listen on.
        port : TCP port; 0 takes a free one at the first start and keeps it for restarts.
        cert_path, key_path : PEM certificate and key: TLS server identity and message signing.
        ca_path : PEM bundle of the client certificates VENs may present.
        ven_fingerprints : VEN name -> fingerprint it must present; None accepts any VEN.
        poll_interval_s : poll period the VTN asks of VENs [s].
        report_interval_s : report granularity the VTN requests [s].
        """
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"host '{host}': the simulated VTN listens on loopback only")
        if len({cert_path is None, key_path is None, ca_path is None}) != 1:
            raise ValueError("cert_path, key_path and ca_path go together: all three for TLS and signing, or none")
        self.vtn_id = vtn_id
        self.host = host
        self.port = port
        self.cert_path, self.key_path, self.ca_path = cert_path, key_path, ca_path
        self.ven_fingerprints = dict(ven_fingerprints) if ven_fingerprints is not None else None
        self.poll_interval = timedelta(seconds=poll_interval_s)
        self.report_interval = timedelta(seconds=report_interval_s)
        self.registrations: list[Registration] = []
        """Every accepted registration since construction (kept across restarts), oldest first."""
        self.rejected: list[tuple[str, str | None]] = []
        """(VEN name, fingerprint) of every refused registration."""
        self.opt_responses: list[OptResponse] = []
        self.reports: list[ReceivedReport] = []
        self._vens: dict[str, dict] = {}  # ven_id -> ven_lookup record, of the running server only
        self._server: OpenADRServer | None = None
        self._corrupt_polls = 0

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL VENs use."""
        scheme = "https" if self.cert_path else "http"
        return f"{scheme}://{self.host}:{self.port}{PATH_PREFIX}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Start a fresh VTN (no registrations, no events) on ``port``."""
        if self._server is not None:
            return
        self._vens = {}
        self._corrupt_polls = 0
        tls = self.cert_path is not None
        server = OpenADRServer(
            vtn_id=self.vtn_id,
            cert=str(self.cert_path) if tls else None,
            key=str(self.key_path) if tls else None,
            http_cert=str(self.cert_path) if tls else None,
            http_key=str(self.key_path) if tls else None,
            http_ca_file=str(self.ca_path) if tls else None,
            http_host=self.host,
            http_port=self.port,
            http_path_prefix=PATH_PREFIX,
            requested_poll_freq=self.poll_interval,
            ven_lookup=self._ven_lookup,
            show_fingerprint=False,
            show_server_cert_domain=False,
        )
        server.add_handler("on_create_party_registration", self._on_create_party_registration)
        server.add_handler("on_register_report", self._on_register_report)
        server.app.middlewares.append(self._corrupting_middleware)
        await server.run()
        if self.port == 0:
            self.port = server.app_runner.addresses[0][1]
        self._server = server

    async def stop(self) -> None:
        """Stop serving; registrations and events are forgotten. Safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    # -- VENs ----------------------------------------------------------------------

    def ven_id_of(self, ven_name: str) -> str:
        """venID this VTN gives the VEN of that name."""
        return f"ven-{ven_name}"

    def _on_create_party_registration(self, payload: dict):
        ven_name = payload.get("ven_name") or ""
        fingerprint = payload.get("fingerprint")
        if self.ven_fingerprints is not None and self.ven_fingerprints.get(ven_name) != fingerprint:
            self.rejected.append((ven_name, fingerprint))
            return False
        ven_id, registration_id = self.ven_id_of(ven_name), uuid.uuid4().hex
        self._vens[ven_id] = {"ven_id": ven_id, "ven_name": ven_name, "fingerprint": fingerprint, "registration_id": registration_id}
        self.registrations.append(Registration(ven_id, ven_name, registration_id, fingerprint))
        return ven_id, registration_id

    def _ven_lookup(self, ven_id: str) -> dict | None:
        return self._vens.get(ven_id)

    # -- reports -------------------------------------------------------------------

    def _on_register_report(self, report: dict) -> list[tuple]:
        """Request every offered data point at ``report_interval``."""
        specifier = report["report_specifier_id"]
        return [
            (rd["r_id"], partial(self._record_values, specifier, rd["r_id"]), self.report_interval)
            for rd in report.get("report_descriptions", [])
        ]

    def _record_values(self, specifier: str, r_id: str, values: Sequence[tuple[datetime, float]]) -> None:
        self.reports.extend(ReceivedReport(specifier, r_id, ts, float(value)) for ts, value in values)

    # -- events --------------------------------------------------------------------

    async def push_event(
        self,
        ven_id: str,
        start: datetime,
        end: datetime,
        kw: float | Sequence[float],
        *,
        signal: str = "delta",
        event_id: str | None = None,
    ) -> str:
        """Queue an event for a VEN; it goes out at the VEN's next poll. Returns the event id.

        Parameters
        ----------
        ven_id : the VEN it is for.
        start : start of the active period (timezone-aware).
        end : its end; the window is split into ``len(kw)`` equal intervals.
        kw : load reduction asked per interval, + = shed [kW]; SIMPLE levels for ``signal="simple"`` [unitless].
        signal : ``"delta"`` (LOAD_DISPATCH delta, payload = change of consumption = -kw, in kW),
            ``"capacity"`` (LOAD_DISPATCH x-loadControlCapacity, payload = kw, in kW) or ``"simple"`` (SIMPLE level).
        event_id : the id to use; a random one by default.
        """
        values = [float(kw)] if isinstance(kw, (int, float)) else [float(v) for v in kw]
        if not values or end <= start or start.tzinfo is None:
            raise ValueError(f"event window {start}..{end} with {len(values)} intervals is not a usable event")
        step = (end - start) / len(values)
        if signal == "simple":
            name, kind, payloads, measurement = "SIMPLE", "level", values, None
        elif signal in ("delta", "capacity"):
            name = "LOAD_DISPATCH"
            kind = "delta" if signal == "delta" else "x-loadControlCapacity"
            payloads = [-v if signal == "delta" else v for v in values]
            measurement = objects.Measurement(name="powerReal", description="RealPower", unit="W", scale="k",
                                              power_attributes=objects.PowerAttributes())
        else:
            raise ValueError(f"signal '{signal}' is not delta, capacity or simple")
        intervals = [objects.Interval(dtstart=start + k * step, duration=step, signal_payload=p) for k, p in enumerate(payloads)]
        event_id = event_id or uuid.uuid4().hex
        event = objects.Event(
            event_descriptor=objects.EventDescriptor(event_id=event_id, modification_number=0,
                                                     market_context="http://grid.example/dr", event_status="far"),
            active_period=objects.ActivePeriod(dtstart=start, duration=end - start),
            event_signals=[objects.EventSignal(intervals=intervals, signal_name=name, signal_type=kind,
                                               signal_id=uuid.uuid4().hex, measurement=measurement)],
            targets=[objects.Target(ven_id=ven_id)],
            response_required="always",
        )
        self._require_server().add_raw_event(ven_id=ven_id, event=event, callback=self._record_opt)
        return event_id

    def cancel_event(self, ven_id: str, event_id: str) -> None:
        """Cancel an event (modification number + 1); the VEN's acknowledgement is recorded."""
        self._require_server().cancel_event(ven_id, event_id)

    def redistribute(self, ven_id: str) -> None:
        """Send the VEN every event it has again at its next poll (a VTN repeating itself)."""
        self._require_server().events_updated[ven_id] = True

    def corrupt_next_polls(self, count: int = 1) -> None:
        """Answer the next ``count`` polls with a truncated, unparseable XML payload."""
        self._corrupt_polls += count

    def opts_for(self, event_id: str) -> list[str]:
        """Opt types received for an event, oldest first."""
        return [r.opt_type for r in self.opt_responses if r.event_id == event_id]

    def _record_opt(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.opt_responses.append(OptResponse(ven_id, event_id, opt_type))
        # openleadr forgets an event's callback after the first answer; keep hearing the later ones.
        server = self._server
        if server is not None:
            event = utils.find_by(server.events.get(ven_id, []), "event_descriptor.event_id", event_id)
            if event is not None:
                server.event_callbacks[event_id] = (event, self._record_opt)

    def _require_server(self) -> OpenADRServer:
        if self._server is None:
            raise RuntimeError("the VTN is not running; call start() first")
        return self._server

    @web.middleware
    async def _corrupting_middleware(self, request: web.Request, handler) -> web.StreamResponse:
        response = await handler(request)
        if self._corrupt_polls > 0 and request.path.endswith("/OadrPoll"):
            self._corrupt_polls -= 1
            return web.Response(text="<oadrPayload xmlns='http://openadr.org/oadr-2.0b/2012/07'><oadrSignedObject>",
                                content_type="application/xml")
        return response
