"""The interfaces every protocol implements.

* :class:`Adapter`: talks to a set of *devices* (telemetry in, set-points out).
* :class:`GridLink`: talks to the *grid* (OpenADR VTN, IEC 104 master): turns
  what the grid sends into dispatch instructions through a :class:`PlantPort`
  and reports the plant's state back.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Protocol

import structlog

from vpp.errors import VppError
from vpp.model import DispatchInstruction, DispatchState, Setpoint, TelemetrySample

__all__ = ["Adapter", "AdapterError", "GridLink", "PlantPort"]


class AdapterError(VppError):
    """A device or peer could not be reached or answered nonsense."""


class _CountsMalformed:
    """Counts frames and payloads that could not be used; the service exports the count in ``/metrics``."""

    name: str = "adapter"
    malformed_frames: int = 0
    """Frames or payloads received and dropped as unusable since start [unitless]."""

    def note_malformed(self, what: str, detail: object) -> None:
        """Count and log one unusable frame; never raises (a bad frame must not stop the adapter)."""
        self.malformed_frames += 1
        structlog.get_logger("vpp.adapters").warning(
            "malformed frame dropped", adapter=self.name, what=what, detail=str(detail)[:300]
        )


class Adapter(_CountsMalformed, abc.ABC):
    """Talks to a set of devices over one protocol.

    Lifecycle: ``connect`` once, then any number of ``read_telemetry`` and
    ``write_setpoints`` calls, then ``close``. Implementations reconnect by
    themselves; a device they cannot reach is simply absent from
    ``read_telemetry`` (the aggregator then marks it stale). A frame or
    payload that cannot be parsed is dropped with :meth:`note_malformed`.
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


class PlantPort(Protocol):
    """What a grid link may ask of the plant (``vpp.service.PlantService`` provides it)."""

    async def submit_instruction(self, instruction: DispatchInstruction) -> tuple[DispatchInstruction, bool]:
        """Store an instruction; a repeated id returns what was stored first, ``created`` False."""
        ...

    async def instruction_view(self, instruction_id: str) -> tuple[DispatchInstruction, DispatchState]:
        """The instruction and its freshest state; raises ``vpp.errors.NotFound``."""
        ...

    async def cancel_instruction(self, instruction_id: str, reason: str) -> DispatchState:
        """Cancel a pending or active instruction; a finished one keeps its state. Raises ``NotFound``."""
        ...

    def plant(self) -> dict:
        """Live totals: ``net_kw``, ``available_up_kw``, ``available_down_kw``, ``devices_online``, ... [kW]."""
        ...

    def envelope(self, hours: float) -> list[dict]:
        """Up/down capability per quarter hour ahead: rows with ``start``, ``up_kw``, ``down_kw`` [kW]."""
        ...


class GridLink(_CountsMalformed, abc.ABC):
    """A grid-side protocol endpoint: started with the plant it speaks for, stopped on shutdown."""

    name: str = "grid"

    @abc.abstractmethod
    async def start(self, plant: PlantPort) -> None:
        """Connect or listen; from now on grid messages become instructions on ``plant``."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop listening and close connections; safe to call twice."""

    @property
    def endpoint(self) -> str:
        """Where the grid reaches this link, for people (the server's banner), e.g. 'IEC 104 outstation on host:port'."""
        return self.name
