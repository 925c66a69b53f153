"""IEC 60870-5-104 outstation against a real c104 master on loopback, with the real service on SQLite.

The pure mapping (set-point -> instruction, plant -> point values, APCI check)
is tested on its own first, then the whole link: master <-> outstation <->
``PlantService`` driving the simulated park with a manual clock.
"""

import asyncio
import itertools
import math
import socket
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.base import GridLink
from adapters.iec104 import (
    Iec104Outstation,
    Iec104Points,
    PointValue,
    _check_apci,
    _encode_points,
    _parse_setpoint,
    _reachable_kw,
)
from simulators.iec104_master import Iec104Master, _is_refusal
from tests.vpp.harness import NOON, make_plant
from vpp.clock import ManualClock
from vpp.model import DispatchStatus, InstructionKind

WAIT_S = 20.0  # deadline for something the link must do eventually (not a speed requirement) [s]

# ------------------------------------------------------------------ pure mapping ----

kw = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
headroom_kw = st.floats(min_value=0, max_value=1e5, allow_nan=False)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
)


@given(net=kw, up=headroom_kw, down=headroom_kw, share=st.floats(0, 1), at=instants, hold_s=st.floats(1, 3600))
def test_a_reachable_setpoint_becomes_a_target_instruction_for_the_hold_time(net, up, down, share, at, hold_s):
    plant = {"net_kw": net, "available_up_kw": up, "available_down_kw": down}
    low, high = _reachable_kw(plant)
    value = min(max(low + share * (high - low), low), high)  # the product may overshoot by an ulp
    instruction = _parse_setpoint(
        value, common_address=7, ioa=0x6201, received_at=at, hold_s=hold_s, reachable_kw=(low, high), tolerance_kw=0.0
    )
    start_ms = int((at - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(milliseconds=1))
    assert instruction.kind is InstructionKind.TARGET and instruction.delta_kw is None
    assert instruction.target_kw == pytest.approx(value, abs=5e-4)
    assert instruction.id == f"iec104-7-25089-{start_ms}"
    assert instruction.start <= at < instruction.start + timedelta(milliseconds=1)
    assert (instruction.end - instruction.start).total_seconds() == pytest.approx(hold_s, abs=1e-5)
    assert instruction.source == "iec104"
    again = _parse_setpoint(
        value, common_address=7, ioa=0x6201, received_at=at, hold_s=hold_s, reachable_kw=(low, high), tolerance_kw=0.0
    )
    assert again == instruction, "the same command at the same instant is the same instruction"


@given(net=kw, up=headroom_kw, down=headroom_kw, beyond=st.floats(1e-3, 1e7), above=st.booleans())
def test_an_unreachable_setpoint_is_refused_naming_the_value(net, up, down, beyond, above):
    low, high = _reachable_kw({"net_kw": net, "available_up_kw": up, "available_down_kw": down})
    value = high + 1.0 + beyond if above else low - 1.0 - beyond
    with pytest.raises(ValueError, match="outside the reachable range"):
        _parse_setpoint(value, common_address=1, ioa=1, received_at=NOON, hold_s=60, reachable_kw=(low, high), tolerance_kw=1.0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_setpoint_that_is_not_a_number_is_refused(value):
    with pytest.raises(ValueError, match="not a finite number"):
        _parse_setpoint(value, common_address=1, ioa=1, received_at=NOON, hold_s=60, reachable_kw=(-1e9, 1e9), tolerance_kw=1.0)


@given(net=kw, up=headroom_kw, down=headroom_kw, online=st.integers(0, 1000),
       requested=st.none() | kw, delivered=st.none() | kw)
def test_plant_totals_map_onto_the_points(net, up, down, online, requested, delivered):
    plant = {"net_kw": net, "available_up_kw": up, "available_down_kw": down, "devices_online": online}
    values = _encode_points(plant, requested, delivered)
    assert set(values) == {"net_kw", "available_up_kw", "available_down_kw", "agc_target_kw", "delivered_kw", "remote_control_accepted"}
    for key in ("net_kw", "available_up_kw", "available_down_kw"):
        assert values[key] == PointValue(plant[key], valid=online > 0)
    assert values["agc_target_kw"] == (PointValue(requested) if requested is not None else PointValue(0.0, valid=False))
    assert values["delivered_kw"] == (PointValue(delivered) if delivered is not None else PointValue(0.0, valid=False))
    assert values["remote_control_accepted"] == PointValue(online > 0)


def test_a_plant_without_numbers_gives_invalid_points_not_zeros_that_look_real():
    values = _encode_points({"net_kw": math.nan, "devices_online": 3}, None, math.inf)
    assert values["net_kw"] == PointValue(0.0, valid=False)
    assert values["available_up_kw"] == PointValue(0.0, valid=False)
    assert values["delivered_kw"] == PointValue(0.0, valid=False)


# Frames captured on loopback between c104 2.2.1 peers, and hand-made broken ones.
GOOD_FRAMES = {
    "680407000000": "U",  # STARTDT act
    "68040b000000": "U",  # STARTDT con
    "680401000a00": "S",  # S-frame acknowledging up to 5
    "680e0000000064010600ffff00000014": "I",  # C_IC_NA_1 general interrogation, CA 0xffff
    "681202000600320106000100b90b000000a04000": "I",  # C_SE_NC_1 5.0 kW to IOA 3001
}
BAD_FRAMES = {
    "68": "shorter than the 6-byte APCI",
    "00ff676172626167": "start byte",
    "6805070000000000": "length field",
    "680e00000000990106000100b90b0000": "type id 153",  # unknown type id
    "6806000000006401": "no complete ASDU header",
    "680403000000": "exactly one function",  # U-frame naming no function
    "68040f000000": "exactly one function",  # U-frame naming two
    "680601000a000000": "must be 6 bytes",  # S-frame with a tail
}


@pytest.mark.parametrize(("frame", "kind"), GOOD_FRAMES.items())
def test_captured_frames_pass_the_apci_check(frame, kind):
    assert _check_apci(bytes.fromhex(frame)) == kind


@pytest.mark.parametrize(("frame", "reason"), BAD_FRAMES.items())
def test_broken_frames_fail_the_apci_check_naming_the_field(frame, reason):
    with pytest.raises(ValueError, match=reason):
        _check_apci(bytes.fromhex(frame))


@given(st.binary(max_size=300))
def test_any_bytes_either_pass_or_raise_value_error(data):
    try:
        assert _check_apci(data) in {"I", "S", "U"}
    except ValueError:
        pass


@pytest.mark.parametrize(
    ("frame", "refused"),
    [
        ("681200000400320147000100026200000000c84200", True),  # ACT_CON negative
        ("68120200040032012f000100026200000000c84200", True),  # cause 47: unknown object address
        ("681200000400320107000100026200000000c84200", False),  # ACT_CON positive
        ("681200000400320147000100036200000000c84200", False),  # another object address
        ("680401000a00", False),  # S-frame
    ],
)
def test_the_master_recognises_a_refused_setpoint(frame, refused):
    assert _is_refusal(bytes.fromhex(frame), type_id=50, ioa=0x6202) is refused


def test_a_point_list_with_a_repeated_or_impossible_address_is_refused():
    with pytest.raises(ValueError, match="not all different"):
        Iec104Points(net_kw=0x4002)
    with pytest.raises(ValueError, match="agc_setpoint_kw 0"):
        Iec104Points(agc_setpoint_kw=0)


def test_is_a_grid_link():
    link = Iec104Outstation(ManualClock(NOON))  # nothing is opened before start
    assert isinstance(link, GridLink) and link.name == "iec104" and link.port == 0


# -------------------------------------------------------------- the live link ----


@pytest.fixture
async def plant(tmp_path):
    plant = await make_plant(tmp_path)
    yield plant
    await plant.service.stop()
    await plant.store.close()


async def _start_outstation(plant, **kwargs) -> Iec104Outstation:
    options = {"update_interval_s": 0.05, "cyclic_interval_s": 1.0, "agc_hold_s": 60.0, "command_timeout_s": 10.0}
    link = Iec104Outstation(plant.clock, **(options | kwargs))
    await link.start(plant.service)
    return link


@pytest.fixture
async def outstation(plant):
    link = await _start_outstation(plant)
    yield link
    await link.stop()


@pytest.fixture
async def master(outstation):
    master = Iec104Master(port=outstation.port, command_timeout_s=10.0)
    await master.start(WAIT_S)
    yield master
    await master.stop()


def _f32(value: float) -> float:
    """What a value becomes through an IEEE 754 short float (M_ME_NC_1, C_SE_NC_1)."""
    return float(np.float32(value))


def _has(*names: str):
    return lambda readings: all(name in readings for name in names)


async def _iec104_instructions(plant) -> list:
    return [(i, s) for i, s in await plant.store.list_instructions() if i.source == "iec104"]


async def _eventually(predicate, timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_the_master_reads_the_plant_totals(plant, outstation, master):
    readings = await master.wait_for(_has("net_kw", "available_up_kw", "available_down_kw", "remote_control_accepted"), WAIT_S)
    totals = plant.service.plant()
    assert outstation.port > 0
    for key in ("net_kw", "available_up_kw", "available_down_kw"):
        assert readings[key].value == _f32(totals[key]), key
        assert readings[key].valid and readings[key].cot == "INTERROGATED_BY_STATION"
    assert totals["available_up_kw"] > 0 and totals["available_down_kw"] > 0
    assert readings["remote_control_accepted"].value is True
    # No instruction is running: the AGC target and delivered points say "invalid", not 0.
    assert not readings["agc_target_kw"].valid and not readings["delivered_kw"].valid


async def test_values_are_sent_periodically(plant, outstation, master):
    await master.wait_for(_has("net_kw"), WAIT_S)
    await _eventually(lambda: master.received("PERIODIC") >= 12)  # two cycles of the six monitoring points
    readings = master.readings()
    assert readings["net_kw"].value == _f32(plant.service.plant()["net_kw"])


async def test_a_change_beyond_the_deadband_is_sent_spontaneously(plant):
    link = await _start_outstation(plant, cyclic_interval_s=0)  # no periodic sends: only a change can bring news
    master = Iec104Master(port=link.port, command_timeout_s=10.0)
    try:
        await master.start(WAIT_S)
        before = (await master.wait_for(_has("net_kw", "available_up_kw", "remote_control_accepted"), WAIT_S))["net_kw"]
        largest = max(plant.spec.devices, key=lambda d: abs(plant.park.power_kw(d.id)))
        plant.park.set_online(largest.id, False)
        await plant.run(12)  # past stale_after_s: the device leaves the totals
        after_kw = plant.service.plant()["net_kw"]
        assert abs(after_kw - before.value) > 100
        reading = (await master.wait_for(lambda r: r["net_kw"].value == _f32(after_kw), WAIT_S))["net_kw"]
        assert reading.cot == "SPONTANEOUS"
        assert master.received("PERIODIC") == 0
    finally:
        await master.stop()
        await link.stop()


async def test_a_setpoint_becomes_an_active_target_instruction(plant, outstation, master):
    net_kw = plant.service.plant()["net_kw"]
    target_kw = net_kw + 150.0
    ack = await master.send_setpoint(target_kw)
    assert ack.accepted
    (instruction, state), = await _iec104_instructions(plant)  # stored before the confirmation went out
    assert instruction.kind is InstructionKind.TARGET
    assert instruction.target_kw == pytest.approx(_f32(target_kw), abs=5e-4)
    assert instruction.start == plant.clock.now() and instruction.end == plant.clock.now() + timedelta(seconds=60)
    assert instruction.id == outstation.last_instruction_id and instruction.id.startswith("iec104-1-25089-")
    await plant.run(30)
    _, state = await plant.service.instruction_view(instruction.id)
    assert state.status is DispatchStatus.ACTIVE
    assert plant.service.plant()["net_kw"] == pytest.approx(target_kw, abs=10.0)
    # The master sees the target followed and the delivered change, sent because they changed.
    readings = await master.wait_for(
        lambda r: "agc_target_kw" in r and r["agc_target_kw"].valid and r["delivered_kw"].valid
        and r["delivered_kw"].value == _f32(state.delivered_kw), WAIT_S
    )
    assert readings["agc_target_kw"].value == _f32(instruction.target_kw)
    assert readings["agc_target_kw"].cot in {"SPONTANEOUS", "PERIODIC"}
    assert state.delivered_kw == pytest.approx(150.0, abs=10.0)
    # Net power moved by ~150 kW, far beyond the deadband: a spontaneous update carries it.
    moved = await master.wait_for(lambda r: r["net_kw"].value == _f32(plant.service.plant()["net_kw"]), WAIT_S)
    assert moved["net_kw"].cot in {"SPONTANEOUS", "PERIODIC"}


async def test_a_newer_setpoint_supersedes_the_previous_one(plant, outstation, master):
    net_kw = plant.service.plant()["net_kw"]
    assert (await master.send_setpoint(net_kw + 100.0)).accepted
    first_id = outstation.last_instruction_id
    await plant.run(10)
    assert (await master.send_setpoint(net_kw - 100.0)).accepted
    second_id = outstation.last_instruction_id
    assert second_id != first_id
    await plant.run(30)
    first, first_state = await plant.service.instruction_view(first_id)
    second, second_state = await plant.service.instruction_view(second_id)
    assert second.start > first.start
    assert first_state.status is DispatchStatus.COMPLETED and f"superseded by {second_id}" in first_state.message
    assert second_state.status is DispatchStatus.ACTIVE
    assert plant.service.plant()["net_kw"] == pytest.approx(net_kw - 100.0, abs=10.0)


async def test_a_setpoint_lapses_when_no_new_one_comes_within_the_hold_time(plant, outstation, master):
    assert (await master.send_setpoint(plant.service.plant()["net_kw"] + 80.0)).accepted
    instruction_id = outstation.last_instruction_id
    await plant.run(58)
    assert (await plant.service.instruction_view(instruction_id))[1].status is DispatchStatus.ACTIVE
    await plant.run(4)
    _, state = await plant.service.instruction_view(instruction_id)
    assert state.status is DispatchStatus.COMPLETED and state.message == "window ended"
    readings = await master.wait_for(lambda r: not r["agc_target_kw"].valid, WAIT_S)
    assert not readings["delivered_kw"].valid


async def test_nan_and_unreachable_setpoints_get_a_negative_confirmation_and_are_counted(plant, outstation, master):
    totals = plant.service.plant()
    too_high_kw = totals["net_kw"] + totals["available_up_kw"] + 1000.0
    too_low_kw = totals["net_kw"] - totals["available_down_kw"] - 1000.0
    for value in (math.nan, too_high_kw, too_low_kw, math.inf):
        ack = await master.send_setpoint(value)
        assert not ack.accepted, value
    assert outstation.malformed_frames == 4
    assert outstation.setpoints_rejected == 4 and outstation.setpoints_accepted == 0
    assert await _iec104_instructions(plant) == []
    # The link still takes a good one.
    assert (await master.send_setpoint(totals["net_kw"] + 10.0)).accepted
    assert len(await _iec104_instructions(plant)) == 1


async def test_the_master_disconnected_and_reconnected_reads_again(plant, outstation, master):
    await master.wait_for(_has("net_kw"), WAIT_S)
    sent, interrogated = master.interrogations_sent, master.received("INTERROGATED_BY_STATION")
    assert interrogated == 6, "one general interrogation answered with all six monitoring points"
    await master.disconnect()
    await _eventually(lambda: not master.connected)
    master.clear_readings()
    await master.connect(WAIT_S)
    readings = await master.wait_for(_has("net_kw", "available_up_kw", "available_down_kw"), WAIT_S)
    await _eventually(lambda: master.received("INTERROGATED_BY_STATION") == 2 * interrogated)
    assert master.interrogations_sent == sent + 1
    assert readings["net_kw"].value == _f32(plant.service.plant()["net_kw"])
    assert (await master.send_setpoint(plant.service.plant()["net_kw"] + 20.0)).accepted


async def test_the_master_reconnects_by_itself_to_a_restarted_outstation(plant, outstation, master):
    await master.wait_for(_has("net_kw"), WAIT_S)
    port = outstation.port
    await outstation.stop()
    await _eventually(lambda: not master.connected)
    master.clear_readings()
    restarted = await _start_outstation(plant, port=port)
    try:
        assert restarted.port == port
        await master.wait_connected(WAIT_S)
        readings = await master.wait_for(_has("net_kw"), WAIT_S)
        assert readings["net_kw"].value == _f32(plant.service.plant()["net_kw"])
        assert (await master.send_setpoint(plant.service.plant()["net_kw"] + 30.0)).accepted
        assert restarted.setpoints_accepted == 1
    finally:
        await restarted.stop()


def _send_raw(port: int, *frames: bytes, listen_s: float = 1.0) -> bytes:
    """A raw TCP client: send each frame, then collect what comes back for ``listen_s`` or until closed [s]."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=listen_s) as raw:
        for frame in frames:
            raw.sendall(frame)
        deadline = time.monotonic() + listen_s  # after STARTDT the outstation keeps sending cyclic values
        try:
            while time.monotonic() < deadline and (chunk := raw.recv(4096)):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return received


async def test_the_outstation_survives_garbage_and_counts_what_it_can_see(plant, outstation, master):
    await master.wait_for(_has("net_kw"), WAIT_S)
    garbage = [
        (b"\x00\xffgarbage\r\n" * 20,),  # no start byte at all: lib60870 drops the connection unseen
        (b"\x68\xff" + b"\x01" * 300,),  # length beyond an APDU
        (bytes(range(256)) * 4,),
        (bytes.fromhex("680407000000"), bytes.fromhex("680e00000000990106000100b90b0000")),  # STARTDT, unknown type
        (bytes.fromhex("680407000000"), bytes.fromhex("681200000000320106000700b90b000000a04000")),  # unknown CA
    ]
    for frames in garbage:
        await asyncio.to_thread(_send_raw, outstation.port, *frames)
    # Seen: the over-long frame (cut to its start byte), the unknown type id, the unknown common address.
    await _eventually(lambda: outstation.malformed_frames >= 3)
    assert outstation.running
    # The real master is unaffected.
    assert await master.interrogate()
    assert (await master.send_setpoint(plant.service.plant()["net_kw"] + 40.0)).accepted
    assert outstation.setpoints_accepted == 1


async def test_a_setpoint_to_an_unknown_address_is_refused_and_counted(plant, outstation):
    stray = Iec104Master(port=outstation.port, points=Iec104Points(agc_setpoint_kw=0x6202), command_timeout_s=10.0)
    await stray.start(WAIT_S)
    try:
        await stray.send_setpoint(plant.service.plant()["net_kw"])
        # The master sees the refusal (c104's own verdict may arrive as positive: see simulators.iec104_master).
        await _eventually(lambda: stray.refusals >= 1)
    finally:
        await stray.stop()
    await _eventually(lambda: outstation.malformed_frames >= 1)
    assert outstation.setpoints_accepted == 0
    assert await _iec104_instructions(plant) == []


async def test_a_store_failure_answers_negatively_and_the_link_goes_on(plant, outstation, master):
    await plant.store.close()
    ack = await master.send_setpoint(plant.service.plant()["net_kw"] + 10.0)
    assert not ack.accepted
    assert outstation.setpoints_rejected == 1 and outstation.malformed_frames == 0
    await plant.store.open()
    assert (await master.send_setpoint(plant.service.plant()["net_kw"] + 10.0)).accepted
    assert len(await _iec104_instructions(plant)) == 1


async def test_time_tagged_points_carry_the_measurement_time(plant):
    link = await _start_outstation(plant, time_tagged=True)
    master = Iec104Master(port=link.port, time_tagged=True, command_timeout_s=10.0)
    try:
        await master.start(WAIT_S)
        readings = await master.wait_for(_has("net_kw", "remote_control_accepted"), WAIT_S)
        assert readings["net_kw"].value == _f32(plant.service.plant()["net_kw"])
        assert readings["net_kw"].recorded_at == NOON  # the plant's measurement time, not the wall clock
        assert readings["remote_control_accepted"].recorded_at == NOON
        ack = await master.send_setpoint(plant.service.plant()["net_kw"] - 50.0)  # C_SE_TC_1
        assert ack.accepted
        (instruction, _), = await _iec104_instructions(plant)
        assert instruction.target_kw == pytest.approx(_f32(ack.target_kw), abs=5e-4)
    finally:
        await master.stop()
        await link.stop()


async def test_the_master_sends_a_setpoint_every_interval(plant, outstation):
    def follow_net_plus_25(readings) -> float | None:
        return readings["net_kw"].value + 25.0 if "net_kw" in readings else None

    agc = Iec104Master(port=outstation.port, interval_s=0.1, signal=follow_net_plus_25, command_timeout_s=10.0)
    await agc.start(WAIT_S)
    try:
        await _eventually(lambda: sum(a.accepted for a in agc.acks) >= 3)
    finally:
        await agc.stop()
    stored = await _iec104_instructions(plant)
    accepted = [a for a in agc.acks if a.accepted]
    assert len(stored) == len(accepted) == outstation.setpoints_accepted
    assert len({i.id for i, _ in stored}) == len(stored), "set-points in the same millisecond still get their own id"
    starts = sorted(i.start for i, _ in stored)
    assert all(later > earlier for earlier, later in itertools.pairwise(starts)), "each later set-point starts later"
