"""Injectable clocks: real time for the service, manual time for tests and fast simulation."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    """Source of the current UTC time and of waiting."""

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time [s]."""
        ...


class RealClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ScaledClock:
    """Time that runs ``speed`` times faster than the wall clock from ``start``.

    Used to run the simulated park faster than real time: every
    ``sleep(s)`` waits ``s / speed`` wall seconds.
    """

    def __init__(self, start: datetime, speed: float, loop_time: float | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if speed <= 0:
            raise ValueError(f"speed {speed} must be positive")
        self._start = start.astimezone(timezone.utc)
        self._speed = speed
        self._t0 = loop_time

    def _elapsed_wall_s(self) -> float:
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            self._t0 = loop.time()
        return loop.time() - self._t0

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed_wall_s() * self._speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._speed)


class ManualClock:
    """Time that moves only when told to: ``advance`` or ``sleep`` move it instantly.

    ``sleep`` yields to the event loop once so other tasks can run, then
    advances the clock; tests drive many simulated hours in milliseconds.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start.astimezone(timezone.utc)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
        self.advance(max(0.0, seconds))
