"""Completed dispatch instructions as demand-response events on the local day grid.

Each completed instruction is one event: its window (quarter hours touched,
local time; split per local day when it crosses midnight), the requested
power ``|delta_kw|`` (delta instructions) or ``|target_kw − baseline_kw|``
(target instructions, baseline frozen at activation) [kW], and its
direction: peak shaving when the fleet was asked to rise (load reduced,
``delta_kw > 0`` or target above baseline), valley filling otherwise.

Day-ahead or real-time is decided by the notice the park had, not by the
channel: notice = ``instruction.start − DispatchState.received_at`` (when the
service accepted it). An instruction received with less notice than the
programme's ``day_ahead_min_notice_h`` is a real-time event, settled with the
real-time baseline (Jiangsu: the load in the 15 minutes before control
starts), because the invitation-based baseline assumes the enterprise learnt
of the event before the day's load was shaped by it. An instruction stored
without ``received_at`` (written before the service recorded it) has unknown
notice: it falls back to its channel, real-time when its source is one of
``real_time_sources`` (IEC 104 AGC set-points arrive with no notice).
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

__all__ = ["EventSource", "dr_events", "is_real_time", "notice_s", "requested_kw"]


@dataclass(frozen=True)
class EventSource:
    """An event and the instruction it came from.

    Attributes
    ----------
    event : the event on one local day [-].
    instruction_id : id of the dispatch instruction [-].
    notice_s : start − received time; None when the receipt time is unknown [s].
    """

    event: DrEvent
    instruction_id: str
    notice_s: float | None = None


def requested_kw(instruction: DispatchInstruction, state: DispatchState) -> float | None:
    """Signed request, + = fleet up (load reduced); None when a target instruction has no baseline [kW]."""
    if instruction.kind is InstructionKind.DELTA:
        return float(instruction.delta_kw or 0.0)
    if state.baseline_kw is None or instruction.target_kw is None:
        return None
    return float(instruction.target_kw - state.baseline_kw)


def notice_s(instruction: DispatchInstruction, state: DispatchState) -> float | None:
    """Notice the park had: instruction start − when the service received it; None when unknown [s]."""
    if state.received_at is None:
        return None
    return (instruction.start - state.received_at).total_seconds()


def is_real_time(
    instruction: DispatchInstruction,
    state: DispatchState,
    day_ahead_min_notice_s: float,
    real_time_sources: frozenset[str],
) -> bool:
    """True when the instruction is a real-time event: notice below the day-ahead minimum (see the module doc).

    Parameters
    ----------
    instruction, state : the instruction and its stored state [-].
    day_ahead_min_notice_s : least notice of a day-ahead (invited) event [s].
    real_time_sources : channels treated as real-time when the notice is unknown [-].
    """
    notice = notice_s(instruction, state)
    if notice is None:
        return instruction.source in real_time_sources
    return notice < day_ahead_min_notice_s


def dr_events(
    pairs: Sequence[tuple[DispatchInstruction, DispatchState]],
    zone: str,
    programme: str,
    real_time_programme: str,
    real_time_sources: frozenset[str],
    day_ahead_min_notice_s: float = 12 * 3600.0,
) -> list[EventSource]:
    """Events of the completed instructions, one per instruction and local day, in instruction order.

    Parameters
    ----------
    pairs : instructions with their states (others than completed are skipped) [-].
    zone : the park's local zone [-].
    programme : programme of day-ahead events [-].
    real_time_programme : programme of real-time events (short notice) [-].
    real_time_sources : channels settled as real-time when an instruction's receipt time is unknown [-].
    day_ahead_min_notice_s : an instruction received with less notice than this is a real-time event [s].
    """
    local = ZoneInfo(zone)
    events: list[EventSource] = []
    for instruction, state in pairs:
        if state.status is not DispatchStatus.COMPLETED:
            continue
        signed = requested_kw(instruction, state)
        if signed is None or signed == 0.0:
            continue
        real_time = is_real_time(instruction, state, day_ahead_min_notice_s, real_time_sources)
        name = real_time_programme if real_time else programme
        direction = "peak_shaving" if signed > 0 else "valley_filling"
        pieces = _day_pieces(instruction.start.astimezone(local), instruction.end.astimezone(local))
        notice = notice_s(instruction, state)
        for day, first, end in pieces:
            event_id = instruction.id if len(pieces) == 1 else f"{instruction.id}@{day.isoformat()}"
            window = EventWindow(day, first, end)
            events.append(EventSource(DrEvent(event_id, name, window, direction, abs(signed)), instruction.id, notice))
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
