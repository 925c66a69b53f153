"""The whole plant as a user runs it: `vpp serve --demo` in a subprocess, driven over HTTP and the CLI."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest

from tests.redis_support import drop_namespace, redis_url
from vpp.store import RedisStore

SPEED = 20.0  # simulated seconds per wall second


def _start_demo(data_dir, *extra: str) -> subprocess.Popen:
    log = open(data_dir / "service.log", "w")  # the service's own log, for a test that has to kill it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "vpp.cli", "serve", "--demo", "--port", "0", "--data-dir", str(data_dir),
             "--speed", str(SPEED), "--enterprises", "8", "--control-interval", "2", *extra],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
    finally:
        log.close()  # the child holds its own copy


@pytest.fixture
def demo(tmp_path):
    """A demo service on a free loopback port; yields (url, tokens, enterprise id, data dir, process)."""
    process = _start_demo(tmp_path)
    try:
        url, tokens, enterprise_id = _parse_banner(_read_banner(process))
    except BaseException:
        process.kill()
        process.wait()
        process.stdout.close()
        raise
    try:
        yield url, tokens, enterprise_id, tmp_path, process
    finally:
        _stop(process, tmp_path / "service.log")


def _stop(process: subprocess.Popen, log_path=None) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s: no service outlives its test.

    A service that had to be killed fails the test, with the end of its log (``log_path``) to say why.
    """
    killed = False
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                killed = True
    finally:
        process.stdout.close()
    if killed:
        tail = log_path.read_text()[-3000:] if log_path is not None and log_path.exists() else "(no log)"
        raise AssertionError(f"the service ignored SIGTERM for 30 s and was killed; its log ends:\n{tail}")


def _parse_banner(banner: str) -> tuple[str, dict[str, str], str]:
    url = re.search(r"listening on (http://\S+)", banner).group(1)
    tokens = dict(re.findall(r"^\s+(grid|admin|enterprise):\s+(vpp_\S+)", banner, re.M))
    enterprise_id = re.search(r"enterprise:\s+vpp_\S+\s+\((\S+)\)", banner).group(1)
    return url, tokens, enterprise_id


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


async def test_serve_on_the_redis_store_accepts_and_keeps_an_instruction(tmp_path):
    namespace = f"test-e2e-{uuid.uuid4().hex}"
    store_url = f"{redis_url()}?namespace={namespace}"
    await drop_namespace(redis_url(), namespace)  # fails with a clear message when Redis is down
    process = _start_demo(tmp_path, "--store", store_url)
    try:
        url, tokens, _ = _parse_banner(_read_banner(process))
        now = datetime.now(timezone.utc)
        instruction = {"id": "redis-1", "kind": "delta", "start": now.isoformat(),
                       "end": (now + timedelta(minutes=5)).isoformat(), "delta_kw": 10.0}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/api/v1/dispatch", json=instruction,
                                    headers={"Authorization": f"Bearer {tokens['grid']}"}) as r:
                assert r.status == 201
        store = RedisStore(redis_url(), namespace=namespace)
        async with store:
            stored = await store.get_instruction("redis-1")
            assert stored is not None and stored[0].delta_kw == 10.0
            assert len(await store.list_devices()) > 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        _stop(process, tmp_path / "service.log")
        await drop_namespace(redis_url(), namespace)
