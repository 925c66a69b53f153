"""Completed dispatch instructions as demand-response events on the local day grid.

Each completed instruction is one event: its window (quarter hours touched,
local time; split per local day when it crosses midnight), the requested
power ``|delta_kw|`` (delta instructions) or ``|target_kw − baseline_kw|``
(target instructions, baseline frozen at activation) [kW], and its
direction: peak shaving when the fleet was asked to rise (load reduced,
``delta_kw > 0`` or target above baseline), valley filling otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from market import DrEvent, EventWindow
from vpp.model import (
    DispatchInstruction,
    DispatchState,
    DispatchStatus,
    InstructionKind,
)

__all__ = ["EventSource", "dr_events", "requested_kw"]


@dataclass(frozen=True)
class EventSource:
    """An event and the instruction it came from.

    Attributes
    ----------
    event : the event on one local day [-].
    instruction_id : id of the dispatch instruction [-].
    """

    event: DrEvent
    instruction_id: str


def requested_kw(instruction: DispatchInstruction, state: DispatchState) -> float | None:
    """Signed request, + = fleet up (load reduced); None when a target instruction has no baseline [kW]."""
    if instruction.kind is InstructionKind.DELTA:
        return float(instruction.delta_kw or 0.0)
    if state.baseline_kw is None or instruction.target_kw is None:
        return None
    return float(instruction.target_kw - state.baseline_kw)


def dr_events(
    pairs: Sequence[tuple[DispatchInstruction, DispatchState]],
    zone: str,
    programme: str,
    real_time_programme: str,
    real_time_sources: frozenset[str],
) -> list[EventSource]:
    """Events of the completed instructions, one per instruction and local day, in instruction order.

    Parameters
    ----------
    pairs : instructions with their states (others than completed are skipped) [-].
    zone : the park's local zone [-].
    programme : programme of day-ahead events [-].
    real_time_programme : programme of instructions from ``real_time_sources`` [-].
    real_time_sources : sources settled as real-time events [-].
    """
    local = ZoneInfo(zone)
    events: list[EventSource] = []
    for instruction, state in pairs:
        if state.status is not DispatchStatus.COMPLETED:
            continue
        signed = requested_kw(instruction, state)
        if signed is None or signed == 0.0:
            continue
        name = real_time_programme if instruction.source in real_time_sources else programme
        direction = "peak_shaving" if signed > 0 else "valley_filling"
        pieces = _day_pieces(instruction.start.astimezone(local), instruction.end.astimezone(local))
        for day, first, end in pieces:
            event_id = instruction.id if len(pieces) == 1 else f"{instruction.id}@{day.isoformat()}"
            window = EventWindow(day, first, end)
            events.append(EventSource(DrEvent(event_id, name, window, direction, abs(signed)), instruction.id))
    return events


def _day_pieces(start: datetime, end: datetime) -> list[tuple[date, int, int]]:
    """(local day, first quarter, end quarter) of each day ``[start, end)`` touches; quarters rounded outward."""
    pieces = []
    day = start.date()
    while True:
        midnight = datetime.combine(day, datetime.min.time(), start.tzinfo)
        first = max(0, int((start - midnight).total_seconds() // 900))
        seconds_to_end = (end - midnight).total_seconds()
        last = min(96, int(-(-seconds_to_end // 900)))
        if last > first:
            pieces.append((day, first, last))
        if seconds_to_end <= 86400:
            return pieces
        day += timedelta(days=1)
