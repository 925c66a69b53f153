"""Domain model validation: bad values are rejected naming the field."""

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from vpp.api.errors import validation_fields
from vpp.model import (
    ApiToken,
    Battery,
    DispatchInstruction,
    InterruptibleLoad,
    MeterReading,
    Role,
    ShiftableLoad,
    TelemetrySample,
    parse_device,
)

T0 = datetime(2026, 7, 1, 2, 0, tzinfo=timezone.utc)


def _error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in exc.errors()}


def test_device_union_picks_the_kind_named():
    device = parse_device({"kind": "battery", "id": "b1", "enterprise_id": "e1", "rated_kw": 100, "capacity_kwh": 200})
    assert isinstance(device, Battery)
    assert device.soc_upper_kwh == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"kind": "battery", "id": "b1", "enterprise_id": "e1", "rated_kw": -5, "capacity_kwh": 200}, "rated_kw"),
        ({"kind": "battery", "id": "b 1", "enterprise_id": "e1", "rated_kw": 5, "capacity_kwh": 200}, "id"),
        ({"kind": "pv", "id": "p1", "enterprise_id": "e1", "rated_kw": 5, "tilt_deg": 120}, "tilt_deg"),
        ({"kind": "pv", "id": "p1", "enterprise_id": "e1", "rated_kw": 5, "colour": "blue"}, "colour"),
        ({"id": "x1", "enterprise_id": "e1", "rated_kw": 5}, "kind"),
        ({"kind": "heat_pump", "id": "h1", "enterprise_id": "e1", "rated_kw": 5}, "kind"),
    ],
)
def test_invalid_device_fields_are_named(payload, field):
    """The API reports the field path without pydantic's union tag."""
    with pytest.raises(ValidationError) as info:
        parse_device(payload)
    fields = [entry["field"] for entry in validation_fields(info.value)]
    assert fields == [field]


def test_battery_soc_bounds_must_be_ordered_and_within_capacity():
    with pytest.raises(ValidationError, match="soc_min_kwh 150.0 must be below soc_max_kwh 100.0"):
        Battery(id="b", enterprise_id="e", rated_kw=50, capacity_kwh=200, soc_min_kwh=150, soc_max_kwh=100)
    with pytest.raises(ValidationError, match="exceeds capacity_kwh"):
        Battery(id="b", enterprise_id="e", rated_kw=50, capacity_kwh=200, soc_max_kwh=300)


def test_interruptible_load_cannot_curtail_more_than_its_rating():
    with pytest.raises(ValidationError, match="max_curtail_kw 120.0 exceeds rated_kw 100.0"):
        InterruptibleLoad(id="l", enterprise_id="e", rated_kw=100, max_curtail_kw=120)


def test_shiftable_load_energy_must_fit_its_window():
    with pytest.raises(ValidationError, match="cannot be delivered"):
        ShiftableLoad(id="s", enterprise_id="e", rated_kw=10, energy_per_day_kwh=50, window_start_hour=8, window_end_hour=12)


def test_protected_hours_are_checked_in_local_hours():
    device = parse_device(
        {"kind": "interruptible_load", "id": "l", "enterprise_id": "e", "rated_kw": 100, "max_curtail_kw": 50,
         "protected_hours": [{"start_hour": 8, "end_hour": 12}]}
    )
    assert device.is_protected(8) and device.is_protected(11)
    assert not device.is_protected(12) and not device.is_protected(7)
    with pytest.raises(ValidationError, match="end_hour 3 must be after start_hour 22"):
        parse_device({**device.model_dump(mode="json"), "protected_hours": [{"start_hour": 22, "end_hour": 3}]})


def test_timestamps_must_carry_a_zone_and_become_utc():
    with pytest.raises(ValidationError, match="has no timezone"):
        TelemetrySample(device_id="d", ts=datetime(2026, 1, 1), p_kw=1, p_min_kw=0, p_max_kw=2)
    local = datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8)))
    sample = TelemetrySample(device_id="d", ts=local, p_kw=1, p_min_kw=0, p_max_kw=2)
    assert sample.ts == datetime(2026, 1, 1, 0, tzinfo=timezone.utc) and sample.ts.utcoffset() == timedelta(0)


def test_telemetry_range_must_be_ordered_and_finite():
    with pytest.raises(ValidationError, match="p_min_kw 3.0 exceeds p_max_kw 2.0"):
        TelemetrySample(device_id="d", ts=T0, p_kw=1, p_min_kw=3, p_max_kw=2)
    with pytest.raises(ValidationError):
        TelemetrySample(device_id="d", ts=T0, p_kw=float("nan"), p_min_kw=0, p_max_kw=2)


def test_meter_registers_are_non_negative():
    with pytest.raises(ValidationError) as info:
        MeterReading(meter_id="m", ts=T0, import_kwh=-1, export_kwh=0)
    assert "import_kwh" in _error_fields(info.value)


def test_instruction_kind_needs_its_amount_and_an_ordered_window():
    ok = DispatchInstruction(id="i1", kind="delta", start=T0, end=T0 + timedelta(minutes=15), delta_kw=500)
    assert ok.delta_kw == 500
    with pytest.raises(ValidationError, match="kind 'delta' needs delta_kw"):
        DispatchInstruction(id="i1", kind="delta", start=T0, end=T0 + timedelta(minutes=15), target_kw=5)
    with pytest.raises(ValidationError, match="kind 'target' needs target_kw"):
        DispatchInstruction(id="i1", kind="target", start=T0, end=T0 + timedelta(minutes=15))
    with pytest.raises(ValidationError, match="must be after start"):
        DispatchInstruction(id="i1", kind="delta", start=T0, end=T0, delta_kw=5)


def test_enterprise_tokens_are_bound_to_one_enterprise():
    digest = "0" * 64
    with pytest.raises(ValidationError, match="enterprise token needs enterprise_id"):
        ApiToken(token_sha256=digest, role=Role.ENTERPRISE, created_at=T0)
    with pytest.raises(ValidationError):
        ApiToken(token_sha256=digest, role=Role.GRID, enterprise_id="e1", created_at=T0)
