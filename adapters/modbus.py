"""Modbus TCP adapter for SunSpec PV inverters and battery systems (pymodbus async client).

The adapter speaks the classic SunSpec "1xx" information models, integer
points with scale factors, which nearly every PV and storage inverter on the
market implements (the newer 7xx DER models are not used):

========  ===================  ==========================================================
model     name                 points used
========  ===================  ==========================================================
1         common               Mn, Md, SN (logged at discovery)
101-103   inverter (1ph/3ph)   W, W_SF (measured AC power, + = exported), St (status)
120       nameplate            WRtg, WHRtg (battery energy), MaxDisChaRte, with their SFs
121       basic settings       WMax, WMax_SF (base of the PV power limit)
123       immediate controls   WMaxLimPct, WMaxLimPct_SF, WMaxLim_Ena (PV curtailment)
124       storage              WChaMax, StorCtl_Mod, ChaState, ChaSt, OutWRte, InWRte, SFs
========  ===================  ==========================================================

A scaled point reads as ``value × 10**sf`` where ``sf`` is a signed int16
register of the same model; ``0x8000`` (int16), ``0xFFFF`` (uint16, enum16,
bitfield16) and ``0x8000`` (sunssf) mean "not implemented" and decode to
``None``. The tables below are transcribed from the SunSpec Information Model
Reference (models 1, 103, 120, 121, 123 and 124); pysunspec2 is not needed.

Layout of the module: pure register codecs (``decode_model``,
``encode_model``, ``_parse_*``, ``_decode_*``, ``_encode_*``) that never touch
a socket, and :class:`ModbusAdapter`, a thin async shell that owns one
pymodbus connection per ``host:port`` endpoint, discovers each unit's model
chain, polls telemetry and writes set-points. Every endpoint reconnects by
itself with exponential backoff, so one dead inverter never hides the others;
an unusable frame or register block is counted with
:meth:`~adapters.base.Adapter.note_malformed` and only its device is omitted.
See ``docs/protocols/modbus-sunspec.md``.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from adapters.base import Adapter, AdapterError
from vpp.clock import Clock, RealClock
from vpp.model import PV, Battery, Device, Setpoint, TelemetrySample

__all__ = [
    "BASE_ADDRESSES",
    "END_MODEL_ID",
    "INVERTER_MODEL_IDS",
    "MODELS",
    "SUNS_MARKER",
    "ModbusAdapter",
    "ModelLayout",
    "Point",
    "SunSpecFormatError",
    "decode_model",
    "encode_model",
]

# ------------------------------------------------------------ SunSpec tables --

SUNS_MARKER = (0x5375, 0x6E53)
"""The two registers "SunS" that start a SunSpec register map."""
BASE_ADDRESSES = (40000, 0, 50000)
"""Where a SunSpec map may start, in the order they are tried [register address]."""
END_MODEL_ID = 0xFFFF
"""Model id that ends the model chain."""
INVERTER_MODEL_IDS = (101, 102, 103)
"""Single-phase, split-phase and three-phase inverter models; they share one layout."""
MAX_MODELS = 64
"""Longest model chain accepted before the map is declared malformed [unitless]."""
SF_RANGE = (-10, 10)
"""Scale factors outside this range are rejected as malformed [unitless]."""

NOT_IMPLEMENTED = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "acc32": 0,
    "bitfield32": 0xFFFFFFFF,
    "uint32": 0xFFFFFFFF,
    "pad": 0x8000,
}
"""Raw value a device puts in a point it does not implement, by point type."""


@dataclass(frozen=True)
class Point:
    """One point of a SunSpec model."""

    name: str
    offset: int
    """Registers after the model's ID and L registers [unitless]."""
    type: str
    """SunSpec type: uint16, int16, sunssf, enum16, bitfield16, acc32, bitfield32, uint32, string, pad."""
    size: int = 1
    """Registers the point occupies [unitless]."""
    sf: str | None = None
    """Name of the scale-factor point of the same model; None = unscaled."""
    writable: bool = False


@dataclass(frozen=True)
class ModelLayout:
    """The fixed-length layout of one SunSpec model."""

    model_id: int
    length: int
    """Value of the model's L register: registers after ID and L [unitless]."""
    points: tuple[Point, ...]

    def point(self, name: str) -> Point:
        """The point called ``name``; KeyError if the model has none."""
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"model {self.model_id} has no point {name!r}")


def _layout(model_id: int, length: int, rows: str) -> ModelLayout:
    """Build a layout from lines ``offset name type [size] [sf=NAME] [rw]``."""
    points = []
    for line in rows.strip().splitlines():
        parts = line.split()
        offset, name, kind = int(parts[0]), parts[1], parts[2]
        size = next((int(p) for p in parts[3:] if p.isdigit()), 2 if kind in ("acc32", "bitfield32", "uint32") else 1)
        sf = next((p[3:] for p in parts[3:] if p.startswith("sf=")), None)
        points.append(Point(name, offset, kind, size, sf, "rw" in parts[3:]))
    return ModelLayout(model_id, length, tuple(points))


COMMON = _layout(1, 66, """
0 Mn string 16
16 Md string 16
32 Opt string 8
40 Vr string 8
48 SN string 16
64 DA uint16 rw
65 Pad pad
""")
"""Model 1, common: manufacturer, model, serial number, device address."""

INVERTER = _layout(103, 50, """
0 A uint16 sf=A_SF
1 AphA uint16 sf=A_SF
2 AphB uint16 sf=A_SF
3 AphC uint16 sf=A_SF
4 A_SF sunssf
5 PPVphAB uint16 sf=V_SF
6 PPVphBC uint16 sf=V_SF
7 PPVphCA uint16 sf=V_SF
8 PhVphA uint16 sf=V_SF
9 PhVphB uint16 sf=V_SF
10 PhVphC uint16 sf=V_SF
11 V_SF sunssf
12 W int16 sf=W_SF
13 W_SF sunssf
14 Hz uint16 sf=Hz_SF
15 Hz_SF sunssf
16 VA int16 sf=VA_SF
17 VA_SF sunssf
18 VAr int16 sf=VAr_SF
19 VAr_SF sunssf
20 PF int16 sf=PF_SF
21 PF_SF sunssf
22 WH acc32 sf=WH_SF
24 WH_SF sunssf
25 DCA uint16 sf=DCA_SF
26 DCA_SF sunssf
27 DCV uint16 sf=DCV_SF
28 DCV_SF sunssf
29 DCW int16 sf=DCW_SF
30 DCW_SF sunssf
31 TmpCab int16 sf=Tmp_SF
32 TmpSnk int16 sf=Tmp_SF
33 TmpTrns int16 sf=Tmp_SF
34 TmpOt int16 sf=Tmp_SF
35 Tmp_SF sunssf
36 St enum16
37 StVnd enum16
38 Evt1 bitfield32
40 Evt2 bitfield32
42 EvtVnd1 bitfield32
44 EvtVnd2 bitfield32
46 EvtVnd3 bitfield32
48 EvtVnd4 bitfield32
""")
"""Models 101/102/103, inverter (integer + SF): W is the AC power, + = exported [W]."""

NAMEPLATE = _layout(120, 26, """
0 DERTyp enum16
1 WRtg uint16 sf=WRtg_SF
2 WRtg_SF sunssf
3 VARtg uint16 sf=VARtg_SF
4 VARtg_SF sunssf
5 VArRtgQ1 int16 sf=VArRtg_SF
6 VArRtgQ2 int16 sf=VArRtg_SF
7 VArRtgQ3 int16 sf=VArRtg_SF
8 VArRtgQ4 int16 sf=VArRtg_SF
9 VArRtg_SF sunssf
10 ARtg uint16 sf=ARtg_SF
11 ARtg_SF sunssf
12 PFRtgQ1 int16 sf=PFRtg_SF
13 PFRtgQ2 int16 sf=PFRtg_SF
14 PFRtgQ3 int16 sf=PFRtg_SF
15 PFRtgQ4 int16 sf=PFRtg_SF
16 PFRtg_SF sunssf
17 WHRtg uint16 sf=WHRtg_SF
18 WHRtg_SF sunssf
19 AhrRtg uint16 sf=AhrRtg_SF
20 AhrRtg_SF sunssf
21 MaxChaRte uint16 sf=MaxChaRte_SF
22 MaxChaRte_SF sunssf
23 MaxDisChaRte uint16 sf=MaxDisChaRte_SF
24 MaxDisChaRte_SF sunssf
25 Pad pad
""")
"""Model 120, nameplate: ratings [W], [Wh]; DERTyp 4 = PV, 82 = PV + storage."""

SETTINGS = _layout(121, 30, """
0 WMax uint16 sf=WMax_SF rw
1 VRef uint16 sf=VRef_SF rw
2 VRefOfs int16 sf=VRefOfs_SF rw
3 VMax uint16 sf=VMinMax_SF rw
4 VMin uint16 sf=VMinMax_SF rw
5 VAMax uint16 sf=VAMax_SF rw
6 VArMaxQ1 int16 sf=VArMax_SF rw
7 VArMaxQ2 int16 sf=VArMax_SF rw
8 VArMaxQ3 int16 sf=VArMax_SF rw
9 VArMaxQ4 int16 sf=VArMax_SF rw
10 WGra uint16 sf=WGra_SF rw
11 PFMinQ1 int16 sf=PFMin_SF rw
12 PFMinQ2 int16 sf=PFMin_SF rw
13 PFMinQ3 int16 sf=PFMin_SF rw
14 PFMinQ4 int16 sf=PFMin_SF rw
15 VArAct enum16 rw
16 ClcTotVA enum16 rw
17 MaxRmpRte uint16 sf=MaxRmpRte_SF rw
18 ECPNomHz uint16 sf=ECPNomHz_SF rw
19 ConnPh enum16 rw
20 WMax_SF sunssf
21 VRef_SF sunssf
22 VRefOfs_SF sunssf
23 VMinMax_SF sunssf
24 VAMax_SF sunssf
25 VArMax_SF sunssf
26 WGra_SF sunssf
27 PFMin_SF sunssf
28 MaxRmpRte_SF sunssf
29 ECPNomHz_SF sunssf
""")
"""Model 121, basic settings: WMax is the base of WMaxLimPct [W]."""

CONTROLS = _layout(123, 24, """
0 Conn_WinTms uint16 rw
1 Conn_RvrtTms uint16 rw
2 Conn enum16 rw
3 WMaxLimPct uint16 sf=WMaxLimPct_SF rw
4 WMaxLimPct_WinTms uint16 rw
5 WMaxLimPct_RvrtTms uint16 rw
6 WMaxLimPct_RmpTms uint16 rw
7 WMaxLim_Ena enum16 rw
8 OutPFSet int16 sf=OutPFSet_SF rw
9 OutPFSet_WinTms uint16 rw
10 OutPFSet_RvrtTms uint16 rw
11 OutPFSet_RmpTms uint16 rw
12 OutPFSet_Ena enum16 rw
13 VArWMaxPct int16 sf=VArPct_SF rw
14 VArMaxPct int16 sf=VArPct_SF rw
15 VArAvalPct int16 sf=VArPct_SF rw
16 VArPct_WinTms uint16 rw
17 VArPct_RvrtTms uint16 rw
18 VArPct_RmpTms uint16 rw
19 VArPct_Mod enum16 rw
20 VArPct_Ena enum16 rw
21 WMaxLimPct_SF sunssf
22 OutPFSet_SF sunssf
23 VArPct_SF sunssf
""")
"""Model 123, immediate controls: WMaxLimPct is a percentage of WMax [%]."""

STORAGE = _layout(124, 24, """
0 WChaMax uint16 sf=WChaMax_SF rw
1 WChaGra uint16 sf=WChaDisChaGra_SF rw
2 WDisChaGra uint16 sf=WChaDisChaGra_SF rw
3 StorCtl_Mod bitfield16 rw
4 VAChaMax uint16 sf=VAChaMax_SF rw
5 MinRsvPct uint16 sf=MinRsvPct_SF rw
6 ChaState uint16 sf=ChaState_SF
7 StorAval uint16 sf=StorAval_SF
8 InBatV uint16 sf=InBatV_SF
9 ChaSt enum16
10 OutWRte int16 sf=InOutWRte_SF rw
11 InWRte int16 sf=InOutWRte_SF rw
12 InOutWRte_WinTms uint16 rw
13 InOutWRte_RvrtTms uint16 rw
14 InOutWRte_RmpTms uint16 rw
15 ChaGriSet enum16 rw
16 WChaMax_SF sunssf
17 WChaDisChaGra_SF sunssf
18 VAChaMax_SF sunssf
19 MinRsvPct_SF sunssf
20 ChaState_SF sunssf
21 StorAval_SF sunssf
22 InBatV_SF sunssf
23 InOutWRte_SF sunssf
""")
"""Model 124, storage: ChaState [% of WHRtg], OutWRte/InWRte [% of WChaMax], StorCtl_Mod bit 0 = charge limit, bit 1 = discharge limit."""

MODELS: dict[int, ModelLayout] = {m.model_id: m for m in (COMMON, INVERTER, NAMEPLATE, SETTINGS, CONTROLS, STORAGE)}
"""The layouts this adapter reads or writes, by model id (101 and 102 use ``INVERTER``)."""
for _model_id in (101, 102):
    MODELS[_model_id] = ModelLayout(_model_id, INVERTER.length, INVERTER.points)
del _model_id

# Enumerations (SunSpec model 103 "St", model 124 "ChaSt" and "StorCtl_Mod").
ST_OFF, ST_SLEEPING, ST_STARTING, ST_MPPT, ST_THROTTLED, ST_SHUTTING_DOWN, ST_FAULT, ST_STANDBY = range(1, 9)
CHAST_OFF, CHAST_EMPTY, CHAST_DISCHARGING, CHAST_CHARGING, CHAST_FULL, CHAST_HOLDING, CHAST_TESTING = range(1, 8)
STORCTL_CHARGE = 0x1
"""StorCtl_Mod bit: the charge limit InWRte is in force."""
STORCTL_DISCHARGE = 0x2
"""StorCtl_Mod bit: the discharge limit OutWRte is in force."""
ENA_DISABLED, ENA_ENABLED = 0, 1


class SunSpecFormatError(ValueError):
    """A frame or register block that is not valid Modbus/SunSpec; the message names the field and value."""


# -------------------------------------------------------- pure register codecs --


def _decode_int16(register: int) -> int:
    """Two's complement of one register [unitless]."""
    return register - 0x10000 if register & 0x8000 else register


def _decode_sf(register: int, name: str) -> int | None:
    """A sunssf register as a power of ten; None when not implemented.

    Raises
    ------
    SunSpecFormatError
        The exponent is outside :data:`SF_RANGE`.
    """
    if register == NOT_IMPLEMENTED["sunssf"]:
        return None
    sf = _decode_int16(register)
    if not SF_RANGE[0] <= sf <= SF_RANGE[1]:
        raise SunSpecFormatError(f"scale factor {name} = {sf} is outside {SF_RANGE[0]}..{SF_RANGE[1]}")
    return sf


def _decode_scaled(raw: int, sf: int | None, signed: bool) -> float | None:
    """``raw × 10**sf`` for a 16-bit point; None when the point or its scale factor is not implemented."""
    if raw == (0x8000 if signed else 0xFFFF) or sf is None:
        return None
    value = _decode_int16(raw) if signed else raw
    return value * 10.0**sf


def _encode_scaled(value: float | None, sf: int, signed: bool, name: str = "value") -> int:
    """The 16-bit register for ``value`` at scale factor ``sf``; None gives the not-implemented marker.

    Raises
    ------
    SunSpecFormatError
        ``value`` is not finite or does not fit the register at this scale
        factor (the marker value itself is never produced for a number).
    """
    if value is None:
        return 0x8000 if signed else 0xFFFF
    if not math.isfinite(value):
        raise SunSpecFormatError(f"{name} = {value} is not a finite number")
    raw = round(value / 10.0**sf)
    low, high = (-0x7FFF, 0x7FFF) if signed else (0, 0xFFFE)
    if not low <= raw <= high:
        raise SunSpecFormatError(f"{name} = {value} does not fit a {'int16' if signed else 'uint16'} at scale factor {sf}")
    return raw & 0xFFFF


def _decode_string(registers: Sequence[int]) -> str:
    """Text packed two bytes per register, NUL padded; bytes that are not UTF-8 are replaced."""
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").strip()


def _encode_string(text: str, size: int) -> list[int]:
    """``size`` registers holding ``text`` (UTF-8, cut to fit, NUL padded)."""
    raw = text.encode("utf-8")[: 2 * size].ljust(2 * size, b"\x00")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * size, 2)]


def decode_model(layout: ModelLayout, registers: Sequence[int]) -> dict[str, float | int | str | None]:
    """Values of every point of one model block (the registers after ID and L).

    Scaled points come out as ``raw × 10**sf`` floats in the point's SunSpec
    unit (W, Wh, V, A, %, ...); sunssf, enum and bitfield points as ints;
    strings as str; unimplemented points as None.

    Raises
    ------
    SunSpecFormatError
        Too few registers, a register outside 0..65535, or a scale factor out of range.
    """
    if len(registers) < layout.length:
        raise SunSpecFormatError(f"model {layout.model_id}: {len(registers)} registers, needs {layout.length}")
    if any(not 0 <= r <= 0xFFFF for r in registers[: layout.length]):
        raise SunSpecFormatError(f"model {layout.model_id}: a register is outside 0..65535")
    sfs = {p.name: _decode_sf(registers[p.offset], p.name) for p in layout.points if p.type == "sunssf"}
    values: dict[str, float | int | str | None] = dict(sfs)
    for p in layout.points:
        regs = registers[p.offset : p.offset + p.size]
        if p.type == "sunssf":
            continue
        if p.type == "string":
            values[p.name] = _decode_string(regs)
        elif p.type in ("acc32", "bitfield32", "uint32"):
            raw = (regs[0] << 16) | regs[1]
            if p.type != "acc32" and raw == NOT_IMPLEMENTED[p.type]:
                values[p.name] = None
            elif p.sf is not None:
                sf = sfs[p.sf]
                values[p.name] = None if sf is None else raw * 10.0**sf
            else:
                values[p.name] = raw
        elif p.sf is not None:
            values[p.name] = _decode_scaled(regs[0], sfs[p.sf], signed=p.type == "int16")
        elif p.type == "int16":
            values[p.name] = None if regs[0] == 0x8000 else _decode_int16(regs[0])
        else:
            values[p.name] = None if regs[0] == NOT_IMPLEMENTED.get(p.type) else regs[0]
    return values


def encode_model(layout: ModelLayout, values: Mapping[str, float | int | str | None]) -> list[int]:
    """The registers of one model block (after ID and L) for the given point values.

    Points missing from ``values`` (or None) get the not-implemented marker.
    Scale factors are taken from ``values`` as integer exponents; a scaled
    point given without its scale factor is an error.

    Raises
    ------
    SunSpecFormatError
        A value that does not fit its point, or an unknown point name.
    """
    unknown = set(values) - {p.name for p in layout.points}
    if unknown:
        raise SunSpecFormatError(f"model {layout.model_id} has no point(s) {sorted(unknown)}")
    registers = [0] * layout.length
    for p in layout.points:
        value = values.get(p.name)
        registers[p.offset : p.offset + p.size] = _encode_point(layout, p, value, values)
    return registers


def _encode_point(layout: ModelLayout, p: Point, value: object, values: Mapping[str, object]) -> list[int]:
    """Registers of one point of ``layout``; ``values`` supplies its scale factor."""
    if p.type == "string":
        return _encode_string("" if value is None else str(value), p.size)
    if p.type == "sunssf":
        return [_encode_sf(value, p.name)]
    sf = 0
    if p.sf is not None and value is not None:
        given = values.get(p.sf)
        if given is None:
            raise SunSpecFormatError(f"model {layout.model_id}: {p.name} = {value} needs scale factor {p.sf}")
        sf = int(given)  # type: ignore[call-overload]
    if p.size == 2:
        if value is None:
            raw = NOT_IMPLEMENTED[p.type]
        else:
            raw = round(float(value) / 10.0**sf)  # type: ignore[arg-type]
            if p.type == "acc32":
                raw %= 1 << 32  # accumulators roll over
            elif not 0 <= raw < NOT_IMPLEMENTED[p.type]:
                raise SunSpecFormatError(f"{p.name} = {value} does not fit a {p.type}")
        return [raw >> 16, raw & 0xFFFF]
    if p.type == "pad":
        return [0x8000]
    signed = p.type == "int16"
    if p.sf is None and value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise SunSpecFormatError(f"{p.name} = {value!r} must be an integer")
    return [_encode_scaled(None if value is None else float(value), sf, signed, p.name)]  # type: ignore[arg-type]


def _encode_sf(value: object, name: str) -> int:
    """The sunssf register for an integer exponent; None gives the not-implemented marker."""
    if value is None:
        return 0x8000
    if not isinstance(value, int) or isinstance(value, bool) or not SF_RANGE[0] <= value <= SF_RANGE[1]:
        raise SunSpecFormatError(f"scale factor {name} = {value!r} must be an integer in {SF_RANGE[0]}..{SF_RANGE[1]}")
    return value & 0xFFFF


def _parse_marker(registers: Sequence[int]) -> bool:
    """True when the two registers read "SunS"."""
    return tuple(registers[:2]) == SUNS_MARKER


def _parse_model_header(registers: Sequence[int], address: int) -> tuple[int, int]:
    """``(model id, length)`` from the two registers at ``address`` [unitless].

    Raises
    ------
    SunSpecFormatError
        Fewer than two registers, or a chain that would run past register 65535.
    """
    if len(registers) < 2:
        raise SunSpecFormatError(f"model header at {address}: {len(registers)} registers, needs 2")
    model_id, length = registers[0], registers[1]
    if model_id != END_MODEL_ID and address + 2 + length > 0xFFFF:
        raise SunSpecFormatError(f"model {model_id} at {address}: length {length} runs past register 65535")
    return model_id, length


def _parse_mbap(frame: bytes, expected_unit: int | None = None) -> int:
    """Length of the first whole Modbus/TCP response in ``frame``, 0 while it is still incomplete [bytes].

    Checks what a SunSpec client can receive: protocol id 0, a plausible
    length, function 3 (read holding registers) with an even byte count that
    matches the length, 6 or 16 (writes, length 6) or their exception
    responses (function | 0x80, length 3).

    Raises
    ------
    SunSpecFormatError
        The bytes cannot be a Modbus/TCP response (junk, another protocol, a wrong unit).
    """
    if len(frame) < 8:
        if len(frame) >= 4 and frame[2:4] != b"\x00\x00":
            raise SunSpecFormatError(f"MBAP protocol id {frame[2:4].hex()} is not 0000")
        return 0
    protocol, length, unit, function = int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big"), frame[6], frame[7]
    if protocol != 0:
        raise SunSpecFormatError(f"MBAP protocol id {protocol:#06x} is not 0")
    if not 3 <= length <= 254:
        raise SunSpecFormatError(f"MBAP length {length} is outside 3..254")
    if expected_unit is not None and unit != expected_unit:
        raise SunSpecFormatError(f"MBAP unit id {unit} is not the {expected_unit} asked")
    if function & 0x80:
        if function & 0x7F not in (3, 6, 16) or length != 3:
            raise SunSpecFormatError(f"exception response function {function:#04x} with length {length}")
    elif function == 3:
        if len(frame) >= 9 and (frame[8] % 2 or frame[8] + 3 != length):
            raise SunSpecFormatError(f"read response byte count {frame[8]} does not match MBAP length {length}")
    elif function in (6, 16):
        if length != 6:
            raise SunSpecFormatError(f"write response length {length} is not 6")
    else:
        raise SunSpecFormatError(f"function code {function} is not one a SunSpec client asks for")
    return 6 + length if len(frame) >= 6 + length else 0


def _parse_address(address: str | None) -> tuple[str, int, int]:
    """``(host, port, unit)`` from a device address ``"host:port/unit"``.

    Raises
    ------
    ValueError
        The address is missing or not of that form, or port/unit out of range.
    """
    if address is None:
        raise ValueError("address is missing; a modbus device needs 'host:port/unit', e.g. '127.0.0.1:5020/1'")
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})/(\d{1,3})", address.strip())
    if match is None:
        raise ValueError(f"address {address!r} is not 'host:port/unit', e.g. '127.0.0.1:5020/1'")
    host, port, unit = match.group(1).strip("[]"), int(match.group(2)), int(match.group(3))
    if not 1 <= port <= 65535:
        raise ValueError(f"address {address!r}: port {port} is outside 1..65535")
    if not 1 <= unit <= 247:
        raise ValueError(f"address {address!r}: unit {unit} is outside 1..247")
    return host, port, unit


# ----------------------------------------------------- device-level meaning --


@dataclass(frozen=True)
class _Ratings:
    """What a unit told us once at discovery (nameplate and settings)."""

    wmax_w: float
    """Base of WMaxLimPct: WMax of model 121, else WRtg of model 120 [W]."""
    wh_rtg_wh: float | None
    """Usable energy rating, model 120 WHRtg [Wh]."""
    max_discharge_w: float | None
    """Model 120 MaxDisChaRte [W]."""
    pct_sf: int | None
    """WMaxLimPct_SF of model 123 [unitless]."""


def _decode_ratings(nameplate: Mapping[str, object], settings: Mapping[str, object] | None, controls: Mapping[str, object] | None) -> _Ratings:
    """Ratings from decoded models 120, 121 and 123.

    Raises
    ------
    SunSpecFormatError
        Neither WMax nor WRtg is a positive number.
    """
    wmax = settings.get("WMax") if settings else None
    if not isinstance(wmax, float) or wmax <= 0:
        wmax = nameplate.get("WRtg")
    if not isinstance(wmax, float) or wmax <= 0:
        raise SunSpecFormatError(f"WMax/WRtg = {wmax} is not a positive power")
    wh = nameplate.get("WHRtg")
    dis = nameplate.get("MaxDisChaRte")
    sf = controls.get("WMaxLimPct_SF") if controls else None
    return _Ratings(
        wmax_w=wmax,
        wh_rtg_wh=wh if isinstance(wh, float) and wh > 0 else None,
        max_discharge_w=dis if isinstance(dis, float) and dis > 0 else None,
        pct_sf=sf if isinstance(sf, int) else None,
    )


def _decode_power_kw(inverter: Mapping[str, object]) -> float:
    """Measured AC power of model 101-103 in generator convention (+ = exported into the park) [kW].

    Raises
    ------
    SunSpecFormatError
        W or W_SF is not implemented.
    """
    w = inverter.get("W")
    if not isinstance(w, float):
        raise SunSpecFormatError(f"W = {w} (or W_SF) is not implemented; the inverter reports no power")
    return w / 1000.0 + 0.0


_ST_NOT_CONTROLLABLE = (ST_OFF, ST_SHUTTING_DOWN, ST_FAULT)
"""Model 1xx operating states in which the inverter follows no set-point."""


def _decode_online(inverter: Mapping[str, object]) -> bool:
    """Whether the inverter's status ``St`` lets it follow set-points (off, shutting down or fault: not) [unitless]."""
    return inverter.get("St") not in _ST_NOT_CONTROLLABLE


def _decode_pv_telemetry(inverter: Mapping[str, object]) -> tuple[float, float, float]:
    """``(p_kw, p_min_kw, p_max_kw)`` of a PV inverter [kW].

    The 1xx models publish no "available power": the measured power is the
    best known upper bound (exact while the inverter tracks the maximum power
    point, conservative while it is throttled), and a PV can always be
    curtailed to zero.
    """
    p_kw = _decode_power_kw(inverter)
    return p_kw, min(p_kw, 0.0), max(p_kw, 0.0)


def _decode_battery_telemetry(
    inverter: Mapping[str, object], storage: Mapping[str, object], ratings: _Ratings
) -> tuple[float, float, float, float]:
    """``(p_kw, p_min_kw, p_max_kw, soc_kwh)`` of a storage system [kW], [kWh].

    SoC = ChaState [%] × WHRtg [Wh]; charging down to -WChaMax unless ChaSt
    says FULL, discharging up to MaxDisChaRte (else WChaMax) unless ChaSt
    says EMPTY.

    Raises
    ------
    SunSpecFormatError
        W, ChaState, WHRtg or WChaMax is not implemented or out of range.
    """
    p_kw = _decode_power_kw(inverter)
    pct = storage.get("ChaState")
    if not isinstance(pct, float) or not -0.5 <= pct <= 100.5:
        raise SunSpecFormatError(f"ChaState = {pct} is not a percentage")
    if ratings.wh_rtg_wh is None:
        raise SunSpecFormatError("WHRtg is not implemented; the battery's SoC cannot be given in kWh")
    wcha = _wchamax_w(storage)
    soc_kwh = max(min(pct, 100.0), 0.0) / 100.0 * ratings.wh_rtg_wh / 1000.0
    state = storage.get("ChaSt")
    p_min_kw = 0.0 if state == CHAST_FULL else -wcha / 1000.0
    p_max_kw = 0.0 if state == CHAST_EMPTY else (ratings.max_discharge_w or wcha) / 1000.0
    return p_kw, p_min_kw + 0.0, p_max_kw, soc_kwh


def _wchamax_w(storage: Mapping[str, object]) -> float:
    """WChaMax of model 124, the base of InWRte and OutWRte [W]."""
    wcha = storage.get("WChaMax")
    if not isinstance(wcha, float) or wcha <= 0:
        raise SunSpecFormatError(f"WChaMax = {wcha} is not a positive power")
    return wcha


def _encode_pv_limit(p_kw: float | None, wmax_w: float, pct_sf: int) -> list[tuple[int, list[int]]]:
    """Model 123 writes for a PV set-point: ``[(offset after L, registers), ...]`` in write order.

    A power caps the inverter at ``p_kw / WMax`` (WMaxLimPct, clipped to
    0..100 %) and then enables the limit; None disables it (WMaxLim_Ena = 0).
    """
    ena = CONTROLS.point("WMaxLim_Ena").offset
    if p_kw is None:
        return [(ena, [ENA_DISABLED])]
    pct = min(max(p_kw * 1000.0 / wmax_w * 100.0, 0.0), 100.0)
    return [(CONTROLS.point("WMaxLimPct").offset, [_encode_scaled(pct, pct_sf, False, "WMaxLimPct")]), (ena, [ENA_ENABLED])]


def _encode_battery_setpoint(p_kw: float | None, wchamax_w: float, rte_sf: int) -> list[tuple[int, list[int]]]:
    """Model 124 writes for a battery set-point: ``[(offset after L, registers), ...]`` in write order.

    The signed set-point becomes a window of zero width: OutWRte = p / WChaMax
    (largest discharge) and InWRte = -p / WChaMax (largest charge), both in
    force (StorCtl_Mod = 3). A negative InWRte forces discharge, a negative
    OutWRte forces charge. None lifts both limits (StorCtl_Mod = 0).
    """
    mod = STORAGE.point("StorCtl_Mod").offset
    if p_kw is None:
        return [(mod, [0])]
    pct = min(max(p_kw * 1000.0 / wchamax_w * 100.0, -100.0), 100.0)
    rates = [_encode_scaled(pct, rte_sf, True, "OutWRte"), _encode_scaled(-pct, rte_sf, True, "InWRte")]
    return [(STORAGE.point("OutWRte").offset, rates), (mod, [STORCTL_CHARGE | STORCTL_DISCHARGE])]


# ------------------------------------------------------------------ the shell --


_NOTHING_THERE = (1, 2)
"""Exception codes (ILLEGAL_FUNCTION, ILLEGAL_ADDRESS) that mean "no SunSpec map at this base"."""


class _LinkDown(Exception):
    """The connection to an endpoint timed out, closed or carried garbage."""


class _Refused(Exception):
    """The unit answered with a Modbus exception response."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception code {code}")
        self.code = code


class _Backoff:
    """Exponential backoff between attempts: initial, 2x, 4x, ... up to the maximum [s]."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.failures = 0
        self.retry_at = 0.0  # monotonic time of the next attempt [s]

    def due(self) -> bool:
        return time.monotonic() >= self.retry_at

    def failed(self) -> float:
        """Note one failure; returns the wait before the next attempt [s]."""
        self.failures += 1
        wait_s = min(self.max_s, self.initial_s * 2 ** min(self.failures - 1, 30))
        self.retry_at = time.monotonic() + wait_s
        return wait_s

    def succeeded(self) -> None:
        self.failures, self.retry_at = 0, 0.0


@dataclass
class _Unit:
    """One SunSpec device behind an endpoint."""

    device: PV | Battery
    unit: int
    backoff: _Backoff
    models: dict[int, int] | None = None
    """Model id -> address of its ID register; None until discovered."""
    ratings: _Ratings | None = None
    storage: dict[str, float | int | str | None] = field(default_factory=dict)
    """Model 124 as last read (WChaMax and InOutWRte_SF are needed to write)."""

    def inverter_id(self) -> int:
        assert self.models is not None
        return next(m for m in INVERTER_MODEL_IDS if m in self.models)


@dataclass
class _Endpoint:
    """One TCP connection (host:port) and the units reached through it."""

    host: str
    port: int
    backoff: _Backoff
    units: dict[str, _Unit] = field(default_factory=dict)
    client: AsyncModbusTcpClient | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    garbage: str | None = None
    """What the frame check found wrong in the bytes received for the request in flight."""
    garbage_seen: asyncio.Event = field(default_factory=asyncio.Event)
    expected_unit: int | None = None


class ModbusAdapter(Adapter):
    """SunSpec PV inverters and batteries over Modbus TCP, one connection per ``host:port``.

    Parameters
    ----------
    devices : sequence of Device
        PV and Battery devices, each with ``address`` ``"host:port/unit"``.
    clock : Clock
        Stamps samples with the time their registers were read (default: real time).
    timeout_s : float
        Connect and response timeout of every request [s].
    backoff_initial_s, backoff_max_s : float
        First and longest wait before reconnecting to an endpoint or
        re-discovering a unit that failed [s].

    Attributes
    ----------
    unknown_setpoints : int
        Set-points for device ids this adapter does not serve (ignored) [unitless].
    dropped_setpoints : int
        Set-points not delivered because their device was unreachable [unitless].
    rejected_setpoints : int
        Set-points the device answered with a Modbus exception [unitless].
    """

    name = "modbus"

    def __init__(
        self,
        devices: Sequence[Device] = (),
        *,
        clock: Clock | None = None,
        timeout_s: float = 1.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s {timeout_s} must be positive")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError(f"backoff_initial_s {backoff_initial_s} must be positive and at most backoff_max_s {backoff_max_s}")
        self.clock: Clock = clock or RealClock()
        self.timeout_s = timeout_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.unknown_setpoints = self.dropped_setpoints = self.rejected_setpoints = 0
        self.log = structlog.get_logger("vpp.adapters.modbus")
        self._endpoints: dict[tuple[str, int], _Endpoint] = {}
        self._unit_of: dict[str, tuple[str, int]] = {}  # device id -> its endpoint key
        self._connected = False
        self._closed = False
        for device in devices:
            self._add(device)

    # -- devices -----------------------------------------------------------------

    def _add(self, device: Device) -> None:
        """Serve ``device`` (replacing one with the same id); AdapterError if it cannot be served."""
        if not isinstance(device, (PV, Battery)):
            raise AdapterError(f"modbus adapter: device {device.id}: kind '{device.kind}' has no SunSpec model here (pv or battery only)")
        try:
            host, port, unit = _parse_address(device.address)
        except ValueError as exc:
            raise AdapterError(f"modbus adapter: device {device.id}: {exc}") from None
        self._remove(device.id)
        key = (host, port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = _Endpoint(host, port, self._new_backoff())
        endpoint.units[device.id] = _Unit(device, unit, self._new_backoff())
        self._unit_of[device.id] = key

    def _remove(self, device_id: str) -> None:
        key = self._unit_of.pop(device_id, None)
        if key is None:
            return
        endpoint = self._endpoints[key]
        endpoint.units.pop(device_id, None)
        if not endpoint.units:
            self._drop_client(endpoint)
            del self._endpoints[key]

    def _new_backoff(self) -> _Backoff:
        return _Backoff(self.backoff_initial_s, self.backoff_max_s)

    async def add_device(self, device: Device) -> None:
        """Serve a newly enrolled device, or replace a changed one (new address, new limits).

        Allowed before :meth:`connect`. The device is discovered on the next read.

        Raises
        ------
        AdapterError
            After close, or the device is not a PV or battery, or its
            ``address`` is not ``"host:port/unit"``.
        """
        if self._closed:
            raise AdapterError("modbus adapter: add_device after close")
        self._add(device)

    @property
    def device_ids(self) -> list[str]:
        """Ids of the devices this adapter serves."""
        return list(self._unit_of)

    # -- lifecycle -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True between ``connect`` and ``close`` (individual devices may still be unreachable)."""
        return self._connected

    async def connect(self) -> None:
        """Try every endpoint once; unreachable ones are retried later with backoff, never raised."""
        if self._closed:
            raise AdapterError("modbus adapter: connect after close")
        self._connected = True
        await asyncio.gather(*(self._open(ep) for ep in list(self._endpoints.values())))

    async def close(self) -> None:
        """Close every connection; safe to call twice."""
        self._connected = False
        self._closed = True
        for endpoint in self._endpoints.values():
            self._drop_client(endpoint)

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise AdapterError(f"modbus adapter: {what} after close")
        if not self._connected:
            raise AdapterError(f"modbus adapter: {what} before connect")

    # -- connections ---------------------------------------------------------------

    async def _connect_endpoint(self, ep: _Endpoint) -> AsyncModbusTcpClient | None:
        """The endpoint's live client, connecting if its backoff allows; None when unreachable now."""
        if ep.client is not None and ep.client.connected:
            return ep.client
        self._drop_client(ep)
        if not ep.backoff.due():
            return None
        client = AsyncModbusTcpClient(
            ep.host,
            port=ep.port,
            name=f"sunspec {ep.host}:{ep.port}",
            timeout=self.timeout_s,
            retries=0,  # one try per request: our timeout is the timeout
            reconnect_delay=0,  # we reconnect ourselves, with backoff per endpoint
            trace_packet=partial(self._check_received, ep),
        )
        if not await client.connect():
            client.close()
            wait_s = ep.backoff.failed()
            self.log.warning("modbus endpoint unreachable", host=ep.host, port=ep.port, retry_in_s=wait_s)
            return None
        ep.client = client
        for unit in ep.units.values():
            unit.models = None  # whatever restarted may have a new map
        return client

    async def _open(self, ep: _Endpoint) -> None:
        async with ep.lock:
            await self._connect_endpoint(ep)

    def _drop_client(self, ep: _Endpoint) -> None:
        if ep.client is not None:
            ep.client.close()
            ep.client = None

    def _link_failed(self, ep: _Endpoint, reason: object) -> None:
        """Close the endpoint's connection and back off; its units are rediscovered after reconnecting."""
        self._drop_client(ep)
        for unit in ep.units.values():
            unit.models = None
        wait_s = ep.backoff.failed()
        self.log.warning("modbus endpoint failed", host=ep.host, port=ep.port, error=str(reason), retry_in_s=wait_s)

    def _check_received(self, ep: _Endpoint, sending: bool, data: bytes) -> bytes:
        """pymodbus trace hook: let only plausible responses through; junk is held back and remembered."""
        if sending:
            return data
        try:
            _parse_mbap(data, ep.expected_unit)
        except SunSpecFormatError as exc:
            if ep.garbage is None:
                ep.garbage = f"{exc}; bytes {data[:48].hex()}"
                ep.garbage_seen.set()
            return b""  # pymodbus never sees it; the request is abandoned and the link reset
        return data

    async def _request(self, ep: _Endpoint, unit: int, call: str, address: int, arg: object) -> list[int]:
        """One read (``arg`` = count) or write (``arg`` = registers) on the endpoint's connection.

        Raises
        ------
        _LinkDown
            No connection, a timeout, or garbage received (counted as malformed).
        _Refused
            The unit answered with a Modbus exception response.
        SunSpecFormatError
            A read returned another number of registers than asked.
        """
        client = ep.client
        if client is None or not client.connected:
            raise _LinkDown("not connected")
        ep.garbage, ep.expected_unit = None, unit
        ep.garbage_seen = asyncio.Event()
        try:
            if call == "read":
                pending = client.read_holding_registers(address, count=int(arg), device_id=unit)  # type: ignore[call-overload]
            else:
                pending = client.write_registers(address, list(arg), device_id=unit)  # type: ignore[call-overload]
        except (ModbusException, OSError) as exc:  # pymodbus raises here when the transport just went
            raise _LinkDown(exc) from None
        answer = asyncio.ensure_future(pending)
        garbage = asyncio.ensure_future(ep.garbage_seen.wait())
        try:
            # Junk is known as soon as it arrives: no need to sit out the timeout.
            await asyncio.wait({answer, garbage}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (answer, garbage):
                if not task.done():
                    task.cancel()
        if ep.garbage is not None:
            self.note_malformed("modbus frame", f"{ep.host}:{ep.port}/{unit}: {ep.garbage}")
            raise _LinkDown(f"garbage received: {ep.garbage}")
        try:
            response = answer.result()
        except (ModbusException, TimeoutError, OSError) as exc:
            raise _LinkDown(exc) from None
        if response.isError():
            raise _Refused(int(getattr(response, "exception_code", 0)))
        if call == "read" and len(response.registers) != int(arg):  # type: ignore[call-overload]
            raise SunSpecFormatError(f"read of {arg} registers at {address} returned {len(response.registers)}")
        return list(response.registers)

    # -- discovery -------------------------------------------------------------------

    async def _discover(self, ep: _Endpoint, u: _Unit) -> None:
        """Find "SunS", walk the model chain and read the ratings of ``u``.

        Raises
        ------
        SunSpecFormatError
            No marker, a broken chain, or a model the device kind needs is missing.
        """
        base = await self._find_marker(ep, u.unit)
        models: dict[int, int] = {}
        address = base + 2
        for _ in range(MAX_MODELS):
            model_id, length = _parse_model_header(await self._request(ep, u.unit, "read", address, 2), address)
            if model_id == END_MODEL_ID:
                break
            if model_id in MODELS and length < MODELS[model_id].length:
                raise SunSpecFormatError(f"model {model_id} at {address}: length {length}, needs {MODELS[model_id].length}")
            models.setdefault(model_id, address)
            address += 2 + length
        else:
            raise SunSpecFormatError(f"model chain from {base}: no end marker after {MAX_MODELS} models")
        needed = (120, 123) if isinstance(u.device, PV) else (120, 124)
        missing = [m for m in needed if m not in models]
        if not any(m in models for m in INVERTER_MODEL_IDS):
            missing.insert(0, 103)
        if missing:
            raise SunSpecFormatError(f"{u.device.kind} at unit {u.unit} lacks model(s) {missing} (found {sorted(models)})")
        u.models = models
        nameplate = await self._read_model(ep, u, 120)
        settings = await self._read_model(ep, u, 121) if 121 in models else None
        controls = await self._read_model(ep, u, 123) if 123 in models else None
        u.ratings = _decode_ratings(nameplate, settings, controls)
        if isinstance(u.device, PV) and u.ratings.pct_sf is None:
            raise SunSpecFormatError("WMaxLimPct_SF is not implemented; the PV power limit cannot be written")
        common = await self._read_model(ep, u, 1) if 1 in models else {}
        self.log.info(
            "sunspec device discovered", device_id=u.device.id, endpoint=f"{ep.host}:{ep.port}/{u.unit}",
            base=base, models=sorted(models), manufacturer=common.get("Mn"), serial=common.get("SN"),
        )  # fmt: skip

    async def _find_marker(self, ep: _Endpoint, unit: int) -> int:
        """The base address whose two registers read "SunS" (tries 40000, 0, 50000)."""
        seen = []
        for base in BASE_ADDRESSES:
            try:
                registers = await self._request(ep, unit, "read", base, 2)
            except _Refused as exc:
                if exc.code not in _NOTHING_THERE:
                    raise  # busy, or a gateway that cannot reach the unit: try again later, not garbage
                seen.append(f"{base}: {exc}")
                continue
            if _parse_marker(registers):
                return base
            seen.append(f"{base}: {registers[0]:#06x} {registers[1]:#06x}")
        raise SunSpecFormatError(f"no 'SunS' marker ({'; '.join(seen)})")

    async def _read_model(self, ep: _Endpoint, u: _Unit, model_id: int) -> dict[str, float | int | str | None]:
        assert u.models is not None
        layout = MODELS[model_id]
        return decode_model(layout, await self._request(ep, u.unit, "read", u.models[model_id] + 2, layout.length))

    # -- telemetry -------------------------------------------------------------------

    async def read_telemetry(self) -> list[TelemetrySample]:
        """Poll every reachable device once, all endpoints concurrently; unreachable ones are omitted.

        Each sample is stamped with the clock's time when its inverter model was read.
        """
        self._check_open("read_telemetry")
        rounds = await asyncio.gather(*(self._poll_endpoint(ep) for ep in list(self._endpoints.values())))
        return [sample for samples in rounds for sample in samples]

    async def _poll_endpoint(self, ep: _Endpoint) -> list[TelemetrySample]:
        async with ep.lock:
            if await self._connect_endpoint(ep) is None:
                return []
            samples = []
            for u in list(ep.units.values()):
                try:
                    sample = await self._poll_unit(ep, u)
                except _LinkDown as exc:
                    self._link_failed(ep, exc)
                    break
                if sample is not None:
                    samples.append(sample)
            if samples:
                ep.backoff.succeeded()
            return samples

    async def _poll_unit(self, ep: _Endpoint, u: _Unit) -> TelemetrySample | None:
        """The unit's sample, or None when it refused or sent nonsense (counted as malformed)."""
        try:
            if u.models is None:
                if not u.backoff.due():
                    return None
                await self._discover(ep, u)
            inverter = await self._read_model(ep, u, u.inverter_id())
            ts = self.clock.now()
            if isinstance(u.device, PV):
                p_kw, p_min_kw, p_max_kw = _decode_pv_telemetry(inverter)
                soc_kwh = None
            else:
                u.storage = await self._read_model(ep, u, 124)
                assert u.ratings is not None
                p_kw, p_min_kw, p_max_kw, soc_kwh = _decode_battery_telemetry(inverter, u.storage, u.ratings)
        except SunSpecFormatError as exc:
            u.models = None
            wait_s = u.backoff.failed()
            self.note_malformed("sunspec registers", f"{u.device.id} at {ep.host}:{ep.port}/{u.unit}: {exc} (retry in {wait_s:.1f} s)")
            return None
        except _Refused as exc:
            self.log.info("sunspec device refused a read", device_id=u.device.id, error=str(exc))
            return None
        u.backoff.succeeded()
        return TelemetrySample(
            device_id=u.device.id, ts=ts, p_kw=p_kw, p_min_kw=min(p_min_kw, p_max_kw), p_max_kw=p_max_kw,
            soc_kwh=soc_kwh, online=_decode_online(inverter),
        )  # fmt: skip

    # -- set-points --------------------------------------------------------------------

    async def write_setpoints(self, setpoints: Sequence[Setpoint]) -> None:
        """Write each set-point to its device, endpoints concurrently.

        PV: model 123 WMaxLimPct + WMaxLim_Ena; battery: model 124 OutWRte,
        InWRte + StorCtl_Mod; ``p_kw=None`` releases the limit. Set-points to
        unreachable devices are counted in ``dropped_setpoints``, refused ones
        in ``rejected_setpoints``; neither raises.
        """
        self._check_open("write_setpoints")
        by_endpoint: dict[tuple[str, int], list[Setpoint]] = {}
        for sp in setpoints:
            key = self._unit_of.get(sp.device_id)
            if key is None:
                self.unknown_setpoints += 1
                continue
            by_endpoint.setdefault(key, []).append(sp)
        await asyncio.gather(*(self._write_endpoint(self._endpoints[k], sps) for k, sps in by_endpoint.items()))

    async def _write_endpoint(self, ep: _Endpoint, setpoints: list[Setpoint]) -> None:
        async with ep.lock:
            if await self._connect_endpoint(ep) is None:
                self.dropped_setpoints += len(setpoints)
                return
            for i, sp in enumerate(setpoints):
                u = ep.units.get(sp.device_id)
                if u is None:  # removed while we waited for the lock
                    self.unknown_setpoints += 1
                    continue
                try:
                    await self._write_unit(ep, u, sp.p_kw)
                except _LinkDown as exc:
                    self._link_failed(ep, exc)
                    self.dropped_setpoints += len(setpoints) - i
                    return
                except _Refused as exc:
                    self.rejected_setpoints += 1
                    self.log.warning("sunspec device refused a set-point", device_id=u.device.id, p_kw=sp.p_kw, error=str(exc))
                except SunSpecFormatError as exc:
                    u.models = None
                    self.dropped_setpoints += 1
                    self.note_malformed("sunspec registers", f"{u.device.id}: {exc}")

    async def _write_unit(self, ep: _Endpoint, u: _Unit, p_kw: float | None) -> None:
        if u.models is None:
            await self._discover(ep, u)
        assert u.models is not None and u.ratings is not None
        if isinstance(u.device, PV):
            assert u.ratings.pct_sf is not None
            model_id, writes = 123, _encode_pv_limit(p_kw, u.ratings.wmax_w, u.ratings.pct_sf)
        else:
            if not u.storage:
                u.storage = await self._read_model(ep, u, 124)
            rte_sf = u.storage.get("InOutWRte_SF")
            if not isinstance(rte_sf, int):
                raise SunSpecFormatError("InOutWRte_SF is not implemented; the battery rate cannot be written")
            model_id, writes = 124, _encode_battery_setpoint(p_kw, _wchamax_w(u.storage), rte_sf)
        for offset, registers in writes:
            await self._request(ep, u.unit, "write", u.models[model_id] + 2 + offset, registers)
