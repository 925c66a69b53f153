"""Limits of the HTTP edge: body size and a token-bucket rate limit per caller.

The rate limiter lives in the memory of one process: with several service
processes behind a balancer each one allows the full rate, so the park-wide
limit is the per-process rate times the number of processes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MIB = 1024 * 1024

ENV_MAX_BODY_BYTES = "VPP_API_MAX_BODY_BYTES"
ENV_RATE_PER_S = "VPP_API_RATE_PER_S"
ENV_RATE_BURST = "VPP_API_RATE_BURST"


@dataclass(frozen=True)
class ApiSettings:
    """Limits of the API.

    Attributes
    ----------
    max_body_bytes : largest request body accepted; larger gets 413 [B].
    rate_per_s : requests a caller (one token, or one address without a token) may make per second, sustained;
        0 turns the limit off [1/s].
    burst : requests a caller may make at once before the sustained rate applies [-].
    """

    max_body_bytes: int = MIB
    rate_per_s: float = 20.0
    burst: float = 100.0

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes {self.max_body_bytes} is below 1024")
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s >= 0):
            raise ValueError(f"rate_per_s {self.rate_per_s} must be a finite number >= 0")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError(f"burst {self.burst} must be a finite number >= 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        """Settings from ``VPP_API_MAX_BODY_BYTES``, ``VPP_API_RATE_PER_S``, ``VPP_API_RATE_BURST``; defaults otherwise."""
        env = os.environ if env is None else env
        values: dict[str, float | int] = {}
        for name, field, kind in (
            (ENV_MAX_BODY_BYTES, "max_body_bytes", int),
            (ENV_RATE_PER_S, "rate_per_s", float),
            (ENV_RATE_BURST, "burst", float),
        ):
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[field] = kind(raw)
            except ValueError:
                raise ValueError(f"${name}={raw!r} is not a {kind.__name__}") from None
        return cls(**values)


class RateLimiter:
    """Token buckets keyed by caller: each holds up to ``burst`` requests and refills at ``rate_per_s``."""

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens left, monotonic time of that count)

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def take(self, key: str) -> float:
        """Spend one request of ``key``'s bucket. Returns 0 when allowed, else the wait until one is available [s]."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens, then = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        # A bucket refilled to the brim is the same as no bucket: dropping those bounds memory
        # without letting anyone skip a wait.
        full = [k for k, (tokens, then) in self._buckets.items() if tokens + (now - then) * self._rate >= self._burst]
        for key in full:
            del self._buckets[key]


def retry_after_s(wait_s: float) -> int:
    """The ``Retry-After`` header value for a wait: whole seconds, at least 1 [s]."""
    return max(1, math.ceil(wait_s))
