"""Green electricity certificates and granular certificates: issue, transfer, retire.

Two kinds, one registry:

* **GEC** (green electricity certificate, 绿证): 1 certificate = 1 MWh of
  metered renewable generation, issued in whole MWh over a production
  period. A *tradable* GEC may be sold (transferred) only once; a
  non-tradable one never. It is retired whole.
* **Granular** certificate, in the manner of EnergyTag: one per generation
  interval (15 minutes or an hour) with Wh resolution, transferable any
  number of times, retired in part or whole, and only against consumption
  inside its own interval.

State is plain, immutable data (:class:`Registry` of tuples of frozen
dataclasses, see :func:`to_plain` / :func:`from_plain`); every operation is
a pure function returning a new registry, and a batch either applies
entirely or raises and changes nothing. Times are POSIX seconds (UTC) and
periods half-open ``[start_s, end_s)``; energies are integer Wh.

Rules enforced
--------------
* Generation is recorded once per generator and interval; intervals of a
  generator never overlap. Issuance never exceeds what was recorded and is
  not already claimed: ``issued_wh <= generated_wh - claimed_wh`` per
  interval, whatever mix of kinds (see "One claim per kWh" below).
* GECs take the unissued generation in time order, 1 MWh each, leaving the
  remainder for later; a granular certificate takes all that is unissued
  in its interval.
* Transfer: only by the owner, never after (any) retirement; a GEC not
  tradable never moves and a tradable one moves at most once.
* Retirement: only by the owner, for itself; never beyond the remaining
  volume (so never twice); a GEC only whole; a granular certificate only
  for a consumption period inside its interval; and the certificates
  retired against one consumer's period never exceed that period's
  consumption, given with the request.

One claim per kWh: on-site and park use versus certificates
-----------------------------------------------------------
The park's attribution (:mod:`vpp.carbon.attribution`) hands the green
attribute of every kWh generated and consumed inside the park to the
enterprise that consumed it: the owner's own PV use, the green charge of
its batteries (released later as storage green), the PV surplus pooled to
other enterprises and the shared supplies' use. A certificate issued for
the same kWh would be a second claim on one attribute: an enterprise
retiring a certificate of its own self-consumed PV would count that energy
twice (as own PV and as a retired certificate), and a buyer retiring it
would claim what the producer already counts. The GHG Protocol Scope 2
Guidance (2015) requires of every contractual instrument of the
market-based method that it be the *only* instrument carrying the
attribute claim of that quantity of generation (quality criterion 2), and
EnergyTag's GC scheme makes the issuer responsible for avoiding double
counting of the attributes it certifies. Two ways satisfy that: certify
gross generation and take the on-site claim away from a producer who
sells its certificates (what the guidance allows for on-site generation),
or keep the physical claim and certify only what no park consumer claims.
We take the second: the attribution is physical and needs no knowledge of
certificate trades, and a certificate then never competes with a
15-minute physical claim. So:

* ``Generation.claimed_wh`` is the part of an interval's generation whose
  attribute the park's attribution already gives to a consumer (everything
  but what left the park as export in that interval); it is not issuable.
  :func:`vpp.carbon.registry_ledger.issue` records it from the month's
  attribution; generators outside the park record 0.
* Retirements of certificates of a park generator are counted in the
  attribution only up to that generator's export in the interval
  (:func:`retired_kwh_by_source`, :func:`vpp.carbon.ledger.compute_month`);
  anything beyond (certificates issued before this rule, or meter data
  corrected after issuance) is reported as not counted, never as green.

Errors are :class:`CertificateError` subclasses whose message names the
certificate id (for generation, the granular id the interval would get).

Not enforced (open): vintage and validity windows of GECs, the market
boundary of a certificate, and double claims across *different* periods
(a GEC claimed for a month and a granular certificate for a quarter hour of
the same month are checked separately, per identical period).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from itertools import pairwise
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

WH_PER_GEC: Final = 1_000_000
"""Energy of one green electricity certificate [Wh]."""


class CertificateKind(StrEnum):
    GEC = "gec"
    GRANULAR = "granular"


# ------------------------------------------------------------------ errors ----


class CertificateError(Exception):
    """A certificate operation that would break a rule; nothing was changed."""

    def __init__(self, certificate_id: str, message: str) -> None:
        super().__init__(f"certificate {certificate_id}: {message}")
        self.certificate_id = certificate_id


class UnknownCertificateError(CertificateError):
    """No certificate has this id."""


class NotOwnerError(CertificateError):
    """The party acting is not the certificate's owner."""


class NotTradableError(CertificateError):
    """A non-tradable GEC cannot be transferred."""


class AlreadySoldError(CertificateError):
    """A tradable GEC has been sold once already."""


class AlreadyRetiredError(CertificateError):
    """Nothing of the certificate is left to retire, or it cannot move once retired."""


class ExceedsVolumeError(CertificateError):
    """More than the certificate's remaining volume, or a partial GEC."""


class OutsideIntervalError(CertificateError):
    """A granular certificate used for consumption outside its own interval."""


class ExceedsConsumptionError(CertificateError):
    """Certificates retired against a period would exceed its consumption."""


class IssuanceError(CertificateError):
    """Generation recorded twice or overlapping, unknown, or already issued."""


class InvalidQuantityError(CertificateError):
    """A volume, time or consumption that is not a valid integer."""


# ------------------------------------------------------------------- state ----


@dataclass(frozen=True)
class Generation:
    """Metered generation of one generator in one interval."""

    generator_id: str
    start_s: int
    """Interval start, POSIX seconds UTC [s]."""
    end_s: int
    """Interval end (exclusive), POSIX seconds UTC [s]."""
    generated_wh: int
    """Metered generation [Wh]."""
    issued_wh: int = 0
    """Generation already turned into certificates [Wh]."""
    claimed_wh: int = 0
    """Generation whose attribute the park's attribution already gives to a consumer: never issued [Wh]."""

    @property
    def free_wh(self) -> int:
        """Generation still issuable [Wh]."""
        return self.generated_wh - self.claimed_wh - self.issued_wh


@dataclass(frozen=True)
class Certificate:
    """One certificate and its life so far."""

    certificate_id: str
    kind: CertificateKind
    generator_id: str
    start_s: int
    """Production period start, POSIX seconds UTC [s]."""
    end_s: int
    """Production period end (exclusive), POSIX seconds UTC [s]."""
    volume_wh: int
    """Energy certified [Wh]."""
    owner_id: str
    tradable: bool = True
    sales: int = 0
    """Transfers so far [unitless]."""
    retired_wh: int = 0
    """Energy retired so far [Wh]."""

    @property
    def remaining_wh(self) -> int:
        """Energy not yet retired [Wh]."""
        return self.volume_wh - self.retired_wh


@dataclass(frozen=True)
class Retirement:
    """Part or all of a certificate claimed against one consumer's period of consumption."""

    certificate_id: str
    consumer_id: str
    start_s: int
    """Consumption period start, POSIX seconds UTC [s]."""
    end_s: int
    """Consumption period end (exclusive), POSIX seconds UTC [s]."""
    volume_wh: int
    """Energy claimed [Wh]."""


@dataclass(frozen=True)
class RetirementRequest:
    """Ask to retire ``volume_wh`` of a certificate for ``consumer_id`` over ``[start_s, end_s)``."""

    certificate_id: str
    consumer_id: str
    start_s: int
    """Consumption period start, POSIX seconds UTC [s]."""
    end_s: int
    """Consumption period end (exclusive), POSIX seconds UTC [s]."""
    volume_wh: int
    """Energy to claim [Wh]."""
    consumption_wh: int
    """The consumer's metered consumption over the period [Wh]."""


@dataclass(frozen=True)
class Registry:
    """Everything the registry knows, as plain immutable data."""

    generation: tuple[Generation, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    retirements: tuple[Retirement, ...] = ()

    def certificate(self, certificate_id: str) -> Certificate:
        """The certificate with this id, or :class:`UnknownCertificateError`."""
        for certificate in self.certificates:
            if certificate.certificate_id == certificate_id:
                return certificate
        raise UnknownCertificateError(certificate_id, "no such certificate")


def to_plain(registry: Registry) -> dict:
    """The registry as nested dicts and lists of str/int/bool, e.g. for JSON."""
    plain = asdict(registry)
    return {
        key: [{k: (v.value if isinstance(v, StrEnum) else v) for k, v in item.items()} for item in items]
        for key, items in plain.items()
    }


def from_plain(data: Mapping) -> Registry:
    """Inverse of :func:`to_plain`."""
    return Registry(
        generation=tuple(Generation(**item) for item in data.get("generation", ())),
        certificates=tuple(
            Certificate(**{**item, "kind": CertificateKind(item["kind"])}) for item in data.get("certificates", ())
        ),
        retirements=tuple(Retirement(**item) for item in data.get("retirements", ())),
    )


# ----------------------------------------------------------------- helpers ----


def granular_id(generator_id: str, start_s: int) -> str:
    """Id of the granular certificate of a generator's interval."""
    return f"GC:{generator_id}:{start_s}"


def _any_interval(generator_id: str) -> str:
    """Name used in errors about a generator's generation as a whole."""
    return f"GC:{generator_id}:*"


def gec_id(generator_id: str, serial: int) -> str:
    """Id of a generator's ``serial``-th GEC (from 0)."""
    return f"GEC:{generator_id}:{serial:08d}"


def _integer(certificate_id: str, name: str, value: object, low: int = 0) -> int:
    """``value`` as an int >= ``low``, or :class:`InvalidQuantityError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidQuantityError(certificate_id, f"{name} = {value!r} must be an integer >= {low}")
    return int(value)


def _integers(certificate_id: str, name: str, values: ArrayLike, low: int = 0) -> list[int]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidQuantityError(certificate_id, f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InvalidQuantityError(certificate_id, f"{name} must hold integers, got {array.dtype}")
    return [_integer(certificate_id, f"{name}[{i}]", v, low) for i, v in enumerate(array.tolist())]


def _index(certificates: Iterable[Certificate]) -> dict[str, Certificate]:
    return {c.certificate_id: c for c in certificates}


def _rebuild(registry: Registry, changed: dict[str, Certificate], **extra: tuple) -> Registry:
    """Registry with ``changed`` certificates replacing (or appended after) their old versions."""
    known = {c.certificate_id for c in registry.certificates}
    certificates = tuple(changed.get(c.certificate_id, c) for c in registry.certificates)
    added = tuple(c for cid, c in changed.items() if cid not in known)
    return replace(registry, certificates=certificates + added, **extra)


# --------------------------------------------------------------- generation ----


def record_generation(
    registry: Registry,
    generator_id: str,
    start_s: ArrayLike,
    interval_s: int,
    generated_wh: ArrayLike,
    claimed_wh: ArrayLike | None = None,
) -> Registry:
    """Record a generator's metered generation, once per interval.

    Parameters
    ----------
    registry : Registry
        Current state.
    generator_id : str
        Generator (generation meter) [unitless].
    start_s : array_like of int, shape (N,)
        Interval starts, POSIX seconds UTC [s].
    interval_s : int
        Interval length, 900 (15 min) or 3600 (hourly) typically [s].
    generated_wh : array_like of int, shape (N,)
        Metered generation per interval [Wh].
    claimed_wh : array_like of int, shape (N,), optional
        Part of each interval's generation already claimed by consumers in
        the park (not issuable, see the module docstring); default none [Wh].
    """
    name = _any_interval(generator_id)
    starts = _integers(name, "start_s", start_s)
    length = _integer(name, "interval_s", interval_s, low=1)
    amounts = _integers(name, "generated_wh", generated_wh)
    claimed = [0] * len(amounts) if claimed_wh is None else _integers(name, "claimed_wh", claimed_wh)
    if not len(starts) == len(amounts) == len(claimed):
        raise InvalidQuantityError(name, "start_s, generated_wh and claimed_wh differ in length")
    for i, (wh, used) in enumerate(zip(amounts, claimed)):
        if used > wh:
            raise InvalidQuantityError(name, f"claimed_wh[{i}] = {used} exceeds generated_wh[{i}] = {wh}")
    new = [Generation(generator_id, s, s + length, wh, 0, used) for s, wh, used in zip(starts, amounts, claimed)]
    mine = sorted(
        [g for g in registry.generation if g.generator_id == generator_id] + new, key=lambda g: (g.start_s, g.end_s)
    )
    for before, after in pairwise(mine):
        if after.start_s < before.end_s:
            raise IssuanceError(
                granular_id(generator_id, after.start_s),
                f"generation of {generator_id} for [{after.start_s}, {after.end_s}) overlaps or repeats "
                f"[{before.start_s}, {before.end_s}) already recorded",
            )
    return replace(registry, generation=registry.generation + tuple(new))


def issue_granular(
    registry: Registry, generator_id: str, owner_id: str, start_s: ArrayLike | None = None
) -> tuple[Registry, tuple[str, ...]]:
    """Issue one granular certificate per interval for all of its unissued generation.

    Parameters
    ----------
    registry : Registry
        Current state.
    generator_id : str
        Generator whose recorded generation is certified [unitless].
    owner_id : str
        First owner of the certificates [unitless].
    start_s : array_like of int, optional
        Intervals to certify; each must be recorded and still have
        unissued generation. Default: every interval with unissued generation [s].

    Returns
    -------
    (Registry, tuple of str)
        New state and the ids issued.
    """
    wanted = None if start_s is None else set(_integers(_any_interval(generator_id), "start_s", start_s))
    generation = list(registry.generation)
    found: set[int] = set()
    existing = {c.certificate_id for c in registry.certificates}
    issued: dict[str, Certificate] = {}
    for i, g in enumerate(generation):
        if g.generator_id != generator_id or (wanted is not None and g.start_s not in wanted):
            continue
        found.add(g.start_s)
        cid = granular_id(generator_id, g.start_s)
        left = g.free_wh
        if left <= 0:
            if wanted is not None:
                raise IssuanceError(cid, f"generation of {generator_id} at {g.start_s} is already fully certified")
            continue
        if cid in existing:
            raise IssuanceError(cid, "already issued")
        issued[cid] = Certificate(cid, CertificateKind.GRANULAR, generator_id, g.start_s, g.end_s, left, owner_id)
        generation[i] = replace(g, issued_wh=g.issued_wh + left)
    missing = sorted((wanted or set()) - found)
    if missing:
        raise IssuanceError(
            granular_id(generator_id, missing[0]), f"no generation of {generator_id} recorded at {missing[0]}"
        )
    return _rebuild(registry, issued, generation=tuple(generation)), tuple(issued)


def issue_gec(
    registry: Registry, generator_id: str, owner_id: str, *, tradable: bool = True, until_s: int | None = None
) -> tuple[Registry, tuple[str, ...]]:
    """Issue whole-MWh GECs from the generator's unissued generation, in time order.

    Parameters
    ----------
    registry : Registry
        Current state.
    generator_id : str
        Generator whose recorded generation is certified [unitless].
    owner_id : str
        First owner of the certificates [unitless].
    tradable : bool
        Whether the GECs may be sold (once) [unitless].
    until_s : int, optional
        Use only generation of intervals ending at or before this time [s].

    Returns
    -------
    (Registry, tuple of str)
        New state and the ids issued; the generation short of a whole MWh
        stays unissued.
    """
    order = sorted(
        (
            i
            for i, g in enumerate(registry.generation)
            if g.generator_id == generator_id and (until_s is None or g.end_s <= until_s)
        ),
        key=lambda i: registry.generation[i].start_s,
    )
    generation = list(registry.generation)
    available = sum(generation[i].free_wh for i in order)
    serial = sum(1 for c in registry.certificates if c.kind is CertificateKind.GEC and c.generator_id == generator_id)
    issued: dict[str, Certificate] = {}
    cursor = 0
    for _ in range(available // WH_PER_GEC):
        needed, first, last = WH_PER_GEC, None, None
        while needed > 0:
            g = generation[order[cursor]]
            take = min(g.free_wh, needed)
            if take > 0:
                generation[order[cursor]] = replace(g, issued_wh=g.issued_wh + take)
                needed -= take
                first, last = first or g, g
            if generation[order[cursor]].free_wh <= 0:
                cursor += 1
        cid = gec_id(generator_id, serial + len(issued))
        issued[cid] = Certificate(
            cid, CertificateKind.GEC, generator_id, first.start_s, last.end_s, WH_PER_GEC, owner_id, tradable
        )
    return _rebuild(registry, issued, generation=tuple(generation)), tuple(issued)


# ---------------------------------------------------------------- transfer ----


def transfer(registry: Registry, certificate_ids: Sequence[str], from_owner: str, to_owner: str) -> Registry:
    """Move certificates from one owner to another, all or none.

    Parameters
    ----------
    registry : Registry
        Current state.
    certificate_ids : sequence of str
        Certificates to move [unitless].
    from_owner : str
        Their current owner, who sells [unitless].
    to_owner : str
        The new owner [unitless].
    """
    index = _index(registry.certificates)
    changed: dict[str, Certificate] = {}
    for cid in certificate_ids:
        c = changed.get(cid) or index.get(cid)
        if c is None:
            raise UnknownCertificateError(cid, "no such certificate")
        if c.owner_id != from_owner:
            raise NotOwnerError(cid, f"owned by {c.owner_id!r}, not by {from_owner!r}")
        if to_owner == from_owner:
            raise CertificateError(cid, f"transfer to its current owner {to_owner!r}")
        if c.retired_wh > 0:
            raise AlreadyRetiredError(cid, f"{c.retired_wh} Wh already retired; it can no longer move")
        if c.kind is CertificateKind.GEC and not c.tradable:
            raise NotTradableError(cid, "this GEC is not tradable")
        if c.kind is CertificateKind.GEC and c.sales >= 1:
            raise AlreadySoldError(cid, "a tradable GEC may be sold only once and this one has been")
        changed[cid] = replace(c, owner_id=to_owner, sales=c.sales + 1)
    return _rebuild(registry, changed)


# -------------------------------------------------------------- retirement ----


def _check_retirement(c: Certificate, r: RetirementRequest) -> None:
    """Rules of one request against the certificate as it stands."""
    cid = c.certificate_id
    volume = _integer(cid, "volume_wh", r.volume_wh, low=1)
    start, end = _integer(cid, "start_s", r.start_s), _integer(cid, "end_s", r.end_s)
    if end <= start:
        raise InvalidQuantityError(cid, f"consumption period [{start}, {end}) is empty")
    if c.owner_id != r.consumer_id:
        raise NotOwnerError(cid, f"owned by {c.owner_id!r}; {r.consumer_id!r} cannot retire it")
    if c.remaining_wh <= 0:
        raise AlreadyRetiredError(cid, "already fully retired")
    if volume > c.remaining_wh:
        raise ExceedsVolumeError(cid, f"{volume} Wh asked, {c.remaining_wh} Wh left")
    if c.kind is CertificateKind.GEC and volume != c.volume_wh:
        raise ExceedsVolumeError(cid, f"a GEC is retired whole ({c.volume_wh} Wh), not {volume} Wh")
    if c.kind is CertificateKind.GRANULAR and not (c.start_s <= start and end <= c.end_s):
        raise OutsideIntervalError(
            cid, f"consumption [{start}, {end}) lies outside the certificate's interval [{c.start_s}, {c.end_s})"
        )


def retire(registry: Registry, requests: Sequence[RetirementRequest]) -> Registry:
    """Retire certificates against consumers' consumption, all or none.

    Parameters
    ----------
    registry : Registry
        Current state.
    requests : sequence of RetirementRequest
        What to retire, for whom and over which consumption period [Wh], [s].
    """
    index = _index(registry.certificates)
    claimed: dict[tuple[str, int, int], int] = defaultdict(int)
    for r in registry.retirements:
        claimed[(r.consumer_id, r.start_s, r.end_s)] += r.volume_wh
    changed: dict[str, Certificate] = {}
    done: list[Retirement] = []
    for r in requests:
        c = changed.get(r.certificate_id) or index.get(r.certificate_id)
        if c is None:
            raise UnknownCertificateError(r.certificate_id, "no such certificate")
        _check_retirement(c, r)
        key = (r.consumer_id, int(r.start_s), int(r.end_s))
        consumption = _integer(c.certificate_id, "consumption_wh", r.consumption_wh)
        if claimed[key] + r.volume_wh > consumption:
            raise ExceedsConsumptionError(
                c.certificate_id,
                f"{r.consumer_id!r} consumed {consumption} Wh over [{r.start_s}, {r.end_s}); "
                f"{claimed[key]} Wh are claimed already and {r.volume_wh} Wh more would exceed it",
            )
        claimed[key] += int(r.volume_wh)
        changed[c.certificate_id] = replace(c, retired_wh=c.retired_wh + int(r.volume_wh))
        done.append(Retirement(c.certificate_id, r.consumer_id, int(r.start_s), int(r.end_s), int(r.volume_wh)))
    return _rebuild(registry, changed, retirements=registry.retirements + tuple(done))


# ------------------------------------------------------ bridge to attribution ----


def _granular_entries(
    registry: Registry, consumer_ids: Sequence[str], interval_start_s: ArrayLike, interval_s: int
) -> tuple[list[str], NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """Granular retirements inside the intervals: (generator id, consumer row, interval, kWh) each."""
    starts = np.asarray(interval_start_s, dtype=np.int64)
    rows = {cid: i for i, cid in enumerate(consumer_ids)}
    certificates = {c.certificate_id: c for c in registry.certificates}
    generators: list[str] = []
    consumers: list[int] = []
    intervals: list[int] = []
    kwh: list[float] = []
    for r in registry.retirements:
        c = certificates.get(r.certificate_id)
        if c is None or c.kind is not CertificateKind.GRANULAR or r.consumer_id not in rows:
            continue
        t = int(np.searchsorted(starts, r.start_s, side="right")) - 1
        if t < 0 or r.start_s >= starts[t] + interval_s:
            continue
        if r.end_s > starts[t] + interval_s:
            raise OutsideIntervalError(
                r.certificate_id,
                f"retirement [{r.start_s}, {r.end_s}) spans more than the interval starting {starts[t]}",
            )
        generators.append(c.generator_id)
        consumers.append(rows[r.consumer_id])
        intervals.append(t)
        kwh.append(r.volume_wh / 1000.0)
    return (
        generators,
        np.array(consumers, dtype=np.intp),
        np.array(intervals, dtype=np.intp),
        np.array(kwh, dtype=np.float64),
    )


def retired_kwh_matrix(
    registry: Registry, consumer_ids: Sequence[str], interval_start_s: ArrayLike, interval_s: int = 900
) -> NDArray[np.float64]:
    """Granular certificates retired per consumer and interval, whatever their generator [kWh].

    No cap for park generators: use :func:`retired_kwh_by_source` to feed the
    attribution.

    Parameters
    ----------
    registry : Registry
        Current state.
    consumer_ids : sequence of str, length E
        Enterprises, in the row order of the attribution [unitless].
    interval_start_s : array_like of int, shape (T,)
        Starts of the attribution's intervals, ascending, POSIX seconds UTC [s].
    interval_s : int
        Interval length [s].

    Returns
    -------
    numpy.ndarray of shape (E, T)
        Energy retired per consumer and interval [kWh]. Retirements of
        other consumers or outside the intervals are left out; one that
        spans several intervals raises :class:`OutsideIntervalError`.
    """
    _, consumers, intervals, kwh = _granular_entries(registry, consumer_ids, interval_start_s, interval_s)
    out = np.zeros((len(consumer_ids), np.asarray(interval_start_s).size))
    np.add.at(out, (consumers, intervals), kwh)
    return out


@dataclass(frozen=True, eq=False)
class RetiredBySource:
    """Granular retirements per consumer and interval, with the one-claim-per-kWh cap applied [kWh]."""

    counted_kwh: NDArray[np.float64]
    """Offered as contract energy: external generators, and park generators up to their export, (E, T) [kWh]."""
    not_counted_kwh: NDArray[np.float64]
    """Retired for park generation beyond its export in the interval: a second claim, not counted, (E, T) [kWh]."""
    park_generator: NDArray[np.intp]
    """Per counted retirement of a park generator: its generator row, (N,) [unitless]."""
    park_consumer: NDArray[np.intp]
    """Per counted retirement of a park generator: the consumer row, (N,) [unitless]."""
    park_interval: NDArray[np.intp]
    """Per counted retirement of a park generator: the interval, (N,) [unitless]."""
    park_kwh: NDArray[np.float64]
    """Per counted retirement of a park generator: the energy counted, (N,) [kWh]."""

    def reclaimed_kwh(self, matched_fraction: ArrayLike, generators: int) -> NDArray[np.float64]:
        """Export of each park generator claimed back by matched retirements, (G, T) [kWh].

        ``matched_fraction`` (E, T) is the part of each consumer's offered
        contract energy the attribution matched [unitless].
        """
        fraction = np.asarray(matched_fraction, dtype=np.float64)
        out = np.zeros((generators, fraction.shape[1]))
        np.add.at(
            out,
            (self.park_generator, self.park_interval),
            self.park_kwh * fraction[self.park_consumer, self.park_interval],
        )
        return out


def retired_kwh_by_source(
    registry: Registry,
    consumer_ids: Sequence[str],
    interval_start_s: ArrayLike,
    generator_rows: Mapping[str, int],
    exported_kwh: ArrayLike,
    interval_s: int = 900,
) -> RetiredBySource:
    """Granular retirements as ``contract_kwh`` for :func:`vpp.carbon.attribute`, one claim per kWh.

    Certificates of a park generator (a key of ``generator_rows``) are
    counted, per generator and interval, only up to that generator's export
    in the interval (``exported_kwh``): the rest of its generation is
    already claimed physically (module docstring). When retirements exceed
    the export, each is scaled down by the same fraction.

    Parameters
    ----------
    registry : Registry
        Current state.
    consumer_ids : sequence of str, length E
        Enterprises, in the row order of the attribution [unitless].
    interval_start_s : array_like of int, shape (T,)
        Starts of the attribution's intervals, ascending, POSIX seconds UTC [s].
    generator_rows : mapping str -> int
        Generator id of each park generator -> row of ``exported_kwh`` [unitless].
    exported_kwh : array_like of shape (G, T)
        Generation of each park generator that left the park, per interval [kWh].
    interval_s : int
        Interval length [s].
    """
    exported = np.asarray(exported_kwh, dtype=np.float64)
    count = np.asarray(interval_start_s).size
    if exported.ndim != 2 or exported.shape[1] != count:
        raise ValueError(f"exported_kwh has shape {exported.shape}, expected (G, {count})")
    generators, consumers, intervals, kwh = _granular_entries(registry, consumer_ids, interval_start_s, interval_s)
    row = np.array([generator_rows.get(g, -1) for g in generators], dtype=np.intp)
    if (row >= exported.shape[0]).any():
        raise ValueError(f"generator_rows name rows beyond the {exported.shape[0]} rows of exported_kwh")
    park = row >= 0
    flat = row[park] * count + intervals[park]
    claimed = np.bincount(flat, weights=kwh[park], minlength=exported.size)
    limit = exported.reshape(-1)
    scale = np.ones_like(claimed)
    over = claimed > limit
    scale[over] = limit[over] / claimed[over]
    counted = kwh.copy()
    counted[park] = kwh[park] * scale[flat]
    shape = (len(consumer_ids), count)
    total, not_counted = np.zeros(shape), np.zeros(shape)
    np.add.at(total, (consumers, intervals), counted)
    np.add.at(not_counted, (consumers, intervals), kwh - counted)
    return RetiredBySource(
        counted_kwh=total,
        not_counted_kwh=not_counted,
        park_generator=row[park],
        park_consumer=consumers[park],
        park_interval=intervals[park],
        park_kwh=counted[park],
    )


def retired_gec_kwh(registry: Registry, consumer_ids: Sequence[str], start_s: int, end_s: int) -> NDArray[np.float64]:
    """GEC energy retired per consumer for consumption periods inside ``[start_s, end_s)``, shape (E,) [kWh].

    Parameters
    ----------
    registry : Registry
        Current state.
    consumer_ids : sequence of str, length E
        Enterprises, in the row order of the attribution [unitless].
    start_s : int
        Period start, POSIX seconds UTC [s].
    end_s : int
        Period end (exclusive), POSIX seconds UTC [s].
    """
    rows = {cid: i for i, cid in enumerate(consumer_ids)}
    kinds = {c.certificate_id: c.kind for c in registry.certificates}
    out = np.zeros(len(rows))
    for r in registry.retirements:
        if (
            kinds.get(r.certificate_id) is CertificateKind.GEC
            and r.consumer_id in rows
            and start_s <= r.start_s
            and r.end_s <= end_s
        ):
            out[rows[r.consumer_id]] += r.volume_wh / 1000.0
    return out
