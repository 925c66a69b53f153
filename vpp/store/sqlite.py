"""The embedded store: one SQLite file in WAL mode, accessed through aiosqlite.

Layout: every model is stored as its JSON (``model_dump_json``) in a ``body``
column; the columns that are queried or ordered on are stored beside it and
indexed. Timestamps are integer microseconds since the Unix epoch (UTC), so
range queries and ordering are plain integer comparisons and exact.

Time series (telemetry, meter readings, dispatch progress) keep one point per
series and instant: a repeat of an instant already stored is ignored (first
one wins), which makes re-delivered batches harmless. The Redis backend
follows the same rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import aiosqlite
from pydantic import TypeAdapter

from vpp.chain import make_record
from vpp.errors import Conflict, NotFound, StoreUnavailable
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
from vpp.store.base import Store, _corrections, _expected_head

__all__ = ["SqliteStore", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
"""Version of the schema below; a file written by a newer version is refused."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_TELEMETRY_CHUNK = 2000
"""Samples per write transaction: bounds how long a telemetry batch keeps other writers waiting (~10 ms)."""

_DEVICE: TypeAdapter[Device] = TypeAdapter(Device)
_SAMPLES: TypeAdapter[list[TelemetrySample]] = TypeAdapter(list[TelemetrySample])

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS enterprises (id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meters (
    id TEXT PRIMARY KEY, enterprise_id TEXT NOT NULL, body TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS meters_by_enterprise ON meters (enterprise_id, id);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, enterprise_id TEXT NOT NULL, body TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_by_enterprise ON devices (enterprise_id, id);
CREATE TABLE IF NOT EXISTS telemetry (
    device_id TEXT NOT NULL, ts_us INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (device_id, ts_us)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS telemetry_latest (
    device_id TEXT PRIMARY KEY, ts_us INTEGER NOT NULL, body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meter_readings (
    meter_id TEXT NOT NULL, ts_us INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (meter_id, ts_us)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS instructions (
    id TEXT PRIMARY KEY, start_us INTEGER NOT NULL, body TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instructions_by_start ON instructions (start_us, id);
CREATE TABLE IF NOT EXISTS dispatch_state (
    instruction_id TEXT PRIMARY KEY REFERENCES instructions (id),
    status TEXT NOT NULL, body TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dispatch_state_by_status ON dispatch_state (status);
CREATE TABLE IF NOT EXISTS dispatch_progress (
    instruction_id TEXT NOT NULL, ts_us INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (instruction_id, ts_us)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS setpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, instruction_id TEXT, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS setpoints_by_instruction ON setpoints (instruction_id, seq);
CREATE TABLE IF NOT EXISTS tokens (token_sha256 TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger (
    name TEXT NOT NULL, seq INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (name, seq)
) WITHOUT ROWID;
"""


def _epoch_us(ts: datetime) -> int:
    """Integer microseconds since 1970-01-01 UTC; exact (no float rounding)."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no timezone; pass an aware UTC datetime")
    return (ts - _EPOCH) // _US


def _by_creation(tokens: Iterable[ApiToken]) -> list[ApiToken]:
    """Tokens ordered by creation time, then hash (a stable order for listings)."""
    return sorted(tokens, key=lambda t: (t.created_at, t.token_sha256))


def _newest_per_device(rows: Sequence[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """The (device id, ts [us], body) row with the greatest ts per device; the first of equals wins, as in the UPSERT."""
    best: dict[str, tuple[str, int, str]] = {}
    for row in rows:
        held = best.get(row[0])
        if held is None or row[1] > held[1]:
            best[row[0]] = row
    return list(best.values())


class SqliteStore(Store):
    """Store in one SQLite file (WAL). ``path`` is created with its parent directory on ``open()``."""

    def __init__(self, path: pathlib.Path) -> None:
        self._path = pathlib.Path(path)
        self._db: aiosqlite.Connection | None = None
        # One connection is shared by every coroutine; statements of two
        # transactions would interleave on it without this lock.
        self._lock: asyncio.Lock | None = None

    @property
    def path(self) -> pathlib.Path:
        """The database file."""
        return self._path

    # -- lifecycle --------------------------------------------------------

    async def open(self) -> None:
        """Create the file, its directory and the schema if missing. Raises ``StoreUnavailable``."""
        if self._db is not None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; every write
            # below opens and commits its own explicitly.
            db = await aiosqlite.connect(self._path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self._path}: {exc}") from exc
        try:
            await self._configure(db)
        except BaseException:
            await db.close()
            raise
        self._db = db
        self._lock = asyncio.Lock()

    async def _configure(self, db: aiosqlite.Connection) -> None:
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits
            # on power loss, and the Store contract (and DESIGN's "an accepted
            # instruction is never lost") promises a returned write is
            # durable. The cost is one fsync per transaction, which batching
            # (one transaction per telemetry batch) amortises.
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.executescript(_SCHEMA)
            await self._check_version(db)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot initialise SQLite store {self._path}: {exc}") from exc

    async def _check_version(self, db: aiosqlite.Connection) -> None:
        async with db.execute("SELECT max(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        found = row[0] if row else None
        if found is None:
            await db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif found > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"SQLite store {self._path} has schema version {found}; this software knows up to {SCHEMA_VERSION}"
            )

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    # -- plumbing ---------------------------------------------------------

    def _conn(self) -> tuple[aiosqlite.Connection, asyncio.Lock]:
        if self._db is None or self._lock is None:
            raise RuntimeError(f"SqliteStore({self._path}) is not open; call await store.open() first")
        return self._db, self._lock

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: committed on success, rolled back on any error."""
        db, lock = self._conn()
        async with lock:
            try:
                # IMMEDIATE takes the write lock up front, so a second process on
                # the same file waits (busy_timeout) instead of failing mid-way.
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    await db.rollback()
                    raise
                await db.commit()
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc

    async def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        db, lock = self._conn()
        async with lock:
            try:
                async with db.execute(sql, params) as cur:
                    return list(await cur.fetchall())
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.OperationalError) -> StoreUnavailable:
        # Our SQL is fixed, so at run time OperationalError means the file is
        # locked too long, the disk is full or gone: the store is unavailable.
        return StoreUnavailable(f"SQLite store {self._path} is unavailable: {exc}")

    async def _fetch_one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        rows = await self._fetch(sql, params)
        return rows[0] if rows else None

    # -- park: enterprises, meters, devices --------------------------------

    async def put_enterprise(self, enterprise: Enterprise) -> None:
        """Create or replace an enterprise."""
        async with self._write() as db:
            await db.execute(
                "INSERT INTO enterprises (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (enterprise.id, enterprise.model_dump_json()),
            )

    async def get_enterprise(self, enterprise_id: str) -> Enterprise | None:
        """The enterprise with this id, or None."""
        row = await self._fetch_one("SELECT body FROM enterprises WHERE id = ?", (enterprise_id,))
        return None if row is None else Enterprise.model_validate_json(row[0])

    async def list_enterprises(self) -> list[Enterprise]:
        """All enterprises, ordered by id."""
        rows = await self._fetch("SELECT body FROM enterprises ORDER BY id")
        return [Enterprise.model_validate_json(r[0]) for r in rows]

    async def put_meter(self, meter: MeteringPoint) -> None:
        """Create or replace a metering point."""
        async with self._write() as db:
            await db.execute(
                "INSERT INTO meters (id, enterprise_id, body) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET enterprise_id = excluded.enterprise_id, body = excluded.body",
                (meter.id, meter.enterprise_id, meter.model_dump_json()),
            )

    async def list_meters(self, enterprise_id: str | None = None) -> list[MeteringPoint]:
        """Metering points, of one enterprise or all, ordered by id."""
        if enterprise_id is None:
            rows = await self._fetch("SELECT body FROM meters ORDER BY id")
        else:
            rows = await self._fetch("SELECT body FROM meters WHERE enterprise_id = ? ORDER BY id", (enterprise_id,))
        return [MeteringPoint.model_validate_json(r[0]) for r in rows]

    async def put_device(self, device: Device) -> bool:
        """Create or replace a device; True when new. ``Conflict`` if the id belongs to another enterprise."""
        async with self._write() as db:
            async with db.execute("SELECT enterprise_id FROM devices WHERE id = ?", (device.id,)) as cur:
                row = await cur.fetchone()
            if row is not None and row[0] != device.enterprise_id:
                # The owner is not named: an enterprise must learn nothing about another.
                raise Conflict(f"device id {device.id!r} is already enrolled by another enterprise")
            await db.execute(
                "INSERT INTO devices (id, enterprise_id, body) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (device.id, device.enterprise_id, device.model_dump_json()),
            )
        return row is None

    async def get_device(self, device_id: str) -> Device | None:
        """The device with this id (of its own kind), or None."""
        row = await self._fetch_one("SELECT body FROM devices WHERE id = ?", (device_id,))
        return None if row is None else _DEVICE.validate_json(row[0])

    async def list_devices(self, enterprise_id: str | None = None) -> list[Device]:
        """Devices, of one enterprise or all, ordered by id."""
        if enterprise_id is None:
            rows = await self._fetch("SELECT body FROM devices ORDER BY id")
        else:
            rows = await self._fetch("SELECT body FROM devices WHERE enterprise_id = ? ORDER BY id", (enterprise_id,))
        return [_DEVICE.validate_json(r[0]) for r in rows]

    # -- telemetry and meters ----------------------------------------------

    async def append_telemetry(self, samples: Sequence[TelemetrySample]) -> None:
        """Add samples to history (first per device and instant wins) and move each device's latest forward.

        Written in transactions of ``_TELEMETRY_CHUNK`` samples: between them
        other writers (an instruction being accepted) take the connection, so a
        10,000-device poll never holds it for more than one chunk.
        """
        for start in range(0, len(samples), _TELEMETRY_CHUNK):
            history = [(s.device_id, _epoch_us(s.ts), s.model_dump_json()) for s in samples[start : start + _TELEMETRY_CHUNK]]
            latest = _newest_per_device(history)  # the same rows: each sample is serialised once
            async with self._write() as db:
                await db.executemany("INSERT OR IGNORE INTO telemetry (device_id, ts_us, body) VALUES (?, ?, ?)", history)
                await db.executemany(
                    "INSERT INTO telemetry_latest (device_id, ts_us, body) VALUES (?, ?, ?) "
                    "ON CONFLICT (device_id) DO UPDATE SET ts_us = excluded.ts_us, body = excluded.body "
                    "WHERE excluded.ts_us > telemetry_latest.ts_us",
                    latest,
                )

    async def latest_telemetry(self) -> dict[str, TelemetrySample]:
        """Latest sample per device id."""
        rows = await self._fetch("SELECT device_id, body FROM telemetry_latest")
        # One validator call for all of them: per-row model_validate_json costs more at 10,000 devices.
        samples = _SAMPLES.validate_json("[" + ",".join(r[1] for r in rows) + "]")
        return {r[0]: sample for r, sample in zip(rows, samples)}

    async def telemetry_history(self, device_id: str, start: datetime, end: datetime) -> list[TelemetrySample]:
        """Samples of one device with ``start <= ts < end``, ordered by time."""
        rows = await self._fetch(
            "SELECT body FROM telemetry WHERE device_id = ? AND ts_us >= ? AND ts_us < ? ORDER BY ts_us",
            (device_id, _epoch_us(start), _epoch_us(end)),
        )
        return [TelemetrySample.model_validate_json(r[0]) for r in rows]

    async def append_meter_readings(self, readings: Sequence[MeterReading]) -> None:
        """Add readings (first per meter and instant wins)."""
        if not readings:
            return
        rows = [(r.meter_id, _epoch_us(r.ts), r.model_dump_json()) for r in readings]
        async with self._write() as db:
            await db.executemany("INSERT OR IGNORE INTO meter_readings (meter_id, ts_us, body) VALUES (?, ?, ?)", rows)

    async def meter_readings(self, meter_id: str, start: datetime, end: datetime) -> list[MeterReading]:
        """Readings of one meter with ``start <= ts < end``, ordered by time."""
        rows = await self._fetch(
            "SELECT body FROM meter_readings WHERE meter_id = ? AND ts_us >= ? AND ts_us < ? ORDER BY ts_us",
            (meter_id, _epoch_us(start), _epoch_us(end)),
        )
        return [MeterReading.model_validate_json(r[0]) for r in rows]

    async def meter_readings_many(
        self, meter_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[MeterReading]]:
        """Readings of many meters in one query (the ids travel as one JSON array), by meter then time."""
        found: dict[str, list[MeterReading]] = {meter_id: [] for meter_id in meter_ids}
        if not found:
            return found
        rows = await self._fetch(
            "SELECT meter_id, body FROM meter_readings WHERE meter_id IN (SELECT value FROM json_each(?))"
            " AND ts_us >= ? AND ts_us < ? ORDER BY meter_id, ts_us",
            (json.dumps(list(found)), _epoch_us(start), _epoch_us(end)),
        )
        for meter_id, body in rows:
            found[meter_id].append(MeterReading.model_validate_json(body))
        return found

    # -- dispatch ------------------------------------------------------------

    async def put_instruction(self, instruction: DispatchInstruction, state: DispatchState) -> tuple[DispatchInstruction, bool]:
        """Store a new instruction with its initial state in one transaction; ``(stored, created)``."""
        if state.instruction_id != instruction.id:
            raise ValueError(f"state is for instruction {state.instruction_id!r}, not {instruction.id!r}")
        async with self._write() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO instructions (id, start_us, body) VALUES (?, ?, ?)",
                (instruction.id, _epoch_us(instruction.start), instruction.model_dump_json()),
            )
            created = cur.rowcount == 1
            await cur.close()
            if created:
                await db.execute(
                    "INSERT INTO dispatch_state (instruction_id, status, body) VALUES (?, ?, ?)",
                    (state.instruction_id, state.status.value, state.model_dump_json()),
                )
                return instruction, True
            async with db.execute("SELECT body FROM instructions WHERE id = ?", (instruction.id,)) as cur:
                row = await cur.fetchone()
        assert row is not None  # the INSERT was ignored because this row exists
        return DispatchInstruction.model_validate_json(row[0]), False

    async def get_instruction(self, instruction_id: str) -> tuple[DispatchInstruction, DispatchState] | None:
        """The instruction and its state, or None."""
        row = await self._fetch_one(
            "SELECT i.body, s.body FROM instructions i JOIN dispatch_state s ON s.instruction_id = i.id WHERE i.id = ?",
            (instruction_id,),
        )
        return None if row is None else _instruction_pair(row)

    async def list_instructions(
        self, statuses: Sequence[DispatchStatus] | None = None
    ) -> list[tuple[DispatchInstruction, DispatchState]]:
        """Instructions (optionally of some statuses), ordered by start then id."""
        sql = "SELECT i.body, s.body FROM instructions i JOIN dispatch_state s ON s.instruction_id = i.id"
        params: list[str] = []
        if statuses is not None:
            if not statuses:
                return []
            params = [DispatchStatus(s).value for s in statuses]
            sql += f" WHERE s.status IN ({', '.join('?' * len(params))})"
        rows = await self._fetch(sql + " ORDER BY i.start_us, i.id", params)
        return [_instruction_pair(r) for r in rows]

    async def put_dispatch_state(self, state: DispatchState) -> None:
        """Replace the state of an existing instruction; ``NotFound`` if there is none."""
        async with self._write() as db:
            cur = await db.execute(
                "UPDATE dispatch_state SET status = ?, body = ? WHERE instruction_id = ?",
                (state.status.value, state.model_dump_json(), state.instruction_id),
            )
            updated = cur.rowcount
            await cur.close()
            if updated == 0:
                raise NotFound(f"no dispatch instruction with id {state.instruction_id!r}")

    async def append_dispatch_progress(self, points: Sequence[DispatchProgress]) -> None:
        """Add progress points (first per instruction and instant wins)."""
        if not points:
            return
        rows = [(p.instruction_id, _epoch_us(p.ts), p.model_dump_json()) for p in points]
        async with self._write() as db:
            await db.executemany(
                "INSERT OR IGNORE INTO dispatch_progress (instruction_id, ts_us, body) VALUES (?, ?, ?)", rows
            )

    async def dispatch_progress(self, instruction_id: str) -> list[DispatchProgress]:
        """Progress points of one instruction, ordered by time."""
        rows = await self._fetch(
            "SELECT body FROM dispatch_progress WHERE instruction_id = ? ORDER BY ts_us", (instruction_id,)
        )
        return [DispatchProgress.model_validate_json(r[0]) for r in rows]

    async def append_setpoints(self, setpoints: Sequence[Setpoint]) -> None:
        """Audit log of set-points handed to adapters, in the order given."""
        if not setpoints:
            return
        rows = [(s.instruction_id, s.model_dump_json()) for s in setpoints]
        async with self._write() as db:
            await db.executemany("INSERT INTO setpoints (instruction_id, body) VALUES (?, ?)", rows)

    async def setpoints_for(self, instruction_id: str) -> list[Setpoint]:
        """Set-points sent for one instruction, in the order sent."""
        rows = await self._fetch("SELECT body FROM setpoints WHERE instruction_id = ? ORDER BY seq", (instruction_id,))
        return [Setpoint.model_validate_json(r[0]) for r in rows]

    # -- auth ------------------------------------------------------------------

    async def put_token(self, token: ApiToken) -> None:
        """Create or replace a token record (keyed by its hash)."""
        async with self._write() as db:
            await db.execute(
                "INSERT INTO tokens (token_sha256, body) VALUES (?, ?) "
                "ON CONFLICT (token_sha256) DO UPDATE SET body = excluded.body",
                (token.token_sha256, token.model_dump_json()),
            )

    async def get_token(self, token_sha256: str) -> ApiToken | None:
        """The token record with this hash, or None."""
        row = await self._fetch_one("SELECT body FROM tokens WHERE token_sha256 = ?", (token_sha256,))
        return None if row is None else ApiToken.model_validate_json(row[0])

    async def list_tokens(self) -> list[ApiToken]:
        """Every token record, ordered by ``created_at`` then hash."""
        rows = await self._fetch("SELECT body FROM tokens")
        return _by_creation(ApiToken.model_validate_json(row[0]) for row in rows)

    # -- health -------------------------------------------------------------------

    # -- ledgers -----------------------------------------------------------------

    async def append_ledger(
        self, ledger: str, payloads: Sequence[Mapping[str, Any]], corrects: Sequence[int | None] | None = None
    ) -> list[dict[str, Any]]:
        """Append chained records in one transaction (the write lock orders concurrent appenders)."""
        fixes = _corrections(payloads, corrects)
        async with self._write() as db:
            async with db.execute("SELECT record FROM ledger WHERE name = ? ORDER BY seq DESC LIMIT 1", (ledger,)) as cur:
                row = await cur.fetchone()
            previous = None if row is None else json.loads(row[0])
            written = []
            for payload, fix in zip(payloads, fixes):
                previous = make_record(previous, payload, corrects=fix)
                written.append(previous)
            await db.executemany(
                "INSERT INTO ledger (name, seq, record) VALUES (?, ?, ?)",
                [(ledger, r["seq"], json.dumps(r, separators=(",", ":"))) for r in written],
            )
        return written

    async def append_ledger_if(
        self,
        ledger: str,
        payloads: Sequence[Mapping[str, Any]],
        expected_last_hash: str | None,
        corrects: Sequence[int | None] | None = None,
    ) -> list[dict[str, Any]] | None:
        """Append chained records only if the head's hash is ``expected_last_hash``; one IMMEDIATE transaction.

        The write lock taken by BEGIN IMMEDIATE holds off every other writer (this
        connection's and other processes') between reading the head and inserting.
        """
        fixes = _corrections(payloads, corrects)
        expected = _expected_head(expected_last_hash)
        async with self._write() as db:
            async with db.execute("SELECT record FROM ledger WHERE name = ? ORDER BY seq DESC LIMIT 1", (ledger,)) as cur:
                row = await cur.fetchone()
            previous = None if row is None else json.loads(row[0])
            if (None if previous is None else previous["hash"]) != expected:
                return None
            written = []
            for payload, fix in zip(payloads, fixes):
                previous = make_record(previous, payload, corrects=fix)
                written.append(previous)
            await db.executemany(
                "INSERT INTO ledger (name, seq, record) VALUES (?, ?, ?)",
                [(ledger, r["seq"], json.dumps(r, separators=(",", ":"))) for r in written],
            )
        return written

    async def ledger_records(self, ledger: str, start_seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Records of one ledger from ``start_seq``, by sequence number."""
        rows = await self._fetch(
            "SELECT record FROM ledger WHERE name = ? AND seq >= ? ORDER BY seq LIMIT ?",
            (ledger, start_seq, -1 if limit is None else limit),
        )
        return [json.loads(r[0]) for r in rows]

    async def ledger_names(self) -> list[str]:
        """Ledgers holding records, sorted."""
        return [r[0] for r in await self._fetch("SELECT DISTINCT name FROM ledger ORDER BY name")]

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        if self._db is None:
            return False
        try:
            await self._fetch("SELECT 1")
        except (StoreUnavailable, sqlite3.Error, ValueError):
            return False
        return True


def _instruction_pair(row: tuple[Any, ...]) -> tuple[DispatchInstruction, DispatchState]:
    return DispatchInstruction.model_validate_json(row[0]), DispatchState.model_validate_json(row[1])

