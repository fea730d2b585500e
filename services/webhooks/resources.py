"""Webhook resources of a registry: create or replace, update, read, list, delete, with ACR's rules and
tier caps. The management API (`services/management/webhooks_api.py`) and the command line call these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from services.platform.metadata import MetadataStore, RegistryDoc, WebhookDoc
from services.webhooks import rules


class RegistryNotFound(LookupError):
    pass


class WebhookNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class WebhookChanges:
    """The settings a create or update gives; None leaves a setting as it is (or its default on create)."""

    service_uri: str | None = None
    custom_headers: Mapping[str, str] | None = None
    actions: Sequence[str] | None = None
    status: Literal["enabled", "disabled"] | None = None
    scope: str | None = None
    location: str | None = None
    tags: Mapping[str, str] | None = None
    signing_secret: str | None = None
    payload_format: Literal["acr", "cloudevents"] | None = None


async def _registry(metadata: MetadataStore, registry: str) -> RegistryDoc:
    doc = await metadata.get_registry(registry)
    if doc is None:
        raise RegistryNotFound(registry)
    return doc


async def get_webhook(metadata: MetadataStore, registry: str, name: str) -> WebhookDoc:
    await _registry(metadata, registry)
    doc = await metadata.get_webhook(registry, name)
    if doc is None:
        raise WebhookNotFound(name)
    return doc


async def list_webhooks(metadata: MetadataStore, registry: str) -> list[WebhookDoc]:
    await _registry(metadata, registry)
    return await metadata.list_webhooks(registry)


async def put_webhook(
    metadata: MetadataStore, registry: str, name: str, changes: WebhookChanges
) -> tuple[WebhookDoc, bool]:
    """Create the webhook, or replace the settings given (PUT); returns it and whether it is new."""
    reg = await _registry(metadata, registry)
    rules.check_name(name)
    existing = await metadata.get_webhook(registry, name)
    if existing is None:
        rules.check_capacity(reg.sku, len(await metadata.list_webhooks(registry)))
        if changes.service_uri is None or changes.actions is None:
            raise rules.WebhookInvalid("a new webhook needs serviceUri and actions")
        base = WebhookDoc(
            id=f"webhook:{name}",
            registry=registry,
            name=name,
            serviceUri=changes.service_uri,
            actions=list(changes.actions),
        )
    else:
        base = existing
    doc = _apply(base, changes)
    return await metadata.put_webhook(doc), existing is None


async def update_webhook(metadata: MetadataStore, registry: str, name: str, changes: WebhookChanges) -> WebhookDoc:
    """Change the settings given (PATCH)."""
    existing = await get_webhook(metadata, registry, name)
    return await metadata.put_webhook(_apply(existing, changes))


async def delete_webhook(metadata: MetadataStore, registry: str, name: str) -> bool:
    await _registry(metadata, registry)
    return await metadata.delete_webhook(registry, name)


def _apply(doc: WebhookDoc, changes: WebhookChanges) -> WebhookDoc:
    values = doc.model_copy()
    if changes.service_uri is not None:
        values.serviceUri = rules.check_service_uri(changes.service_uri)
    else:
        rules.check_service_uri(values.serviceUri)
    if changes.custom_headers is not None:
        values.customHeaders = dict(changes.custom_headers)
    if changes.actions is not None:
        values.actions = rules.check_actions(changes.actions)
    else:
        rules.check_actions(values.actions)
    if changes.status is not None:
        values.status = changes.status
    if changes.scope is not None:
        values.scope = rules.check_scope(changes.scope)
    if changes.location is not None:
        values.location = changes.location
    if changes.tags is not None:
        values.tags = dict(changes.tags)
    if changes.signing_secret is not None:
        values.signingSecret = changes.signing_secret or None
    if changes.payload_format is not None:
        values.payloadFormat = changes.payload_format
    return values
