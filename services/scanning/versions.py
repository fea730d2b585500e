"""Each ecosystem's own version order, as sort keys: dpkg (python-debian's implementation of Debian policy
5.6.12), apk (apk-tools' rules), PEP 440 (`packaging`) and semver 2.0 (npm). `version_key` returns None for
a version its ecosystem cannot order: such a package is reported as not matched, never guessed at."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import total_ordering
from typing import Any

from debian.debian_support import Version as DebianVersion
from packaging.version import InvalidVersion
from packaging.version import Version as Pep440Version


@total_ordering
class _Debian:
    __slots__ = ("version",)

    def __init__(self, text: str) -> None:
        if not re.fullmatch(r"(?:\d+:)?[0-9][A-Za-z0-9.+~:-]*", text):
            raise ValueError(f"not a Debian version: {text!r}")
        self.version = DebianVersion(text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Debian) and self.version == other.version

    def __lt__(self, other: _Debian) -> bool:
        return bool(self.version < other.version)

    def __hash__(self) -> int:
        return hash(str(self.version))


def debian_key(text: str) -> Any:
    return _Debian(text)


# apk-tools: <digits>{.<digits>}[<letter>]{_<suffix>[<digits>]}[~<hash>][-r<digits>]
_APK = re.compile(r"(\d+(?:\.\d+)*)([a-z]?)((?:_[a-z]+\d*)*)(?:~[0-9a-f]+)?(?:-r(\d+))?")
_APK_SUFFIXES = {"alpha": 0, "beta": 1, "pre": 2, "rc": 3, "cvs": 5, "svn": 6, "git": 7, "hg": 8, "p": 9}
_NO_SUFFIX = (4, 0)


def apk_key(text: str) -> tuple[Any, ...]:
    match = _APK.fullmatch(text)
    if match is None:
        raise ValueError(f"not an apk version: {text!r}")
    digits, letter, suffixes, revision = match.groups()
    parts = digits.split(".")
    # after the first component, a leading zero makes apk compare the digits as a string (a fraction)
    numbers = (int(parts[0]), *((0, p) if p.startswith("0") else (1, int(p)) for p in parts[1:]))
    suffix_keys = []
    for suffix in filter(None, suffixes.split("_")):
        name = suffix.rstrip("0123456789")
        if name not in _APK_SUFFIXES:
            raise ValueError(f"unknown apk version suffix {name!r} in {text!r}")
        suffix_keys.append((_APK_SUFFIXES[name], int(suffix[len(name) :] or 0)))
    return (numbers, letter, (*suffix_keys, _NO_SUFFIX), int(revision or 0))


def pep440_key(text: str) -> Any:
    try:
        return Pep440Version(text)
    except InvalidVersion:
        raise ValueError(f"not a PEP 440 version: {text!r}") from None


_SEMVER = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


def semver_key(text: str) -> tuple[Any, ...]:
    """semver 2.0 precedence: build metadata ignored; a pre-release sorts before its release, its
    identifiers compared numerically when numeric (lower than alphanumeric), then by count."""
    match = _SEMVER.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a semantic version: {text!r}")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), (1,))
    identifiers = tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in pre.split("."))
    return (int(major), int(minor), int(patch), (0, identifiers))


ORDERS: dict[str, Callable[[str], Any]] = {
    "Debian": debian_key,
    "Ubuntu": debian_key,
    "Alpine": apk_key,
    "PyPI": pep440_key,
    "npm": semver_key,
}


def order_for(ecosystem: str) -> Callable[[str], Any] | None:
    """The version order of an OSV ecosystem (`Debian:12` orders as `Debian`)."""
    return ORDERS.get(ecosystem.split(":")[0])


def version_key(ecosystem: str, version: str) -> Any | None:
    order = order_for(ecosystem)
    if order is None:
        return None
    try:
        return order(version)
    except ValueError:
        return None
