"""The offline advisory database (OSV format) and matching an inventory against it.

Records are OSV JSON (https://ossf.github.io/osv-schema/): one file per record, or the `all.zip` archives
osv.dev publishes per ecosystem, from a directory, a zip file or a blob container (`ADVISORY_DB`, see
`sources.py`). A package is affected by a record when the record names its OSV ecosystem and its name
(the source package for Debian and Alpine, the normalised name for PyPI) and its version is listed in
`versions` or falls in an `ECOSYSTEM`/`SEMVER` range, the events compared in the ecosystem's own order
(`versions.py`). The fixed version reported is the first `fixed` event above the installed version.

Severity comes from the record: GitHub's `database_specific.severity`, else the highest CVSS v3 base score
of `severity[]` (computed from the vector), else the ecosystem's own rating (`ecosystem_specific.urgency`,
`severity`), else UNKNOWN.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.scanning.inventory import Package, normalise_pypi
from services.scanning.versions import order_for, version_key

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
SEVERITY_RANK = {name: rank for rank, name in enumerate(reversed(SEVERITIES))}  # UNKNOWN 0 .. CRITICAL 4
_WORDS = {"MODERATE": "MEDIUM", "IMPORTANT": "HIGH", "NEGLIGIBLE": "LOW", "UNIMPORTANT": "LOW", "NOT YET ASSIGNED": ""}


def severity_word(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    word = text.strip().upper()
    word = _WORDS.get(word, word)
    return word if word in SEVERITIES else None


# --- CVSS v3.x base score ------------------------------------------------------------------------------
_CVSS_WEIGHTS: dict[str, dict[str, float]] = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}


def _round_up(value: float) -> float:
    scaled = round(value * 100_000)
    return scaled / 100_000.0 if scaled % 10_000 == 0 else (math.floor(scaled / 10_000) + 1) / 10.0


def cvss3_score(vector: str) -> float | None:
    """The CVSS v3.0/3.1 base score of a vector (`CVSS:3.1/AV:N/AC:L/...`), None when it is not one."""
    parts = vector.strip().split("/")
    if not parts or not parts[0].startswith("CVSS:3"):
        return None
    metrics = dict(p.split(":", 1) for p in parts[1:] if ":" in p)
    try:
        scope_changed = metrics["S"] == "C"
        privileges = {"N": 0.85, "L": 0.68 if scope_changed else 0.62, "H": 0.5 if scope_changed else 0.27}
        av, ac, ui = (_CVSS_WEIGHTS[m][metrics[m]] for m in ("AV", "AC", "UI"))
        pr = privileges[metrics["PR"]]
        c, i, a = (_CVSS_WEIGHTS[m][metrics[m]] for m in ("C", "I", "A"))
    except KeyError:
        return None
    iss = 1 - (1 - c) * (1 - i) * (1 - a)
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if scope_changed else 6.42 * iss
    if impact <= 0:
        return 0.0
    exploitability = 8.22 * av * ac * pr * ui
    total = (1.08 if scope_changed else 1.0) * (impact + exploitability)
    return _round_up(min(total, 10.0))


def score_severity(score: float) -> str:
    if score >= 9.0:
        return "CRITICAL"
    if score >= 7.0:
        return "HIGH"
    if score >= 4.0:
        return "MEDIUM"
    return "LOW" if score > 0 else "UNKNOWN"


def record_severity(record: dict[str, Any], affected: dict[str, Any] | None = None) -> str:
    database = record.get("database_specific")
    if isinstance(database, dict) and (word := severity_word(database.get("severity"))):
        return word
    scores = [
        score
        for entry in record.get("severity") or []
        if isinstance(entry, dict) and str(entry.get("type", "")).startswith("CVSS_V3")
        if (score := cvss3_score(str(entry.get("score", "")))) is not None
    ]
    if scores:
        return score_severity(max(scores))
    specific = (affected or {}).get("ecosystem_specific")
    if isinstance(specific, dict):
        for key in ("severity", "urgency"):
            if word := severity_word(specific.get(key)):
                return word
    return "UNKNOWN"


# --- records ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AffectedRange:
    events: tuple[tuple[str, str], ...]  # (kind, version) in the record's order: introduced/fixed/last_affected


@dataclass(frozen=True, slots=True)
class AffectedPackage:
    ecosystem: str
    name: str
    ranges: tuple[AffectedRange, ...]
    versions: frozenset[str]
    severity: str


@dataclass(frozen=True, slots=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    summary: str
    modified: str
    affected: tuple[AffectedPackage, ...]


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    id: str
    package: Package
    severity: str
    fixed_version: str | None
    aliases: tuple[str, ...] = ()
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "aliases": list(self.aliases),
            "severity": self.severity,
            "summary": self.summary,
            "package": {
                "name": self.package.name,
                "version": self.package.version,
                "ecosystem": self.package.ecosystem,
                "purl": self.package.purl(),
                **({"source": self.package.source} if self.package.source else {}),
            },
            "fixedVersion": self.fixed_version,
        }


def finding_from_json(item: dict[str, Any]) -> Finding:
    """A finding back from a report `Finding.to_json` wrote."""
    package = item["package"]
    kind = str(package.get("purl", "pkg:generic/")).removeprefix("pkg:").split("/", 1)[0]
    return Finding(
        str(item["id"]),
        Package(
            str(package["ecosystem"]), str(package["name"]), str(package["version"]), kind, package.get("source", "")
        ),
        str(item.get("severity", "UNKNOWN")),
        item.get("fixedVersion"),
        tuple(item.get("aliases") or ()),
        str(item.get("summary") or ""),
    )


def advisory_key(ecosystem: str, name: str) -> tuple[str, str]:
    return ecosystem, normalise_pypi(name) if ecosystem == "PyPI" else name


def parse_record(document: object) -> Advisory | None:
    """An OSV record, keeping what matching needs; None when it is not one (or is withdrawn)."""
    if not isinstance(document, dict) or not isinstance(document.get("id"), str) or document.get("withdrawn"):
        return None
    affected = []
    for entry in document.get("affected") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("package"), dict):
            continue
        package = entry["package"]
        ecosystem, name = package.get("ecosystem"), package.get("name")
        if not isinstance(ecosystem, str) or not isinstance(name, str):
            continue
        ranges = []
        for declared in entry.get("ranges") or []:
            if not isinstance(declared, dict) or declared.get("type") not in ("ECOSYSTEM", "SEMVER"):
                continue
            events = tuple(
                (kind, str(value))
                for event in declared.get("events") or []
                if isinstance(event, dict)
                for kind, value in event.items()
                if kind in ("introduced", "fixed", "last_affected", "limit")
            )
            ranges.append(AffectedRange(events))
        versions = frozenset(str(v) for v in entry.get("versions") or [] if isinstance(v, str | int | float))
        affected.append(AffectedPackage(ecosystem, name, tuple(ranges), versions, record_severity(document, entry)))
    aliases = tuple(str(a) for a in document.get("aliases") or [] if isinstance(a, str))
    summary = document.get("summary") or document.get("details") or ""
    return Advisory(
        id=document["id"],
        aliases=aliases,
        summary=str(summary)[:300],
        modified=str(document.get("modified", "")),
        affected=tuple(affected),
    )


def affected_fix(ecosystem: str, version: str, affected: AffectedPackage) -> tuple[bool, str | None]:
    """(is the version affected, the version that fixes it if known)."""
    if version in affected.versions:
        return True, _first_fixed(ecosystem, version, affected)
    installed = version_key(ecosystem, version)
    if installed is None:
        return False, None
    for declared in affected.ranges:
        if _in_range(ecosystem, installed, declared):
            return True, _first_fixed(ecosystem, version, affected)
    return False, None


def _in_range(ecosystem: str, installed: Any, declared: AffectedRange) -> bool:
    """OSV's evaluation: events sorted by version ("0" lowest); introduced at or below turns the version
    affected, fixed at or below (or last_affected below) turns it back."""
    order = order_for(ecosystem)
    assert order is not None
    keyed: list[tuple[int, Any, str]] = []
    for kind, value in declared.events:
        if kind == "introduced" and value == "0":
            keyed.append((0, None, kind))
            continue
        key = version_key(ecosystem, value)
        if key is None:
            return False  # a range we cannot order is not guessed at
        keyed.append((1, key, kind))
    keyed.sort(key=lambda item: (item[0], item[1]) if item[0] else (0,))
    affected = False
    for lowest, key, kind in keyed:
        if kind == "introduced" and (not lowest or key <= installed):
            affected = True
        elif kind != "introduced" and lowest and (key <= installed if kind != "last_affected" else key < installed):
            affected = False  # fixed (or limit) at or below, last_affected below
    return affected


def _first_fixed(ecosystem: str, version: str, affected: AffectedPackage) -> str | None:
    installed = version_key(ecosystem, version)
    candidates = []
    for declared in affected.ranges:
        for kind, value in declared.events:
            key = version_key(ecosystem, value) if kind == "fixed" else None
            if key is not None and (installed is None or key > installed):
                candidates.append((key, value))
    return min(candidates, key=lambda item: item[0])[1] if candidates else None


@dataclass(slots=True)
class AdvisoryDatabase:
    """Records indexed by (ecosystem, name); `version` names the database's content for re-matching."""

    version: str = "empty"
    records: int = 0
    index: dict[tuple[str, str], list[tuple[Advisory, AffectedPackage]]] = field(default_factory=dict)

    @classmethod
    def from_documents(cls, documents: Iterable[object], version: str) -> AdvisoryDatabase:
        database = cls(version=version)
        for document in documents:
            database.add(document)
        return database

    def add(self, document: object) -> None:
        advisory = parse_record(document)
        if advisory is None:
            return
        self.records += 1
        for affected in advisory.affected:
            self.index.setdefault(advisory_key(affected.ecosystem, affected.name), []).append((advisory, affected))

    def match(self, packages: Iterable[Package]) -> list[Finding]:
        findings: set[Finding] = set()
        for package in packages:
            for advisory, affected in self.index.get(advisory_key(package.ecosystem, package.advisory_name), []):
                hit, fixed = affected_fix(package.ecosystem, package.version, affected)
                if hit:
                    findings.add(
                        Finding(advisory.id, package, affected.severity, fixed, advisory.aliases, advisory.summary)
                    )
        return sorted(findings, key=lambda f: (-SEVERITY_RANK[f.severity], f.package.name, f.id))


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    counts = {name.lower(): 0 for name in SEVERITIES}
    for finding in findings:
        counts[finding.severity.lower()] += 1
    return counts


def findings_fingerprint(findings: Iterable[Finding]) -> str:
    """What a report says, for telling whether a re-match changed it."""
    text = json.dumps([f.to_json() for f in findings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
