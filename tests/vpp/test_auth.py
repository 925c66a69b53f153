"""Tokens: only hashes stored; roles and enterprise binding enforced."""

from datetime import datetime, timezone

import pytest

from vpp.auth import Principal, bearer_secret, hash_token, mint_token
from vpp.errors import Forbidden, Unauthorized
from vpp.model import Role

NOW = datetime(2026, 7, 1, tzinfo=timezone.utc)


def test_minted_secret_is_not_stored_only_its_hash():
    secret, record = mint_token(Role.GRID, None, NOW)
    assert secret not in record.model_dump_json()
    assert record.token_sha256 == hash_token(secret)
    assert mint_token(Role.GRID, None, NOW)[0] != secret


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer"])
def test_malformed_authorization_headers_are_unauthorized(header):
    with pytest.raises(Unauthorized):
        bearer_secret(header)


def test_enterprise_principal_reaches_only_its_own_enterprise():
    me = Principal(Role.ENTERPRISE, "e1")
    me.require_enterprise("e1")
    with pytest.raises(Forbidden):
        me.require_enterprise("e2")
    Principal(Role.ADMIN).require_enterprise("e2")
    with pytest.raises(Forbidden):
        Principal(Role.GRID).require_enterprise("e1")


def test_roles_are_checked():
    Principal(Role.GRID).require(Role.GRID, Role.ADMIN)
    with pytest.raises(Forbidden, match="role 'enterprise' may not do this"):
        Principal(Role.ENTERPRISE, "e1").require(Role.GRID, Role.ADMIN)


def test_cli_progress_line_shows_the_change_asked_and_delivered():
    from vpp.cli import _progress_line

    line = _progress_line({"updated_at": "t", "status": "active", "requested_kw": -8193.6, "baseline_kw": -8693.6,
                           "delivered_kw": 494.3, "delivered_kwh": 8.0, "requested_kwh": 8.1, "message": ""})
    assert "asked +500.0 kW, delivered +494.3 kW" in line and "(8.0 of 8.1 kWh)" in line
    waiting = _progress_line({"updated_at": "t", "status": "pending", "requested_kw": None, "baseline_kw": None, "message": ""})
    assert "waiting for its start" in waiting
