"""Time-of-use tariffs and spot / day-ahead price series.

Two kinds of price signal enter the market side:

* a **time-of-use (TOU) tariff**: the retail price of grid energy by period
  (critical peak, peak, flat, valley) that depends on the *local* hour and on
  the season (months). It is configured per park from a plain ``dict`` (the
  service loads it from a TOML or JSON file) with :func:`tariff_from_dict`,
  and evaluated for any array of UTC interval starts with :func:`tou_price`;
* a **spot or day-ahead price** per 15-minute interval, parsed from CSV text
  with :func:`load_price_csv_rows`.

Times inside are UTC ``numpy.datetime64`` values (a ``datetime64`` has no
zone; every one passed here is read as UTC). The park's zone is used only to
find the local hour and month a tariff depends on.

Units: TOU prices in CNY/kWh (as Chinese retail tariffs are published);
spot prices in CNY/MWh (as Chinese spot markets quote them).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

__all__ = [
    "PriceCsvError",
    "PriceSeries",
    "TariffConfigError",
    "TouTariff",
    "default_tariff",
    "default_tariff_config",
    "load_price_csv_rows",
    "local_time",
    "tariff_from_dict",
    "tou_period",
    "tou_price",
]

QUARTERS_PER_DAY = 96
"""15-minute intervals in a day."""

_MINUTES_PER_QUARTER = 15


class TariffConfigError(ValueError):
    """A tariff configuration is wrong; ``path`` names the offending key, e.g. ``seasons[1].periods.peak[0]``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class TouTariff:
    """A time-of-use tariff, resolved to 15-minute resolution.

    Attributes
    ----------
    name : label of the tariff [-].
    period_names : names of the periods, e.g. ``("valley", "flat", "peak")`` [-].
    season_names : names of the seasons [-].
    season_of_month : season index of each calendar month, January first, 12 entries [-].
    period_of_quarter : per season, the period index of each local quarter hour, 96 entries [-].
    price_cny_per_kwh : per season, the price of each period [CNY/kWh].
    """

    name: str
    period_names: tuple[str, ...]
    season_names: tuple[str, ...]
    season_of_month: tuple[int, ...]
    period_of_quarter: tuple[tuple[int, ...], ...]
    price_cny_per_kwh: tuple[tuple[float, ...], ...]

    def price_table_cny_per_kwh(self) -> np.ndarray:
        """Price of every (season, local quarter hour), shape ``(seasons, 96)`` [CNY/kWh]."""
        prices = np.asarray(self.price_cny_per_kwh, dtype=np.float64)
        periods = np.asarray(self.period_of_quarter, dtype=np.intp)
        return np.take_along_axis(prices, periods, axis=1)


# ----------------------------------------------------------------- config ----


def default_tariff_config() -> dict:
    """Configuration of an illustrative Jiangsu-style industrial TOU tariff.

    The period layout follows the shape commonly reported for Jiangsu large
    industrial users (valley 00:00-08:00; peak 08:00-11:00 and 17:00-22:00;
    flat otherwise) with a critical peak in July-August and December-January.
    **The numbers are illustrative only**: they are not a published Jiangsu
    tariff, were not checked against the current provincial price notice, and
    must be replaced by the park's own contract before any real billing.
    """
    normal = {
        "valley": [["00:00", "08:00"]],
        "peak": [["08:00", "11:00"], ["17:00", "22:00"]],
        "flat": [["11:00", "17:00"], ["22:00", "24:00"]],
    }
    critical = {
        "valley": [["00:00", "08:00"]],
        "peak": [["08:00", "11:00"], ["17:00", "20:00"], ["21:00", "22:00"]],
        "critical": [["20:00", "21:00"]],
        "flat": [["11:00", "17:00"], ["22:00", "24:00"]],
    }
    return {
        "name": "jiangsu-style-industrial-illustrative",
        "prices_cny_per_kwh": {"valley": 0.26, "flat": 0.63, "peak": 1.05, "critical": 1.26},
        "seasons": [
            {"name": "summer", "months": [[7, 8]], "periods": critical},
            {"name": "winter", "months": [[12, 1]], "periods": critical},
            {"name": "shoulder", "months": [[2, 6], [9, 11]], "periods": normal},
        ],
    }


def default_tariff() -> TouTariff:
    """The illustrative Jiangsu-style tariff of :func:`default_tariff_config` (numbers are not real prices)."""
    return tariff_from_dict(default_tariff_config())


def tariff_from_dict(config: Mapping) -> TouTariff:
    """Build a :class:`TouTariff` from a plain mapping (as loaded from TOML or JSON).

    Shape::

        name = "park-a"                                   # optional
        [prices_cny_per_kwh]                              # price of each period [CNY/kWh]
        valley = 0.26
        flat = 0.63
        peak = 1.05
        [[seasons]]
        name = "summer"
        months = [[7, 8]]                                 # inclusive month ranges or single months; [12, 2] wraps
        prices_cny_per_kwh = { peak = 1.10 }              # optional per-season overrides
        [seasons.periods]                                 # local [start, end) ranges, "HH:MM" or hours
        valley = [["00:00", "08:00"]]
        peak = [["08:00", "11:00"], ["17:00", "22:00"]]
        flat = [["11:00", "17:00"], ["22:00", "24:00"]]

    Every month must belong to exactly one season and every local quarter hour
    of a season to exactly one period; a range whose end is not after its
    start wraps over midnight.

    Parameters
    ----------
    config : the tariff configuration described above [-].

    Returns
    -------
    The tariff [-]. Raises :class:`TariffConfigError` naming the wrong key.
    """
    if not isinstance(config, Mapping):
        raise TariffConfigError("<root>", f"expected a table, got {type(config).__name__}")
    unknown = set(config) - {"name", "prices_cny_per_kwh", "seasons"}
    if unknown:
        raise TariffConfigError(min(unknown), "unknown key; expected name, prices_cny_per_kwh, seasons")
    base_prices = _prices(config.get("prices_cny_per_kwh", {}), "prices_cny_per_kwh")
    seasons = config.get("seasons")
    if not isinstance(seasons, Sequence) or isinstance(seasons, str) or not seasons:
        raise TariffConfigError("seasons", "expected a non-empty list of seasons")
    period_names = _period_names(seasons, base_prices)
    parsed = [_season(season, f"seasons[{i}]", period_names, base_prices) for i, season in enumerate(seasons)]
    return TouTariff(
        name=str(config.get("name", "tariff")),
        period_names=period_names,
        season_names=tuple(p[0] for p in parsed),
        season_of_month=_season_of_month([p[1] for p in parsed]),
        period_of_quarter=tuple(p[2] for p in parsed),
        price_cny_per_kwh=tuple(p[3] for p in parsed),
    )


def _prices(value: object, path: str) -> dict[str, float]:
    """Period → price mapping, each a finite number ≥ 0 [CNY/kWh]."""
    if not isinstance(value, Mapping):
        raise TariffConfigError(path, f"expected a table of period = price, got {type(value).__name__}")
    prices = {}
    for name, price in value.items():
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise TariffConfigError(f"{path}.{name}", f"price {price!r} must be a finite number >= 0 [CNY/kWh]")
        prices[str(name)] = float(price)
    return prices


def _period_names(seasons: Sequence, base_prices: Mapping[str, float]) -> tuple[str, ...]:
    """All period names in order of first appearance (base prices first)."""
    names = list(base_prices)
    for season in seasons:
        periods = season.get("periods", {}) if isinstance(season, Mapping) else {}
        for name in periods if isinstance(periods, Mapping) else ():
            if name not in names:
                names.append(str(name))
    return tuple(names)


def _season(
    season: object, path: str, period_names: tuple[str, ...], base_prices: Mapping[str, float]
) -> tuple[str, tuple[int, ...], tuple[int, ...], tuple[float, ...]]:
    """``(name, months, period_of_quarter, price per period)`` of one season entry."""
    if not isinstance(season, Mapping):
        raise TariffConfigError(path, f"expected a table, got {type(season).__name__}")
    unknown = set(season) - {"name", "months", "periods", "prices_cny_per_kwh"}
    if unknown:
        raise TariffConfigError(f"{path}.{min(unknown)}", "unknown key; expected name, months, periods, prices_cny_per_kwh")
    months = _months(season.get("months"), f"{path}.months")
    quarters = _quarters(season.get("periods"), f"{path}.periods", period_names)
    prices = {**base_prices, **_prices(season.get("prices_cny_per_kwh", {}), f"{path}.prices_cny_per_kwh")}
    used = {period_names[q] for q in quarters}
    for name in sorted(used - set(prices)):
        raise TariffConfigError(f"{path}.periods.{name}", "period has no price in prices_cny_per_kwh")
    price_row = tuple(prices.get(name, math.nan) for name in period_names)
    return str(season.get("name", path)), months, quarters, price_row


def _months(value: object, path: str) -> tuple[int, ...]:
    """Months named by a list of single months or inclusive ``[first, last]`` ranges (wrapping) [1-12]."""
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise TariffConfigError(path, "expected a non-empty list of months or [first, last] ranges")
    months: list[int] = []
    for i, item in enumerate(value):
        pair = item if isinstance(item, Sequence) and not isinstance(item, str) else [item, item]
        if len(pair) != 2 or not all(_is_int(m) and 1 <= m <= 12 for m in pair):
            raise TariffConfigError(f"{path}[{i}]", f"{item!r} is not a month 1-12 or a [first, last] pair of months")
        first, last = int(pair[0]), int(pair[1])
        months.extend((first - 1 + k) % 12 + 1 for k in range((last - first) % 12 + 1))
    return tuple(months)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _quarters(value: object, path: str, period_names: tuple[str, ...]) -> tuple[int, ...]:
    """Period index of each of the 96 local quarter hours; every quarter covered exactly once."""
    if not isinstance(value, Mapping) or not value:
        raise TariffConfigError(path, "expected a table of period = list of [start, end] ranges")
    owner = np.full(QUARTERS_PER_DAY, -1, dtype=np.intp)
    for name, ranges in value.items():
        if not isinstance(ranges, Sequence) or isinstance(ranges, str):
            raise TariffConfigError(f"{path}.{name}", "expected a list of [start, end] ranges")
        for i, span in enumerate(ranges):
            where = f"{path}.{name}[{i}]"
            quarters = _span_quarters(span, where)
            clash = quarters[owner[quarters] >= 0]
            if clash.size:
                other = period_names[owner[clash[0]]]
                raise TariffConfigError(where, f"{_clock(clash[0])} is already in period {other!r}")
            owner[quarters] = period_names.index(str(name))
    if (owner < 0).any():
        raise TariffConfigError(path, f"{_clock(int(np.argmax(owner < 0)))} local time belongs to no period")
    return tuple(int(p) for p in owner)


def _span_quarters(span: object, path: str) -> np.ndarray:
    """Quarter-hour indices of a local ``[start, end)`` range; wraps over midnight when end <= start."""
    if not isinstance(span, Sequence) or isinstance(span, str) or len(span) != 2:
        raise TariffConfigError(path, f"{span!r} is not a [start, end] pair")
    start, end = (_quarter_of(v, f"{path}[{k}]") for k, v in enumerate(span))
    if start == QUARTERS_PER_DAY:
        raise TariffConfigError(f"{path}[0]", "a range cannot start at 24:00")
    length = (end - start) % QUARTERS_PER_DAY or QUARTERS_PER_DAY
    return (start + np.arange(length)) % QUARTERS_PER_DAY


def _quarter_of(value: object, path: str) -> int:
    """Quarter-hour index of ``"HH:MM"`` or a whole hour; 24:00 allowed [0-96]."""
    if _is_int(value) and 0 <= value <= 24:
        return int(value) * 4
    if isinstance(value, str):
        hh, sep, mm = value.partition(":")
        if sep and hh.isdigit() and mm.isdigit() and len(mm) == 2:
            minutes = int(hh) * 60 + int(mm)
            if int(mm) % _MINUTES_PER_QUARTER == 0 and 0 <= minutes <= 24 * 60:
                return minutes // _MINUTES_PER_QUARTER
    raise TariffConfigError(path, f"{value!r} is not a local time 'HH:MM' on a quarter hour (00:00-24:00) or an hour 0-24")


def _clock(quarter: int) -> str:
    minutes = int(quarter) * _MINUTES_PER_QUARTER
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _season_of_month(months_per_season: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Season index of each month; every month in exactly one season."""
    owner = [-1] * 12
    for season, months in enumerate(months_per_season):
        for month in months:
            if owner[month - 1] >= 0:
                raise TariffConfigError(f"seasons[{season}].months", f"month {month} is already in seasons[{owner[month - 1]}]")
            owner[month - 1] = season
    if -1 in owner:
        raise TariffConfigError("seasons", f"month {owner.index(-1) + 1} belongs to no season")
    return tuple(owner)


# ------------------------------------------------------------- evaluation ----


def local_time(interval_starts_utc: np.ndarray, zone: str = "Asia/Shanghai") -> np.ndarray:
    """Wall-clock time in ``zone`` of UTC instants, vectorised.

    The offset is looked up once per distinct UTC hour (and per instant only
    in an hour where the offset changes), so a year of 15-minute starts costs
    about 9,000 zone look-ups.

    Parameters
    ----------
    interval_starts_utc : UTC instants, any ``datetime64`` unit, any shape; no NaT [datetime64].
    zone : IANA time zone name [-].

    Returns
    -------
    Local wall-clock times, same shape, ``datetime64[s]`` [datetime64].
    """
    utc = np.asarray(interval_starts_utc)
    if not np.issubdtype(utc.dtype, np.datetime64):
        raise TypeError(f"interval_starts_utc has dtype {utc.dtype}, expected datetime64 (UTC)")
    if np.isnat(utc).any():
        raise ValueError(f"interval_starts_utc[{int(np.argmax(np.isnat(utc).ravel()))}] is NaT")
    seconds = utc.astype("datetime64[s]")
    hours, inverse = np.unique(seconds.astype("datetime64[h]"), return_inverse=True)
    tz = ZoneInfo(zone)
    start_offset = _offsets_s(hours.astype("datetime64[s]"), tz)
    end_offset = _offsets_s(hours.astype("datetime64[s]") + np.timedelta64(3599, "s"), tz)
    offset = start_offset[inverse.reshape(seconds.shape)]
    changing = (start_offset != end_offset)[inverse.reshape(seconds.shape)]
    if changing.any():
        offset[changing] = _offsets_s(seconds[changing], tz)
    return seconds + offset.astype("timedelta64[s]")


def _offsets_s(instants: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """UTC offset of ``tz`` at each UTC instant [s]."""
    epoch = instants.astype("datetime64[s]").astype(np.int64)
    return np.array(
        [datetime.fromtimestamp(int(s), tz=tz).utcoffset().total_seconds() for s in epoch], dtype=np.int64
    )


def tou_period(tariff: TouTariff, interval_starts_utc: np.ndarray, zone: str = "Asia/Shanghai") -> np.ndarray:
    """Index into ``tariff.period_names`` of the period each UTC instant falls in, vectorised.

    Parameters
    ----------
    tariff : the tariff [-].
    interval_starts_utc : UTC instants, any shape [datetime64].
    zone : IANA zone whose local hour and month the tariff follows [-].

    Returns
    -------
    Period indices, same shape [-].
    """
    season, quarter = _season_and_quarter(tariff, interval_starts_utc, zone)
    return np.asarray(tariff.period_of_quarter, dtype=np.intp)[season, quarter]


def tou_price(tariff: TouTariff, interval_starts_utc: np.ndarray, zone: str = "Asia/Shanghai") -> np.ndarray:
    """Tariff price at each UTC instant, vectorised.

    Parameters
    ----------
    tariff : the tariff [-].
    interval_starts_utc : UTC instants (interval starts), any shape [datetime64].
    zone : IANA zone whose local hour and month the tariff follows [-].

    Returns
    -------
    Price of grid energy, same shape [CNY/kWh].
    """
    season, quarter = _season_and_quarter(tariff, interval_starts_utc, zone)
    return tariff.price_table_cny_per_kwh()[season, quarter]


def _season_and_quarter(tariff: TouTariff, interval_starts_utc: np.ndarray, zone: str) -> tuple[np.ndarray, np.ndarray]:
    """Season index and local quarter-hour index of each instant."""
    local = local_time(interval_starts_utc, zone)
    month = local.astype("datetime64[M]").astype(np.int64) % 12
    minute_of_day = (local - local.astype("datetime64[D]")).astype("timedelta64[m]").astype(np.int64)
    season = np.asarray(tariff.season_of_month, dtype=np.intp)[month]
    return season, minute_of_day // _MINUTES_PER_QUARTER


# ------------------------------------------------------------ price CSV ----


class PriceCsvError(ValueError):
    """A price CSV is wrong at ``line`` (1-based, the header is line 1) and ``column`` (header name)."""

    def __init__(self, line: int, column: str | None, message: str) -> None:
        where = f"line {line}" + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {message}")
        self.line = line
        self.column = column


@dataclass(frozen=True)
class PriceSeries:
    """Prices per 15-minute interval, sorted by interval start.

    Attributes
    ----------
    interval_start_utc : start of each interval, ``datetime64[s]`` UTC [datetime64].
    price_cny_per_mwh : energy price of the interval [CNY/MWh].
    """

    interval_start_utc: np.ndarray
    price_cny_per_mwh: np.ndarray


_TIME_COLUMN = "interval_start"
_PRICE_COLUMNS = {"price_cny_per_mwh": 1.0, "price_cny_per_kwh": 1000.0}


def load_price_csv_rows(rows: Iterable[str]) -> PriceSeries:
    """Parse spot or day-ahead prices per 15-minute interval from CSV text lines.

    The first line is a header with ``interval_start`` and exactly one of
    ``price_cny_per_mwh`` or ``price_cny_per_kwh`` (converted to CNY/MWh);
    other columns are ignored. ``interval_start`` is ISO 8601 with an explicit
    offset (``2026-07-01T08:00:00+08:00`` or ``...Z``) on a quarter hour.
    Blank lines are skipped. Rows may come in any order; duplicates are errors.

    Parameters
    ----------
    rows : lines of CSV text, header first, already read from the file [-].

    Returns
    -------
    The prices sorted by interval start [CNY/MWh]. Raises :class:`PriceCsvError`
    naming the line and column of the first problem.
    """
    lines = rows.splitlines() if isinstance(rows, str) else list(rows)
    if not lines:
        raise PriceCsvError(1, None, "empty file; expected a header with interval_start and price_cny_per_mwh")
    header = _fields(lines[0])
    time_at, price_at, price_column = _header(header)
    starts: list[datetime] = []
    prices: list[float] = []
    seen: dict[datetime, int] = {}
    for line, text in enumerate(lines[1:], start=2):
        record = _fields(text)
        if all(not cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            raise PriceCsvError(line, None, f"{len(record)} fields, the header has {len(header)}")
        start = _interval_start(record[time_at], line)
        if start in seen:
            raise PriceCsvError(line, _TIME_COLUMN, f"{start.isoformat()} repeats the interval of line {seen[start]}")
        seen[start] = line
        starts.append(start)
        prices.append(_price(record[price_at], line, price_column) * _PRICE_COLUMNS[price_column])
    return _sorted_series(starts, prices)


def _fields(text: str) -> list[str]:
    """The CSV fields of one line (one record per line; quoted line breaks are not supported)."""
    return next(csv.reader([text.rstrip("\r\n")]), [])


def _header(header: list[str]) -> tuple[int, int, str]:
    """Indices of the time and price columns and the price column's name."""
    names = [name.strip() for name in header]
    if _TIME_COLUMN not in names:
        raise PriceCsvError(1, None, f"header {names} has no {_TIME_COLUMN!r} column")
    found = [name for name in _PRICE_COLUMNS if name in names]
    if len(found) != 1:
        raise PriceCsvError(1, None, f"header {names} needs exactly one of {sorted(_PRICE_COLUMNS)}")
    for name in (_TIME_COLUMN, found[0]):
        if names.count(name) > 1:
            raise PriceCsvError(1, name, "column appears twice")
    return names.index(_TIME_COLUMN), names.index(found[0]), found[0]


def _interval_start(text: str, line: int) -> datetime:
    """UTC datetime of an ISO 8601 interval start with an offset, on a quarter hour."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PriceCsvError(line, _TIME_COLUMN, f"{text!r} is not an ISO 8601 time, e.g. 2026-07-01T08:00:00+08:00") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise PriceCsvError(line, _TIME_COLUMN, f"{text!r} has no UTC offset; write e.g. {text.strip()}+08:00")
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+08:00 is before year 1 in UTC
        raise PriceCsvError(line, _TIME_COLUMN, f"{text!r} is out of the range of dates") from None
    if value.second or value.microsecond or value.minute % _MINUTES_PER_QUARTER:
        raise PriceCsvError(line, _TIME_COLUMN, f"{text!r} is not on a quarter hour (:00, :15, :30, :45)")
    return value


def _price(text: str, line: int, column: str) -> float:
    """A finite price."""
    try:
        value = float(text.strip())
    except ValueError:
        raise PriceCsvError(line, column, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise PriceCsvError(line, column, f"{text!r} is not a finite number")
    return value


def _sorted_series(starts: list[datetime], prices: list[float]) -> PriceSeries:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    seconds = np.array([(s - epoch) // timedelta(seconds=1) for s in starts], dtype=np.int64)
    order = np.argsort(seconds, kind="stable")
    return PriceSeries(
        interval_start_utc=seconds[order].astype("datetime64[s]"),
        price_cny_per_mwh=np.asarray(prices, dtype=np.float64)[order],
    )
