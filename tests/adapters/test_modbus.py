"""The Modbus/SunSpec adapter: pure register codecs, then against real pymodbus SunSpec servers on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.base import Adapter, AdapterError
from adapters.modbus import (
    CHAST_EMPTY,
    CHAST_FULL,
    CONTROLS,
    INVERTER,
    MODELS,
    NAMEPLATE,
    STORAGE,
    ModbusAdapter,
    SunSpecFormatError,
    _decode_battery_telemetry,
    _decode_online,
    _decode_pv_telemetry,
    _decode_ratings,
    _decode_scaled,
    _encode_battery_setpoint,
    _encode_pv_limit,
    _encode_scaled,
    _parse_address,
    _parse_mbap,
    _parse_model_header,
    decode_model,
    encode_model,
)
from simulators.park import ParkSpec, build_park
from simulators.sim import SimulatedPark
from simulators.sunspec_server import SunSpecServer, _pv_setpoint_kw, _storage_setpoint_kw
from tests.vpp.harness import SETTINGS
from vpp.clock import ManualClock
from vpp.model import PV, Battery, DispatchInstruction, InterruptibleLoad, Setpoint
from vpp.service import PlantService
from vpp.store import SqliteStore

NOON = datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)  # 12:00 in Shanghai: PV producing


# ----------------------------------------------------------------- the tables --


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_every_layout_is_contiguous_and_fills_its_length(model_id):
    layout = MODELS[model_id]
    offset = 0
    for point in layout.points:
        assert point.offset == offset, f"{point.name} at {point.offset}, expected {offset}"
        offset += point.size
        assert point.sf is None or layout.point(point.sf).type == "sunssf"
    assert offset == layout.length


def test_the_points_sit_where_the_sunspec_reference_puts_them():
    # Offsets after ID and L, from the SunSpec Information Model Reference.
    assert [(p.name, p.offset) for p in INVERTER.points if p.name in ("W", "W_SF", "WH", "St")] == [
        ("W", 12), ("W_SF", 13), ("WH", 22), ("St", 36),
    ]  # fmt: skip
    assert (NAMEPLATE.length, NAMEPLATE.point("WHRtg").offset, NAMEPLATE.point("MaxDisChaRte").offset) == (26, 17, 23)
    assert (CONTROLS.point("WMaxLimPct").offset, CONTROLS.point("WMaxLim_Ena").offset, CONTROLS.point("WMaxLimPct_SF").offset) == (3, 7, 21)
    assert [STORAGE.point(n).offset for n in ("WChaMax", "StorCtl_Mod", "ChaState", "ChaSt", "OutWRte", "InWRte", "InOutWRte_SF")] == [
        0, 3, 6, 9, 10, 11, 23,
    ]  # fmt: skip
    assert STORAGE.point("ChaState").writable is False and STORAGE.point("InWRte").writable is True


# ------------------------------------------------------------ captured frames --


def _inverter_block(**raw: int) -> list[int]:
    """A model 103 block with every point not implemented except the raw registers given."""
    block = encode_model(INVERTER, {})
    for name, value in raw.items():
        block[INVERTER.point(name).offset] = value
    return block


def test_a_negative_power_with_a_negative_scale_factor_decodes_in_watts():
    # W = 0xFB2E = -1234, W_SF = 0xFFFF = -1  ->  -123.4 W (a battery charging)
    values = decode_model(INVERTER, _inverter_block(W=0xFB2E, W_SF=0xFFFF, St=4))
    assert values["W"] == pytest.approx(-123.4)
    assert values["St"] == 4 and values["A"] is None and values["Hz_SF"] is None


def test_a_positive_scale_factor_multiplies():
    values = decode_model(INVERTER, _inverter_block(W=0x0BB8, W_SF=0x0002))  # 3000 x 10^2
    assert values["W"] == pytest.approx(300_000.0)
    assert _decode_pv_telemetry(values) == pytest.approx((300.0, 0.0, 300.0))


@pytest.mark.parametrize(("st", "online"), [(1, False), (2, True), (4, True), (5, True), (6, False), (7, False), (8, True), (0xFFFF, True)])
def test_the_inverter_status_says_whether_it_follows_setpoints(st, online):
    assert _decode_online(decode_model(INVERTER, _inverter_block(W=0, W_SF=0, St=st))) is online


def test_unimplemented_markers_decode_to_none():
    assert decode_model(INVERTER, _inverter_block(W=0x8000, W_SF=0))["W"] is None  # int16 marker
    assert decode_model(INVERTER, _inverter_block(W=100, W_SF=0x8000))["W"] is None  # sunssf marker
    assert decode_model(INVERTER, _inverter_block(Hz=0xFFFF, Hz_SF=0xFFFE))["Hz"] is None  # uint16 marker
    assert _decode_scaled(0x8000, 0, signed=True) is None and _decode_scaled(0xFFFF, 0, signed=False) is None
    with pytest.raises(SunSpecFormatError, match="W = None"):
        _decode_pv_telemetry(decode_model(INVERTER, _inverter_block(W=0x8000, W_SF=0)))


def test_a_scale_factor_out_of_range_is_a_format_error_naming_it():
    with pytest.raises(SunSpecFormatError, match="W_SF = 200"):
        decode_model(INVERTER, _inverter_block(W=1, W_SF=200))
    with pytest.raises(SunSpecFormatError, match="needs 50"):
        decode_model(INVERTER, [0] * 10)


def test_a_captured_read_response_frame_is_accepted_and_junk_is_not():
    # tid 1, pid 0, length 7, unit 1, fc 3, 4 bytes: 0x0007 0x0002
    frame = bytes.fromhex("0001 0000 0007 01 03 04 0007 0002".replace(" ", ""))
    assert _parse_mbap(frame, expected_unit=1) == len(frame)
    assert _parse_mbap(frame[:10], expected_unit=1) == 0  # incomplete: wait for more
    assert _parse_mbap(bytes.fromhex("0002 0000 0003 01 83 02".replace(" ", ""))) == 9  # ILLEGAL_ADDRESS
    for junk, field in (
        (b"HTTP/1.1 400 Bad Request\r\n", "protocol id"),
        (bytes.fromhex("0001 0000 0007 01 03 05 0007 0002 00".replace(" ", "")), "byte count"),
        (bytes.fromhex("0001 0000 0003 01 2b 0e 01".replace(" ", "")), "function code 43"),
        (bytes.fromhex("0001 0000 0007 09 03 04 0007 0002".replace(" ", "")), "unit id 9"),
    ):
        with pytest.raises(SunSpecFormatError, match=field):
            _parse_mbap(junk, expected_unit=1)


def test_model_headers_and_the_end_of_the_chain():
    assert _parse_model_header([103, 50], 40002) == (103, 50)
    assert _parse_model_header([0xFFFF, 0], 65000) == (0xFFFF, 0)
    with pytest.raises(SunSpecFormatError, match="runs past register 65535"):
        _parse_model_header([64000, 30000], 40002)


def test_a_pv_limit_is_written_as_percent_of_wmax_then_enabled():
    # 250 kW of WMax 1000 kW at WMaxLimPct_SF -2: 25.00 % -> 2500, then WMaxLim_Ena = 1
    assert _encode_pv_limit(250.0, 1_000_000.0, -2) == [(3, [2500]), (7, [1])]
    assert _encode_pv_limit(2000.0, 1_000_000.0, -2) == [(3, [10000]), (7, [1])]  # clipped to 100 %
    assert _encode_pv_limit(None, 1_000_000.0, -2) == [(7, [0])]


def test_a_battery_setpoint_is_a_zero_width_rate_window():
    # charge 250 kW of WChaMax 500 kW, InOutWRte_SF -2: OutWRte = -50.00 % (0xEC78), InWRte = +50.00 %
    assert _encode_battery_setpoint(-250.0, 500_000.0, -2) == [(10, [0xEC78, 5000]), (3, [3])]
    assert _encode_battery_setpoint(100.0, 500_000.0, -1) == [(10, [200, 0xFF38]), (3, [3])]  # discharge 20.0 %
    assert _encode_battery_setpoint(None, 500_000.0, -2) == [(3, [0])]


def test_battery_telemetry_gives_soc_in_kwh_and_respects_full_and_empty():
    ratings = _decode_ratings({"WRtg": 100_000.0, "WHRtg": 200_000.0, "MaxDisChaRte": 90_000.0}, None, None)
    inverter = decode_model(INVERTER, _inverter_block(W=0xFF9C, W_SF=0x0002))  # -100 x 10^2 W
    storage = {"WChaMax": 80_000.0, "ChaState": 50.0, "ChaSt": 4}
    assert _decode_battery_telemetry(inverter, storage, ratings) == pytest.approx((-10.0, -80.0, 90.0, 100.0))
    assert _decode_battery_telemetry(inverter, {**storage, "ChaSt": CHAST_FULL}, ratings)[1:3] == (0.0, 90.0)
    assert _decode_battery_telemetry(inverter, {**storage, "ChaSt": CHAST_EMPTY}, ratings)[1:3] == (-80.0, 0.0)
    with pytest.raises(SunSpecFormatError, match="ChaState = 250"):
        _decode_battery_telemetry(inverter, {**storage, "ChaState": 250.0}, ratings)


def test_addresses_are_host_port_unit():
    assert _parse_address("127.0.0.1:5020/1") == ("127.0.0.1", 5020, 1)
    assert _parse_address("[::1]:502/247") == ("::1", 502, 247)
    assert _parse_address("inverter-3.park.local:502/3") == ("inverter-3.park.local", 502, 3)
    for bad, why in (("127.0.0.1:5020", "not 'host:port/unit'"), ("h:0/1", "port 0"), ("h:502/248", "unit 248"), (None, "missing")):
        with pytest.raises(ValueError, match=why):
            _parse_address(bad)


# ------------------------------------------------------------ property tests --

_SF = st.integers(min_value=-4, max_value=4)


@given(raw=st.integers(min_value=-0x7FFF, max_value=0x7FFF), sf=_SF)
def test_int16_points_round_trip_with_any_scale_factor(raw, sf):
    value = raw * 10.0**sf
    register = _encode_scaled(value, sf, signed=True)
    assert 0 <= register <= 0xFFFF and register != 0x8000
    assert _decode_scaled(register, sf, signed=True) == pytest.approx(value, rel=1e-12, abs=1e-12)


@given(value=st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), sf=_SF)
def test_a_scaled_value_is_within_half_a_step_or_refused(value, sf):
    try:
        register = _encode_scaled(value, sf, signed=True)
    except SunSpecFormatError as exc:
        assert "does not fit" in str(exc)
        assert abs(value) / 10.0**sf > 0x7FFF - 1
        return
    assert _decode_scaled(register, sf, signed=True) == pytest.approx(value, abs=0.5 * 10.0**sf + 1e-9 * abs(value))


@st.composite
def _model_values(draw, layout=INVERTER):
    """Values representable in ``layout``, each scaled point at a drawn scale factor, some left unimplemented."""
    values: dict = {p.name: draw(_SF) for p in layout.points if p.type == "sunssf"}
    for p in layout.points:
        if p.type in ("sunssf", "pad", "string") or draw(st.booleans()) is False:
            continue
        if p.type == "acc32":
            raw = draw(st.integers(0, 2**32 - 1))
        elif p.type in ("bitfield32", "uint32"):
            raw = draw(st.integers(0, 2**32 - 2))
        elif p.type == "int16":
            raw = draw(st.integers(-0x7FFF, 0x7FFF))
        else:
            raw = draw(st.integers(0, 0xFFFE))
        values[p.name] = raw * 10.0 ** values[p.sf] if p.sf else raw
    return values


@pytest.mark.parametrize("layout", [INVERTER, STORAGE, CONTROLS], ids=lambda m: str(m.model_id))
@settings(max_examples=60)
@given(data=st.data())
def test_whole_models_round_trip_including_negative_values_and_scale_factors(layout, data):
    values = data.draw(_model_values(layout))
    decoded = decode_model(layout, encode_model(layout, values))
    for p in layout.points:
        if p.type in ("pad", "string"):
            continue
        expected = values.get(p.name)
        if expected is None:
            assert decoded[p.name] is None or p.type == "acc32", p.name  # an unused accumulator reads 0
        else:
            assert decoded[p.name] == pytest.approx(expected, rel=1e-12, abs=1e-9), p.name


@given(st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=80))
def test_garbage_registers_raise_nothing_but_the_format_error(registers):
    for layout in (INVERTER, STORAGE, CONTROLS, NAMEPLATE):
        try:
            values = decode_model(layout, registers)
        except SunSpecFormatError:
            continue
        try:
            if layout is INVERTER:
                _decode_pv_telemetry(values)
            if layout is STORAGE:
                _storage_setpoint_kw(values, 100.0)
        except SunSpecFormatError:
            pass


@given(st.binary(max_size=300), st.one_of(st.none(), st.integers(1, 247)))
def test_garbage_bytes_raise_nothing_but_the_format_error(data, unit):
    try:
        used = _parse_mbap(data, unit)
    except SunSpecFormatError:
        return
    assert 0 <= used <= len(data)


@given(p_kw=st.floats(min_value=-600.0, max_value=600.0, allow_nan=False), sf=st.integers(-2, 0))
def test_a_battery_setpoint_reaches_the_device_side_as_written(p_kw, sf):
    rated_w = 500_000.0
    block = encode_model(STORAGE, {"WChaMax": rated_w, "WChaMax_SF": 2, "InOutWRte_SF": sf, "StorCtl_Mod": 0})
    for offset, registers in _encode_battery_setpoint(p_kw, rated_w, sf):
        block[offset : offset + len(registers)] = registers
    seen = _storage_setpoint_kw(decode_model(STORAGE, block), rated_kw=500.0)
    clipped = min(max(p_kw, -500.0), 500.0)
    assert seen == pytest.approx(clipped, abs=0.5 * 10.0**sf / 100 * 500.0 + 1e-9)


@given(p_kw=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1500.0)))
def test_a_pv_limit_reaches_the_device_side_as_written(p_kw):
    settings_block = decode_model(MODELS[121], encode_model(MODELS[121], {"WMax": 1_000_000.0, "WMax_SF": 2}))
    block = encode_model(CONTROLS, {"WMaxLimPct_SF": -2, "WMaxLim_Ena": 0})
    for offset, registers in _encode_pv_limit(p_kw, 1_000_000.0, -2):
        block[offset : offset + len(registers)] = registers
    seen = _pv_setpoint_kw(decode_model(CONTROLS, block), settings_block)
    if p_kw is None:
        assert seen is None
    else:
        assert seen == pytest.approx(min(p_kw, 1000.0), abs=0.05 + 1e-9)  # 0.01 % of 1000 kW, halved


def test_the_device_side_refuses_contradictory_or_out_of_range_windows():
    base = {"WChaMax": 100_000.0, "StorCtl_Mod": 3}
    assert _storage_setpoint_kw({**base, "InWRte": 100.0, "OutWRte": 100.0}, 100.0) is None  # free
    assert _storage_setpoint_kw({**base, "InWRte": 0.0, "OutWRte": 0.0}, 100.0) == 0.0  # hold idle
    assert _storage_setpoint_kw({**base, "InWRte": -20.0, "OutWRte": 50.0}, 100.0) == pytest.approx(20.0)  # at least 20 kW out
    assert _storage_setpoint_kw({**base, "StorCtl_Mod": 2, "OutWRte": -30.0}, 100.0) == pytest.approx(-30.0)  # forced charge
    with pytest.raises(SunSpecFormatError, match="lies above"):
        _storage_setpoint_kw({**base, "InWRte": -50.0, "OutWRte": 10.0}, 100.0)
    with pytest.raises(SunSpecFormatError, match="InWRte = 150"):
        _storage_setpoint_kw({**base, "InWRte": 150.0, "OutWRte": 0.0}, 100.0)


# ------------------------------------------------------------ loopback peers --


@pytest.fixture(scope="module")
def spec() -> ParkSpec:
    full = build_park(seed=3, n_enterprises=5)
    # Only what SunSpec serves, so a service built on this park sees no other devices.
    return dataclasses.replace(full, devices=[d for d in full.devices if isinstance(d, (PV, Battery))])


@dataclasses.dataclass
class Rig:
    clock: ManualClock
    park: SimulatedPark
    server: SunSpecServer
    adapter: ModbusAdapter
    devices: list


def _modbus_devices(spec: ParkSpec, server: SunSpecServer) -> list:
    return [d.model_copy(update={"adapter": "modbus", "address": server.address_of(d.id)}) for d in spec.devices]


async def _rig(spec: ParkSpec, **server_kwargs) -> Rig:
    clock = ManualClock(NOON)
    park = SimulatedPark(spec, NOON, seed=3)
    server = SunSpecServer(park, clock, spec.devices, **server_kwargs)
    await server.start()
    devices = _modbus_devices(spec, server)
    adapter = ModbusAdapter(devices, clock=clock, timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2)
    return Rig(clock, park, server, adapter, devices)


@pytest.fixture
async def rig(spec):
    rig = await _rig(spec)
    await rig.adapter.connect()
    yield rig
    await rig.adapter.close()
    await rig.server.stop()


def _battery(spec: ParkSpec) -> Battery:
    return next(d for d in spec.devices if isinstance(d, Battery))


def _pv(spec: ParkSpec) -> PV:
    return max((d for d in spec.devices if isinstance(d, PV)), key=lambda d: d.rated_kw)


def _resolution_kw(rated_kw: float) -> float:
    """Half a step of W at the scale factor the simulator picks for this rating [kW]."""
    sf = -2
    while rated_kw * 1250.0 / 10.0**sf > 0x7FFF:
        sf += 1
    return 0.5 * 10.0**sf / 1000.0 + 1e-9


async def _samples(adapter: ModbusAdapter) -> dict:
    return {s.device_id: s for s in await adapter.read_telemetry()}


async def _until(adapter: ModbusAdapter, condition, what: str, tries: int = 100) -> dict:
    """Poll until ``condition(samples)``; backoffs run on wall time, so wait a little between polls."""
    for _ in range(tries):
        samples = await _samples(adapter)
        if condition(samples):
            return samples
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


async def test_is_an_adapter_and_refuses_calls_before_connect_and_after_close(spec):
    adapter = ModbusAdapter([], timeout_s=0.2)
    assert isinstance(adapter, Adapter) and adapter.name == "modbus"
    with pytest.raises(AdapterError, match="before connect"):
        await adapter.read_telemetry()
    await adapter.connect()
    assert await adapter.read_telemetry() == []
    await adapter.close()
    await adapter.close()
    for call in (adapter.read_telemetry(), adapter.write_setpoints([]), adapter.connect(), adapter.add_device(_pv(spec))):
        with pytest.raises(AdapterError, match="after close"):
            await call


async def test_add_device_refuses_what_it_cannot_serve(spec):
    adapter = ModbusAdapter([], timeout_s=0.2)
    with pytest.raises(AdapterError, match="address is missing"):
        await adapter.add_device(_pv(spec).model_copy(update={"adapter": "modbus"}))
    with pytest.raises(AdapterError, match="address 'inverter7'"):
        await adapter.add_device(_pv(spec).model_copy(update={"address": "inverter7"}))
    load = InterruptibleLoad(id="e01-load9", enterprise_id="e01", rated_kw=100.0, max_curtail_kw=50.0, address="h:502/1")
    with pytest.raises(AdapterError, match="kind 'interruptible_load'"):
        await adapter.add_device(load)
    assert adapter.device_ids == []
    with pytest.raises(ValueError, match="timeout_s"):
        ModbusAdapter([], timeout_s=0)


async def test_telemetry_comes_in_with_the_parks_values_units_and_signs(rig, spec):
    bat = _battery(spec)
    rig.park.apply_setpoints([Setpoint(device_id=bat.id, p_kw=-bat.rated_kw / 2, ts=NOON)])  # charging: negative
    rig.clock.advance(60)
    samples = await _samples(rig.adapter)
    expected = {s.device_id: s for s in rig.park.telemetry(rig.clock.now())}
    assert set(samples) == {d.id for d in spec.devices}
    for device in spec.devices:
        got, want = samples[device.id], expected[device.id]
        assert got.ts == rig.clock.now()
        assert got.p_kw == pytest.approx(want.p_kw, abs=_resolution_kw(device.rated_kw))
        if isinstance(device, Battery):
            assert got.soc_kwh == pytest.approx(want.soc_kwh, abs=0.00005 * device.capacity_kwh + 1e-9)
            assert (got.p_min_kw, got.p_max_kw) == pytest.approx((-device.rated_kw, device.rated_kw))
        else:
            assert got.soc_kwh is None and got.p_kw > 0 and (got.p_min_kw, got.p_max_kw) == (0.0, got.p_kw)
    assert samples[bat.id].p_kw == pytest.approx(-bat.rated_kw / 2, abs=_resolution_kw(bat.rated_kw))
    assert rig.adapter.malformed_frames == 0


async def test_setpoints_go_out_are_seen_by_the_peer_and_move_the_devices(rig, spec):
    bat, pv = _battery(spec), _pv(spec)
    await _samples(rig.adapter)
    now = rig.clock.now()
    await rig.adapter.write_setpoints([
        Setpoint(device_id=bat.id, p_kw=-0.4 * bat.rated_kw, ts=now),
        Setpoint(device_id=pv.id, p_kw=0.1 * pv.rated_kw, ts=now),
        Setpoint(device_id="nobody-bat9", p_kw=1.0, ts=now),
    ])  # fmt: skip
    assert rig.server.setpoint_kw(bat.id) == pytest.approx(-0.4 * bat.rated_kw, abs=0.0001 * bat.rated_kw)
    assert rig.server.setpoint_kw(pv.id) == pytest.approx(0.1 * pv.rated_kw, abs=0.0001 * pv.rated_kw)
    assert (rig.adapter.unknown_setpoints, rig.adapter.dropped_setpoints, rig.adapter.rejected_setpoints) == (1, 0, 0)
    rig.clock.advance(30)
    samples = await _samples(rig.adapter)
    assert samples[bat.id].p_kw == pytest.approx(-0.4 * bat.rated_kw, abs=2 * _resolution_kw(bat.rated_kw) + 0.0001 * bat.rated_kw)
    assert samples[pv.id].p_kw == pytest.approx(0.1 * pv.rated_kw, abs=2 * _resolution_kw(pv.rated_kw) + 0.0001 * pv.rated_kw)
    assert decode_model(INVERTER, _model_registers(rig.server, pv.id, 103))["St"] == 5  # THROTTLED

    await rig.adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=0.25 * bat.rated_kw, ts=rig.clock.now())])
    rig.clock.advance(30)
    assert (await _samples(rig.adapter))[bat.id].p_kw == pytest.approx(0.25 * bat.rated_kw, abs=0.001 * bat.rated_kw)

    await rig.adapter.write_setpoints([Setpoint(device_id=d.id, p_kw=None, ts=rig.clock.now()) for d in (bat, pv)])
    assert rig.server.setpoint_kw(bat.id) is None and rig.server.setpoint_kw(pv.id) is None
    rig.clock.advance(30)
    samples = await _samples(rig.adapter)
    assert samples[bat.id].p_kw == 0.0 and samples[pv.id].p_kw > 0.5 * pv.rated_kw * 0.1


def _model_start(server: SunSpecServer, device_id: str, model_id: int) -> int:
    """Registers from "SunS" to the model's ID register, found by walking the chain [unitless]."""
    registers = server.registers(device_id)
    i = 2
    while registers[i] != 0xFFFF:
        if registers[i] == model_id:
            return i
        i += 2 + registers[i + 1]
    raise AssertionError(f"model {model_id} not served")


def _model_registers(server: SunSpecServer, device_id: str, model_id: int) -> list[int]:
    """The registers of one model as the server holds them."""
    i = _model_start(server, device_id, model_id)
    registers = server.registers(device_id)
    return registers[i + 2 : i + 2 + registers[i + 1]]


@pytest.mark.parametrize("base_address", [0, 50000])
async def test_discovery_finds_sunspec_at_the_other_base_addresses(spec, base_address):
    rig = await _rig(spec, base_address=base_address)
    try:
        await rig.adapter.connect()
        samples = await _samples(rig.adapter)
        assert set(samples) == {d.id for d in spec.devices}
        bat = _battery(spec)
        await rig.adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=-10.0, ts=rig.clock.now())])
        assert rig.server.setpoint_kw(bat.id) == pytest.approx(-10.0, abs=0.00005 * bat.rated_kw)  # 0.01 % steps
    finally:
        await rig.adapter.close()
        await rig.server.stop()


async def test_a_dropped_inverter_goes_missing_alone_and_is_reconnected_when_back(rig, spec):
    bat = _battery(spec)
    others = {d.id for d in spec.devices} - {bat.id}
    assert set(await _samples(rig.adapter)) == others | {bat.id}
    port = rig.server.port_of(bat.id)

    await rig.server.stop_device(bat.id)
    for _ in range(3):  # while it is gone its samples stop (so it goes stale) and the others keep coming
        rig.clock.advance(1)
        samples = await _samples(rig.adapter)
        assert set(samples) == others and all(s.ts == rig.clock.now() for s in samples.values())
    await rig.adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=-5.0, ts=rig.clock.now())])
    assert rig.adapter.dropped_setpoints == 1 and rig.server.setpoint_kw(bat.id) is None

    await rig.server.start_device(bat.id)
    assert rig.server.port_of(bat.id) == port
    rig.clock.advance(1)
    samples = await _until(rig.adapter, lambda s: bat.id in s, "the battery is back")
    assert samples[bat.id].ts == rig.clock.now() and set(samples) == others | {bat.id}
    await rig.adapter.write_setpoints([Setpoint(device_id=bat.id, p_kw=-5.0, ts=rig.clock.now())])
    assert rig.server.setpoint_kw(bat.id) == pytest.approx(-5.0, abs=0.00005 * bat.rated_kw)
    assert rig.adapter.malformed_frames == 0, "a dropped peer is not garbage"


async def test_a_device_the_park_takes_offline_is_left_out_without_counting_garbage(rig, spec):
    pv = _pv(spec)
    rig.park.set_online(pv.id, False)
    rig.clock.advance(1)
    samples = await _samples(rig.adapter)
    assert pv.id not in samples and len(samples) == len(spec.devices) - 1
    await rig.adapter.write_setpoints([Setpoint(device_id=pv.id, p_kw=1.0, ts=rig.clock.now())])
    assert rig.adapter.rejected_setpoints == 1  # GATEWAY_NO_RESPONSE
    rig.park.set_online(pv.id, True)
    rig.clock.advance(1)
    assert pv.id in await _samples(rig.adapter)
    assert rig.adapter.malformed_frames == 0


async def test_an_out_of_range_write_is_refused_by_the_device_and_changes_nothing(rig, spec):
    pv = _pv(spec)
    pct_address = 40000 + 2 + _model_start(rig.server, pv.id, 123) + CONTROLS.point("WMaxLimPct").offset
    client = AsyncModbusTcpClient("127.0.0.1", port=rig.server.port_of(pv.id), timeout=0.5, retries=0, reconnect_delay=0)
    try:
        assert await client.connect()
        response = await client.write_registers(pct_address, [20000], device_id=1)  # 200.00 % of WMax
        assert response.isError() and response.exception_code == 3  # ILLEGAL_VALUE
        response = await client.write_registers(pct_address - 3 + CONTROLS.point("WMaxLimPct_SF").offset, [0], device_id=1)
        assert response.isError() and response.exception_code == 2  # a scale factor is read-only
    finally:
        client.close()
    assert rig.server.setpoint_kw(pv.id) is None and rig.server.writes(pv.id) == 0
    assert decode_model(CONTROLS, _model_registers(rig.server, pv.id, 123))["WMaxLimPct"] == 100.0


_HTTP_JUNK = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
_MBAP_JUNK = bytes.fromhex("0001 0000 0004 01 2b 0e 01".replace(" ", ""))  # a valid header around a PDU nobody asked for


async def _raw_peer(reply: bytes | None) -> tuple[asyncio.base_events.Server, list[int]]:
    """A raw TCP peer answering every request with ``reply`` (None: never answering)."""
    connections: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while await reader.read(260):
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0), connections


async def _not_sunspec_peer() -> ModbusTcpServer:
    """A healthy Modbus server whose registers at 0, 40000 and 50000 are not "SunS"."""
    blocks = [SimData(base, values=[0x1234] * 8, datatype=DataType.REGISTERS) for base in (0, 40000, 50000)]
    server = ModbusTcpServer([SimDevice(id=1, simdata=blocks)], address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    return server


@pytest.mark.parametrize("junk_reply", [_HTTP_JUNK, _MBAP_JUNK], ids=["http", "mbap-shaped"])
async def test_garbage_is_counted_and_survived_and_the_good_devices_keep_reporting(rig, spec, junk_reply):
    junk, connections = await _raw_peer(junk_reply)
    plain = await _not_sunspec_peer()
    junk_port = junk.sockets[0].getsockname()[1]
    plain_port = plain.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        await rig.adapter.add_device(PV(id="e01-pv8", enterprise_id="e01", rated_kw=100.0, address=f"127.0.0.1:{junk_port}/1"))
        await rig.adapter.add_device(PV(id="e01-pv9", enterprise_id="e01", rated_kw=100.0, address=f"127.0.0.1:{plain_port}/1"))
        good = {d.id for d in spec.devices}
        for _ in range(3):
            rig.clock.advance(1)
            assert set(await _samples(rig.adapter)) == good
            await asyncio.sleep(0.25)  # past the backoff, so the bad peers are tried again
        assert rig.adapter.malformed_frames >= 4  # at least twice each: counted every time, never fatal
        assert len(connections) >= 2, "the junk peer's connection was dropped and retried"
        await rig.adapter.write_setpoints([Setpoint(device_id="e01-pv9", p_kw=1.0, ts=rig.clock.now())])
        assert rig.adapter.malformed_frames >= 5
    finally:
        junk.close()
        await junk.wait_closed()
        await plain.shutdown()


async def test_a_silent_peer_times_out_is_left_out_and_is_not_garbage(rig, spec):
    silent, connections = await _raw_peer(None)
    port = silent.sockets[0].getsockname()[1]
    adapter = ModbusAdapter(
        [*rig.devices, PV(id="e01-pv8", enterprise_id="e01", rated_kw=100.0, address=f"127.0.0.1:{port}/1")],
        clock=rig.clock, timeout_s=0.3, backoff_initial_s=0.05, backoff_max_s=0.1,
    )  # fmt: skip
    try:
        await adapter.connect()
        for _ in range(2):
            assert set(await _samples(adapter)) == {d.id for d in spec.devices}
            await asyncio.sleep(0.15)
        assert len(connections) == 2, "the timed-out connection was dropped and opened again after the backoff"
        assert adapter.malformed_frames == 0
    finally:
        await adapter.close()
        silent.close()
        await silent.wait_closed()


async def test_the_plant_service_ingests_sunspec_telemetry_and_dispatches_through_it(spec, tmp_path):
    clock = ManualClock(NOON)
    park = SimulatedPark(spec, NOON, seed=3)
    server = SunSpecServer(park, clock, spec.devices)
    await server.start()
    devices = _modbus_devices(spec, server)
    store = SqliteStore(tmp_path / "vpp.sqlite3")
    await store.open()
    for enterprise in spec.enterprises:
        await store.put_enterprise(enterprise)
    for device in devices:
        await store.put_device(device)
    adapter = ModbusAdapter(devices, clock=clock, timeout_s=2.0)
    service = PlantService(store, {"modbus": adapter}, clock, settings=dataclasses.replace(SETTINGS, schedule_interval_s=0))
    try:
        await service.load()  # connects the adapter
        clock.advance(1)
        assert await service.poll_telemetry() == len(devices)
        stored = await store.latest_telemetry()
        assert set(stored) == {d.id for d in devices} and all(s.ts == clock.now() for s in stored.values())
        bat = _battery(spec)
        assert stored[bat.id].soc_kwh == pytest.approx(park.soc_kwh(bat.id), abs=0.0001 * bat.capacity_kwh)

        delta_kw = round(0.5 * service.plant()["available_up_kw"], 1)
        assert delta_kw > 100, "the batteries offer upward flexibility"
        start = clock.now()
        await service.submit_instruction(
            DispatchInstruction(id="i-modbus", kind="delta", start=start, end=start + timedelta(minutes=15), delta_kw=delta_kw)
        )
        for _ in range(30):
            clock.advance(2)
            await service.poll_telemetry()
            await service.control_step()
        sent = await store.setpoints_for("i-modbus")
        assert sent, "the service sent set-points"
        last = {sp.device_id: sp.p_kw for sp in sent}
        for device_id, p_kw in last.items():
            assert server.setpoint_kw(device_id) == pytest.approx(p_kw, abs=0.0001 * 2000 + 0.05), device_id
        _, state = await service.instruction_view("i-modbus")
        assert state.delivered_kw == pytest.approx(delta_kw, rel=0.05), "the park delivers through Modbus"
        assert adapter.malformed_frames == 0
    finally:
        await service.stop()  # closes the adapter
        await server.stop()
        await store.close()
