"""Images for the scanning tests: tar layers of package databases (and hostile ones), pushed over /v2."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
import uuid
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

DPKG_STATUS = b"""Package: libexpat1
Status: install ok installed
Architecture: amd64
Source: expat
Version: 2.5.0-1
Description: XML parsing C library - runtime library

Package: zlib1g
Status: install ok installed
Architecture: amd64
Source: zlib
Version: 1:1.2.13.dfsg-1
Description: compression library - runtime
"""
OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'
JINJA_METADATA = b"Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.10\n"
LODASH = b'{"name": "lodash", "version": "4.17.20"}'


def tar_layer(*entries: tuple[str, bytes] | tarfile.TarInfo, compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
                continue
            name, data = entry
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def gzip_bomb(expanded: int = 96 * 1024 * 1024) -> bytes:
    """A gzip layer that expands about a thousand times (one file of zeros)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as stream:
        header = tarfile.TarInfo("var/zeros")
        header.size = expanded
        stream.write(header.tobuf(format=tarfile.PAX_FORMAT))
        block = bytes(1024 * 1024)
        for _ in range(expanded // len(block)):
            stream.write(block)
        stream.write(bytes(1024))
    return out.getvalue()


def debian_layers() -> list[bytes]:
    """A Debian base layer and an application layer (Python and npm packages with known advisories)."""
    base = tar_layer(("etc/os-release", OS_RELEASE), ("var/lib/dpkg/status", DPKG_STATUS), ("bin/sh", b"#!"))
    app = tar_layer(
        ("usr/local/lib/python3.11/site-packages/Jinja2-2.10.dist-info/METADATA", JINJA_METADATA),
        ("srv/app/node_modules/lodash/package.json", LODASH),
    )
    return [base, app]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(http: httpx.Client, repo: str, data: bytes) -> str:
    digest = digest_of(data)
    response = http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert response.status_code == 201, response.text
    return digest


def push_image(http: httpx.Client, repo: str, reference: str, layers: list[bytes]) -> tuple[str, dict[str, Any]]:
    """Push an image of these layers; returns its digest and manifest."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "n": uuid.uuid4().hex}
    ).encode()
    descriptors = [
        {"mediaType": OCI_LAYER_GZIP, "digest": push_blob(http, repo, layer), "size": len(layer)} for layer in layers
    ]
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": push_blob(http, repo, config), "size": len(config)},
        "layers": descriptors,
    }
    body = json.dumps(manifest).encode()
    response = http.put(f"/v2/{repo}/manifests/{reference}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert response.status_code == 201, response.text
    return response.headers["Docker-Content-Digest"], manifest


def push_index(http: httpx.Client, repo: str, reference: str, children: list[tuple[str, int]]) -> str:
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "platform": {"architecture": arch, "os": "linux"},
            }
            for (digest, size), arch in zip(children, ["amd64", "arm64", "s390x"], strict=False)
        ],
    }
    body = json.dumps(index).encode()
    response = http.put(f"/v2/{repo}/manifests/{reference}", content=body, headers={"Content-Type": OCI_INDEX})
    assert response.status_code == 201, response.text
    return response.headers["Docker-Content-Digest"]
