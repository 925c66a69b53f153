"""`vpp serve --demo --protocols`: the demo park over real sockets (Modbus/SunSpec, OCPP, MQTT, IEC 104).

The service runs in a subprocess; the grid dispatches it over REST and over
IEC 104 (a real c104 master), and the metrics show telemetry arriving over
each device protocol.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest

from simulators.iec104_master import Iec104Master
from tests.test_end_to_end import _get, _parse_banner, _read_banner, _stop

SPEED = 10.0


@pytest.fixture
def protocol_demo(tmp_path):
    prefix = f"vpp-e2e-{uuid.uuid4().hex[:8]}"  # the shared broker may carry other runs' topics
    process = subprocess.Popen(
        [sys.executable, "-m", "vpp.cli", "serve", "--demo", "--protocols", "--port", "0", "--iec104-port", "0",
         "--mqtt-prefix", prefix, "--data-dir", str(tmp_path), "--speed", str(SPEED), "--enterprises", "6"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        banner = _read_banner(process)
    except BaseException:
        process.kill()
        process.wait()
        process.stdout.close()
        raise
    try:
        yield banner, process
    finally:
        _stop(process)


def _samples_by_adapter(metrics_text: str) -> dict[str, float]:
    return {
        adapter: float(value)
        for adapter, value in re.findall(r'^vpp_telemetry_samples_total\{adapter="(\w+)"\} (\S+)$', metrics_text, re.M)
    }


async def test_the_demo_park_runs_over_real_protocols_and_the_grid_dispatches_it(protocol_demo):
    banner, _ = protocol_demo
    url, tokens, _ = _parse_banner(banner)
    assert "modbus:" in banner and "ocpp:" in banner and "mqtt:" in banner
    iec104_port = int(re.search(r"IEC 104 outstation on 127\.0\.0\.1:(\d+)", banner).group(1))
    async with aiohttp.ClientSession() as session:
        for _ in range(300):  # every device reporting over its protocol, up to 30 wall seconds
            _, plant = await _get(session, f"{url}/api/v1/plant", tokens["grid"])
            async with session.get(f"{url}/metrics") as response:
                samples = _samples_by_adapter(await response.text())
            if plant["devices_online"] == plant["devices_enrolled"] and all(samples.get(a, 0) > 0 for a in ("modbus", "ocpp", "mqtt")):
                break
            await asyncio.sleep(0.1)
        assert plant["devices_online"] == plant["devices_enrolled"] > 0, plant
        assert all(samples.get(a, 0) > 0 for a in ("modbus", "ocpp", "mqtt")), samples

        up_kw = next(s["up_kw"] for s in plant["sustained"] if s["duration_min"] == 15)
        delta_kw = round(0.4 * up_kw, 1)
        now = datetime.now(timezone.utc)
        instruction = {"id": "proto-1", "kind": "delta", "start": now.isoformat(),
                       "end": (now + timedelta(minutes=10)).isoformat(), "delta_kw": delta_kw}
        async with session.post(f"{url}/api/v1/dispatch", json=instruction,
                                headers={"Authorization": f"Bearer {tokens['grid']}"}) as response:
            assert response.status == 201
        delivered = None
        for _ in range(300):  # up to 30 wall seconds = 5 simulated minutes
            await asyncio.sleep(0.1)
            _, view = await _get(session, f"{url}/api/v1/dispatch/proto-1", tokens["grid"])
            delivered = view["state"]["delivered_kw"]
            if delivered is not None and abs(delivered - delta_kw) <= 0.1 * delta_kw:
                break
        assert delivered == pytest.approx(delta_kw, rel=0.1), f"fleet moved {delivered} of {delta_kw} kW over the wires"

        # The dispatch centre over IEC 104: reads the plant and sets an AGC target the service takes on.
        master = Iec104Master(port=iec104_port, command_timeout_s=10.0)
        await master.start()
        try:
            readings = await master.wait_for(lambda r: "net_kw" in r and "available_up_kw" in r, timeout_s=20.0)
            _, plant = await _get(session, f"{url}/api/v1/plant", tokens["grid"])
            assert readings["available_up_kw"].value > 0
            target_kw = round(float(readings["net_kw"].value) + 0.2 * float(readings["available_up_kw"].value), 1)
            ack = await master.send_setpoint(target_kw)
            assert ack.accepted
        finally:
            await master.stop()
        _, listing = await _get(session, f"{url}/api/v1/dispatch", tokens["grid"])
        agc = [i for i in listing["instructions"] if i["instruction"]["id"].startswith("iec104-")]
        assert agc and agc[-1]["instruction"]["target_kw"] == pytest.approx(target_kw, abs=0.01)


# openleadr's VTN server (the utility's side, built in this test process) stores itself under a string key of
# its aiohttp app; aiohttp warns about that. The service's VEN side emits no warning.
@pytest.mark.filterwarnings(
    "ignore:It is recommended to use web.AppKey instances for keys:aiohttp.web_exceptions.NotAppKeyWarning"
)
async def test_serve_registers_with_a_utility_vtn_and_accepts_its_event(tmp_path):
    from simulators.openadr_vtn import GridOperatorVtn

    vtn = GridOperatorVtn(poll_interval_s=1.0, report_interval_s=2.0)
    await vtn.start()
    process = subprocess.Popen(
        [sys.executable, "-m", "vpp.cli", "serve", "--demo", "--port", "0", "--data-dir", str(tmp_path),
         "--enterprises", "6", "--openadr-vtn", vtn.url, "--openadr-ven-name", "park"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        banner = _read_banner(process)
        assert f"OpenADR VEN of {vtn.url}" in banner
        url, tokens, _ = _parse_banner(banner)
        for _ in range(300):  # registration, up to 30 s
            if vtn.registrations:
                break
            await asyncio.sleep(0.1)
        assert vtn.registrations, "the service's VEN registered with the VTN"
        async with aiohttp.ClientSession() as session:
            _, plant = await _get(session, f"{url}/api/v1/plant", tokens["grid"])
            start = datetime.now(timezone.utc) + timedelta(minutes=2)
            kw = round(0.1 * plant["available_up_kw"], 1)
            event_id = await vtn.push_event(vtn.registrations[-1].ven_id, start, start + timedelta(minutes=15), kw)
            for _ in range(300):  # the VEN's next poll, up to 30 s
                if vtn.opts_for(event_id):
                    break
                await asyncio.sleep(0.1)
            assert set(vtn.opts_for(event_id)) == {"optIn"}  # answered (a re-sent event is answered again)
            _, listing = await _get(session, f"{url}/api/v1/dispatch", tokens["grid"])
        events = [i["instruction"] for i in listing["instructions"] if event_id in i["instruction"]["id"]]
        assert len(events) == 1 and events[0]["delta_kw"] == pytest.approx(kw)
    finally:
        _stop(process)
        await vtn.stop()
