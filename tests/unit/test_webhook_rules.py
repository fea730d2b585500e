"""Webhook rules: scopes, actions, caps, retry delays, Retry-After, signatures, masking, refused targets."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.events.models import EventTarget, RegistryEvent
from services.webhooks import rules


@pytest.mark.parametrize(
    ("scope", "repository", "tag", "expected"),
    [
        ("", "any/repo", None, True),
        ("app:v1", "app", "v1", True),
        ("app:v1", "app", "v2", False),
        ("app:v1", "app", None, False),
        ("app:*", "app", "anything", True),
        ("app:*", "app", None, True),
        ("app:*", "other", "v1", False),
        ("app", "app", "latest", True),
        ("app", "app", "v1", False),
        ("team/*:*", "team/web", "v1", True),
        ("team/*:*", "web", "v1", False),
    ],
)
def test_scope_matches(scope: str, repository: str, tag: str | None, expected: bool) -> None:
    assert rules.scope_matches(scope, repository, tag) is expected


def test_wants_needs_enabled_action_and_scope() -> None:
    event = RegistryEvent(action="push", target=EventTarget(mediaType="m", digest="d", repository="app", tag="v1"))
    assert rules.wants("enabled", ["push"], "app:*", event)
    assert not rules.wants("disabled", ["push"], "app:*", event)
    assert not rules.wants("enabled", ["delete"], "app:*", event)
    assert not rules.wants("enabled", ["push"], "other:*", event)


def test_settings_checks_and_tier_caps() -> None:
    assert rules.check_name("hook1") == "hook1"
    for bad in ("abc", "with-dash", "x" * 51):
        with pytest.raises(rules.WebhookInvalid):
            rules.check_name(bad)
    with pytest.raises(rules.WebhookInvalid):
        rules.check_service_uri("ftp://example.com/x")
    with pytest.raises(rules.WebhookInvalid):
        rules.check_actions(["push", "explode"])
    assert rules.check_actions(["push", "push", "untag"]) == ["push", "untag"]
    rules.check_capacity("Basic", 1)
    with pytest.raises(rules.WebhookInvalid):
        rules.check_capacity("Basic", 2)
    rules.check_capacity("Standard", 9)
    with pytest.raises(rules.WebhookInvalid):
        rules.check_capacity("Premium", 500)


@given(st.integers(min_value=1, max_value=30), st.integers(min_value=0, max_value=2**32))
def test_retry_delay_grows_with_jitter_within_bounds(attempt: int, seed: int) -> None:
    delay = rules.retry_delay(attempt, 1.0, 30.0, rng=random.Random(seed))
    ceiling = min(30.0, 2.0 ** (attempt - 1))
    assert ceiling / 2 <= delay <= ceiling


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    assert rules.retry_delay(1, 1.0, 30.0, retry_after=7) == 7
    assert rules.retry_delay(1, 1.0, 30.0, retry_after=3600) == 30
    assert rules.parse_retry_after("12") == 12
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert rules.parse_retry_after("Wed, 01 Jan 2025 12:00:09 GMT", now) == 9
    assert rules.parse_retry_after("soon") is None and rules.parse_retry_after(None) is None


def test_retryable_statuses() -> None:
    assert rules.is_retryable(None) and rules.is_retryable(500) and rules.is_retryable(429)
    assert not rules.is_retryable(400) and not rules.is_retryable(404) and not rules.is_retryable(200)


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    header = rules.signature("secret", 1700000000, b'{"a":1}')
    expected = hmac.new(b"secret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_masking_shows_nothing_of_a_secret() -> None:
    # Issue 8, item 14: the first three characters used to show ("Bea*****").
    assert rules.mask("Bearer abcdefghijklmnop") == "*****"
    assert rules.mask("short") == "*****"
    assert rules.masked_headers({"Authorization": "Bearer abcdefghijklmnop", "Accept": "x"}, ["authorization"]) == {
        "Authorization": "*****",
        "Accept": "x",
    }


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Evil": "a\r\nHost: attacker"}, "X-Evil"),  # request splitting
        ({"X-Evil": "a\nb"}, "X-Evil"),
        ({"X-Evil": "a\x00b"}, "X-Evil"),
        ({"X-Evil\r\nInjected": "v"}, "X-Evil"),
        ({"Bad Name": "v"}, "Bad Name"),
        ({"": "v"}, "''"),
        ({"Host": "attacker.example"}, "Host"),
        ({"content-length": "0"}, "content-length"),
        ({"Transfer-Encoding": "chunked"}, "Transfer-Encoding"),
        ({"Content-Type": "text/plain"}, "Content-Type"),
        ({"X-Registry-Signature": "t=1,v1=forged"}, "X-Registry-Signature"),
        ({"X-Long": "v" * 5000}, "X-Long"),
        ({f"X-{i}": "v" for i in range(17)}, "at most 16"),
    ],
)
def test_custom_headers_that_could_split_or_override_a_delivery_are_refused(
    headers: dict[str, str], named: str
) -> None:
    with pytest.raises(rules.WebhookInvalid) as caught:
        rules.check_custom_headers(headers)
    assert named in str(caught.value)


def test_well_formed_custom_headers_are_kept() -> None:
    headers = {"Authorization": "Bearer a.b.c", "X-Api-Key": "k e y\tx", "X-Empty": ""}
    assert rules.check_custom_headers(headers) == headers


def test_the_delivery_headers_win_over_custom_ones_whatever_their_case() -> None:
    custom = {"content-type": "text/plain", "HOST": "evil", "X-Team": "a", "x-registry-delivery": "forged"}
    own = {"Content-Type": "application/json", "X-Registry-Delivery": "d1"}
    assert rules.delivery_headers(custom, own) == {
        "X-Team": "a",
        "Content-Type": "application/json",
        "X-Registry-Delivery": "d1",
    }


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("::1", True),
        ("fe80::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", True),
        ("20.50.2.1", False),
        ("2603:1030::1", False),
    ],
)
def test_private_loopback_and_link_local_targets_are_refused(address: str, refused: bool) -> None:
    assert rules.address_refused(address) is refused


def test_cloudevent_wraps_the_acr_payload() -> None:
    payload = {"id": "e1", "timestamp": "t", "action": "chart_push", "target": {"repository": "c", "tag": "1.0"}}
    event = rules.cloudevent("reg", payload)
    assert event["type"] == "Microsoft.ContainerRegistry.ChartPushed"
    assert event["subject"] == "c:1.0" and event["data"] == payload and event["specversion"] == "1.0"


def test_regional_webhooks_of_a_geo_replicated_registry() -> None:
    from services.events.models import EventTarget, RegistryEvent

    target = EventTarget(
        mediaType="application/vnd.oci.image.manifest.v1+json", digest="sha256:" + "a" * 64, repository="app", tag="v1"
    )
    push = RegistryEvent(action="push", target=target)
    east_push = RegistryEvent(action="push", target=target, region="eastus")
    replicated = RegistryEvent(action="replicated", target=target, registry="reg01", region="eastus", lagMs=5)
    delete = RegistryEvent(action="delete", target=target)
    remote = frozenset({"eastus", "japaneast"})
    # the push itself: everywhere but the other regions of the registry
    assert rules.in_region("westeurope", push, remote) and rules.in_region("", push, remote)
    assert not rules.in_region("East US", push, remote)
    # the per-region push: that region's webhooks only
    assert rules.in_region("East US", east_push, remote) and not rules.in_region("westeurope", east_push, remote)
    assert not rules.in_region("japaneast", east_push, remote)
    # replicated and deletes: every webhook, wherever it is
    assert all(
        rules.in_region(where, event, remote) for where in ("westeurope", "eastus") for event in (replicated, delete)
    )
    # one region: every webhook gets the push, as before
    assert rules.in_region("eastus", push, frozenset())
