"""The simulated OCPP 1.6J charge points: profile stacking, and against a plain ``ocpp``-library central system."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import datetime, timezone

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from adapters.ocpp import OCPP_SUBPROTOCOL, ProfileLimit, encode_charging_profile
from simulators.ocpp_charger import InstalledProfile, OcppChargers, effective_limit_kw
from simulators.park import build_park
from simulators.sim import SimulatedPark
from vpp.clock import ManualClock
from vpp.model import EvCharger

NOON = datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)


def _p(purpose: str, limit_kw: float, connector: int = 0, stack: int = 1, tx: int | None = None, pid: int = 1):
    return InstalledProfile(ProfileLimit(pid, purpose, stack, limit_kw, tx), connector)


def test_no_profile_means_no_limit():
    assert effective_limit_kw([], [1, 2], {}, 7.0) is None


def test_tx_default_on_connector_0_caps_each_occupied_connector():
    assert effective_limit_kw([_p("TxDefaultProfile", 3.0)], [1, 2, 3], {}, 7.0) == 9.0
    assert effective_limit_kw([_p("TxDefaultProfile", 30.0)], [1, 2], {}, 7.0) == 14.0, "never above the port rating"
    assert effective_limit_kw([_p("TxDefaultProfile", 3.0)], [], {}, 7.0) == 0.0


def test_more_specific_and_higher_stack_profiles_win():
    profiles = [
        _p("TxDefaultProfile", 3.0, connector=0, stack=1, pid=1),
        _p("TxDefaultProfile", 5.0, connector=0, stack=2, pid=2),  # higher stack wins on connector 0
        _p("TxDefaultProfile", 1.0, connector=2, pid=3),  # connector 2's own default wins there
        _p("TxProfile", 0.5, tx=42, pid=4),  # the transaction on connector 3 wins there
    ]
    assert effective_limit_kw(profiles, [1, 2, 3], {3: 42}, 7.0) == pytest.approx(5.0 + 1.0 + 0.5)


def test_charge_point_max_caps_the_total():
    profiles = [_p("TxDefaultProfile", 5.0), _p("ChargePointMaxProfile", 8.0, pid=2)]
    assert effective_limit_kw(profiles, [1, 2, 3], {}, 7.0) == 8.0
    assert effective_limit_kw([_p("ChargePointMaxProfile", 8.0)], [1], {}, 7.0) == 7.0


class _CentralSystem(ChargePoint):
    """A bare central system built on the ocpp library, not the VPP adapter."""

    tx_ids = itertools.count(100)

    def __init__(self, cp_id, connection):
        super().__init__(cp_id, connection)
        self.transactions: dict[int, int] = {}
        self.meter_values = 0

    @on("BootNotification")
    def on_boot(self, **_):
        return call_result.BootNotification(current_time="2026-07-01T04:00:00Z", interval=300, status="Accepted")

    @on("StatusNotification")
    def on_status(self, **_):
        return call_result.StatusNotification()

    @on("MeterValues")
    def on_meter_values(self, **_):
        self.meter_values += 1
        return call_result.MeterValues()

    @on("StartTransaction")
    def on_start(self, connector_id, **_):
        self.transactions[connector_id] = next(self.tx_ids)
        return call_result.StartTransaction(transaction_id=self.transactions[connector_id], id_tag_info={"status": "Accepted"})

    @on("StopTransaction")
    def on_stop(self, **_):
        return call_result.StopTransaction()

    @on("Heartbeat")
    def on_heartbeat(self, **_):
        return call_result.Heartbeat(current_time="2026-07-01T04:00:00Z")


async def _until(predicate, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0  # a failure after this long, not a speed claim
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_profiles_from_a_plain_central_system_drive_the_park():
    spec = build_park(seed=3, n_enterprises=5)
    charger = next(d for d in spec.devices if isinstance(d, EvCharger) and d.ports > 2)
    clock = ManualClock(NOON)
    park = SimulatedPark(spec, NOON, seed=3)
    occupied = min(park.ev_connected_sessions(charger.id), charger.ports)
    assert occupied >= 2, "the test needs a charger with two vehicles"
    port_kw = charger.rated_kw / charger.ports
    sessions: dict[str, _CentralSystem] = {}

    async def handler(connection):
        cs = _CentralSystem(connection.request.path.strip("/"), connection)
        sessions[cs.id] = cs
        with contextlib.suppress(ConnectionClosed):  # the charger hung up: this session is over
            await cs.start()

    async with serve(handler, "127.0.0.1", 0, subprotocols=[OCPP_SUBPROTOCOL]) as server:
        port = server.sockets[0].getsockname()[1]
        sim = OcppChargers(park, clock, [charger], port=port)
        await sim.start()
        try:
            await _until(
                lambda: charger.id in sessions and sessions[charger.id].meter_values >= 1, "transactions and meter values"
            )
            cs = sessions[charger.id]
            assert set(cs.transactions) == set(range(1, occupied + 1)), "one transaction per vehicle"

            def profile(purpose, limit_kw, pid, tx=None):
                body = encode_charging_profile(-limit_kw, start=NOON, profile_id=pid, purpose="TxDefaultProfile")
                body["chargingProfilePurpose"] = purpose
                if tx is not None:
                    body["transactionId"] = tx
                return body

            refused = await cs.call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=profile("TxProfile", 2.0, 5, tx=999)))
            assert refused.status == "Rejected", "a TxProfile needs a running transaction"
            tx1 = cs.transactions[1]
            ok = await cs.call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=profile("TxProfile", 2.0, 5, tx=tx1)))
            assert ok.status == "Accepted"
            assert sim.limit_kw(charger.id) == pytest.approx(2.0 + port_kw * (occupied - 1))
            await cs.call(call.SetChargingProfile(connector_id=0, cs_charging_profiles=profile("TxDefaultProfile", 3.0, 6)))
            assert sim.limit_kw(charger.id) == pytest.approx(2.0 + 3.0 * (occupied - 1))
            await cs.call(call.SetChargingProfile(connector_id=0, cs_charging_profiles=profile("ChargePointMaxProfile", 4.0, 7)))
            assert sim.limit_kw(charger.id) == pytest.approx(4.0)
            clock.advance(30)
            park.step(clock.now())
            assert park.power_kw(charger.id) == pytest.approx(-4.0), "the park follows the profiles"

            cleared = await cs.call(call.ClearChargingProfile(charging_profile_purpose="ChargePointMaxProfile"))
            assert cleared.status == "Accepted"
            assert sim.limit_kw(charger.id) == pytest.approx(2.0 + 3.0 * (occupied - 1))
            assert (await cs.call(call.ClearChargingProfile(id=12345))).status == "Unknown"
            assert (await cs.call(call.ClearChargingProfile())).status == "Accepted"
            assert sim.limit_kw(charger.id) is None
            clock.advance(30)
            park.step(clock.now())
            assert park.power_kw(charger.id) == pytest.approx(park.limits_kw(charger.id)[0]), "released: charges at will"

            await sim.stop()
            assert not sim.is_connected(charger.id)
            await sim.start()
            await _until(lambda: sim.boots(charger.id) == 2, "the charger to come back")
        finally:
            await sim.stop()
