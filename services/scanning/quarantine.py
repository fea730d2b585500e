"""ACR's quarantine flow, and our pull policy on vulnerable images. Pure rules plus the one state change.

Quarantine (the registry's `policies.quarantinePolicy.status == "enabled"`), as ACR runs it:

    push of a new image          quarantineState "Pending"; webhooks get `quarantine` instead of `push`
    pull by tag of a held image  404 MANIFEST_UNKNOWN (the tag is not served while its image is held)
    pull by digest               403 DENIED "The operation is disallowed." unless the caller holds
                                 AcrQuarantineReader/Writer (the scanner, operators): they may pull it
    scan done / failed           the scanner sets "Passed" / "Failed" with quarantineDetails (a JSON string:
                                 the scan's counts, reason and report digest), as an AcrQuarantineWriter may
                                 through `PATCH /acr/v1/<name>/_manifests/<digest>`
    "Passed"                     released: pulls allowed, and the `push` event raised now, once (the
                                 change and the outbox of its events are one batch, under the document's
                                 ETag, so two releases racing raise it once)
    "Failed"                     stays blocked

A "held" state is anything but "Passed" once set (ACR also knows ScanStarted/ScanSucceeded/ScanFailed
from its early preview: ScanSucceeded counts as Passed). Images pushed before the policy was enabled have
no state and are not held. Artifacts (signatures, SBOMs, charts) are not held: only what the scanner scans.

Our addition, `policies.vulnerabilityPolicy` ({"status": "enabled", "severity": "High",
"exemptRepositories": ["base/*", "tools/linter"]}): a pull of an image whose scan report has a finding at or
above `severity` is refused, 403 DENIED naming the worst finding and the report's digest (like Harbor's
"prevent vulnerable images from running"); exempt repositories (exact names, or a prefix ending in `*`) are
never refused. An image not scanned yet is not refused by this policy (quarantine is the gate for that).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.events.actions import ManifestFacts, push_events
from services.events.models import EventRequest, RegistryEvent
from services.events.outbox import outbox_for
from services.events.store import OutboxDoc
from services.management.store import RegistryDoc
from services.registry.errors import ErrorCode, RegistryError
from services.registry.manifest import DOCKER_CONFIG, IMAGE_MANIFEST_TYPES, INDEX_TYPES, OCI_CONFIG
from services.registry.store import ManifestDoc
from services.scanning.advisories import SEVERITIES, SEVERITY_RANK
from services.scanning.store import ScanDoc

QUARANTINE_POLICY = "quarantinePolicy"
VULNERABILITY_POLICY = "vulnerabilityPolicy"
PENDING, PASSED, FAILED = "Pending", "Passed", "Failed"
RELEASED_STATES = frozenset({PASSED, "ScanSucceeded"})
DISALLOWED = "The operation is disallowed."
IMAGE_CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})
SEVERITY_WORDS = {name.lower(): name for name in SEVERITIES if name != "UNKNOWN"}


def scannable(manifest: ManifestDoc) -> bool:
    """An image (or an index of images), not an artifact: no subject, no artifactType, an image config."""
    if manifest.subject is not None or manifest.artifactType is not None:
        return False
    if manifest.mediaType in INDEX_TYPES:
        return True
    return manifest.mediaType in IMAGE_MANIFEST_TYPES and manifest.configMediaType in IMAGE_CONFIGS


def quarantine_enabled(registry: RegistryDoc) -> bool:
    return bool((registry.policies.get(QUARANTINE_POLICY) or {}).get("status") == "enabled")


def held(state: str | None) -> bool:
    return state is not None and state not in RELEASED_STATES


@dataclass(frozen=True, slots=True)
class VulnerabilityPolicy:
    severity: str  # CRITICAL, HIGH, MEDIUM or LOW: findings at or above it block pulls
    exempt: tuple[str, ...] = ()

    def exempts(self, repository: str) -> bool:
        return any(
            repository.startswith(pattern[:-1]) if pattern.endswith("*") else repository == pattern
            for pattern in self.exempt
        )

    def blocks(self, worst_severity: str | None) -> bool:
        if worst_severity is None or worst_severity not in SEVERITY_RANK:
            return False
        return SEVERITY_RANK[worst_severity] >= SEVERITY_RANK[self.severity]


def vulnerability_policy(registry: RegistryDoc) -> VulnerabilityPolicy | None:
    policy = registry.policies.get(VULNERABILITY_POLICY) or {}
    if policy.get("status") != "enabled":
        return None
    severity = SEVERITY_WORDS.get(str(policy.get("severity", "critical")).lower(), "CRITICAL")
    return VulnerabilityPolicy(severity, tuple(str(p) for p in policy.get("exemptRepositories") or []))


def check_vulnerability_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """Validate the policy as the control plane stores it (ValueError naming the field)."""
    severity = policy.setdefault("severity", "Critical")
    if not isinstance(severity, str) or severity.lower() not in SEVERITY_WORDS:
        raise ValueError("severity must be one of Critical, High, Medium, Low")
    exempt = policy.setdefault("exemptRepositories", [])
    if not isinstance(exempt, list) or len(exempt) > 100 or not all(isinstance(p, str) and p for p in exempt):
        raise ValueError("exemptRepositories must be a list of at most 100 repository names or prefixes ending in *")
    return policy


# --- push ---------------------------------------------------------------------------------------------
def hold_on_push(registry: RegistryDoc, doc: ManifestDoc) -> bool:
    """Put a newly pushed image in quarantine when the policy is on; whether its push is held (its events
    are `quarantine`, not `push`). A push of a held image again stays held."""
    if not quarantine_enabled(registry):
        return False
    if doc.etag is None and doc.quarantineState is None and scannable(doc):
        doc.quarantineState = PENDING
    return held(doc.quarantineState)


def quarantine_events(events: Iterable[RegistryEvent], is_held: bool) -> list[RegistryEvent]:
    """A held push raises `quarantine` in place of each `push` (chart events are not raised until release)."""
    if not is_held:
        return list(events)
    return [e.model_copy(update={"action": "quarantine"}) for e in events if e.action == "push"]


# --- pull ---------------------------------------------------------------------------------------------
def check_quarantine(
    registry: RegistryDoc, manifest: ManifestDoc, by_tag: str | None, may_read_quarantined: bool
) -> None:
    if not quarantine_enabled(registry) or not held(manifest.quarantineState):
        return
    if by_tag is not None:
        raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"tag": by_tag})
    if not may_read_quarantined:
        raise RegistryError(
            ErrorCode.DENIED,
            f"{DISALLOWED} The image is quarantined (quarantineState {manifest.quarantineState}).",
            detail={"digest": manifest.digest, "quarantineState": manifest.quarantineState},
        )


def check_vulnerabilities(policy: VulnerabilityPolicy, repository: str, scan: ScanDoc | None) -> None:
    if scan is None or scan.worst is None or policy.exempts(repository):
        return
    worst = scan.worst
    if policy.blocks(worst.get("severity")):
        raise RegistryError(
            ErrorCode.DENIED,
            f"{DISALLOWED} The image has a {worst.get('severity')} vulnerability: {worst.get('id')} in "
            f"{worst.get('package')} {worst.get('version')} (report {scan.reportDigest}); the registry's "
            f"vulnerabilityPolicy blocks {policy.severity} and above.",
            detail={"worst": worst, "report": scan.reportDigest, "blockedAtOrAbove": policy.severity},
        )


def may_read_quarantined(identity_kind: str, may: bool) -> bool:
    """The admin user (and registries without authentication) may; others need the quarantine roles."""
    return may or identity_kind in ("admin", "open")


# --- release ------------------------------------------------------------------------------------------
def scan_details(scan: ScanDoc) -> str:
    """The quarantineDetails the scanner writes: what the scan found, as a JSON string (ACR's field is text)."""
    return json.dumps(
        {
            "scanner": "acr-serverless-scanner",
            "state": scan.state,
            "reason": scan.reason,
            "counts": scan.counts,
            "worst": scan.worst,
            "report": scan.reportDigest,
            "sbom": scan.sbomDigest,
        },
        separators=(",", ":"),
    )


def release_outbox(
    registry: str,
    repository: str,
    before: ManifestDoc,
    new_state: str | None,
    tags: list[str],
    request: EventRequest,
    enabled: bool,
) -> OutboxDoc | None:
    """The `push` events of an image released now (held before, passed now, with the policy on)."""
    if not enabled or not held(before.quarantineState) or held(new_state) or new_state is None:
        return None
    facts = ManifestFacts(repository, before.digest, before.mediaType, before.size, None)
    return outbox_for(registry, before.repo, push_events(facts, tags, request))
