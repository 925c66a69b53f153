"""Limits at the HTTP edge: body size (413), rate per token and per address (429), no stack trace in a 500."""

from __future__ import annotations

import json
import re

import pytest
import structlog

from tests.vpp.api.security_support import make_callers, start_client
from vpp.api.limits import ApiSettings, RateLimiter, retry_after_s
from vpp.logs import configure_logging

SMALL_BODY = ApiSettings(max_body_bytes=4096)


def _rejected(metrics_text: str, reason: str) -> float:
    match = re.search(rf'^vpp_http_rejected_total{{reason="{reason}"}} (\S+)$', metrics_text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_a_body_over_the_limit_gets_413_and_nothing_is_written(plant):
    callers = await make_callers(plant)
    client = await start_client(plant, SMALL_BODY)
    try:
        padded = {"id": "big", "kind": "delta", "delta_kw": 1.0, "note": "x" * 5000}
        declared = await client.post("/api/v1/dispatch", json=padded, headers=callers.headers("grid"))
        assert declared.status == 413
        assert (await declared.json())["error"] == {"status": 413, "message": f"request body of {len(json.dumps(padded))} bytes is larger than the limit of 4096 bytes"}

        async def chunks():  # no Content-Length: aiohttp stops reading at the limit
            for _ in range(10):
                yield b"[" + b" " * 1000

        chunked = await client.post("/api/v1/market/prices", data=chunks(), headers=callers.headers("admin"))
        assert chunked.status == 413
        assert (await chunked.json())["error"]["message"] == "request body is larger than the limit of 4096 bytes"
        assert await plant.store.list_instructions() == []
        assert await plant.store.ledger_records("prices") == []
        metrics = await (await client.get("/metrics")).text()
        assert _rejected(metrics, "body_too_large") == 2
    finally:
        await client.close()


async def test_each_token_has_its_own_bucket_and_a_spent_one_gets_429_with_retry_after(plant):
    callers = await make_callers(plant)
    client = await start_client(plant, ApiSettings(rate_per_s=0.01, burst=3))
    try:
        grid = [await client.get("/api/v1/plant", headers=callers.headers("grid")) for _ in range(4)]
        assert [a.status for a in grid] == [200, 200, 200, 429]
        assert int(grid[-1].headers["Retry-After"]) >= 90  # one request per 100 s at 0.01/s
        assert (await grid[-1].json())["error"]["status"] == 429
        assert (await client.get("/api/v1/plant", headers=callers.headers("admin"))).status == 200
        metrics = await (await client.get("/metrics")).text()
        assert _rejected(metrics, "rate_limited") == 1
    finally:
        await client.close()


async def test_callers_without_a_token_and_guessed_tokens_are_limited_by_address(plant):
    client = await start_client(plant, ApiSettings(rate_per_s=0.01, burst=3))
    try:
        guesses = [await client.get("/api/v1/plant", headers={"Authorization": f"Bearer vpp_guess-{i}"}) for i in range(4)]
        assert [a.status for a in guesses] == [401, 401, 401, 429]
        assert (await client.get("/healthz")).status == 429  # the same address, now without a token
    finally:
        await client.close()


def test_the_bucket_refills_at_its_rate():
    now = [100.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=2.0, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("k") == 0.0
    assert limiter.take("other") == 0.0
    assert retry_after_s(0.01) == 1 and retry_after_s(2.2) == 3
    assert RateLimiter(rate_per_s=0.0, burst=1.0).take("k") == 0.0  # 0 turns the limit off


def test_settings_come_from_the_environment_and_bad_values_name_the_variable():
    settings = ApiSettings.from_env({"VPP_API_MAX_BODY_BYTES": "2048", "VPP_API_RATE_PER_S": "5", "VPP_API_RATE_BURST": "7"})
    assert settings == ApiSettings(max_body_bytes=2048, rate_per_s=5.0, burst=7.0)
    assert ApiSettings.from_env({}) == ApiSettings(max_body_bytes=1024 * 1024, rate_per_s=20.0, burst=100.0)
    with pytest.raises(ValueError, match="VPP_API_RATE_PER_S='fast' is not a float"):
        ApiSettings.from_env({"VPP_API_RATE_PER_S": "fast"})
    with pytest.raises(ValueError, match="burst 0.0 must be"):
        ApiSettings.from_env({"VPP_API_RATE_BURST": "0"})


@pytest.fixture
def json_logs():
    """structlog writing JSON lines to stderr for one test, its configuration restored afterwards."""
    saved = structlog.get_config()
    configure_logging("info", json_lines=True)
    yield
    structlog.configure(**saved)


async def test_an_unexpected_failure_answers_500_with_only_a_request_id_and_logs_the_trace(plant, json_logs, capsys):
    callers = await make_callers(plant)
    client = await start_client(plant)
    try:
        await plant.store.close()  # the store goes away under the running app
        answer = await client.get("/api/v1/plant", headers=callers.headers("admin"))
        body = await answer.json()
        assert answer.status == 500
        request_id = body["error"]["request_id"]
        assert body == {"error": {"status": 500, "message": "internal error; quote the request id to the operator", "request_id": request_id}}
        assert answer.headers["X-Request-Id"] == request_id
        text = json.dumps(body)
        assert "Traceback" not in text and "RuntimeError" not in text and "sqlite" not in text.lower()
        logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        errors = [entry for entry in logged if entry.get("request_id") == request_id]
        assert len(errors) == 1 and errors[0]["event"] == "unhandled error"
        assert "Traceback" in errors[0]["exception"] and "is not open" in errors[0]["exception"]
    finally:
        await client.close()


async def test_a_well_formed_request_id_is_kept_and_a_bad_one_replaced(plant):
    client = await start_client(plant)
    try:
        kept = await client.get("/healthz", headers={"X-Request-Id": "proxy-abc-123456"})
        assert kept.headers["X-Request-Id"] == "proxy-abc-123456"
        replaced = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-Id"])
    finally:
        await client.close()
