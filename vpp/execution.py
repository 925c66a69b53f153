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

from dispatch import (
    Allocation,
    GroupAllocation,
    allocate_from_baseline,
    allocate_from_baseline_with_groups,
    setpoint_bounds,
)
from vpp.aggregator import FleetSnapshot
from vpp.model import DispatchInstruction, InstructionKind
from vpp.network import FleetCaps

NETWORK_SOLVE_LIMIT_S = 0.5
"""Longest a capped allocation may spend in HiGHS in one control step [s]; its best point is used after."""


@dataclass(frozen=True)
class StepPlan:
    """What one control step decided."""

    requested_kw: float  # fleet net power asked for [kW]
    measured_kw: float  # fleet net power measured (fresh devices) [kW]
    baseline_kw: float  # frozen baseline of the fresh devices [kW]
    setpoints_kw: np.ndarray  # per device in snapshot order; NaN where no set-point [kW]
    allocation: Allocation | GroupAllocation | None  # None when nothing is dispatchable
    device_delivered_kw: np.ndarray  # per device, p − baseline; 0 where not fresh [kW]
    network_shortfall_kw: float = 0.0  # part of the request the connection limit takes away [kW]

    @property
    def shortfall_kw(self) -> float:
        """Requested minus what the set-points add up to (device bounds and network limits) [kW]."""
        if self.allocation is None:
            return self.requested_kw - self.measured_kw
        return float(self.allocation.shortfall_kw) + self.network_shortfall_kw

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
    caps: FleetCaps | None = None,
) -> StepPlan:
    """Allocate the instruction's request across the dispatchable devices.

    Stale devices count neither in the request nor in the measurement;
    fresh devices that may not be dispatched now (protected hours) are held
    as they are and their power is taken off the target of the others.

    Parameters: ``baseline_kw`` per device [kW]; ``step_s`` control step,
    bounding ramps [s]; ``remaining_h`` time left in the instruction, bounding
    battery energy [h]; ``allowed`` per device, False where the instruction
    may not use it (notice too short, interruption too long, events used up)
    [bool]; ``caps`` the network limits as fleet ranges (``vpp.network``),
    None for none: the fast allocator runs unless a cap binds.
    """
    fresh = snapshot.fresh
    dispatchable = snapshot.dispatchable if allowed is None else snapshot.dispatchable & allowed
    baseline_fresh_kw = float(baseline_kw[fresh].sum())
    measured_kw = float(snapshot.p_kw[fresh].sum())
    requested_kw = requested_fleet_kw(instruction, baseline_fresh_kw)
    setpoints = np.full(len(snapshot), np.nan)
    allocation: Allocation | GroupAllocation | None = None
    network_shortfall_kw = 0.0
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
        held = fresh & ~dispatchable
        held_kw = float(snapshot.p_kw[held].sum())
        target_kw = requested_kw - held_kw
        if caps is None or not caps.binding_possible:
            allocation = allocate_from_baseline(
                target_kw,
                baseline_kw[dispatchable],
                lower[dispatchable],
                upper[dispatchable],
                snapshot.cost_cny_per_kwh[dispatchable],
            )
        else:
            allocation, network_shortfall_kw = _allocate_within_caps(
                snapshot, caps, dispatchable, held, target_kw, baseline_kw, lower, upper
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
        network_shortfall_kw=network_shortfall_kw,
    )


def _allocate_within_caps(
    snapshot: FleetSnapshot,
    caps: FleetCaps,
    dispatchable: np.ndarray,
    held: np.ndarray,
    target_kw: float,
    baseline_kw: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
) -> tuple[GroupAllocation, float]:
    """Allocate the dispatchable devices' target within feeder and connection ranges [kW].

    Devices held as they are (fresh, not dispatchable) still load their
    feeder and the connection: their power is taken off the ranges. The
    connection range clips the target; what it clips is returned as the
    network's share of the shortfall [kW].
    """
    groups = caps.group_min_kw.size
    held_per_group = np.bincount(
        caps.group_of[held & (caps.group_of >= 0)], weights=snapshot.p_kw[held & (caps.group_of >= 0)], minlength=groups
    )
    held_kw = float(snapshot.p_kw[held].sum())
    reachable_kw = float(np.clip(target_kw, caps.total_min_kw - held_kw, caps.total_max_kw - held_kw))
    allocation = allocate_from_baseline_with_groups(
        reachable_kw,
        baseline_kw[dispatchable],
        lower[dispatchable],
        upper[dispatchable],
        snapshot.cost_cny_per_kwh[dispatchable],
        caps.group_of[dispatchable],
        caps.group_min_kw - held_per_group,
        caps.group_max_kw - held_per_group,
        time_limit_s=NETWORK_SOLVE_LIMIT_S,
    )
    return allocation, target_kw - reachable_kw
