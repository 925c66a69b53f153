"""Event performance, payments, allocation to enterprises and monthly statements.

The plant (the park's VPP) is settled with the grid per event: its delivered
energy is the sum over enterprises of baseline − actual (peak shaving) or
actual − baseline (valley filling); a programme's :class:`PaymentRule` turns
the plant's response ratio into an energy payment (bands, cap) and a
penalty, and capacity is paid per kW and month. Money then goes to the
enterprises:

* revenue of an event to those who delivered, in proportion to their
  delivered energy ("who provides, profits", 谁提供、谁获利);
* the plant's penalty to those who fell short of their share of the request;
* costs of services the park consumes to those who benefit ("who benefits,
  bears", 谁受益、谁承担), in proportion to a benefit measure the caller passes.

Money is integer fen (0.01 CNY). Each plant amount is rounded once, half away
from zero, and split with the largest-remainder method so the shares add up
to the plant amount exactly.

An enterprise whose baseline is unavailable or whose meter is missing an
interval of the event is not *verified* for that event: its delivered energy
counts as 0 for the plant and for money, and its statement row says why. Its
missing intervals are reported, never filled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from market.baselines import (
    INTERVAL_H,
    BaselineMethod,
    BaselineResult,
    DayCalendar,
    EventWindow,
    customer_baselines,
)

__all__ = [
    "BENEFIT_KEYS",
    "DrEvent",
    "EventSettlement",
    "PayBand",
    "PaymentRule",
    "Programme",
    "StatementRow",
    "allocate_costs",
    "allocate_fen",
    "benefit_weights",
    "capacity_payment_fen",
    "cny_to_fen",
    "delivered_kwh",
    "event_payment_cny",
    "fen_to_cny_str",
    "month_statement",
    "settle_event",
    "settle_events",
]

Direction = Literal["peak_shaving", "valley_filling"]
_SIGN = {"peak_shaving": 1.0, "valley_filling": -1.0}


# ------------------------------------------------------------- money ----


def cny_to_fen(amount_cny: np.ndarray | float) -> np.ndarray:
    """Round amounts to whole fen, half away from zero [fen].

    Parameters
    ----------
    amount_cny : amounts [CNY].
    """
    cents = np.asarray(amount_cny, dtype=np.float64) * 100.0
    if not np.isfinite(cents).all():
        raise ValueError("amount_cny must be finite")
    return (np.sign(cents) * np.floor(np.abs(cents) + 0.5)).astype(np.int64)


def fen_to_cny_str(amount_fen: int) -> str:
    """``12345`` → ``"123.45"``, exact (no float) [CNY]."""
    sign = "-" if amount_fen < 0 else ""
    whole, fen = divmod(abs(int(amount_fen)), 100)
    return f"{sign}{whole}.{fen:02d}"


def allocate_fen(total_fen: np.ndarray | int, weights: np.ndarray) -> np.ndarray:
    """Split integer totals in proportion to weights by the largest-remainder method, exactly.

    Each share is the floor of its exact quota; the fen left over go one each
    to the largest fractional remainders (ties: lower index first). Shares
    add up to the total exactly, a zero weight gets zero, and every share has
    the sign of the total. Vectorised over leading axes.

    Parameters
    ----------
    total_fen : amounts to split, shape (...) [fen].
    weights : non-negative finite weights, shape (..., n) [any unit].

    Returns
    -------
    Shares, shape (..., n), int64 [fen]. ValueError when a non-zero total has all-zero weights.
    """
    total = np.asarray(total_fen, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape[:-1] != total.shape:
        raise ValueError(f"weights has shape {w.shape}, expected {total.shape + (-1,)} to match total_fen")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    weight_sum = w.sum(axis=-1)
    if ((weight_sum <= 0) & (total != 0)).any():
        raise ValueError("a non-zero amount has no one to go to: all its weights are zero")
    magnitude = np.abs(total)
    share = np.divide(w, weight_sum[..., None], out=np.zeros_like(w), where=weight_sum[..., None] > 0)
    quota = magnitude[..., None] * share
    base = np.minimum(np.floor(quota).astype(np.int64), magnitude[..., None])
    remainder = magnitude - base.sum(axis=-1)
    base = _hand_out(base, quota - base, w > 0, remainder)
    return np.sign(total)[..., None] * base


def _hand_out(base: np.ndarray, fraction: np.ndarray, eligible: np.ndarray, remainder: np.ndarray) -> np.ndarray:
    """Add one fen to the ``remainder`` largest fractions (or take one from the smallest if negative)."""
    give = np.where(eligible, fraction, -np.inf)
    rank = np.argsort(np.argsort(-give, axis=-1, kind="stable"), axis=-1, kind="stable")
    base = base + (rank < np.maximum(remainder, 0)[..., None])
    # Float rounding can only overshoot by a fen or so; take those back from the smallest positive fractions.
    take = np.where(base > 0, fraction, np.inf)
    rank = np.argsort(np.argsort(take, axis=-1, kind="stable"), axis=-1, kind="stable")
    return base - (rank < np.maximum(-remainder, 0)[..., None])


# ----------------------------------------------------------- programmes ----


@dataclass(frozen=True)
class PayBand:
    """From ``min_ratio`` of the request upward, delivered energy is paid times ``coefficient``.

    Attributes
    ----------
    min_ratio : lowest response ratio of the band [-].
    coefficient : multiplier on the energy payment in the band [-].
    """

    min_ratio: float
    coefficient: float


@dataclass(frozen=True)
class PaymentRule:
    """How a programme pays and penalises the plant for one event.

    Energy payment: with response ratio r = delivered / requested energy, the
    band with the highest ``min_ratio`` ≤ r gives a coefficient (0 below every
    band); paid energy = delivered, limited to ``cap_ratio`` × requested;
    payment = paid energy × price × coefficient. The default (no pay below
    50%, energy paid between, capped at 120%) follows the issue's example.

    Penalty: when the average delivered power is below
    ``penalty_threshold`` × cleared capacity, the plant pays
    (threshold × cleared − delivered) × price × ``penalty_factor`` per hour of
    the event — the example rule "(0.5 × cleared − actual) × clearing price ×
    0.5" of one provincial programme (document not checked here; the numbers
    are parameters). ``penalty_threshold=None`` disables it.

    Capacity payment: ``capacity_price_cny_per_kw_month`` × kW × months,
    besides the energy payment.

    Attributes
    ----------
    energy_price_cny_per_kwh : price when the event carries none [CNY/kWh].
    bands : payment bands, any order [-].
    cap_ratio : delivered energy paid at most up to this multiple of the request [-].
    penalty_threshold : fraction of cleared capacity below which the penalty applies; None = none [-].
    penalty_factor : multiplier of the penalty [-].
    capacity_price_cny_per_kw_month : capacity payment [CNY/(kW·month)].
    """

    energy_price_cny_per_kwh: float = 0.0
    bands: tuple[PayBand, ...] = (PayBand(0.5, 1.0),)
    cap_ratio: float = 1.2
    penalty_threshold: float | None = 0.5
    penalty_factor: float = 0.5
    capacity_price_cny_per_kw_month: float = 0.0

    def coefficient(self, ratio: np.ndarray | float) -> np.ndarray:
        """Band coefficient for each response ratio, 0 below every band and for NaN [-]."""
        r = np.asarray(ratio, dtype=np.float64)
        result = np.zeros(r.shape)
        best = np.full(r.shape, -np.inf)
        for band in self.bands:
            hit = (r >= band.min_ratio) & (band.min_ratio > best)
            result = np.where(hit, band.coefficient, result)
            best = np.where(hit, band.min_ratio, best)
        return result


@dataclass(frozen=True)
class Programme:
    """A demand-response or ancillary programme: its baseline rule and payment rule.

    Attributes
    ----------
    name : programme id [-].
    baseline : baseline method [-].
    payment : payment rule [-].
    """

    name: str
    baseline: BaselineMethod
    payment: PaymentRule


@dataclass(frozen=True)
class DrEvent:
    """One event the plant took part in.

    Attributes
    ----------
    id : event id (e.g. the dispatch instruction id) [-].
    programme : name of its :class:`Programme` [-].
    window : local day and intervals [-].
    direction : "peak_shaving" (reduce load) or "valley_filling" (raise load) [-].
    requested_kw : what the grid asked of the plant [kW].
    price_cny_per_kwh : clearing or event price; None = the programme's [CNY/kWh].
    cleared_kw : capacity cleared for the penalty rule; None = ``requested_kw`` [kW].
    enterprise_requested_kw : each enterprise's share of the request, shape (E,); None = by capacity [kW].
    """

    id: str
    programme: str
    window: EventWindow
    direction: Direction
    requested_kw: float
    price_cny_per_kwh: float | None = None
    cleared_kw: float | None = None
    enterprise_requested_kw: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.direction not in _SIGN:
            raise ValueError(f"direction {self.direction!r} must be 'peak_shaving' or 'valley_filling'")
        if not np.isfinite(self.requested_kw) or self.requested_kw < 0:
            raise ValueError(f"requested_kw {self.requested_kw} must be finite and >= 0")


# ---------------------------------------------------------- performance ----


def delivered_kwh(baseline_kw: np.ndarray, actual_kw: np.ndarray, direction: Direction) -> np.ndarray:
    """Energy delivered per interval: baseline − actual (peak shaving) or actual − baseline (valley filling).

    Parameters
    ----------
    baseline_kw : baseline per interval [kW].
    actual_kw : measured average power per interval, same shape [kW].
    direction : "peak_shaving" or "valley_filling" [-].

    Returns
    -------
    Delivered energy per interval, NaN where either input is NaN [kWh].
    """
    return _SIGN[direction] * (np.asarray(baseline_kw) - np.asarray(actual_kw)) * INTERVAL_H


def event_payment_cny(
    delivered_kwh: np.ndarray | float,
    requested_kwh: np.ndarray | float,
    duration_h: np.ndarray | float,
    price_cny_per_kwh: np.ndarray | float,
    rule: PaymentRule,
    cleared_kw: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy payment, penalty and response ratio of the plant for events, vectorised.

    Parameters
    ----------
    delivered_kwh : energy delivered over the event [kWh].
    requested_kwh : energy requested over the event [kWh].
    duration_h : event length [h].
    price_cny_per_kwh : event or clearing price [CNY/kWh].
    rule : the programme's payment rule [-].
    cleared_kw : cleared capacity for the penalty; None = requested_kwh / duration_h [kW].

    Returns
    -------
    ``(payment_cny, penalty_cny, ratio)``; penalty ≥ 0, ratio NaN where nothing was requested [CNY], [CNY], [-].
    """
    delivered = np.asarray(delivered_kwh, dtype=np.float64)
    requested = np.asarray(requested_kwh, dtype=np.float64)
    hours = np.asarray(duration_h, dtype=np.float64)
    price = np.asarray(price_cny_per_kwh, dtype=np.float64)
    ratio = np.divide(delivered, requested, out=np.full(np.broadcast(delivered, requested).shape, np.nan),
                      where=requested > 0)
    paid_kwh = np.clip(delivered, 0.0, rule.cap_ratio * requested)
    payment = paid_kwh * price * rule.coefficient(ratio)
    if rule.penalty_threshold is None:
        return payment, np.zeros_like(payment), ratio
    cleared = requested / np.where(hours > 0, hours, 1.0) if cleared_kw is None else np.asarray(cleared_kw, float)
    actual_kw = delivered / np.where(hours > 0, hours, 1.0)
    shortfall_kw = np.maximum(rule.penalty_threshold * cleared - actual_kw, 0.0)
    penalty = shortfall_kw * price * rule.penalty_factor * hours
    return payment, penalty, ratio


# ------------------------------------------------------------ settling ----


@dataclass(frozen=True)
class EventSettlement:
    """Settlement of one event: the plant's figures and every enterprise's share.

    Plant attributes are scalars; enterprise attributes are arrays of shape (E,).

    Attributes
    ----------
    event : the event [-].
    requested_kwh, delivered_kwh, ratio : plant request, delivery and ratio [kWh], [kWh], [-].
    payment_fen, penalty_fen : plant energy payment and penalty [fen].
    enterprise_baseline_kwh, enterprise_actual_kwh : over the event; NaN where unverified [kWh].
    enterprise_delivered_kwh : verified delivery, 0 where unverified [kWh].
    enterprise_requested_kwh : share of the request [kWh].
    enterprise_ratio : delivered / requested, NaN where nothing was requested [-].
    enterprise_payment_fen, enterprise_penalty_fen : shares of the plant amounts [fen].
    verified : baseline available and no meter interval missing in the event [-].
    notes : why an enterprise is unverified, "" otherwise [-].
    missing_intervals : (enterprise, day, interval) of missing meter intervals seen [-].
    """

    event: DrEvent
    requested_kwh: float
    delivered_kwh: float
    ratio: float
    payment_fen: int
    penalty_fen: int
    enterprise_baseline_kwh: np.ndarray
    enterprise_actual_kwh: np.ndarray
    enterprise_delivered_kwh: np.ndarray
    enterprise_requested_kwh: np.ndarray
    enterprise_ratio: np.ndarray
    enterprise_payment_fen: np.ndarray
    enterprise_penalty_fen: np.ndarray
    verified: np.ndarray
    notes: tuple[str, ...]
    missing_intervals: np.ndarray


def settle_event(
    event: DrEvent,
    baseline: BaselineResult,
    load_kw: np.ndarray,
    calendar: DayCalendar,
    rule: PaymentRule,
    capacity_kw: np.ndarray | None = None,
) -> EventSettlement:
    """Performance, plant payment and enterprise shares of one event.

    Parameters
    ----------
    event : the event [-].
    baseline : baselines of every enterprise for ``event.window`` [kW].
    load_kw : average power drawn per interval, shape (E, D, 96) [kW].
    calendar : dates of the day axis [-].
    rule : the programme's payment rule [-].
    capacity_kw : enrolled capacity per enterprise, to share the request when the event has no split [kW].

    Returns
    -------
    The event's settlement [kWh], [fen].
    """
    window = event.window
    day = calendar.index(window.date)
    actual_kw = np.asarray(load_kw)[:, day, window.start_interval:window.end_interval]
    per_interval = delivered_kwh(baseline.baseline_kw, actual_kw, event.direction)
    meter_ok = ~np.isnan(actual_kw).any(axis=1)
    verified = baseline.available & meter_ok
    delivered = np.where(verified, per_interval.sum(axis=1), 0.0)
    requested_e = _enterprise_requested_kw(event, actual_kw.shape[0], capacity_kw) * window.duration_h
    price = rule.energy_price_cny_per_kwh if event.price_cny_per_kwh is None else event.price_cny_per_kwh
    payment, penalty, ratio = event_payment_cny(
        delivered.sum(), event.requested_kw * window.duration_h, window.duration_h, price, rule, event.cleared_kw
    )
    payment_fen, penalty_fen = int(cny_to_fen(payment)), int(cny_to_fen(penalty))
    revenue_weights = np.maximum(delivered, 0.0)
    return EventSettlement(
        event=event,
        requested_kwh=event.requested_kw * window.duration_h,
        delivered_kwh=float(delivered.sum()),
        ratio=float(ratio),
        payment_fen=payment_fen,
        penalty_fen=penalty_fen,
        enterprise_baseline_kwh=np.where(verified, baseline.baseline_kw.sum(axis=1) * INTERVAL_H, np.nan),
        enterprise_actual_kwh=np.where(verified, np.where(meter_ok[:, None], actual_kw, 0.0).sum(axis=1) * INTERVAL_H, np.nan),
        enterprise_delivered_kwh=delivered,
        enterprise_requested_kwh=requested_e,
        enterprise_ratio=np.divide(delivered, requested_e, out=np.full(delivered.shape, np.nan), where=requested_e > 0),
        enterprise_payment_fen=allocate_fen(payment_fen, revenue_weights),
        enterprise_penalty_fen=allocate_fen(penalty_fen, _penalty_weights(requested_e, delivered)),
        verified=verified,
        notes=_notes(baseline, meter_ok),
        missing_intervals=_event_missing(baseline.missing_intervals, actual_kw, day, window.start_interval),
    )


def _enterprise_requested_kw(event: DrEvent, n: int, capacity_kw: np.ndarray | None) -> np.ndarray:
    """Each enterprise's share of the request: given, else by capacity, else equal [kW]."""
    if event.enterprise_requested_kw is not None:
        split = np.asarray(event.enterprise_requested_kw, dtype=np.float64)
        if split.shape != (n,) or not np.isfinite(split).all() or (split < 0).any():
            raise ValueError(f"event {event.id}: enterprise_requested_kw must be {n} finite values >= 0")
        return split
    weights = np.ones(n) if capacity_kw is None else np.asarray(capacity_kw, dtype=np.float64)
    total = weights.sum()
    return event.requested_kw * (weights / total if total > 0 else np.full(n, 1.0 / max(n, 1)))


def _penalty_weights(requested_kwh: np.ndarray, delivered: np.ndarray) -> np.ndarray:
    """Penalty goes to shortfalls against each share; failing that, to the shares; failing that, equally."""
    shortfall = np.maximum(requested_kwh - delivered, 0.0)
    if shortfall.sum() > 0:
        return shortfall
    if requested_kwh.sum() > 0:
        return requested_kwh
    return np.ones_like(requested_kwh)


def _notes(baseline: BaselineResult, meter_ok: np.ndarray) -> tuple[str, ...]:
    notes = list(baseline.reasons)
    for e in np.flatnonzero(~meter_ok):
        extra = "meter intervals missing during the event"
        notes[e] = f"{notes[e]}; {extra}" if notes[e] else extra
    return tuple(notes)


def _event_missing(baseline_missing: np.ndarray, actual_kw: np.ndarray, day: int, start: int) -> np.ndarray:
    """Missing intervals of the baseline's look and of the event itself, unique rows (enterprise, day, interval)."""
    enterprise, offset = np.nonzero(np.isnan(actual_kw))
    event_rows = np.column_stack([enterprise, np.full(enterprise.size, day), offset + start])
    rows = np.concatenate([baseline_missing.reshape(-1, 3), event_rows]).astype(np.intp)
    return np.unique(rows, axis=0) if rows.size else rows


def settle_events(
    events: Sequence[DrEvent],
    programmes: Mapping[str, Programme],
    load_kw: np.ndarray,
    calendar: DayCalendar,
    capacity_kw: np.ndarray | None = None,
    excluded_days: np.ndarray | None = None,
) -> list[EventSettlement]:
    """Baselines (one batch per programme), performance, payments and shares of many events.

    Parameters
    ----------
    events : the events, any order [-].
    programmes : programmes by name [-].
    load_kw : average power drawn per interval, shape (E, D, 96), NaN = missing [kW].
    calendar : dates, holidays, make-up working days and event days; the days of ``events`` are
        added to its event days, earlier events (previous months) must already be in it [-].
    capacity_kw : enrolled capacity per enterprise, shape (E,) [kW].
    excluded_days : further per-enterprise excluded days for the baselines, shape (E, D) [-].

    Returns
    -------
    One :class:`EventSettlement` per event, in the order given [kWh], [fen].
    """
    by_programme: dict[str, list[int]] = defaultdict(list)
    for index, event in enumerate(events):
        if event.programme not in programmes:
            raise ValueError(f"event {event.id}: unknown programme {event.programme!r}")
        by_programme[event.programme].append(index)
    calendar = replace(
        calendar, event_dates=np.union1d(calendar.event_dates, _event_dates(events)).astype("datetime64[D]")
    )
    results: list[EventSettlement | None] = [None] * len(events)
    for name, indices in by_programme.items():
        programme = programmes[name]
        windows = [events[i].window for i in indices]
        baselines = customer_baselines(programme.baseline, load_kw, calendar, windows, excluded_days)
        for i, baseline in zip(indices, baselines):
            results[i] = settle_event(events[i], baseline, load_kw, calendar, programme.payment, capacity_kw)
    return [r for r in results if r is not None]


def _event_dates(events: Sequence[DrEvent]) -> np.ndarray:
    return np.array([np.datetime64(e.window.date, "D") for e in events], dtype="datetime64[D]")


def capacity_payment_fen(
    capacity_kw: np.ndarray, price_cny_per_kw_month: float, months: float = 1.0
) -> tuple[int, np.ndarray]:
    """Capacity payment of the plant and each enterprise's share by its capacity.

    Parameters
    ----------
    capacity_kw : capacity each enterprise committed, shape (E,) [kW].
    price_cny_per_kw_month : capacity price [CNY/(kW·month)].
    months : months paid [month].

    Returns
    -------
    ``(plant_fen, enterprise_fen)`` [fen].
    """
    capacity = np.asarray(capacity_kw, dtype=np.float64)
    if not np.isfinite(capacity).all() or (capacity < 0).any():
        raise ValueError("capacity_kw must be finite and >= 0")
    plant = int(cny_to_fen(capacity.sum() * price_cny_per_kw_month * months))
    return plant, allocate_fen(plant, capacity)


# ----------------------------------------------------------------- costs ----

BENEFIT_KEYS = ("event_revenue", "consumption", "capacity", "equal")
"""Benefit keys a park cost can be shared by ("who benefits, bears", 谁受益、谁承担)."""

_FALLBACK = {"event_revenue": "consumption", "consumption": "equal", "capacity": "equal"}


def benefit_weights(
    key: str, event_revenue_fen: np.ndarray, consumption_kwh: np.ndarray, capacity_kw: np.ndarray
) -> tuple[np.ndarray, str]:
    """Weights of a benefit key per enterprise, and the key actually used.

    * ``event_revenue`` – each enterprise's energy payments for the month's
      events: a cost of running the plant (platform fee, the ancillary
      service that let it earn) is borne by those who earned from it;
    * ``consumption`` – each enterprise's grid consumption in the month: a
      cost of a service every consumer benefits from (e.g. an ancillary-service
      charge the grid levies on the park's load);
    * ``capacity`` – each enterprise's committed flexible capacity;
    * ``equal`` – one share each.

    A key whose weights are all zero (nobody earned from an event this month,
    no consumption measured) falls back to the next one: event_revenue →
    consumption → equal, capacity → equal, so a cost always finds the
    enterprises that bear it.

    Parameters
    ----------
    key : one of :data:`BENEFIT_KEYS` [-].
    event_revenue_fen : energy payments per enterprise, shape (E,) [fen].
    consumption_kwh : grid consumption per enterprise, shape (E,) [kWh].
    capacity_kw : committed capacity per enterprise, shape (E,) [kW].

    Returns
    -------
    ``(weights, key_used)``: non-negative weights, shape (E,) [unit of the key], and the key they come from [-].
    """
    if key not in BENEFIT_KEYS:
        raise ValueError(f"benefit key {key!r} is not one of {list(BENEFIT_KEYS)}")
    measures = {
        "event_revenue": np.asarray(event_revenue_fen, dtype=np.float64),
        "consumption": np.asarray(consumption_kwh, dtype=np.float64),
        "capacity": np.asarray(capacity_kw, dtype=np.float64),
    }
    n = measures["capacity"].shape[0]
    while key != "equal":
        weights = np.nan_to_num(np.maximum(measures[key], 0.0), nan=0.0)
        if weights.shape != (n,):
            raise ValueError(f"the {key} measure has shape {weights.shape}, expected ({n},)")
        if weights.sum() > 0:
            return weights, key
        key = _FALLBACK[key]
    return np.ones(n), "equal"


def allocate_costs(
    amounts_fen: Sequence[int],
    keys: Sequence[str],
    event_revenue_fen: np.ndarray,
    consumption_kwh: np.ndarray,
    capacity_kw: np.ndarray,
) -> tuple[np.ndarray, list[str]]:
    """Shares of park costs per enterprise, each cost by its own benefit key, to the fen.

    Each cost is split with :func:`allocate_fen` (largest remainder), so the
    shares of every cost add up to it exactly and none is negative.

    Parameters
    ----------
    amounts_fen : costs, each >= 0, shape (C,) [fen].
    keys : benefit key of each cost, see :func:`benefit_weights` [-].
    event_revenue_fen, consumption_kwh, capacity_kw : the measures, shape (E,) [fen], [kWh], [kW].

    Returns
    -------
    ``(shares, keys_used)``: shares of shape (C, E) int64 [fen] and the key each cost used after fallback [-].
    """
    if len(amounts_fen) != len(keys):
        raise ValueError(f"{len(amounts_fen)} costs but {len(keys)} benefit keys")
    n = np.asarray(capacity_kw).shape[0]
    shares = np.zeros((len(keys), n), dtype=np.int64)
    used = []
    for c, (amount, key) in enumerate(zip(amounts_fen, keys)):
        if int(amount) != amount or amount < 0:
            raise ValueError(f"costs[{c}] = {amount!r} must be a whole number of fen >= 0")
        weights, key_used = benefit_weights(key, event_revenue_fen, consumption_kwh, capacity_kw)
        shares[c] = allocate_fen(int(amount), weights) if n else shares[c]
        used.append(key_used)
    return shares, used


# ------------------------------------------------------------ statement ----


@dataclass(frozen=True)
class StatementRow:
    """One line of an enterprise's monthly statement; ``kind`` is "event", "capacity", "cost" or "total".

    Amounts are fen; ``net_fen`` = payment + capacity − penalty − cost. ``ratio``
    is None where nothing was requested. kWh fields are None where the
    enterprise was not verified for the event.
    """

    month: str
    enterprise_id: str
    kind: str
    event_id: str = ""
    programme: str = ""
    event_date: str = ""
    direction: str = ""
    events: int = 0
    requested_kwh: float = 0.0
    baseline_kwh: float | None = None
    actual_kwh: float | None = None
    delivered_kwh: float = 0.0
    ratio: float | None = None
    payment_fen: int = 0
    penalty_fen: int = 0
    capacity_fen: int = 0
    cost_fen: int = 0
    net_fen: int = 0
    verified: bool = True
    note: str = ""


def month_statement(
    month: str,
    enterprise_ids: Sequence[str],
    settlements: Sequence[EventSettlement],
    capacity_fen: np.ndarray | None = None,
    cost_fen: np.ndarray | None = None,
    cost_note: str = "",
    costs: Sequence[tuple[str, np.ndarray]] = (),
) -> list[StatementRow]:
    """Statement rows per enterprise for one month: its events, capacity payment, costs and a total.

    Parameters
    ----------
    month : "YYYY-MM"; events whose local date is in that month are included [-].
    enterprise_ids : ids in the order of the arrays' enterprise axis [-].
    settlements : event settlements (others months are ignored) [-].
    capacity_fen : capacity payment share per enterprise, shape (E,) [fen].
    cost_fen : cost share per enterprise ("who benefits, bears"), shape (E,) [fen].
    cost_note : what the cost is for [-].
    costs : further costs, one row each: (what it is for, share per enterprise shape (E,)) [-], [fen].

    Returns
    -------
    Rows grouped by enterprise in ``enterprise_ids`` order: events by date, then capacity, cost, total [-].
    """
    period = np.datetime64(month, "M")
    chosen = sorted(
        (s for s in settlements if np.datetime64(s.event.window.date, "M") == period),
        key=lambda s: (str(np.datetime64(s.event.window.date, "D")), s.event.window.start_interval, s.event.id),
    )
    n = len(enterprise_ids)
    capacity = np.zeros(n, dtype=np.int64) if capacity_fen is None else np.asarray(capacity_fen, dtype=np.int64)
    cost = np.zeros(n, dtype=np.int64) if cost_fen is None else np.asarray(cost_fen, dtype=np.int64)
    if capacity.shape != (n,) or cost.shape != (n,):
        raise ValueError(f"capacity_fen and cost_fen must have shape ({n},)")
    items = [(cost_note, cost)] + [(note, np.asarray(share, dtype=np.int64)) for note, share in costs]
    if any(share.shape != (n,) for _, share in items):
        raise ValueError(f"every cost share must have shape ({n},)")
    columns = _event_columns(chosen, n)
    rows: list[StatementRow] = []
    for e, enterprise_id in enumerate(enterprise_ids):
        rows.extend(_event_rows(month, str(enterprise_id), e, chosen, columns))
        own_costs = [(note, int(share[e])) for note, share in items]
        rows.extend(_money_rows(month, str(enterprise_id), int(capacity[e]), own_costs))
        total_cost = sum(amount for _, amount in own_costs)
        rows.append(_total_row(month, str(enterprise_id), e, chosen, columns, int(capacity[e]), total_cost))
    return rows


def _event_columns(chosen: list[EventSettlement], n: int) -> dict[str, np.ndarray]:
    """Enterprise arrays of the chosen events stacked to shape (events, E)."""
    names = ("requested_kwh", "baseline_kwh", "actual_kwh", "delivered_kwh", "ratio", "payment_fen", "penalty_fen")
    if not chosen:
        return {name: np.zeros((0, n)) for name in names} | {"verified": np.zeros((0, n), dtype=bool)}
    columns = {name: np.stack([getattr(s, f"enterprise_{name}") for s in chosen]) for name in names}
    columns["verified"] = np.stack([s.verified for s in chosen])
    return columns


def _optional(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _event_rows(
    month: str, enterprise_id: str, e: int, chosen: list[EventSettlement], columns: dict[str, np.ndarray]
) -> list[StatementRow]:
    rows = []
    for k, settlement in enumerate(chosen):
        event = settlement.event
        payment, penalty = int(columns["payment_fen"][k, e]), int(columns["penalty_fen"][k, e])
        rows.append(
            StatementRow(
                month=month,
                enterprise_id=enterprise_id,
                kind="event",
                event_id=event.id,
                programme=event.programme,
                event_date=str(np.datetime64(event.window.date, "D")),
                direction=event.direction,
                events=1,
                requested_kwh=float(columns["requested_kwh"][k, e]),
                baseline_kwh=_optional(columns["baseline_kwh"][k, e]),
                actual_kwh=_optional(columns["actual_kwh"][k, e]),
                delivered_kwh=float(columns["delivered_kwh"][k, e]),
                ratio=_optional(columns["ratio"][k, e]),
                payment_fen=payment,
                penalty_fen=penalty,
                net_fen=payment - penalty,
                verified=bool(columns["verified"][k, e]),
                note=settlement.notes[e],
            )
        )
    return rows


def _money_rows(month: str, enterprise_id: str, capacity: int, costs: list[tuple[str, int]]) -> list[StatementRow]:
    rows = []
    if capacity:
        rows.append(StatementRow(month, enterprise_id, "capacity", capacity_fen=capacity, net_fen=capacity))
    for note, cost in costs:
        if cost:
            rows.append(StatementRow(month, enterprise_id, "cost", cost_fen=cost, net_fen=-cost, note=note))
    return rows


def _total_row(
    month: str,
    enterprise_id: str,
    e: int,
    chosen: list[EventSettlement],
    columns: dict[str, np.ndarray],
    capacity: int,
    cost: int,
) -> StatementRow:
    requested = float(columns["requested_kwh"][:, e].sum())
    delivered = float(columns["delivered_kwh"][:, e].sum())
    payment, penalty = int(columns["payment_fen"][:, e].sum()), int(columns["penalty_fen"][:, e].sum())
    verified = columns["verified"][:, e]
    baseline = columns["baseline_kwh"][:, e]
    actual = columns["actual_kwh"][:, e]
    return StatementRow(
        month=month,
        enterprise_id=enterprise_id,
        kind="total",
        events=len(chosen),
        requested_kwh=requested,
        baseline_kwh=float(baseline[verified].sum()),
        actual_kwh=float(actual[verified].sum()),
        delivered_kwh=delivered,
        ratio=delivered / requested if requested > 0 else None,
        payment_fen=payment,
        penalty_fen=penalty,
        capacity_fen=capacity,
        cost_fen=cost,
        net_fen=payment + capacity - penalty - cost,
        verified=bool(verified.all()),
        note="" if verified.all() else f"{int((~verified).sum())} event(s) not verified; see the event rows",
    )
