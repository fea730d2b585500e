"""The quarantine and vulnerability-policy rules (services/scanning/quarantine.py), without storage."""

from __future__ import annotations

import pytest

from services.events.models import EventRequest, EventTarget, RegistryEvent
from services.management.store import RegistryDoc
from services.registry.errors import RegistryError
from services.registry.store import ManifestDoc
from services.scanning import quarantine
from services.scanning.store import ScanDoc

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REQUEST = EventRequest(id="r", host="h", method="PUT", useragent="t")


def registry(**policies: object) -> RegistryDoc:
    return RegistryDoc(id="reg", registry="reg", loginServer="reg.azurecr.localhost", policies=dict(policies))


def image(state: str | None = None, etag: str | None = None, **fields: object) -> ManifestDoc:
    doc = ManifestDoc(
        id="manifest:sha256:a",
        repo="reg/app",
        digest="sha256:a",
        mediaType=OCI_MANIFEST,
        size=10,
        configMediaType="application/vnd.oci.image.config.v1+json",
        quarantineState=state,
        **fields,  # type: ignore[arg-type]
    )
    doc.etag = etag
    return doc


ON = {"status": "enabled"}


def test_new_images_are_held_only_with_the_policy_on() -> None:
    fresh = image()
    assert quarantine.hold_on_push(registry(quarantinePolicy=ON), fresh) and fresh.quarantineState == "Pending"
    off = image()
    assert not quarantine.hold_on_push(registry(), off) and off.quarantineState is None
    artifact = image(artifactType="application/spdx+json")
    assert not quarantine.hold_on_push(registry(quarantinePolicy=ON), artifact)
    before_policy = image(etag="1")  # pushed before the policy was on: never held
    assert not quarantine.hold_on_push(registry(quarantinePolicy=ON), before_policy)
    failed_again = image("Failed", etag="1")
    assert quarantine.hold_on_push(registry(quarantinePolicy=ON), failed_again)


def test_a_held_push_raises_quarantine_instead_of_push() -> None:
    target = EventTarget(mediaType=OCI_MANIFEST, digest="sha256:a", repository="app", tag="v1")
    events = [RegistryEvent(action="push", target=target), RegistryEvent(action="chart_push", target=target)]
    assert [e.action for e in quarantine.quarantine_events(events, True)] == ["quarantine"]
    assert [e.action for e in quarantine.quarantine_events(events, False)] == ["push", "chart_push"]


def test_pulls_of_held_images() -> None:
    on = registry(quarantinePolicy=ON)
    with pytest.raises(RegistryError) as by_tag:
        quarantine.check_quarantine(on, image("Pending"), "v1", True)
    assert by_tag.value.code.wire_code == "MANIFEST_UNKNOWN"
    with pytest.raises(RegistryError) as by_digest:
        quarantine.check_quarantine(on, image("Failed"), None, False)
    assert by_digest.value.code.wire_code == "DENIED"
    quarantine.check_quarantine(on, image("Pending"), None, True)  # a quarantine reader, by digest
    quarantine.check_quarantine(on, image("Passed"), "v1", False)
    quarantine.check_quarantine(on, image("ScanSucceeded"), "v1", False)
    quarantine.check_quarantine(registry(), image("Pending"), "v1", False)  # policy off: not enforced
    assert quarantine.may_read_quarantined("admin", False) and not quarantine.may_read_quarantined("entra", False)


def test_release_raises_push_once_per_tag() -> None:
    outbox = quarantine.release_outbox("reg", "app", image("Pending"), "Passed", ["v1", "latest"], REQUEST, True)
    assert outbox is not None and [(e["action"], e["target"].get("tag")) for e in outbox.events] == [
        ("push", "v1"),
        ("push", "latest"),
    ]
    assert quarantine.release_outbox("reg", "app", image("Passed"), "Passed", ["v1"], REQUEST, True) is None
    assert quarantine.release_outbox("reg", "app", image("Pending"), "Failed", ["v1"], REQUEST, True) is None
    assert quarantine.release_outbox("reg", "app", image("Pending"), "Passed", ["v1"], REQUEST, False) is None


def scan(severity: str) -> ScanDoc:
    worst = {"id": "GHSA-x", "severity": severity, "package": "p", "version": "1"}
    return ScanDoc(id="scan:a", repo="reg/app", registry="reg", repository="app", digest="a", worst=worst)


@pytest.mark.parametrize(
    ("threshold", "worst", "repository", "blocked"),
    [
        ("High", "CRITICAL", "web", True),
        ("High", "HIGH", "web", True),
        ("High", "MEDIUM", "web", False),
        ("High", "UNKNOWN", "web", False),
        ("critical", "HIGH", "web", False),
        ("Low", "LOW", "web", True),
        ("High", "CRITICAL", "tools/lint", False),
        ("High", "CRITICAL", "base", False),
        ("High", "CRITICAL", "baseline", True),
    ],
)
def test_the_vulnerability_policy(threshold: str, worst: str, repository: str, blocked: bool) -> None:
    policy = quarantine.vulnerability_policy(
        registry(
            vulnerabilityPolicy={"status": "enabled", "severity": threshold, "exemptRepositories": ["tools/*", "base"]}
        )
    )
    assert policy is not None
    if blocked:
        with pytest.raises(RegistryError, match="GHSA-x"):
            quarantine.check_vulnerabilities(policy, repository, scan(worst))
    else:
        quarantine.check_vulnerabilities(policy, repository, scan(worst))
    quarantine.check_vulnerabilities(policy, repository, None)  # not scanned yet: not this policy's business


def test_vulnerability_policy_settings_are_checked() -> None:
    assert quarantine.check_vulnerability_policy({"status": "enabled"})["severity"] == "Critical"
    for bad in ({"severity": "Huge"}, {"exemptRepositories": "x"}, {"exemptRepositories": [""]}):
        with pytest.raises(ValueError):
            quarantine.check_vulnerability_policy(dict(bad))
    assert quarantine.vulnerability_policy(registry(vulnerabilityPolicy={"status": "disabled"})) is None
