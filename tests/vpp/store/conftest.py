"""Fixtures running every store test against both backends.

Redis is the real server at ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``);
each test gets its own namespace, deleted afterwards. A Redis that does not
answer fails the test: the contract must hold on both backends, so silently
skipping one would hide a broken backend.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from tests.redis_support import drop_namespace as _drop_namespace
from tests.redis_support import redis_url
from vpp.store import RedisStore, SqliteStore, Store

StoreFactory = Callable[[], Store]


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
