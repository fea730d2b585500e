"""The rules of webhooks, as pure functions: names, scopes, actions, tier caps, which events a webhook
gets, retry delays, signatures, CloudEvents, header masking and which targets are refused.

Scope (ACR): empty = every repository; `repo:tag` = that tag; `repo:*` = every tag of `repo` (and the
repository's untagged events); `repo` alone = `repo:latest`. `*` may also be used as a glob in the
repository part (`team/*:*`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from services.events.models import ALL_ACTIONS, RegistryEvent

WEBHOOK_NAME = re.compile(r"^[A-Za-z0-9]{5,50}$")
WEBHOOK_LIMITS: Mapping[str, int] = {"Basic": 2, "Standard": 10, "Premium": 500}
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
SIGNATURE_HEADER = "X-Registry-Signature"
DELIVERY_HEADER = "X-Registry-Delivery"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
CLOUDEVENT_TYPES: Mapping[str, str] = {  # Event Grid's names for ACR events, plus ours
    "push": "Microsoft.ContainerRegistry.ImagePushed",
    "delete": "Microsoft.ContainerRegistry.ImageDeleted",
    "chart_push": "Microsoft.ContainerRegistry.ChartPushed",
    "chart_delete": "Microsoft.ContainerRegistry.ChartDeleted",
    "quarantine": "Microsoft.ContainerRegistry.ImageQuarantined",
    "untag": "Microsoft.ContainerRegistry.ImageUntagged",
    "ping": "Microsoft.ContainerRegistry.Ping",
}


# RFC 9110 field names (tokens) and values (visible ASCII, spaces and tabs inside; no CR, LF or NUL).
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[ \t]*[\x21-\x7e])*)?")
MAX_CUSTOM_HEADERS = 16
MAX_HEADER_VALUE = 4096
# Set by the HTTP client or the delivery itself; a custom header must never replace them.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "content-type",
        "content-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "proxy-authorization",
        "proxy-connection",
        "user-agent",
        DELIVERY_HEADER.lower(),
        SIGNATURE_HEADER.lower(),
    }
)


class WebhookInvalid(ValueError):
    """A webhook setting breaks a rule (the message says which)."""


def check_name(name: str) -> str:
    if not WEBHOOK_NAME.fullmatch(name):
        raise WebhookInvalid(f"webhook name {name!r} is invalid: use 5-50 letters and digits")
    return name


def check_service_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookInvalid("serviceUri must be an absolute http or https URI")
    return uri


def check_actions(actions: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(actions))
    if not chosen:
        raise WebhookInvalid("a webhook needs at least one action")
    unknown = [a for a in chosen if a not in ALL_ACTIONS]
    if unknown:
        raise WebhookInvalid(f"unknown action(s) {', '.join(unknown)}; use {', '.join(ALL_ACTIONS)}")
    return chosen


def check_scope(scope: str) -> str:
    if scope and not re.fullmatch(r"[a-z0-9*._/-]+(:[A-Za-z0-9*_.-]+)?", scope):
        raise WebhookInvalid(f"scope {scope!r} is invalid: use repository, repository:tag or repository:*")
    return scope


def check_custom_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Custom headers go on every delivery verbatim, so each must be a well-formed HTTP header that cannot
    split the request (CR, LF, NUL) or replace a header the delivery itself sets (framing, signature)."""
    if len(headers) > MAX_CUSTOM_HEADERS:
        raise WebhookInvalid(f"at most {MAX_CUSTOM_HEADERS} custom headers are allowed")
    seen: set[str] = set()
    for name, value in headers.items():
        shown = name[:64]
        if not HEADER_NAME.fullmatch(name) or len(name) > 256:
            raise WebhookInvalid(f"custom header name {shown!r} is invalid: use letters, digits and !#$%&'*+-.^_`|~")
        if name.lower() in RESERVED_HEADERS:
            raise WebhookInvalid(f"custom header {name!r} is set by the delivery itself and cannot be overridden")
        if name.lower() in seen:
            raise WebhookInvalid(f"custom header {shown!r} is given twice")
        seen.add(name.lower())
        if not isinstance(value, str) or not HEADER_VALUE.fullmatch(value) or len(value) > MAX_HEADER_VALUE:
            raise WebhookInvalid(
                f"the value of custom header {shown!r} is invalid: printable ASCII only (no CR, LF or"
                f" control characters), at most {MAX_HEADER_VALUE} characters"
            )
    return dict(headers)


def delivery_headers(custom: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """The headers of one delivery: the custom ones (reserved names dropped, should any predate the checks)
    with the delivery's own on top, whatever their case."""
    owned = {name.lower() for name in own}
    kept = {k: v for k, v in custom.items() if k.lower() not in RESERVED_HEADERS and k.lower() not in owned}
    return kept | dict(own)


def check_capacity(sku: str, existing: int) -> None:
    limit = WEBHOOK_LIMITS.get(sku, WEBHOOK_LIMITS["Basic"])
    if existing >= limit:
        raise WebhookInvalid(f"the {sku} tier allows {limit} webhooks per registry")


def scope_matches(scope: str, repository: str, tag: str | None) -> bool:
    if not scope:
        return True
    repo_pattern, _, tag_pattern = scope.partition(":")
    if not fnmatchcase(repository, repo_pattern):
        return False
    tag_pattern = tag_pattern or "latest"
    if tag is None:
        return tag_pattern == "*"
    return fnmatchcase(tag, tag_pattern)


def in_region(location: str, event: RegistryEvent, remote: frozenset[str]) -> bool:
    """ACR's regional webhooks of a geo-replicated registry: a per-region push (an event with a `region`)
    goes to the webhooks of that region only; the push itself to every webhook but those located in the
    registry's other regions (`remote`), which hear of it once the image is in their region. Other events
    go to every webhook, wherever it is."""
    where = location.replace(" ", "").lower()
    if event.region is not None and event.action != "replicated":
        return where == event.region
    if event.action in ("push", "chart_push"):
        return where not in remote
    return True


def wants(status: str, actions: Iterable[str], scope: str, event: RegistryEvent) -> bool:
    """Whether a webhook with these settings gets this event."""
    return (
        status == "enabled"
        and event.action in set(actions)
        and scope_matches(scope, event.target.repository, event.target.tag)
    )


def retry_delay(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): exponential with equal jitter, or the
    receiver's Retry-After, both at most `cap`."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    jitter: float = (rng or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_retryable(status: int | None) -> bool:
    """Network errors (no status), 5xx, 429 and 408 are tried again; other answers are final."""
    return status is None or status in RETRYABLE_STATUSES or status >= 500


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>` (the receiver recomputes and compares)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def mask(value: str) -> str:
    """A secret header value as shown by the API: nothing of it (not even its length)."""
    return "*****"


def masked_headers(headers: Mapping[str, str], secret_names: Iterable[str]) -> dict[str, str]:
    secrets = {name.lower() for name in secret_names}
    return {k: mask(v) if k.lower() in secrets else v for k, v in headers.items()}


def cloudevent(registry: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as a CloudEvents 1.0 structured-mode JSON object (the ACR payload is its `data`)."""
    target = event.get("target") or {}
    subject = target.get("repository", "")
    if target.get("tag"):
        subject += ":" + target["tag"]
    action = str(event.get("action", ""))
    values: dict[str, Any] = {
        "specversion": "1.0",
        "id": event["id"],
        "source": f"/registries/{registry}",
        "type": CLOUDEVENT_TYPES.get(action, f"Microsoft.ContainerRegistry.{action}"),
        "time": event.get("timestamp"),
        "datacontenttype": "application/json",
        "data": dict(event),
    }
    if subject:
        values["subject"] = subject
    return values


def address_refused(address: str) -> bool:
    """Private, loopback, link-local, multicast, reserved and unspecified addresses are refused targets."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
