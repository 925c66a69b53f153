"""The dashboard in a real browser (Debian's Chromium via Playwright) against a real `vpp serve --demo`.

Each role signs in with its demo token; the grid sends an instruction through
its form while the admin's page, never reloaded, shows the plant's net power
move; an enterprise enrols a device through the form after seeing the
service's field error next to the field, and sees nothing of any other
enterprise; the fleet table pages through a park of over a thousand devices.
Screenshots go to test-output/screenshots/.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from tests.vpp.dashboard.conftest import data_value, open_dashboard, sign_in

OTHER_ENTERPRISE = re.compile(r"\be0[2-8]\b")  # the demo token is bound to e01


def _same_origin(session, url: str) -> list[str]:
    """Requests of the page that went anywhere but the service (data: URLs aside)."""
    origin = urlsplit(url).netloc
    return [u for u in session.requests if not u.startswith("data:") and urlsplit(u).netloc != origin]


async def _api(demo, path: str, role: str) -> dict:
    """GET a JSON answer of the demo's API with the role's demo token."""
    headers = {"Authorization": f"Bearer {demo.tokens[role]}"}
    async with aiohttp.ClientSession() as http, http.get(f"{demo.url}{path}", headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_admin_sees_the_live_plant_move_when_the_grid_dispatches(demo, browser, screenshots):
    admin = await sign_in(browser, demo.url, demo.tokens["admin"])
    grid = await sign_in(browser, demo.url, demo.tokens["grid"])
    assert await admin.page.text_content("#role") == "admin" and await grid.page.text_content("#role") == "grid"
    # The admin sees every part of the park; the grid its capability, envelope and instructions.
    for section in ("#plant", "#events", "#targets", "#carbon", "#settlement-card", "#fleet-card"):
        assert await admin.page.is_visible(section), section
    for section in ("#plant", "#envelope", "#send", "#events"):
        assert await grid.page.is_visible(section), section
    await admin.page.wait_for_selector("#settlement-table")
    assert await admin.page.locator("#settlement-table tbody tr").count() == 9  # 8 enterprises and the park
    await admin.page.wait_for_selector("#carbon-chart")
    await admin.page.evaluate("window.__not_reloaded = true")

    up_kw = await data_value(grid.page, "#up-kw")
    delta_kw = round(0.5 * up_kw, 1)
    assert delta_kw > 100
    await grid.page.fill("#instruction-kw", str(delta_kw))
    await grid.page.fill("#instruction-minutes", "30")
    await grid.page.fill("#instruction-id", "ui-dispatch-1")
    await grid.page.click("#instruction-submit")
    await grid.page.wait_for_selector("#instruction-error .message.ok")
    # The grid watches it delivered: the chosen instruction becomes active and its delivered power nears the request.
    await grid.page.wait_for_selector("#dispatch-status >> text=ui-dispatch-1")
    await grid.page.wait_for_function(
        "(d) => Number(document.querySelector('#dispatch-delivered')?.dataset.value) >= 0.9 * d", arg=delta_kw, timeout=45_000
    )
    assert await grid.page.text_content("#dispatch-state") == "active"
    # The admin's live figure moves with it, in the same page: no reload. It follows the fleet power the
    # instruction asks for (its baseline, the fleet when it started, plus the delta), not the figure before
    # the click: the park's own load and schedule move the baseline a little meanwhile.
    requested_kw = (await _api(demo, "/api/v1/dispatch/ui-dispatch-1", "grid"))["state"]["requested_kw"]
    await admin.page.wait_for_function(
        "([target, d]) => Math.abs(Number(document.querySelector('#net-kw').dataset.value) - target) <= 0.1 * d",
        arg=[requested_kw, delta_kw], timeout=45_000,
    )
    assert await admin.page.evaluate("window.__not_reloaded") is True
    assert await admin.page.text_content("#active") == "ui-dispatch-1"
    await admin.page.wait_for_selector("#dispatch-rows tr[data-instruction='ui-dispatch-1']")

    await grid.page.wait_for_timeout(2500)  # let the charts draw a few more points for the picture
    await admin.page.screenshot(path=screenshots / "admin.png", full_page=True)
    await grid.page.screenshot(path=screenshots / "grid.png", full_page=True)
    for session in (admin, grid):
        assert session.errors == []
        assert _same_origin(session, demo.url) == [], "the page loads nothing from outside the service"


async def test_grid_form_shows_the_services_error_next_to_the_field(demo, browser):
    grid = await sign_in(browser, demo.url, demo.tokens["grid"])
    await grid.page.select_option("#instruction-kind", "target")
    await grid.page.fill("#instruction-kw", "lots")
    await grid.page.click("#instruction-submit")
    await grid.page.wait_for_selector("#error-kw:not(:empty)")
    assert "valid number" in await grid.page.text_content("#error-kw")
    assert await grid.page.text_content("#error-end") == ""
    assert grid.errors == []


async def test_enterprise_enrols_a_device_through_the_form_after_a_field_error(demo, browser, screenshots):
    me = demo.enterprise_id
    session = await sign_in(browser, demo.url, demo.tokens["enterprise"])
    page = session.page
    assert (await page.text_content("#who")).split() == ["enterprise", me]
    await page.wait_for_selector("#devices-rows tr[data-device]")

    await page.select_option("#device-kind", "interruptible_load")
    await page.fill("#device-id", f"{me}-dash-load")
    await page.fill("#device-name", "Compressor hall 2")
    await page.fill("#device-rated_kw", "-5")
    await page.fill("#device-max_curtail_kw", "20")
    await page.fill("#device-protected_hours", "8-12")
    await page.click("#device-submit")
    await page.wait_for_selector("#error-rated_kw:not(:empty)")
    assert "greater than 0" in await page.text_content("#error-rated_kw")
    assert await page.get_attribute("#device-rated_kw", "aria-invalid") == "true"
    assert await page.text_content("#error-max_curtail_kw") == ""
    assert await page.locator(f"#devices-rows tr[data-device='{me}-dash-load']").count() == 0

    # A rule across fields comes back for the whole device; the form puts it at the field it names.
    await page.fill("#device-rated_kw", "120")
    await page.fill("#device-max_curtail_kw", "200")
    await page.click("#device-submit")
    await page.wait_for_selector("#error-max_curtail_kw:not(:empty)")
    assert "exceeds rated_kw" in await page.text_content("#error-max_curtail_kw")
    assert await page.text_content("#error-rated_kw") == ""

    await page.fill("#device-max_curtail_kw", "40")
    await page.click("#device-submit")
    await page.wait_for_selector("#device-form-error .message.ok")
    await page.wait_for_selector(f"#devices-rows tr[data-device='{me}-dash-load']")
    await page.wait_for_selector(f"#device-limits tr[data-device='{me}-dash-load'] >> text=8-12")
    stored = {d["id"]: d for d in (await _api(demo, f"/api/v1/enterprises/{me}/devices", "enterprise"))["devices"]}
    enrolled = stored[f"{me}-dash-load"]
    assert (enrolled["rated_kw"], enrolled["max_curtail_kw"], enrolled["name"]) == (120.0, 40.0, "Compressor hall 2")
    assert enrolled["protected_hours"] == [{"start_hour": 8, "end_hour": 12}]

    await page.wait_for_selector("#statement-table tbody tr[data-event]")
    await page.wait_for_selector("#green-days-chart")
    await page.screenshot(path=screenshots / "enterprise.png", full_page=True)
    assert session.errors == []


async def test_an_enterprise_sees_nothing_of_another(demo, browser):
    me = demo.enterprise_id
    # A wrong token is refused on the sign-in page itself.
    stranger = await open_dashboard(browser, demo.url)
    await stranger.page.fill("#token", "vpp_not-a-token")
    await stranger.page.click("#login-submit")
    await stranger.page.wait_for_selector("#token-error:not(:empty)")
    assert "not accepted" in await stranger.page.text_content("#token-error")
    assert await stranger.page.locator("#view > *").count() == 0

    session = await sign_in(browser, demo.url, demo.tokens["enterprise"])
    page = session.page
    await page.wait_for_selector("#statement-table")
    await page.wait_for_selector("#carbon-figures dl")
    # The view offers no other enterprise: no park-wide sections, no enterprise choice, no other id anywhere.
    for section in ("#plant", "#fleet-card", "#settlement-card", "#targets", "#carbon", "#send"):
        assert await page.locator(section).count() == 0, section
    assert await page.locator("#devices-enterprise").count() == 0
    text = await page.inner_text("body")
    assert OTHER_ENTERPRISE.search(text) is None, OTHER_ENTERPRISE.search(text)
    # Its CSV downloads hold its own rows only.
    for button, filename in (("#statement-csv", f"settlement-{me}-{demo.month}.csv"), ("#carbon-csv", f"carbon-{me}-{demo.month}.csv")):
        async with page.expect_download() as started:
            await page.click(button)
        download = await started.value
        assert download.suggested_filename == filename
        lines = Path(await download.path()).read_text().splitlines()
        assert len(lines) > 2 and OTHER_ENTERPRISE.search("\n".join(lines)) is None
    api_calls = [urlsplit(u).path for u in session.requests if "/api/v1/" in u]
    assert api_calls and all(p in ("/api/v1/whoami", "/api/v1/openapi.json") or p.startswith(f"/api/v1/enterprises/{me}")
                             for p in api_calls), api_calls  # fmt: skip
    # And the API refuses the enterprise's token anything else, from inside the page.
    statuses = await page.evaluate(
        """async ([token, paths]) => Promise.all(paths.map(async (p) =>
             (await fetch(p, {headers: {Authorization: `Bearer ${token}`}})).status))""",
        [demo.tokens["enterprise"], [
            "/api/v1/enterprises/e02/devices", f"/api/v1/enterprises/e02/settlement?month={demo.month}",
            f"/api/v1/enterprises/e02/carbon?month={demo.month}", "/api/v1/enterprises/nobody/devices",
            "/api/v1/plant?devices=true", f"/api/v1/park/settlement?month={demo.month}", "/api/v1/dispatch",
        ]],
    )  # fmt: skip
    assert statuses == [403] * 7
    assert session.errors == []


async def test_fleet_table_pages_through_a_thousand_devices(big_park, browser):
    admin = await sign_in(browser, big_park.url, big_park.tokens["admin"])
    page = admin.page
    enrolled = (await _api(big_park, "/api/v1/plant", "admin"))["devices_enrolled"]
    assert enrolled >= 1000
    await page.wait_for_function("(n) => document.querySelector('#fleet-summary').dataset.total === String(n)", arg=enrolled)
    # One page of rows in the document, however large the fleet.
    assert await page.locator("#fleet-rows tr").count() == 50
    summary = await page.text_content("#fleet-summary")
    assert summary.startswith(f"1–50 of {enrolled:,} devices")
    first_page = await page.locator("#fleet-rows tr").first.get_attribute("data-device")
    await page.click("#fleet-next")
    assert (await page.text_content("#fleet-summary")).startswith(f"51–100 of {enrolled:,}")
    assert await page.locator("#fleet-rows tr").first.get_attribute("data-device") != first_page

    # Filters narrow the table: one enterprise, then one kind, then a search.
    await page.select_option("#fleet-enterprise", "e100")
    rows = page.locator("#fleet-rows tr")
    count = await rows.count()
    assert 1 <= count < 50
    assert {await rows.nth(i).locator("td").nth(1).text_content() for i in range(count)} == {"e100"}
    await page.select_option("#fleet-enterprise", "")
    await page.select_option("#fleet-kind", "battery")
    kinds = await page.locator("#fleet-rows tr td:nth-child(3)").all_text_contents()
    assert kinds and set(kinds) == {"battery"}
    await page.select_option("#fleet-kind", "")
    await page.fill("#fleet-search", "e345-")
    devices = await page.locator("#fleet-rows tr").evaluate_all("rows => rows.map(r => r.dataset.device)")
    assert devices and all(d.startswith("e345-") for d in devices)

    # The live figures keep updating while the big table is on the page.
    note = await page.text_content("#net-kw-note")
    await page.wait_for_function("(n) => document.querySelector('#net-kw-note').textContent !== n", arg=note)
    assert admin.errors == []
