"""An API replica (``--role api``) serves live state and instructions from Redis, never touching a device."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp.test_utils import TestClient, TestServer

from simulators.park import build_park
from simulators.sim import SimulatedPark
from tests.redis_support import drop_namespace, redis_url
from vpp.api.app import make_app
from vpp.auth import create_token
from vpp.clock import RealClock
from vpp.model import DispatchStatus, Role
from vpp.replica import ReplicaService
from vpp.store import RedisStore
from vpp.store.redis_cluster import RedisCluster


@pytest.fixture
async def replica():
    namespace = f"test-replica-{uuid.uuid4().hex}"
    await drop_namespace(redis_url(), namespace)
    store = RedisStore(redis_url(), namespace=namespace)
    await store.open()
    now = datetime.now(timezone.utc)
    spec = build_park(seed=3, n_enterprises=3)
    for enterprise in spec.enterprises:
        await store.put_enterprise(enterprise)
    for device in spec.devices:
        await store.put_device(device)
    await store.append_telemetry(SimulatedPark(spec, start=now, seed=3).telemetry(now))  # as an ingest worker would
    cluster = RedisCluster(store)
    service = ReplicaService(store, cluster, RealClock())
    await service.start()
    client = TestClient(TestServer(make_app(service), host="127.0.0.1"))
    await client.start_server()
    grid = await create_token(store, Role.GRID, None, now, "grid")
    try:
        yield client, service, cluster, {"Authorization": f"Bearer {grid}"}, spec
    finally:
        await client.close()
        await service.stop()
        await store.close()
        await drop_namespace(redis_url(), namespace)


async def test_plant_comes_from_the_store_and_the_active_instruction_from_the_leader(replica):
    client, service, cluster, grid, spec = replica
    response = await client.get("/api/v1/plant", headers=grid)
    body = await response.json()
    assert response.status == 200
    assert body["devices_enrolled"] == len(spec.devices) and body["devices_online"] > 0
    assert body["active_instruction"] is None
    token = await cluster.acquire("leader", 30.0)
    assert await cluster.publish_live({"active_instruction": "shed", "adapters": ["simulator"]}, token)
    await service.refresh()
    assert (await (await client.get("/api/v1/plant", headers=grid)).json())["active_instruction"] == "shed"


async def test_an_instruction_is_stored_before_the_answer_and_read_back_from_the_store(replica):
    client, service, _, grid, _ = replica
    now = datetime.now(timezone.utc)
    instruction = {"id": "r-1", "kind": "delta", "start": now.isoformat(), "end": (now + timedelta(minutes=5)).isoformat(),
                   "delta_kw": 5.0}  # fmt: skip
    response = await client.post("/api/v1/dispatch", json=instruction, headers=grid)
    assert response.status == 201
    stored = await service.store.get_instruction("r-1")
    assert stored is not None and stored[1].status is DispatchStatus.PENDING  # waiting for the leader
    assert (await client.post("/api/v1/dispatch", json=instruction, headers=grid)).status == 200  # same id: same answer
    view = await (await client.get("/api/v1/dispatch/r-1", headers=grid)).json()
    assert view["state"]["status"] == "pending"


async def test_flexibility_is_left_to_the_leader_and_an_unknown_adapter_is_refused(replica):
    client, service, cluster, grid, spec = replica
    now = datetime.now(timezone.utc)
    query = {"start": now.isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
    assert (await client.get("/api/v1/plant/flexibility", params=query, headers=grid)).status == 409
    token = await cluster.acquire("leader", 30.0)
    await cluster.publish_live({"adapters": ["simulator"]}, token)
    await service.refresh()
    device = spec.devices[0].model_dump(mode="json") | {"id": "new-dev", "adapter": "modbus"}
    admin = await create_token(service.store, Role.ADMIN, None, now, "admin")
    response = await client.post(
        f"/api/v1/enterprises/{device['enterprise_id']}/devices", json=device, headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status == 422
    assert (await response.json())["error"]["fields"][0]["field"] == "adapter"
    assert await service.store.get_device("new-dev") is None


async def test_live_views_answer_503_when_the_store_has_not_been_read_for_too_long(replica):
    client, service, _, grid, _ = replica
    service.unavailable_after_s = 0.0  # as if the last successful read were long ago
    response = await client.get("/api/v1/plant", headers=grid)
    assert response.status == 503
    assert (await response.json())["error"]["message"] == "the store is unavailable; try again later"
