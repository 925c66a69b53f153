"""A day-ahead demand-response market that clears the plant's bids and dispatches what it won.

Pure part (no I/O): :func:`clear_round` takes the plant envelope rows
(``GET /api/v1/plant/envelope``), builds the plant's up and down offer curves
with :func:`market.envelope_bids`, adds seeded rival bidders, draws a seeded
demand per interval and clears each direction with
:func:`market.clear_uniform_price`; :func:`dispatch_instructions` turns the
plant's awards into dispatch instructions (consecutive intervals with the same
award merged, deterministic ids so a resend changes nothing).

HTTP part: :func:`run_round` fetches the envelope and posts the instructions
to ``POST /api/v1/dispatch`` with a grid token (aiohttp, loopback only).

Units: kW, CNY/kWh for costs, CNY/MWh for bids and clearing prices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np

from market import (
    BidCurve,
    build_bid_curves,
    clear_uniform_price,
    envelope_bids,
    stack_bids,
)

__all__ = ["MarketRound", "MarketSpec", "clear_round", "dispatch_instructions", "envelope_arrays", "run_round"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
"""Hosts the simulator talks to; it never leaves the machine."""


@dataclass(frozen=True)
class MarketSpec:
    """The simulated market: rivals, demand and the plant's own costs.

    Attributes
    ----------
    seed : seed of rivals and demand [-].
    rivals : other bidders [-].
    rival_capacity_kw : capability of each rival per interval and direction [kW].
    rival_cost_cny_per_kwh : range of rival marginal costs (low, high) [CNY/kWh].
    demand_share : range of demand as a share of all offers (low, high), per interval [-].
    event_probability : chance an interval has any demand [-].
    plant_up_cost_cny_per_kwh, plant_down_cost_cny_per_kwh : plant marginal costs [CNY/kWh].
    markup_fraction : margin the plant adds to its costs [-].
    max_steps : offer steps per interval [-].
    price_cap_cny_per_mwh : market price cap [CNY/MWh].
    min_award_kw : awards below this are not dispatched [kW].
    """

    seed: int = 0
    rivals: int = 3
    rival_capacity_kw: float = 500.0
    rival_cost_cny_per_kwh: tuple[float, float] = (0.2, 1.5)
    demand_share: tuple[float, float] = (0.2, 0.9)
    event_probability: float = 0.5
    plant_up_cost_cny_per_kwh: float = 0.3
    plant_down_cost_cny_per_kwh: float = 0.1
    markup_fraction: float = 0.1
    max_steps: int = 5
    price_cap_cny_per_mwh: float = 5000.0
    min_award_kw: float = 1.0


@dataclass(frozen=True)
class MarketRound:
    """Outcome of one clearing.

    Attributes
    ----------
    starts : UTC start of each interval [datetime].
    plant_up_kw, plant_down_kw : the plant's awards per interval, shape (T,) [kW].
    up_price_cny_per_mwh, down_price_cny_per_mwh : clearing prices, NaN where no demand [CNY/MWh].
    up_demand_kw, down_demand_kw : demand cleared per interval [kW].
    """

    starts: list[datetime]
    plant_up_kw: np.ndarray
    plant_down_kw: np.ndarray
    up_price_cny_per_mwh: np.ndarray
    down_price_cny_per_mwh: np.ndarray
    up_demand_kw: np.ndarray
    down_demand_kw: np.ndarray


def envelope_arrays(rows: Sequence[Mapping[str, Any]]) -> tuple[list[datetime], np.ndarray, np.ndarray]:
    """Interval starts and up / down capability from envelope rows ``{start, up_kw, down_kw}`` [datetime], [kW]."""
    if not rows:
        raise ValueError("envelope has no intervals")
    starts = []
    for i, row in enumerate(rows):
        start = datetime.fromisoformat(str(row["start"]))
        if start.tzinfo is None:
            raise ValueError(f"envelope[{i}].start '{row['start']}' has no time zone")
        starts.append(start)
    up = np.maximum(np.array([float(r["up_kw"]) for r in rows]), 0.0)
    down = np.maximum(np.array([float(r["down_kw"]) for r in rows]), 0.0)
    return starts, up, down


def _rival_curve(rng: np.random.Generator, spec: MarketSpec, intervals: int, direction: Literal["up", "down"]) -> BidCurve:
    available = np.full((spec.rivals, intervals), spec.rival_capacity_kw)
    cost = rng.uniform(*spec.rival_cost_cny_per_kwh, size=spec.rivals)
    return build_bid_curves(available, cost, direction, max_steps=spec.max_steps)


def _demand(rng: np.random.Generator, spec: MarketSpec, offered_kw: np.ndarray) -> np.ndarray:
    """Seeded inelastic demand per interval: a share of what is offered, zero in intervals without an event [kW]."""
    share = rng.uniform(*spec.demand_share, size=offered_kw.shape)
    happens = rng.random(offered_kw.shape) < spec.event_probability
    return np.where(happens, np.round(share * offered_kw, 1), 0.0)


def _clear(plant: BidCurve, rival: BidCurve, demand: np.ndarray, cap: float) -> tuple[np.ndarray, np.ndarray]:
    """Plant award and clearing price per interval of one direction [kW], [CNY/MWh]."""
    quantity, price, owner = stack_bids([plant, rival])
    clearing = clear_uniform_price(quantity, price, demand, cap)
    return clearing.accepted_by_owner(owner, 2)[0], clearing.clearing_price_cny_per_mwh


def clear_round(rows: Sequence[Mapping[str, Any]], spec: MarketSpec) -> MarketRound:
    """Clear one round against the plant envelope ``rows`` (pure, reproducible for a seed)."""
    starts, up, down = envelope_arrays(rows)
    options = {"markup_fraction": spec.markup_fraction, "max_steps": spec.max_steps}
    plant_up, plant_down = envelope_bids(up, down, spec.plant_up_cost_cny_per_kwh, spec.plant_down_cost_cny_per_kwh, **options)
    rng = np.random.default_rng(spec.seed)
    rival_up, rival_down = _rival_curve(rng, spec, len(starts), "up"), _rival_curve(rng, spec, len(starts), "down")
    up_demand = _demand(rng, spec, plant_up.total_kw() + rival_up.total_kw())
    down_demand = np.where(up_demand > 0, 0.0, _demand(rng, spec, plant_down.total_kw() + rival_down.total_kw()))
    award_up, price_up = _clear(plant_up, rival_up, up_demand, spec.price_cap_cny_per_mwh)
    award_down, price_down = _clear(plant_down, rival_down, down_demand, spec.price_cap_cny_per_mwh)
    return MarketRound(starts, award_up, award_down, price_up, price_down, up_demand, down_demand)


def dispatch_instructions(result: MarketRound, prefix: str = "mkt", min_award_kw: float = 1.0) -> list[dict[str, Any]]:
    """Delta instructions for the plant's awards: + = up (reduce load), − = down; equal neighbours merged.

    Returns JSON bodies for ``POST /api/v1/dispatch``; ids are ``{prefix}-{first interval start}``.
    """
    net = np.round(result.plant_up_kw - result.plant_down_kw, 1)
    net = np.where(np.abs(net) >= min_award_kw, net, 0.0)
    step = result.starts[1] - result.starts[0] if len(result.starts) > 1 else None
    instructions: list[dict[str, Any]] = []
    k = 0
    while k < net.size:
        run_end = k + 1
        while run_end < net.size and net[run_end] == net[k]:
            run_end += 1
        if net[k] != 0.0:
            end = result.starts[run_end] if run_end < net.size else result.starts[-1] + (step or timedelta(minutes=15))
            start = result.starts[k]
            instructions.append({
                "id": f"{prefix}-{start.astimezone(UTC).strftime('%Y%m%dT%H%MZ')}",
                "kind": "delta",
                "start": start.isoformat(),
                "end": end.isoformat(),
                "delta_kw": float(net[k]),
                "source": "rest",
            })
        k = run_end
    return instructions


# ------------------------------------------------------------------ HTTP ----


def _check_loopback(base_url: str) -> str:
    host = urlsplit(base_url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"base_url {base_url!r}: the market simulator only talks to loopback ({sorted(LOOPBACK_HOSTS)})")
    return base_url.rstrip("/")


async def run_round(
    base_url: str, grid_token: str, spec: MarketSpec, hours: float = 4.0, prefix: str = "mkt"
) -> tuple[MarketRound, list[tuple[int, dict[str, Any]]]]:
    """Fetch the envelope, clear, and post the resulting instructions; returns the round and each answer (status, body)."""
    import aiohttp

    base = _check_loopback(base_url)
    headers = {"Authorization": f"Bearer {grid_token}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.get(f"{base}/api/v1/plant/envelope", params={"hours": str(hours)}) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"envelope request failed with {response.status}: {body}")
        result = clear_round(body["intervals"], spec)
        answers = []
        for instruction in dispatch_instructions(result, prefix, spec.min_award_kw):
            async with session.post(f"{base}/api/v1/dispatch", json=instruction) as response:
                answers.append((response.status, await response.json()))
    return result, answers
