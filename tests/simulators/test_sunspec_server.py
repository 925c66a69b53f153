"""The SunSpec Modbus peers of the simulated park, read and written with a plain pymodbus client."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from simulators.park import ParkSpec, build_park
from simulators.sim import SimulatedPark
from simulators.sunspec_server import SunSpecServer
from vpp.clock import ManualClock
from vpp.model import PV, Battery, InterruptibleLoad

NOON = datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def spec() -> ParkSpec:
    full = build_park(seed=3, n_enterprises=3)
    return dataclasses.replace(full, devices=[d for d in full.devices if isinstance(d, (PV, Battery))])


@pytest.fixture
async def served(spec):
    clock = ManualClock(NOON)
    park = SimulatedPark(spec, NOON, seed=3)
    server = SunSpecServer(park, clock, spec.devices)
    await server.start()
    clients: list[AsyncModbusTcpClient] = []

    async def client_for(device_id: str) -> AsyncModbusTcpClient:
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port_of(device_id), timeout=2.0, retries=0, reconnect_delay=0)
        assert await client.connect()
        clients.append(client)
        return client

    yield clock, park, server, client_for
    for client in clients:
        client.close()
    await server.stop()


def _int16(register: int) -> int:
    return register - 0x10000 if register & 0x8000 else register


async def _chain(client: AsyncModbusTcpClient) -> list[tuple[int, int, int]]:
    """(model id, length, address of ID) of every model, walked by hand from 40000."""
    marker = (await client.read_holding_registers(40000, count=2, device_id=1)).registers
    assert bytes.fromhex(f"{marker[0]:04x}{marker[1]:04x}") == b"SunS"
    chain, address = [], 40002
    while True:
        model_id, length = (await client.read_holding_registers(address, count=2, device_id=1)).registers
        if model_id == 0xFFFF:
            return chain
        chain.append((model_id, length, address))
        address += 2 + length


async def test_each_device_serves_the_classic_models_behind_suns(served, spec):
    _, _, server, client_for = served
    for device in spec.devices:
        chain = await _chain(await client_for(device.id))
        last = (123, 24) if isinstance(device, PV) else (124, 24)
        assert [(m, n) for m, n, _ in chain] == [(1, 66), (103, 50), (120, 26), (121, 30), last]
        assert server.address_of(device.id) == f"127.0.0.1:{server.port_of(device.id)}/1"


async def test_the_power_register_follows_the_park_at_the_clocks_time(served, spec):
    clock, park, _, client_for = served
    pv = next(d for d in spec.devices if isinstance(d, PV))
    client = await client_for(pv.id)
    inverter = next(address for m, _, address in await _chain(client) if m == 103)
    for _ in range(3):
        clock.advance(300)
        block = (await client.read_holding_registers(inverter + 2, count=50, device_id=1)).registers
        assert park.now == clock.now(), "the read advanced the park"
        w, w_sf = _int16(block[12]), _int16(block[13])
        assert w * 10.0**w_sf == pytest.approx(park.power_kw(pv.id) * 1000.0, abs=0.5 * 10.0**w_sf)
        assert block[36] == 4  # St = MPPT


async def test_written_controls_survive_a_restart_on_the_same_port(served, spec):
    clock, park, server, client_for = served
    bat = next(d for d in spec.devices if isinstance(d, Battery))
    client = await client_for(bat.id)
    storage = next(address for m, _, address in await _chain(client) if m == 124) + 2
    # Charge at 10.00 % of WChaMax: OutWRte = -1000, InWRte = +1000 (InOutWRte_SF = -2), both limits on.
    assert not (await client.write_registers(storage + 10, [(-1000) & 0xFFFF, 1000], device_id=1)).isError()
    assert not (await client.write_register(storage + 3, 3, device_id=1)).isError()
    assert server.setpoint_kw(bat.id) == pytest.approx(-0.1 * bat.rated_kw)
    clock.advance(60)
    assert park.power_kw(bat.id) == pytest.approx(0.0)  # the park moves when stepped, i.e. on the next read
    await client.read_holding_registers(storage, count=24, device_id=1)
    assert park.power_kw(bat.id) == pytest.approx(-0.1 * bat.rated_kw)

    port = server.port_of(bat.id)
    await server.stop_device(bat.id)
    with pytest.raises(ModbusException):  # gone: refused or timed out
        await client.read_holding_registers(storage, count=1, device_id=1)
    client.close()
    await server.start_device(bat.id)
    assert server.port_of(bat.id) == port
    client = await client_for(bat.id)
    registers = (await client.read_holding_registers(storage + 3, count=9, device_id=1)).registers
    assert registers[0] == 3 and _int16(registers[7]) == -1000 and registers[8] == 1000


def test_only_pv_and_batteries_of_the_park_are_served(spec):
    park = SimulatedPark(spec, NOON, seed=3)
    load = InterruptibleLoad(id="e01-load1", enterprise_id="e01", rated_kw=100.0, max_curtail_kw=50.0)
    with pytest.raises(ValueError, match="kind 'interruptible_load'"):
        SunSpecServer(park, ManualClock(NOON), [load])
    with pytest.raises(ValueError, match="not in the simulated park"):
        SunSpecServer(park, ManualClock(NOON), [PV(id="x-pv1", enterprise_id="e01", rated_kw=10.0)])
