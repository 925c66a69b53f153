"""``--role all`` on a shared Redis: one process drives the devices, a second is refused, a lost lock stops it."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.redis_support import drop_namespace, redis_url
from vpp.cluster import SoleDispatcher
from vpp.errors import Conflict
from vpp.store import RedisStore
from vpp.store.redis_cluster import RedisCluster


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    name = f"test-sole-{uuid.uuid4().hex[:8]}"
    yield name
    await drop_namespace(redis_url(), name)


async def _store(namespace: str) -> RedisStore:
    store = RedisStore(redis_url(), namespace=namespace)
    await store.open()
    return store


async def test_a_second_process_is_refused_until_the_first_releases_the_lock(namespace: str) -> None:
    store = await _store(namespace)
    first, second = SoleDispatcher(store, "first", 5.0, asyncio.Event()), SoleDispatcher(store, "second", 5.0, asyncio.Event())
    try:
        fence = await first.start()
        with pytest.raises(Conflict, match="'first' \\(token 1\\) already drives the devices"):
            await second.start()
        assert fence.token == 1 and first.election.leading
        await first.stop()
        assert await RedisCluster(store).leader() is None  # released at once, not left to lapse
        assert (await second.start()).token == 2
        await second.stop()
    finally:
        await store.close()


async def test_losing_the_lock_stops_the_process(namespace: str) -> None:
    store = await _store(namespace)
    stop = asyncio.Event()
    sole = SoleDispatcher(store, "only", 0.6, stop)  # renews every 0.2 s
    try:
        await sole.start()
        await store._client.delete(sole.cluster.lock_key)  # Redis lost it (e.g. restarted without persistence)
        await asyncio.wait_for(stop.wait(), timeout=10.0)
        assert sole.lost == "the lock was taken over"
        assert not sole.election.leading
        await sole.stop()
    finally:
        await store.close()


async def test_serve_refuses_to_start_beside_a_process_that_drives_the_devices(namespace: str, tmp_path: Path) -> None:
    store = await _store(namespace)
    holder = SoleDispatcher(store, "host-a:101:abc", 5.0, asyncio.Event())
    try:
        await holder.start()
        url = f"{redis_url()}?namespace={namespace}"
        serve = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vpp.cli", "serve", "--demo", "--store", url, "--data-dir", str(tmp_path), "--port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(serve.communicate(), timeout=60.0)
        finally:
            if serve.returncode is None:
                serve.kill()
                await serve.wait()
        assert serve.returncode == 2
        err = stderr.decode()
        assert "'host-a:101:abc' (token 1) already drives the devices of this Redis store" in err
        assert await store.list_enterprises() == []  # refused before the demo park was seeded
        await holder.stop()
    finally:
        await store.close()
