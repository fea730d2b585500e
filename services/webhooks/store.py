"""Webhooks' documents and queries.

    registries [/registry]  webhook:<name>  {type: "webhook", name, serviceUri, actions, status, scope,
                                             payloadFormat, sealedSecrets (custom headers and signing secret,
                                             sealed: services/webhooks/resources.py), ...}
    deliveries [/webhook]   delivery:<event id>  {type: "delivery", eventId, state, attempts: [request,
                                                  status, duration], event, created, ttl 30 days}
                            partition "<registry>/<webhook>"; the id makes delivery idempotent

Delivery records are replaced with an ETag condition (two workers never both deliver).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from services.platform.cosmos import Cosmos, Document, utcnow
from services.platform.readcache import process_marks

DELIVERY_TTL_SECONDS = 30 * 24 * 3600  # webhook delivery records are kept 30 days


class WebhookDoc(Document):
    """A webhook of a registry (a child resource in the registry's partition)."""

    registry: str
    type: Literal["webhook"] = "webhook"
    name: str
    location: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    serviceUri: str
    customHeaders: dict[str, str] = Field(default_factory=dict)
    actions: list[str]
    status: Literal["enabled", "disabled"] = "enabled"
    scope: str = ""
    signingSecret: str | None = None
    payloadFormat: Literal["acr", "cloudevents"] = "acr"
    created: str = Field(default_factory=utcnow)
    # customHeaders and signingSecret as stored: sealed (services/webhooks/resources.py), both then empty.
    sealedSecrets: str | None = None


class DeliveryDoc(Document):
    """Every attempt to deliver one event to one webhook; at most one per (event, webhook)."""

    webhook: str  # partition: "<registry>/<webhook name>"
    type: Literal["delivery"] = "delivery"
    eventId: str
    event: dict[str, Any]
    state: Literal["pending", "delivered", "failed", "deadlettered"] = "pending"
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    created: str = Field(default_factory=utcnow)
    updated: str = Field(default_factory=utcnow)
    ttl: int = DELIVERY_TTL_SECONDS


def webhooks_partition(registry: str) -> str:
    """The change-mark partition of a registry's webhooks (services/platform/readcache.py): the delivery
    worker keeps the list it read, and every write here marks it changed."""
    return f"webhooks:{registry}"


class WebhookStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def list_webhooks(self, registry: str) -> list[WebhookDoc]:
        sql = "SELECT * FROM c WHERE c.registry = @r AND c.type = 'webhook' ORDER BY c.name"
        return [
            WebhookDoc.model_validate(item)
            async for item in self._cosmos.query("registries", sql, {"@r": registry}, registry)
        ]

    async def get_webhook(self, registry: str, name: str) -> WebhookDoc | None:
        doc = await self._cosmos.read("registries", f"webhook:{name}", registry)
        return WebhookDoc.model_validate(doc) if doc else None

    async def put_webhook(self, webhook: WebhookDoc) -> WebhookDoc:
        try:
            return WebhookDoc.model_validate(await self._cosmos.upsert("registries", webhook))
        finally:
            process_marks().changed(webhooks_partition(webhook.registry))

    async def delete_webhook(self, registry: str, name: str) -> bool:
        try:
            return await self._cosmos.delete("registries", f"webhook:{name}", registry)
        finally:
            process_marks().changed(webhooks_partition(registry))

    async def get_delivery(self, webhook: str, event_id: str) -> DeliveryDoc | None:
        doc = await self._cosmos.read("deliveries", f"delivery:{event_id}", webhook)
        return DeliveryDoc.model_validate(doc) if doc else None

    async def create_delivery(self, delivery: DeliveryDoc) -> DeliveryDoc | None:
        """Create the delivery record; None when one exists already (the event was seen before)."""
        doc = await self._cosmos.create("deliveries", delivery)
        return DeliveryDoc.model_validate(doc) if doc is not None else None

    async def replace_delivery(self, delivery: DeliveryDoc) -> DeliveryDoc:
        """Write the record back only if nobody else did since it was read."""
        delivery.updated = utcnow()
        return DeliveryDoc.model_validate(await self._cosmos.replace("deliveries", delivery))

    async def list_deliveries(self, webhook: str, state: str | None = None, limit: int = 1000) -> list[DeliveryDoc]:
        """The webhook's deliveries, newest first (optionally only those in one state)."""
        sql = "SELECT * FROM c WHERE c.webhook = @w AND c.type = 'delivery'"
        params: dict[str, Any] = {"@w": webhook}
        if state is not None:
            sql += " AND c.state = @s"
            params["@s"] = state
        sql += " ORDER BY c.created DESC"
        found: list[DeliveryDoc] = []
        async for item in self._cosmos.query("deliveries", sql, params, webhook, limit):
            found.append(DeliveryDoc.model_validate(item))
            if len(found) >= limit:
                break
        return found
