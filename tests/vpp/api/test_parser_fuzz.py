"""Hypothesis fuzzing of every parser of outside input that exists today.

Garbage in gives the parser's documented error (which the HTTP edge turns
into a 4xx and the CLI into a one-line message), never another exception:

| parser | documented error |
| --- | --- |
| price CSV (``market.load_price_csv_rows``) and its JSON form (``POST /market/prices``) | ``PriceCsvError`` / ``InvalidInput`` |
| settlement programme config (``vpp.settlement.load_config``, TOML or JSON) | ``SettlementConfigError`` |
| tariff config (``market.tariff_from_dict``) | ``TariffConfigError`` |
| carbon settings (``CarbonSettings.from_plain``, ``vpp carbon run --settings``) | ``ValueError`` |
| API JSON bodies (instruction, enterprise, device) and telemetry / meter payloads | pydantic ``ValidationError`` |
| months in queries and bodies | ``InvalidInput`` / ``ValueError`` |

Inputs are both free garbage and mutations of a valid document (a value
replaced, a key dropped or added), which reach the checks deep inside.
"""

from __future__ import annotations

import json
import tomllib
from datetime import datetime, timedelta, timezone
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market import PriceCsvError, load_price_csv_rows
from market.tariff import TariffConfigError, default_tariff_config, tariff_from_dict
from vpp.api.routes import check_month
from vpp.api.settlement_routes import _csv_prices, _json_prices
from vpp.carbon.inputs import month_period
from vpp.carbon.ledger import CarbonSettings
from vpp.errors import InvalidInput
from vpp.model import DispatchInstruction, Enterprise, MeterReading, TelemetrySample, parse_device
from vpp.settlement import load_config
from vpp.settlement.config import DEFAULT_CONFIG_TOML, SettlementConfigError, config_from_dict
from vpp.settlement.service import parse_month

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------- strategies ----

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "1e400", "nan", "2026-07-01T00:00:00Z", "24:00", "25:61", "9999-12", "0001-01"]),
)  # fmt: skip
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside nested dicts and lists, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(value[head], rest, new)
    return copy


def _drop(value: Any, path: tuple) -> Any:
    if len(path) == 1:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != path[0]}
        return [v for i, v in enumerate(value) if i != path[0]]
    return _replace(value, path[:-1], _drop(_get(value, path[:-1]), path[-1:]))


def _get(value: Any, path: tuple) -> Any:
    for part in path:
        value = value[part]
    return value


@st.composite
def mutated(draw: st.DrawFn, valid: Any, times: int = 3) -> Any:
    """``valid`` with up to ``times`` changes: a value replaced by any JSON value, a key or item dropped, a key added."""
    value = valid
    for _ in range(draw(st.integers(1, times))):
        path = draw(st.sampled_from(_paths(value)))
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        target = _get(value, path)
        if action == "drop" and path:
            value = _drop(value, path)
        elif action == "add" and isinstance(target, dict):
            value = _replace(value, path, {**target, draw(st.text(max_size=8)): draw(json_values)})
        else:
            value = _replace(value, path, draw(json_values))
    return value


# ------------------------------------------------------------------- price CSV ----

time_cells = st.one_of(
    st.datetimes(timezones=st.just(timezone.utc) | st.none() | st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439)),
                 min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(lambda d: d.isoformat()),
    st.text(max_size=30), st.sampled_from(["0001-01-01T00:00:00+08:00", "9999-12-31T23:45:00-08:00", "2026-07-01T08:00:00"]),
)  # fmt: skip
price_cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=12))
headers = st.sampled_from([
    "interval_start,price_cny_per_mwh", "price_cny_per_kwh,interval_start,note", "interval_start,interval_start,price_cny_per_mwh",
    "interval_start", "", "interval_start,price_cny_per_mwh,price_cny_per_kwh",
]) | st.text(max_size=40)  # fmt: skip
csv_rows = st.lists(
    st.tuples(time_cells, price_cells).map(lambda r: f"{r[0]},{r[1]}") | st.text(max_size=40), max_size=6
)


@FUZZ
@given(header=headers, rows=csv_rows)
def test_price_csv_garbage_gives_price_csv_error(header, rows):
    try:
        series = load_price_csv_rows([header, *rows])
    except PriceCsvError as exc:
        assert exc.line >= 1
        return
    assert series.interval_start_utc.size == series.price_cny_per_mwh.size


@FUZZ
@given(text=st.text(max_size=200))
def test_price_csv_as_one_text_gives_price_csv_error(text):
    try:
        load_price_csv_rows(text)
    except PriceCsvError:
        pass


@FUZZ
@given(lines=st.lists(st.text(max_size=40), max_size=5))
def test_price_csv_upload_gives_invalid_input_naming_the_line(lines):
    try:
        _csv_prices(["interval_start,price_cny_per_mwh", *lines])
    except InvalidInput as exc:
        assert exc.field.startswith("csv")


@FUZZ
@given(payload=json_values | mutated([{"interval_start": "2026-07-01T00:00:00+08:00", "price_cny_per_mwh": 350.0}]))
def test_price_json_upload_gives_invalid_input(payload):
    try:
        _json_prices(payload)
    except InvalidInput as exc:
        assert exc.field and exc.message


# ------------------------------------------------------------- config files ----

DEFAULT_SETTLEMENT = tomllib.loads(DEFAULT_CONFIG_TOML)


@FUZZ
@given(data=mutated(DEFAULT_SETTLEMENT, times=4))
def test_settlement_config_mutations_give_settlement_config_error(data):
    try:
        config_from_dict(data) if isinstance(data, dict) else None
    except SettlementConfigError as exc:
        assert isinstance(exc.key, str)


@FUZZ
@given(text=st.text(max_size=300) | st.sampled_from(['[programme]\nname = 3', "[payment]\ncap_ratio = inf", "x = 1", "[calendar]\nholidays = [1]"]))
def test_settlement_config_files_of_any_text_give_settlement_config_error(text, tmp_path_factory):
    folder = tmp_path_factory.mktemp("config")
    for name, body in (("programme.toml", text), ("programme.json", text)):
        path = folder / name
        path.write_text(body, encoding="utf-8")
        try:
            load_config(path)
        except SettlementConfigError:
            pass


@FUZZ
@given(data=mutated(default_tariff_config(), times=4))
def test_tariff_config_mutations_give_tariff_config_error(data):
    try:
        tariff_from_dict(data) if isinstance(data, dict) else None
    except TariffConfigError as exc:
        assert exc.path is not None


@FUZZ
@given(data=mutated(CarbonSettings(factor_overrides={"2022": {"east": 0.5}}, production_units={"e01": 10.0}).to_plain(), times=3))
def test_carbon_settings_mutations_give_value_error(data):
    try:
        CarbonSettings.from_plain(data) if isinstance(data, dict) else None
    except ValueError:
        pass


# --------------------------------------------------- API bodies and telemetry ----

NOW = "2026-07-01T04:00:00Z"
VALID_INSTRUCTION = {"id": "i-1", "kind": "delta", "start": NOW, "end": "2026-07-01T04:15:00Z", "delta_kw": 500.0}
VALID_SAMPLE = {"device_id": "bat-1", "ts": NOW, "p_kw": -10.0, "p_min_kw": -50.0, "p_max_kw": 50.0, "soc_kwh": 20.0, "online": True}
VALID_READING = {"meter_id": "m1", "ts": NOW, "import_kwh": 10.0, "export_kwh": 0.0}
VALID_DEVICE = {"kind": "battery", "id": "bat-1", "enterprise_id": "e01", "adapter": "simulator", "rated_kw": 100.0,
                "capacity_kwh": 200.0, "soc_min_kwh": 20.0, "soc_max_kwh": 180.0}  # fmt: skip


@pytest.mark.parametrize("parse, valid", [
    (DispatchInstruction.model_validate, VALID_INSTRUCTION),
    (Enterprise.model_validate, {"id": "e01", "name": "One"}),
    (parse_device, VALID_DEVICE),
    (TelemetrySample.model_validate, VALID_SAMPLE),
    (MeterReading.model_validate, VALID_READING),
], ids=["instruction", "enterprise", "device", "telemetry", "meter_reading"])  # fmt: skip
def test_json_bodies_and_telemetry_give_validation_errors(parse, valid):
    parse(valid)  # the starting point is valid: mutations are what fail

    @FUZZ
    @given(payload=mutated(valid, times=3) | json_values)
    def fuzz(payload):
        try:
            parse(payload)
        except pydantic.ValidationError:
            pass

    fuzz()


@FUZZ
@given(raw=st.text(max_size=40))
def test_telemetry_as_json_text_gives_validation_errors(raw):
    try:
        TelemetrySample.model_validate_json(raw)
    except pydantic.ValidationError:
        pass
    try:
        TelemetrySample.model_validate_json(json.dumps({**VALID_SAMPLE, "ts": raw}))
    except pydantic.ValidationError:
        pass


# ---------------------------------------------------------------------- months ----

months = st.one_of(
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}\Z"), st.text(max_size=10),
    st.sampled_from(["9999-12", "0001-01", "0000-00", "1969-12", "1970-01", "²⁰²⁶-07", "٢٠٢٦-٠٧", "2026-7", " 2026-07"]),
)  # fmt: skip


@FUZZ
@given(month=months)
def test_months_give_invalid_input_or_a_month_every_consumer_handles(month):
    try:
        checked = check_month(month, "month")
    except InvalidInput as exc:
        assert exc.field == "month"
        return
    parse_month(checked)  # what the API accepts, settlement and carbon accept too
    month_period(checked)
