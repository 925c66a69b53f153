"""Day-ahead bids from the dispatch envelope, and a uniform-price clearing.

:func:`build_bid_curves` turns what the plant can move in each interval
(per resource: a device, an enterprise, or the whole plant) and what moving
it costs into one stepwise offer curve per interval: quantity steps at
non-decreasing prices, never offering a resource below its marginal cost.

:func:`clear_uniform_price` clears offers from any number of bidders against
an inelastic demand per interval (what the grid wants reduced or raised):
cheapest first; the marginal offer sets one price paid to every accepted
quantity; offers tied at the marginal price share the remainder pro rata.
The market simulator wraps it; it is pure and vectorised over intervals.

Units: quantities in kW per interval (held for the whole interval), prices in
CNY/MWh as market bids are quoted; device marginal costs come in CNY/kWh as
enrolled (``vpp.model``) and are converted (× 1000).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["BidCurve", "Clearing", "build_bid_curves", "clear_uniform_price", "envelope_bids", "stack_bids"]


@dataclass(frozen=True)
class BidCurve:
    """Stepwise offer curves, one per interval.

    Attributes
    ----------
    quantity_kw : width of each step, shape (T, K), ≥ 0; unused steps are 0 [kW].
    price_cny_per_mwh : price of each step, shape (T, K), non-decreasing along K [CNY/MWh].
    direction : "up" (raise plant output / reduce load) or "down" [-].
    """

    quantity_kw: np.ndarray
    price_cny_per_mwh: np.ndarray
    direction: Literal["up", "down"] = "up"

    def total_kw(self) -> np.ndarray:
        """Total offered per interval, shape (T,) [kW]."""
        return self.quantity_kw.sum(axis=1)


def _resource_matrix(available_kw: np.ndarray) -> np.ndarray:
    """Availability as (resources, intervals), checked finite and ≥ 0 [kW]."""
    available = np.asarray(available_kw, dtype=np.float64)
    if available.ndim == 1:
        available = available[None, :]
    if available.ndim != 2:
        raise ValueError(f"available_kw has shape {available.shape}, expected (intervals,) or (resources, intervals)")
    if not np.isfinite(available).all() or (available < 0).any():
        raise ValueError("available_kw must be finite and >= 0 (pass up and down capability separately)")
    return available


def _offer_prices(
    cost_cny_per_kwh: np.ndarray | float,
    shape: tuple[int, int],
    markup_fraction: float,
    tick: float,
    floor: float,
) -> np.ndarray:
    """Offer price per (resource, interval) [CNY/MWh].

    cost × 1000 × (1 + markup), rounded up to the tick, at least the floor.
    """
    cost = np.asarray(cost_cny_per_kwh, dtype=np.float64)
    if cost.ndim == 1:
        cost = cost[:, None]
    try:
        cost = np.broadcast_to(cost, shape)
    except ValueError:
        raise ValueError(
            f"marginal_cost_cny_per_kwh has shape {np.shape(cost_cny_per_kwh)}, expected a scalar, "
            f"({shape[0]},) or {shape}"
        ) from None
    if not np.isfinite(cost).all():
        raise ValueError("marginal_cost_cny_per_kwh must be finite")
    price = cost * 1000.0 * (1.0 + markup_fraction)
    if tick > 0:
        price = np.ceil(np.round(price / tick, 9)) * tick
    return np.maximum(price, floor)


def build_bid_curves(
    available_kw: np.ndarray,
    marginal_cost_cny_per_kwh: np.ndarray | float,
    direction: Literal["up", "down"] = "up",
    markup_fraction: float = 0.0,
    max_steps: int | None = None,
    price_tick_cny_per_mwh: float = 0.01,
    price_floor_cny_per_mwh: float = 0.0,
    price_cap_cny_per_mwh: float | None = None,
) -> BidCurve:
    """Stepwise, monotone offer curves per interval from available capability and marginal costs.

    Resources are stacked cheapest first; resources at the same price form
    one step. With ``max_steps`` (markets limit the number of segments),
    adjacent steps are merged into at most that many, each at the highest
    price it contains, so no resource is ever offered below its cost.
    Resources whose price exceeds ``price_cap_cny_per_mwh`` are left out.

    Parameters
    ----------
    available_kw : capability per interval from the dispatch envelope, shape (T,) or (R, T) [kW].
    marginal_cost_cny_per_kwh : cost of moving each resource, scalar, (R,) or (R, T) [CNY/kWh].
    direction : "up" or "down", recorded on the curve [-].
    markup_fraction : margin added to cost [-].
    max_steps : most steps per interval; None = one per distinct price [-].
    price_tick_cny_per_mwh : prices are rounded up to this tick; 0 = no rounding [CNY/MWh].
    price_floor_cny_per_mwh : lowest price offered [CNY/MWh].
    price_cap_cny_per_mwh : market price cap; dearer resources are not offered [CNY/MWh].

    Returns
    -------
    The curves, shape (T, K) [kW], [CNY/MWh].
    """
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps {max_steps} must be >= 1")
    available = _resource_matrix(available_kw)
    price = _offer_prices(
        marginal_cost_cny_per_kwh, available.shape, markup_fraction, price_tick_cny_per_mwh, price_floor_cny_per_mwh
    )
    offered = available > 0
    if price_cap_cny_per_mwh is not None:
        offered &= price <= price_cap_cny_per_mwh
    quantity, step_price = _steps(available.T, np.where(offered, price, np.inf).T, max_steps)
    empty_price = price_floor_cny_per_mwh
    step_price = np.where(np.isfinite(step_price), step_price, empty_price)
    return BidCurve(quantity_kw=quantity, price_cny_per_mwh=step_price, direction=direction)


def envelope_bids(
    up_kw: np.ndarray,
    down_kw: np.ndarray,
    up_cost_cny_per_kwh: np.ndarray | float,
    down_cost_cny_per_kwh: np.ndarray | float,
    **options: object,
) -> tuple[BidCurve, BidCurve]:
    """Up and down offer curves from a dispatch envelope, both built by :func:`build_bid_curves`.

    Parameters
    ----------
    up_kw : capability to raise plant output (reduce load) per interval, (T,) or (R, T), ≥ 0 [kW].
    down_kw : capability to lower plant output (raise load) per interval, same shape, ≥ 0 [kW].
    up_cost_cny_per_kwh, down_cost_cny_per_kwh : marginal costs, scalar, (R,) or (R, T) [CNY/kWh].
    options : keyword options of :func:`build_bid_curves` (markup, steps, tick, floor, cap) [-].

    Returns
    -------
    ``(up, down)`` curves [kW], [CNY/MWh].
    """
    up = build_bid_curves(up_kw, up_cost_cny_per_kwh, "up", **options)
    down = build_bid_curves(down_kw, down_cost_cny_per_kwh, "down", **options)
    return up, down


def _steps(quantity: np.ndarray, price: np.ndarray, max_steps: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Merge (T, R) offers into (T, K) steps; +inf price marks offers left out."""
    t, r = quantity.shape
    order = np.argsort(price, axis=1, kind="stable")
    p = np.take_along_axis(price, order, axis=1)
    q = np.take_along_axis(quantity, order, axis=1)
    live = np.isfinite(p)
    new = live & np.concatenate([np.ones((t, 1), dtype=bool), p[:, 1:] != p[:, :-1]], axis=1)
    step = np.cumsum(new, axis=1) - 1
    count = new.sum(axis=1)
    if max_steps is not None:
        squeeze = count > max_steps
        step = np.where(squeeze[:, None], step * max_steps // np.maximum(count, 1)[:, None], step)
        count = np.minimum(count, max_steps)
    k = int(count.max()) if t and r else 0
    rows = np.broadcast_to(np.arange(t)[:, None], (t, r))[live]
    widths = np.zeros((t, k))
    np.add.at(widths, (rows, step[live]), q[live])
    prices = np.full((t, k), -np.inf)
    np.maximum.at(prices, (rows, step[live]), p[live])
    prices = np.maximum.accumulate(prices, axis=1) if k else prices
    return widths, np.where(np.isneginf(prices), np.inf, prices)


def stack_bids(curves: Sequence[BidCurve]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate several bidders' curves for clearing.

    Parameters
    ----------
    curves : one curve per bidder, all with the same number of intervals [-].

    Returns
    -------
    ``(quantity_kw (T, B), price_cny_per_mwh (T, B), owner (B,))``; owner is each column's
    bidder index [kW], [CNY/MWh], [-].
    """
    if not curves:
        raise ValueError("no bids to stack")
    intervals = {c.quantity_kw.shape[0] for c in curves}
    if len(intervals) != 1:
        raise ValueError(f"bid curves cover different numbers of intervals: {sorted(intervals)}")
    quantity = np.concatenate([c.quantity_kw for c in curves], axis=1)
    price = np.concatenate([c.price_cny_per_mwh for c in curves], axis=1)
    owner = np.concatenate([np.full(c.quantity_kw.shape[1], i, dtype=np.intp) for i, c in enumerate(curves)])
    return quantity, price, owner


@dataclass(frozen=True)
class Clearing:
    """Result of a uniform-price clearing.

    Attributes
    ----------
    accepted_kw : accepted part of each offer step, shape (T, B) [kW].
    clearing_price_cny_per_mwh : price paid for every accepted kW, shape (T,); NaN with no demand [CNY/MWh].
    shortfall_kw : demand the offers could not cover, shape (T,) [kW].
    """

    accepted_kw: np.ndarray
    clearing_price_cny_per_mwh: np.ndarray
    shortfall_kw: np.ndarray

    def accepted_by_owner(self, owner: np.ndarray, bidders: int) -> np.ndarray:
        """Accepted quantity per bidder and interval, shape (bidders, T) [kW]."""
        totals = np.zeros((bidders, self.accepted_kw.shape[0]))
        np.add.at(totals, np.asarray(owner), self.accepted_kw.T)
        return totals


def clear_uniform_price(
    quantity_kw: np.ndarray,
    price_cny_per_mwh: np.ndarray,
    demand_kw: np.ndarray,
    price_cap_cny_per_mwh: float | None = None,
) -> Clearing:
    """Clear offers against an inelastic demand per interval at one uniform price.

    Offers are accepted cheapest first until the demand is met. The clearing
    price is the price of the marginal (last needed) offer; every offer below
    it is accepted in full, offers at it share the rest in proportion to
    their quantity. When the offers cannot cover the demand, all are accepted,
    the shortfall is reported and the price is the cap (or the dearest offer
    without a cap). With no demand nothing is accepted and the price is NaN.

    Parameters
    ----------
    quantity_kw : offer step widths, shape (T, B), ≥ 0 [kW].
    price_cny_per_mwh : offer step prices, shape (T, B) [CNY/MWh].
    demand_kw : quantity wanted per interval, shape (T,), ≥ 0 [kW].
    price_cap_cny_per_mwh : price set when supply is short; None = the dearest offer [CNY/MWh].

    Returns
    -------
    Accepted quantities, clearing prices and shortfalls [kW], [CNY/MWh], [kW].
    """
    q, p, demand = _clearing_inputs(quantity_kw, price_cny_per_mwh, demand_kw)
    live_price = np.where(q > 0, p, np.inf)  # empty steps never set the price
    marginal, met = _marginal_price(q, live_price, demand)
    short = (demand > 0) & ~met
    accepted = np.where(short[:, None], q, _accept(q, live_price, demand, marginal))
    accepted = np.where((demand > 0)[:, None], accepted, 0.0)
    price = np.where(met, marginal, np.where(short, _short_price(q, p, price_cap_cny_per_mwh), np.nan))
    return Clearing(accepted, price, np.where(short, demand - q.sum(axis=1), 0.0))


def _marginal_price(q: np.ndarray, live_price: np.ndarray, demand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Price of the offer that completes the demand, and whether the demand is met ([CNY/MWh], [-])."""
    order = np.argsort(live_price, axis=1, kind="stable")
    cumulative = np.cumsum(np.take_along_axis(q, order, axis=1), axis=1)
    enough = cumulative >= (demand - 1e-9 * np.maximum(demand, 1.0))[:, None]
    met = enough.any(axis=1) & (demand > 0)
    sorted_price = np.take_along_axis(live_price, order, axis=1)
    marginal = np.take_along_axis(sorted_price, np.argmax(enough, axis=1)[:, None], axis=1)[:, 0]
    return np.where(met, marginal, np.inf), met


def _accept(q: np.ndarray, live_price: np.ndarray, demand: np.ndarray, marginal: np.ndarray) -> np.ndarray:
    """Offers below the marginal price in full, those at it pro rata to fill the demand [kW]."""
    below = live_price < marginal[:, None]
    at = live_price == marginal[:, None]
    rest = demand - np.where(below, q, 0.0).sum(axis=1)
    at_total = np.where(at, q, 0.0).sum(axis=1)
    share = np.clip(np.divide(rest, at_total, out=np.zeros_like(rest), where=at_total > 0), 0.0, 1.0)
    return np.where(below, q, 0.0) + np.where(at, q * share[:, None], 0.0)


def _short_price(q: np.ndarray, p: np.ndarray, cap: float | None) -> np.ndarray:
    """Price when supply is short: the cap, or the dearest offer (NaN with no offers) [CNY/MWh]."""
    if cap is not None:
        return np.full(q.shape[0], float(cap))
    dearest = np.where(q > 0, p, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(np.isfinite(dearest), dearest, np.nan)


def _clearing_inputs(
    quantity_kw: np.ndarray, price_cny_per_mwh: np.ndarray, demand_kw: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked float arrays (T, B), (T, B), (T,)."""
    q = np.asarray(quantity_kw, dtype=np.float64)
    p = np.asarray(price_cny_per_mwh, dtype=np.float64)
    demand = np.asarray(demand_kw, dtype=np.float64)
    if q.ndim != 2 or p.shape != q.shape or demand.shape != (q.shape[0],):
        raise ValueError(
            f"quantity_kw {q.shape}, price_cny_per_mwh {p.shape} and demand_kw {demand.shape} "
            "must be (T, B), (T, B) and (T,)"
        )
    if not np.isfinite(q).all() or (q < 0).any():
        raise ValueError("quantity_kw must be finite and >= 0")
    if not np.isfinite(p[q > 0]).all():
        raise ValueError("price_cny_per_mwh must be finite where quantity_kw > 0")
    if not np.isfinite(demand).all() or (demand < 0).any():
        raise ValueError("demand_kw must be finite and >= 0")
    return q, p, demand
