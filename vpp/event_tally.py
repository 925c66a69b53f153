"""Dispatch events per device in the park's local day: what ``max_events_per_day`` limits.

An *event* is one instruction (or one scheduled curtailment) a device joined,
counted on the local day it first got a set-point for it. Only the latest
local day noted is kept: the limits ask about today, and a day's tally starts
empty at local midnight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["EventTally"]


class EventTally:
    """Which events each device joined on the latest local day noted.

    Parameters
    ----------
    zone : ZoneInfo
        The park's local zone: days run from its local midnight.
    """

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._day: date | None = None
        self._members: dict[str, set[str]] = {}  # event id -> devices that joined it on _day
        self._count: dict[str, int] = {}  # device id -> events joined on _day [unitless]

    def note(self, device_ids: Iterable[str], joined: datetime, event_id: str) -> None:
        """Count ``event_id`` once for each device that joined it at ``joined`` (aware datetime).

        A note for a later day than the tally's starts that day afresh; one for
        an earlier day is ignored (it can no longer limit anything).
        """
        day = joined.astimezone(self._zone).date()
        if self._day is None or day > self._day:
            self._day, self._members, self._count = day, {}, {}
        elif day < self._day:
            return
        members = self._members.setdefault(event_id, set())
        count = self._count
        for device_id in device_ids:
            if device_id not in members:
                members.add(device_id)
                count[device_id] = count.get(device_id, 0) + 1

    def counts(self, now: datetime) -> Mapping[str, int]:
        """Events per device on the local day of ``now``; devices with none are absent [unitless]."""
        return dict(self._count) if self._today(now) else {}

    def counts_array(self, device_ids: Sequence[str], now: datetime, excluding: str | None = None) -> np.ndarray:
        """Per device in ``device_ids`` order, events joined on the local day of ``now``, not counting ``excluding`` [unitless]."""
        n = len(device_ids)
        if not self._today(now):
            return np.zeros(n)
        get = self._count.get
        counts = np.fromiter((get(d, 0) for d in device_ids), dtype=float, count=n)
        own = self._members.get(excluding) if excluding is not None else None
        if own:
            counts -= np.fromiter((d in own for d in device_ids), dtype=bool, count=n)
        return counts

    def _today(self, now: datetime) -> bool:
        return self._day is not None and now.astimezone(self._zone).date() == self._day
