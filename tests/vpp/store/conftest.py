"""Fixtures running every store test against both backends.

Redis is the real server at ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``);
each test gets its own namespace, deleted afterwards. A Redis that does not
answer fails the test: the contract must hold on both backends, so silently
skipping one would hide a broken backend.
"""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vpp.store import RedisStore, SqliteStore, Store

StoreFactory = Callable[[], Store]


def redis_url() -> str:
    """The Redis server the tests use."""
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


async def _drop_namespace(url: str, namespace: str) -> None:
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


@pytest.fixture(params=["sqlite", "redis"])
async def store_factory(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[StoreFactory]:
    """Builds unopened stores that all share one data set (one file / one namespace)."""
    if request.param == "sqlite":
        path = tmp_path / "missing-dir" / "vpp.sqlite3"  # open() must create the directory
        yield lambda: SqliteStore(path)
        return
    url, namespace = redis_url(), f"test-{uuid.uuid4().hex}"
    await _drop_namespace(url, namespace)  # fails fast, with the message above, when Redis is down
    try:
        yield lambda: RedisStore(url, namespace=namespace)
    finally:
        await _drop_namespace(url, namespace)


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    """An open store of either backend, closed after the test."""
    opened = store_factory()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
