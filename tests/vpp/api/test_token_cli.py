"""``vpp token create --days``, ``vpp token list`` and ``vpp token revoke`` on a real store, and the API's answer after."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from tests.vpp.api.security_support import start_client
from vpp.auth import TOKEN_CACHE_TTL_S, create_token, hash_token, revoke_token
from vpp.cli import main
from vpp.model import Role
from vpp.store import SqliteStore


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_and_revoke_from_the_command_line(tmp_path, capsys):
    data = ["--data-dir", str(tmp_path)]
    code, grid_secret, _ = _run(capsys, "token", "create", "--role", "grid", "--label", "dispatch centre", "--days", "30", *data)
    assert code == 0
    grid_secret = grid_secret.strip()
    code, admin_secret, _ = _run(capsys, "token", "create", "--role", "admin", *data)
    admin_secret = admin_secret.strip()

    code, listing, _ = _run(capsys, "token", "list", *data)
    assert code == 0
    assert grid_secret not in listing and admin_secret not in listing  # never a secret
    header, *rows = listing.splitlines()
    assert header.split() == ["hash", "label", "role", "enterprise", "created", "expires", "revoked"]
    grid_row = next(r for r in rows if r.startswith(hash_token(grid_secret)[:12]))
    assert "dispatch centre" in grid_row and " grid " in grid_row and grid_row.rstrip().endswith("no")
    assert "never" in next(r for r in rows if r.startswith(hash_token(admin_secret)[:12]))

    code, out, _ = _run(capsys, "token", "revoke", hash_token(grid_secret)[:10], *data)
    assert code == 0 and out.strip() == f"token {hash_token(grid_secret)[:12]} (grid, dispatch centre) revoked"
    code, out, _ = _run(capsys, "token", "revoke", grid_secret, *data)
    assert code == 0 and out.strip().endswith("was already revoked")
    code, _, err = _run(capsys, "token", "revoke", "abc", *data)
    assert code == 2 and "at least 8 hex digits" in err
    code, _, err = _run(capsys, "token", "create", "--role", "grid", "--days", "0", *data)
    assert code == 2 and "--days must be more than 0" in err

    record = asyncio.run(_token(tmp_path, hash_token(grid_secret)))
    assert record.revoked and record.revoked_at is not None
    assert (record.expires_at - record.created_at).days == 30


async def _token(tmp_path, sha):
    async with SqliteStore(tmp_path / "vpp.sqlite3") as store:
        return await store.get_token(sha)


@pytest.mark.parametrize("revoke_with", ["secret", "hash prefix"])
async def test_a_token_revoked_from_the_command_line_is_refused_by_the_running_api(plant, capsys, revoke_with):
    secret = await create_token(plant.store, Role.GRID, None, datetime.now(timezone.utc))
    client = await start_client(plant)
    try:
        headers = {"Authorization": f"Bearer {secret}"}
        assert (await client.get("/api/v1/plant", headers=headers)).status == 200
        reference = secret if revoke_with == "secret" else hash_token(secret)[:8]
        async with SqliteStore(plant.store.path) as own_store:  # as `vpp token revoke` does, from a process of its own
            await revoke_token(own_store, reference, datetime.now(timezone.utc))
        await asyncio.sleep(TOKEN_CACHE_TTL_S)  # the running API reuses a token record at most this long
        refused = await client.get("/api/v1/plant", headers=headers)
        assert refused.status == 401
        assert (await refused.json())["error"]["message"].startswith("token was revoked at ")
    finally:
        await client.close()
