"""What the security tests share: the callers of every role, and a live app on loopback over the simulated park."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from aiohttp.test_utils import TestClient, TestServer

from tests.vpp.harness import Plant
from vpp.api.app import make_app
from vpp.api.limits import ApiSettings
from vpp.auth import create_token, mint_token, revoke_token
from vpp.model import Role

ROOMY = ApiSettings(rate_per_s=10_000.0, burst=100_000.0)
"""Limits no test of roles or schemas reaches; the limit tests set their own."""

CALLERS = ("anonymous", "grid", "enterprise_own", "enterprise_other", "admin", "revoked", "expired")


@dataclass
class Callers:
    """A secret per caller (None for anonymous) and the enterprise the ``enterprise_own`` token is bound to."""

    secrets: dict[str, str | None]
    own_enterprise: str
    other_enterprise: str

    def headers(self, caller: str) -> dict[str, str]:
        secret = self.secrets[caller]
        return {} if secret is None else {"Authorization": f"Bearer {secret}"}


async def make_callers(plant: Plant) -> Callers:
    """Tokens of every role; the revoked and expired ones are admin tokens, so only their state refuses them."""
    now = datetime.now(timezone.utc)  # tokens live on wall-clock time, not the park's simulated clock
    own, other = (e.id for e in plant.spec.enterprises[:2])
    store = plant.store
    revoked = await create_token(store, Role.ADMIN, None, now, "revoked admin")
    await revoke_token(store, revoked, now)
    expired, record = mint_token(Role.ADMIN, None, now - timedelta(days=2), "expired admin", valid_for=timedelta(days=1))
    await store.put_token(record)
    secrets = {
        "anonymous": None,
        "grid": await create_token(store, Role.GRID, None, now),
        "enterprise_own": await create_token(store, Role.ENTERPRISE, own, now),
        "enterprise_other": await create_token(store, Role.ENTERPRISE, other, now),
        "admin": await create_token(store, Role.ADMIN, None, now),
        "revoked": revoked,
        "expired": expired,
    }
    return Callers(secrets=secrets, own_enterprise=own, other_enterprise=other)


async def start_client(plant: Plant, settings: ApiSettings = ROOMY) -> TestClient:
    """An aiohttp test client of the app over ``plant``, its server on 127.0.0.1 and an ephemeral port."""
    client = TestClient(TestServer(make_app(plant.service, settings), host="127.0.0.1", port=0))
    await client.start_server()
    return client
