"""``vpp serve --demo --protocols``: the simulated park over real sockets on loopback.

The demo park's devices are handed to the protocol a real park would use
for them, each with its simulated peer standing in for the equipment:

| devices | adapter | peer (``simulators/``) |
| --- | --- | --- |
| PV inverters, batteries | ``modbus`` (Modbus TCP + SunSpec) | one SunSpec server per device |
| EV chargers | ``ocpp`` (OCPP 1.6J central system) | charge points connecting to it |
| interruptible and shiftable loads | ``mqtt`` (enterprise gateways) | one gateway per enterprise, on the broker |

and the grid reaches the plant over IEC 60870-5-104 (``vpp serve`` runs the
outstation on ``--iec104-port``, ``vpp.grid_links``). Meters stay in-process (the ``simulator`` adapter
reads their registers; it no longer reports the devices above). Every peer
steps the same :class:`~simulators.sim.SimulatedPark`, so the physics is the
one of the plain demo; only the wires are real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from adapters.base import Adapter
from simulators.sim import SimulatedPark
from vpp.clock import Clock
from vpp.model import PV, Battery, Device, EvCharger, InterruptibleLoad, ShiftableLoad
from vpp.store.base import Store

__all__ = ["ProtocolDemo", "ProtocolSettings", "start_protocol_demo"]


class _Peer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class ProtocolSettings:
    """Where the demo's protocols listen or connect (loopback by default)."""

    host: str = "127.0.0.1"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_prefix: str = "vpp"


@dataclass
class ProtocolDemo:
    """The adapters for the service, and the peers to start after it loaded."""

    adapters: dict[str, Adapter]
    peers: list[_Peer] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    """What listens where, for the banner."""
    _ocpp_chargers: _OcppPending | None = None
    """The simulated chargers dial the OCPP adapter: started once the service has it listening."""

    async def start_peers(self) -> None:
        """Start the peers that connect to an adapter (call after the service connected its adapters)."""
        from simulators.ocpp_charger import OcppChargers

        pending, self._ocpp_chargers = self._ocpp_chargers, None
        if pending is not None:
            chargers = OcppChargers(pending.park, pending.clock, pending.devices, port=pending.adapter.port)
            await chargers.start()
            self.peers.append(chargers)
            self.endpoints["ocpp"] = f"ws://127.0.0.1:{pending.adapter.port}/<charge point id>"

    async def stop(self) -> None:
        """Stop every peer (the service closes the adapters and grid links itself)."""
        log = structlog.get_logger("vpp.protocol_demo")
        for peer in reversed(self.peers):
            try:
                await peer.stop()
            except Exception as exc:  # one peer failing to stop must not keep the others running
                log.warning("peer stop failed", peer=type(peer).__name__, error=str(exc))
        self.peers.clear()


@dataclass
class _OcppPending:
    park: SimulatedPark
    clock: Clock
    devices: list[Device]
    adapter: Adapter


def _split(devices: Sequence[Device]) -> tuple[list[Device], list[Device], list[Device]]:
    """(SunSpec devices, chargers, loads) among the simulator's devices."""
    own = [d for d in devices if d.adapter == "simulator"]
    return (
        [d for d in own if isinstance(d, (PV, Battery))],
        [d for d in own if isinstance(d, EvCharger)],
        [d for d in own if isinstance(d, (InterruptibleLoad, ShiftableLoad))],
    )


async def start_protocol_demo(
    store: Store, park: SimulatedPark, clock: Clock, settings: ProtocolSettings | None = None
) -> ProtocolDemo:
    """Move the demo devices onto their protocols (stored with the new adapter and address) and start the peers.

    Peers that listen (SunSpec servers) start now; the OCPP charge points,
    which connect to the service, start with :meth:`ProtocolDemo.start_peers`.
    """
    from adapters.modbus import ModbusAdapter
    from adapters.mqtt import MqttAdapter
    from adapters.ocpp import OcppAdapter
    from simulators.mqtt_gateway import MqttGatewayFleet
    from simulators.sunspec_server import SunSpecServer

    s = settings or ProtocolSettings()
    sunspec_devices, chargers, loads = _split(await store.list_devices())
    demo = ProtocolDemo(adapters={})

    sunspec = SunSpecServer(park, clock, sunspec_devices, host=s.host)
    await sunspec.start()
    demo.peers.append(sunspec)
    modbus_devices = [d.model_copy(update={"adapter": "modbus", "address": sunspec.address_of(d.id)}) for d in sunspec_devices]
    demo.endpoints["modbus"] = f"{len(modbus_devices)} SunSpec servers on {s.host}"

    ocpp_devices = [d.model_copy(update={"adapter": "ocpp"}) for d in chargers]
    ocpp = OcppAdapter(ocpp_devices, host=s.host, port=0, clock=clock)
    demo._ocpp_chargers = _OcppPending(park, clock, ocpp_devices, ocpp)

    mqtt_devices = [d.model_copy(update={"adapter": "mqtt"}) for d in loads]
    gateways = MqttGatewayFleet(park, clock, mqtt_devices, s.mqtt_host, s.mqtt_port, prefix=s.mqtt_prefix)
    await gateways.start()
    demo.peers.append(gateways)
    demo.endpoints["mqtt"] = f"mqtt://{s.mqtt_host}:{s.mqtt_port} topics {s.mqtt_prefix}/<enterprise>/<device>/..."

    for device in [*modbus_devices, *ocpp_devices, *mqtt_devices]:
        await store.put_device(device)
    demo.adapters = {
        "modbus": ModbusAdapter(modbus_devices, clock=clock),
        "ocpp": ocpp,
        "mqtt": MqttAdapter(mqtt_devices, s.mqtt_host, s.mqtt_port, prefix=s.mqtt_prefix),
    }
    return demo
