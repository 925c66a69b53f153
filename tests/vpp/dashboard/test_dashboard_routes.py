"""The dashboard as the service serves it: pages public and self-contained, data only through the token-protected API."""

from __future__ import annotations

import glob
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from vpp.api.app import make_app
from vpp.auth import create_token
from vpp.dashboard.routes import CONTENT_SECURITY_POLICY, static_dir
from vpp.model import Role

ROOT = Path(__file__).resolve().parents[3]
STATIC = static_dir()
OWN_FILES = [p for p in STATIC.rglob("*") if p.is_file() and "vendor" not in p.parts]


@pytest.fixture
async def client(plant):
    now = datetime.now(UTC)
    enterprise_id = plant.spec.enterprises[0].id
    tokens = {
        "grid": await create_token(plant.store, Role.GRID, None, now),
        "admin": await create_token(plant.store, Role.ADMIN, None, now),
        "enterprise": await create_token(plant.store, Role.ENTERPRISE, enterprise_id, now),
    }
    client = TestClient(TestServer(make_app(plant.service), host="127.0.0.1"))
    await client.start_server()
    yield client, tokens, enterprise_id
    await client.close()


async def test_whoami_tells_the_page_the_role_of_its_token(client):
    http, tokens, enterprise_id = client
    for role, expected in (("grid", None), ("admin", None), ("enterprise", enterprise_id)):
        response = await http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {tokens[role]}"})
        assert response.status == 200
        assert await response.json() == {"role": role, "enterprise_id": expected}
    assert (await http.get("/api/v1/whoami")).status == 401
    assert (await http.get("/api/v1/whoami", headers={"Authorization": "Bearer vpp_wrong"})).status == 401
    doc = await (await http.get("/api/v1/openapi.json")).json()
    assert "/api/v1/whoami" in doc["paths"]


async def test_pages_are_public_and_load_only_from_the_service(client):
    http, _, _ = client
    root = await http.get("/", allow_redirects=False)
    assert root.status == 302 and root.headers["Location"] == "/dashboard/"
    page = await http.get("/dashboard/")
    assert page.status == 200 and page.content_type == "text/html"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "connect-src 'self'" in CONTENT_SECURITY_POLICY
    html = await page.text()
    # Every asset the page and its modules name is served, from the service itself.
    referenced = re.findall(r'(?:src|href)="(static/[^"]+)"', html)
    for module in STATIC.joinpath("js").glob("*.js"):
        referenced += [f"static/js/{name}" for name in re.findall(r'from "\./([\w.]+)"', module.read_text())]
    assert "static/vendor/chart.umd.min.js" in referenced and "static/js/app.js" in referenced
    for path in sorted(set(referenced)):
        response = await http.get(f"/dashboard/{path}")
        assert response.status == 200, path
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert (await http.get("/dashboard/static/js/app.js")).content_type in ("application/javascript", "text/javascript")


async def test_static_files_serve_nothing_outside_their_folder(client):
    http, _, _ = client
    for path in ("/dashboard/static/../routes.py", "/dashboard/static/%2e%2e/routes.py", "/dashboard/static/nothing.js"):
        response = await http.get(path)
        assert response.status == 404, path
        assert "static_dir" not in await response.text()


def test_shipped_files_name_no_outside_address():
    for path in OWN_FILES:
        text = path.read_text(encoding="utf-8")
        assert re.search(r"https?://|//cdn|unpkg|jsdelivr", text) is None, f"{path.name} refers to an outside address"


def test_vendored_chart_library_ships_with_its_licence():
    vendor = STATIC / "vendor"
    assert vendor.joinpath("chart.umd.min.js").read_text(encoding="utf-8").startswith("/*!\n * Chart.js v4.6.1")
    for licence in ("chart.js-LICENSE.md", "kurkle-color-LICENSE.md"):
        assert "MIT License" in vendor.joinpath(licence).read_text(encoding="utf-8")


def test_package_data_covers_every_static_file():
    """setuptools expands package-data globs recursively from the package folder; every file must be matched."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["vpp.dashboard"]
    package = STATIC.parent
    matched = {Path(m) for pattern in patterns for m in glob.glob(pattern, root_dir=package, recursive=True)}
    shipped = {p.relative_to(package) for p in STATIC.rglob("*") if p.is_file()}
    assert shipped and shipped <= matched
