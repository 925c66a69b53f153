"""The market simulator clears the plant's bids and its events arrive through the real API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from simulators.market import MarketSpec, clear_round, dispatch_instructions, run_round
from tests.vpp.harness import make_plant
from vpp.api.app import make_app
from vpp.auth import create_token
from vpp.model import Role

START = datetime(2026, 7, 1, 4, 0, tzinfo=UTC)


def _rows(up: list[float], down: list[float]) -> list[dict]:
    return [
        {"start": (START + timedelta(minutes=15 * k)).isoformat(), "end": (START + timedelta(minutes=15 * (k + 1))).isoformat(),
         "up_kw": u, "down_kw": d}
        for k, (u, d) in enumerate(zip(up, down))
    ]


def test_clearing_awards_the_plant_within_its_envelope_and_is_reproducible():
    rows = _rows([800.0] * 8, [300.0] * 8)
    spec = MarketSpec(seed=11, event_probability=0.8)
    result = clear_round(rows, spec)
    again = clear_round(rows, spec)
    assert np.array_equal(result.plant_up_kw, again.plant_up_kw)
    assert (result.plant_up_kw <= 800.0 + 1e-9).all() and (result.plant_down_kw <= 300.0 + 1e-9).all()
    assert result.plant_up_kw.sum() > 0  # the plant (0.33 CNY/kWh) undercuts most rivals
    assert not ((result.up_demand_kw > 0) & (result.down_demand_kw > 0)).any()
    assert (np.isnan(result.up_price_cny_per_mwh) == (result.up_demand_kw == 0)).all()
    won = result.plant_up_kw > 0
    assert (result.up_price_cny_per_mwh[won] >= 330.0 - 1e-9).all()  # cost × (1 + markup) in CNY/MWh


def test_awards_become_merged_delta_instructions():
    rows = _rows([500.0] * 4, [200.0] * 4)
    result = clear_round(rows, MarketSpec(seed=1))
    fixed = type(result)(
        result.starts, np.array([100.0, 100.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 50.0]),
        result.up_price_cny_per_mwh, result.down_price_cny_per_mwh, result.up_demand_kw, result.down_demand_kw,
    )
    instructions = dispatch_instructions(fixed, prefix="t")
    assert [(i["delta_kw"], i["start"], i["end"]) for i in instructions] == [
        (100.0, rows[0]["start"], rows[2]["start"]), (-50.0, rows[3]["start"], rows[3]["end"]),
    ]
    assert instructions[0]["id"] == "t-20260701T0400Z"


async def test_market_events_arrive_through_the_api(tmp_path):
    plant = await make_plant(tmp_path)
    server = TestServer(make_app(plant.service), host="127.0.0.1")
    await server.start_server()
    try:
        token = await create_token(plant.store, Role.GRID, None, plant.clock.now())
        spec = MarketSpec(seed=5, event_probability=1.0)
        _, answers = await run_round(str(server.make_url("")), token, spec, hours=2.0, prefix="mkt")
        assert answers and all(status == 201 for status, _ in answers)
        stored = {i.id: i for i, _ in await plant.store.list_instructions()}
        for _, body in answers:
            instruction = body["instruction"]
            assert stored[instruction["id"]].delta_kw == instruction["delta_kw"]
        assert sum(abs(b["instruction"]["delta_kw"]) for _, b in answers) > 0
        _, repeated = await run_round(str(server.make_url("")), token, spec, hours=2.0, prefix="mkt")
        assert [status for status, _ in repeated] == [200] * len(repeated)  # same ids, same content
    finally:
        await server.close()
        await plant.service.stop()
        await plant.store.close()


async def test_the_simulator_refuses_non_loopback_addresses():
    with pytest.raises(ValueError, match="loopback"):
        await run_round("http://192.0.2.1:8080", "token", MarketSpec())
