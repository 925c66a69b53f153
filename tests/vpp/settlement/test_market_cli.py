"""``vpp market run`` against a real ``vpp serve --demo`` subprocess: bids from the live envelope, awards posted back."""

from __future__ import annotations

import re
import subprocess
import sys

import aiohttp

from tests.test_end_to_end import demo  # noqa: F401 - the fixture: a demo service in a subprocess on loopback


def _market(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vpp.cli", "market", "run", *args],
                          check=False, capture_output=True, text=True, timeout=90)  # fmt: skip


async def test_a_market_round_dispatches_the_plant_through_the_api(demo):  # noqa: F811
    url, tokens, _, _, _ = demo
    result = _market("--url", url, "--token", tokens["grid"], "--hours", "2", "--seed", "5",
                     "--event-probability", "1", "--prefix", "cli")  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert out.splitlines()[0].split()[:3] == ["interval", "start", "(UTC)"]
    posted = re.findall(r"^201 (cli-\d{8}T\d{4}Z) (\S+) \.\. (\S+) delta ([+-]\d+\.\d) kW$", out, re.MULTILINE)
    assert posted, out
    summary = re.search(r"(\d+) instruction\(s\) posted: (\d+) new, 0 already known, 0 refused", out)
    assert summary and int(summary.group(1)) == int(summary.group(2)) == len(posted)
    won = re.search(r"plant won ([\d.]+) kWh up and ([\d.]+) kWh down over (\d+) intervals", out)
    assert won and float(won.group(1)) + float(won.group(2)) > 0 and int(won.group(3)) >= 8
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for instruction_id, start, end, delta in posted:
            async with session.get(f"{url}/api/v1/dispatch/{instruction_id}") as answer:
                assert answer.status == 200
                stored = (await answer.json())["instruction"]
            assert stored["kind"] == "delta" and stored["delta_kw"] == float(delta)
            assert (stored["start"], stored["end"]) == (start, end)


def test_a_bad_address_or_missing_token_is_one_line_and_exit_2():
    remote = _market("--url", "http://192.0.2.1:8080", "--token", "vpp_x")
    assert remote.returncode == 2 and "loopback" in remote.stderr and "Traceback" not in remote.stderr
    no_token = subprocess.run([sys.executable, "-m", "vpp.cli", "market", "run", "--url", "http://127.0.0.1:9"],
                              check=False, capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert no_token.returncode == 2 and "--token" in no_token.stderr
    closed = _market("--url", "http://127.0.0.1:9", "--token", "vpp_x")  # nothing listens on the discard port
    assert closed.returncode == 2 and "market round against http://127.0.0.1:9 failed" in closed.stderr
