"""The answers busy callers poll, built once per change instead of once per request: store health, dispatch views."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from market import response_ratio
from vpp.api.routes import dump
from vpp.api.shared_reads import SharedReads
from vpp.model import DispatchInstruction, DispatchState
from vpp.service import PlantService
from vpp.store.base import Store

PROGRESS_POINTS_SHOWN = 720  # last points of requested vs delivered in a dispatch view

HEALTH_REUSE_S = 1.0
"""How long a successful store ping answers ``/healthz`` for other callers [s]; a failed one is never reused."""

DISPATCH_VIEWS_KEPT = 16
"""Most dispatch views kept encoded, one per instruction [-]; beyond it the oldest is dropped."""


HEALTH_KEY: web.AppKey[StoreHealth] = web.AppKey("store_health")
DISPATCH_VIEWS_KEY: web.AppKey[DispatchViews] = web.AppKey("dispatch_views")
OPENAPI_KEY: web.AppKey[EncodedOnce] = web.AppKey("openapi_document")


class EncodedOnce:
    """A JSON document fixed for the life of the app (the OpenAPI document), built and encoded on first use."""

    def __init__(self, build: Callable[[], object]) -> None:
        self._build = build
        self._body: bytes | None = None

    def response(self) -> web.Response:
        """The document as a JSON answer."""
        if self._body is None:
            self._body = json.dumps(self._build()).encode()
        return json_bytes_response(self._body)


class StoreHealth:
    """Whether the store answers, for ``/healthz``: a ping shared by concurrent checks.

    A successful ping answers for ``HEALTH_REUSE_S`` after it began, unless a
    request meets an unavailable store meanwhile (``failed``): then the next
    check pings again. A failed ping is never reused.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._reads = SharedReads()
        self._ok_since: float | None = None  # monotonic time the last successful ping began [s]
        self._failures = 0  # bumped by failed: a ping begun before a failure may not vouch for the store after it

    async def ok(self, store: Store) -> bool:
        """True when the store answered a ping begun less than ``HEALTH_REUSE_S`` ago (or answers one now)."""
        if self._ok_since is not None and self._clock() - self._ok_since < HEALTH_REUSE_S:
            return True
        return await self._reads.read("ping", lambda: self._ping(store))

    def failed(self) -> None:
        """A request found the store unavailable: the next check pings."""
        self._ok_since = None
        self._failures += 1

    async def _ping(self, store: Store) -> bool:
        started, failures = self._clock(), self._failures
        answered = await store.ping()
        if not answered:
            self._ok_since = None
        elif failures == self._failures:
            self._ok_since = started
        return answered


@dataclass(frozen=True)
class _Kept:
    instruction: DispatchInstruction
    state: DispatchState
    body: bytes


class DispatchViews:
    """Answers of ``GET /api/v1/dispatch/{id}``, encoded once per state of the instruction.

    The view is a function of the instruction, its state and its progress points.
    Instruction and state are immutable, and the service hands out the same
    state object until its next control step; the progress points of a step carry
    that step's time, which is also the state's ``updated_at``. So once the points
    read include the one of the state's step, the encoded answer is kept and
    served while the service returns the very same objects. Progress reads for
    one instruction are shared by the requests waiting for them.
    """

    def __init__(self, max_kept: int = DISPATCH_VIEWS_KEPT) -> None:
        if max_kept < 1:
            raise ValueError(f"max_kept {max_kept} must be >= 1")
        self._max_kept = max_kept
        self._kept: dict[str, _Kept] = {}  # instruction id -> its last complete answer
        self._reads = SharedReads()

    def __len__(self) -> int:
        return len(self._kept)

    async def answer(self, service: PlantService, instruction_id: str) -> web.Response:
        """The JSON answer for one instruction (``NotFound`` when there is none)."""
        instruction, state = await service.instruction_view(instruction_id)
        kept = self._kept.get(instruction_id)
        if kept is not None and kept.instruction is instruction and kept.state is state:
            return json_bytes_response(kept.body)
        progress, last_ts = await self._reads.read(instruction_id, lambda: _progress_rows(service.store, instruction_id))
        body = dispatch_view(instruction, state)
        body["progress"] = progress
        encoded = json.dumps(body).encode()
        if last_ts is not None and last_ts == state.updated_at:
            self._keep(instruction_id, _Kept(instruction, state, encoded))
        return json_bytes_response(encoded)

    def _keep(self, instruction_id: str, kept: _Kept) -> None:
        self._kept.pop(instruction_id, None)  # re-inserted last: the dict's order is the order of changes
        if len(self._kept) >= self._max_kept:
            del self._kept[next(iter(self._kept))]
        self._kept[instruction_id] = kept


def json_bytes_response(body: bytes, status: int = 200) -> web.Response:
    """An answer of already encoded JSON, with the same headers as ``web.json_response``."""
    return web.Response(body=body, status=status, content_type="application/json", charset="utf-8")


def dispatch_view(instruction: DispatchInstruction, state: DispatchState) -> dict:
    """The instruction, its state, the response ratio and per-enterprise shares of delivered energy (JSON-ready)."""
    ratio = response_ratio(state.delivered_kwh, state.requested_kwh)
    delivered = state.enterprise_delivered_kwh
    positive_total = sum(v for v in delivered.values() if v > 0)
    shares = [
        {
            "enterprise_id": enterprise_id,
            "delivered_kwh": round(kwh, 3),
            "share": round(max(kwh, 0.0) / positive_total, 6) if positive_total > 0 else 0.0,
        }
        for enterprise_id, kwh in sorted(delivered.items())
    ]
    return {
        "instruction": dump(instruction),
        "state": state_json(state),
        "response_ratio": None if ratio is None else round(ratio, 4),
        "enterprise_shares": shares,
    }


def state_json(state: DispatchState) -> dict:
    """An instruction's state, JSON-ready, without the per-device baselines; energies rounded to 0.001 [kWh]."""
    body = state.model_dump(mode="json", exclude={"device_baseline_kw"})
    body["requested_kwh"] = round(state.requested_kwh, 3)
    body["delivered_kwh"] = round(state.delivered_kwh, 3)
    body["enterprise_delivered_kwh"] = {k: round(v, 3) for k, v in state.enterprise_delivered_kwh.items()}
    return body


async def _progress_rows(store: Store, instruction_id: str) -> tuple[list[dict], datetime | None]:
    """The last ``PROGRESS_POINTS_SHOWN`` progress points, JSON-ready (requested and measured [kW]), and the time of the last."""
    points = await store.dispatch_progress(instruction_id)
    rows = [
        {"ts": p.ts.isoformat(), "requested_kw": round(p.requested_kw, 3), "measured_kw": round(p.measured_kw, 3)}
        for p in points[-PROGRESS_POINTS_SHOWN:]
    ]
    return rows, points[-1].ts if points else None
