"""One dispatch leader at a time: a Redis lock with a lease and a fencing token.

``LeaderElection`` keeps trying to take the lock ``ns:leader``; the holder
renews it every third of its lease. Each time the lock is taken anew, Redis
issues a larger fencing token. The leader's ``Fence`` stamps every write that
reaches devices or the dispatch record (set-points, instruction state, live
state) with that token, and the store's Lua scripts refuse a token that no
longer holds the lock. So a leader paused past its lease (GC, SIGSTOP, a
network partition) and then resumed cannot send a single set-point after
another took over: its write is refused, nothing is handed to adapters, and
it steps down.

Before a write the fence also checks the lease on this process's own
monotonic clock and refuses once it has run out, which stops a leader cut
off from Redis without waiting for a round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from vpp.errors import StoreUnavailable, VppError
from vpp.model import DispatchState, Setpoint
from vpp.store.redis_cluster import RedisCluster

__all__ = ["Fence", "FencedOut", "LeaderElection"]


class FencedOut(VppError):
    """This process's fencing token no longer holds the leader lock: the write was refused."""

    http_status = 503


class LeaderElection:
    """Campaign for the dispatch leader lock; call ``on_elected(token)`` / ``on_deposed(reason)`` as it is won and lost.

    Parameters
    ----------
    cluster : RedisCluster
        The shared namespace.
    holder : str
        This candidate's name (unique per process).
    lease_s : float
        Lock lease; a dead leader is replaced this long after its last renewal [s].
    """

    def __init__(
        self,
        cluster: RedisCluster,
        holder: str,
        lease_s: float,
        on_elected: Callable[[int], Awaitable[None]],
        on_deposed: Callable[[str], Awaitable[None]],
    ) -> None:
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        self.cluster = cluster
        self.holder = holder
        self.lease_s = lease_s
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self.token: int | None = None
        """The fencing token while this candidate leads, else None."""
        self._lease_until = 0.0  # monotonic time the lease runs out [s]
        self._lost = asyncio.Event()  # a fenced-out write: step down without waiting for the next renewal
        self.log = structlog.get_logger("vpp.leader").bind(holder=holder)

    @property
    def leading(self) -> bool:
        """True while this candidate holds a lease that has not run out on its own clock."""
        return self.token is not None and time.monotonic() < self._lease_until

    def lost(self) -> None:
        """A write was fenced out: step down at the next turn of the loop."""
        self._lost.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign and renew until ``stop`` is set; then resign (the caller stops its work first)."""
        while not stop.is_set():
            await self._turn()
            # The leader renews every third of its lease; a candidate asks at least every second,
            # so a released lock is taken over at once.
            wait_s = self.lease_s / 3 if self.token is not None else min(self.lease_s / 3, 1.0)
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._lost.wait())]
            try:
                await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def try_once(self) -> bool:
        """One attempt (or renewal) now, as ``run`` makes each turn; True when this candidate leads after it."""
        await self._turn()
        return self.token is not None

    async def _turn(self) -> None:
        """One renewal or attempt; a store outage keeps the lease until it runs out on the local clock."""
        if self._lost.is_set():
            self._lost.clear()
            await self._depose("a write was fenced out: another process leads")
            return
        asked_at = time.monotonic()  # the lease counts from before the request: never longer than Redis' own
        try:
            if self.token is None:
                token = await self.cluster.acquire(self.holder, self.lease_s)
                if token:
                    self.token, self._lease_until = token, asked_at + self.lease_s
                    self.log.info("elected dispatch leader", token=token)
                    await self._on_elected(token)
            elif await self.cluster.renew(self.holder, self.token, self.lease_s):
                self._lease_until = asked_at + self.lease_s
            else:
                await self._depose("the lock was taken over")
        except StoreUnavailable as exc:
            if self.token is not None and time.monotonic() >= self._lease_until:
                await self._depose(f"lease ran out while the store was unavailable: {exc}")
            else:
                self.log.warning("store unavailable; lease kept until it runs out", error=str(exc))

    async def _depose(self, reason: str) -> None:
        token, self.token = self.token, None
        if token is None:
            return
        self.log.warning("stepped down as dispatch leader", token=token, reason=reason)
        await self._on_deposed(reason)

    async def resign(self) -> None:
        """Release the lock now (graceful shutdown) so another candidate takes over without waiting for the lease."""
        token, self.token = self.token, None
        if token is None:
            return
        try:
            released = await self.cluster.release(self.holder, token)
        except StoreUnavailable as exc:
            self.log.warning("could not release the leader lock; it lapses with its lease", error=str(exc))
            return
        self.log.info("released the leader lock", token=token, released=released)


class Fence:
    """The leader's writes stamped with its fencing token (what ``PlantService`` calls when given one).

    Each method raises ``FencedOut`` (and tells the election) when the token
    no longer holds the lock; nothing is written then.
    """

    def __init__(self, cluster: RedisCluster, election: LeaderElection, token: int) -> None:
        self.cluster = cluster
        self.election = election
        self.token = token

    def _check_lease(self) -> None:
        if not self.election.leading or self.election.token != self.token:
            raise FencedOut(f"fencing token {self.token} no longer leads (lease ran out or was taken over)")

    def _refused(self, what: str) -> FencedOut:
        self.election.lost()
        return FencedOut(f"{what} refused: fencing token {self.token} no longer holds the leader lock")

    async def setpoints(self, setpoints: Sequence[Setpoint]) -> int:
        """Log set-points under the token before they go to adapters; how many were new [unitless]."""
        self._check_lease()
        written = await self.cluster.append_setpoints_fenced(setpoints, self.token)
        if written < 0:
            raise self._refused("set-points")
        return written

    async def state(self, state: DispatchState) -> None:
        """Write an instruction's state under the token."""
        self._check_lease()
        if not await self.cluster.put_dispatch_state_fenced(state, self.token):
            raise self._refused("dispatch state")

    async def live(self, fields: Mapping[str, Any]) -> None:
        """Publish the leader's live fields under the token."""
        self._check_lease()
        if not await self.cluster.publish_live({**fields, "token": self.token, "holder": self.election.holder}, self.token):
            raise self._refused("live state")
