"""Token records in both stores: expiry and revocation round-trip, listing, and records written before they existed."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import msgpack
import pytest
import redis.asyncio as aioredis

from tests.redis_support import drop_namespace, redis_url
from vpp.auth import find_token, revoke_token
from vpp.errors import InvalidInput, NotFound
from vpp.model import ApiToken, Role
from vpp.store import RedisStore, SqliteStore, Store

StoreFactory = Callable[[], Store]

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def token(sha: str, created: datetime = T0, role: Role = Role.ADMIN, **extra: object) -> ApiToken:
    return ApiToken(token_sha256=sha, role=role, created_at=created, **extra)


async def test_expiry_and_revocation_round_trip(store: Store) -> None:
    expiring = token("a" * 64, expires_at=T0 + timedelta(days=30), label="ci")
    await store.put_token(expiring)
    assert await store.get_token("a" * 64) == expiring
    revoked = expiring.model_copy(update={"revoked": True, "revoked_at": T0 + timedelta(days=1)})
    await store.put_token(revoked)
    stored = await store.get_token("a" * 64)
    assert stored == revoked
    assert stored.refusal(T0 + timedelta(days=2)) == f"token was revoked at {(T0 + timedelta(days=1)).isoformat()}"


async def test_list_tokens_orders_by_creation_then_hash_and_keeps_revoked_ones(store: Store) -> None:
    assert await store.list_tokens() == []
    late = token("c" * 64, T0 + timedelta(hours=1))
    early_b, early_a = token("b" * 64), token("a" * 64, revoked=True)
    for record in (late, early_b, early_a):
        await store.put_token(record)
    assert await store.list_tokens() == [early_a, early_b, late]


async def test_revoke_by_hash_prefix_survives_reopen(store_factory: StoreFactory) -> None:
    first, second = "ab120000" + "1" * 56, "ab120000" + "2" * 56
    async with store_factory() as store:
        await store.put_token(token(first))
        await store.put_token(token(second))
        with pytest.raises(InvalidInput, match="2 token hashes start with ab120000"):
            await find_token(store, "ab120000")
        with pytest.raises(InvalidInput, match="at least 8 hex digits"):
            await find_token(store, "ab12")
        with pytest.raises(NotFound):
            await find_token(store, "ffffffff")
        record, changed = await revoke_token(store, "AB1200001", T0 + timedelta(days=3))
        assert changed and record.token_sha256 == first and record.revoked_at == T0 + timedelta(days=3)
        assert (await revoke_token(store, first[:10], T0 + timedelta(days=4))) == (record, False)
    async with store_factory() as again:
        assert (await again.get_token(first)).revoked_at == T0 + timedelta(days=3)
        assert (await again.get_token(second)).refusal(T0) is None


async def test_a_sqlite_file_of_the_first_schema_keeps_its_tokens(tmp_path) -> None:
    # The first schema stored tokens as JSON bodies without expires_at / revoked_at.
    path = tmp_path / "old.sqlite3"
    old_body = {"token_sha256": "d" * 64, "role": "grid", "enterprise_id": None,
                "created_at": "2025-01-01T00:00:00Z", "label": "old", "revoked": False}  # fmt: skip
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);"
            "CREATE TABLE tokens (token_sha256 TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;"
        )
        db.execute("INSERT INTO tokens VALUES (?, ?)", ("d" * 64, json.dumps(old_body)))
        db.execute("INSERT INTO tokens VALUES (?, ?)", ("e" * 64, json.dumps({**old_body, "token_sha256": "e" * 64, "revoked": True})))
    async with SqliteStore(path) as store:
        old = await store.get_token("d" * 64)
        assert old is not None and old.expires_at is None and old.revoked_at is None
        assert old.refusal(datetime.now(timezone.utc)) is None
        assert (await store.get_token("e" * 64)).refusal(datetime.now(timezone.utc)) == "token was revoked"
        assert [t.token_sha256 for t in await store.list_tokens()] == ["d" * 64, "e" * 64]


async def test_a_redis_token_packed_before_expiry_existed_still_reads() -> None:
    url, namespace = redis_url(), f"test-{uuid.uuid4().hex}"
    old = {"token_sha256": "f" * 64, "role": "admin", "enterprise_id": None, "created_at": "2025-01-01T00:00:00Z",
           "label": "", "revoked": False}  # fmt: skip
    client = aioredis.from_url(url)
    try:
        await client.hset(f"{namespace}:tokens", "f" * 64, msgpack.packb(old))
        async with RedisStore(url, namespace=namespace) as store:
            record = await store.get_token("f" * 64)
            assert record is not None and record.expires_at is None
            assert await store.list_tokens() == [record]
    finally:
        await client.aclose()
        await drop_namespace(url, namespace)


def test_a_token_cannot_expire_before_it_was_created() -> None:
    with pytest.raises(ValueError, match="is not after created_at"):
        token("a" * 64, expires_at=T0)
    assert token("a" * 64, expires_at=T0 + timedelta(seconds=1)).refusal(T0 + timedelta(seconds=1)).startswith("token expired at")
