"""Version orders (services/scanning/versions.py) and OSV matching (advisories.py) against the fixture of
real OSV/GHSA records in tests/fixtures/osv."""

from __future__ import annotations

import asyncio
import json
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scanning.advisories import AdvisoryDatabase, cvss3_score, severity_counts
from services.scanning.inventory import Package
from services.scanning.sources import AdvisorySource
from services.scanning.versions import apk_key, debian_key, pep440_key, semver_key, version_key

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "osv"


def fixture_database() -> AdvisoryDatabase:
    return asyncio.run(AdvisorySource(str(FIXTURE)).current())


@pytest.mark.parametrize(
    ("order", "ascending"),
    [
        (debian_key, ["1.0~rc1", "1.0", "1.0-1", "1.0-1+deb12u1", "1.0-2", "1.0.1", "1:0.9", "2:0"]),
        (debian_key, ["2.5.0-1", "2.5.0-1+deb12u1", "2.5.0-1+deb12u5", "2.6.3-1"]),
        (apk_key, ["1.2_alpha", "1.2_beta2", "1.2_rc1", "1.2", "1.2-r1", "1.2_p1", "1.2a", "1.2.1", "1.10"]),
        (apk_key, ["1.02", "1.1", "3.1.2-r0", "3.1.4-r0", "3.1.4-r1"]),
        (pep440_key, ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.0.1", "1!0.1"]),
        (semver_key, ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2"]),
        (semver_key, ["1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "4.17.20", "4.17.21"]),
    ],
)
def test_known_orders(order: object, ascending: list[str]) -> None:
    assert callable(order)
    keys = [order(v) for v in ascending]
    assert all(a < b for a, b in pairwise(keys)), ascending


def test_versions_an_ecosystem_cannot_order_are_none() -> None:
    assert version_key("npm", "not-a-version") is None
    assert version_key("PyPI", "totally bogus") is None
    assert version_key("Alpine:v3.19", "1.2_zeta") is None
    assert version_key("Maven", "1.0") is None
    assert semver_key("1.0.0+build.5") == semver_key("1.0.0")


semver_text = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + (f"-{pre}" if pre else ""),
    st.integers(0, 20),
    st.integers(0, 20),
    st.integers(0, 20),
    st.one_of(st.none(), st.from_regex(r"(alpha|beta|rc|[1-9][0-9]?)(\.(alpha|[0-9]))?", fullmatch=True)),
)
apk_text = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}[a-c]?(_(alpha|beta|rc|p)[0-9]?)?(-r[0-9])?", fullmatch=True)
deb_text = st.from_regex(r"([0-2]:)?[0-9]{1,2}(\.[0-9]{1,2}){0,2}(~rc[0-9])?(-[0-9](\+deb12u[0-9])?)?", fullmatch=True)
pep_text = st.from_regex(r"[0-9]{1,2}(\.[0-9]{1,2}){0,2}((a|b|rc)[0-9])?(\.post[0-9])?(\.dev[0-9])?", fullmatch=True)


@pytest.mark.parametrize(
    ("order", "strategy"),
    [(semver_key, semver_text), (apk_key, apk_text), (debian_key, deb_text), (pep440_key, pep_text)],
)
def test_orders_are_total_orders(order: object, strategy: st.SearchStrategy[str]) -> None:
    assert callable(order)

    @given(strategy, strategy, strategy)
    def check(a: str, b: str, c: str) -> None:
        ka, kb, kc = order(a), order(b), order(c)
        assert (ka < kb) + (kb < ka) + (ka == kb) == 1  # exactly one holds
        if ka <= kb and kb <= kc:
            assert ka <= kc
        assert sorted([ka, kb, kc]) == sorted([kc, kb, ka])

    check()


@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))
def test_semver_agrees_with_integer_order(a: int, b: int, c: int) -> None:
    assert (semver_key(f"{a}.{b}.{c}") < semver_key(f"{a}.{b}.{c + 1}")) is True
    assert (semver_key(f"{a}.{b}.{c}-rc.1") < semver_key(f"{a}.{b}.{c}")) is True


@given(deb_text)
def test_debian_order_agrees_with_dpkg_rules_for_tilde_and_revision(version: str) -> None:
    if "~" in version or "-" in version:
        return
    assert debian_key(version + "~rc1") < debian_key(version) < debian_key(version + "-1")


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
        ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:N/A:N", 8.6),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L", 5.3),
        ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H", 7.2),
        ("CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:N", 0.0),
    ],
)
def test_cvss3_base_scores(vector: str, score: float) -> None:
    assert cvss3_score(vector) == score


def test_the_fixture_matches_real_packages_with_their_fixed_versions() -> None:
    database = fixture_database()
    assert database.records == 5 and database.version.startswith("osv-")
    packages = [
        Package("PyPI", "Jinja2", "2.10", "pypi"),
        Package("PyPI", "jinja2", "2.10.1", "pypi"),
        Package("PyPI", "urllib3", "1.26.4", "pypi"),
        Package("npm", "lodash", "4.17.20", "npm"),
        Package("npm", "lodash", "4.17.21", "npm"),
        Package("Debian:12", "libexpat1", "2.5.0-1", "deb", "expat"),
        Package("Debian:12", "libexpat1", "2.5.0-1+deb12u5", "deb", "expat"),
        Package("Debian:11", "libexpat1", "2.2.10-2", "deb", "expat"),
        Package("Alpine:v3.18", "libcrypto3", "3.1.2-r0", "apk", "openssl"),
        Package("Alpine:v3.19", "libcrypto3", "3.1.2-r0", "apk", "openssl"),
    ]
    found = {(f.id, f.package.name, f.package.version, f.fixed_version, f.severity) for f in database.match(packages)}
    assert found == {
        ("GHSA-462w-v97r-4m45", "Jinja2", "2.10", "2.10.1", "HIGH"),
        ("GHSA-q2q7-5pp4-w6pg", "urllib3", "1.26.4", "1.26.5", "HIGH"),
        ("GHSA-35jh-r3h4-6jhm", "lodash", "4.17.20", "4.17.21", "HIGH"),
        ("DEBIAN-CVE-2024-45490", "libexpat1", "2.5.0-1", "2.5.0-1+deb12u1", "UNKNOWN"),
        ("DEBIAN-CVE-2024-45490", "libexpat1", "2.2.10-2", "2.2.10-2+deb11u6", "UNKNOWN"),
        ("ALPINE-CVE-2023-5363", "libcrypto3", "3.1.2-r0", "3.1.4-r0", "HIGH"),
    }
    counts = severity_counts(database.match(packages))
    assert counts == {"critical": 0, "high": 4, "medium": 0, "low": 0, "unknown": 2}


def test_ranges_with_last_affected_and_several_introductions() -> None:
    record = {
        "id": "TEST-1",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "demo"},
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [
                            {"introduced": "1.0"},
                            {"fixed": "1.2"},
                            {"introduced": "2.0"},
                            {"last_affected": "2.3"},
                        ],
                    }
                ],
                "versions": ["0.5"],
            }
        ],
    }
    database = AdvisoryDatabase.from_documents([record, {"not": "a record"}, "junk"], "v")

    def hit(version: str) -> bool:
        return bool(database.match([Package("PyPI", "demo", version, "pypi")]))

    assert [hit(v) for v in ["0.5", "0.9", "1.0", "1.1", "1.2", "1.9", "2.0", "2.3", "2.3.1"]] == [
        True,
        False,
        True,
        True,
        False,
        False,
        True,
        True,
        False,
    ]


def test_a_changed_database_gets_a_new_version(tmp_path: Path) -> None:
    source = AdvisorySource(str(tmp_path))
    empty = asyncio.run(source.current())
    record = json.loads((FIXTURE / "GHSA-462w-v97r-4m45.json").read_text())
    (tmp_path / "one.json").write_text(json.dumps(record))
    first = asyncio.run(source.current())
    assert first.version != empty.version and first.records == 1
    assert asyncio.run(source.current()) is first  # unchanged: not reloaded
    import zipfile

    with zipfile.ZipFile(tmp_path / "all.zip", "w") as archive:
        archive.writestr("GHSA-q2q7-5pp4-w6pg.json", (FIXTURE / "GHSA-q2q7-5pp4-w6pg.json").read_text())
    second = asyncio.run(source.current())
    assert second.version != first.version and second.records == 2
