"""Bearer tokens with one role each; only their SHA-256 is stored.

Lifecycle: minted (``vpp token create``, optionally ``--days N`` until it
expires), used, and revoked (``vpp token revoke``). A revoked or expired token
is refused with 401 and a message saying which; its record stays for audit.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from vpp.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from vpp.model import ApiToken, Role
from vpp.store.base import Store

TOKEN_PREFIX = "vpp_"
MIN_HASH_PREFIX = 8
"""Fewest hex digits of a token hash that name it in ``vpp token revoke`` [-]."""


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


async def authenticate(store: Store, authorization: str | None, now: datetime) -> Principal:
    """Resolve a request's Authorization header to a ``Principal`` at ``now`` (wall-clock UTC).

    Raises ``Unauthorized`` for a missing, unknown, revoked or expired token, saying which.
    """
    record = await store.get_token(hash_token(bearer_secret(authorization)))
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
    if not re.fullmatch(r"[0-9a-f]{%d,64}" % MIN_HASH_PREFIX, prefix):
        raise InvalidInput("token", f"give the secret ({TOKEN_PREFIX}…) or at least {MIN_HASH_PREFIX} hex digits of its hash")
    matches = [t for t in await store.list_tokens() if t.token_sha256.startswith(prefix)]
    if not matches:
        raise NotFound(f"no token hash starts with {prefix}")
    if len(matches) > 1:
        raise InvalidInput("token", f"{len(matches)} token hashes start with {prefix}; give more digits")
    return matches[0]


async def revoke_token(store: Store, reference: str, now: datetime) -> tuple[ApiToken, bool]:
    """Revoke the token ``reference`` names (see ``find_token``) at ``now``.

    Returns the record as stored and whether this call revoked it (False: it already was).
    """
    record = await find_token(store, reference)
    if record.revoked:
        return record, False
    revoked = record.model_copy(update={"revoked": True, "revoked_at": now})
    await store.put_token(revoked)
    return revoked, True
