"""Bearer tokens with one role each; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from vpp.errors import Forbidden, Unauthorized
from vpp.model import ApiToken, Role
from vpp.store.base import Store

TOKEN_PREFIX = "vpp_"


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


def mint_token(role: Role, enterprise_id: str | None, now: datetime, label: str = "") -> tuple[str, ApiToken]:
    """A new random secret and the record to store for it. The secret is shown once, never stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        token_sha256=hash_token(secret), role=role, enterprise_id=enterprise_id, created_at=now, label=label
    )
    return secret, record


async def create_token(store: Store, role: Role, enterprise_id: str | None, now: datetime, label: str = "") -> str:
    """Mint a token, store its hash, return the secret."""
    secret, record = mint_token(role, enterprise_id, now, label)
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


async def authenticate(store: Store, authorization: str | None) -> Principal:
    """Resolve a request's Authorization header to a ``Principal``."""
    record = await store.get_token(hash_token(bearer_secret(authorization)))
    if record is None or record.revoked:
        raise Unauthorized("unknown or revoked token")
    return Principal(role=record.role, enterprise_id=record.enterprise_id)
