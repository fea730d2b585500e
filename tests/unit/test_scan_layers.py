"""Layer reading (services/scanning/layers.py) and the inventory built from it (inventory.py): formats,
whiteouts, and hostile archives, each ending in HostileLayer with a reason and nothing else."""

from __future__ import annotations

import asyncio
import gzip
import io
import tarfile
from collections.abc import AsyncIterator

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scanning.inventory import Package, build_inventory
from services.scanning.layers import HostileLayer, ImageFiles, ScanLimits, normalise, read_layer, read_layer_stream

DPKG = b"""Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.11-1~deb12u2
Description: Secure Sockets Layer toolkit
 shared libraries

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: zlib1g
Status: install ok installed
Source: zlib (1:1.2.13.dfsg-1)
Version: 1:1.2.13.dfsg-1
"""
OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'
METADATA = b"Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.10\nSummary: templates\n\nbody\n"
APK = b"C:Q1abc=\nP:busybox\nV:1.36.1-r2\no:busybox\n\nP:libcrypto3\nV:3.1.2-r0\no:openssl\n\n"


def tar_of(*entries: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def read(data: bytes, limits: ScanLimits | None = None) -> ImageFiles:
    image = ImageFiles()
    image.apply(read_layer(io.BytesIO(data), limits))
    return image


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, zstandard.ZstdCompressor().compress])
def test_inventory_of_a_layer_in_each_format(compress: object) -> None:
    layer = tar_of(
        ("etc/os-release", OS_RELEASE),
        ("./var/lib/dpkg/status", DPKG),
        ("/usr/lib/python3/dist-packages/Jinja2-2.10.dist-info/METADATA", METADATA),
        ("app/node_modules/@babel/core/package.json", b'{"name": "@babel/core", "version": "7.22.0"}'),
        ("app/node_modules/lodash/package.json", b'{"name": "lodash", "version": "4.17.20"}'),
        ("app/node_modules/lodash/test/package.json", b'{"name": "fixture", "version": "0.0.1"}'),
        ("usr/bin/unrelated", b"\x7fELF" * 100),
    )
    assert callable(compress)
    inventory = build_inventory(read(compress(layer)).files)
    assert inventory.os is not None and inventory.os.ecosystem == "Debian:12"
    found = {(p.ecosystem, p.name, p.version, p.advisory_name) for p in inventory.packages}
    assert found == {
        ("Debian:12", "libssl3", "3.0.11-1~deb12u2", "openssl"),
        ("Debian:12", "zlib1g", "1:1.2.13.dfsg-1", "zlib"),
        ("PyPI", "Jinja2", "2.10", "jinja2"),
        ("npm", "@babel/core", "7.22.0", "@babel/core"),
        ("npm", "lodash", "4.17.20", "lodash"),
    }


def test_alpine_inventory_uses_the_origin_package() -> None:
    release = b"ID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=Alpine\n"
    inventory = build_inventory(read(tar_of(("etc/os-release", release), ("lib/apk/db/installed", APK))).files)
    assert [(p.ecosystem, p.name, p.advisory_name) for p in inventory.packages] == [
        ("Alpine:v3.19", "busybox", "busybox"),
        ("Alpine:v3.19", "libcrypto3", "openssl"),
    ]


def test_whiteouts_remove_what_lower_layers_added() -> None:
    image = ImageFiles()
    site = "usr/lib/python3/site-packages"
    image.apply(
        read_layer(
            io.BytesIO(
                tar_of(
                    (f"{site}/a-1.0.dist-info/METADATA", b"Name: a\nVersion: 1.0\n"),
                    (f"{site}/b-1.0.dist-info/METADATA", b"Name: b\nVersion: 1.0\n"),
                    ("opt/app/node_modules/x/package.json", b'{"name": "x", "version": "1.0.0"}'),
                )
            )
        )
    )
    image.apply(
        read_layer(
            io.BytesIO(
                tar_of(
                    (f"{site}/.wh.a-1.0.dist-info", b""),
                    ("opt/app/.wh..wh..opq", b""),
                    ("opt/app/node_modules/y/package.json", b'{"name": "y", "version": "2.0.0"}'),
                )
            )
        )
    )
    names = [p.name for p in build_inventory(image.files).packages]
    assert names == ["b", "y"]


def test_a_symlink_with_an_absolute_target_stays_inside_the_image() -> None:
    image = read(tar_of(link("etc/os-release", "../usr/lib/os-release"), link("bin/sh", "/usr/bin/dash")))
    assert image.files == {}


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        (tar_of(("../../etc/passwd", b"x")), "path traversal"),
        (tar_of(("usr/../../x", b"x")), "path traversal"),
        (tar_of(link("etc/evil", "../../../etc/shadow")), "symlink escape"),
        (tar_of(link("usr/lib/evil", "../../..")), "symlink escape"),
        (tar_of(link("x", "../outside", tarfile.LNKTYPE)), "hard link escape"),
    ],
)
def test_hostile_paths_end_the_scan(layer: bytes, reason: str) -> None:
    with pytest.raises(HostileLayer, match=reason):
        read(layer)


def test_a_gzip_bomb_is_stopped_before_it_expands() -> None:
    limits = ScanLimits(ratio_floor_bytes=8 * 1024 * 1024, max_ratio=100)
    zeros = io.BytesIO()
    with gzip.GzipFile(fileobj=zeros, mode="wb", compresslevel=9) as out:
        header = tarfile.TarInfo("var/big")
        header.size = 512 * 1024 * 1024
        out.write(header.tobuf(format=tarfile.PAX_FORMAT))
        block = bytes(1024 * 1024)
        for _ in range(64):  # only the first 64 MiB are written: the reader must stop long before the end
            out.write(block)
    with pytest.raises(HostileLayer, match="decompression bomb"):
        read(zeros.getvalue(), limits)


def test_a_zstd_layer_beyond_the_size_limit_is_a_bomb() -> None:
    layer = zstandard.ZstdCompressor().compress(tar_of(("var/big", bytes(4 * 1024 * 1024))))
    with pytest.raises(HostileLayer, match="decompression bomb"):
        read(layer, ScanLimits(max_layer_bytes=1024 * 1024))


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        (tar_of(("var/lib/dpkg/status", DPKG), ("other", bytes(5000)))[:2000], "malformed layer"),
        (tar_of(("var/lib/dpkg/status", DPKG))[:1024], "cut short"),
        (gzip.compress(tar_of(("a", b"x" * 10000)))[:-40], "cut short"),
        (gzip.compress(tar_of(("a", b"x")))[:20] + b"garbage" * 10, "malformed layer"),
        (zstandard.ZstdCompressor().compress(tar_of(("a", b"x" * 10000)))[:-30], "malformed layer"),
        (b"this is not a tar archive at all" * 40, "malformed layer"),
    ],
)
def test_malformed_and_truncated_layers_end_the_scan(layer: bytes, reason: str) -> None:
    with pytest.raises(HostileLayer, match=reason):
        read(layer)


def test_an_oversized_extended_header_is_refused_unread() -> None:
    info = tarfile.TarInfo("a")
    info.pax_headers = {"comment": "x" * 200_000}
    layer = tar_of(info)
    with pytest.raises(HostileLayer, match="extended tar header"):
        read(layer, ScanLimits(max_header_bytes=64 * 1024))


def test_files_over_their_limit_are_skipped_and_noted() -> None:
    image = read(tar_of(("var/lib/dpkg/status", DPKG)), ScanLimits(max_database_bytes=100))
    assert image.files == {} and "var/lib/dpkg/status" in image.skipped[0]


def test_a_layer_streams_from_async_chunks() -> None:
    data = gzip.compress(tar_of(("var/lib/dpkg/status", DPKG), ("pad", bytes(3 * 1024 * 1024))))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    layer = asyncio.run(read_layer_stream(chunks()))
    assert layer.files["var/lib/dpkg/status"] == DPKG


def test_purls_round_trip() -> None:
    packages = [
        Package("Debian:12", "libssl3", "3.0.11-1~deb12u2", "deb", "openssl"),
        Package("Alpine:v3.19", "libcrypto3", "3.1.2-r0", "apk", "openssl"),
        Package("PyPI", "jinja2", "2.10", "pypi"),
        Package("npm", "@babel/core", "7.22.0", "npm"),
    ]
    for package in packages:
        assert Package.from_purl(package.purl()) == package


@given(st.text(alphabet="ab./", max_size=30))
def test_normalised_paths_never_leave_the_root(name: str) -> None:
    try:
        path = normalise(name)
    except HostileLayer:
        return
    assert not path.startswith("../") and path != ".." and not path.startswith("/")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=3000))
def test_any_bytes_are_read_or_refused_never_a_crash(noise: bytes, cut: int) -> None:
    base = tar_of(("var/lib/dpkg/status", DPKG), ("etc/os-release", OS_RELEASE))
    for candidate in (noise, gzip.compress(noise), base[:cut] + noise, gzip.compress(base)[:cut] + noise):
        try:
            read(candidate)
        except HostileLayer:
            pass
