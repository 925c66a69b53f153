"""In-process adapter to the simulated park (the embedded default, no sockets)."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.base import Adapter, AdapterError
from simulators.sim import SimulatedPark
from vpp.clock import Clock
from vpp.model import Device, MeterReading, Setpoint, TelemetrySample

__all__ = ["SimulatorAdapter"]


class SimulatorAdapter(Adapter):
    """Reads and drives a :class:`~simulators.sim.SimulatedPark` directly.

    Every read first advances the park to ``clock.now()``, so with a
    :class:`~vpp.clock.ManualClock` the simulated world moves exactly as fast
    as the test moves the clock.

    Attributes
    ----------
    unknown_setpoints : int
        Set-points received for device ids the park does not have (ignored).
    """

    name = "simulator"

    def __init__(self, park: SimulatedPark, clock: Clock) -> None:
        self.park = park
        self.clock = clock
        self.unknown_setpoints = 0
        self._connected = False
        self._closed = False

    @property
    def connected(self) -> bool:
        """True between ``connect`` and ``close``."""
        return self._connected

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise AdapterError(f"simulator adapter: {what} after close")
        if not self._connected:
            raise AdapterError(f"simulator adapter: {what} before connect")

    async def connect(self) -> None:
        """Mark the adapter connected (there is nothing to open)."""
        if self._closed:
            raise AdapterError("simulator adapter: connect after close")
        self._connected = True

    async def read_telemetry(self) -> list[TelemetrySample]:
        """Advance the park to the clock's time; one sample per online device."""
        self._check_open("read_telemetry")
        now = self.clock.now()
        self.park.step(now)
        return self.park.telemetry(now)

    async def read_meters(self) -> list[MeterReading]:
        """Advance the park to the clock's time; the registers of every meter."""
        self._check_open("read_meters")
        now = self.clock.now()
        self.park.step(now)
        return self.park.meter_readings(now)

    async def write_setpoints(self, setpoints: Sequence[Setpoint]) -> None:
        """Hand set-points to the park; unknown device ids are counted and ignored.

        The park is first advanced to the clock's time, so the set-points act
        from now on and the time before is simulated under the old ones.
        """
        self._check_open("write_setpoints")
        self.park.step(self.clock.now())
        unknown = self.park.apply_setpoints(setpoints)
        self.unknown_setpoints += len(unknown)

    async def add_device(self, device: Device) -> None:
        """Let a newly enrolled device join the park, or a changed one replace its old self.

        The park is first advanced to the clock's time, so the time before is
        simulated with the old fleet; every other device keeps its state and
        the meters stay continuous (see
        :meth:`~simulators.sim.SimulatedPark.add_device`). Allowed before
        ``connect``, so a service can hand over stored devices while it
        starts up.

        Raises
        ------
        AdapterError
            The device's enterprise is not in the simulated park.
        """
        if self._closed:
            raise AdapterError("simulator adapter: add_device after close")
        self.park.step(self.clock.now())
        try:
            self.park.add_device(device)
        except ValueError as exc:
            raise AdapterError(f"simulator adapter: {exc}") from exc

    async def close(self) -> None:
        """Disconnect; safe to call twice."""
        self._connected = False
        self._closed = True
