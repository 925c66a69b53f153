"""Store reads shared by concurrent requests, each answer still as fresh as its own read would be."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class SharedReads:
    """Concurrent callers asking for the same ``key`` share one read that started after every one of them asked.

    A caller arriving while no read of its key is in flight starts one; a caller
    arriving while one is in flight does not join it (it may have begun before a
    write the caller already saw) but waits for the next, which starts when the
    one in flight ends and serves everyone who arrived in the meantime. So a key
    has at most one read running and one waiting, whatever the number of callers,
    and no answer is older than the caller's own read would have been.

    The result object is handed to every caller of that read: treat it as read-only.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[Any]] = {}
        self._next: dict[Hashable, asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        """Keys with a read running or waiting [-]."""
        return len(self._running.keys() | self._next.keys())

    async def read(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        """The result of ``fn()`` for ``key``, from a call that began after this one; its error if it raised."""
        shared = self._next.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._run(key, fn, self._running.get(key)))
            shared.add_done_callback(_retrieve_outcome)
            self._next[key] = shared
        # Shielded: a caller that goes away does not cancel the read the others wait for.
        return await asyncio.shield(shared)

    async def _run(self, key: Hashable, fn: Callable[[], Awaitable[T]], before: asyncio.Future[Any] | None) -> T:
        if before is not None:
            await asyncio.wait([before])  # its outcome goes to its own callers
        me = asyncio.current_task()
        # From here on new callers must wait for a later read: this one is about to begin.
        if self._next.get(key) is me:
            del self._next[key]
        self._running[key] = me
        try:
            return await fn()
        finally:
            if self._running.get(key) is me:
                del self._running[key]


def _retrieve_outcome(future: asyncio.Future) -> None:
    # A read whose callers all went away still has its error looked at (no "never retrieved" report).
    if not future.cancelled():
        future.exception()
