"""Kill, restart and cut each part of a scaled-out plant, then check the store for lost or doubled records.

* SIGKILL the dispatch leader mid-instruction and an ingest worker mid-batch: another candidate
  takes the lock after its lease and resumes the instruction from the store (same baseline,
  energy counted on, completed once), the other worker re-claims the pending telemetry, and
  every sample and set-point is stored exactly once, set-points of the old leader never after
  the new one's.
* Restart Redis (append-only, our own server) under load: the API answers 503 with its reason,
  nothing is released or crashes, everything acknowledged is still there, and the plant goes on
  by itself; then SIGTERM the leader: it releases the lock and another leads at once.
* SIGKILL a single-process SQLite service right after acknowledged writes: all of them are there.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest

from tests.redis_support import drop_namespace, redis_url
from tests.scale_out_support import Child, InProcess, PrivateRedis, demo_tokens
from vpp.ingest import INGEST_GROUP
from vpp.model import DispatchStatus, TelemetrySample
from vpp.store import RedisStore, SqliteStore
from vpp.store.redis_cluster import RedisCluster, setpoint_id

LEASE = "4"  # s: a dead leader is replaced this long after its last renewal


async def _until(check, what: str, timeout_s: float = 60.0, every_s: float = 0.2):
    """Poll ``check()`` (async) until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    for _ in range(int(timeout_s / every_s)):
        found = await check()
        if found:
            return found
        await asyncio.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _instruction(instruction_id: str, seconds: float, delta_kw: float = 20.0, in_s: float = 0.0) -> dict:
    now = datetime.now(timezone.utc) + timedelta(seconds=in_s)
    return {"id": instruction_id, "kind": "delta", "start": now.isoformat(),
            "end": (now + timedelta(seconds=seconds)).isoformat(), "delta_kw": delta_kw}  # fmt: skip


async def _post(session: aiohttp.ClientSession, url: str, token: str, body: dict) -> tuple[int, dict]:
    async with session.post(f"{url}/api/v1/dispatch", json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json(content_type=None)


async def _pending_of(client, cluster: RedisCluster, consumer: str) -> int:
    """Entries of the ingest group pending with one consumer, over every partition."""
    total = 0
    for p in range(await cluster.partitions()):
        summary = await client.xpending(cluster.ingest_stream(p), INGEST_GROUP)
        total += sum(int(c["pending"]) for c in summary["consumers"] if c["name"].decode() == consumer)
    return total


async def _check_setpoint_log(store: RedisStore, cluster: RedisCluster, instruction_id: str) -> list[int]:
    """No set-point logged twice; in the order sent, fencing tokens never go back. Returns the tokens in order."""
    sent = await store.setpoints_for(instruction_id)
    ids = [setpoint_id(s) for s in sent]
    assert len(ids) == len(set(ids)), "a set-point was logged twice"
    token_of = await cluster.setpoint_tokens(instruction_id)
    assert set(token_of) == set(ids)
    tokens = [token_of[i] for i in ids]
    assert tokens == sorted(tokens), "a set-point of an older leader came after a newer leader's"
    return tokens


async def _check_telemetry_once(store: RedisStore, cluster: RedisCluster) -> int:
    """Every sample in the ingest streams is in the store's history exactly once; returns how many distinct samples."""
    wanted: dict[str, set[datetime]] = defaultdict(set)
    for p in range(await cluster.partitions()):
        for entry in await cluster.telemetry_entries(p):
            wanted[entry.sample.device_id].add(entry.sample.ts)
    for device_id, instants in wanted.items():
        history = await store.telemetry_history(device_id, min(instants), max(instants) + timedelta(microseconds=1))
        stored = Counter(s.ts for s in history)
        assert set(stored) == instants, f"{device_id}: {len(instants - set(stored))} samples lost"
        assert max(stored.values()) == 1
    return sum(len(v) for v in wanted.values())


async def test_killed_leader_and_ingest_worker_are_replaced_and_nothing_is_lost_or_doubled(tmp_path):
    namespace = f"test-scale-{uuid.uuid4().hex}"
    store_url = f"{redis_url()}?namespace={namespace}"
    await drop_namespace(redis_url(), namespace)
    common = ("--store", store_url, "--data-dir", str(tmp_path))
    demo = ("--demo", "--enterprises", "3")
    leader_a = Child(tmp_path, "dispatch-a", "--role", "dispatch", *common, *demo, "--lease", LEASE, "--control-interval", "1")
    ingest_a = Child(tmp_path, "ingest-a", "--role", "ingest", *common, "--claim-idle", "2")
    store = RedisStore(redis_url(), namespace=namespace)
    await store.open()
    cluster = RedisCluster(store)
    survivors: list[InProcess] = []
    try:
        await leader_a.url()
        await ingest_a.url()
        assert (await _until(cluster.leader, "a first leader"))[1] == "dispatch-a"
        token_a = (await cluster.leader())[0]
        api = InProcess("--role", "api", *common, *demo)
        leader_b = InProcess("--role", "dispatch", *common, *demo, "--lease", LEASE, "--control-interval", "1", "--name", "dispatch-b")
        ingest_b = InProcess("--role", "ingest", *common, "--claim-idle", "2", "--name", "ingest-b")
        survivors = [api, leader_b, ingest_b]
        url = await api.url()
        ingest_b_url = await ingest_b.url()
        await leader_b.url()
        grid = demo_tokens(tmp_path)["grid"]

        async with aiohttp.ClientSession() as session:
            status, _ = await _post(session, url, grid, _instruction("shed-1", seconds=20))
            assert status == 201

            async def active():
                found = await store.get_instruction("shed-1")
                return found and found[1].status is DispatchStatus.ACTIVE and found[1].requested_kwh > 0 and found[1]

            before = await _until(active, "shed-1 running under the first leader")
            assert set((await cluster.setpoint_tokens("shed-1")).values()) == {token_a}

            # An ingest worker dies with a batch read and not acknowledged.
            # On a quiet machine it may acknowledge between being seen holding a batch and the kill: freeze it
            # (SIGSTOP) the moment it holds one, and publish another batch if it got away.
            load: list[TelemetrySample] = []
            held = 0
            for round_ in range(20):
                batch = [
                    TelemetrySample(device_id=f"load-{i % 300}",
                                    ts=datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=40 * round_ + i // 300),
                                    p_kw=1.0, p_min_kw=0.0, p_max_kw=2.0)
                    for i in range(12_000)
                ]  # fmt: skip
                load += batch
                await cluster.publish_telemetry(batch, {f"load-{i}": f"e{i % 7:02d}" for i in range(300)})
                await _until(lambda: _pending_of(store._client, cluster, "ingest-a"), "ingest-a holding a batch", every_s=0.01)
                ingest_a.signal(signal.SIGSTOP)
                held = await _pending_of(store._client, cluster, "ingest-a")
                if held:
                    break
                ingest_a.signal(signal.SIGCONT)
            assert held > 0, "ingest-a never caught holding a batch"
            ingest_a.signal(signal.SIGKILL)
            # The dispatch leader dies mid-instruction.
            leader_a.signal(signal.SIGKILL)
            assert await ingest_a.wait() == -signal.SIGKILL and await leader_a.wait() == -signal.SIGKILL
            assert await _pending_of(store._client, cluster, "ingest-a") == held  # never acknowledged: only a re-claim saves them

            new = await _until(lambda: _leader_other_than(cluster, "dispatch-a"), "dispatch-b taking over")
            assert new[1] == "dispatch-b" and new[0] > token_a

            async def claimed():
                async with session.get(f"{ingest_b_url}/healthz") as r:
                    return (await r.json())["claimed"] >= held

            await _until(claimed, "ingest-b re-claiming ingest-a's pending batch")

            async def finished():
                found = await store.get_instruction("shed-1")
                return found[1].status is not DispatchStatus.ACTIVE and found[1]

            after = await _until(finished, "shed-1 completed by the new leader", timeout_s=60)
            for part in survivors:
                assert part.alive()

        # Completed once, resumed (not restarted): same baseline, energy counted on from where it was.
        assert after.status is DispatchStatus.COMPLETED and after.message == "window ended"
        assert after.baseline_kw == before.baseline_kw
        assert after.requested_kwh > before.requested_kwh
        tokens = await _check_setpoint_log(store, cluster, "shed-1")
        assert tokens[0] == token_a and tokens[-1] == new[0]
        released = [s for s in await store.setpoints_for("shed-1") if s.p_kw is None]
        assert released and {(await cluster.setpoint_tokens("shed-1"))[setpoint_id(s)] for s in released} == {new[0]}
        progress = [p.ts for p in await store.dispatch_progress("shed-1")]
        assert len(progress) == len(set(progress))

        # Telemetry: everything published reached the store once, nothing is left pending.
        await _until(lambda: _no_pending(cluster), "ingest group drained")
        assert await _check_telemetry_once(store, cluster) >= len(load)

        # Graceful stop of the survivors: the leader releases the lock, the worker leaves nothing pending.
        for part in survivors:
            assert await part.stop() == 0
        assert await cluster.leader() is None
        assert await cluster.pending_telemetry(INGEST_GROUP) == 0
    finally:
        for part in survivors:
            if part.alive():
                await part.stop()
        for child in (leader_a, ingest_a):
            child.kill()
        await store.close()
        await drop_namespace(redis_url(), namespace)


async def _leader_other_than(cluster: RedisCluster, holder: str):
    found = await cluster.leader()
    return found if found is not None and found[1] != holder else None


async def _no_pending(cluster: RedisCluster) -> bool:
    return await cluster.pending_telemetry(INGEST_GROUP) == 0


async def test_redis_restarted_under_load_degrades_then_resumes_and_sigterm_hands_the_lock_over(tmp_path):
    redis = PrivateRedis(tmp_path)
    await redis.start()
    common = ("--store", redis.url, "--data-dir", str(tmp_path))
    demo = ("--demo", "--enterprises", "3")
    # A long lease: the leader keeps it across the restart, and only a release can hand it over quickly.
    leader_a = Child(tmp_path, "dispatch-a", "--role", "dispatch", *common, *demo, "--lease", "60", "--control-interval", "1")
    store = RedisStore(redis.url)
    parts: list[InProcess] = []
    try:
        await leader_a.url()
        await store.open()
        cluster = RedisCluster(store)
        assert (await _until(cluster.leader, "a first leader"))[1] == "dispatch-a"
        api = InProcess("--role", "api", *common, *demo)
        ingest = InProcess("--role", "ingest", *common, "--claim-idle", "2", "--name", "ingest-b")
        parts = [api, ingest]
        url = await api.url()
        await ingest.url()
        grid = demo_tokens(tmp_path)["grid"]
        acknowledged: list[str] = []
        answers: Counter[int] = Counter()
        reasons: set[str] = set()

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            assert (await _post(session, url, grid, _instruction("hold", seconds=600)))[0] == 201

            async def running():
                found = await store.get_instruction("hold")
                return found and found[1].status is DispatchStatus.ACTIVE and found[1].requested_kwh > 0 and found[1]

            before = await _until(running, "hold running")

            async def load(stop: asyncio.Event) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    # Starting in an hour: stored and acknowledged, without superseding "hold".
                    status, body = await _post(session, url, grid, _instruction(f"load-{n}", 300, 1.0, in_s=3600))
                    answers[status] += 1
                    if status in (200, 201):
                        acknowledged.append(f"load-{n}")
                    elif status == 503:
                        reasons.add(body["error"]["message"])
                    await asyncio.sleep(0.02)

            stop_load = asyncio.Event()
            loader = asyncio.create_task(load(stop_load))
            await _until(lambda: _true(len(acknowledged) >= 5), "load flowing")
            redis.kill()
            await _until(lambda: _true(answers[503] >= 3), "503 while Redis is down")
            async with session.get(f"{url}/healthz") as r:
                assert r.status == 503 and (await r.json())["store"] is False
            await redis.start()  # same directory: the append-only file brings back what was acknowledged
            acked_at_restart = len(acknowledged)
            await _until(lambda: _true(len(acknowledged) >= acked_at_restart + 5), "API accepting again by itself")
            stop_load.set()
            await loader

            assert set(answers) <= {200, 201, 503}, answers  # degraded, never a 500
            assert reasons == {"the store is unavailable; try again later"}

            async def plant_answers() -> bool:
                async with session.get(f"{url}/api/v1/plant", headers={"Authorization": f"Bearer {grid}"}) as r:
                    return r.status == 200

            # The live view recovers on its next refresh after Redis is back (by itself: nobody restarts the API).
            await _until(plant_answers, "live plant answering again")

            # Everything acknowledged survived the restart.
            for instruction_id in acknowledged:
                assert await store.get_instruction(instruction_id) is not None, instruction_id
            assert leader_a.process.poll() is None, leader_a.tail()
            assert all(part.alive() for part in parts)

            # The leader goes on with the same instruction, same token, devices never released in between.
            token_a = (await cluster.leader())[0]

            async def progressed():
                _, state = await store.get_instruction("hold")
                return state.requested_kwh > before.requested_kwh and state

            state = await _until(progressed, "hold going on after the restart")
            assert state.status is DispatchStatus.ACTIVE and state.baseline_kw == before.baseline_kw
            # One term throughout: the leader kept its lease across the outage, no one else sent set-points.
            assert set((await cluster.setpoint_tokens("hold")).values()) == {token_a}

            # SIGTERM: the leader writes its state and releases the lock; the other candidate leads at once
            # (the 60 s lease has not run out).
            leader_b = InProcess("--role", "dispatch", *common, *demo, "--lease", "60", "--control-interval", "1", "--name", "dispatch-b")
            parts.append(leader_b)
            await leader_b.url()
            leader_a.signal(signal.SIGTERM)
            assert await leader_a.wait() == 0
            new = await _until(lambda: _leader_other_than(cluster, "dispatch-a"), "dispatch-b leading after the release", timeout_s=30)
            assert new[1] == "dispatch-b" and new[0] > token_a
            resumed = await _until(lambda: _stepped_by(store, cluster, "hold", new[0]), "dispatch-b driving hold")
            assert resumed.baseline_kw == before.baseline_kw and resumed.status is DispatchStatus.ACTIVE
            await _check_setpoint_log(store, cluster, "hold")

        for part in parts:
            assert await part.stop() == 0
        assert await cluster.leader() is None
        assert await cluster.pending_telemetry(INGEST_GROUP) == 0
        # SIGTERM closed the API: nothing is taken any more.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await _post(session, url, grid, _instruction("late", seconds=5))
    finally:
        for part in parts:
            if part.alive():
                await part.stop()
        leader_a.kill()
        await store.close()
        redis.kill()


async def _true(value: bool) -> bool:
    return value


async def _stepped_by(store: RedisStore, cluster: RedisCluster, instruction_id: str, token: int):
    """The instruction's state once a set-point under ``token`` was logged for it."""
    if token not in set((await cluster.setpoint_tokens(instruction_id)).values()):
        return None
    return (await store.get_instruction(instruction_id))[1]


async def test_sqlite_service_killed_right_after_acknowledged_writes_keeps_them_all(tmp_path):
    child = Child(tmp_path, "all", "--demo", "--enterprises", "3", "--data-dir", str(tmp_path))
    try:
        url = await child.url()
        tokens = demo_tokens(tmp_path)
        acknowledged = []
        async with aiohttp.ClientSession() as session:
            for n in range(20):
                status, _ = await _post(session, url, tokens["grid"], _instruction(f"sq-{n}", seconds=300, delta_kw=float(n)))
                assert status == 201
                acknowledged.append(f"sq-{n}")
            enterprise = {"id": "late-co", "name": "Late Co"}
            async with session.post(f"{url}/api/v1/enterprises", json=enterprise,
                                    headers={"Authorization": f"Bearer {tokens['admin']}"}) as r:  # fmt: skip
                assert r.status == 201
        child.signal(signal.SIGKILL)  # no shutdown, no flush: only what was committed before each answer
        assert await child.wait() == -signal.SIGKILL
    finally:
        child.kill()
    # Restart (the store replays its write-ahead log on open) and find every acknowledged record.
    restarted = Child(tmp_path, "all-again", "--demo", "--enterprises", "3", "--data-dir", str(tmp_path))
    try:
        url = await restarted.url()
        grid = demo_tokens(tmp_path)["grid"]
        async with aiohttp.ClientSession() as session:
            for n, instruction_id in enumerate(acknowledged):
                async with session.get(f"{url}/api/v1/dispatch/{instruction_id}", headers={"Authorization": f"Bearer {grid}"}) as r:
                    body = await r.json()
                    assert r.status == 200 and body["instruction"]["delta_kw"] == float(n)
        restarted.signal(signal.SIGTERM)
        assert await restarted.wait() == 0
    finally:
        restarted.kill()
    async with SqliteStore(tmp_path / "vpp.sqlite3") as store:
        assert await store.get_enterprise("late-co") is not None
        assert len(await store.list_instructions()) == len(acknowledged)


def test_roles_other_than_all_refuse_sqlite_with_a_clear_error(tmp_path, capsys):
    from vpp.cli import main

    assert main(["serve", "--role", "api", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--role api" in err and "redis://" in err and "only --role all" in err
    assert main(["serve", "--role", "dispatch", "--store", "redis://127.0.0.1:1/0", "--speed", "10"]) == 2
    assert "--speed" in capsys.readouterr().err
