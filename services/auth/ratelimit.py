"""Request-rate limits: ACR's per-tier table, token buckets, and a lease-based shared limiter.

Limits (requests per minute; `../shared/design/acr-limits.md`), per registry and per identity::

    category    methods                       Basic/Standard        Premium
    read        GET, HEAD, OPTIONS            10,000 / 5,000        20,000 / 10,000
    write       PUT, PATCH, POST              2,000 / 1,000         4,000 / 2,000
    delete      DELETE                        1,000 / 500           4,000 / 2,000
    referrers   GET .../referrers (+ read)    500 / 250             2,000 / 1,000
    oauth       /oauth2/token, /exchange      10,000 / -            20,000 / -

Each (registry or identity, category) is a token bucket holding a minute's worth of requests and refilling
continuously. All anonymous callers share one identity bucket, and so do all admin-user callers.

Shared across instances: the buckets live in a shared store; an instance leases tokens from a bucket in
chunks (1% of the minute's limit, at least 1) and spends them locally, so the hot path rarely touches the
store. A lease is only ever taken from tokens the shared bucket has, so the instances together never admit
more than the limit: the margin is zero over, plus what clock skew between instances adds to the refill
(skew x rate; one second of skew on a 20,000/min bucket is 333 requests). Leased tokens not used within
`LEASE_SECONDS` (5 s) are dropped, so the limiter errs on the side of admitting fewer. Refusals are remembered
locally until the bucket has a token again, so a flood of refused requests does not reach the store, and
`Retry-After` counts down across retries.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Category = Literal["read", "write", "delete", "referrers", "oauth"]
LEASE_SECONDS = 5.0
LEASE_FRACTION = 0.01

# (per registry, per identity) requests per minute; None: not limited per identity.
_STANDARD: dict[Category, tuple[int, int | None]] = {
    "read": (10_000, 5_000),
    "write": (2_000, 1_000),
    "delete": (1_000, 500),
    "referrers": (500, 250),
    "oauth": (10_000, None),
}
_PREMIUM: dict[Category, tuple[int, int | None]] = {
    "read": (20_000, 10_000),
    "write": (4_000, 2_000),
    "delete": (4_000, 2_000),
    "referrers": (2_000, 1_000),
    "oauth": (20_000, None),
}
LIMITS: dict[str, dict[Category, tuple[int, int | None]]] = {
    "Basic": _STANDARD,
    "Standard": _STANDARD,
    "Premium": _PREMIUM,
}


def categories(method: str, route_kind: str) -> tuple[Category, ...]:
    """The categories a request counts in (a referrers call is also a read)."""
    if route_kind == "oauth":
        return ("oauth",)
    if method in ("GET", "HEAD", "OPTIONS"):
        return ("read", "referrers") if route_kind == "referrers" else ("read",)
    if method == "DELETE":
        return ("delete",)
    return ("write",)


@dataclass(frozen=True, slots=True)
class BucketKey:
    registry: str
    category: Category
    scope: str  # "registry", or the identity's rate key
    per_minute: int

    @property
    def id(self) -> str:
        return f"ratelimit:{self.category}:{self.scope}"


def bucket_keys(
    sku: str, registry: str, identity: str, cats: tuple[Category, ...], scale: float = 1.0
) -> list[BucketKey]:
    table = LIMITS.get(sku, _STANDARD)
    keys: list[BucketKey] = []
    for category in cats:
        per_registry, per_identity = table[category]
        keys.append(BucketKey(registry, category, "registry", max(1, int(per_registry * scale))))
        if per_identity is not None:
            keys.append(BucketKey(registry, category, identity, max(1, int(per_identity * scale))))
    return keys


@dataclass
class Bucket:
    """A token bucket: `capacity` tokens, refilled at capacity/60 per second (pure; time is passed in)."""

    capacity: float
    tokens: float
    updated: float

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, want: int, now: float) -> int:
        """Take up to `want` whole tokens; returns how many were taken."""
        self.refill(now)
        granted = min(want, int(self.tokens))
        self.tokens -= granted
        return granted

    def seconds_until_one(self, now: float) -> float:
        self.refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def to_state(self) -> dict[str, float]:
        return {"capacity": self.capacity, "tokens": self.tokens, "updated": self.updated}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None, capacity: float, now: float) -> Bucket:
        if not state or float(state.get("capacity", -1)) != capacity:
            return cls(capacity, capacity, now)  # new, or the tier changed: start full
        return cls(capacity, float(state["tokens"]), float(state["updated"]))


# The shared store's one operation: atomically read-modify-write a small state document.
Update = Callable[[dict[str, Any] | None], tuple[dict[str, Any], Any]]
SharedUpdate = Callable[[str, str, Update], Awaitable[Any]]  # (partition, id, update) -> update's result


@dataclass
class _Local:
    tokens: int = 0
    lease_until: float = 0.0
    blocked_until: float = 0.0
    leasing: asyncio.Lock = field(default_factory=asyncio.Lock)  # one lease in flight per bucket

    def spend(self, now: float) -> bool:
        if self.tokens > 0 and self.lease_until > now:
            self.tokens -= 1
            return True
        return False


class RateLimiter:
    """Admits a request only if every bucket it counts in has a token (local lease, else the store)."""

    def __init__(self, shared: SharedUpdate, clock: Callable[[], float] = time.time) -> None:
        self._shared = shared
        self._clock = clock
        self._local: dict[tuple[str, str], _Local] = {}

    async def check(self, keys: list[BucketKey]) -> float | None:
        """None if admitted, else the seconds to wait (the request is refused)."""
        now = self._clock()
        waits = [0.0]
        leases: list[tuple[BucketKey, _Local]] = []
        for key in keys:
            local = self._local.setdefault((key.registry, key.id), _Local())
            if local.blocked_until > now:
                waits.append(local.blocked_until - now)
            elif not local.spend(now):
                leases.append((key, local))
        if leases:  # the buckets without a local token, from the store at once
            waits += await asyncio.gather(*(self._refill(key, local) for key, local in leases))
        wait = max(waits)
        return wait if wait > 0 else None

    async def _refill(self, key: BucketKey, local: _Local) -> float:
        """Spend a token of a new lease (one lease at a time per bucket: the others wait for it)."""
        async with local.leasing:
            now = self._clock()
            if local.spend(now):  # a concurrent request's lease arrived meanwhile
                return 0.0
            if local.blocked_until > now:
                return local.blocked_until - now
            granted, retry = await self._lease(key, max(1, int(key.per_minute * LEASE_FRACTION)), now)
            if granted == 0:
                local.tokens, local.blocked_until = 0, now + retry
                return retry
            local.tokens, local.lease_until = granted - 1, now + LEASE_SECONDS
            return 0.0

    async def _lease(self, key: BucketKey, chunk: int, now: float) -> tuple[int, float]:
        def update(state: dict[str, Any] | None) -> tuple[dict[str, Any], tuple[int, float]]:
            bucket = Bucket.from_state(state, float(key.per_minute), now)
            granted = bucket.take(chunk, now)
            return bucket.to_state(), (granted, bucket.seconds_until_one(now))

        result: tuple[int, float] = await self._shared(key.registry, key.id, update)
        return result


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
