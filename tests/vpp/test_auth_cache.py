"""The token cache: fewer store reads, and revocation and expiry still refused when they should be."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from vpp.auth import (
    TOKEN_CACHE_TTL_S,
    TokenCache,
    authenticate,
    create_token,
    hash_token,
    mint_token,
    revoke_token,
)
from vpp.errors import Unauthorized
from vpp.model import Role
from vpp.store import SqliteStore


class FakeMonotonic:
    """A monotonic clock the test moves [s]."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def store(tmp_path):
    async with SqliteStore(tmp_path / "vpp.sqlite3") as store:
        yield store


def count_reads(monkeypatch, store) -> list[str]:
    """Record every ``get_token`` the store answers (the real read still happens)."""
    reads: list[str] = []
    read = store.get_token

    async def counted(token_sha256: str):
        reads.append(token_sha256)
        return await read(token_sha256)

    monkeypatch.setattr(store, "get_token", counted)
    return reads


def bearer(secret: str) -> str:
    return f"Bearer {secret}"


async def test_a_cached_token_is_refused_from_its_expiry_instant_on(store, monkeypatch):
    now = datetime.now(UTC)
    secret, record = mint_token(Role.GRID, None, now, valid_for=timedelta(hours=1))
    await store.put_token(record)
    reads = count_reads(monkeypatch, store)
    cache = TokenCache()
    assert (await authenticate(store, bearer(secret), now, cache)).role is Role.GRID
    assert (await authenticate(store, bearer(secret), record.expires_at - timedelta(microseconds=1), cache)).role is Role.GRID
    with pytest.raises(Unauthorized, match="token expired at"):
        await authenticate(store, bearer(secret), record.expires_at, cache)
    assert len(reads) == 1  # all three answered from the cached record: expiry is checked on every request


async def test_revoking_through_the_cache_is_refused_at_once(store, monkeypatch):
    now = datetime.now(UTC)
    secret = await create_token(store, Role.ADMIN, None, now)
    cache = TokenCache()
    await authenticate(store, bearer(secret), now, cache)
    await authenticate(store, bearer(secret), now, cache)
    assert len(cache) == 1
    await revoke_token(store, hash_token(secret)[:10], now, cache)
    with pytest.raises(Unauthorized, match="token was revoked at"):
        await authenticate(store, bearer(secret), now, cache)


async def test_a_revocation_written_by_another_process_is_seen_once_the_ttl_has_passed(store, tmp_path):
    now = datetime.now(UTC)
    secret = await create_token(store, Role.GRID, None, now)
    sha = hash_token(secret)
    clock = FakeMonotonic()
    cache = TokenCache(clock=clock)
    assert (await cache.record(store, sha)).refusal(now) is None
    async with SqliteStore(tmp_path / "vpp.sqlite3") as other:  # what ``vpp token revoke`` does from its own process
        await revoke_token(other, secret, now)
    clock.t += TOKEN_CACHE_TTL_S - 0.01
    assert (await cache.record(store, sha)).refusal(now) is None  # the documented window: at most the TTL
    clock.t += 0.01
    assert (await cache.record(store, sha)).refusal(now).startswith("token was revoked at")


async def test_a_read_in_flight_when_the_token_is_forgotten_does_not_fill_the_cache(store, monkeypatch):
    now = datetime.now(UTC)
    secret = await create_token(store, Role.GRID, None, now)
    sha = hash_token(secret)
    reads = count_reads(monkeypatch, store)
    counted = store.get_token
    gate = asyncio.Event()

    async def slow(token_sha256: str):
        record = await counted(token_sha256)
        await gate.wait()  # the record is read; the revocation lands before it is returned
        return record

    monkeypatch.setattr(store, "get_token", slow)
    cache = TokenCache()
    reading = asyncio.ensure_future(cache.record(store, sha))
    while not reads:
        await asyncio.sleep(0)
    cache.forget(sha)
    gate.set()
    assert (await reading).refusal(now) is None  # the caller that asked before the revocation gets what was read
    assert len(cache) == 0
    await cache.record(store, sha)
    assert len(reads) == 2  # read again, not served from a record read before the revocation


async def test_unknown_tokens_are_not_cached_so_a_new_token_works_at_once(store):
    now = datetime.now(UTC)
    secret, record = mint_token(Role.GRID, None, now)
    cache = TokenCache()
    with pytest.raises(Unauthorized, match="unknown token"):
        await authenticate(store, bearer(secret), now, cache)
    await store.put_token(record)
    assert (await authenticate(store, bearer(secret), now, cache)).role is Role.GRID


async def test_concurrent_requests_with_an_uncached_token_share_one_read(store, monkeypatch):
    now = datetime.now(UTC)
    secret = await create_token(store, Role.GRID, None, now)
    reads = count_reads(monkeypatch, store)
    cache = TokenCache()
    principals = await asyncio.gather(*(authenticate(store, bearer(secret), now, cache) for _ in range(20)))
    assert {p.role for p in principals} == {Role.GRID}
    assert len(reads) == 1


async def test_the_cache_holds_at_most_its_size_dropping_the_oldest_read(store, monkeypatch):
    now = datetime.now(UTC)
    secrets = [await create_token(store, Role.GRID, None, now) for _ in range(3)]
    reads = count_reads(monkeypatch, store)
    cache = TokenCache(max_tokens=2)
    for secret in secrets:
        await cache.record(store, hash_token(secret))
    assert len(cache) == 2
    await cache.record(store, hash_token(secrets[2]))  # newest: still held
    assert len(reads) == 3
    await cache.record(store, hash_token(secrets[0]))  # oldest: dropped, read again
    assert len(reads) == 4


def test_cache_settings_are_checked():
    with pytest.raises(ValueError, match="ttl_s"):
        TokenCache(ttl_s=-1.0)
    with pytest.raises(ValueError, match="max_tokens"):
        TokenCache(max_tokens=0)
