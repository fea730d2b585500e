"""Shared state of the request-rate limiter: one small document per bucket, updated optimistically.

    registries [/registry]  ratelimit:<category>:<registry | identity>
        {type: "ratelimit", state: {capacity, tokens, updated}, ttl: 600}

The limiter (services/auth/ratelimit.py) hands over a pure update function; this adapter reads the
document, applies it, and writes it back only if nobody else did meanwhile (ETag), retrying otherwise. Idle
buckets expire (TTL), and start full again, as an idle bucket would have refilled anyway.
"""

from __future__ import annotations

from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.cosmos.exceptions import CosmosAccessConditionFailedError

from services.platform.metadata import MetadataStore

BUCKET_TTL_SECONDS = 600
_ATTEMPTS = 8


class SharedStateContended(Exception):
    """Too many concurrent writers on one bucket document."""


class RateLimitStore:
    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata

    async def update(self, partition: str, item: str, update: Any) -> Any:
        container = self._metadata.container("registries")
        for _ in range(_ATTEMPTS):
            try:
                doc: dict[str, Any] | None = await container.read_item(item, partition_key=partition)
            except ResourceNotFoundError:
                doc = None
            state, result = update(doc["state"] if doc else None)
            body = {"id": item, "registry": partition, "type": "ratelimit", "state": state, "ttl": BUCKET_TTL_SECONDS}
            try:
                if doc is None:
                    await container.create_item(body)
                else:
                    await container.replace_item(
                        item, body, etag=doc["_etag"], match_condition=MatchConditions.IfNotModified
                    )
            except (ResourceExistsError, CosmosAccessConditionFailedError, ResourceNotFoundError):
                continue  # someone else wrote first: read again
            return result
        raise SharedStateContended(item)
