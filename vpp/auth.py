"""Bearer tokens with one role each; only their SHA-256 is stored.

Lifecycle: minted (``vpp token create``, optionally ``--days N`` until it
expires), used, and revoked (``vpp token revoke``). A revoked or expired token
is refused with 401 and a message saying which; its record stays for audit.

The API keeps records it read to authenticate requests for
``TOKEN_CACHE_TTL_S`` in its ``TokenCache`` (at most ``TOKEN_CACHE_SIZE`` of
them), so a busy API does not read the store once per request:

* expiry is checked on every request against the record's ``expires_at``,
  cached or not: an expired token is refused from its expiry instant on;
* a revocation (``vpp token revoke``, a process of its own) is refused by a
  running API within ``TOKEN_CACHE_TTL_S``; ``revoke_token`` given the cache
  drops the record from it at once;
* unknown tokens are never cached: a token created a moment ago works at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vpp.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from vpp.model import ApiToken, Role
from vpp.store.base import Store

TOKEN_PREFIX = "vpp_"
MIN_HASH_PREFIX = 8
"""Fewest hex digits of a token hash that name it in ``vpp token revoke`` [-]."""

TOKEN_CACHE_TTL_S = 2.0
"""Longest a token record read from the store is reused to authenticate requests [s]; bounds how late
a revocation written by another process is seen (the same process's ``revoke_token`` takes effect at once)."""

TOKEN_CACHE_SIZE = 1024
"""Most token records one store's cache holds [-]; beyond it the oldest read is dropped."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a role, and for enterprise tokens the enterprise it is bound to."""

    role: Role
    enterprise_id: str | None = None

    def require(self, *roles: Role) -> None:
        """Raise ``Forbidden`` unless the caller has one of ``roles``."""
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"role '{self.role.value}' may not do this; needs one of: {allowed}")

    def require_enterprise(self, enterprise_id: str) -> None:
        """Admins see every enterprise; an enterprise token only its own. Others are refused."""
        if self.role is Role.ADMIN:
            return
        if self.role is Role.ENTERPRISE and self.enterprise_id == enterprise_id:
            return
        # Same answer whether or not the enterprise exists: a token learns nothing about others.
        raise Forbidden("this token may not read or change that enterprise")


def hash_token(secret: str) -> str:
    """SHA-256 hex digest of a token secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def mint_token(
    role: Role, enterprise_id: str | None, now: datetime, label: str = "", valid_for: timedelta | None = None
) -> tuple[str, ApiToken]:
    """A new random secret and the record to store for it. The secret is shown once, never stored.

    ``valid_for`` [s, as a timedelta]: the token expires that long after ``now``; None = never.
    """
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        token_sha256=hash_token(secret), role=role, enterprise_id=enterprise_id, created_at=now, label=label,
        expires_at=None if valid_for is None else now + valid_for,
    )
    return secret, record


async def create_token(
    store: Store, role: Role, enterprise_id: str | None, now: datetime, label: str = "", valid_for: timedelta | None = None
) -> str:
    """Mint a token, store its hash, return the secret."""
    secret, record = mint_token(role, enterprise_id, now, label, valid_for)
    await store.put_token(record)
    return secret


def bearer_secret(authorization: str | None) -> str:
    """The secret of an ``Authorization: Bearer …`` header. Raises ``Unauthorized`` if absent or malformed."""
    if not authorization:
        raise Unauthorized("missing 'Authorization: Bearer <token>' header")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return secret.strip()


class TokenCache:
    """Token records of one store, each reused for ``ttl_s`` after the read that fetched it.

    Concurrent requests with a token not cached share one store read. ``forget``
    drops a record and voids every read still in flight, so a record read before
    a revocation is never cached after it. Unknown tokens (no record) are not cached.
    """

    def __init__(self, ttl_s: float = TOKEN_CACHE_TTL_S, max_tokens: int = TOKEN_CACHE_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl_s >= 0:
            raise ValueError(f"ttl_s {ttl_s} must be >= 0")
        if max_tokens < 1:
            raise ValueError(f"max_tokens {max_tokens} must be >= 1")
        self._ttl_s = ttl_s
        self._max_tokens = max_tokens
        self._clock = clock
        self._records: dict[str, tuple[ApiToken, float]] = {}  # hash -> (record, monotonic time its read started [s])
        self._reading: dict[tuple[str, int], asyncio.Future[ApiToken | None]] = {}  # (hash, generation) -> read in flight
        self._generation = 0  # bumped by forget: reads started before it may not fill the cache

    def __len__(self) -> int:
        return len(self._records)

    async def record(self, store: Store, token_sha256: str) -> ApiToken | None:
        """The record with this hash: cached when read less than ``ttl_s`` ago, else read from ``store``."""
        cached = self._records.get(token_sha256)
        if cached is not None and self._clock() - cached[1] < self._ttl_s:
            return cached[0]
        key = (token_sha256, self._generation)
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read(store, key))
            reading.add_done_callback(_retrieve_outcome)
            self._reading[key] = reading
        # Shielded: a caller that goes away does not cancel the read the others wait for.
        return await asyncio.shield(reading)

    def forget(self, token_sha256: str) -> None:
        """Drop the cached record of this hash; reads in flight return their record but do not cache it."""
        self._records.pop(token_sha256, None)
        self._generation += 1

    async def _read(self, store: Store, key: tuple[str, int]) -> ApiToken | None:
        token_sha256, generation = key
        started = self._clock()
        try:
            record = await store.get_token(token_sha256)
        finally:
            self._reading.pop(key, None)
        if record is not None and generation == self._generation:
            self._keep(token_sha256, record, started)
        return record

    def _keep(self, token_sha256: str, record: ApiToken, read_at: float) -> None:
        self._records.pop(token_sha256, None)  # re-inserted last: the dict's order is the order of reads
        if len(self._records) >= self._max_tokens:
            del self._records[next(iter(self._records))]
        self._records[token_sha256] = (record, read_at)


def _retrieve_outcome(future: asyncio.Future) -> None:
    # A read whose callers all went away still has its error looked at (no "never retrieved" report).
    if not future.cancelled():
        future.exception()


async def authenticate(store: Store, authorization: str | None, now: datetime, cache: TokenCache | None = None) -> Principal:
    """Resolve a request's Authorization header to a ``Principal`` at ``now`` (wall-clock UTC).

    With a ``cache`` (the API's, see the module's notes) the record may come
    from it; its revocation and ``expires_at`` are checked against ``now`` on
    every call. Raises ``Unauthorized`` for a missing, unknown, revoked or
    expired token, saying which.
    """
    sha = hash_token(bearer_secret(authorization))
    record = await (cache.record(store, sha) if cache is not None else store.get_token(sha))
    if record is None:
        raise Unauthorized("unknown token")
    refusal = record.refusal(now)
    if refusal is not None:
        raise Unauthorized(refusal)
    return Principal(role=record.role, enterprise_id=record.enterprise_id)


async def find_token(store: Store, reference: str) -> ApiToken:
    """The one token a secret or a hash prefix (at least ``MIN_HASH_PREFIX`` hex digits) names.

    Raises ``InvalidInput`` for a malformed or ambiguous reference, ``NotFound`` when none matches.
    """
    reference = reference.strip()
    if reference.startswith(TOKEN_PREFIX):
        record = await store.get_token(hash_token(reference))
        if record is None:
            raise NotFound("no stored token has that secret")
        return record
    prefix = reference.lower()
    if not re.fullmatch(rf"[0-9a-f]{{{MIN_HASH_PREFIX},64}}", prefix):
        raise InvalidInput("token", f"give the secret ({TOKEN_PREFIX}…) or at least {MIN_HASH_PREFIX} hex digits of its hash")
    matches = [t for t in await store.list_tokens() if t.token_sha256.startswith(prefix)]
    if not matches:
        raise NotFound(f"no token hash starts with {prefix}")
    if len(matches) > 1:
        raise InvalidInput("token", f"{len(matches)} token hashes start with {prefix}; give more digits")
    return matches[0]


async def revoke_token(
    store: Store, reference: str, now: datetime, cache: TokenCache | None = None
) -> tuple[ApiToken, bool]:
    """Revoke the token ``reference`` names (see ``find_token``) at ``now``; drop it from ``cache`` if given.

    Returns the record as stored and whether this call revoked it (False: it already was).
    """
    record = await find_token(store, reference)
    if record.revoked:
        return record, False
    revoked = record.model_copy(update={"revoked": True, "revoked_at": now})
    try:
        await store.put_token(revoked)
    finally:
        if cache is not None:
            # Also when the write failed: it may have landed, and a read costs less than a token honoured too long.
            cache.forget(record.token_sha256)
    return revoked, True
