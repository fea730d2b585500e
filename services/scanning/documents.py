"""The two documents a scan attaches to the image as OCI referrers, and reading the SBOM back.

- The SBOM is SPDX 2.3 JSON (`application/spdx+json`): one package per inventory entry, each with its
  package URL as an external reference, the image itself as the described root. `sbom_packages` reads the
  purls back, which is all a re-match needs.
- The vulnerability report (`application/vnd.acr-serverless.vulnerability-report.v1+json`, our format):
  the subject, the advisory database it was matched against, counts per severity, the worst finding and
  each finding with its advisory id, aliases, package, installed and fixed versions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from services.platform.cosmos import utcnow
from services.scanning.advisories import SEVERITY_RANK, Finding, severity_counts
from services.scanning.inventory import Inventory, Package

SBOM_MEDIA_TYPE = "application/spdx+json"
REPORT_MEDIA_TYPE = "application/vnd.acr-serverless.vulnerability-report.v1+json"
TOOL = "acr-serverless-scanner-1.0"
SPDX_NAMESPACE = "https://spdx.acr-serverless.invalid/"


def _spdx_id(index: int) -> str:
    return f"SPDXRef-Package-{index}"


def spdx_document(subject: str, repository: str, inventory: Inventory) -> bytes:
    """An SPDX 2.3 JSON document of the image's packages."""
    root = "SPDXRef-Image"
    packages: list[dict[str, Any]] = [
        {
            "SPDXID": root,
            "name": repository,
            "versionInfo": subject,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "CONTAINER",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": f"pkg:oci/{repository.rsplit('/', 1)[-1]}@{subject.replace(':', '%3A')}",
                }
            ],
        }
    ]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": root}]
    for index, package in enumerate(inventory.packages, start=1):
        entry: dict[str, Any] = {
            "SPDXID": _spdx_id(index),
            "name": package.name,
            "versionInfo": package.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "externalRefs": [
                {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": package.purl()}
            ],
        }
        if package.source and package.source != package.name:
            entry["sourceInfo"] = f"built from source package {package.source}"
        if package.location:
            entry["comment"] = f"found in {package.location}"
        packages.append(entry)
        relationships.append(
            {"spdxElementId": root, "relationshipType": "CONTAINS", "relatedSpdxElement": _spdx_id(index)}
        )
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{repository}@{subject}",
        "documentNamespace": f"{SPDX_NAMESPACE}{repository}/{subject}/{uuid.uuid4()}",
        "creationInfo": {"created": utcnow().split(".")[0] + "Z", "creators": [f"Tool: {TOOL}"]},
        "packages": packages,
        "relationships": relationships,
    }
    if inventory.os is not None:
        document["comment"] = f"operating system: {inventory.os.pretty_name or inventory.os.id}"
    return json.dumps(document, indent=1, sort_keys=False).encode()


def sbom_packages(data: bytes) -> list[Package]:
    """The packages of an SBOM `spdx_document` wrote (their purls), for re-matching."""
    document = json.loads(data)
    packages = []
    for entry in document.get("packages") or []:
        for ref in entry.get("externalRefs") or []:
            if ref.get("referenceType") == "purl":
                found = Package.from_purl(str(ref.get("referenceLocator", "")))
                if found is not None:
                    packages.append(found)
    return packages


def worst_finding(findings: Iterable[Finding]) -> Finding | None:
    ranked = sorted(findings, key=lambda f: (-SEVERITY_RANK[f.severity], f.id))
    return ranked[0] if ranked else None


def vulnerability_report(
    subject: str,
    media_type: str,
    repository: str,
    findings: list[Finding],
    database_version: str,
    database_records: int,
    os_name: str | None,
    package_count: int,
) -> bytes:
    worst = worst_finding(findings)
    document = {
        "schemaVersion": 1,
        "scanner": {"name": TOOL},
        "subject": {"digest": subject, "mediaType": media_type, "repository": repository},
        "advisoryDatabase": {"version": database_version, "records": database_records},
        "created": utcnow(),
        "os": os_name,
        "packages": package_count,
        "summary": severity_counts(findings) | {"total": len(findings)},
        "worst": worst.to_json() if worst is not None else None,
        "findings": [finding.to_json() for finding in findings],
    }
    return json.dumps(document, indent=1).encode()
