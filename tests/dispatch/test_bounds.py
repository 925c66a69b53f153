"""Proof of ``dispatch.setpoint_bounds``: ramp, SoC for the duration, held devices, always lower <= upper."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dispatch import setpoint_bounds

EXAMPLES = settings(max_examples=200, deadline=None)
NAN = np.nan


def bounds(**overrides: object) -> tuple[np.ndarray, np.ndarray]:
    """One non-battery device at 0 kW, range [-100, 100], unlimited ramp, dispatchable, unless overridden."""
    args: dict[str, object] = {
        "p_kw": [0.0],
        "p_min_kw": [-100.0],
        "p_max_kw": [100.0],
        "ramp_kw_per_s": [np.inf],
        "step_s": 2.0,
        "soc_kwh": [NAN],
        "soc_min_kwh": [NAN],
        "soc_max_kwh": [NAN],
        "charge_efficiency": [1.0],
        "discharge_efficiency": [1.0],
        "duration_h": 1.0,
        "dispatchable": [True],
    }
    args.update(overrides)
    return setpoint_bounds(**args)  # type: ignore[arg-type]


def test_reported_range_without_other_limits() -> None:
    lower, upper = bounds()
    assert lower.tolist() == [-100.0] and upper.tolist() == [100.0]


def test_ramp_window() -> None:
    lower, upper = bounds(p_kw=[10.0], ramp_kw_per_s=[2.0], step_s=3.0)
    assert lower.tolist() == [4.0] and upper.tolist() == [16.0]
    # The ramp window is cut by the reported range.
    lower, upper = bounds(p_kw=[95.0], ramp_kw_per_s=[2.0], step_s=3.0)
    assert lower.tolist() == [89.0] and upper.tolist() == [100.0]


def test_zero_ramp_or_zero_step_holds_power_and_unlimited_ramp_does_not() -> None:
    assert [b.tolist() for b in bounds(p_kw=[10.0], ramp_kw_per_s=[0.0])] == [[10.0], [10.0]]
    assert [b.tolist() for b in bounds(p_kw=[10.0], ramp_kw_per_s=[5.0], step_s=0.0)] == [[10.0], [10.0]]
    assert [b.tolist() for b in bounds(p_kw=[10.0], step_s=0.0)] == [[-100.0], [100.0]]


def test_battery_limited_to_what_it_can_hold_for_the_duration() -> None:
    lower, upper = bounds(
        soc_kwh=[50.0], soc_min_kwh=[10.0], soc_max_kwh=[100.0],
        charge_efficiency=[0.95], discharge_efficiency=[0.9], duration_h=2.0,
    )
    # Discharge: 40 kWh above the minimum, 90 % reaches the grid, over 2 h.
    assert upper[0] == pytest.approx(40.0 * 0.9 / 2.0)
    # Charge: 50 kWh of room, 95 % of what is drawn is stored, over 2 h.
    assert lower[0] == pytest.approx(-50.0 / 0.95 / 2.0)


def test_battery_at_its_soc_bounds_can_only_move_away() -> None:
    empty_l, empty_u = bounds(soc_kwh=[10.0], soc_min_kwh=[10.0], soc_max_kwh=[100.0])
    assert empty_u[0] == 0.0 and empty_l[0] < 0.0
    # Below its minimum it is not forced to charge, only stopped from discharging.
    low_l, low_u = bounds(soc_kwh=[5.0], soc_min_kwh=[10.0], soc_max_kwh=[100.0])
    assert low_u[0] == 0.0 and low_l[0] < 0.0
    full_l, full_u = bounds(soc_kwh=[100.0], soc_min_kwh=[10.0], soc_max_kwh=[100.0])
    assert full_l[0] == 0.0 and full_u[0] > 0.0


def test_no_energy_limit_for_zero_duration_or_missing_soc_bound() -> None:
    assert bounds(soc_kwh=[50.0], soc_min_kwh=[10.0], soc_max_kwh=[100.0], duration_h=0.0)[1][0] == 100.0
    lower, upper = bounds(soc_kwh=[50.0], soc_min_kwh=[NAN], soc_max_kwh=[60.0])
    assert upper[0] == 100.0 and lower[0] == -10.0


def test_not_dispatchable_is_held_at_current_power() -> None:
    lower, upper = bounds(p_kw=[12.0, 12.0], p_min_kw=-100.0, p_max_kw=100.0, ramp_kw_per_s=np.inf,
                          soc_kwh=NAN, soc_min_kwh=NAN, soc_max_kwh=NAN, charge_efficiency=1.0,
                          discharge_efficiency=1.0, dispatchable=[False, True])
    assert lower.tolist() == [12.0, -100.0] and upper.tolist() == [12.0, 100.0]


def test_empty_intersection_collapses_to_the_ramp_limited_move() -> None:
    # At 50 kW, the SoC sustains only 1.8 kW; the ramp allows 2 kW down this step: go to 48.
    lower, upper = bounds(p_kw=[50.0], ramp_kw_per_s=[1.0], soc_kwh=[1.0], soc_min_kwh=[0.0],
                          soc_max_kwh=[10.0], discharge_efficiency=[0.9], duration_h=0.5)
    assert lower.tolist() == [48.0] and upper.tolist() == [48.0]
    # Above its reported range (20 kW > 10 kW) with a 4 kW ramp step: go to 16.
    lower, upper = bounds(p_kw=[20.0], p_min_kw=[0.0], p_max_kw=[10.0], ramp_kw_per_s=[2.0])
    assert lower.tolist() == [16.0] and upper.tolist() == [16.0]
    # Range says >= 60, SoC says <= 10, ramp allows 49..51: stays inside the ramp window.
    lower, upper = bounds(p_kw=[50.0], p_min_kw=[60.0], p_max_kw=[100.0], ramp_kw_per_s=[0.5],
                          soc_kwh=[5.0], soc_min_kwh=[0.0], soc_max_kwh=[10.0], duration_h=0.5)
    assert lower.tolist() == [51.0] and upper.tolist() == [51.0]


def test_empty_fleet() -> None:
    lower, upper = bounds(p_kw=[], p_min_kw=[], p_max_kw=[], ramp_kw_per_s=[], soc_kwh=[], soc_min_kwh=[],
                          soc_max_kwh=[], charge_efficiency=[], discharge_efficiency=[], dispatchable=[])
    assert lower.shape == upper.shape == (0,)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"p_kw": [NAN]}, r"p_kw\[0\] = nan"),
        ({"p_max_kw": [-200.0]}, r"p_max_kw\[0\] = -200\.0 violates p_max_kw >= p_min_kw"),
        ({"p_min_kw": [-np.inf]}, r"p_min_kw\[0\] = -inf"),
        ({"ramp_kw_per_s": [-1.0]}, r"ramp_kw_per_s\[0\] = -1\.0 violates"),
        ({"step_s": -1.0}, r"step_s = -1\.0"),
        ({"duration_h": -1.0}, r"duration_h = -1\.0"),
        ({"soc_kwh": [5.0], "discharge_efficiency": [0.0]}, r"discharge_efficiency\[0\] = 0\.0 violates"),
        ({"soc_kwh": [5.0], "soc_min_kwh": [9.0], "soc_max_kwh": [1.0]}, r"soc_max_kwh\[0\] = 1\.0 violates"),
        ({"p_min_kw": [0.0, 0.0]}, r"p_min_kw has shape \(2,\)"),
        ({"p_kw": [[0.0]]}, r"p_kw must be 1-D"),
    ],
)
def test_bad_input_names_argument_and_index(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bounds(**overrides)


def test_non_battery_efficiencies_are_not_checked() -> None:
    lower, upper = bounds(charge_efficiency=[NAN], discharge_efficiency=[0.0])
    assert lower.tolist() == [-100.0] and upper.tolist() == [100.0]


# ------------------------------------------------------------ properties ----


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 6))


@st.composite
def fleets(draw: st.DrawFn) -> dict:
    n = draw(st.integers(0, 60))

    def vector(elements: st.SearchStrategy[float]) -> np.ndarray:
        return draw(arrays(np.float64, n, elements=elements))

    p_min = vector(_floats(-500.0, 500.0))
    p_max = p_min + vector(st.one_of(st.just(0.0), _floats(0.0, 500.0)))
    soc_min = vector(_floats(0.0, 100.0))
    battery = draw(arrays(np.bool_, n))
    return {
        "p_kw": vector(_floats(-1000.0, 1000.0)),  # may lie outside the reported range
        "p_min_kw": p_min,
        "p_max_kw": p_max,
        "ramp_kw_per_s": vector(st.one_of(st.just(np.inf), st.just(0.0), _floats(0.0, 50.0))),
        "step_s": draw(_floats(0.0, 10.0)),
        "soc_kwh": np.where(battery, vector(_floats(-10.0, 300.0)), NAN),  # may lie outside its window
        "soc_min_kwh": np.where(battery, soc_min, NAN),
        "soc_max_kwh": np.where(battery, soc_min + vector(_floats(0.0, 200.0)), NAN),
        "charge_efficiency": np.where(battery, vector(_floats(0.5, 1.0)), 1.0),
        "discharge_efficiency": np.where(battery, vector(_floats(0.5, 1.0)), 1.0),
        "duration_h": draw(st.one_of(st.just(0.0), _floats(0.01, 24.0))),
        "dispatchable": draw(arrays(np.bool_, n)),
    }


@EXAMPLES
@given(fleets())
def test_bounds_are_ordered_finite_and_within_every_limit_that_can_be_met(fleet: dict) -> None:
    lower, upper = setpoint_bounds(**fleet)
    p = fleet["p_kw"]
    assert lower.shape == upper.shape == p.shape
    assert np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))
    assert np.all(lower <= upper)

    held = ~fleet["dispatchable"]
    assert np.array_equal(lower[held], p[held]) and np.array_equal(upper[held], p[held])

    ramp = fleet["ramp_kw_per_s"]
    with np.errstate(invalid="ignore"):
        reach = np.where(np.isinf(ramp), np.inf, ramp * fleet["step_s"])
    moving = ~held
    # The ramp is never exceeded.
    assert np.all(lower[moving] >= p[moving] - reach[moving] - 1e-9)
    assert np.all(upper[moving] <= p[moving] + reach[moving] + 1e-9)

    # Where all limits can be met together, the bounds meet them all.
    soc = fleet["soc_kwh"]
    duration = fleet["duration_h"]
    battery = np.isfinite(soc) & (duration > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        stored = np.maximum(soc - fleet["soc_min_kwh"], 0) * fleet["discharge_efficiency"]
        room = np.maximum(fleet["soc_max_kwh"] - soc, 0) / fleet["charge_efficiency"]
        discharge = np.where(battery, stored / duration, np.inf)
        charge = np.where(battery, room / duration, np.inf)
    low = np.maximum.reduce([fleet["p_min_kw"], p - reach, -charge])
    high = np.minimum.reduce([fleet["p_max_kw"], p + reach, discharge])
    meetable = moving & (low <= high)
    tol = 1e-9 * (1.0 + np.abs(low) + np.abs(high))
    assert np.all(np.abs(lower[meetable] - low[meetable]) <= tol[meetable])
    assert np.all(np.abs(upper[meetable] - high[meetable]) <= tol[meetable])
    # A battery held at either bound for the whole duration stays within its SoC window.
    ok = meetable & battery
    drained = np.maximum(upper[ok], 0) * duration / fleet["discharge_efficiency"][ok]
    stored = np.maximum(-lower[ok], 0) * duration * fleet["charge_efficiency"][ok]
    room_down = np.maximum(soc[ok] - fleet["soc_min_kwh"][ok], 0)
    room_up = np.maximum(fleet["soc_max_kwh"][ok] - soc[ok], 0)
    assert np.all(drained <= room_down + 1e-6)
    assert np.all(stored <= room_up + 1e-6)


@EXAMPLES
@given(fleets())
def test_current_power_stays_allowed_when_it_breaks_no_limit(fleet: dict) -> None:
    # A dispatchable non-battery inside its reported range may always stay where it is.
    lower, upper = setpoint_bounds(**fleet)
    p = fleet["p_kw"]
    inside = (p >= fleet["p_min_kw"]) & (p <= fleet["p_max_kw"])
    plain = fleet["dispatchable"] & inside & ~np.isfinite(fleet["soc_kwh"])
    assert np.all(lower[plain] <= p[plain]) and np.all(p[plain] <= upper[plain])
