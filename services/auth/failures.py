"""Failed sign-ins: a budget per client address and per username, spent *before* a password is hashed.

Every password attempt that is not already known to be right (the verified-password cache) reserves one
failure from two token buckets: the client's address (an IPv6 client's /64, which one host usually has
whole) and the (registry, username) pair. When either is empty the attempt is refused with
`429 TOOMANYREQUESTS` and `Retry-After` without hashing anything; a right password gives its reservation
back, so only failures count. Reserving first (rather than counting failures afterwards) keeps concurrent
attempts from overshooting the budget while their hashes are being computed.

The buckets are per instance and in memory: their purpose is to bound the CPU one address (or a spray
against one name) can make an instance spend on argon2, which must not itself cost a database write per
attempt. `MAX_KEYS` bounds the memory; the least recently used buckets are dropped first, which forgets an
attacker's spent budget only when more than that many addresses and names are failing at once.

Each bucket holds a minute's worth of failures and refills continuously (`ratelimit.Bucket`); the time is
passed in, so the rules are pure and testable.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.auth.network import IPAddress
from services.auth.ratelimit import Bucket

MAX_KEYS = 100_000
_MAX_USERNAME = 256  # longer names share the bucket of their first 256 characters


@dataclass(frozen=True, slots=True)
class FailureKey:
    scope: str  # "address" or "username"
    value: str
    per_minute: int


def address_key(address: IPAddress | None) -> str:
    """The bucket of an address: an IPv4 address itself, an IPv6 address's /64, or "unknown"."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def failure_keys(
    address: IPAddress | None, registry: str, username: str, per_address: int, per_username: int
) -> list[FailureKey]:
    """The buckets one attempt spends from; a limit of 0 or less is off."""
    keys: list[FailureKey] = []
    if per_address > 0:
        keys.append(FailureKey("address", address_key(address), per_address))
    if per_username > 0:
        keys.append(FailureKey("username", f"{registry}\0{username[:_MAX_USERNAME]}", per_username))
    return keys


class FailureLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[tuple[str, str], Bucket] = OrderedDict()

    def _bucket(self, key: FailureKey, now: float) -> Bucket:
        ident = (key.scope, key.value)
        bucket = self._buckets.get(ident)
        if bucket is None or bucket.capacity != key.per_minute:
            bucket = Bucket(float(key.per_minute), float(key.per_minute), now)
            self._buckets[ident] = bucket
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(ident)
        return bucket

    def reserve(self, keys: list[FailureKey]) -> float | None:
        """Take one failure from every bucket (None), or none of them and the seconds until all have one."""
        now = self._clock()
        buckets = [self._bucket(key, now) for key in keys]
        wait = max((b.seconds_until_one(now) for b in buckets), default=0.0)
        if wait > 0:
            return wait
        for bucket in buckets:
            bucket.take(1, now)
        return None

    def refund(self, keys: list[FailureKey]) -> None:
        """Give a reservation back (the password was right, or the attempt failed on our side)."""
        now = self._clock()
        for key in keys:
            bucket = self._buckets.get((key.scope, key.value))
            if bucket is not None:
                bucket.refill(now)
                bucket.tokens = min(bucket.capacity, bucket.tokens + 1)
