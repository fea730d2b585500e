"""An image's package inventory, from the files `layers.ImageFiles` kept: the OS release, Debian/Ubuntu
packages (`var/lib/dpkg/status` and distroless `status.d/`), Alpine packages (`lib/apk/db/installed`),
Python distributions (`*.dist-info/METADATA`, `*.egg-info`) and npm packages (`package.json` under
`node_modules`).

Each package is named the way advisories name it: OSV's ecosystem (`Debian:12`, `Alpine:v3.19`, `PyPI`,
`npm`) and, for distribution packages, the source package (advisories of Debian and Alpine are per source
package), and carries its package URL (purl), which is what the SBOM keeps and what re-matching reads back
(`Package.from_purl`), so no layer is read again.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode

from services.scanning.layers import OS_RELEASE

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_INSTALLED = "lib/apk/db/installed"

PURL_TYPES = {"deb": "deb", "apk": "apk", "pypi": "pypi", "npm": "npm"}


@dataclass(frozen=True, slots=True)
class OsRelease:
    id: str
    version_id: str
    pretty_name: str
    codename: str = ""

    @property
    def ecosystem(self) -> str | None:
        """OSV's ecosystem of the distribution's packages (None when OSV has none for it)."""
        if self.id == "debian" and self.version_id:
            return f"Debian:{self.version_id.split('.')[0]}"
        if self.id == "ubuntu" and self.version_id:
            return f"Ubuntu:{self.version_id}"
        if self.id == "alpine" and self.version_id:
            return "Alpine:v" + ".".join(self.version_id.split(".")[:2])
        return None


@dataclass(frozen=True, slots=True, order=True)
class Package:
    ecosystem: str  # OSV ecosystem: "Debian:12", "Alpine:v3.19", "PyPI", "npm" (or "Debian" when unknown)
    name: str
    version: str
    kind: str  # purl type: deb, apk, pypi, npm
    source: str = ""  # the source package (deb, apk) when it differs from the name
    location: str = ""  # the file it was read from

    @property
    def advisory_name(self) -> str:
        """The name advisories use: the source package for distributions, the normalised name for PyPI."""
        if self.kind == "pypi":
            return normalise_pypi(self.name)
        return self.source or self.name

    def purl(self) -> str:
        namespace = {"deb": _distro_of(self.ecosystem), "apk": "alpine"}.get(self.kind, "")
        name = self.name
        if self.kind == "npm" and name.startswith("@") and "/" in name:
            scope, _, rest = name.partition("/")
            namespace, name = quote(scope, safe=""), rest
        if self.kind == "pypi":
            name = normalise_pypi(name)
        path = "/".join(p for p in (namespace, quote(name, safe="")) if p)
        qualifiers = {"ecosystem": self.ecosystem}
        if self.source and self.source != self.name:
            qualifiers["upstream"] = self.source
        return f"pkg:{self.kind}/{path}@{quote(self.version, safe='')}?{urlencode(sorted(qualifiers.items()))}"

    @classmethod
    def from_purl(cls, purl: str, location: str = "") -> Package | None:
        """A package back from the purl `purl()` wrote (None for anything else)."""
        match = re.fullmatch(r"pkg:([a-z]+)/([^@?#]+)@([^?#]+)(?:\?([^#]*))?", purl)
        if match is None or match.group(1) not in PURL_TYPES:
            return None
        kind, path, version, query = match.groups()
        qualifiers = dict(parse_qsl(query or ""))
        parts = [unquote(p) for p in path.split("/")]
        name = parts[-1]
        if kind == "npm" and len(parts) == 2:
            name = f"{parts[0]}/{name}"
        ecosystem = qualifiers.get("ecosystem") or {"pypi": "PyPI", "npm": "npm"}.get(kind, "")
        if not ecosystem:
            return None
        return cls(ecosystem, name, unquote(version), kind, qualifiers.get("upstream", ""), location)


def _distro_of(ecosystem: str) -> str:
    return ecosystem.split(":")[0].lower() or "debian"


def normalise_pypi(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- the parsers ---------------------------------------------------------------------------------------
def parse_os_release(data: bytes) -> OsRelease | None:
    values: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip("'\"")
    if "ID" not in values:
        return None
    return OsRelease(
        id=values["ID"].lower(),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME", ""),
        codename=values.get("VERSION_CODENAME", ""),
    )


def _paragraphs(data: bytes) -> list[dict[str, str]]:
    """Deb822 paragraphs (dpkg status): `Field: value` lines, continuation lines start with a space."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in data.decode("utf-8", "replace").splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, last = {}, ""
        elif line[0] in " \t":
            if last:
                current[last] += "\n" + line.strip()
        else:
            key, sep, value = line.partition(":")
            if sep:
                last = key.strip()
                current[last] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def parse_dpkg_status(data: bytes, ecosystem: str, location: str = DPKG_STATUS) -> list[Package]:
    packages = []
    for fields in _paragraphs(data):
        name, version = fields.get("Package", ""), fields.get("Version", "")
        status = fields.get("Status", "install ok installed").split()
        if not name or not version or (status and status[-1] != "installed"):
            continue
        # "Source: name (version)" when the source's version differs from the binary's
        source = fields.get("Source", "").split(" ")[0]
        packages.append(Package(ecosystem, name, version, "deb", source, location))
    return packages


def parse_apk_installed(data: bytes, ecosystem: str) -> list[Package]:
    packages = []
    for block in data.decode("utf-8", "replace").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:]
        if fields.get("P") and fields.get("V"):
            packages.append(Package(ecosystem, fields["P"], fields["V"], "apk", fields.get("o", ""), APK_INSTALLED))
    return packages


def parse_python_metadata(data: bytes, location: str) -> Package | None:
    text = data.decode("utf-8", "replace")
    headers = email.parser.Parser(policy=email.policy.compat32).parsestr(text, headersonly=True)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return None
    return Package("PyPI", str(name).strip(), str(version).strip(), "pypi", "", location)


def parse_npm_package(data: bytes, location: str) -> Package | None:
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    name, version = document.get("name"), document.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return None
    return Package("npm", name, version, "npm", "", location)


@dataclass(frozen=True, slots=True)
class Inventory:
    os: OsRelease | None
    packages: tuple[Package, ...]
    notes: tuple[str, ...] = ()  # what could not be read (files over their limits)


def build_inventory(files: dict[str, bytes], skipped: list[str] | None = None) -> Inventory:
    """The inventory of an image from its kept files (layers already applied)."""
    os_release = None
    for path in OS_RELEASE:
        if path in files:
            os_release = parse_os_release(files[path])
            if os_release is not None:
                break
    distro = os_release.ecosystem if os_release is not None else None
    packages: set[Package] = set()
    for path, data in files.items():
        if path == DPKG_STATUS or path.startswith(DPKG_STATUS_D):
            packages.update(parse_dpkg_status(data, distro or "Debian", path))
        elif path == APK_INSTALLED:
            packages.update(parse_apk_installed(data, distro or "Alpine"))
        elif path.endswith(("/METADATA", "/PKG-INFO", ".egg-info")):
            found = parse_python_metadata(data, path)
            if found is not None:
                packages.add(found)
        elif path.endswith("/package.json"):
            npm = parse_npm_package(data, path)
            if npm is not None:
                packages.add(npm)
    return Inventory(os_release, tuple(sorted(packages)), tuple(skipped or ()))
