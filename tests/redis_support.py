"""The machine's real Redis for tests: its URL, and dropping a test's namespace.

A Redis that does not answer fails the test (never skips): CI starts one.
"""

from __future__ import annotations

import os

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def redis_url() -> str:
    """The Redis server the tests use."""
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


async def drop_namespace(url: str, namespace: str) -> None:
    """Delete every key of a test namespace; fails the test if Redis does not answer."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2.0)
    try:
        problem = None
        try:
            await client.ping()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            problem = exc  # failed outside the handler so the report is one line, not a chain
        if problem is not None:
            pytest.fail(
                f"Redis at {url} does not answer ({problem}). The store contract runs against a real Redis: "
                "start one (.ci/run does) or point REDIS_URL at one.",
                pytrace=False,
            )
        batch = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()
