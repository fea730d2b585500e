"""What the benchmark does to a registry: image layouts for skopeo, seeding over HTTP, paging.

Layouts are written with `tests.e2e.clients.OciLayout`. Every push must upload its bytes for real, so each
run gets layers nobody has seen: a registry that already holds a blob (or a skopeo blob-info cache that
knows where to mount it from) would turn the push into a HEAD. Making 1 GiB of fresh random data per run
costs ~6 s here, so the random bytes are made once (`RandomPool`) and each layer is a tar of a slice of
them under a name unique to the run: a new digest for the price of a copy and a hash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import httpx

from tests.e2e.clients import (
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    CommandResult,
    ContainersConfig,
    Descriptor,
    Layer,
    OciLayout,
    Skopeo,
    compact_json,
    sha256_digest,
)

MiB = 1 << 20
GiB = 1 << 30
_COPY = 4 * MiB


# --- image layouts -------------------------------------------------------------------------------------


class RandomPool:
    """`size` random bytes in a file, made once; layers are tars of slices of it."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            remaining = size
            while remaining:
                block = os.urandom(min(_COPY * 4, remaining))
                out.write(block)
                remaining -= len(block)


class _HashCount(io.RawIOBase):
    """A write-only file that hashes and counts what goes to `target`."""

    def __init__(self, target: BinaryIO) -> None:
        super().__init__()
        self.target = target
        self.sha = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.count

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.target.write(view)
        self.sha.update(view)
        self.count += len(view)
        return len(view)


class _Slice(io.RawIOBase):
    """`size` bytes of `source` from `offset`."""

    def __init__(self, source: BinaryIO, offset: int, size: int) -> None:
        super().__init__()
        source.seek(offset)
        self.source = source
        self.remaining = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = self.remaining if n is None or n < 0 else min(n, self.remaining)
        data = self.source.read(want) if want > 0 else b""
        self.remaining -= len(data)
        return data


def add_pool_layer(layout: OciLayout, pool: RandomPool, offset: int, size: int, name: str) -> Layer:
    """An uncompressed tar layer holding one file `name`: `size` bytes of the pool from `offset`."""
    if offset + size > pool.size:
        raise ValueError("the random pool is smaller than the layer")
    tmp = layout.blobs / f".tmp-{name}"
    with tmp.open("wb") as raw, pool.path.open("rb") as source:
        out = _HashCount(raw)
        with tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_COPY) as tar:
            info = tarfile.TarInfo(name)
            info.size = size
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, _Slice(source, offset, size))
    digest = "sha256:" + out.sha.hexdigest()
    tmp.replace(layout.blob_path(digest))
    return Layer(Descriptor(OCI_LAYER_TAR, digest, out.count), digest)


@dataclass(frozen=True)
class TestImage:
    layout: OciLayout
    tag: str
    manifest_digest: str
    layer_bytes: int  # the sum of the layers' sizes: what MB/s is computed from
    layers: tuple[Descriptor, ...]

    @property
    def reference(self) -> str:
        return self.layout.reference(self.tag)


def build_image(root: Path, pool: RandomPool, layer_sizes: Sequence[int], nonce: str) -> TestImage:
    """An OCI layout with one image whose layers are fresh (named after `nonce`), tagged `nonce`."""
    layout = OciLayout(root)
    layers: list[Layer] = []
    offset = 0
    for index, size in enumerate(layer_sizes):
        if offset + size > pool.size:
            offset = 0
        layers.append(add_pool_layer(layout, pool, offset, size, f"bench-{nonce}-{index}.bin"))
        offset += size
    image = layout.add_image(layers, labels={"org.example.bench": nonce})
    layout.tag(image.manifest, nonce)
    total = sum(layer.descriptor.size for layer in layers)
    return TestImage(layout, nonce, image.manifest.digest, total, tuple(la.descriptor for la in layers))


# --- skopeo --------------------------------------------------------------------------------------------


class SkopeoRunner:
    """skopeo with a private policy and registries.conf (see tests/e2e/clients.py)."""

    def __init__(self, config_dir: Path) -> None:
        self.skopeo = Skopeo(ContainersConfig.create(config_dir))

    def push(self, image: TestImage, host: str, repo: str, credentials: tuple[str, str] | None = None) -> float:
        creds = ["--dest-creds", ":".join(credentials)] if credentials else []
        done = self.skopeo.copy(
            image.reference, f"docker://{host}/{repo}:{image.tag}", preserve_digests=True, extra=creds
        )
        return done.seconds

    def pull(
        self, image: TestImage, host: str, repo: str, destination: Path, credentials: tuple[str, str] | None = None
    ) -> float:
        pulled = OciLayout(destination)
        creds = ["--src-creds", ":".join(credentials)] if credentials else []
        done: CommandResult = self.skopeo.copy(
            f"docker://{host}/{repo}:{image.tag}", f"oci:{pulled.root}:{image.tag}", preserve_digests=True, extra=creds
        )
        for layer in image.layers:
            size = pulled.blob_path(layer.digest).stat().st_size
            if size != layer.size:
                raise RuntimeError(f"pulled {layer.digest} has {size} bytes, not {layer.size}")
        return done.seconds

    def version(self) -> str:
        return self.skopeo._run("--version").text.strip()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- the HTTP API --------------------------------------------------------------------------------------


class HttpError(RuntimeError):
    pass


@dataclass(frozen=True)
class SmallImage:
    """A tiny one-layer image: what the request and listing benchmarks are about."""

    config: Descriptor
    layer: Descriptor
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def small_image(label: str) -> tuple[SmallImage, bytes, bytes]:
    """(image, config bytes, layer bytes): a 1 KiB layer, its config and the manifest."""
    layer = os.urandom(1024)
    layer_desc = Descriptor(OCI_LAYER_TAR, sha256_digest(layer), len(layer))
    config = compact_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"org.example.bench": label}},
            "rootfs": {"type": "layers", "diff_ids": [layer_desc.digest]},
        }
    )
    config_desc = Descriptor(OCI_CONFIG, sha256_digest(config), len(config))
    manifest = compact_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer_desc.to_json()],
        }
    )
    return SmallImage(config_desc, layer_desc, manifest), config, layer


def config_only_manifest(http: httpx.Client, base: str, repo: str, headers: dict[str, str]) -> bytes:
    """Pushes a tiny config blob to `repo` and returns the body of a manifest naming it and no layers."""
    config = b'{"architecture":"amd64","os":"linux"}'
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload = http.post(f"{base}/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=config, headers=headers)
    assert upload.status_code == 201, upload.text
    return compact_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": len(config)},
            "layers": [],
        }
    )


def session(concurrency: int = 16, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """A client session; `headers` go on every request (credentials, or the Host of another registry)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=120),
        headers=headers,
    )


def basic_header(credentials: tuple[str, str]) -> dict[str, str]:
    user, password = credentials
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def bearer_header(base: str, credentials: tuple[str, str], scopes: Sequence[str]) -> dict[str, str]:
    """What docker and podman send: an access token from the registry's token endpoint (`/oauth2/token`,
    the realm its challenge names), got with the user's password, for `scopes`."""
    async with session(1) as http, http.get(f"{base}/v2/") as challenge:
        found = re.search(r'realm="([^"]+)",service="([^"]+)"', challenge.headers.get("WWW-Authenticate", ""))
        if challenge.status != 401 or found is None:
            raise HttpError(f"GET /v2/ without a token: {challenge.status}, no Bearer challenge")
        realm, service = found.groups()
    params = [("service", service), *(("scope", scope) for scope in scopes)]
    async with session(1, basic_header(credentials)) as http, http.get(realm, params=params) as reply:
        if reply.status != 200:
            raise HttpError(f"token for {scopes}: {reply.status} {await reply.text()}")
        token = (await reply.json())["access_token"]
    return {"Authorization": f"Bearer {token}"}


async def push_blob(http: aiohttp.ClientSession, base: str, repo: str, data: bytes) -> str:
    """POST then PUT ?digest= with the bytes (supported by every registry)."""
    digest = sha256_digest(data)
    async with http.post(f"{base}/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"}) as started:
        if started.status != 202:
            raise HttpError(f"start upload in {repo}: {started.status} {await started.text()}")
        location = started.headers["Location"]
    url = urllib.parse.urljoin(base + "/", location)
    separator = "&" if "?" in url else "?"
    async with http.put(
        f"{url}{separator}digest={digest}", data=data, headers={"Content-Type": "application/octet-stream"}
    ) as finished:
        if finished.status != 201:
            raise HttpError(f"finish upload in {repo}: {finished.status} {await finished.text()}")
    return digest


async def mount_blob(http: aiohttp.ClientSession, base: str, repo: str, digest: str, source: str) -> None:
    params = {"mount": digest, "from": source}
    async with http.post(f"{base}/v2/{repo}/blobs/uploads/", params=params) as response:
        if response.status != 201:
            raise HttpError(f"mount {digest} into {repo}: {response.status} {await response.text()}")


async def put_manifest(
    http: aiohttp.ClientSession, base: str, repo: str, reference: str, body: bytes, tags: Sequence[str] = ()
) -> None:
    query = ("?" + urllib.parse.urlencode([("tag", t) for t in tags])) if tags else ""
    async with http.put(
        f"{base}/v2/{repo}/manifests/{reference}{query}", data=body, headers={"Content-Type": OCI_MANIFEST}
    ) as response:
        if response.status != 201:
            raise HttpError(f"PUT manifest {repo}:{reference}: {response.status} {await response.text()}")


async def manifest_exists(http: aiohttp.ClientSession, base: str, repo: str, reference: str) -> bool:
    async with http.head(f"{base}/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}) as r:
        return r.status == 200


async def push_small_image(
    http: aiohttp.ClientSession, base: str, repo: str, tag: str, label: str = "bench"
) -> SmallImage:
    image, config, layer = small_image(label)
    await push_blob(http, base, repo, layer)
    await push_blob(http, base, repo, config)
    await put_manifest(http, base, repo, tag, image.manifest)
    return image


async def _bounded(concurrency: int, jobs: Sequence[Any]) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def run(job: Any) -> None:
        async with slots:
            await job

    await asyncio.gather(*(run(job) for job in jobs))


@dataclass(frozen=True)
class SeedResult:
    count: int
    seconds: float
    method: str


async def seed_tags(http: aiohttp.ClientSession, base: str, repo: str, count: int, concurrency: int = 16) -> SeedResult:
    """`count` tags t00000... on one tiny image in `repo`: multi-tag PUTs by digest (`?tag=`, 50 per PUT)
    where the registry supports them, else one PUT per tag."""
    started = time.monotonic()
    tags = [f"t{i:05d}" for i in range(count)]
    image = await push_small_image(http, base, repo, tags[0])
    await put_manifest(http, base, repo, image.digest, image.manifest, tags[:50])
    # tags[0] came with the image; tags[1] exists only if the registry took the `?tag=` parameters.
    if count < 2 or await manifest_exists(http, base, repo, tags[1]):
        batches = [tags[i : i + 50] for i in range(50, count, 50)]
        await _bounded(concurrency, [put_manifest(http, base, repo, image.digest, image.manifest, b) for b in batches])
        method = "PUT by digest ?tag= (50 per request)"
    else:
        await _bounded(concurrency, [put_manifest(http, base, repo, t, image.manifest) for t in tags])
        method = "PUT per tag"
    return SeedResult(count, time.monotonic() - started, method)


async def seed_repositories(
    http: aiohttp.ClientSession, base: str, prefix: str, count: int, concurrency: int = 16
) -> SeedResult:
    """`count` repositories `<prefix>/r00000...`, each holding the same tiny image (blobs mounted)."""
    started = time.monotonic()
    source = f"{prefix}/source"
    image = await push_small_image(http, base, source, "latest")

    async def one(index: int) -> None:
        repo = f"{prefix}/r{index:05d}"
        await mount_blob(http, base, repo, image.layer.digest, source)
        await mount_blob(http, base, repo, image.config.digest, source)
        await put_manifest(http, base, repo, "latest", image.manifest)

    await _bounded(concurrency, [one(i) for i in range(count - 1)])  # + the source: `count` in all
    return SeedResult(count, time.monotonic() - started, "mount + PUT manifest per repository")


_NEXT = re.compile(r"<([^>]+)>\s*;\s*rel=\"?next\"?")


@dataclass(frozen=True)
class Paging:
    page_seconds: list[float]
    items: int

    @property
    def pages(self) -> int:
        return len(self.page_seconds)


async def page_through(http: aiohttp.ClientSession, base: str, path: str, key: str) -> Paging:
    """GET `path`, then every `Link: <...>; rel="next"` page; the time of each page and the items seen."""
    url: str | None = base + path
    seconds: list[float] = []
    items = 0
    while url is not None:
        started = time.perf_counter()
        async with http.get(url) as response:
            body = await response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise HttpError(f"GET {url}: {response.status} {body[:300]!r}")
            link = response.headers.get("Link")
        seconds.append(elapsed)
        items += len(json.loads(body).get(key) or [])
        match = _NEXT.search(link or "")
        url = urllib.parse.urljoin(base + "/", match.group(1)) if match else None
    return Paging(seconds, items)
