"""Carbon tests that touch a store run on both backends: SQLite and the machine's real Redis.

Each Redis test gets its own namespace, deleted afterwards (as in
tests/vpp/store/conftest.py); a Redis that does not answer fails the test.
:class:`Backend` also knows how to tamper with a stored ledger record behind
the store's back, the way an attacker with access to the database would.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from tests.redis_support import drop_namespace, redis_url
from vpp.store import RedisStore, SqliteStore, Store

Mutate = Callable[[dict[str, Any]], None]


@dataclass
class Backend:
    """One store backend under test."""

    kind: str
    url: str
    """``--store`` URL for the CLI [unitless]."""
    data_dir: pathlib.Path
    make: Callable[[], Store]
    """A new, unopened store on the test's data set."""

    async def tamper_ledger(self, ledger: str, seq: int, mutate: Mutate) -> None:
        """Change stored record ``seq`` of ``ledger`` in place, without re-hashing it."""
        if self.kind == "sqlite":
            path = self.data_dir / "vpp.sqlite3"
            with sqlite3.connect(path) as db:
                row = db.execute("SELECT record FROM ledger WHERE name=? AND seq=?", (ledger, seq)).fetchone()
                record = json.loads(row[0])
                mutate(record)
                db.execute("UPDATE ledger SET record=? WHERE name=? AND seq=?", (json.dumps(record), ledger, seq))
            return
        namespace = self.url.rsplit("namespace=", 1)[1]
        client = aioredis.Redis.from_url(redis_url())
        try:
            key = f"{namespace}:ledger:{ledger}"
            record = msgpack.unpackb(await client.lindex(key, seq))
            mutate(record)
            await client.lset(key, seq, msgpack.packb(record))
        finally:
            await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Backend]:
    """Either backend, with a fresh, empty data set."""
    if request.param == "sqlite":
        path = tmp_path / "vpp.sqlite3"
        yield Backend("sqlite", f"sqlite:///{path}", tmp_path, lambda: SqliteStore(path))
        return
    url, namespace = redis_url(), f"test-carbon-{uuid.uuid4().hex}"
    await drop_namespace(url, namespace)  # fails the test, saying why, when Redis does not answer
    separator = "&" if "?" in url else "?"
    try:
        yield Backend("redis", f"{url}{separator}namespace={namespace}", tmp_path, lambda: RedisStore(url, namespace=namespace))
    finally:
        await drop_namespace(url, namespace)


@pytest.fixture
async def any_store(backend: Backend) -> AsyncIterator[Store]:
    """An open, empty store of either backend, closed after the test."""
    store = backend.make()
    await store.open()
    try:
        yield store
    finally:
        await store.close()
