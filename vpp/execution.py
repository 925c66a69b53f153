"""One control step of an active instruction, as pure computation.

Given the fleet snapshot, the instruction and each device's frozen baseline,
``plan_step`` says what the fleet is asked for, which devices get which
set-point, and how much was delivered. The service (``vpp.service``) wraps
it with I/O: reading telemetry, sending set-points, storing state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dispatch import Allocation, allocate_from_baseline, setpoint_bounds
from vpp.aggregator import FleetSnapshot
from vpp.model import DispatchInstruction, InstructionKind


@dataclass(frozen=True)
class StepPlan:
    """What one control step decided."""

    requested_kw: float  # fleet net power asked for [kW]
    measured_kw: float  # fleet net power measured (fresh devices) [kW]
    baseline_kw: float  # frozen baseline of the fresh devices [kW]
    setpoints_kw: np.ndarray  # per device in snapshot order; NaN where no set-point [kW]
    allocation: Allocation | None  # None when nothing is dispatchable
    device_delivered_kw: np.ndarray  # per device, p − baseline; 0 where not fresh [kW]

    @property
    def delivered_kw(self) -> float:
        """Measured change from baseline [kW]."""
        return self.measured_kw - self.baseline_kw

    @property
    def request_sign(self) -> float:
        """+1 when the request is to raise fleet power, −1 to lower it, 0 when it equals the baseline."""
        return float(np.sign(self.requested_kw - self.baseline_kw))


def baseline_array(snapshot: FleetSnapshot, device_baseline_kw: Mapping[str, float]) -> np.ndarray:
    """Frozen baselines in snapshot order; devices not yet in the map take their current power [kW]."""
    return np.array(
        [device_baseline_kw.get(device_id, p) for device_id, p in zip(snapshot.device_ids, snapshot.p_kw.tolist())]
    )


def requested_fleet_kw(instruction: DispatchInstruction, baseline_fresh_kw: float) -> float:
    """Fleet net power the instruction asks for now [kW]."""
    if instruction.kind is InstructionKind.TARGET:
        assert instruction.target_kw is not None  # guaranteed by the model
        return instruction.target_kw
    assert instruction.delta_kw is not None
    return baseline_fresh_kw + instruction.delta_kw


def allowed_devices(
    snapshot: FleetSnapshot,
    notice_given_h: float,
    joined_h_ago: np.ndarray,
    events_today: np.ndarray,
) -> np.ndarray:
    """Devices an instruction may use now, by their enrolment limits.

    Parameters: ``notice_given_h`` time between receiving the instruction and
    its start [h]; ``joined_h_ago`` per device, how long it has held a
    set-point for this instruction, NaN if it has not [h]; ``events_today``
    per device, other instructions it took part in this local day [unitless].

    Returns a mask [bool]: enough notice, not past its longest interruption,
    and (unless it is already in this instruction) events left today.
    """
    joined = np.isfinite(joined_h_ago)
    notice_ok = snapshot.notice_h <= notice_given_h + 1e-9
    interruption_ok = ~joined | (joined_h_ago < snapshot.max_interruption_h)
    events_ok = joined | (events_today < snapshot.max_events_per_day)
    return notice_ok & interruption_ok & events_ok


def plan_step(
    snapshot: FleetSnapshot,
    instruction: DispatchInstruction,
    baseline_kw: np.ndarray,
    step_s: float,
    remaining_h: float,
    allowed: np.ndarray | None = None,
) -> StepPlan:
    """Allocate the instruction's request across the dispatchable devices.

    Stale devices count neither in the request nor in the measurement;
    fresh devices that may not be dispatched now (protected hours) are held
    as they are and their power is taken off the target of the others.

    Parameters: ``baseline_kw`` per device [kW]; ``step_s`` control step,
    bounding ramps [s]; ``remaining_h`` time left in the instruction, bounding
    battery energy [h]; ``allowed`` per device, False where the instruction
    may not use it (notice too short, interruption too long, events used up)
    [bool].
    """
    fresh = snapshot.fresh
    dispatchable = snapshot.dispatchable if allowed is None else snapshot.dispatchable & allowed
    baseline_fresh_kw = float(baseline_kw[fresh].sum())
    measured_kw = float(snapshot.p_kw[fresh].sum())
    requested_kw = requested_fleet_kw(instruction, baseline_fresh_kw)
    setpoints = np.full(len(snapshot), np.nan)
    allocation = None
    if dispatchable.any():
        lower, upper = setpoint_bounds(
            snapshot.p_kw,
            snapshot.p_min_kw,
            snapshot.p_max_kw,
            snapshot.ramp_kw_per_s,
            step_s,
            snapshot.soc_kwh,
            snapshot.soc_min_kwh,
            snapshot.soc_max_kwh,
            snapshot.charge_efficiency,
            snapshot.discharge_efficiency,
            max(remaining_h, 1e-6),
            dispatchable,
        )
        held_kw = float(snapshot.p_kw[fresh & ~dispatchable].sum())
        allocation = allocate_from_baseline(
            requested_kw - held_kw,
            baseline_kw[dispatchable],
            lower[dispatchable],
            upper[dispatchable],
            snapshot.cost_cny_per_kwh[dispatchable],
        )
        setpoints[dispatchable] = allocation.setpoints_kw
    device_delivered = np.where(fresh, snapshot.p_kw - baseline_kw, 0.0)
    return StepPlan(
        requested_kw=requested_kw,
        measured_kw=measured_kw,
        baseline_kw=baseline_fresh_kw,
        setpoints_kw=setpoints,
        allocation=allocation,
        device_delivered_kw=device_delivered,
    )
