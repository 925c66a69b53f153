"""Programme configuration of the park's settlement: baseline rule, payment rule, calendar.

Loaded from a TOML (``.toml``) or JSON (``.json``) file with :func:`load_config`,
or from :data:`DEFAULT_CONFIG_TOML` (shipped default) when no file is given.
Every error names the offending key (``payment.bands[1].min_ratio``) and value.

Format (all keys optional; defaults shown)::

    [programme]
    name = "park-dr"                       # id written on every statement
    zone = "Asia/Shanghai"                 # the park's local zone (reports, days)
    history_days = 45                      # days of meter data read before the month [day]
    max_reading_gap_min = 5.0              # readings around a quarter hour at most this far apart [min]
    day_ahead_min_notice_h = 12.0          # less notice than this (start − received) = a real-time event [h]
    real_time_sources = ["iec104", "agc"]  # real-time when an instruction's receipt time is unknown
    use_spot_prices = false                # pay events at the mean pushed spot price of their window

    [baseline]                             # day-ahead (invited) events
    method = "jiangsu_average"             # jiangsu_average | beijing_highest | pjm_high_4_of_5 | pjm_same_day | ten_in_ten
    # other keys are the method's parameters, e.g. days = 5

    [real_time_baseline]                   # events with short notice
    method = "jiangsu_real_time"

    [payment]
    energy_price_cny_per_kwh = 3.0         # [CNY/kWh]
    cap_ratio = 1.2                        # delivered energy paid up to this multiple of the request [-]
    penalty_threshold = 0.5                # false = no penalty [-]
    penalty_factor = 0.5                   # [-]
    capacity_price_cny_per_kw_month = 0.0  # [CNY/(kW·month)]
    [[payment.bands]]
    min_ratio = 0.5
    coefficient = 1.0

    [calendar]
    holidays = ["2026-10-01"]              # local dates, never normal days
    extra_working_days = []                # make-up working days (调休)

    [[costs]]                              # park costs borne by those who benefit (none by default)
    month = "2026-07"                      # local month the cost belongs to
    kind = "platform_fee"                  # what it is for: platform_fee, ancillary_service, ...
    amount_cny = 1200.00                   # [CNY], >= 0, whole fen
    benefit_key = "event_revenue"          # event_revenue | consumption | capacity | equal
    note = "VPP platform fee"

Costs can also be posted through ``POST /api/v1/park/costs`` into the
append-only ``park_costs`` ledger; both kinds are shared out in the statements.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from market import (
    BENEFIT_KEYS,
    BeijingHighest,
    JiangsuAverage,
    JiangsuRealTime,
    PayBand,
    PaymentRule,
    PjmHighFourOfFive,
    PjmSameDay,
    Programme,
    TenInTen,
)
from market.baselines import BaselineMethod
from vpp.chain import canonical_json

__all__ = [
    "DEFAULT_CONFIG_TOML", "ParkCost", "SettlementConfig", "SettlementConfigError", "cny_amount_to_fen", "config_from_dict",
    "load_config", "park_cost_from_dict",
]

_MONTH = re.compile(r"(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])")
_KIND = re.compile(r"[A-Za-z0-9_.-]{1,64}")

DEFAULT_CONFIG_TOML = """\
[programme]
name = "park-dr"
zone = "Asia/Shanghai"
history_days = 45
max_reading_gap_min = 5.0
day_ahead_min_notice_h = 12.0
real_time_sources = ["iec104", "agc"]
use_spot_prices = false

[baseline]
method = "jiangsu_average"
days = 5

[real_time_baseline]
method = "jiangsu_real_time"

[payment]
energy_price_cny_per_kwh = 3.0
cap_ratio = 1.2
penalty_threshold = 0.5
penalty_factor = 0.5
capacity_price_cny_per_kw_month = 0.0

[[payment.bands]]
min_ratio = 0.5
coefficient = 1.0

[calendar]
holidays = ["2026-01-01", "2026-05-01", "2026-05-02", "2026-05-03", "2026-05-04", "2026-05-05",
            "2026-06-19", "2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04", "2026-10-05",
            "2026-10-06", "2026-10-07"]
extra_working_days = []
"""
"""Shipped default: Jiangsu-style average baseline, its real-time variant for instructions received with
less than 12 h of notice (an invitation for the next day comes the afternoon before; a park sets its
programme's own rule), the issue's example payment rule (nothing below 50 %, capped at 120 %, penalty
below 50 %), no park costs. The 2026 holiday list is illustrative; a park configures the State Council's
calendar of its year."""

_METHODS: dict[str, type] = {
    "jiangsu_average": JiangsuAverage,
    "jiangsu_real_time": JiangsuRealTime,
    "beijing_highest": BeijingHighest,
    "pjm_high_4_of_5": PjmHighFourOfFive,
    "pjm_same_day": PjmSameDay,
    "ten_in_ten": TenInTen,
}


class SettlementConfigError(ValueError):
    """A settlement configuration is wrong; ``key`` names the offending key, e.g. ``payment.cap_ratio``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"settlement config {key}: {message}")
        self.key = key


@dataclass(frozen=True)
class SettlementConfig:
    """Everything the settlement of a month depends on besides the store's data.

    Attributes
    ----------
    programme : day-ahead programme: baseline and payment rule [-].
    real_time_programme : same payment rule with the real-time baseline [-].
    real_time_sources : instruction sources settled as real-time events when their receipt time is unknown [-].
    day_ahead_min_notice_s : an instruction received with less notice than this is a real-time event [s].
    zone : the park's local zone [-].
    history_days : days of meter data before the month read for baselines [day].
    max_reading_gap_s : readings bracketing a quarter hour may be at most this far apart [s].
    use_spot_prices : pay each event at the mean pushed spot price over its window when every interval has one [-].
    holidays, extra_working_days : local dates for the day calendar [date].
    costs : park costs configured in the file, in file order [-].
    digest : SHA-256 of the canonical configuration, part of every statement's inputs [hex].
    """

    programme: Programme
    real_time_programme: Programme
    real_time_sources: frozenset[str]
    day_ahead_min_notice_s: float
    zone: str
    history_days: int
    max_reading_gap_s: float
    use_spot_prices: bool
    holidays: tuple[str, ...]
    extra_working_days: tuple[str, ...]
    costs: tuple[ParkCost, ...]
    digest: str


@dataclass(frozen=True)
class ParkCost:
    """A cost of a service the park consumes, shared by a benefit key ("who benefits, bears").

    Attributes
    ----------
    month : local month it belongs to, "YYYY-MM" [-].
    kind : what it is for, e.g. ``platform_fee`` or ``ancillary_service`` [-].
    amount_fen : the amount, >= 0 [fen].
    benefit_key : one of :data:`market.BENEFIT_KEYS` [-].
    note : free text shown on the statements [-].
    source : where it comes from: ``config`` or ``park_costs#<seq>`` (ledger record) [-].
    """

    month: str
    kind: str
    amount_fen: int
    benefit_key: str
    note: str = ""
    source: str = "config"


def load_config(path: str | Path | None = None) -> SettlementConfig:
    """The configuration in ``path`` (TOML or JSON by suffix), or the shipped default when None."""
    if path is None:
        return config_from_dict(tomllib.loads(DEFAULT_CONFIG_TOML))
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettlementConfigError("file", f"cannot read {file}: {exc.strerror}") from None
    try:
        data = json.loads(text) if file.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettlementConfigError("file", f"{file} is not valid {file.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise SettlementConfigError("file", f"{file} must hold a table/object at the top")
    return config_from_dict(data)


def config_from_dict(data: Mapping[str, Any]) -> SettlementConfig:
    """Build and check a configuration from plain data; missing keys take the shipped defaults."""
    default = tomllib.loads(DEFAULT_CONFIG_TOML)
    _known(data, set(default) | {"costs"}, "")
    merged: dict[str, Any] = {section: {**default[section], **_table(data, section)} for section in default}
    for section in ("baseline", "real_time_baseline"):  # a new method does not inherit the old one's parameters
        if "method" in _table(data, section):
            merged[section] = dict(_table(data, section))
    programme_table = merged["programme"]
    _known(programme_table, set(default["programme"]), "programme")
    name = _string(programme_table, "name", "programme")
    zone = _zone(programme_table)
    payment = _payment(merged["payment"])
    calendar = merged["calendar"]
    _known(calendar, set(default["calendar"]), "calendar")
    return SettlementConfig(
        programme=Programme(name, _baseline(merged["baseline"], "baseline"), payment),
        real_time_programme=Programme(f"{name}-real-time", _baseline(merged["real_time_baseline"], "real_time_baseline"), payment),
        real_time_sources=frozenset(s.lower() for s in _strings(programme_table, "real_time_sources", "programme")),
        day_ahead_min_notice_s=3600.0 * _number(programme_table, "day_ahead_min_notice_h", "programme", 0.0, 24.0 * 14),
        zone=zone,
        history_days=_integer(programme_table, "history_days", "programme", 1, 400),
        max_reading_gap_s=60.0 * _number(programme_table, "max_reading_gap_min", "programme", 0.0, 15.0),
        use_spot_prices=_boolean(programme_table, "use_spot_prices", "programme"),
        holidays=_dates(calendar, "holidays"),
        extra_working_days=_dates(calendar, "extra_working_days"),
        costs=_costs(data.get("costs", [])),
        digest=_digest(merged | {"costs": data.get("costs", [])}),
    )


# ----------------------------------------------------------------- parts ----


def _baseline(table: Mapping[str, Any], section: str) -> BaselineMethod:
    method = table.get("method")
    if not isinstance(method, str) or method not in _METHODS:  # a list or table is unhashable
        raise SettlementConfigError(f"{section}.method", f"{method!r} is not one of {sorted(_METHODS)}")
    cls = _METHODS[method]
    parameters = {key: value for key, value in table.items() if key != "method"}
    allowed = set(cls.__dataclass_fields__)
    for key, value in parameters.items():
        if key not in allowed:
            raise SettlementConfigError(f"{section}.{key}", f"not a parameter of {method}; expected one of {sorted(allowed)}")
        if isinstance(value, bool) and key != "adjustment":
            raise SettlementConfigError(f"{section}.{key}", f"{value!r} must be a number")
    try:
        return cls(**parameters)
    except (TypeError, ValueError) as exc:
        raise SettlementConfigError(section, str(exc)) from None


def _payment(table: Mapping[str, Any]) -> PaymentRule:
    keys = {"energy_price_cny_per_kwh", "cap_ratio", "penalty_threshold", "penalty_factor",
            "capacity_price_cny_per_kw_month", "bands"}
    _known(table, keys, "payment")
    threshold = table["penalty_threshold"]
    return PaymentRule(
        energy_price_cny_per_kwh=_number(table, "energy_price_cny_per_kwh", "payment", 0.0, 1000.0),
        bands=_bands(table["bands"]),
        cap_ratio=_number(table, "cap_ratio", "payment", 0.0, 100.0),
        penalty_threshold=None if threshold is False else _number(table, "penalty_threshold", "payment", 0.0, 10.0),
        penalty_factor=_number(table, "penalty_factor", "payment", 0.0, 100.0),
        capacity_price_cny_per_kw_month=_number(table, "capacity_price_cny_per_kw_month", "payment", 0.0, 10000.0),
    )


def _bands(value: Any) -> tuple[PayBand, ...]:
    if not isinstance(value, list) or not value:
        raise SettlementConfigError("payment.bands", f"{value!r} must be a non-empty list of {{min_ratio, coefficient}}")
    bands = []
    for i, band in enumerate(value):
        where = f"payment.bands[{i}]"
        if not isinstance(band, dict):
            raise SettlementConfigError(where, f"{band!r} must be a table with min_ratio and coefficient")
        _known(band, {"min_ratio", "coefficient"}, where)
        for key in ("min_ratio", "coefficient"):
            if key not in band:
                raise SettlementConfigError(f"{where}.{key}", "missing")
        bands.append(PayBand(_number(band, "min_ratio", where, 0.0, 100.0), _number(band, "coefficient", where, 0.0, 100.0)))
    return tuple(bands)


def _costs(value: Any) -> tuple[ParkCost, ...]:
    if not isinstance(value, list):
        raise SettlementConfigError("costs", f"{value!r} must be a list of {{month, kind, amount_cny, benefit_key}}")
    costs = []
    for i, item in enumerate(value):
        where = f"costs[{i}]"
        if not isinstance(item, dict):
            raise SettlementConfigError(where, f"{item!r} must be a table")
        _known(item, {"month", "kind", "amount_cny", "benefit_key", "note"}, where)
        try:
            costs.append(park_cost_from_dict(item, source="config"))
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            raise SettlementConfigError(f"{where}.{field}", message) from None
    return tuple(costs)


def park_cost_from_dict(item: Mapping[str, Any], source: str) -> ParkCost:
    """A park cost from ``{month, kind, amount_cny, benefit_key?, note?}``; ValueError "<key>: <why>" otherwise."""
    month = item.get("month")
    if not isinstance(month, str) or not _MONTH.fullmatch(month):
        raise ValueError(f"month: {month!r} is not a month like 2026-07")
    kind = item.get("kind")
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ValueError(f"kind: {kind!r} must be 1-64 letters, digits, '_', '-' or '.'")
    key = item.get("benefit_key", "event_revenue")
    if not isinstance(key, str) or key not in BENEFIT_KEYS:
        raise ValueError(f"benefit_key: {key!r} is not one of {list(BENEFIT_KEYS)}")
    note = item.get("note", "")
    if not isinstance(note, str) or len(note) > 200:
        raise ValueError(f"note: {note!r} must be text of at most 200 characters")
    return ParkCost(month, kind, cny_amount_to_fen(item.get("amount_cny"), "amount_cny"), key, note, source)


def cny_amount_to_fen(value: Any, field: str) -> int:
    """An amount in CNY (number or decimal string, >= 0, whole fen, < 10^10 CNY) as exact fen; ValueError "<field>: <why>"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{field}: {value!r} must be an amount in CNY like 1200.50")  # noqa: TRY004 - a bad field, reported as 422
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{field}: {value!r} must be an amount in CNY like 1200.50") from None
    if not amount.is_finite() or amount < 0 or amount >= Decimal(10) ** 10:
        raise ValueError(f"{field}: {value!r} must be a finite amount >= 0 and below 10^10 CNY")
    fen = amount * 100
    if fen != fen.to_integral_value():
        raise ValueError(f"{field}: {value!r} has fractions of a fen")
    return int(fen)


def _zone(table: Mapping[str, Any]) -> str:
    zone = _string(table, "zone", "programme")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettlementConfigError("programme.zone", f"{zone!r} is not an IANA time zone") from None
    return zone


def _dates(table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = _strings(table, key, "calendar")
    for i, value in enumerate(values):
        try:
            np.datetime64(value, "D")
        except ValueError:
            raise SettlementConfigError(f"calendar.{key}[{i}]", f"{value!r} is not a date like 2026-10-01") from None
    return tuple(str(np.datetime64(v, "D")) for v in values)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SettlementConfigError(key, f"{value!r} must be a table")
    return value


def _known(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            path = f"{where}.{key}" if where else key
            raise SettlementConfigError(path, f"unknown key; expected one of {sorted(allowed)}")


def _number(table: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise SettlementConfigError(f"{where}.{key}", f"{value!r} must be a number in [{low}, {high}]")
    return float(value)


def _integer(table: Mapping[str, Any], key: str, where: str, low: int, high: int) -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettlementConfigError(f"{where}.{key}", f"{value!r} must be an integer in [{low}, {high}]")
    return value


def _boolean(table: Mapping[str, Any], key: str, where: str) -> bool:
    value = table.get(key)
    if not isinstance(value, bool):
        raise SettlementConfigError(f"{where}.{key}", f"{value!r} must be true or false")
    return value


def _string(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise SettlementConfigError(f"{where}.{key}", f"{value!r} must be a non-empty string")
    return value


def _strings(table: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettlementConfigError(f"{where}.{key}", f"{value!r} must be a list of strings")
    return value


def _digest(merged: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(merged).encode("utf-8")).hexdigest()
