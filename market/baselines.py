"""Customer baselines: what each enterprise would have drawn per 15-minute interval had there been no event.

Load data is one array ``load_kw`` of shape ``(E, D, 96)``: enterprise ×
local day × local quarter hour, the average power drawn from the grid in each
15-minute interval [kW] (consumption positive), NaN where the meter interval
is missing. Day ``d`` is ``calendar.dates[d]``; the dates are consecutive
local days of a zone without daylight saving time (the default park zone,
Asia/Shanghai, has none). :func:`to_day_grid` builds the array from UTC
interval series.

Every method is a small frozen dataclass that can be chosen per programme;
:func:`customer_baselines` computes one method for a list of events, each
vectorised over all enterprises. A result never guesses:

* missing meter intervals (NaN) in the days a rule looked at are listed in
  ``BaselineResult.missing_intervals`` and never filled; a candidate day with
  any missing interval is not eligible, as the rules exclude days with
  incomplete data;
* where a rule cannot produce a baseline for an enterprise (too few eligible
  days, data missing in a required window) its row of ``baseline_kw`` is NaN,
  ``available`` is False and ``reasons`` says why.

Eligible ("normal") days exclude event days (``calendar.event_dates`` and any
per-enterprise ``excluded_days``), holidays of the configurable calendar and,
for the working-day rules, weekends unless listed as extra working days
(China's make-up working days, 调休).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np

from market.tariff import local_time

__all__ = [
    "INTERVALS_PER_DAY",
    "INTERVAL_H",
    "BaselineMethod",
    "BaselineResult",
    "BeijingHighest",
    "DayCalendar",
    "EventWindow",
    "JiangsuAverage",
    "JiangsuRealTime",
    "PjmHighFourOfFive",
    "PjmSameDay",
    "TenInTen",
    "customer_baselines",
    "to_day_grid",
]

INTERVALS_PER_DAY = 96
"""15-minute intervals in a local day."""

INTERVAL_H = 0.25
"""Length of a settlement interval [h]."""

DAY_WORKING, DAY_SATURDAY, DAY_SUNDAY_OR_HOLIDAY = 0, 1, 2


# ------------------------------------------------------------- calendar ----


def _dates(values: Iterable) -> np.ndarray:
    """A ``datetime64[D]`` array of dates given as ``date``, ``datetime64`` or ISO strings [date]."""
    return np.array([np.datetime64(v, "D") for v in values], dtype="datetime64[D]").reshape(-1)


@dataclass(frozen=True)
class DayCalendar:
    """The local days of the load array and what kind of day each is.

    Attributes
    ----------
    dates : consecutive local dates of the day axis, ``datetime64[D]`` [date].
    holidays : public holidays, never normal days [date].
    extra_working_days : weekend dates worked as normal days (make-up working days) [date].
    event_dates : days with a response event of any programme, excluded from every baseline [date].
    weekend : weekdays that are weekend, Monday = 0 [-].
    """

    dates: np.ndarray
    holidays: np.ndarray = field(default_factory=lambda: np.array([], dtype="datetime64[D]"))
    extra_working_days: np.ndarray = field(default_factory=lambda: np.array([], dtype="datetime64[D]"))
    event_dates: np.ndarray = field(default_factory=lambda: np.array([], dtype="datetime64[D]"))
    weekend: tuple[int, ...] = (5, 6)

    @classmethod
    def build(
        cls,
        dates: Iterable,
        holidays: Iterable = (),
        extra_working_days: Iterable = (),
        event_dates: Iterable = (),
        weekend: tuple[int, ...] = (5, 6),
    ) -> DayCalendar:
        """Calendar from any iterables of dates (``date``, ``datetime64`` or ISO strings) [date]."""
        day_axis = _dates(dates)
        if day_axis.size and (np.diff(day_axis).astype(np.int64) != 1).any():
            bad = int(np.argmax(np.diff(day_axis).astype(np.int64) != 1))
            raise ValueError(f"dates must be consecutive days; {day_axis[bad]} is followed by {day_axis[bad + 1]}")
        return cls(day_axis, _dates(holidays), _dates(extra_working_days), _dates(event_dates), tuple(weekend))

    def weekday(self) -> np.ndarray:
        """Day of week of each date, Monday = 0 [-]."""
        return (self.dates.astype(np.int64) + 3) % 7

    def day_kind(self) -> np.ndarray:
        """0 normal working day, 1 Saturday-like rest day, 2 Sunday or holiday, per date [-]."""
        weekday = self.weekday()
        weekend = np.isin(weekday, self.weekend) & ~np.isin(self.dates, self.extra_working_days)
        kind = np.where(weekend, np.where(weekday == 5, DAY_SATURDAY, DAY_SUNDAY_OR_HOLIDAY), DAY_WORKING)
        return np.where(np.isin(self.dates, self.holidays), DAY_SUNDAY_OR_HOLIDAY, kind)

    def event_day(self) -> np.ndarray:
        """True on days with an event [-]."""
        return np.isin(self.dates, self.event_dates)

    def index(self, day: object) -> int:
        """Position of ``day`` on the day axis; ValueError when outside it [-]."""
        target = np.datetime64(day, "D")
        position = int((target - self.dates[0]).astype(np.int64)) if self.dates.size else -1
        if not 0 <= position < self.dates.size:
            raise ValueError(f"{target} is outside the load data ({self._span()})")
        return position

    def _span(self) -> str:
        return f"{self.dates[0]} to {self.dates[-1]}" if self.dates.size else "no days"


@dataclass(frozen=True)
class EventWindow:
    """A response event on one local day, intervals ``[start_interval, end_interval)``.

    Attributes
    ----------
    date : local date of the event [date].
    start_interval : first 15-minute interval of the event, 0 = 00:00-00:15 local [-].
    end_interval : interval after the last one, at most 96 [-].
    invitation_date : day the invitation was sent (Jiangsu rule); None = the day before ``date`` [date].
    """

    date: date | np.datetime64 | str
    start_interval: int
    end_interval: int
    invitation_date: date | np.datetime64 | str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.start_interval < self.end_interval <= INTERVALS_PER_DAY:
            raise ValueError(
                f"event intervals [{self.start_interval}, {self.end_interval}) must satisfy 0 <= start < end <= 96; "
                "split events that cross midnight"
            )

    @property
    def intervals(self) -> int:
        """Number of 15-minute intervals in the event [-]."""
        return self.end_interval - self.start_interval

    @property
    def duration_h(self) -> float:
        """Length of the event [h]."""
        return self.intervals * INTERVAL_H


# -------------------------------------------------------------- methods ----


@dataclass(frozen=True)
class JiangsuAverage:
    """Jiangsu-style day-ahead baseline: average of the most recent normal working days before the invitation.

    Rule: the baseline of an agreed (invited) demand-response user is the load
    curve of the response period averaged over the 5 most recent normal
    production working days before the invitation day.

    Source: 《江苏省电力需求响应实施细则(试行)》 (Jiangsu Economic and Information
    Technology Commission and Price Bureau, 15 June 2015), as summarised in
    China Smart Grid (chinasmartgrid.com.cn, 2015-10-19). **The primary
    document could not be checked**; only the secondary summary was read.
    Details not in the summary and chosen here: "normal working day" = not a
    weekend (unless a make-up working day), not a holiday, not an event day,
    no missing meter interval; the search goes back at most
    ``max_lookback_days`` (an implementation bound, not part of the rule).

    Attributes
    ----------
    days : normal working days averaged [-].
    max_lookback_days : how far before the invitation day to search [day].
    """

    days: int = 5
    max_lookback_days: int = 60


@dataclass(frozen=True)
class JiangsuRealTime:
    """Jiangsu-style real-time baseline: the load in the 15 minutes before control starts, held flat.

    Rule: for real-time demand response the baseline is the load point of the
    15 minutes before control begins.

    Source: 《江苏省电力需求响应实施细则(试行)》 (2015) as summarised in China
    Smart Grid (2015-10-19). **The primary document could not be checked.**
    Here the "load point" is the average power of the 15-minute meter interval
    just before the event start (the previous day's last interval for an event
    at 00:00).
    """


@dataclass(frozen=True)
class BeijingHighest:
    """Beijing-style baseline: mean of the highest-load days among 10 normal days from 2 days before the event.

    Rule: take 10 days of history starting 2 days before the response day and
    going back (nominally days 2 to 12 before), replacing untypical days
    (weekends, holidays) by further normal days so that there are 10; the
    baseline is the average of the 5 of them with the largest daily load.

    Source: Beijing Municipal Commission of Development and Reform demand-
    response pilot rules (2015), as summarised in China Smart Grid
    (chinasmartgrid.com.cn, 2015-10-19). **The primary document could not be
    checked.** "Largest daily load" (日用电负荷最大) is read as the daily peak
    of the 15-minute average power (``rank_by="peak"``); ``rank_by="energy"``
    ranks by daily energy instead. Event days and days with missing data are
    replaced like weekends; ties keep the more recent day.

    Attributes
    ----------
    window_days : normal days in the candidate window [-].
    highest_days : days of highest load averaged [-].
    first_offset_days : the most recent candidate is this many days before the event [day].
    max_lookback_days : how far before the event to search for normal days [day].
    rank_by : "peak" (daily maximum power) or "energy" (daily energy) [-].
    """

    window_days: int = 10
    highest_days: int = 5
    first_offset_days: int = 2
    max_lookback_days: int = 30
    rank_by: Literal["peak", "energy"] = "peak"


@dataclass(frozen=True)
class PjmHighFourOfFive:
    """PJM Economic Load Response CBL "High 4 of 5" with the Symmetric Additive Adjustment (SAA).

    Rule (weekday events): the 5 most recent normal weekdays in the 45
    calendar days before the event, excluding NERC holidays, event days and
    days whose average event-period usage is below 25% of the average
    event-period usage of the 5 days (each such day replaced by the next
    older one); of the 5, the 4 with the highest average event-period usage
    are averaged interval by interval. Saturday events use the 3 most recent
    Saturdays and Sunday/holiday events the 3 most recent Sundays/holidays,
    highest 2 of 3. SAA: the average of (actual − CBL) over the 3 hours
    ending 1 hour before the event start is added to every CBL interval,
    up or down.

    Source: PJM Manual 11 (Energy & Ancillary Services Market Operations),
    section 10 (Demand Resource / Economic Load Response, "Customer Baseline
    Load"). **Unverified**: written from recollection of Manual 11; the
    current revision could not be opened here. In particular the SAA window
    (hours −4 to −1) and the absence of a cap are unverified, which is why
    both are parameters (``adjustment_cap_fraction=None`` = no cap; a cap
    limits the adjustment to ± that fraction of the mean CBL in the window).
    PJM computes hourly CBLs; here the same rule is applied to 15-minute
    intervals.

    Attributes
    ----------
    candidate_days / selected_days : weekday events, N most recent days and highest M kept [-].
    rest_day_candidate_days / rest_day_selected_days : Saturday, Sunday and holiday events [-].
    lookback_days : calendar days before the event searched [day].
    low_usage_fraction : days below this fraction of the candidates' mean usage are replaced [-].
    adjustment : apply the symmetric additive adjustment [-].
    adjustment_window_h : length of the adjustment window [h].
    adjustment_gap_h : gap between the window's end and the event start [h].
    adjustment_cap_fraction : cap on |adjustment| as a fraction of the window's mean CBL; None = no cap [-].
    """

    candidate_days: int = 5
    selected_days: int = 4
    rest_day_candidate_days: int = 3
    rest_day_selected_days: int = 2
    lookback_days: int = 45
    low_usage_fraction: float = 0.25
    adjustment: bool = True
    adjustment_window_h: float = 3.0
    adjustment_gap_h: float = 1.0
    adjustment_cap_fraction: float | None = None


@dataclass(frozen=True)
class PjmSameDay:
    """PJM "Same Day (3 + 2)" CBL: flat average of the event day's load around the event.

    Rule: the CBL is the average load of the 3 hours before the event after
    skipping the hour just before it, and of the 2 hours after the event after
    skipping the hour just after it (event hours ending 13-17 → hours ending
    9-11 and 19-20).

    Source: PJM Manual 11 alternative CBL methods, as reported by RTO Insider
    ("Improved DR Baseline Processes OKd", 2025-02-25). **The Manual text
    itself could not be checked.** Windows that reach into the previous or
    next day use those days' data; the baseline is unavailable where any of
    these intervals is missing or beyond the data.

    Attributes
    ----------
    before_h, before_gap_h : hours averaged before the event, and hours skipped just before it [h].
    after_h, after_gap_h : hours averaged after the event, and hours skipped just after it [h].
    """

    before_h: float = 3.0
    before_gap_h: float = 1.0
    after_h: float = 2.0
    after_gap_h: float = 1.0


@dataclass(frozen=True)
class TenInTen:
    """"10-in-10" baseline with a day-of adjustment, capped (±20% by default).

    Rule: the average, interval by interval, of the 10 most recent eligible
    days of the same type (working or rest day) in the 45 days before the
    event, excluding event days and holidays; scaled on the event day by the
    ratio of actual to baseline load over the 3 hours ending 1 hour before the
    event (the first three of the four hours before it), the ratio limited to
    1 ± ``adjustment_cap_fraction``.

    Source: CAISO/CPUC "10-in-10 with day-of (load-point) adjustment" used for
    California demand-response settlement (CAISO Business Practice Manual for
    Metering, Performance Evaluation Methodologies). **Unverified**: written
    from recollection; the BPM could not be opened here. The adjustment window
    and kind (``"multiplicative"`` ratio or ``"additive"``, capped at ± the
    same fraction of the window's mean baseline) are parameters.

    Attributes
    ----------
    days : most recent eligible days averaged [-].
    lookback_days : calendar days before the event searched [day].
    adjustment : "multiplicative", "additive" or "none" [-].
    adjustment_window_h : length of the adjustment window [h].
    adjustment_gap_h : gap between the window's end and the event start [h].
    adjustment_cap_fraction : limit of the adjustment, ±fraction; None = no cap [-].
    """

    days: int = 10
    lookback_days: int = 45
    adjustment: Literal["multiplicative", "additive", "none"] = "multiplicative"
    adjustment_window_h: float = 3.0
    adjustment_gap_h: float = 1.0
    adjustment_cap_fraction: float | None = 0.2


BaselineMethod = JiangsuAverage | JiangsuRealTime | BeijingHighest | PjmHighFourOfFive | PjmSameDay | TenInTen


@dataclass(frozen=True)
class BaselineResult:
    """Baseline of every enterprise for one event.

    Attributes
    ----------
    method : name of the method class [-].
    event : the event [-].
    baseline_kw : baseline of each event interval, shape ``(E, intervals)``; NaN rows where unavailable [kW].
    available : True where a baseline could be produced, shape ``(E,)`` [-].
    reasons : why the baseline is unavailable, "" where available, one per enterprise [-].
    days_used : day indices averaged, shape ``(E, K)``, −1 padding; ``(E, 0)`` for same-day methods [-].
    adjustment_kw : additive adjustment applied, 0 where none, shape ``(E,)`` [kW].
    adjustment_ratio : multiplicative adjustment applied, 1 where none, shape ``(E,)`` [-].
    missing_intervals : NaN meter intervals in the days the rule looked at, rows of (enterprise, day, interval) [-].
    """

    method: str
    event: EventWindow
    baseline_kw: np.ndarray
    available: np.ndarray
    reasons: tuple[str, ...]
    days_used: np.ndarray
    adjustment_kw: np.ndarray
    adjustment_ratio: np.ndarray
    missing_intervals: np.ndarray


# ---------------------------------------------------------- shared data ----


@dataclass(frozen=True)
class _Data:
    """Arrays shared by every event of one call."""

    flat_kw: np.ndarray  # (E, D*96)
    usable_day: np.ndarray  # (E, D) complete, not excluded for the enterprise, not an event day
    day_kind: np.ndarray  # (D,)
    nan_rows: np.ndarray  # (M, 3) enterprise, day, interval of every NaN
    calendar: DayCalendar


def _prepare(load_kw: np.ndarray, calendar: DayCalendar, excluded_days: np.ndarray | None) -> _Data:
    """Check the load grid and derive what every event needs: usable days, day kinds, missing intervals."""
    load = np.asarray(load_kw, dtype=np.float64)
    if load.ndim != 3 or load.shape[2] != INTERVALS_PER_DAY or load.shape[1] != calendar.dates.size:
        raise ValueError(
            f"load_kw has shape {load.shape}, expected (enterprises, {calendar.dates.size} days of the calendar, 96)"
        )
    if np.isinf(load).any():
        raise ValueError(f"load_kw{tuple(int(i) for i in np.argwhere(np.isinf(load))[0])} is infinite")
    missing = np.isnan(load)
    complete = ~missing.any(axis=2)
    usable = complete & ~calendar.event_day()[None, :]
    if excluded_days is not None:
        excluded = np.asarray(excluded_days, dtype=bool)
        if excluded.shape != complete.shape:
            raise ValueError(f"excluded_days has shape {excluded.shape}, expected {complete.shape}")
        usable &= ~excluded
    return _Data(
        flat_kw=load.reshape(load.shape[0], -1),
        usable_day=usable,
        day_kind=calendar.day_kind(),
        nan_rows=np.argwhere(missing),
        calendar=calendar,
    )


def _intervals(hours: float, name: str) -> int:
    """Whole number of 15-minute intervals in ``hours`` [-]."""
    count = hours / INTERVAL_H
    if count < 0 or abs(count - round(count)) > 1e-9:
        raise ValueError(f"{name} = {hours} h is not a whole number of 15-minute intervals")
    return round(count)


def _most_recent(eligible: np.ndarray, before: int, count: int, lookback: int) -> np.ndarray:
    """The ``count`` most recent eligible days in ``[before - lookback, before)``, newest first; −1 padding [-].

    Parameters
    ----------
    eligible : eligibility per enterprise and day, shape (E, D) [-].
    before : first day index not searched [-].
    count : days wanted [-].
    lookback : days searched [day].
    """
    lo = max(0, before - lookback)
    window = eligible[:, lo:max(before, lo)][:, ::-1]
    if count == 0 or window.shape[1] == 0:
        return np.full((eligible.shape[0], count), -1, dtype=np.intp)
    chosen = window & (np.cumsum(window, axis=1) <= count)
    order = np.argsort(~chosen, axis=1, kind="stable")[:, :count]
    valid = np.take_along_axis(chosen, order, axis=1)
    days = np.where(valid, before - 1 - order, -1)
    if days.shape[1] < count:
        days = np.pad(days, ((0, 0), (0, count - days.shape[1])), constant_values=-1)
    return days


def _gather(flat_kw: np.ndarray, days: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Load at ``offsets`` intervals from the start of each day, shape (E, K, n); NaN for day −1 or beyond the data [kW].

    Parameters
    ----------
    flat_kw : load as one timeline per enterprise, shape (E, D*96) [kW].
    days : day indices, shape (E, K), −1 = none [-].
    offsets : interval offsets from the day's 00:00, may be negative or ≥ 96 [-].
    """
    index = days[:, :, None] * INTERVALS_PER_DAY + offsets[None, None, :]
    inside = (days[:, :, None] >= 0) & (index >= 0) & (index < flat_kw.shape[1])
    rows = np.arange(flat_kw.shape[0])[:, None, None]
    return np.where(inside, flat_kw[rows, np.clip(index, 0, flat_kw.shape[1] - 1)], np.nan)


def _mean_over_days(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of ``values`` (E, K, n) where ``valid`` (E, K); NaN where no day is valid [kW]."""
    count = valid.sum(axis=1)[:, None]
    total = np.where(valid[:, :, None], values, 0.0).sum(axis=1)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _row_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis; NaN if any element is NaN (no warning) [kW]."""
    if values.shape[-1] == 0:
        return np.full(values.shape[:-1], np.nan)
    return values.mean(axis=-1)


def _missing(data: _Data, first_day: int, last_day: int) -> np.ndarray:
    """NaN rows (enterprise, day, interval) with first_day <= day <= last_day [-]."""
    rows = data.nan_rows
    return rows[(rows[:, 1] >= first_day) & (rows[:, 1] <= last_day)]


def _event_offsets(event: EventWindow) -> np.ndarray:
    return np.arange(event.start_interval, event.end_interval)


def _window_offsets(event: EventWindow, window_h: float, gap_h: float) -> np.ndarray:
    """Offsets of the adjustment window ending ``gap_h`` before the event start [-]."""
    window = _intervals(window_h, "adjustment_window_h")
    gap = _intervals(gap_h, "adjustment_gap_h")
    end = event.start_interval - gap
    return np.arange(end - window, end)


def _result(
    method: object,
    event: EventWindow,
    baseline_kw: np.ndarray,
    problems: list[tuple[np.ndarray, str]],
    days_used: np.ndarray,
    missing: np.ndarray,
    adjustment_kw: np.ndarray | None = None,
    adjustment_ratio: np.ndarray | None = None,
) -> BaselineResult:
    """Assemble a result; ``problems`` are (mask, reason) pairs, the first matching reason wins."""
    n = baseline_kw.shape[0]
    reasons = [""] * n
    for mask, reason in problems:
        for e in np.flatnonzero(mask):
            if not reasons[e]:
                reasons[e] = reason
    unavailable = np.array([bool(r) for r in reasons], dtype=bool) | np.isnan(baseline_kw).any(axis=1)
    for e in np.flatnonzero(unavailable):
        if not reasons[e]:
            reasons[e] = "baseline could not be computed from the data"
    baseline = np.where(unavailable[:, None], np.nan, baseline_kw)
    adj_kw = np.zeros(n) if adjustment_kw is None else np.where(unavailable, 0.0, adjustment_kw)
    adj_ratio = np.ones(n) if adjustment_ratio is None else np.where(unavailable, 1.0, adjustment_ratio)
    return BaselineResult(
        method=type(method).__name__,
        event=event,
        baseline_kw=baseline,
        available=~unavailable,
        reasons=tuple(reasons),
        days_used=days_used,
        adjustment_kw=adj_kw,
        adjustment_ratio=adj_ratio,
        missing_intervals=missing,
    )


def _shortfall(days: np.ndarray, needed: int, what: str) -> list[tuple[np.ndarray, str]]:
    """(mask, reason) pairs for enterprises with fewer than ``needed`` valid days, one per count found."""
    found = (days >= 0).sum(axis=1)
    return [
        (found == count, f"only {int(count)} of the {needed} {what} were found")
        for count in np.unique(found[found < needed])
    ]


def _adjust(
    baseline_window_kw: np.ndarray, actual_window_kw: np.ndarray, kind: str, cap: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Day-of adjustment ``(additive kW, ratio, defined)`` from the window means.

    Parameters
    ----------
    baseline_window_kw : unadjusted baseline over the adjustment window, shape (E, n) [kW].
    actual_window_kw : event-day load over the same intervals, shape (E, n) [kW].
    kind : "additive", "multiplicative" or "none" [-].
    cap : limit as a fraction of the window's mean baseline; None = no cap [-].
    """
    n = baseline_window_kw.shape[0]
    if kind == "none":
        return np.zeros(n), np.ones(n), np.ones(n, dtype=bool)
    base = _row_mean(baseline_window_kw)
    actual = _row_mean(actual_window_kw)
    defined = ~np.isnan(base) & ~np.isnan(actual)
    if kind == "additive":
        adjustment = actual - base
        if cap is not None:
            limit = cap * np.abs(base)
            adjustment = np.clip(adjustment, -limit, limit)
        return np.where(defined, adjustment, 0.0), np.ones(n), defined
    defined &= base > 0
    ratio = np.divide(actual, base, out=np.ones(n), where=defined)
    if cap is not None:
        ratio = np.clip(ratio, 1.0 - cap, 1.0 + cap)
    return np.zeros(n), ratio, defined


# ------------------------------------------------------- method kernels ----


def _jiangsu_average(method: JiangsuAverage, data: _Data, event: EventWindow) -> BaselineResult:
    calendar = data.calendar
    day = calendar.index(event.date)
    invitation = day - 1 if event.invitation_date is None else _offset(calendar, event.invitation_date)
    if invitation > day:
        raise ValueError(f"invitation {event.invitation_date} is after the event day {event.date}")
    eligible = data.usable_day & (data.day_kind == DAY_WORKING)[None, :]
    days = _most_recent(eligible, invitation, method.days, method.max_lookback_days)
    values = _gather(data.flat_kw, days, _event_offsets(event))
    baseline = _mean_over_days(values, days >= 0)
    problems = _shortfall(days, method.days, f"normal working days in the {method.max_lookback_days} "
                                                            "days before the invitation")
    first = max(0, invitation - method.max_lookback_days)
    return _result(method, event, baseline, problems, days, _missing(data, first, day))


def _offset(calendar: DayCalendar, day: object) -> int:
    """Day index of ``day``, which may lie before or after the data [-]."""
    return int((np.datetime64(day, "D") - calendar.dates[0]).astype(np.int64))


def _jiangsu_real_time(method: JiangsuRealTime, data: _Data, event: EventWindow) -> BaselineResult:
    day = data.calendar.index(event.date)
    n = data.flat_kw.shape[0]
    days = np.full((n, 1), day, dtype=np.intp)
    before = _gather(data.flat_kw, days, np.array([event.start_interval - 1]))[:, 0, 0]
    baseline = np.repeat(before[:, None], event.intervals, axis=1)
    problems = [(np.isnan(before), "load of the 15 minutes before control start is missing or outside the data")]
    first = day - 1 if event.start_interval == 0 else day
    return _result(method, event, baseline, problems, np.empty((n, 0), dtype=np.intp), _missing(data, first, day))


def _beijing_highest(method: BeijingHighest, data: _Data, event: EventWindow) -> BaselineResult:
    day = data.calendar.index(event.date)
    before = day - method.first_offset_days + 1
    lookback = method.max_lookback_days - method.first_offset_days + 1
    eligible = data.usable_day & (data.day_kind == DAY_WORKING)[None, :]
    window = _most_recent(eligible, before, method.window_days, lookback)
    full = _gather(data.flat_kw, window, np.arange(INTERVALS_PER_DAY))
    score = full.max(axis=2) if method.rank_by == "peak" else full.sum(axis=2)
    score = np.where(window >= 0, score, -np.inf)
    top = np.argsort(-score, axis=1, kind="stable")[:, : method.highest_days]
    days = np.take_along_axis(window, top, axis=1)
    values = _gather(data.flat_kw, days, _event_offsets(event))
    baseline = _mean_over_days(values, days >= 0)
    problems = _shortfall(window, method.window_days, f"normal days between {method.first_offset_days} "
                                                                    f"and {method.max_lookback_days} days "
                                                                    "before the event")
    return _result(method, event, baseline, problems, days, _missing(data, max(0, day - method.max_lookback_days), day))


def _pjm_high(method: PjmHighFourOfFive, data: _Data, event: EventWindow) -> BaselineResult:
    day = data.calendar.index(event.date)
    kind = data.day_kind[day]
    wanted, kept = (
        (method.candidate_days, method.selected_days)
        if kind == DAY_WORKING
        else (method.rest_day_candidate_days, method.rest_day_selected_days)
    )
    eligible = data.usable_day & (data.day_kind == kind)[None, :]
    offsets = _event_offsets(event)
    candidates, usage = _pjm_candidates(method, data, eligible, day, wanted, offsets)
    ranked = np.argsort(-np.where(candidates >= 0, usage, -np.inf), axis=1, kind="stable")[:, :kept]
    days = np.take_along_axis(candidates, ranked, axis=1)
    problems = _shortfall(candidates, wanted, f"eligible like days in the {method.lookback_days} days "
                                                          "before the event")
    baseline = _mean_over_days(_gather(data.flat_kw, days, offsets), days >= 0)
    first = max(0, day - method.lookback_days)
    if not method.adjustment:
        return _result(method, event, baseline, problems, days, _missing(data, first, day))
    window = _window_offsets(event, method.adjustment_window_h, method.adjustment_gap_h)
    adj_kw, _, defined = _adjust(
        _mean_over_days(_gather(data.flat_kw, days, window), days >= 0),
        _gather(data.flat_kw, np.full((days.shape[0], 1), day), window)[:, 0, :],
        "additive",
        method.adjustment_cap_fraction,
    )
    problems.append((~defined, "load is missing in the adjustment window before the event"))
    return _result(method, event, baseline + adj_kw[:, None], problems, days, _missing(data, first, day), adj_kw)


def _pjm_candidates(
    method: PjmHighFourOfFive, data: _Data, eligible: np.ndarray, day: int, wanted: int, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate days after replacing low-usage days, and their mean event-period usage [-], [kW]."""
    eligible = eligible.copy()
    rows = np.arange(eligible.shape[0])[:, None]
    for _ in range(method.lookback_days + 1):
        candidates = _most_recent(eligible, day, wanted, method.lookback_days)
        usage = _row_mean(_gather(data.flat_kw, candidates, offsets))
        valid = candidates >= 0
        count = valid.sum(axis=1)
        mean = np.divide(np.where(valid, usage, 0.0).sum(axis=1), count, out=np.zeros(len(count)), where=count > 0)
        low = valid & (mean[:, None] > 0) & (usage < method.low_usage_fraction * mean[:, None])
        if not low.any():
            break
        eligible[np.broadcast_to(rows, low.shape)[low], candidates[low]] = False
    return candidates, usage


def _pjm_same_day(method: PjmSameDay, data: _Data, event: EventWindow) -> BaselineResult:
    day = data.calendar.index(event.date)
    before_end = event.start_interval - _intervals(method.before_gap_h, "before_gap_h")
    after_start = event.end_interval + _intervals(method.after_gap_h, "after_gap_h")
    offsets = np.concatenate(
        [
            np.arange(before_end - _intervals(method.before_h, "before_h"), before_end),
            np.arange(after_start, after_start + _intervals(method.after_h, "after_h")),
        ]
    )
    n = data.flat_kw.shape[0]
    values = _gather(data.flat_kw, np.full((n, 1), day, dtype=np.intp), offsets)[:, 0, :]
    level = _row_mean(values)
    baseline = np.repeat(level[:, None], event.intervals, axis=1)
    problems = [(np.isnan(level), "load before or after the event is missing or outside the data")]
    first, last = day + int(offsets.min() // INTERVALS_PER_DAY), day + int(offsets.max() // INTERVALS_PER_DAY)
    return _result(method, event, baseline, problems, np.empty((n, 0), dtype=np.intp), _missing(data, first, last))


def _ten_in_ten(method: TenInTen, data: _Data, event: EventWindow) -> BaselineResult:
    day = data.calendar.index(event.date)
    working = data.day_kind[day] == DAY_WORKING
    like = (data.day_kind == DAY_WORKING) if working else (data.day_kind != DAY_WORKING)
    days = _most_recent(data.usable_day & like[None, :], day, method.days, method.lookback_days)
    baseline = _mean_over_days(_gather(data.flat_kw, days, _event_offsets(event)), days >= 0)
    problems = _shortfall(days, method.days, f"eligible like days in the {method.lookback_days} days "
                                                          "before the event")
    window = _window_offsets(event, method.adjustment_window_h, method.adjustment_gap_h)
    adj_kw, ratio, defined = _adjust(
        _mean_over_days(_gather(data.flat_kw, days, window), days >= 0),
        _gather(data.flat_kw, np.full((days.shape[0], 1), day), window)[:, 0, :],
        method.adjustment,
        method.adjustment_cap_fraction,
    )
    problems.append((~defined, "load is missing (or the baseline is not positive) in the adjustment window"))
    adjusted = baseline * ratio[:, None] + adj_kw[:, None]
    first = max(0, day - method.lookback_days)
    return _result(method, event, adjusted, problems, days, _missing(data, first, day), adj_kw, ratio)


# ------------------------------------------------------------------ API ----


def customer_baselines(
    method: BaselineMethod,
    load_kw: np.ndarray,
    calendar: DayCalendar,
    events: Sequence[EventWindow],
    excluded_days: np.ndarray | None = None,
) -> list[BaselineResult]:
    """Baselines of every enterprise for each event with one method.

    Parameters
    ----------
    method : the baseline rule and its parameters [-].
    load_kw : average power drawn per interval, shape (E, D, 96), NaN = missing meter interval [kW].
    calendar : the dates of the day axis, holidays, make-up working days, event days [-].
    events : the events to compute baselines for [-].
    excluded_days : further days excluded per enterprise (e.g. its own outages), shape (E, D) [-].

    Returns
    -------
    One :class:`BaselineResult` per event, in order [kW].
    """
    data = _prepare(load_kw, calendar, excluded_days)
    kernels = {
        JiangsuAverage: _jiangsu_average,
        JiangsuRealTime: _jiangsu_real_time,
        BeijingHighest: _beijing_highest,
        PjmHighFourOfFive: _pjm_high,
        PjmSameDay: _pjm_same_day,
        TenInTen: _ten_in_ten,
    }
    kernel = kernels.get(type(method))
    if kernel is None:
        raise TypeError(f"unknown baseline method {type(method).__name__}; expected one of {[k.__name__ for k in kernels]}")
    return [kernel(method, data, event) for event in events]


def to_day_grid(
    interval_start_utc: np.ndarray, load_kw: np.ndarray, zone: str = "Asia/Shanghai"
) -> tuple[np.ndarray, np.ndarray]:
    """Arrange interval series on the (enterprise, local day, quarter hour) grid the baselines use.

    Intervals absent from the input are NaN in the grid (and so reported as
    missing by the baselines), never filled.

    Parameters
    ----------
    interval_start_utc : UTC start of each interval, on quarter hours, shape (N,) [datetime64].
    load_kw : average power per interval, shape (E, N) [kW].
    zone : IANA zone of the park; must not observe daylight saving time in the span [-].

    Returns
    -------
    ``(dates, grid)``: the consecutive local dates ``datetime64[D]`` (D,) and the grid (E, D, 96) [date], [kW].
    """
    starts = np.asarray(interval_start_utc)
    values = np.atleast_2d(np.asarray(load_kw, dtype=np.float64))
    if starts.ndim != 1 or values.shape[1] != starts.size:
        raise ValueError(f"load_kw has shape {values.shape}, expected (E, {starts.size}) to match interval_start_utc")
    local = local_time(starts, zone)
    minutes = (local - local.astype("datetime64[D]")).astype("timedelta64[m]").astype(np.int64)
    if (minutes % 15).any() or (local.astype("datetime64[m]") != local).any():
        bad = int(np.argmax((minutes % 15 != 0) | (local.astype("datetime64[m]") != local)))
        raise ValueError(f"interval_start_utc[{bad}] = {starts[bad]} is not on a quarter hour")
    days = local.astype("datetime64[D]")
    first = days.min() if days.size else np.datetime64("1970-01-01", "D")
    day_index = (days - first).astype(np.int64)
    n_days = int(day_index.max()) + 1 if days.size else 0
    flat = day_index * INTERVALS_PER_DAY + minutes // 15
    if np.unique(flat).size != flat.size:
        raise ValueError("two intervals fall on the same local quarter hour (duplicate or daylight-saving zone)")
    grid = np.full((values.shape[0], n_days * INTERVALS_PER_DAY), np.nan)
    grid[:, flat] = values
    dates = first + np.arange(n_days).astype("timedelta64[D]")
    return dates, grid.reshape(values.shape[0], n_days, INTERVALS_PER_DAY)
