"""Webhook resources of a registry: create or replace, update, read, list, delete, with ACR's rules and
tier caps. The management API (`services/management/webhooks_api.py`), the command line and the delivery
worker read and write webhooks through these only.

A webhook's custom headers and signing secret are secrets the service must read back, so they are stored
sealed (services/platform/secrets.py), bound to the webhook's registry and name: the Cosmos DB document
(and the local emulator's journal) never holds them in clear. Documents written before sealing existed
are read as they are and sealed on their next write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from services.management.store import RegistryDoc, RegistryStore
from services.platform.cosmos import Cosmos
from services.platform.secrets import SecretBox, secret_box
from services.webhooks import rules
from services.webhooks.store import WebhookDoc, WebhookStore


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


async def _registry(metadata: Cosmos, registry: str) -> RegistryDoc:
    doc = await RegistryStore(metadata).get_registry(registry)
    if doc is None:
        raise RegistryNotFound(registry)
    return doc


def _box(metadata: Cosmos) -> SecretBox:
    return secret_box(metadata.settings.secrets_keys, metadata.settings.secrets_keys_file)


def _context(doc: WebhookDoc) -> str:
    return f"webhook:{doc.registry}/{doc.name}"


def sealed(doc: WebhookDoc, box: SecretBox) -> WebhookDoc:
    """The document as stored: its secrets sealed, the clear fields empty."""
    secrets = {"customHeaders": doc.customHeaders, "signingSecret": doc.signingSecret}
    value = box.seal(json.dumps(secrets).encode(), _context(doc))
    return doc.model_copy(update={"customHeaders": {}, "signingSecret": None, "sealedSecrets": value})


def opened(doc: WebhookDoc, box: SecretBox) -> WebhookDoc:
    """The document as the service uses it: its secrets in memory (SealedValueInvalid if they do not open)."""
    if doc.sealedSecrets is None:
        return doc
    secrets = json.loads(box.open(doc.sealedSecrets, _context(doc)))
    return doc.model_copy(
        update={
            "customHeaders": dict(secrets["customHeaders"]),
            "signingSecret": secrets["signingSecret"],
            "sealedSecrets": None,
        }
    )


async def get_webhook(metadata: Cosmos, registry: str, name: str) -> WebhookDoc:
    await _registry(metadata, registry)
    doc = await WebhookStore(metadata).get_webhook(registry, name)
    if doc is None:
        raise WebhookNotFound(name)
    return opened(doc, _box(metadata))


async def list_webhooks(metadata: Cosmos, registry: str) -> list[WebhookDoc]:
    await _registry(metadata, registry)
    return await webhooks_of(metadata, registry)


async def webhooks_of(metadata: Cosmos, registry: str) -> list[WebhookDoc]:
    """Every webhook of the registry, opened (the delivery worker's read: no registry check)."""
    box = _box(metadata)
    return [opened(doc, box) for doc in await WebhookStore(metadata).list_webhooks(registry)]


async def _store(metadata: Cosmos, doc: WebhookDoc) -> WebhookDoc:
    box = _box(metadata)
    return opened(await WebhookStore(metadata).put_webhook(sealed(doc, box)), box)


async def put_webhook(metadata: Cosmos, registry: str, name: str, changes: WebhookChanges) -> tuple[WebhookDoc, bool]:
    """Create the webhook, or replace the settings given (PUT); returns it and whether it is new."""
    reg = await _registry(metadata, registry)
    rules.check_name(name)
    existing = await WebhookStore(metadata).get_webhook(registry, name)
    if existing is None:
        rules.check_capacity(reg.sku, len(await WebhookStore(metadata).list_webhooks(registry)))
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
        base = opened(existing, _box(metadata))
    doc = _apply(base, changes)
    return await _store(metadata, doc), existing is None


async def update_webhook(metadata: Cosmos, registry: str, name: str, changes: WebhookChanges) -> WebhookDoc:
    """Change the settings given (PATCH)."""
    existing = await get_webhook(metadata, registry, name)
    return await _store(metadata, _apply(existing, changes))


async def delete_webhook(metadata: Cosmos, registry: str, name: str) -> bool:
    await _registry(metadata, registry)
    return await WebhookStore(metadata).delete_webhook(registry, name)


def _apply(doc: WebhookDoc, changes: WebhookChanges) -> WebhookDoc:
    values = doc.model_copy()
    if changes.service_uri is not None:
        values.serviceUri = rules.check_service_uri(changes.service_uri)
    else:
        rules.check_service_uri(values.serviceUri)
    if changes.custom_headers is not None:
        values.customHeaders = rules.check_custom_headers(changes.custom_headers)
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
