"""The OpenADR 2.0b VEN against openleadr's own VTN on loopback, with TLS and signed messages.

The plant behind the VEN is the real ``PlantService`` on SQLite with the
simulated park (tests.vpp.harness). Its manual clock stands at the next
weekday noon after the wall clock, so the events' windows lie ahead in
openleadr's (wall-clock) eyes as well as in the plant's.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import ipaddress
import math
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from openleadr.messaging import parse_message

from adapters.base import GridLink
from adapters.openadr import (
    REPORT_R_IDS,
    MalformedEvent,
    OpenAdrSettings,
    OpenAdrVen,
    RequestedInterval,
    _backoff_s,
    _EnvelopeRow,
    _instruction_id,
    _instructions,
    _opt_decision,
    _parse_event,
    _report_values,
    certificate_fingerprint,
)
from simulators.openadr_vtn import GridOperatorVtn
from tests.vpp.harness import make_plant
from vpp.clock import ManualClock
from vpp.model import DispatchInstruction, DispatchStatus

# openleadr 0.5.36's OpenADRServer stores itself under a string key of its aiohttp app
# (server.py: self.app['server'] = self); aiohttp 3.9+ warns about that. The VEN side
# (OpenADRClient) emits no warning; test_openleadr_imports_without_warnings checks the imports.
pytestmark = pytest.mark.filterwarnings(
    "ignore:It is recommended to use web.AppKey instances for keys:aiohttp.web_exceptions.NotAppKeyWarning"
)

REPO = Path(__file__).resolve().parents[2]
FAST = OpenAdrSettings(
    request_timeout_s=3.0,
    registration_timeout_s=10.0,
    link_timeout_s=3.0,
    watch_interval_s=0.2,
    backoff_initial_s=0.2,
    backoff_max_s=1.0,
    simple_level_kw=(100.0, 200.0, 300.0),
)
QUARTER = timedelta(minutes=15)

# An oadrDistributeEvent as openleadr's VTN sends it (unsigned), captured and indented:
# event evt-42, modification 1, 30 min from 04:30 UTC, a SIMPLE signal (levels 1, 2) and a
# LOAD_DISPATCH delta signal (-400 kW, -250 kW) with intervals that carry no dtstart.
CAPTURED_DISTRIBUTE_EVENT = """\
<oadr:oadrPayload xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07">
 <oadr:oadrSignedObject xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07" oadr:Id="oadrSignedObject">
  <oadr:oadrDistributeEvent xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110" ei:schemaVersion="2.0b">
   <ei:eiResponse>
    <ei:responseCode>200</ei:responseCode>
    <ei:responseDescription>OK</ei:responseDescription>
    <requestID xmlns="http://docs.oasis-open.org/ns/energyinterop/201110/payloads">req-1</requestID>
   </ei:eiResponse>
   <requestID xmlns="http://docs.oasis-open.org/ns/energyinterop/201110/payloads">req-1</requestID>
   <ei:vtnID>GRID-VTN</ei:vtnID>
   <oadr:oadrEvent>
    <ei:eiEvent>
     <ei:eventDescriptor>
      <ei:eventID>evt-42</ei:eventID>
      <ei:modificationNumber>1</ei:modificationNumber>
      <ei:modificationDateTime>2026-11-26T01:00:00.000000Z</ei:modificationDateTime>
      <ei:priority>0</ei:priority>
      <ei:eiMarketContext>
       <marketContext xmlns="http://docs.oasis-open.org/ns/emix/2011/06">http://grid.example/dr</marketContext>
      </ei:eiMarketContext>
      <ei:createdDateTime>2026-11-26T01:00:00.000000Z</ei:createdDateTime>
      <ei:eventStatus>far</ei:eventStatus>
      <ei:testEvent>false</ei:testEvent>
     </ei:eventDescriptor>
     <ei:eiActivePeriod>
      <properties xmlns="urn:ietf:params:xml:ns:icalendar-2.0">
       <dtstart>
        <date-time>2026-11-27T04:30:00.000000Z</date-time>
       </dtstart>
       <duration>
        <duration>PT30M</duration>
       </duration>
      </properties>
      <components xmlns="urn:ietf:params:xml:ns:icalendar-2.0"/>
     </ei:eiActivePeriod>
     <ei:eiEventSignals>
      <ei:eiEventSignal>
       <strm:intervals xmlns:strm="urn:ietf:params:xml:ns:icalendar-2.0:stream" xmlns:xcal="urn:ietf:params:xml:ns:icalendar-2.0">
        <ei:interval>
         <xcal:duration>
          <xcal:duration>PT15M</xcal:duration>
         </xcal:duration>
         <uid xmlns="urn:ietf:params:xml:ns:icalendar-2.0">
          <text>0</text>
         </uid>
         <ei:signalPayload>
          <ei:payloadFloat>
           <ei:value>1.0</ei:value>
          </ei:payloadFloat>
         </ei:signalPayload>
        </ei:interval>
        <ei:interval>
         <xcal:duration>
          <xcal:duration>PT15M</xcal:duration>
         </xcal:duration>
         <uid xmlns="urn:ietf:params:xml:ns:icalendar-2.0">
          <text>1</text>
         </uid>
         <ei:signalPayload>
          <ei:payloadFloat>
           <ei:value>2.0</ei:value>
          </ei:payloadFloat>
         </ei:signalPayload>
        </ei:interval>
       </strm:intervals>
       <ei:signalName>SIMPLE</ei:signalName>
       <ei:signalType>level</ei:signalType>
       <ei:signalID>sig-simple</ei:signalID>
       <ei:currentValue>
        <ei:payloadFloat>
         <ei:value>0</ei:value>
        </ei:payloadFloat>
       </ei:currentValue>
      </ei:eiEventSignal>
      <ei:eiEventSignal>
       <strm:intervals xmlns:strm="urn:ietf:params:xml:ns:icalendar-2.0:stream" xmlns:xcal="urn:ietf:params:xml:ns:icalendar-2.0">
        <ei:interval>
         <xcal:duration>
          <xcal:duration>PT15M</xcal:duration>
         </xcal:duration>
         <uid xmlns="urn:ietf:params:xml:ns:icalendar-2.0">
          <text>0</text>
         </uid>
         <ei:signalPayload>
          <ei:payloadFloat>
           <ei:value>-400.0</ei:value>
          </ei:payloadFloat>
         </ei:signalPayload>
        </ei:interval>
        <ei:interval>
         <xcal:duration>
          <xcal:duration>PT15M</xcal:duration>
         </xcal:duration>
         <uid xmlns="urn:ietf:params:xml:ns:icalendar-2.0">
          <text>1</text>
         </uid>
         <ei:signalPayload>
          <ei:payloadFloat>
           <ei:value>-250.0</ei:value>
          </ei:payloadFloat>
         </ei:signalPayload>
        </ei:interval>
       </strm:intervals>
       <ei:signalName>LOAD_DISPATCH</ei:signalName>
       <ei:signalType>delta</ei:signalType>
       <ei:signalID>sig-dispatch</ei:signalID>
       <power:powerReal xmlns:scale="http://docs.oasis-open.org/ns/emix/2011/06/siscale" xmlns:power="http://docs.oasis-open.org/ns/emix/2011/06/power">
        <power:itemDescription>RealPower</power:itemDescription>
        <power:itemUnits>W</power:itemUnits>
        <scale:siScaleCode>k</scale:siScaleCode>
        <power:powerAttributes>
         <power:hertz>50</power:hertz>
         <power:voltage>230</power:voltage>
         <power:ac>true</power:ac>
        </power:powerAttributes>
       </power:powerReal>
      </ei:eiEventSignal>
     </ei:eiEventSignals>
     <ei:eiTarget>
      <ei:venID>ven-park</ei:venID>
     </ei:eiTarget>
    </ei:eiEvent>
    <oadr:oadrResponseRequired>always</oadr:oadrResponseRequired>
   </oadr:oadrEvent>
  </oadr:oadrDistributeEvent>
 </oadr:oadrSignedObject>
</oadr:oadrPayload>
"""


def _captured_event() -> dict:
    message_type, payload = parse_message(CAPTURED_DISTRIBUTE_EVENT)
    assert message_type == "oadrDistributeEvent"
    return payload["events"][0]


# ----------------------------------------------------------------- pure parts ----


def test_openleadr_imports_without_warnings():
    code = "import openleadr, openleadr.client, openleadr.server, adapters.openadr, simulators.openadr_vtn"
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr


def test_the_captured_event_reads_as_load_dispatch_in_the_generator_convention():
    request = _parse_event(_captured_event(), simple_level_kw=(100.0, 200.0, 300.0))
    start = datetime(2026, 11, 27, 4, 30, tzinfo=timezone.utc)
    assert (request.event_id, request.modification_number, request.status) == ("evt-42", 1, "far")
    assert request.signal == "LOAD_DISPATCH/delta", "the kW signal wins over the SIMPLE level"
    assert request.intervals == (
        RequestedInterval(0, start, start + QUARTER, 400.0),  # consumption -400 kW = reduce park load 400 kW
        RequestedInterval(1, start + QUARTER, start + 2 * QUARTER, 250.0),
    )
    assert request.unsupported is None


def test_simple_levels_map_to_the_programme_kw_and_need_configuring():
    event = _captured_event()
    event["event_signals"] = [s for s in event["event_signals"] if s["signal_name"] == "SIMPLE"]
    request = _parse_event(event, simple_level_kw=(100.0, 200.0, 300.0))
    assert request.signal == "SIMPLE/level"
    assert [iv.delta_kw for iv in request.intervals] == [100.0, 200.0]
    unconfigured = _parse_event(event, simple_level_kw=None)
    assert unconfigured.intervals == () and "SIMPLE" in unconfigured.unsupported


def test_capacity_signal_in_watts_is_a_load_reduction_in_kw():
    event = _captured_event()
    dispatch = next(s for s in event["event_signals"] if s["signal_name"] == "LOAD_DISPATCH")
    dispatch["signal_type"] = "x-loadControlCapacity"
    dispatch["powerReal"]["si_scale_code"] = "none"  # W (openleadr leaves this itemBase un-renamed)
    for interval, watts in zip(dispatch["intervals"], (300_000.0, 0.0)):
        interval["signal_payload"] = watts
    request = _parse_event(event, simple_level_kw=None)
    assert [(iv.index, iv.delta_kw) for iv in request.intervals] == [(0, 300.0)], "a zero interval asks nothing"


def test_an_event_without_a_dispatchable_signal_is_unsupported_not_malformed():
    event = _captured_event()
    for signal in event["event_signals"]:
        signal["signal_name"], signal["signal_type"] = "ELECTRICITY_PRICE", "price"
        signal.pop("powerReal", None)
    request = _parse_event(event, simple_level_kw=(1.0, 2.0, 3.0))
    assert request.intervals == () and "ELECTRICITY_PRICE/price" in request.unsupported


def test_a_cancelled_event_asks_nothing():
    event = _captured_event()
    event["event_descriptor"]["event_status"] = "cancelled"
    request = _parse_event(event, simple_level_kw=None)
    assert request.status == "cancelled" and request.intervals == ()


def _break(event: dict, how: str) -> None:
    dispatch = next(s for s in event["event_signals"] if s["signal_name"] == "LOAD_DISPATCH")
    if how == "level":
        event["event_signals"] = [s for s in event["event_signals"] if s["signal_name"] == "SIMPLE"]
        event["event_signals"][0]["intervals"][0]["signal_payload"] = 7.0
    elif how == "nan":
        dispatch["intervals"][1]["signal_payload"] = math.nan
    elif how == "no_signals":
        event["event_signals"] = []
    elif how == "zero_duration":
        dispatch["intervals"][0]["duration"] = timedelta(0)
    elif how == "negative_capacity":
        dispatch["signal_type"] = "x-loadControlCapacity"
        dispatch["intervals"][0]["signal_payload"] = -5.0
    elif how == "energy":
        dispatch["energyReal"] = dict(dispatch.pop("powerReal"), item_units="Wh")
    elif how == "no_active_period":
        del event["active_period"]
    elif how == "naive_start":
        event["active_period"]["dtstart"] = event["active_period"]["dtstart"].replace(tzinfo=None)


@pytest.mark.parametrize(
    ("how", "named"),
    [
        ("level", "SIMPLE level 7"),
        ("nan", "intervals[1].signal_payload nan"),
        ("no_signals", "event_signals"),
        ("zero_duration", "intervals[0].duration"),
        ("negative_capacity", "negative"),
        ("energy", "'energyReal'"),
        ("no_active_period", "active_period is missing"),
        ("naive_start", "has no timezone"),
    ],
)
def test_malformed_events_are_refused_naming_the_field(how, named):
    event = copy.deepcopy(_captured_event())
    _break(event, how)
    with pytest.raises(MalformedEvent) as info:
        _parse_event(event, simple_level_kw=(100.0, 200.0, 300.0))
    assert named in str(info.value)


def test_instruction_ids_are_deterministic_valid_and_distinct():
    assert _instruction_id("oadr", "evt-42", 1, 0) == "oadr-evt-42-m0001-i000"
    assert _instruction_id("oadr", "evt-42", 1, 0) != _instruction_id("oadr", "evt-42", 2, 0)
    assert _instruction_id("oadr", "evt-42", 1, 0) != _instruction_id("oadr", "evt-42", 1, 1)
    odd = "event id/with spaces & " + "x" * 80
    hashed = _instruction_id("oadr", odd, 3, 2)
    assert hashed == _instruction_id("oadr", odd, 3, 2) and hashed.endswith("-m0003-i002")
    assert hashed != _instruction_id("oadr", odd + "y", 3, 2)
    request = _parse_event(_captured_event(), simple_level_kw=None)
    request = dataclasses.replace(request, event_id=odd)
    for instruction in _instructions(request, "oadr"):
        assert isinstance(instruction, DispatchInstruction) and len(instruction.id) <= 64
        assert instruction.kind == "delta" and instruction.source == "openadr"


NOW = datetime(2026, 11, 26, 4, 5, tzinfo=timezone.utc)
ROWS = [
    _EnvelopeRow(NOW.replace(minute=15) + k * QUARTER, NOW.replace(minute=15) + (k + 1) * QUARTER, up, down)
    for k, (up, down) in enumerate([(500.0, 900.0), (300.0, 800.0), (450.0, 700.0)])
]  # 04:15 .. 05:00


def _iv(start: datetime, end: datetime, delta_kw: float, index: int = 0) -> RequestedInterval:
    return RequestedInterval(index, start, end, delta_kw)


def test_opt_rule_uses_live_capability_now_and_the_envelope_later():
    running = _iv(NOW - timedelta(minutes=5), NOW + timedelta(minutes=10), 200.0)  # ends at 04:15
    assert _opt_decision([running], NOW, 250.0, 0.0, ROWS, 1.0)[0]
    assert not _opt_decision([running], NOW, 150.0, 0.0, ROWS, 1.0)[0], "live up 150 kW < 200 kW"
    later = _iv(ROWS[0].start, ROWS[2].end, 300.0)  # least envelope up over 04:15..05:00 is 300 kW
    assert _opt_decision([later], NOW, 0.0, 0.0, ROWS, 1.0)[0]
    ok, reason = _opt_decision([later.__class__(0, later.start, later.end, 301.0)], NOW, 1e6, 1e6, ROWS, 1.0)
    assert not ok and "offers 300.0 kW" in reason
    spanning = _iv(NOW, ROWS[0].end, 400.0)  # the running quarter (live) and 04:15..04:30 (500 kW)
    assert not _opt_decision([spanning], NOW, 350.0, 0.0, ROWS, 1.0)[0]
    assert _opt_decision([spanning], NOW, 450.0, 0.0, ROWS, 1.0)[0]


def test_opt_rule_checks_direction_horizon_coverage_and_the_past():
    increase = _iv(ROWS[1].start, ROWS[2].end, -700.0)  # load increase: down capability 800, 700
    assert _opt_decision([increase], NOW, 0.0, 0.0, ROWS, 1.0)[0]
    assert not _opt_decision([_iv(ROWS[1].start, ROWS[2].end, -750.0)], NOW, 0.0, 0.0, ROWS, 1.0)[0]
    beyond = _iv(ROWS[2].start, ROWS[2].end + QUARTER, 10.0)
    ok, reason = _opt_decision([beyond], NOW, 1e6, 1e6, ROWS, 1.0)
    assert not ok and "beyond the plant envelope" in reason
    assert _opt_decision([_iv(ROWS[1].start, ROWS[1].end, 330.0)], NOW, 0.0, 0.0, ROWS, 0.9)[0], "90 % coverage suffices"
    over = _iv(NOW - timedelta(hours=1), NOW - timedelta(minutes=30), 10.0)
    assert _opt_decision([over], NOW, 1e6, 1e6, ROWS, 1.0) == (False, "every interval is already over")
    both = [_iv(ROWS[0].start, ROWS[0].end, 100.0, 0), _iv(ROWS[1].start, ROWS[1].end, 350.0, 1)]
    ok, reason = _opt_decision(both, NOW, 0.0, 0.0, ROWS, 1.0)
    assert not ok and reason.startswith("interval 1"), "one uncovered interval opts the whole event out"


def test_backoff_doubles_up_to_its_cap():
    assert [_backoff_s(n, 1.0, 10.0) for n in range(7)] == [1.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_report_values_use_openadr_usage_sign_for_net_load():
    values = _report_values({"net_kw": 1200.5, "available_up_kw": 300.0, "available_down_kw": 4000.25})
    assert values == {"net_load_kw": -1200.5, "available_up_kw": 300.0, "available_down_kw": 4000.25}
    assert tuple(values) == REPORT_R_IDS


def test_constructor_refuses_half_configured_signing(tmp_path):
    with pytest.raises(ValueError, match="cert_path and key_path"):
        OpenAdrVen("https://127.0.0.1:1/x", "park", ManualClock(NOW), cert_path=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="ca_path is required"):
        OpenAdrVen("https://127.0.0.1:1/x", "park", ManualClock(NOW), cert_path=tmp_path / "c.pem", key_path=tmp_path / "k.pem")
    with pytest.raises(ValueError, match="simple_level_kw"):
        OpenAdrSettings(simple_level_kw=(1.0, -2.0, 3.0))


# ------------------------------------------------------------ on loopback ----


@dataclass(frozen=True)
class Certs:
    vtn_cert: Path
    vtn_key: Path
    ven_cert: Path
    ven_key: Path
    intruder_cert: Path
    intruder_key: Path
    ven_trust: Path  # what the VTN's TLS accepts as client certificates: the park's and the intruder's

    @property
    def vtn_fingerprint(self) -> str:
        return certificate_fingerprint(self.vtn_cert)

    @property
    def ven_fingerprint(self) -> str:
        return certificate_fingerprint(self.ven_cert)


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1 that is its own trust anchor."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def certs(tmp_path) -> Certs:
    directory = tmp_path / "pki"
    directory.mkdir()
    vtn = _self_signed(directory, "vtn")
    ven = _self_signed(directory, "ven")
    intruder = _self_signed(directory, "intruder")
    trust = directory / "ven-trust.pem"
    trust.write_bytes(ven[0].read_bytes() + intruder[0].read_bytes())
    return Certs(*vtn, *ven, *intruder, trust)


def _next_weekday_noon(after: datetime) -> datetime:
    """The first 04:00 UTC (12:00 in Shanghai) on a weekday at least an hour after ``after``."""
    candidate = (after + timedelta(hours=1)).replace(hour=4, minute=0, second=0, microsecond=0)
    while candidate < after + timedelta(hours=1) or candidate.weekday() >= 5:
        candidate += timedelta(days=1)
    return candidate


@pytest.fixture
async def plant(tmp_path):
    plant = await make_plant(tmp_path, start=_next_weekday_noon(datetime.now(timezone.utc)))
    yield plant
    await plant.service.stop()
    await plant.store.close()


@pytest.fixture
async def vtn(certs):
    vtn = GridOperatorVtn(
        cert_path=certs.vtn_cert,
        key_path=certs.vtn_key,
        ca_path=certs.ven_trust,
        ven_fingerprints={"park": certs.ven_fingerprint},
        poll_interval_s=1.0,
        report_interval_s=2.0,
    )
    await vtn.start()
    yield vtn
    await vtn.stop()


@pytest.fixture
async def make_ven(vtn, certs, plant):
    started: list[OpenAdrVen] = []

    async def make(cert: Path | None = None, key: Path | None = None, vtn_fingerprint: str | None = None) -> OpenAdrVen:
        ven = OpenAdrVen(
            vtn.url,
            "park",
            plant.clock,
            cert_path=cert or certs.ven_cert,
            key_path=key or certs.ven_key,
            ca_path=certs.vtn_cert,
            vtn_fingerprint=vtn_fingerprint or certs.vtn_fingerprint,
            report_interval_s=2.0,
            settings=FAST,
        )
        started.append(ven)
        await ven.start(plant.service)
        return ven

    yield make
    for ven in started:
        await ven.stop()


@pytest.fixture
async def ven(make_ven, vtn):
    ven = await make_ven()
    await _until(lambda: ven.registered, "the VEN to register")
    return ven


async def _until(predicate, what: str, timeout_s: float = 30.0) -> None:
    """Wait for a condition of the loopback exchange; fails naming it when it never comes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _window(plant, quarters_ahead: int, quarters: int) -> tuple[datetime, datetime]:
    """A quarter-aligned window starting ``quarters_ahead`` quarter hours after the plant's next one."""
    now = plant.clock.now()
    first = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0) + QUARTER
    start = first + quarters_ahead * QUARTER
    return start, start + quarters * QUARTER


def _least_up_kw(plant, start: datetime, end: datetime) -> float:
    rows = plant.service.envelope(6)
    return min(r["up_kw"] for r in rows if datetime.fromisoformat(r["start"]) < end and datetime.fromisoformat(r["end"]) > start)


async def _instructions_of(plant) -> dict[str, tuple[DispatchInstruction, object]]:
    return {i.id: (i, s) for i, s in await plant.store.list_instructions()}


def test_the_ven_is_a_grid_link():
    ven = OpenAdrVen("http://127.0.0.1:1/x", "park", ManualClock(NOW))
    assert isinstance(ven, GridLink) and ven.name == "openadr" and not ven.running


async def test_a_feasible_event_is_opted_in_and_becomes_one_instruction_per_interval(plant, vtn, ven, certs):
    registration = vtn.registrations[-1]
    assert registration.fingerprint == certs.ven_fingerprint, "the VTN saw the VEN's certificate"
    start, end = _window(plant, 1, 2)
    kw = round(0.4 * _least_up_kw(plant, start, end), 1)
    assert kw > 50, "the simulated park offers load reduction at noon"
    event_id = await vtn.push_event(registration.ven_id, start, end, [kw, kw / 2])
    await _until(lambda: vtn.opts_for(event_id), "the VEN's answer")
    assert vtn.opts_for(event_id) == ["optIn"]
    stored = await _instructions_of(plant)
    assert sorted(stored) == [f"oadr-{event_id}-m0000-i000", f"oadr-{event_id}-m0000-i001"]
    first, state = stored[f"oadr-{event_id}-m0000-i000"]
    second, _ = stored[f"oadr-{event_id}-m0000-i001"]
    assert (first.kind, first.start, first.end, first.delta_kw, first.source) == ("delta", start, start + QUARTER, kw, "openadr")
    assert (second.start, second.end, second.delta_kw) == (start + QUARTER, end, round(kw / 2, 3))
    assert state.status is DispatchStatus.PENDING


async def test_an_event_beyond_the_plant_is_opted_out_and_stores_nothing(plant, vtn, ven):
    start, end = _window(plant, 1, 1)
    kw = 10 * plant.service.plant()["available_up_kw"] + 1000
    event_id = await vtn.push_event(vtn.registrations[-1].ven_id, start, end, kw)
    await _until(lambda: vtn.opts_for(event_id), "the VEN's answer")
    assert vtn.opts_for(event_id) == ["optOut"]
    assert await plant.store.list_instructions() == []
    assert ven.decisions[-1][2] == "optOut" and "the plant offers" in ven.decisions[-1][3]


async def test_load_increase_and_simple_events_use_their_own_capability(plant, vtn, ven):
    ven_id = vtn.registrations[-1].ven_id
    start, end = _window(plant, 2, 1)
    down_kw = min(r["down_kw"] for r in plant.service.envelope(6) if datetime.fromisoformat(r["start"]) == start)
    increase = await vtn.push_event(ven_id, start, end, -0.5 * down_kw)  # a negative reduction: take more power
    simple = await vtn.push_event(ven_id, *_window(plant, 3, 1), 2, signal="simple")  # level 2 = 200 kW (FAST)
    await _until(lambda: vtn.opts_for(increase) and vtn.opts_for(simple), "both answers")
    assert vtn.opts_for(increase) == ["optIn"] and vtn.opts_for(simple) == ["optIn"]
    stored = await _instructions_of(plant)
    assert stored[f"oadr-{increase}-m0000-i000"][0].delta_kw == pytest.approx(-0.5 * down_kw, abs=1e-3)
    assert stored[f"oadr-{simple}-m0000-i000"][0].delta_kw == 200.0


async def test_the_same_event_again_changes_nothing(plant, vtn, ven, make_ven):
    ven_id = vtn.registrations[-1].ven_id
    start, end = _window(plant, 1, 1)
    kw = round(0.3 * _least_up_kw(plant, start, end), 1)
    event_id = await vtn.push_event(ven_id, start, end, kw)
    await _until(lambda: vtn.opts_for(event_id), "the first answer")
    before = await _instructions_of(plant)
    assert len(before) == 1

    vtn.redistribute(ven_id)  # the VTN repeats itself: openleadr answers from memory
    await _until(lambda: len(vtn.opts_for(event_id)) == 2, "the answer to the repeated event")
    await ven.stop()  # a new VEN process knows nothing but the store
    again = await make_ven()
    await _until(lambda: len(vtn.opts_for(event_id)) == 3, "the restarted VEN's answer")
    assert vtn.opts_for(event_id) == ["optIn", "optIn", "optIn"]
    assert again.decisions[-1][2:] == ("optIn", "accepted before")
    assert await _instructions_of(plant) == before


async def test_reports_arrive_with_the_plant_figures(plant, vtn, ven):
    def count(r_id: str) -> int:
        return sum(1 for r in vtn.reports if r.r_id == r_id)

    await _until(lambda: all(count(r_id) >= 2 for r_id in REPORT_R_IDS), "two reports of each data point")
    totals = plant.service.plant()
    latest = {r.r_id: r for r in vtn.reports}
    assert {r.report_specifier_id for r in vtn.reports} == {"park-telemetry"}
    assert latest["net_load_kw"].value == pytest.approx(-totals["net_kw"], abs=1e-3)
    assert latest["available_up_kw"].value == pytest.approx(totals["available_up_kw"], abs=1e-3)
    assert latest["available_down_kw"].value == pytest.approx(totals["available_down_kw"], abs=1e-3)
    assert latest["available_up_kw"].value > 0 and latest["available_down_kw"].value > 0
    assert all(r.ts == plant.clock.now() for r in vtn.reports), "stamped with the plant's clock"


async def test_the_ven_registers_again_after_the_vtn_restarts(plant, vtn, ven):
    # A restart the VEN does not notice in time: the new VTN does not know it and asks it to re-register.
    seen = len(vtn.registrations)
    await vtn.stop()
    await vtn.start()
    await _until(lambda: len(vtn.registrations) > seen and ven.registered, "re-registration after a quick restart")

    # A VTN down for longer than the link timeout: the VEN gives up the link and retries with backoff.
    seen, failures = len(vtn.registrations), ven.registration_failures
    await vtn.stop()
    await _until(lambda: not ven.registered, "the VEN noticing the VTN is gone")
    await _until(lambda: ven.registration_failures >= failures + 2, "failed registration attempts")
    assert ven.running, "the VEN keeps trying"
    await vtn.start()
    await _until(lambda: len(vtn.registrations) > seen and ven.registered, "re-registration after a long outage")
    assert ven.registrations >= 3

    start, end = _window(plant, 1, 1)
    event_id = await vtn.push_event(vtn.registrations[-1].ven_id, start, end, round(0.2 * _least_up_kw(plant, start, end), 1))
    await _until(lambda: vtn.opts_for(event_id), "an answer from the re-registered VEN")
    assert vtn.opts_for(event_id) == ["optIn"]
    assert f"oadr-{event_id}-m0000-i000" in await _instructions_of(plant)


async def test_malformed_events_and_payloads_are_counted_and_survived(plant, vtn, ven):
    ven_id = vtn.registrations[-1].ven_id
    # openleadr's VTN refuses to send an out-of-range SIMPLE level, but not a negative capacity.
    bad = await vtn.push_event(ven_id, *_window(plant, 1, 1), -50.0, signal="capacity")
    await _until(lambda: vtn.opts_for(bad), "the answer to a negative-capacity event")
    assert vtn.opts_for(bad) == ["optOut"]
    assert ven.malformed_frames == 1
    assert "x-loadControlCapacity -50.0 is negative" in ven.decisions[-1][3]

    vtn.corrupt_next_polls(1)
    await _until(lambda: ven.malformed_frames == 2, "the truncated poll answer to be counted")

    start, end = _window(plant, 2, 1)
    good = await vtn.push_event(ven_id, start, end, round(0.2 * _least_up_kw(plant, start, end), 1))
    await _until(lambda: vtn.opts_for(good), "the answer to a good event after the bad ones")
    assert vtn.opts_for(good) == ["optIn"] and ven.registered
    assert ven.malformed_frames == 2
    assert list(await _instructions_of(plant)) == [f"oadr-{good}-m0000-i000"]


async def test_a_cancelled_event_cancels_its_instructions(plant, vtn, ven):
    ven_id = vtn.registrations[-1].ven_id
    start, end = _window(plant, 1, 1)
    event_id = await vtn.push_event(ven_id, start, end, round(0.2 * _least_up_kw(plant, start, end), 1))
    await _until(lambda: vtn.opts_for(event_id), "the answer")
    vtn.cancel_event(ven_id, event_id)
    await _until(lambda: len(vtn.opts_for(event_id)) == 2, "the acknowledgement of the cancellation")
    assert vtn.opts_for(event_id) == ["optIn", "optIn"]
    assert ven.decisions[-1][:2] == (event_id, 1) and "1 instructions cancelled" in ven.decisions[-1][3]
    _, state = (await _instructions_of(plant))[f"oadr-{event_id}-m0000-i000"]
    assert state.status is DispatchStatus.CANCELLED and "cancelled by the VTN" in state.message


async def test_a_vtn_signing_with_an_unexpected_certificate_is_not_trusted(make_ven, vtn, certs):
    ven = await make_ven(vtn_fingerprint=certs.ven_fingerprint)  # expects the wrong VTN certificate
    await _until(lambda: ven.registration_failures >= 2, "failed registrations")
    assert not ven.registered and ven.registrations == 0
    assert ven.malformed_frames >= 2, "every VTN answer is dropped and counted"


async def test_a_ven_with_an_unknown_certificate_is_refused(make_ven, vtn, certs):
    ven = await make_ven(cert=certs.intruder_cert, key=certs.intruder_key)
    await _until(lambda: len(vtn.rejected) >= 2, "refused registrations")
    assert vtn.rejected[0] == ("park", certificate_fingerprint(certs.intruder_cert))
    assert vtn.registrations == [] and not ven.registered
