"""The store interface both backends (SQLite, Redis) implement.

One contract test suite (``tests/vpp/store/test_contract.py``) runs against
both. Every write that returns has been made durable as far as the backend
allows (SQLite: committed in WAL; Redis: acknowledged by the server).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from vpp.chain import GENESIS_HASH
from vpp.model import (
    ApiToken,
    Device,
    DispatchInstruction,
    DispatchProgress,
    DispatchState,
    DispatchStatus,
    Enterprise,
    MeteringPoint,
    MeterReading,
    Setpoint,
    TelemetrySample,
)


class Store(abc.ABC):
    """Persistent state of the service."""

    # -- lifecycle --------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect / create the schema. Raises ``StoreUnavailable`` if unreachable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; safe to call twice."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- park: enterprises, meters, devices --------------------------------

    @abc.abstractmethod
    async def put_enterprise(self, enterprise: Enterprise) -> None:
        """Create or replace an enterprise."""

    @abc.abstractmethod
    async def get_enterprise(self, enterprise_id: str) -> Enterprise | None: ...

    @abc.abstractmethod
    async def list_enterprises(self) -> list[Enterprise]:
        """All enterprises, ordered by id."""

    @abc.abstractmethod
    async def put_meter(self, meter: MeteringPoint) -> None:
        """Create or replace a metering point."""

    @abc.abstractmethod
    async def list_meters(self, enterprise_id: str | None = None) -> list[MeteringPoint]:
        """Metering points, of one enterprise or all, ordered by id."""

    @abc.abstractmethod
    async def put_device(self, device: Device) -> bool:
        """Create or replace a device. Returns True when it was new.

        Raises ``Conflict`` if a device with this id exists under another enterprise.
        """

    @abc.abstractmethod
    async def get_device(self, device_id: str) -> Device | None: ...

    @abc.abstractmethod
    async def list_devices(self, enterprise_id: str | None = None) -> list[Device]:
        """Devices, of one enterprise or all, ordered by id."""

    # -- telemetry and meters ----------------------------------------------

    @abc.abstractmethod
    async def append_telemetry(self, samples: Sequence[TelemetrySample]) -> None:
        """Append samples to history and update each device's latest sample.

        The latest sample of a device only moves forward in time: an older
        sample arriving late is kept in history but does not replace it.
        """

    @abc.abstractmethod
    async def latest_telemetry(self) -> dict[str, TelemetrySample]:
        """Latest sample per device id."""

    @abc.abstractmethod
    async def telemetry_history(self, device_id: str, start: datetime, end: datetime) -> list[TelemetrySample]:
        """Samples of one device with ``start <= ts < end``, ordered by time."""

    @abc.abstractmethod
    async def append_meter_readings(self, readings: Sequence[MeterReading]) -> None: ...

    @abc.abstractmethod
    async def meter_readings(self, meter_id: str, start: datetime, end: datetime) -> list[MeterReading]:
        """Readings of one meter with ``start <= ts < end``, ordered by time."""

    @abc.abstractmethod
    async def meter_readings_many(
        self, meter_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[MeterReading]]:
        """Readings of many meters with ``start <= ts < end`` in one query: meter id -> readings ordered by time.

        Every id asked for is a key (an empty list when it has no readings in the span).
        """

    # -- dispatch ------------------------------------------------------------

    @abc.abstractmethod
    async def put_instruction(self, instruction: DispatchInstruction, state: DispatchState) -> tuple[DispatchInstruction, bool]:
        """Store a new instruction with its initial state, atomically.

        Returns ``(stored, created)``. If the id exists already nothing is
        written and the stored instruction is returned with ``created=False``
        (the caller compares it with what it was sent).
        """

    @abc.abstractmethod
    async def get_instruction(self, instruction_id: str) -> tuple[DispatchInstruction, DispatchState] | None: ...

    @abc.abstractmethod
    async def list_instructions(
        self, statuses: Sequence[DispatchStatus] | None = None
    ) -> list[tuple[DispatchInstruction, DispatchState]]:
        """Instructions (optionally of some statuses), ordered by start then id."""

    @abc.abstractmethod
    async def put_dispatch_state(self, state: DispatchState) -> None:
        """Replace the state of an existing instruction. Raises ``NotFound`` if there is none."""

    @abc.abstractmethod
    async def append_dispatch_progress(self, points: Sequence[DispatchProgress]) -> None: ...

    @abc.abstractmethod
    async def dispatch_progress(self, instruction_id: str) -> list[DispatchProgress]:
        """Progress points of one instruction, ordered by time."""

    @abc.abstractmethod
    async def append_setpoints(self, setpoints: Sequence[Setpoint]) -> None:
        """Audit log of set-points handed to adapters."""

    @abc.abstractmethod
    async def setpoints_for(self, instruction_id: str) -> list[Setpoint]:
        """Set-points sent for one instruction, in the order sent."""

    # -- ledgers (append-only, hash-chained) ---------------------------------------

    @abc.abstractmethod
    async def append_ledger(
        self, ledger: str, payloads: Sequence[Mapping[str, Any]], corrects: Sequence[int | None] | None = None
    ) -> list[dict[str, Any]]:
        """Append records to the named ledger, atomically and in order; returns the records written.

        Each record chains to the one before it (``vpp.chain.make_record``);
        ``corrects[i]`` names the earlier sequence number payload ``i`` corrects.
        Concurrent appenders never fork the chain.
        """

    @abc.abstractmethod
    async def append_ledger_if(
        self,
        ledger: str,
        payloads: Sequence[Mapping[str, Any]],
        expected_last_hash: str | None,
        corrects: Sequence[int | None] | None = None,
    ) -> list[dict[str, Any]] | None:
        """Compare-and-append: append like :meth:`append_ledger` only if the chain's head is what the caller read.

        ``expected_last_hash`` is the ``hash`` of the ledger's last record when
        the caller read it, or None (or ``GENESIS_HASH``) for a ledger the
        caller found empty. The check and the append are one atomic step.
        Returns the records written, or None when another writer appended in
        between (nothing is written; read again and decide again).
        """

    @abc.abstractmethod
    async def ledger_records(self, ledger: str, start_seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Records of one ledger from ``start_seq``, in sequence order, as stored."""

    @abc.abstractmethod
    async def ledger_names(self) -> list[str]:
        """Names of the ledgers that hold records, sorted."""

    # -- auth ------------------------------------------------------------------

    @abc.abstractmethod
    async def put_token(self, token: ApiToken) -> None:
        """Create or replace a token record (keyed by its hash)."""

    @abc.abstractmethod
    async def get_token(self, token_sha256: str) -> ApiToken | None: ...

    @abc.abstractmethod
    async def list_tokens(self) -> list[ApiToken]:
        """Every token record (revoked and expired ones too), ordered by ``created_at`` then hash."""

    # -- health -------------------------------------------------------------------

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers."""


def _expected_head(expected_last_hash: str | None) -> str | None:
    """The head hash a compare-and-append expects, None for an empty ledger (``GENESIS_HASH`` means empty too)."""
    if expected_last_hash is None or expected_last_hash == GENESIS_HASH:
        return None
    return expected_last_hash


def _corrections(payloads: Sequence[Mapping[str, Any]], corrects: Sequence[int | None] | None) -> list[int | None]:
    """``corrects`` aligned with ``payloads`` (None for each when not given)."""
    if corrects is None:
        return [None] * len(payloads)
    if len(corrects) != len(payloads):
        raise ValueError(f"corrects has {len(corrects)} entries for {len(payloads)} payloads")
    return list(corrects)
