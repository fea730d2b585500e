"""Storage quotas: a push may not take a registry's storage past its limit.

The limit is the operator's per-registry quota (`storageQuotaBytes` on the registry document, set with
`python -m services.management access update REGISTRY --storage-quota BYTES`), else the storage the tier
includes (10, 100 or 500 GiB). Usage is the deduplicated bytes stored (services/registry/ledger.py), kept
current as blobs are stored and collected.

Checked where the size is first known, before anything is staged: a monolithic upload and a chunk by their
`Content-Length` (a chunk: the session's bytes so far plus the chunk); otherwise at the closing `PUT`, once
the blob's size is known, before it is stored. A blob the registry stores already adds nothing and is never
refused. The refusal is `403 DENIED` with a message naming the limit, the usage and the size. Concurrent
pushes each see the usage before the others' blobs land, so they may together pass the limit by what was in
flight; the next push is refused.
"""

from __future__ import annotations

from services.management.registries import storage_limit
from services.management.store import RegistryDoc
from services.registry.errors import ErrorCode, RegistryError
from services.registry.ledger import BlobLedger


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


async def check_room(ledger: BlobLedger, registry: RegistryDoc, adding: int, digest: str | None = None) -> None:
    """Refuse (403 DENIED) storing `adding` more bytes if that passes the registry's limit; `digest`, when
    known, lets a blob the registry stores already through."""
    limit = storage_limit(registry)
    if adding <= 0:
        return
    used = await ledger.storage_bytes(registry.registry)
    if used + adding <= limit:
        return
    if digest is not None and await ledger.get(registry.registry, digest) is not None:
        return  # stored already: deduplicated, it adds nothing
    raise RegistryError(
        ErrorCode.DENIED,
        f"storage quota exceeded: the registry may store {limit} bytes ({_gib(limit)}), stores {used}, "
        f"and this upload would add {adding}; delete images (and run garbage collection) or raise the quota",
        detail={"limit": limit, "used": used, "size": adding},
    )
