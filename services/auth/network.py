"""Network rules (ACR's firewall, Premium only) and the client's address.

A registry's `networkRuleSet` is ARM's shape: `{"defaultAction": "Allow" | "Deny", "ipRules":
[{"action": "Allow", "value": "<address or CIDR>"}]}` (IPv4 and IPv6). With `Deny`, only addresses inside
an allow rule get in; they are checked before authentication, so a refused caller learns nothing else.

The client's address is the TCP peer, unless the peer is a trusted proxy (`TRUSTED_PROXIES`, addresses
or CIDRs): then it is the right-most `X-Forwarded-For` entry that is not itself a trusted proxy. Entries a
client wrote itself sit further left and are never believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_IP_RULES = 200  # ACR's Premium limit


class NetworkRuleInvalid(ValueError):
    pass


def parse_network(text: str) -> IPNetwork:
    """`10.0.0.0/8`, `203.0.113.7` (a /32), `2001:db8::/32`; host bits are tolerated, as ACR does."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise NetworkRuleInvalid(f"{text!r} is not an IP address or CIDR range") from exc


def parse_address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _inside(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


@dataclass(frozen=True, slots=True)
class NetworkRuleSet:
    default_action: Literal["Allow", "Deny"]
    allowed: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, doc: dict[str, Any] | None) -> NetworkRuleSet | None:
        if not doc:
            return None
        action = doc.get("defaultAction", "Allow")
        if action not in ("Allow", "Deny"):
            raise NetworkRuleInvalid(f"defaultAction must be Allow or Deny, not {action!r}")
        rules = doc.get("ipRules") or []
        if len(rules) > MAX_IP_RULES:
            raise NetworkRuleInvalid(f"at most {MAX_IP_RULES} IP rules")
        allowed = []
        for rule in rules:
            if rule.get("action", "Allow") != "Allow":
                raise NetworkRuleInvalid("IP rules can only allow")
            allowed.append(parse_network(str(rule.get("value", ""))))
        return cls(action, tuple(allowed))

    def to_doc(self) -> dict[str, Any]:
        return {
            "defaultAction": self.default_action,
            "ipRules": [{"action": "Allow", "value": str(n)} for n in self.allowed],
        }

    def admits(self, address: IPAddress | None) -> bool:
        if self.default_action == "Allow":
            return True
        return address is not None and _inside(address, self.allowed)


def parse_proxies(text: str) -> tuple[IPNetwork, ...]:
    return tuple(parse_network(part) for part in text.split(",") if part.strip())


def client_address(peer: str | None, forwarded_for: str | None, proxies: tuple[IPNetwork, ...]) -> IPAddress | None:
    address = parse_address(peer) if peer else None
    if address is None or not forwarded_for or not _inside(address, proxies):
        return address
    for entry in reversed(forwarded_for.split(",")):
        hop = parse_address(entry)
        if hop is None:
            return address  # a malformed hop: believe nothing further left
        if not _inside(hop, proxies):
            return hop
        address = hop
    return address
