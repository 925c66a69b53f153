"""Reference attribution: the rules of :mod:`vpp.carbon.attribution`, one interval and one enterprise at a time.

Plain Python floats and loops, written for obviousness rather than speed.
Tests compare :func:`vpp.carbon.attribute` with it on random parks, and the
benchmark measures it on a subset of the park. It covers the per-enterprise
sources (no emissions) and returns a dict of (E, T) arrays named like the
fields of :class:`vpp.carbon.Attribution`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from vpp.carbon.attribution import BatteryFlows, SharedSplit

_OUTPUTS = (
    "own_pv_kwh",
    "shared_green_kwh",
    "storage_green_kwh",
    "contract_kwh",
    "grid_kwh",
    "storage_grid_kwh",
    "grid_direct_kwh",
    "battery_green_charge_kwh",
    "battery_grid_charge_kwh",
    "own_pv_pooled_kwh",
    "own_pv_exported_kwh",
    "storage_exported_green_kwh",
    "unmatched_contract_kwh",
)


def _battery_params(batteries: BatteryFlows | None) -> list[dict]:
    """One dict per battery with its flows as lists and its scalar parameters [kWh], [unitless]."""
    if batteries is None:
        return []
    charge = np.asarray(batteries.charge_kwh, dtype=float)
    count = charge.shape[0]

    def each(value: ArrayLike) -> list[float]:
        return [float(v) for v in np.broadcast_to(np.asarray(value, dtype=float), (count,))]

    rows = zip(
        charge.tolist(),
        np.asarray(batteries.discharge_kwh, dtype=float).tolist(),
        [int(o) for o in np.asarray(batteries.owner)],
        each(batteries.charge_efficiency),
        each(batteries.discharge_efficiency),
        each(batteries.initial_green_kwh),
        each(batteries.initial_grid_kwh),
    )
    keys = ("charge", "discharge", "owner", "eta_in", "eta_out", "green", "grid")
    return [dict(zip(keys, row)) for row in rows]


def _pro_rata(offers: list[float], need: list[float]) -> tuple[list[float], list[float]]:
    """Split sum(offers) pro rata to need; returns (given per enterprise, used per offer) [kWh]."""
    available, total_need = sum(offers), sum(need)
    share = 0.0 if total_need <= 0 else (1.0 if available >= total_need else available / total_need)
    used_share = 0.0 if available <= 0 else (1.0 if total_need >= available else total_need / available)
    return [n * share for n in need], [o * used_share for o in offers]


def _cap(contract: np.ndarray | None, s: int, e: int, t: int) -> float:
    if contract is None:
        return float("inf")
    return float(contract[s, e, 0] if contract.shape[2] == 1 else contract[s, e, t])


def _shared(
    supplies: list[float], pool: float, need: list[float], split: SharedSplit, t: int
) -> tuple[list[float], float]:
    """Shared green per enterprise for one interval, and the pool energy used [kWh]."""
    given = [0.0] * len(need)
    offers = list(supplies)
    if split.rule == "priority":
        contract = None
        if split.contract_kwh is not None:
            contract = np.asarray(split.contract_kwh, dtype=float)
            contract = contract[:, :, None] if contract.ndim == 2 else contract
        for s, supply in enumerate(supplies):
            ranks = range(len(need)) if split.priority is None else np.asarray(split.priority, dtype=float)[s]
            order = sorted(range(len(need)), key=lambda e: (ranks[e], e))
            left = supply
            for e in order:
                take = min(need[e] - given[e], _cap(contract, s, e, t), max(left, 0.0))
                given[e] += take
                left -= take
            offers[s] = max(left, 0.0)
    rest, used = _pro_rata(offers + [pool], [n - g for n, g in zip(need, given)])
    return [g + r for g, r in zip(given, rest)], used[-1]


def _battery_step(b: dict, green_charge: float, t: int) -> tuple[float, float, float]:
    """Advance one battery by interval ``t``; returns (green, tracked grid, untracked) delivered [kWh]."""
    b["green"] += b["eta_in"] * green_charge
    b["grid"] += b["eta_in"] * (b["charge"][t] - green_charge)
    stock = b["green"] + b["grid"]
    want = b["discharge"][t] / b["eta_out"]
    drawn = min(want, stock)
    take_green = b["green"] * drawn / stock if stock > 0 else 0.0
    take_grid = b["grid"] * drawn / stock if stock > 0 else 0.0
    b["green"] -= take_green
    b["grid"] -= take_grid
    return b["eta_out"] * take_green, b["eta_out"] * take_grid, b["eta_out"] * (want - drawn)


def reference_attribute(
    consumption_kwh: ArrayLike,
    own_pv_kwh: ArrayLike | None = None,
    shared_green_kwh: ArrayLike | None = None,
    *,
    split: SharedSplit | None = None,
    batteries: BatteryFlows | None = None,
    contract_kwh: ArrayLike | None = None,
    pool_surplus: bool = True,
) -> dict[str, np.ndarray]:
    """Same rules as :func:`vpp.carbon.attribute`, interval by interval, enterprise by enterprise.

    Parameters are those of :func:`vpp.carbon.attribute` (without factors)
    [kWh]; returns a dict of (E, T) arrays [kWh].
    """
    split = SharedSplit() if split is None else split
    consumption = np.asarray(consumption_kwh, dtype=float)
    n_e, n_t = consumption.shape
    pv = np.zeros_like(consumption) if own_pv_kwh is None else np.asarray(own_pv_kwh, dtype=float)
    supplies = np.zeros((0, n_t)) if shared_green_kwh is None else np.asarray(shared_green_kwh, dtype=float)
    offered = np.zeros_like(consumption) if contract_kwh is None else np.asarray(contract_kwh, dtype=float)
    cells = _battery_params(batteries)
    out = {name: np.zeros((n_e, n_t)) for name in _OUTPUTS}
    for t in range(n_t):
        _interval(
            t,
            consumption[:, t].tolist(),
            pv[:, t].tolist(),
            supplies[:, t].tolist(),
            offered[:, t].tolist(),
            cells,
            split,
            pool_surplus,
            out,
        )
    return out


def _interval(
    t: int,
    consumption: list[float],
    pv: list[float],
    supplies: list[float],
    offered: list[float],
    cells: list[dict],
    split: SharedSplit,
    pool_surplus: bool,
    out: dict[str, np.ndarray],
) -> None:
    """Attribute interval ``t`` and write it into column ``t`` of ``out`` [kWh]."""
    n_e = len(consumption)
    own = [min(p, c) for p, c in zip(pv, consumption)]
    need = [c - o for c, o in zip(consumption, own)]
    surplus = [p - o for p, o in zip(pv, own)]

    charge_e = [0.0] * n_e
    for b in cells:
        charge_e[b["owner"]] += b["charge"][t]
    green_charge_e = [min(s, c) for s, c in zip(surplus, charge_e)]
    released = [[0.0, 0.0, 0.0] for _ in range(n_e)]  # green, tracked grid, untracked
    for b in cells:
        e = b["owner"]
        green = b["charge"][t] * green_charge_e[e] / charge_e[e] if charge_e[e] > 0 else 0.0
        for k, value in enumerate(_battery_step(b, min(green, b["charge"][t]), t)):
            released[e][k] += value
    surplus = [max(s - g, 0.0) for s, g in zip(surplus, green_charge_e)]

    storage_green, storage_grid, stored_used = [0.0] * n_e, [0.0] * n_e, [0.0] * n_e
    for e in range(n_e):
        total = sum(released[e])
        stored_used[e] = min(total, need[e])
        share = stored_used[e] / total if total > 0 else 0.0
        storage_green[e] = min(released[e][0] * share, stored_used[e])
        storage_grid[e] = min(released[e][1] * share, stored_used[e] - storage_green[e])
        need[e] -= stored_used[e]

    pool = sum(surplus) if pool_surplus else 0.0
    shared, pool_used = _shared(supplies, pool, need, split, t)
    for e in range(n_e):
        shared[e] = min(shared[e], need[e])
        need[e] -= shared[e]
    contract = [min(o, n) for o, n in zip(offered, need)]

    for e in range(n_e):
        pooled = 0.0 if pool <= 0 else surplus[e] * (1.0 if pool_used >= pool else pool_used / pool)
        row = {
            "own_pv_kwh": own[e],
            "shared_green_kwh": shared[e],
            "storage_green_kwh": storage_green[e],
            "contract_kwh": contract[e],
            "grid_kwh": need[e] - contract[e] + stored_used[e] - storage_green[e],
            "storage_grid_kwh": storage_grid[e],
            "grid_direct_kwh": need[e] - contract[e],
            "battery_green_charge_kwh": green_charge_e[e],
            "battery_grid_charge_kwh": charge_e[e] - green_charge_e[e],
            "own_pv_pooled_kwh": pooled,
            "own_pv_exported_kwh": surplus[e] - pooled,
            "storage_exported_green_kwh": released[e][0] - storage_green[e],
            "unmatched_contract_kwh": offered[e] - contract[e],
        }
        for name, value in row.items():
            out[name][e, t] = value
