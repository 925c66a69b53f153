"""The device attribute table is read off the model and docs/devices.md is current."""

from pathlib import Path

from vpp.device_table import attribute_rows, markdown


def test_every_limit_is_listed_with_its_unit():
    rows = {(kind, field): (unit, default) for kind, field, _, unit, default, _ in attribute_rows()}
    assert rows[("battery", "capacity_kwh")] == ("kWh", "required")
    assert rows[("battery", "charge_efficiency")] == ("unitless", "0.95")
    assert rows[("interruptible_load", "max_interruption_min")][0] == "min"
    assert rows[("pv", "ramp_kw_per_s")][0] == "kW/s"
    assert {kind for kind, _ in rows} == {"battery", "pv", "interruptible_load", "shiftable_load", "ev_charger"}


def test_docs_devices_md_matches_the_model():
    path = Path(__file__).resolve().parents[2] / "docs" / "devices.md"
    assert path.read_text() == markdown(), "regenerate with: python -m vpp.device_table > docs/devices.md"
