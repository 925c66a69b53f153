"""The adapter interface every device protocol implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from vpp.errors import VppError
from vpp.model import Setpoint, TelemetrySample


class AdapterError(VppError):
    """A device or peer could not be reached or answered nonsense."""


class Adapter(abc.ABC):
    """Talks to a set of devices over one protocol.

    Lifecycle: ``connect`` once, then any number of ``read_telemetry`` and
    ``write_setpoints`` calls, then ``close``. Implementations reconnect by
    themselves; a device they cannot reach is simply absent from
    ``read_telemetry`` (the aggregator then marks it stale).
    """

    name: str = "adapter"

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections to the devices."""

    @abc.abstractmethod
    async def read_telemetry(self) -> list[TelemetrySample]:
        """Latest sample of every device this adapter can reach now."""

    @abc.abstractmethod
    async def write_setpoints(self, setpoints: Sequence[Setpoint]) -> None:
        """Hand set-points to the devices (``p_kw=None`` releases a device)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; safe to call twice."""
