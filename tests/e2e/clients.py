"""Typed helpers for the end-to-end suite: real client wrappers, an OCI image layout writer, an ORAS
subclass that speaks OCI 1.1 artifacts, a Helm chart builder/pusher and a small plain-HTTP registry client.

Everything here talks to a registry over plain http on loopback. podman/buildah get a private vfs storage
root per test (graph root under the test's tmp dir; runroot in a short /tmp/e2e-run-* directory, removed after
the test, because podman rejects runroot paths over 50 characters), so nothing lands in the machine's
container storage. containers/image still keeps its blob-info cache (/var/lib/containers/cache for root):
no flag moves it, and skopeo relies on it to find cross-repository mount sources.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import jsonschema
import oras.oci
import oras.provider
import oras.schemas
import requests

# --------------------------------------------------------------------------------------------------
# Media types
# --------------------------------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_CONTENT = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
TITLE_ANNOTATION = "org.opencontainers.image.title"
# The empty JSON blob `{}` (OCI 1.1 "empty descriptor").
EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

FIXED_CREATED = "2024-01-01T00:00:00Z"
COPY_BUFFER = 1 << 20


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 4 << 20) -> str:
    """Digest of a file, streamed from disk (never loads the whole file)."""
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            hasher.update(block)
    return "sha256:" + hasher.hexdigest()


def compact_json(obj: Any) -> bytes:
    """The serialisation used for every manifest/config/index this module writes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------------------
# Running real client binaries
# --------------------------------------------------------------------------------------------------


class ToolMissingError(RuntimeError):
    """A client binary the e2e suite drives is not installed."""


class CommandError(RuntimeError):
    """A client command exited non-zero; carries everything needed to diagnose it."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command failed with exit code {returncode}: {' '.join(argv)}\n"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )


def require_tool(name: str) -> str:
    """Absolute path of a binary, or ToolMissingError with an actionable message."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(
            f"'{name}' is not installed or not on PATH; the e2e suite needs it "
            f"(`make test` installs it: apt-get install -y skopeo podman buildah)"
        )
    return path


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def text(self) -> str:
        return self.stdout.decode()


def run_command(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 600.0) -> CommandResult:
    """Run a command, capture stdout/stderr as bytes, raise CommandError on failure."""
    started = time.monotonic()
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(
            argv,
            -1,
            (exc.stdout or b"").decode(errors="replace"),
            (exc.stderr or b"").decode(errors="replace") + f"\n(timed out after {timeout}s)",
        ) from exc
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise CommandError(
            argv, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        )
    return CommandResult(list(argv), proc.stdout, proc.stderr, elapsed)


@dataclass(frozen=True)
class ContainersConfig:
    """Private containers/image configuration (policy + registries.conf) so the suite does not depend on,
    or write to, the machine's /etc/containers."""

    directory: Path
    policy: Path
    registries_conf: Path

    @classmethod
    def create(cls, directory: Path) -> ContainersConfig:
        directory.mkdir(parents=True, exist_ok=True)
        policy = directory / "policy.json"
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        registries_conf = directory / "registries.conf"
        # No search registries: every reference in the suite is fully qualified.
        registries_conf.write_text('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
        return cls(directory, policy, registries_conf)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CONTAINERS_REGISTRIES_CONF"] = str(self.registries_conf)
        # Keep credentials lookups away from the user's files: an empty private auth file.
        auth = self.directory / "auth.json"
        if not auth.exists():
            auth.write_text('{"auths": {}}')
        env["REGISTRY_AUTH_FILE"] = str(auth)
        return env


class Skopeo:
    """skopeo with the flags a plain-http registry needs."""

    def __init__(self, config: ContainersConfig) -> None:
        self.binary = require_tool("skopeo")
        self.config = config

    def _run(self, *args: str, timeout: float = 600.0, debug: bool = False) -> CommandResult:
        argv = [self.binary, "--policy", str(self.config.policy), *(["--debug"] if debug else []), *args]
        return run_command(argv, env=self.config.env(), timeout=timeout)

    def copy(
        self,
        source: str,
        destination: str,
        *,
        all_images: bool = False,
        preserve_digests: bool = False,
        extra: Sequence[str] = (),
        timeout: float = 600.0,
        debug: bool = False,
    ) -> CommandResult:
        """`skopeo copy`; with `debug=True`, stderr logs each HTTP request (e.g. blob mount attempts)."""
        args = ["copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--retry-times", "0"]
        if all_images:
            args.append("--all")
        if preserve_digests:
            args.append("--preserve-digests")
        if destination.startswith("oci:"):
            # Store what the registry served; without this skopeo gzips uncompressed layers.
            args.append("--dest-oci-accept-uncompressed-layers")
        args.extend(extra)
        args.extend([source, destination])
        return self._run(*args, timeout=timeout, debug=debug)

    def inspect_raw(self, reference: str, *, config: bool = False) -> bytes:
        args = ["inspect", "--tls-verify=false", "--raw"]
        if config:
            args.append("--config")
        return self._run(*args, reference).stdout

    def inspect(self, reference: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._run("inspect", "--tls-verify=false", reference).stdout)
        return result

    def list_tags(self, reference: str) -> list[str]:
        data = json.loads(self._run("list-tags", "--tls-verify=false", reference).stdout)
        tags: list[str] = data.get("Tags") or []
        return tags

    def delete(self, reference: str) -> CommandResult:
        return self._run("delete", "--tls-verify=false", reference)


@dataclass(frozen=True)
class StorageRoot:
    """A containers/storage root private to one test (vfs driver: plain directories, no mounts)."""

    root: Path
    runroot: Path
    tmpdir: Path

    @classmethod
    def create(cls, base: Path) -> StorageRoot:
        # podman refuses a runroot path longer than 50 characters: pytest's tmp paths are longer.
        runroot = Path(tempfile.mkdtemp(prefix="e2e-run-", dir="/tmp" if Path("/tmp").is_dir() else None))
        roots = cls(base / "root", runroot, base / "tmp")
        for path in (roots.root, roots.tmpdir):
            path.mkdir(parents=True, exist_ok=True)
        return roots

    def cleanup(self) -> None:
        shutil.rmtree(self.runroot, ignore_errors=True)


class Buildah:
    def __init__(self, storage: StorageRoot, config: ContainersConfig) -> None:
        self.binary = require_tool("buildah")
        self.storage = storage
        self.config = config

    def run(self, *args: str, timeout: float = 600.0) -> CommandResult:
        argv = [
            self.binary,
            "--root", str(self.storage.root),
            "--runroot", str(self.storage.runroot),
            "--storage-driver", "vfs",
            *args,
        ]  # fmt: skip
        env = self.config.env()
        env["TMPDIR"] = str(self.storage.tmpdir)
        return run_command(argv, env=env, timeout=timeout)

    def from_image(self, image: str) -> str:
        """`buildah from` (image may be `scratch` or `oci:/path:tag`); returns the working container name."""
        return self.run("from", "--signature-policy", str(self.config.policy), image).text.strip()

    def copy(self, container: str, source: Path, destination: str) -> None:
        self.run("copy", container, str(source), destination)

    def config_image(self, container: str, *options: str) -> None:
        self.run("config", *options, container)

    def commit(self, container: str, image: str, *, oci_format: bool = True) -> str:
        fmt = "oci" if oci_format else "docker"
        return self.run("commit", "--format", fmt, "--quiet", container, image).text.strip()

    def push(self, image: str, destination: str, digestfile: Path, *extra: str) -> str:
        """Push to `docker://...` over plain http; returns the pushed manifest digest."""
        self.run(
            "push",
            "--tls-verify=false",
            "--signature-policy", str(self.config.policy),
            "--digestfile", str(digestfile),
            "--quiet",
            *extra,
            image,
            destination,
        )  # fmt: skip
        return digestfile.read_text().strip()


class Podman:
    def __init__(self, storage: StorageRoot, config: ContainersConfig) -> None:
        self.binary = require_tool("podman")
        self.storage = storage
        self.config = config

    def run(self, *args: str, timeout: float = 600.0) -> CommandResult:
        argv = [
            self.binary,
            "--root", str(self.storage.root),
            "--runroot", str(self.storage.runroot),
            "--storage-driver", "vfs",
            "--tmpdir", str(self.storage.tmpdir),
            "--events-backend", "none",
            "--cgroup-manager", "cgroupfs",
            *args,
        ]  # fmt: skip
        env = self.config.env()
        env["TMPDIR"] = str(self.storage.tmpdir)
        return run_command(argv, env=env, timeout=timeout)

    def pull(self, reference: str) -> str:
        """Pull over plain http; returns the local image id."""
        out = self.run(
            "pull", "--tls-verify=false", "--signature-policy", str(self.config.policy), "--quiet", reference
        )
        return out.text.strip().splitlines()[-1]

    def push(self, image: str, destination: str, digestfile: Path, *extra: str) -> str:
        self.run(
            "push",
            "--tls-verify=false",
            "--signature-policy", str(self.config.policy),
            "--digestfile", str(digestfile),
            "--quiet",
            *extra,
            image,
            destination,
        )  # fmt: skip
        return digestfile.read_text().strip()

    def image_inspect(self, reference: str) -> dict[str, Any]:
        data = json.loads(self.run("image", "inspect", reference).stdout)
        assert isinstance(data, list) and len(data) == 1, data
        result: dict[str, Any] = data[0]
        return result

    def save_oci_dir(self, reference: str, destination: Path) -> None:
        self.run("save", "--format", "oci-dir", "--output", str(destination), reference)


# --------------------------------------------------------------------------------------------------
# OCI image layout writer
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, str] | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type}
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        out["digest"] = self.digest
        out["size"] = self.size
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = dict(self.platform)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        return cls(
            media_type=data["mediaType"],
            digest=data["digest"],
            size=int(data["size"]),
            annotations=dict(data.get("annotations") or {}),
            platform=dict(data["platform"]) if "platform" in data else None,
            artifact_type=data.get("artifactType"),
        )


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    diff_id: str  # digest of the uncompressed tar


@dataclass(frozen=True)
class Image:
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class ImageIndex:
    index: Descriptor
    images: tuple[Image, ...]


class _Sink(Protocol):
    def write(self, data: memoryview, /) -> int: ...


class _HashingWriter(io.RawIOBase):
    """Write-through file wrapper that sha256-hashes and counts what passes through it."""

    def __init__(self, target: _Sink) -> None:
        super().__init__()
        self._target = target
        self._hasher = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._target.write(view)
        self._hasher.update(view)
        self.count += len(view)
        return len(view)

    def tell(self) -> int:
        return self.count

    @property
    def digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest()


class _RandomReader(io.RawIOBase):
    """`size` bytes of fresh random data, produced on demand."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._remaining = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        want = self._remaining if n is None or n < 0 else min(n, self._remaining)
        self._remaining -= want
        return os.urandom(want)


class OciLayout:
    """Writer (and reader) of an OCI image layout directory: `oci-layout`, `index.json`, `blobs/sha256/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        layout_file = root / "oci-layout"
        if not layout_file.exists():
            layout_file.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        if not (root / "index.json").exists():
            self._write_index([])

    # -- blobs ---------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        algorithm, _, encoded = digest.partition(":")
        assert algorithm == "sha256" and encoded, digest
        return self.blobs / encoded

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def blob_digests(self) -> set[str]:
        return {"sha256:" + p.name for p in self.blobs.iterdir() if not p.name.startswith(".")}

    def add_blob(self, data: bytes, media_type: str, **descriptor_fields: Any) -> Descriptor:
        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not path.exists():
            tmp = self.blobs / f".tmp-{os.getpid()}-{digest[7:23]}"
            tmp.write_bytes(data)
            tmp.replace(path)
        return Descriptor(media_type=media_type, digest=digest, size=len(data), **descriptor_fields)

    def add_json(self, obj: Any, media_type: str, **descriptor_fields: Any) -> Descriptor:
        return self.add_blob(compact_json(obj), media_type, **descriptor_fields)

    def add_random_layer(self, size: int, *, compress: bool = False, file_name: str = "data.bin") -> Layer:
        """A tar layer holding one file of `size` random bytes, streamed to disk (constant memory).

        `compress=True` makes a `tar+gzip` layer (slow for large sizes: keep those small)."""
        tmp = self.blobs / f".tmp-layer-{os.getpid()}-{time.monotonic_ns()}"
        with tmp.open("wb") as raw:
            outer = _HashingWriter(raw)
            if compress:
                gz = gzip.GzipFile(fileobj=outer, mode="wb", mtime=0, compresslevel=1)
                inner = _HashingWriter(gz)
            else:
                gz = None
                inner = outer
            with tarfile.TarFile(fileobj=inner, mode="w", format=tarfile.PAX_FORMAT, copybufsize=COPY_BUFFER) as tar:
                info = tarfile.TarInfo(file_name)
                info.size = size
                info.mode = 0o644
                info.mtime = 0
                tar.addfile(info, _RandomReader(size))
            if gz is not None:
                gz.close()
        digest = outer.digest
        tmp.replace(self.blob_path(digest))
        media_type = OCI_LAYER_TAR_GZIP if compress else OCI_LAYER_TAR
        return Layer(Descriptor(media_type, digest, outer.count), inner.digest)

    # -- manifests -----------------------------------------------------------------------------
    def add_image(
        self,
        layers: Sequence[Layer],
        *,
        architecture: str = "amd64",
        os_name: str = "linux",
        variant: str | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        descriptor_annotations: Mapping[str, str] | None = None,
    ) -> Image:
        config: dict[str, Any] = {
            "created": FIXED_CREATED,
            "architecture": architecture,
            "os": os_name,
        }
        if variant:
            config["variant"] = variant
        config["config"] = {"Labels": dict(labels or {}), "Cmd": ["/data.bin"]}
        config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
        config["history"] = [{"created": FIXED_CREATED, "created_by": "tests/e2e OciLayout"} for _ in layers]
        config_desc = self.add_json(config, OCI_CONFIG)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer.descriptor.to_json() for layer in layers],
        }
        if annotations:
            manifest["annotations"] = dict(annotations)
        platform = {"architecture": architecture, "os": os_name}
        if variant:
            platform["variant"] = variant
        manifest_desc = self.add_json(
            manifest, OCI_MANIFEST, platform=platform, annotations=dict(descriptor_annotations or {})
        )
        return Image(manifest_desc, config_desc, tuple(layers))

    def add_index(self, images: Sequence[Image], *, annotations: Mapping[str, str] | None = None) -> ImageIndex:
        index: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [image.manifest.to_json() for image in images],
        }
        if annotations:
            index["annotations"] = dict(annotations)
        return ImageIndex(self.add_json(index, OCI_INDEX), tuple(images))

    # -- index.json ----------------------------------------------------------------------------
    def _write_index(self, manifests: Iterable[Mapping[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(manifests)}
        (self.root / "index.json").write_text(json.dumps(index, indent=2))

    def index_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "index.json").read_text())
        return data

    def tag(self, descriptor: Descriptor, tag: str) -> None:
        """Record `descriptor` in index.json under `org.opencontainers.image.ref.name=tag`."""
        entries = [
            entry
            for entry in self.index_json()["manifests"]
            if (entry.get("annotations") or {}).get(REF_NAME_ANNOTATION) != tag
        ]
        annotated = dataclasses.replace(
            descriptor, annotations={**descriptor.annotations, REF_NAME_ANNOTATION: tag}, platform=None
        )
        entries.append(annotated.to_json())
        self._write_index(entries)

    def resolve(self, tag: str) -> Descriptor:
        for entry in self.index_json()["manifests"]:
            if (entry.get("annotations") or {}).get(REF_NAME_ANNOTATION) == tag:
                return Descriptor.from_json(entry)
        raise KeyError(f"tag {tag!r} not in {self.root}/index.json")

    def reference(self, tag: str) -> str:
        """skopeo/buildah transport reference for a tag of this layout."""
        return f"oci:{self.root}:{tag}"


def build_single_platform_image(
    root: Path,
    layer_sizes: Sequence[int],
    *,
    tag: str = "latest",
    compress: bool = False,
    labels: Mapping[str, str] | None = None,
) -> tuple[OciLayout, Image]:
    """An OCI layout holding one linux/amd64 image with one random tar layer per size."""
    layout = OciLayout(root)
    layers = [layout.add_random_layer(size, compress=compress) for size in layer_sizes]
    image = layout.add_image(layers, labels=labels or {"org.example.e2e": "single"})
    layout.tag(image.manifest, tag)
    return layout, image


def build_multi_platform_index(root: Path, *, tag: str = "latest") -> tuple[OciLayout, ImageIndex]:
    """An OCI layout holding an image index: linux/amd64, linux/arm64/v8 and linux/arm/v7, the last one
    carrying annotations on its manifest and on its index descriptor; the index is annotated too."""
    layout = OciLayout(root)
    amd64 = layout.add_image(
        [layout.add_random_layer(64 * 1024, compress=True), layout.add_random_layer(8 * 1024, compress=True)],
        architecture="amd64",
        labels={"org.example.platform": "amd64"},
    )
    arm64 = layout.add_image(
        [layout.add_random_layer(48 * 1024, compress=True)],
        architecture="arm64",
        variant="v8",
        labels={"org.example.platform": "arm64"},
    )
    armv7 = layout.add_image(
        [layout.add_random_layer(32 * 1024, compress=True)],
        architecture="arm",
        variant="v7",
        labels={"org.example.platform": "armv7"},
        annotations={"org.opencontainers.image.description": "annotated arm/v7 image", "org.example.k": "v"},
        descriptor_annotations={"org.example.descriptor": "armv7"},
    )
    index = layout.add_index(
        [amd64, arm64, armv7],
        annotations={"org.opencontainers.image.source": "tests/e2e", "org.example.index": "multi"},
    )
    layout.tag(index.index, tag)
    return layout, index


def reachable_blobs(layout: OciLayout, digest: str) -> set[str]:
    """Every blob digest reachable from a manifest/index in the layout, including itself."""
    data = json.loads(layout.read_blob(digest))
    found = {digest}
    for child in data.get("manifests", []):
        found |= reachable_blobs(layout, child["digest"])
    if "config" in data:
        found.add(data["config"]["digest"])
    for layer in data.get("layers", []):
        found.add(layer["digest"])
    return found


# --------------------------------------------------------------------------------------------------
# Plain HTTP registry client (for what no real client exposes: headers, referrers, raw bytes)
# --------------------------------------------------------------------------------------------------


class RegistryHttpError(RuntimeError):
    def __init__(self, what: str, response: httpx.Response) -> None:
        self.response = response
        super().__init__(
            f"{what}: {response.request.method} {response.request.url} -> {response.status_code}\n"
            f"headers: {dict(response.headers)}\nbody: {response.text[:2000]}"
        )


@dataclass(frozen=True)
class PushedManifest:
    digest: str
    body: bytes
    media_type: str
    response_headers: Mapping[str, str]  # case-insensitive (httpx.Headers)

    @property
    def subject(self) -> oras.oci.Subject:
        return oras.oci.Subject(mediaType=self.media_type, digest=self.digest, size=len(self.body))


class RegistryHttp:
    """Minimal OCI distribution client over httpx for assertions on raw protocol behaviour."""

    def __init__(self, base_url: str, *, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout, follow_redirects=True)

    def close(self) -> None:
        self.client.close()

    def _absolute(self, location: str) -> str:
        return urllib.parse.urljoin(self.base_url + "/", location)

    # -- blobs ---------------------------------------------------------------------------------
    def blob_exists(self, repo: str, digest: str) -> bool:
        response = self.client.head(f"/v2/{repo}/blobs/{digest}")
        if response.status_code not in (200, 404):
            raise RegistryHttpError("HEAD blob", response)
        return response.status_code == 200

    def push_blob(self, repo: str, data: bytes) -> Descriptor:
        """Monolithic POST-then-PUT upload (what helm/oras-go do); returns an octet-stream descriptor."""
        digest = sha256_digest(data)
        started = self.client.post(f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
        if started.status_code != 202 or "location" not in started.headers:
            raise RegistryHttpError("start upload", started)
        url = self._absolute(started.headers["location"])
        parts = urllib.parse.urlsplit(url)
        query = [*urllib.parse.parse_qsl(parts.query, keep_blank_values=True), ("digest", digest)]
        put_url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        finished = self.client.put(put_url, content=data, headers={"Content-Type": "application/octet-stream"})
        if finished.status_code != 201:
            raise RegistryHttpError("complete upload", finished)
        return Descriptor("application/octet-stream", digest, len(data))

    def get_blob(self, repo: str, digest: str) -> bytes:
        response = self.client.get(f"/v2/{repo}/blobs/{digest}")
        if response.status_code != 200:
            raise RegistryHttpError("GET blob", response)
        return response.content

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> httpx.Response:
        return self.client.post(
            f"/v2/{repo}/blobs/uploads/",
            params={"mount": digest, "from": from_repo},
            headers={"Content-Length": "0"},
        )

    # -- manifests -----------------------------------------------------------------------------
    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> PushedManifest:
        response = self.client.put(
            f"/v2/{repo}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
        )
        if response.status_code != 201:
            raise RegistryHttpError("PUT manifest", response)
        return PushedManifest(sha256_digest(body), body, media_type, response.headers)

    def get_manifest(self, repo: str, reference: str, *, accept: str = MANIFEST_ACCEPT) -> httpx.Response:
        return self.client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept})

    def head_manifest(self, repo: str, reference: str, *, accept: str = MANIFEST_ACCEPT) -> httpx.Response:
        return self.client.head(f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept})

    def tags(self, repo: str) -> list[str]:
        response = self.client.get(f"/v2/{repo}/tags/list")
        if response.status_code != 200:
            raise RegistryHttpError("GET tags", response)
        tags: list[str] = response.json().get("tags") or []
        return tags

    def referrers(self, repo: str, digest: str, *, artifact_type: str | None = None) -> httpx.Response:
        params = {"artifactType": artifact_type} if artifact_type is not None else None
        return self.client.get(f"/v2/{repo}/referrers/{digest}", params=params)

    def push_small_image(self, repo: str, tag: str, *, label: str = "subject") -> PushedManifest:
        """A tiny one-layer OCI image (config + layer uploaded here) — handy as a referrers subject."""
        layer = self.push_blob(repo, os.urandom(512))
        config = compact_json(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": {"org.example.e2e": label}},
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }
        )
        config_desc = self.push_blob(repo, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_desc.digest, "size": config_desc.size},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer.digest, "size": layer.size}],
        }
        return self.put_manifest(repo, tag, compact_json(manifest), OCI_MANIFEST)


# --------------------------------------------------------------------------------------------------
# ORAS with OCI 1.1 artifactType
# --------------------------------------------------------------------------------------------------


class OrasArtifactClient(oras.provider.Registry):  # type: ignore[misc]  # oras ships no type hints
    """oras-py 0.2.43 with OCI 1.1 artifacts.

    oras 0.2.43's `push()` builds the manifest dict itself (config, layers, annotations, and `subject` from an
    `oras.oci.Subject`) and hands it to `upload_manifest()`, which PUTs it with `requests`' `json=` — so it
    has no way to set the manifest-level `artifactType`, and the caller never learns the exact bytes that were
    sent. This subclass overrides only `upload_manifest()`: it adds `artifactType` while a
    `push_artifact()` call is in progress and sends its own compact serialisation, remembering the bytes so
    the digest can be checked against what the registry answers.
    """

    def __init__(self, hostname: str) -> None:
        super().__init__(hostname=hostname, insecure=True, tls_verify=False)
        self._pending_artifact_type: str | None = None
        self.last_manifest: PushedManifest | None = None

    def upload_manifest(self, manifest: dict[str, Any], container: Any) -> requests.Response:
        container = self.get_container(container)
        body_obj = dict(manifest)
        if self._pending_artifact_type is not None:
            body_obj = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": self._pending_artifact_type,
            }
            body_obj.update({k: v for k, v in manifest.items() if k not in ("schemaVersion", "mediaType")})
        if not body_obj.get("annotations"):
            body_obj.pop("annotations", None)  # oras always adds an empty dict; omit it like other clients do
        jsonschema.validate(body_obj, schema=oras.schemas.manifest)
        body = compact_json(body_obj)
        media_type = body_obj.get("mediaType", OCI_MANIFEST)
        response: requests.Response = self.do_request(
            f"{self.prefix}://{container.manifest_url()}",
            "PUT",
            headers={"Content-Type": media_type},
            data=body,
        )
        self.last_manifest = PushedManifest(
            sha256_digest(body), body, media_type, httpx.Headers(dict(response.headers))
        )
        return response

    def push_artifact(
        self,
        target: str,
        files: Sequence[tuple[Path, str]],
        *,
        artifact_type: str,
        subject: oras.oci.Subject | None = None,
        annotations: Mapping[str, str] | None = None,
        workdir: Path,
    ) -> tuple[PushedManifest, requests.Response]:
        """Push `files` ((path, media type) pairs) as one OCI 1.1 artifact.

        The config is the OCI empty descriptor (`application/vnd.oci.empty.v1+json`, content `{}`), as the
        image spec recommends for artifacts. Returns the manifest as sent plus the registry's response."""
        empty_config = workdir / "empty-config.json"
        empty_config.write_bytes(EMPTY_JSON)
        self.last_manifest = None
        self._pending_artifact_type = artifact_type
        try:
            response = self.push(
                target=target,
                files=[f"{path}:{media_type}" for path, media_type in files],
                manifest_config=f"{empty_config}:{OCI_EMPTY}",
                manifest_annotations=dict(annotations) if annotations else None,
                subject=subject,
                disable_path_validation=True,
                quiet=True,
            )
        finally:
            self._pending_artifact_type = None
        assert self.last_manifest is not None
        return self.last_manifest, response


# --------------------------------------------------------------------------------------------------
# Helm charts (no helm CLI here: build the chart and push it the way `helm push` does)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HelmChart:
    name: str
    version: str
    metadata: dict[str, Any]  # what `helm push` stores as the config blob (Chart.yaml as JSON)
    package: bytes  # the chart `.tgz`

    @property
    def tag(self) -> str:
        # helm replaces '+' (semver build metadata, not allowed in OCI tags) with '_'.
        return self.version.replace("+", "_")

    @property
    def config_bytes(self) -> bytes:
        return compact_json(self.metadata)


def build_helm_chart(
    name: str, version: str, *, app_version: str = "1.16.0", description: str = "An e2e test chart"
) -> HelmChart:
    """A real, installable-looking Helm v3 chart packaged like `helm package` (name-version.tgz with a
    top-level `<name>/` directory)."""
    chart_yaml = (
        "apiVersion: v2\n"
        f"name: {name}\n"
        f"description: {description}\n"
        "type: application\n"
        f"version: {version}\n"
        f'appVersion: "{app_version}"\n'
    )
    values_yaml = (
        "replicaCount: 1\n"
        "image:\n"
        "  repository: nginx\n"
        "  pullPolicy: IfNotPresent\n"
        '  tag: ""\n'
        "service:\n"
        "  type: ClusterIP\n"
        "  port: 80\n"
    )
    helpers_tpl = (
        f'{{{{- define "{name}.fullname" -}}}}\n'
        f'{{{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}}}\n'
        "{{- end }}\n"
    )
    deployment_yaml = (
        "apiVersion: apps/v1\n"
        "kind: Deployment\n"
        "metadata:\n"
        f'  name: {{{{ include "{name}.fullname" . }}}}\n'
        "spec:\n"
        "  replicas: {{ .Values.replicaCount }}\n"
        "  selector:\n"
        "    matchLabels:\n"
        f"      app: {name}\n"
        "  template:\n"
        "    metadata:\n"
        "      labels:\n"
        f"        app: {name}\n"
        "    spec:\n"
        "      containers:\n"
        "        - name: {{ .Chart.Name }}\n"
        '          image: "{{ .Values.image.repository }}:'
        '{{ .Values.image.tag | default .Chart.AppVersion }}"\n'
        "          ports:\n"
        "            - containerPort: {{ .Values.service.port }}\n"
    )
    service_yaml = (
        "apiVersion: v1\n"
        "kind: Service\n"
        "metadata:\n"
        f'  name: {{{{ include "{name}.fullname" . }}}}\n'
        "spec:\n"
        "  type: {{ .Values.service.type }}\n"
        "  ports:\n"
        "    - port: {{ .Values.service.port }}\n"
        "  selector:\n"
        f"    app: {name}\n"
    )
    helmignore = ".DS_Store\n.git/\n*.swp\n"
    files = {
        "Chart.yaml": chart_yaml,
        "values.yaml": values_yaml,
        ".helmignore": helmignore,
        "templates/_helpers.tpl": helpers_tpl,
        "templates/deployment.yaml": deployment_yaml,
        "templates/service.yaml": service_yaml,
    }
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for relative, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{relative}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    # Field order follows helm's chart.Metadata JSON encoding (empty fields omitted).
    metadata: dict[str, Any] = {
        "name": name,
        "version": version,
        "description": description,
        "apiVersion": "v2",
        "appVersion": app_version,
        "type": "application",
    }
    return HelmChart(name=name, version=version, metadata=metadata, package=buffer.getvalue())


def push_helm_chart(http: RegistryHttp, namespace: str, chart: HelmChart) -> PushedManifest:
    """What `helm push <chart>.tgz oci://host/<namespace>` sends: config + chart blobs, then an OCI image
    manifest tagged with the chart version, in repository `<namespace>/<chart name>`."""
    repo = f"{namespace}/{chart.name}"
    config = http.push_blob(repo, chart.config_bytes)
    content = http.push_blob(repo, chart.package)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": HELM_CHART_CONTENT, "digest": content.digest, "size": content.size}],
        "annotations": {
            "org.opencontainers.image.created": FIXED_CREATED,
            "org.opencontainers.image.description": chart.metadata["description"],
            "org.opencontainers.image.title": chart.name,
            "org.opencontainers.image.version": chart.version,
        },
    }
    return http.put_manifest(repo, chart.tag, compact_json(manifest), OCI_MANIFEST)


def read_chart_file(package: bytes, member: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(package), mode="r:gz") as tar:
        extracted = tar.extractfile(member)
        assert extracted is not None, member
        return extracted.read().decode()
