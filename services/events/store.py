"""The event outbox's documents and queries.

    artifacts [/repo]  outbox:<uuid>  {type: "outbox", registry, events: [ACR payloads], outbox: "pending" |
                                       "published", created, published, ttl, traceparent?}

The events of one change, written in the same batch as the change (services/registry/store.py), published
after the commit and marked; the relay republishes what is still pending (services/events/outbox.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from services.platform.cosmos import Cosmos, Document, utcnow


class OutboxDoc(Document):
    """The events one change raised (ACR payloads), committed with the change, published after it."""

    repo: str
    type: Literal["outbox"] = "outbox"
    registry: str
    events: list[dict[str, Any]]
    outbox: Literal["pending", "published"] = "pending"
    created: str = Field(default_factory=utcnow)
    published: str | None = None
    ttl: int | None = None
    # The W3C trace context of the change that raised the events (services/platform/telemetry.py): the
    # relay publishes them in that trace, however late. None while tracing is off.
    traceparent: str | None = None


class OutboxStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def pending_outbox(self, written_before: str, limit: int = 100) -> list[OutboxDoc]:
        """Outbox documents still unpublished that were written before `written_before` (cross-partition:
        the relay's query, every few seconds, over an index of one field)."""
        sql = "SELECT * FROM c WHERE c.type = 'outbox' AND c.outbox = 'pending' AND c.created < @before"
        items = self._cosmos.query_across("artifacts", sql, {"@before": written_before}, limit)
        found: list[OutboxDoc] = []
        async for item in items:
            found.append(OutboxDoc.model_validate(item))
            if len(found) >= limit:
                break
        return found

    async def mark_outbox_published(self, outbox: OutboxDoc, ttl_seconds: int) -> None:
        """Mark the outbox published; it expires `ttl_seconds` later."""
        operations: list[dict[str, Any]] = [
            {"op": "set", "path": "/outbox", "value": "published"},
            {"op": "set", "path": "/published", "value": utcnow()},
            {"op": "set", "path": "/ttl", "value": ttl_seconds},
        ]
        # False when it already expired: published long ago
        await self._cosmos.patch("artifacts", outbox.id, outbox.repo, operations)
