"""Network limits: the config file, measured grid exchange, and the live dispatch keeping to them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.vpp.harness import make_plant
from vpp.errors import InvalidInput
from vpp.model import DispatchInstruction, MeteringPoint, MeterReading
from vpp.network import (
    Feeder,
    GridLimit,
    NetworkConfig,
    exchange_kw,
    fleet_caps,
    fleet_range_kw,
    load_network,
)

T0 = datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)


def test_a_network_file_is_read_from_toml_and_json(tmp_path):
    toml = tmp_path / "network.toml"
    toml.write_text(
        '[connection]\nimport_limit_kw = 12000\nexport_limit_kw = 2000\n\n'
        '[[feeders]]\nid = "F1"\nenterprise_ids = ["e01", "e02"]\nimport_limit_kw = 3000\n'
    )
    network = load_network(toml)
    assert network.connection.import_limit_kw == 12000 and network.feeders[0].export_limit_kw is None
    assert network.limited
    json_file = tmp_path / "network.json"
    json_file.write_text(network.model_dump_json())
    assert load_network(json_file) == network
    assert not NetworkConfig().limited


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('[[feeders]]\nid = "F1"\nenterprise_ids = ["e01"]\n[[feeders]]\nid = "F2"\nenterprise_ids = ["e01"]\n',
         "network", "on both 'F1' and 'F2'"),
        ('[connection]\nimport_limit_kw = -5\n', "network.connection.import_limit_kw", "greater than or equal to 0"),
        ('[[feeders]]\nid = "F1"\nenterprise_ids = []\n', "network.feeders.0.enterprise_ids", "at least 1"),
        ('[connection]\nimport_limt_kw = 5\n', "network.connection.import_limt_kw", "Extra inputs"),
        ('[connection\n', "network", "not valid toml"),
    ],
)
def test_a_bad_network_file_names_the_field(tmp_path, text, field, words):
    path = tmp_path / "network.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as caught:
        load_network(path)
    assert caught.value.field == field
    assert words in caught.value.message


def test_a_missing_network_file_is_an_input_error(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read"):
        load_network(tmp_path / "absent.toml")


def test_exchange_is_the_mean_net_import_of_each_enterprise_grid_meters():
    meters = [
        MeteringPoint(id="m1", enterprise_id="e1"),
        MeteringPoint(id="m2", enterprise_id="e1"),
        MeteringPoint(id="g1", enterprise_id="e1", purpose="generation"),
        MeteringPoint(id="m3", enterprise_id="e2"),
        MeteringPoint(id="m4", enterprise_id="e3"),
    ]
    minute = T0 + timedelta(minutes=1)
    previous = {
        "m1": MeterReading(meter_id="m1", ts=T0, import_kwh=100.0, export_kwh=0.0),
        "m2": MeterReading(meter_id="m2", ts=T0, import_kwh=0.0, export_kwh=50.0),
        "m3": MeterReading(meter_id="m3", ts=T0, import_kwh=10.0, export_kwh=10.0),
    }
    latest = {
        "m1": MeterReading(meter_id="m1", ts=minute, import_kwh=110.0, export_kwh=0.0),  # 10 kWh/min = 600 kW
        "m2": MeterReading(meter_id="m2", ts=minute, import_kwh=0.0, export_kwh=52.0),  # 2 kWh/min exported
        "m3": MeterReading(meter_id="m3", ts=minute, import_kwh=10.0, export_kwh=15.0),
        "m4": MeterReading(meter_id="m4", ts=minute, import_kwh=1.0, export_kwh=0.0),  # only one reading
        "g1": MeterReading(meter_id="g1", ts=minute, import_kwh=0.0, export_kwh=999.0),
    }
    assert exchange_kw(meters, previous, latest) == pytest.approx({"e1": 600.0 - 120.0, "e2": -300.0})


@given(
    uncontrolled_kw=st.floats(-5000, 5000),
    import_limit_kw=st.none() | st.floats(0, 5000),
    export_limit_kw=st.none() | st.floats(0, 5000),
    where=st.floats(0, 1),
)
def test_any_fleet_power_in_the_range_keeps_the_exchange_within_the_limits(
    uncontrolled_kw, import_limit_kw, export_limit_kw, where
):
    low, high = fleet_range_kw(uncontrolled_kw, import_limit_kw, export_limit_kw)
    assert low <= high
    fleet_kw = low + where * (high - low) if np.isfinite(low) and np.isfinite(high) else (
        low if np.isfinite(low) else high if np.isfinite(high) else 0.0
    )
    grid_import_kw = uncontrolled_kw - fleet_kw
    slack = 1e-9 * (1 + abs(uncontrolled_kw) + abs(fleet_kw))
    if import_limit_kw is not None:
        assert grid_import_kw <= import_limit_kw + slack
    if export_limit_kw is not None:
        assert -grid_import_kw <= export_limit_kw + slack


def test_fleet_caps_follow_the_feeders_and_leave_unmeasured_ones_open():
    network = NetworkConfig(
        connection=GridLimit(import_limit_kw=1000.0),
        feeders=[
            Feeder(id="F1", enterprise_ids=["e1", "e2"], import_limit_kw=300.0, export_limit_kw=100.0),
            Feeder(id="F2", enterprise_ids=["e3"], import_limit_kw=50.0),
        ],
    )
    # e1 imports 200 kW while its fleet produces 50 kW: 250 kW of load the fleet does not control.
    caps, unmeasured = fleet_caps(
        network, ["e1", "e2", "e3", "e4"], {"e1": 50.0, "e2": -20.0}, {"e1": 200.0, "e2": 30.0, "e4": 10.0}
    )
    assert caps.group_of.tolist() == [0, 0, 1, -1]
    # F1 carries 250 + 10 = 260 kW uncontrolled: the fleet may go down to 260 - 300 and up to 260 + 100.
    assert (caps.group_min_kw[0], caps.group_max_kw[0]) == pytest.approx((-40.0, 360.0))
    assert unmeasured == ["F2", "connection"]  # e3 has no measurement
    assert np.isinf(caps.group_min_kw[1]) and np.isinf(caps.total_min_kw)


async def _feeder_run(tmp_path, network: NetworkConfig | None, delta_kw: float):
    plant = await make_plant(tmp_path, network=network)
    await plant.run(130)  # two meter readings: the exchange is measured
    start = plant.clock.now()
    instruction = DispatchInstruction(
        id="raise", kind="delta", start=start, end=start + timedelta(minutes=15), delta_kw=delta_kw
    )
    await plant.service.submit_instruction(instruction)
    await plant.run(240)
    return plant


def _fleet_kw(plant, enterprises: set[str]) -> float:
    snapshot = plant.service.snapshot()
    return float(sum(p for e, p, ok in zip(snapshot.enterprise_ids, snapshot.p_kw, snapshot.fresh) if ok and e in enterprises))


async def test_a_feeder_import_limit_holds_while_other_feeders_take_over(tmp_path):
    # Unlimited first: how much of a 600 kW load increase lands on e01 + e03 (their batteries are cheapest).
    free = await _feeder_run(tmp_path / "free", None, -600.0)
    _, free_state = await free.service.instruction_view("raise")
    on_feeder = {"e01", "e03"}
    exchange = exchange_kw(free.service._meters, free.service._meter_prev, free.service._meter_last)
    free_feeder_import = exchange["e01"] + exchange["e03"]
    await free.store.close()

    # Probe the same park for the feeder's import before the instruction, then cap it 100 kW above.
    probe = await make_plant(tmp_path / "probe")
    await probe.run(130)
    before = exchange_kw(probe.service._meters, probe.service._meter_prev, probe.service._meter_last)
    await probe.store.close()
    limit_kw = before["e01"] + before["e03"] + 100.0
    assert free_feeder_import > limit_kw + 100.0, "unlimited, the feeder would take well over its cap"

    network = NetworkConfig(feeders=[Feeder(id="F1", enterprise_ids=sorted(on_feeder), import_limit_kw=limit_kw)])
    capped = await _feeder_run(tmp_path / "capped", network, -600.0)
    _, state = await capped.service.instruction_view("raise")
    exchange = exchange_kw(capped.service._meters, capped.service._meter_prev, capped.service._meter_last)
    # The meters (which also see the factories' own load moving) stay within a few percent of the cap ...
    assert exchange["e01"] + exchange["e03"] <= limit_kw * 1.05
    # ... and the other feeders' devices deliver the instruction all the same.
    assert state.delivered_kw == pytest.approx(free_state.delivered_kw, rel=0.05)
    assert state.shortfall_kw == pytest.approx(0.0, abs=1.0)
    await capped.store.close()


async def test_the_connection_export_limit_shows_as_shortfall(tmp_path):
    probe = await make_plant(tmp_path / "probe")
    await probe.run(130)
    park_import_kw = sum(exchange_kw(probe.service._meters, probe.service._meter_prev, probe.service._meter_last).values())
    up_kw = probe.service.plant()["available_up_kw"]
    await probe.store.close()
    # The park may export at most 100 kW: the fleet can add only (import + 100) kW of generation.
    allowed_kw = park_import_kw + 100.0
    assert up_kw > allowed_kw + 200.0, "the test needs more upward flexibility than the limit allows"
    network = NetworkConfig(connection=GridLimit(export_limit_kw=100.0))
    plant = await _feeder_run(tmp_path / "capped", network, up_kw)
    _, state = await plant.service.instruction_view("raise")
    exchange = exchange_kw(plant.service._meters, plant.service._meter_prev, plant.service._meter_last)
    # The meters (which also see the factories' own load moving) show at most about 100 kW exported ...
    assert -sum(exchange.values()) <= 100.0 + 0.05 * allowed_kw
    # ... what the limit took is reported as shortfall, and the two add up to the request.
    assert state.delivered_kw == pytest.approx(allowed_kw, rel=0.1)
    assert state.shortfall_kw > 0.5 * (up_kw - allowed_kw)
    assert state.delivered_kw + state.shortfall_kw == pytest.approx(up_kw, rel=0.05)
    await plant.store.close()


def test_the_example_network_of_the_demo_park_is_valid():
    from pathlib import Path

    from simulators.park import build_park

    network = load_network(Path(__file__).resolve().parents[2] / "docs" / "examples" / "network.toml")
    demo_enterprises = {e.id for e in build_park(seed=7, n_enterprises=20).enterprises}
    assert {e for f in network.feeders for e in f.enterprise_ids} <= demo_enterprises
    assert network.limited


def test_serve_refuses_a_bad_network_file_before_starting(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "network.toml"
    bad.write_text('[connection]\nexport_limit_kw = "lots"\n')
    done = subprocess.run(
        [sys.executable, "-m", "vpp.cli", "serve", "--demo", "--port", "0", "--network", str(bad),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "network.connection.export_limit_kw" in done.stderr
    assert not (tmp_path / "data").exists(), "nothing was started or written"
