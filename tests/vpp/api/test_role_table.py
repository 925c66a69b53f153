"""Every route of the Route table against every kind of caller, in one table-driven test.

The table is derived from ``vpp.api.app.ROUTES``: a route added there is
called here with every caller, and a route registered on the app without an
entry in the table fails the test. Each route needs an example request below
(a new route without one fails too), so the test always sends something the
handler accepts once it lets the caller in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from tests.vpp.api.security_support import CALLERS, Callers, make_callers, start_client
from vpp.api.app import ROUTES
from vpp.api.openapi import role_table_markdown
from vpp.api.routes import Route
from vpp.model import DispatchInstruction, Role

INSTRUCTION_ID = "roles-1"
MONTH = "2026-06"  # a closed month of the park (its clock is at 2026-07-01)


@dataclass(frozen=True)
class Example:
    """A request the route's handler answers with one of ``ok`` once the caller is let in."""

    ok: frozenset[int]
    query: dict[str, str] = field(default_factory=dict)
    body: object = None


def examples(plant, callers: Callers) -> dict[tuple[str, str], Example]:
    start = plant.clock.now() + timedelta(minutes=30)
    instruction = {"id": "roles-dispatch", "kind": "delta", "start": start.isoformat(),
                   "end": (start + timedelta(minutes=15)).isoformat(), "delta_kw": 50.0}  # fmt: skip
    own_device = next(d for d in plant.spec.devices if d.enterprise_id == callers.own_enterprise)
    own = next(e for e in plant.spec.enterprises if e.id == callers.own_enterprise)
    ok, created_or_ok = frozenset({200}), frozenset({200, 201})
    not_recorded = frozenset({404})  # carbon of a month nobody ran: the handler answered, past the role check
    return {
        ("GET", "/healthz"): Example(ok),
        ("GET", "/metrics"): Example(ok),
        ("GET", "/api/v1/openapi.json"): Example(ok),
        ("GET", "/api/v1/plant"): Example(ok, {"devices": "true"}),
        ("GET", "/api/v1/plant/envelope"): Example(ok, {"hours": "2"}),
        ("GET", "/api/v1/plant/flexibility"): Example(
            frozenset({200, 409}),  # 409 until the first schedule is solved
            {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), "direction": "up"},
        ),
        ("POST", "/api/v1/dispatch"): Example(created_or_ok, body=instruction),
        ("GET", "/api/v1/dispatch"): Example(ok),
        ("GET", "/api/v1/dispatch/{instruction_id}"): Example(ok),
        ("GET", "/api/v1/enterprises"): Example(ok),
        ("POST", "/api/v1/enterprises"): Example(ok, body=own.model_dump(mode="json")),
        ("GET", "/api/v1/enterprises/{enterprise_id}"): Example(ok),
        ("GET", "/api/v1/enterprises/{enterprise_id}/devices"): Example(ok),
        ("POST", "/api/v1/enterprises/{enterprise_id}/devices"): Example(ok, body=own_device.model_dump(mode="json")),
        ("GET", "/api/v1/enterprises/{enterprise_id}/settlement"): Example(ok, {"month": MONTH}),
        ("GET", "/api/v1/park/settlement"): Example(ok, {"month": MONTH}),
        ("POST", "/api/v1/market/prices"): Example(
            frozenset({201}), body=[{"interval_start": "2026-07-01T00:00:00Z", "price_cny_per_mwh": 350.0}]
        ),
        ("POST", "/api/v1/park/costs"): Example(
            frozenset({201}), body={"month": MONTH, "kind": "platform_fee", "amount_cny": "120.50", "benefit_key": "consumption"}
        ),
        ("GET", "/api/v1/enterprises/{enterprise_id}/carbon"): Example(not_recorded, {"month": MONTH}),
        ("GET", "/api/v1/park/carbon"): Example(not_recorded, {"month": MONTH}),
        ("POST", "/api/v1/enterprises/{enterprise_id}/certificates/transfer"): Example(
            frozenset({422}), body={"certificate_ids": ["no-such-certificate"], "to_enterprise_id": callers.other_enterprise}
        ),  # not owned
        ("GET", "/api/v1/whoami"): Example(ok),
        ("GET", "/api/v1/enterprises/{enterprise_id}/certificates"): Example(ok),
        ("POST", "/api/v1/enterprises/{enterprise_id}/certificates/issue"): Example(
            frozenset({201}), body={"month": MONTH, "kind": "granular"}
        ),
        ("POST", "/api/v1/enterprises/{enterprise_id}/certificates/retire"): Example(
            frozenset({404, 422}), body={"month": MONTH, "certificate_ids": ["no-such-certificate"]}  # unknown id
        ),
    }


def expected(route: Route, caller: str, example: Example) -> frozenset[int]:
    """The statuses ``caller`` may get from ``route``."""
    if route.roles is None:
        return example.ok  # public: any token, even a dead one, is ignored
    if caller in ("anonymous", "revoked", "expired"):
        return frozenset({401})
    role = {"grid": Role.GRID, "admin": Role.ADMIN}.get(caller, Role.ENTERPRISE)
    if role not in route.roles:
        return frozenset({403})
    if caller == "enterprise_other" and "{enterprise_id}" in route.path:
        return frozenset({403})  # the path names the other enterprise (a route without one shows the caller's own)
    return example.ok


def registered(app: web.Application) -> set[tuple[str, str]]:
    """(method, canonical path) of every route the app serves (aiohttp's automatic HEAD of a GET left out)."""
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD" and r.resource is not None}


def static_files(app: web.Application) -> dict[str, str]:
    """Prefix of every static folder the app serves -> the URL of one real file in it."""
    urls = {}
    for resource in app.router.resources():
        if isinstance(resource, web.StaticResource):
            folder = resource.get_info()["directory"]
            first = min(p for p in folder.rglob("*") if p.is_file())
            urls[resource.canonical] = f"{resource.canonical}/{first.relative_to(folder).as_posix()}"
    return urls


def is_static_page(path: str) -> bool:
    """The web dashboard's public static files (its data comes only through the token-protected API)."""
    return path == "/" or path == "/dashboard" or path.startswith("/dashboard/")


async def test_every_route_answers_every_caller_as_its_roles_say(plant):
    callers = await make_callers(plant)
    start = plant.clock.now()
    await plant.service.submit_instruction(DispatchInstruction(
        id=INSTRUCTION_ID, kind="delta", start=start, end=start + timedelta(minutes=15), delta_kw=20.0,
    ))  # fmt: skip
    table = examples(plant, callers)
    client = await start_client(plant)
    try:
        served = registered(client.server.app)
        in_table = {(r.method, r.path) for r in ROUTES}
        assert not [p for m, p in served - in_table if not is_static_page(p)], "routes served without a Route entry"
        assert in_table <= served
        assert set(table) == in_table, f"example requests missing for {sorted(in_table - set(table))}"
        wrong = []
        for route in ROUTES:
            example = table[(route.method, route.path)]
            path = route.path.format(enterprise_id=callers.own_enterprise, instruction_id=INSTRUCTION_ID)
            for caller in CALLERS:
                want = expected(route, caller, example)
                answer = await client.request(
                    route.method, path, params=example.query, headers=callers.headers(caller),
                    json=example.body if route.method == "POST" else None,
                )
                body = await answer.read()
                if answer.status not in want:
                    wrong.append(f"{route.method} {path} as {caller}: {answer.status} not in {sorted(want)}: {body[:200]!r}")
                if caller == "enterprise_other" and answer.status == 403 and Role.ENTERPRISE in (route.roles or ()):
                    # The same words whether or not the enterprise exists: another enterprise learns nothing.
                    assert b"this token may not read or change that enterprise" in body
        files = static_files(client.server.app)
        pages = sorted(p for _, p in served - in_table if is_static_page(p) and p not in files)
        for page in pages + list(files.values()):
            for caller in CALLERS:  # public: the same answer for everyone, token or not
                answer = await client.get(page, headers=callers.headers(caller), allow_redirects=False)
                if answer.status not in (200, 302):
                    wrong.append(f"static GET {page} as {caller}: {answer.status}")
        assert wrong == []
    finally:
        await client.close()


async def test_a_refused_token_hears_why(plant):
    callers = await make_callers(plant)
    client = await start_client(plant)
    try:
        for caller, reason in (("revoked", "token was revoked at "), ("expired", "token expired at "),
                               ("anonymous", "missing 'Authorization: Bearer <token>' header")):  # fmt: skip
            answer = await client.get("/api/v1/plant", headers=callers.headers(caller))
            assert answer.status == 401
            assert (await answer.json())["error"]["message"].startswith(reason)
            assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="vpp", error="invalid_token"')
        unknown = await client.get("/api/v1/plant", headers={"Authorization": "Bearer vpp_made-up"})
        assert (await unknown.json())["error"]["message"] == "unknown token"
    finally:
        await client.close()


def test_docs_security_md_carries_the_current_role_table():
    text = (Path(__file__).resolve().parents[3] / "docs" / "security.md").read_text()
    assert role_table_markdown(ROUTES) in text, "regenerate with: python -m vpp.api.openapi --role-table"
