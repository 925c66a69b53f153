"""The park's network limits: its grid connection and the feeders (or transformers) inside it.

Configured in a TOML or JSON file (``vpp serve --network FILE``)::

    [connection]                 # the park's point of common coupling
    import_limit_kw = 12000      # most the park may draw from the grid [kW]
    export_limit_kw = 2000       # most it may feed back [kW]

    [[feeders]]
    id = "F1"
    enterprise_ids = ["E01", "E02", "E03"]
    import_limit_kw = 3000       # thermal limit of the feeder, drawing [kW]
    export_limit_kw = 500        # reverse-power limit [kW]

A limit that is absent is no limit. Feeders are one level deep (an
enterprise sits on at most one feeder), as ``dispatch.network`` requires.

The limits are on *grid exchange*, what the meters see, not on the fleet:
every enterprise also has load the fleet does not control. So each limit
becomes a range of fleet power (generator sign, + into the park) through the
load the fleet does not control, measured as ``import - export + fleet``
from the grid meters over their last reading interval::

    -export_limit <= uncontrolled - fleet <= import_limit
    =>  uncontrolled - import_limit <= fleet <= uncontrolled + export_limit

A feeder (or the connection) whose enterprises have no measured exchange yet
(fewer than two meter readings) is not limited: the service logs it.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vpp.errors import InvalidInput
from vpp.model import Identifier, MeteringPoint, MeterReading

__all__ = [
    "Feeder",
    "FleetCaps",
    "GridLimit",
    "NetworkConfig",
    "exchange_kw",
    "fleet_caps",
    "fleet_range_kw",
    "load_network",
]


class GridLimit(BaseModel):
    """Import and export limits of one connection [kW]; None = unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    import_limit_kw: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="most drawn [kW]")
    export_limit_kw: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="most fed back [kW]")


class Feeder(GridLimit):
    """A feeder or transformer serving several enterprises."""

    id: Identifier
    enterprise_ids: list[Identifier] = Field(min_length=1, description="enterprises it serves")


class NetworkConfig(BaseModel):
    """The park's grid connection and feeders."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connection: GridLimit = GridLimit()
    feeders: list[Feeder] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_level(self) -> NetworkConfig:
        seen_ids: set[str] = set()
        owner: dict[str, str] = {}
        for feeder in self.feeders:
            if feeder.id in seen_ids:
                raise ValueError(f"feeders: id '{feeder.id}' appears twice")
            seen_ids.add(feeder.id)
            for enterprise_id in feeder.enterprise_ids:
                if enterprise_id in owner:
                    raise ValueError(
                        f"feeders: enterprise '{enterprise_id}' is on both '{owner[enterprise_id]}' and '{feeder.id}'"
                        " (an enterprise sits on one feeder)"
                    )
                owner[enterprise_id] = feeder.id
        return self

    @property
    def limited(self) -> bool:
        """True when any limit is set."""
        limits = [self.connection, *self.feeders]
        return any(x.import_limit_kw is not None or x.export_limit_kw is not None for x in limits)


def load_network(path: str | Path) -> NetworkConfig:
    """Read a network file (``.toml`` or ``.json``). Raises InvalidInput naming the file and the field."""
    file = Path(path)
    try:
        text = file.read_text()
        data = json.loads(text) if file.suffix.lower() == ".json" else tomllib.loads(text)
        return NetworkConfig.model_validate(data)
    except OSError as exc:
        raise InvalidInput("network", f"cannot read {file}: {exc.strerror}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput("network", f"{file} is not valid {file.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["network", *(str(part) for part in first["loc"])])
        raise InvalidInput(where, f"{first['msg']} (in {file})") from None


def exchange_kw(
    meters: Iterable[MeteringPoint], previous: Mapping[str, MeterReading], latest: Mapping[str, MeterReading]
) -> dict[str, float]:
    """Average grid exchange per enterprise between two readings of its grid meters [kW, + imported].

    Enterprises with a grid meter lacking two readings (or with no time between
    them) are left out: their exchange is unknown.
    """
    exchange: dict[str, float] = {}
    unknown: set[str] = set()
    for meter in meters:
        if meter.purpose != "grid":
            continue
        before, after = previous.get(meter.id), latest.get(meter.id)
        hours = (after.ts - before.ts).total_seconds() / 3600.0 if before and after else 0.0
        if hours <= 0:
            unknown.add(meter.enterprise_id)
            continue
        net_kwh = (after.import_kwh - before.import_kwh) - (after.export_kwh - before.export_kwh)
        exchange[meter.enterprise_id] = exchange.get(meter.enterprise_id, 0.0) + net_kwh / hours
    return {e: kw for e, kw in exchange.items() if e not in unknown}


def fleet_range_kw(
    uncontrolled_kw: float, import_limit_kw: float | None, export_limit_kw: float | None
) -> tuple[float, float]:
    """Fleet power that keeps grid exchange within the limits [kW, + into the park].

    ``uncontrolled_kw`` is the load the fleet does not control [kW, + consumed].
    """
    low = -np.inf if import_limit_kw is None else uncontrolled_kw - import_limit_kw
    high = np.inf if export_limit_kw is None else uncontrolled_kw + export_limit_kw
    return float(low), float(high)


@dataclass(frozen=True)
class FleetCaps:
    """Network limits as ranges of fleet power, for one control step.

    ``group_of`` follows the fleet snapshot's device order (-1: not on a
    limited feeder); ``group_min_kw``/``group_max_kw`` per feeder [kW];
    ``total_min_kw``/``total_max_kw`` the whole fleet, from the connection [kW].
    """

    group_of: np.ndarray
    group_ids: tuple[str, ...]
    group_min_kw: np.ndarray
    group_max_kw: np.ndarray
    total_min_kw: float = -np.inf
    total_max_kw: float = np.inf

    @property
    def binding_possible(self) -> bool:
        """False when no range is finite (nothing to enforce)."""
        finite = np.isfinite(self.group_min_kw).any() or np.isfinite(self.group_max_kw).any()
        return bool(finite or np.isfinite(self.total_min_kw) or np.isfinite(self.total_max_kw))


def fleet_caps(
    network: NetworkConfig,
    enterprise_ids: Sequence[str],
    fleet_kw_at_reading: Mapping[str, float],
    enterprise_exchange_kw: Mapping[str, float],
) -> tuple[FleetCaps, list[str]]:
    """The network limits as fleet ranges, and the feeders (or "connection") left unlimited for lack of data.

    Parameters
    ----------
    network : the configured limits.
    enterprise_ids : per fleet device, its enterprise (snapshot order).
    fleet_kw_at_reading : per enterprise, its fleet's power over the meter interval [kW, + into the park].
    enterprise_exchange_kw : per enterprise, measured grid exchange [kW, + imported] (:func:`exchange_kw`).
    """
    uncontrolled = {
        e: kw + fleet_kw_at_reading.get(e, 0.0) for e, kw in enterprise_exchange_kw.items()
    }
    unmeasured: list[str] = []
    index = {e: g for g, feeder in enumerate(network.feeders) for e in feeder.enterprise_ids}
    group_of = np.array([index.get(e, -1) for e in enterprise_ids], dtype=np.intp)
    group_min = np.full(len(network.feeders), -np.inf)
    group_max = np.full(len(network.feeders), np.inf)
    for g, feeder in enumerate(network.feeders):
        if feeder.import_limit_kw is None and feeder.export_limit_kw is None:
            continue
        if not all(e in uncontrolled for e in feeder.enterprise_ids):
            unmeasured.append(feeder.id)
            continue
        load = sum(uncontrolled[e] for e in feeder.enterprise_ids)
        group_min[g], group_max[g] = fleet_range_kw(load, feeder.import_limit_kw, feeder.export_limit_kw)
    total_min, total_max = -np.inf, np.inf
    limit = network.connection
    if limit.import_limit_kw is not None or limit.export_limit_kw is not None:
        everyone = set(enterprise_ids) | set(fleet_kw_at_reading)
        if everyone and all(e in uncontrolled for e in everyone):
            total_min, total_max = fleet_range_kw(sum(uncontrolled.values()), limit.import_limit_kw, limit.export_limit_kw)
        else:
            unmeasured.append("connection")
    caps = FleetCaps(group_of, tuple(f.id for f in network.feeders), group_min, group_max, total_min, total_max)
    return caps, unmeasured
