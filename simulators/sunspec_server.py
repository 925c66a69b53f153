"""SunSpec Modbus TCP peers standing in for the park's PV inverters and battery systems.

:class:`SunSpecServer` runs one pymodbus TCP server per device (each on its
own loopback port, unit id 1 by default), as a park of real inverters each with
its own IP would. Every server holds the device's SunSpec register map:

* "SunS" at ``base_address`` (40000 by default; 0 and 50000 are the other
  places a client looks), then the models 1 (common), 103 (three-phase
  inverter), 120 (nameplate), 121 (settings) and, for a PV, 123 (immediate
  controls) or, for a battery, 124 (storage), then the end marker 0xFFFF.
* Before any read is answered the park is advanced to ``clock.now()`` and the
  measured points (W, A, V, Hz, WH, St; ChaState and ChaSt of a battery) are
  recomputed from the simulated device.
* A write to the controls becomes a set-point of the simulated device:
  a PV's WMaxLimPct (with WMaxLim_Ena = 1) caps it at WMaxLimPct × WMax; a
  battery's StorCtl_Mod / InWRte / OutWRte window (percent of WChaMax) sets
  its signed power (see :func:`_storage_setpoint_kw`). Values outside their
  range are answered with ILLEGAL_VALUE and change nothing; a device the park
  has taken offline answers every request with GATEWAY_NO_RESPONSE.

Servers can be stopped and started again, all or one at a time, and come
back on the same port.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.modbus import (
    CHAST_CHARGING,
    CHAST_DISCHARGING,
    CHAST_EMPTY,
    CHAST_FULL,
    CHAST_HOLDING,
    COMMON,
    CONTROLS,
    END_MODEL_ID,
    INVERTER,
    NAMEPLATE,
    SETTINGS,
    ST_MPPT,
    ST_SLEEPING,
    ST_STANDBY,
    ST_THROTTLED,
    STORAGE,
    STORCTL_CHARGE,
    STORCTL_DISCHARGE,
    SUNS_MARKER,
    ModelLayout,
    SunSpecFormatError,
    decode_model,
    encode_model,
)
from simulators.sim import SimulatedPark
from vpp.clock import Clock
from vpp.model import PV, Battery, Device, Setpoint

__all__ = ["SunSpecServer"]

_PCT_SF = -2
"""Scale factor of every percentage point: 0.01 % resolution [unitless]."""
_PHASE_V = 230.0
"""Phase-to-neutral voltage of the simulated grid connection [V]."""
_LINE_V = 400.0
"""Phase-to-phase voltage [V]."""
_GRID_HZ = 50.0
_CABINET_C = 35.0
"""Cabinet temperature reported by every inverter [degC]."""
_DER_PV, _DER_PV_STOR = 4, 82
"""Model 120 DERTyp values."""
_IDLE_W = 0.5
"""Power below which a device counts as idle [W]."""


def _sf_for(largest: float, limit: int) -> int:
    """Smallest scale factor (at least -2) at which ``largest`` fits a register holding up to ``limit`` [unitless]."""
    sf = -2
    while largest / 10.0**sf > limit:
        sf += 1
    return sf


def _storage_setpoint_kw(storage: dict, rated_kw: float) -> float | None:
    """The battery power a model 124 control block asks for [kW]; None = no limit in force (idle/free).

    StorCtl_Mod bit 0 puts InWRte in force: charging at most InWRte % of
    WChaMax, i.e. power >= -InWRte × WChaMax (a negative InWRte forces
    discharge). Bit 1 puts OutWRte in force: power <= OutWRte × WChaMax (a
    negative OutWRte forces charge). Both in force with equal bounds hold
    exactly that power; otherwise the battery, idle by nature, holds the
    point of the window nearest zero.

    Raises
    ------
    SunSpecFormatError
        A rate or mode out of range, or a window whose lower bound exceeds its upper one.
    """
    mod, w_cha = storage.get("StorCtl_Mod"), storage.get("WChaMax")
    if not isinstance(mod, int) or not 0 <= mod <= 3:
        raise SunSpecFormatError(f"StorCtl_Mod = {mod} is not 0..3")
    if not isinstance(w_cha, float) or w_cha <= 0:
        raise SunSpecFormatError(f"WChaMax = {w_cha} is not a positive power")
    lower, upper = -rated_kw, rated_kw
    for bit, name in ((STORCTL_CHARGE, "InWRte"), (STORCTL_DISCHARGE, "OutWRte")):
        rate = storage.get(name)
        if not mod & bit:
            continue
        if not isinstance(rate, float) or not -100.0 <= rate <= 100.0:
            raise SunSpecFormatError(f"{name} = {rate} is not within -100..100 %")
        bound_kw = rate / 100.0 * w_cha / 1000.0
        if bit == STORCTL_CHARGE:
            lower = -bound_kw
        else:
            upper = bound_kw
    if lower > upper + 1e-9:
        raise SunSpecFormatError(f"charge limit {lower:.3f} kW lies above discharge limit {upper:.3f} kW")
    if mod == STORCTL_CHARGE | STORCTL_DISCHARGE and math.isclose(lower, upper, abs_tol=1e-6):
        return upper + 0.0
    if lower <= 0.0 <= upper:
        return None
    return lower if lower > 0.0 else upper


def _pv_setpoint_kw(controls: dict, settings: dict) -> float | None:
    """The PV cap a model 123 block asks for (WMaxLimPct × WMax) [kW]; None = limit disabled.

    Raises
    ------
    SunSpecFormatError
        WMaxLim_Ena not 0/1, WMaxLimPct outside 0..100 %, or no WMax.
    """
    ena, pct, w_max = controls.get("WMaxLim_Ena"), controls.get("WMaxLimPct"), settings.get("WMax")
    if ena not in (0, 1):
        raise SunSpecFormatError(f"WMaxLim_Ena = {ena} is not 0 or 1")
    if pct is not None and not (isinstance(pct, float) and 0.0 <= pct <= 100.0):
        raise SunSpecFormatError(f"WMaxLimPct = {pct} is not within 0..100 %")
    if ena == 0:
        return None
    if pct is None:
        raise SunSpecFormatError("WMaxLimPct is not set; the limit cannot be enabled")
    if not isinstance(w_max, float) or w_max <= 0:
        raise SunSpecFormatError(f"WMax = {w_max} is not a positive power")
    return pct / 100.0 * w_max / 1000.0


@dataclass
class _Model:
    layout: ModelLayout
    index: int
    """Position of the model's first point in the device's register list [unitless]."""


class _Inverter:
    """The register map of one simulated device and the pymodbus server that serves it."""

    def __init__(self, park: SimulatedPark, clock: Clock, device: PV | Battery, unit: int, base_address: int) -> None:
        self.park, self.clock, self.device = park, clock, device
        self.unit, self.base_address = unit, base_address
        self.server: ModbusTcpServer | None = None
        self.port: int | None = None
        self.setpoint_kw: float | None = None
        self.writes = 0
        self.log = structlog.get_logger("vpp.simulators.sunspec")
        rated_w = device.rated_kw * 1000.0
        self.w_sf = _sf_for(rated_w * 1.25, 0x7FFF)  # room for a little overshoot
        self.wh_sf = _sf_for(max(rated_w * 24 * 366 * 30, 1.0), 0xFFFFFFFE)  # 30 years at rated power
        self.models: dict[int, _Model] = {}
        self.registers, self.writable = self._build_map()

    # -- the map ---------------------------------------------------------------------

    def _build_map(self) -> tuple[list[int], list[bool]]:
        registers, writable = list(SUNS_MARKER), [False, False]
        for layout, values in self._initial_models():
            registers += [layout.model_id, layout.length]
            writable += [False, False]
            self.models[layout.model_id] = _Model(layout, len(registers))
            registers += encode_model(layout, values)
            flags = [False] * layout.length
            for p in layout.points:
                flags[p.offset : p.offset + p.size] = [p.writable] * p.size
            writable += flags
        registers += [END_MODEL_ID, 0]
        writable += [False, False]
        return registers, writable

    def _initial_models(self) -> list[tuple[ModelLayout, dict]]:
        d = self.device
        rated_w = d.rated_kw * 1000.0
        is_pv = isinstance(d, PV)
        common = {"Mn": "VPP park simulator", "Md": "SunSpec PV" if is_pv else "SunSpec storage", "Opt": "", "Vr": "1.0", "SN": d.id, "DA": self.unit}
        nameplate = {"DERTyp": _DER_PV if is_pv else _DER_PV_STOR, "WRtg": rated_w, "WRtg_SF": self.w_sf}
        models: list[tuple[ModelLayout, dict]] = [(COMMON, common), (INVERTER, self._inverter_values()), (NAMEPLATE, nameplate)]
        models.append((SETTINGS, {"WMax": rated_w, "WMax_SF": self.w_sf}))
        if is_pv:
            models.append((CONTROLS, {
                "Conn": 1, "WMaxLimPct": 100.0, "WMaxLimPct_SF": _PCT_SF, "WMaxLimPct_WinTms": 0, "WMaxLimPct_RvrtTms": 0,
                "WMaxLimPct_RmpTms": 0, "WMaxLim_Ena": 0, "OutPFSet_Ena": 0, "VArPct_Ena": 0,
            }))  # fmt: skip
            return models
        assert isinstance(d, Battery)
        wh_sf = _sf_for(d.capacity_kwh * 1000.0, 0xFFFE)
        nameplate.update(WHRtg=d.capacity_kwh * 1000.0, WHRtg_SF=wh_sf, MaxChaRte=rated_w, MaxChaRte_SF=self.w_sf,
                         MaxDisChaRte=rated_w, MaxDisChaRte_SF=self.w_sf)  # fmt: skip
        models.append((STORAGE, {
            "WChaMax": rated_w, "WChaMax_SF": self.w_sf, "StorCtl_Mod": 0,
            "MinRsvPct": 100.0 * d.soc_min_kwh / d.capacity_kwh, "MinRsvPct_SF": _PCT_SF,
            "ChaState_SF": _PCT_SF, "OutWRte": 100.0, "InWRte": 100.0, "InOutWRte_SF": _PCT_SF,
            "InOutWRte_WinTms": 0, "InOutWRte_RvrtTms": 0, "InOutWRte_RmpTms": 0, "ChaGriSet": 1,
            **self._storage_values(),
        }))  # fmt: skip
        return models

    def _inverter_values(self) -> dict:
        """Model 103 from the simulated device now (balanced three-phase, unity power factor)."""
        p_w = self.park.power_kw(self.device.id) * 1000.0
        amps = abs(p_w) / (3.0 * _PHASE_V)
        energy_wh = max(self.park.energy_kwh(self.device.id), 0.0) * 1000.0
        return {
            "A": amps * 3.0, "AphA": amps, "AphB": amps, "AphC": amps, "A_SF": _sf_for(self.device.rated_kw * 1250.0 / _PHASE_V, 0xFFFE),
            "PPVphAB": _LINE_V, "PPVphBC": _LINE_V, "PPVphCA": _LINE_V,
            "PhVphA": _PHASE_V, "PhVphB": _PHASE_V, "PhVphC": _PHASE_V, "V_SF": -1,
            "W": p_w, "W_SF": self.w_sf, "Hz": _GRID_HZ, "Hz_SF": -2, "VA": abs(p_w), "VA_SF": self.w_sf,
            "VAr": 0.0, "VAr_SF": self.w_sf, "PF": 100.0 if abs(p_w) > _IDLE_W else 0.0, "PF_SF": _PCT_SF,
            "WH": energy_wh, "WH_SF": self.wh_sf, "TmpCab": _CABINET_C, "Tmp_SF": -1,
            "St": self._status(p_w), "Evt1": 0, "Evt2": 0,
        }  # fmt: skip

    def _status(self, p_w: float) -> int:
        """Model 103 St: sleeping, throttled by a PV limit, producing (MPPT) or standing by."""
        hi_kw = self.park.limits_kw(self.device.id)[1]
        if isinstance(self.device, PV):
            if hi_kw * 1000.0 <= _IDLE_W:
                return ST_SLEEPING
            limited = self.setpoint_kw is not None and self.setpoint_kw < hi_kw - 1e-6
            return ST_THROTTLED if limited else ST_MPPT
        return ST_MPPT if abs(p_w) > _IDLE_W else ST_STANDBY

    def _storage_values(self) -> dict:
        """The measured points of model 124: ChaState [%] and ChaSt."""
        assert isinstance(self.device, Battery)
        i = self.device.id
        soc_pct = 100.0 * self.park.soc_kwh(i) / self.device.capacity_kwh
        p_kw = self.park.power_kw(i)
        lo_kw, hi_kw = self.park.limits_kw(i)
        if hi_kw <= 1e-6 and p_kw <= 1e-6:
            state = CHAST_EMPTY
        elif lo_kw >= -1e-6 and p_kw >= -1e-6:
            state = CHAST_FULL
        else:
            state = CHAST_CHARGING if p_kw < -1e-6 else CHAST_DISCHARGING if p_kw > 1e-6 else CHAST_HOLDING
        return {"ChaState": min(max(soc_pct, 0.0), 100.0), "ChaSt": state}

    def simdata(self) -> list[SimData]:
        """The map as pymodbus blocks: read-only points marked so, so writes to them are refused."""
        blocks, start = [], 0
        for i in range(1, len(self.registers) + 1):
            if i == len(self.registers) or self.writable[i] != self.writable[start]:
                blocks.append(SimData(self.base_address + start, values=self.registers[start:i],
                                      datatype=DataType.REGISTERS, readonly=not self.writable[start]))  # fmt: skip
                start = i
        return blocks

    def _block(self, model_id: int) -> tuple[int, int]:
        """Positions of a model's points in the register list: ``[start, end)`` [unitless]."""
        m = self.models[model_id]
        return m.index, m.index + m.layout.length

    # -- requests --------------------------------------------------------------------

    async def on_request(
        self, function_code: int, start_address: int, address: int, count: int, registers: list[int], set_values: list | None
    ) -> ExcCodes | None:
        """pymodbus action: refresh the measured points before a read, turn a write into a set-point."""
        try:
            if not self.park.is_online(self.device.id):
                return ExcCodes.GATEWAY_NO_RESPONSE
            now = self.clock.now()
            self.park.step(now)
            if set_values is None:
                self._refresh(registers, start_address)
                return None
            return self._apply_write(registers, start_address, address, [int(v) for v in set_values])
        except Exception:  # a bug here must not kill the server; the client sees DEVICE_FAILURE
            self.log.exception("sunspec simulator request failed", device_id=self.device.id, address=address)
            return ExcCodes.DEVICE_FAILURE

    def _refresh(self, registers: list[int], start_address: int) -> None:
        shift = self.base_address - start_address
        lo, hi = self._block(103)
        registers[lo + shift : hi + shift] = encode_model(INVERTER, self._inverter_values())
        if isinstance(self.device, Battery):
            lo, hi = self._block(124)
            storage = decode_model(STORAGE, registers[lo + shift : hi + shift])
            storage.update(self._storage_values())
            registers[lo + shift : hi + shift] = encode_model(STORAGE, storage)

    def _apply_write(self, registers: list[int], start_address: int, address: int, values: list[int]) -> ExcCodes | None:
        image = registers[self.base_address - start_address :]
        offset = address - self.base_address
        image[offset : offset + len(values)] = values
        try:
            if isinstance(self.device, PV):
                settings = decode_model(SETTINGS, image[slice(*self._block(121))])
                p_kw = _pv_setpoint_kw(decode_model(CONTROLS, image[slice(*self._block(123))]), settings)
            else:
                p_kw = _storage_setpoint_kw(decode_model(STORAGE, image[slice(*self._block(124))]), self.device.rated_kw)
        except SunSpecFormatError as exc:
            self.log.warning("sunspec simulator refused a write", device_id=self.device.id, address=address, error=str(exc))
            return ExcCodes.ILLEGAL_VALUE
        self.park.apply_setpoints([Setpoint(device_id=self.device.id, p_kw=p_kw, ts=self.clock.now())])
        self.setpoint_kw = p_kw
        self.writes += 1
        return None

    # -- server ----------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        if self.server is not None:
            return
        device = SimDevice(id=self.unit, simdata=self.simdata(), action=self.on_request)
        server = ModbusTcpServer([device], address=(host, self.port if self.port is not None else port))
        await server.serve_forever(background=True)
        self.server = server
        self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop listening and drop every client; the map is kept, so a restart resumes where it stopped."""
        if self.server is None:
            return
        runtime = self.server.context.devices[self.unit]  # type: ignore[union-attr]
        self.registers = list(runtime.block["x"][2][: len(self.registers)])  # keep what clients wrote
        await self.server.shutdown()
        self.server = None


class SunSpecServer:
    """SunSpec inverters on loopback for the PV and battery devices of a simulated park.

    Parameters
    ----------
    park : SimulatedPark
        The simulated world; stepped to ``clock.now()`` before every answer.
    clock : Clock
        Time source shared with the park.
    devices : sequence of Device
        PV and Battery devices to serve (one server each).
    host : str
        Interface to listen on.
    port : int
        First port: device ``k`` listens on ``port + k``; 0 = an ephemeral port each.
    unit : int
        Modbus unit id every device answers to.
    base_address : int
        Register of "SunS" (40000, 0 or 50000).

    Raises
    ------
    ValueError
        A device that is neither PV nor Battery, or one the park does not have.
    """

    def __init__(
        self,
        park: SimulatedPark,
        clock: Clock,
        devices: Sequence[Device],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        unit: int = 1,
        base_address: int = 40000,
    ) -> None:
        known = set(park.device_ids)
        self.host, self.port, self.unit = host, port, unit
        self._inverters: dict[str, _Inverter] = {}
        for device in devices:
            if not isinstance(device, (PV, Battery)):
                raise ValueError(f"device {device.id}: kind '{device.kind}' has no SunSpec simulator (pv or battery only)")
            if device.id not in known:
                raise ValueError(f"device {device.id} is not in the simulated park")
            self._inverters[device.id] = _Inverter(park, clock, device, unit, base_address)

    @property
    def device_ids(self) -> list[str]:
        return list(self._inverters)

    async def start(self) -> None:
        """Start every device's server (again on its former port after a stop)."""
        for device_id in self._inverters:
            await self.start_device(device_id)

    async def stop(self) -> None:
        """Stop every device's server; safe to call twice."""
        for device_id in self._inverters:
            await self.stop_device(device_id)

    async def start_device(self, device_id: str) -> None:
        """Start one device's server (a dropped inverter coming back)."""
        k = list(self._inverters).index(device_id)
        await self._inverters[device_id].start(self.host, self.port + k if self.port else 0)

    async def stop_device(self, device_id: str) -> None:
        """Stop one device's server (an inverter dropping off the network)."""
        await self._inverters[device_id].stop()

    def port_of(self, device_id: str) -> int:
        """TCP port of a device's server (known once it has started)."""
        port = self._inverters[device_id].port
        if port is None:
            raise RuntimeError(f"device {device_id}: server not started yet")
        return port

    def address_of(self, device_id: str) -> str:
        """The device's ``Device.address`` for the modbus adapter: ``"host:port/unit"``."""
        return f"{self.host}:{self.port_of(device_id)}/{self.unit}"

    def setpoint_kw(self, device_id: str) -> float | None:
        """The set-point the device's controls ask for now, as applied to the park [kW]; None = free."""
        return self._inverters[device_id].setpoint_kw

    def writes(self, device_id: str) -> int:
        """Control writes the device accepted [unitless]."""
        return self._inverters[device_id].writes

    def registers(self, device_id: str) -> list[int]:
        """The device's register map from ``base_address`` on, as a client would read it now."""
        inv = self._inverters[device_id]
        if inv.server is None:
            return list(inv.registers)
        return list(inv.server.context.devices[inv.unit].block["x"][2][: len(inv.registers)])  # type: ignore[union-attr]
