"""Pure rules of network access and rate limiting: CIDR matching, the client address, token buckets."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.auth.network import (
    NetworkRuleInvalid,
    NetworkRuleSet,
    client_address,
    parse_address,
    parse_network,
    parse_proxies,
)
from services.auth.ratelimit import Bucket, BucketKey, RateLimiter, bucket_keys, categories, retry_after_header


def rules(default: str, *allowed: str) -> NetworkRuleSet:
    parsed = NetworkRuleSet.parse(
        {"defaultAction": default, "ipRules": [{"action": "Allow", "value": a} for a in allowed]}
    )
    assert parsed is not None
    return parsed


def test_deny_by_default_admits_only_allowed_ranges_v4_and_v6() -> None:
    ruleset = rules("Deny", "10.0.0.0/8", "203.0.113.7", "2001:db8::/32")
    assert ruleset.admits(ipaddress.ip_address("10.20.30.40"))
    assert ruleset.admits(ipaddress.ip_address("203.0.113.7"))
    assert not ruleset.admits(ipaddress.ip_address("203.0.113.8"))
    assert ruleset.admits(ipaddress.ip_address("2001:db8::1"))
    assert not ruleset.admits(ipaddress.ip_address("2001:db9::1"))
    assert not ruleset.admits(None)
    assert rules("Allow").admits(ipaddress.ip_address("192.0.2.1"))
    assert NetworkRuleSet.parse(None) is None


@pytest.mark.parametrize(
    "doc",
    [
        {"defaultAction": "Maybe"},
        {"defaultAction": "Deny", "ipRules": [{"action": "Deny", "value": "10.0.0.1"}]},
        {"defaultAction": "Deny", "ipRules": [{"value": "10.0.0.0/33"}]},
        {"defaultAction": "Deny", "ipRules": [{"value": "not an address"}]},
        {"defaultAction": "Deny", "ipRules": [{"value": "10.0.0.1"}] * 201},
    ],
)
def test_invalid_rule_sets(doc: dict[str, Any]) -> None:
    with pytest.raises(NetworkRuleInvalid):
        NetworkRuleSet.parse(doc)


@given(st.ip_addresses(), st.integers(min_value=0, max_value=128))
def test_cidr_matching_agrees_with_ipaddress(address: Any, prefix: int) -> None:
    prefix = min(prefix, address.max_prefixlen)
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    ruleset = rules("Deny", str(network))
    assert ruleset.admits(address)
    assert NetworkRuleSet.parse(ruleset.to_doc()) == ruleset


@given(st.text(max_size=40))
def test_address_and_network_parsers_never_raise_anything_else(text: str) -> None:
    parse_address(text)
    try:
        parse_network(text)
    except NetworkRuleInvalid:
        pass


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = parse_proxies("127.0.0.1, 10.0.0.0/8")
    assert str(client_address("127.0.0.1", "198.51.100.9", proxies)) == "198.51.100.9"
    # The client cannot forge its way in: only the right-most hop not a proxy counts.
    assert str(client_address("127.0.0.1", "10.9.9.9, 198.51.100.9, 10.0.0.5", proxies)) == "198.51.100.9"
    assert str(client_address("192.0.2.50", "10.1.1.1", proxies)) == "192.0.2.50"  # peer is no proxy
    assert str(client_address("127.0.0.1", "junk", proxies)) == "127.0.0.1"
    assert str(client_address("::ffff:127.0.0.1", None, proxies)) == "127.0.0.1"
    assert client_address(None, "1.2.3.4", proxies) is None


# --- rate limits ------------------------------------------------------------------------------------------------


def test_categories_and_keys_follow_acr_table() -> None:
    assert categories("HEAD", "manifest") == ("read",)
    assert categories("GET", "referrers") == ("read", "referrers")
    assert categories("PATCH", "upload_session") == ("write",)
    assert categories("DELETE", "blob") == ("delete",)
    assert categories("POST", "oauth") == ("oauth",)
    keys = bucket_keys("Premium", "reg", "token:ci", ("read", "referrers"))
    assert [(k.scope, k.category, k.per_minute) for k in keys] == [
        ("registry", "read", 20_000),
        ("token:ci", "read", 10_000),
        ("registry", "referrers", 2_000),
        ("token:ci", "referrers", 1_000),
    ]
    assert [k.per_minute for k in bucket_keys("Basic", "r", "admin", ("oauth",))] == [10_000]  # registry only


@given(
    st.integers(min_value=1, max_value=10_000),
    st.lists(st.tuples(st.floats(min_value=0, max_value=30), st.integers(min_value=1, max_value=50)), max_size=40),
)
def test_bucket_never_grants_more_than_capacity_plus_refill(capacity: int, steps: list[tuple[float, int]]) -> None:
    bucket = Bucket(float(capacity), float(capacity), 0.0)
    now, granted = 0.0, 0
    for advance, want in steps:
        now += advance
        got = bucket.take(want, now)
        assert 0 <= got <= want
        granted += got
    assert granted <= capacity + now * capacity / 60.0 + 1e-6


def test_retry_after_counts_down() -> None:
    bucket = Bucket(60.0, 0.0, 0.0)  # one token a second
    assert bucket.seconds_until_one(0.0) == pytest.approx(1.0)
    assert bucket.seconds_until_one(0.5) == pytest.approx(0.5)
    assert retry_after_header(0.2) == "1" and retry_after_header(2.1) == "3"


class FakeStore:
    """The shared store: one dict, atomic by construction (the adapter does it with ETags)."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls = 0

    async def update(self, partition: str, item: str, update: Any) -> Any:
        self.calls += 1
        await asyncio.sleep(0)  # a round trip: other requests run meanwhile
        state, result = update(self.docs.get((partition, item)))
        self.docs[(partition, item)] = state
        return result


async def test_instances_sharing_a_store_never_exceed_the_limit_together() -> None:
    store, now = FakeStore(), [1000.0]
    instances = [RateLimiter(store.update, clock=lambda: now[0]) for _ in range(3)]
    key = [BucketKey("reg", "write", "admin", 300)]  # leases of 3 tokens
    admitted = 0
    for i in range(1000):
        admitted += await instances[i % 3].check(key) is None
    assert admitted == 300
    assert store.calls < 1000  # the local fast path: most requests never reached the store
    waits = [await instances[0].check(key) for _ in range(3)]
    assert all(w is not None and w > 0 for w in waits)
    now[0] += 0.1
    later = await instances[0].check(key)
    assert later is not None and later < waits[0]  # Retry-After counts down
    now[0] += 60
    assert await instances[1].check(key) is None  # refilled


async def test_concurrent_requests_share_one_lease() -> None:
    store = FakeStore()
    limiter = RateLimiter(store.update, clock=lambda: 5000.0)
    key = [BucketKey("reg", "read", "registry", 60_000)]  # leases of 600
    results = await asyncio.gather(*(limiter.check(key) for _ in range(50)))
    assert results == [None] * 50
    assert store.calls == 1
