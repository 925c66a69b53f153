"""The whole plant as a user runs it: `vpp serve --demo` in a subprocess, driven over HTTP and the CLI."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest

SPEED = 20.0  # simulated seconds per wall second


@pytest.fixture
def demo(tmp_path):
    """A demo service on a free loopback port; yields (url, tokens) parsed from its banner."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vpp.cli", "serve", "--demo", "--port", "0", "--data-dir", str(tmp_path),
         "--speed", str(SPEED), "--enterprises", "8", "--control-interval", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        banner = _read_banner(process)
    except BaseException:
        process.kill()
        process.wait()
        process.stdout.close()
        raise
    url = re.search(r"listening on (http://\S+)", banner).group(1)
    tokens = dict(re.findall(r"^\s+(grid|admin|enterprise):\s+(vpp_\S+)", banner, re.M))
    enterprise_id = re.search(r"enterprise:\s+vpp_\S+\s+\((\S+)\)", banner).group(1)
    try:
        yield url, tokens, enterprise_id, tmp_path, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        process.stdout.close()


def _read_banner(process: subprocess.Popen) -> str:
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"service exited early with {process.poll()}: {''.join(lines)}")
        lines.append(line)
        if line.strip().startswith("vpp dispatch send"):
            return "".join(lines)
    raise AssertionError("no banner within 60 s")


async def _get(session, url, token):
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


async def test_grid_dispatches_the_demo_park_and_watches_it_deliver(demo):
    url, tokens, enterprise_id, _, _ = demo
    async with aiohttp.ClientSession() as session:
        for _ in range(50):  # wait for the first telemetry
            status, plant = await _get(session, f"{url}/api/v1/plant", tokens["grid"])
            if plant["devices_online"] > 0:
                break
            await asyncio.sleep(0.1)
        assert status == 200 and plant["devices_online"] > 0
        up_15 = next(s["up_kw"] for s in plant["sustained"] if s["duration_min"] == 15)
        delta_kw = round(0.5 * up_15, 1)
        assert delta_kw > 0
        now = datetime.now(timezone.utc)  # the scaled clock starts at wall time, so 'now' is already started
        instruction = {"id": "e2e-1", "kind": "delta", "start": now.isoformat(),
                       "end": (now + timedelta(minutes=10)).isoformat(), "delta_kw": delta_kw}
        async with session.post(f"{url}/api/v1/dispatch", json=instruction, headers={"Authorization": f"Bearer {tokens['grid']}"}) as r:
            assert r.status == 201

        delivered = []
        for _ in range(150):  # up to 15 wall seconds = 5 simulated minutes
            await asyncio.sleep(0.1)
            _, view = await _get(session, f"{url}/api/v1/dispatch/e2e-1", tokens["grid"])
            if view["state"]["delivered_kw"] is not None:
                delivered.append(view["state"]["delivered_kw"])
            if delivered and abs(delivered[-1] - delta_kw) <= 0.05 * delta_kw:
                break
        assert delivered, "the instruction never became active"
        assert delivered[-1] == pytest.approx(delta_kw, rel=0.05), f"fleet moved {delivered[-1]} of {delta_kw} kW"
        assert view["enterprise_shares"], "shares are attributed to the enterprises that delivered"

        # Role isolation: the enterprise token sees its own devices, not another's, not the plant.
        status, own = await _get(session, f"{url}/api/v1/enterprises/{enterprise_id}/devices", tokens["enterprise"])
        assert status == 200 and all(d["enterprise_id"] == enterprise_id for d in own["devices"])
        status, _ = await _get(session, f"{url}/api/v1/enterprises/park/devices", tokens["enterprise"])
        assert status == 403
        status, _ = await _get(session, f"{url}/api/v1/plant", tokens["enterprise"])
        assert status == 403
        async with session.get(f"{url}/metrics") as r:
            metrics = await r.text()
        assert re.search(r'vpp_instructions_total\{kind="delta",result="created"\} 1\.0', metrics)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vpp.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_cli_sends_an_instruction_and_mints_tokens(demo):
    url, tokens, enterprise_id, data_dir, _ = demo
    sent = _cli("dispatch", "send", "--url", url, "--token", tokens["grid"], "--delta-kw", "50", "--minutes", "5", "--id", "cli-1")
    assert sent.returncode == 0, sent.stderr
    assert '"id": "cli-1"' in sent.stdout
    again = _cli("dispatch", "send", "--url", url, "--token", tokens["grid"], "--delta-kw", "50", "--minutes", "5", "--id", "cli-1")
    assert again.returncode == 1 and '"status": 409' in again.stdout  # a new start time makes it a different instruction
    shown = _cli("dispatch", "show", "cli-1", "--url", url, "--token", tokens["admin"])
    assert shown.returncode == 0 and '"instruction"' in shown.stdout
    refused = _cli("dispatch", "send", "--url", url, "--token", tokens["enterprise"], "--delta-kw", "50")
    assert refused.returncode == 1 and '"status": 403' in refused.stdout

    minted = _cli("token", "create", "--role", "enterprise", "--enterprise", enterprise_id, "--data-dir", str(data_dir))
    assert minted.returncode == 0 and minted.stdout.startswith("vpp_")
    unknown = _cli("token", "create", "--role", "enterprise", "--enterprise", "nobody", "--data-dir", str(data_dir))
    assert unknown.returncode == 2 and "enterprise 'nobody' does not exist" in unknown.stderr
    no_token = _cli("plant", "--url", url, env={"VPP_TOKEN": ""})
    assert no_token.returncode == 2 and "no token" in no_token.stderr


def test_sigterm_stops_the_service_cleanly(demo):
    _, _, _, data_dir, process = demo
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert (data_dir / "vpp.sqlite3").exists() and (data_dir / "demo-tokens.json").stat().st_mode & 0o077 == 0
