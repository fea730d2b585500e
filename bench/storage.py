"""The physical reference: the same bytes straight to and from Azurite, without the registry.

- SDK upload/download: `azure.storage.blob.aio`, the client our API uses, with our block size and upload
  concurrency (`Settings.block_size`, `Settings.upload_concurrency`) and the same for the download.
- curl GET of a blob via a read SAS URL: what a client does after our 307 redirect, one stream.
- curl PUT via a write SAS URL (Put Blob, one request): one stream up, as skopeo sends a layer to us.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobSasPermissions, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient

from services.platform.blobs import blob_path, container_name
from services.platform.settings import AZURITE_ACCOUNT_KEY

ACCOUNT = "devstoreaccount1"
RAW_CONTAINER = "bench-raw"


class RawStorage:
    def __init__(self, connection_string: str, blob_port: int, block_size: int, concurrency: int) -> None:
        self.connection_string = connection_string
        self.endpoint = f"http://127.0.0.1:{blob_port}/{ACCOUNT}"
        self.block_size = block_size
        self.concurrency = concurrency

    def _service(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(
            self.connection_string, max_block_size=self.block_size, max_single_put_size=self.block_size
        )

    async def upload(self, source: Path, name: str) -> float:
        """Seconds to upload `source` as block blob `name` (staged blocks + commit, like ours)."""
        async with self._service() as service:
            container = service.get_container_client(RAW_CONTAINER)
            try:
                await container.create_container()
            except ResourceExistsError:
                pass
            blob = container.get_blob_client(name)
            size = source.stat().st_size  # noqa: ASYNC240 (once, before the clock starts)
            with source.open("rb") as data:
                started = time.perf_counter()
                await blob.upload_blob(data, length=size, overwrite=True, max_concurrency=self.concurrency)
                return time.perf_counter() - started

    async def download(self, name: str, destination: Path) -> float:
        async with self._service() as service:
            blob = service.get_container_client(RAW_CONTAINER).get_blob_client(name)
            with destination.open("wb") as out:
                started = time.perf_counter()
                stream = await blob.download_blob(max_concurrency=self.concurrency)
                await stream.readinto(out)
                return time.perf_counter() - started

    async def delete(self, name: str) -> None:
        async with self._service() as service:
            await service.get_container_client(RAW_CONTAINER).delete_blob(name)

    def sas_url(self, container: str, name: str, permission: BlobSasPermissions) -> str:
        now = datetime.now(UTC)
        sas = generate_blob_sas(
            account_name=ACCOUNT,
            container_name=container,
            blob_name=name,
            account_key=AZURITE_ACCOUNT_KEY,
            permission=permission,
            start=now - timedelta(minutes=5),
            expiry=now + timedelta(hours=1),
        )
        return f"{self.endpoint}/{container}/{name}?{sas}"

    def registry_blob_url(self, registry: str, digest: str) -> str:
        """A read SAS URL of a blob our registry stored (what our 307 redirect points at)."""
        return self.sas_url(container_name(registry), blob_path(digest), BlobSasPermissions(read=True))

    def curl_get(self, url: str, destination: Path, expected: int) -> float:
        return _curl(["-o", str(destination), url], expected, "size_download")

    def curl_put(self, source: Path, name: str) -> float:
        url = self.sas_url(RAW_CONTAINER, name, BlobSasPermissions(create=True, write=True))
        argv = ["-T", str(source), "-H", "x-ms-blob-type: BlockBlob", "-o", "/dev/null", url]
        return _curl(argv, source.stat().st_size, "size_upload")


def _curl(args: list[str], expected: int, size_field: str) -> float:
    argv = ["curl", "-sS", "--fail", "-w", f"%{{{size_field}}}", *args]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"curl failed ({done.returncode}): {done.stderr.strip()}")
    moved = int(float(done.stdout.strip() or 0))
    if moved != expected:
        raise RuntimeError(f"curl moved {moved} bytes, expected {expected}")
    return elapsed
