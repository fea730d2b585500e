"""Registries as resources: create, list, delete (the control plane's first piece).

A registry is a document in Cosmos DB (`registries` container) plus a Blob Storage container of its own,
so the blobs and repositories of two registries never mix. The ARM-shaped management API will call these
same functions.
"""

from __future__ import annotations

import re
from typing import Literal

from services.platform.access import AccessStore
from services.platform.blobs import BlobStore
from services.platform.metadata import MetadataStore, RegistryDoc
from services.platform.settings import Settings

# ACR's rule: 5-50 alphanumeric characters. We keep names lower-case: they become DNS labels.
REGISTRY_NAME = re.compile(r"^[a-z0-9]{5,50}$")

Sku = Literal["Basic", "Standard", "Premium"]


class RegistryNameInvalid(ValueError):
    pass


def login_server(name: str, settings: Settings) -> str:
    return f"{name}.{settings.registry_domain}"


def check_name(name: str) -> str:
    if not REGISTRY_NAME.fullmatch(name):
        raise RegistryNameInvalid(
            f"registry name {name!r} is invalid: use 5-50 lower-case letters and digits (like ACR)"
        )
    return name


async def create_registry(
    metadata: MetadataStore, blobs: BlobStore, settings: Settings, name: str, sku: Sku = "Standard"
) -> tuple[RegistryDoc, bool]:
    """Create the registry (idempotent); returns it and whether it was new."""
    check_name(name)
    await blobs.create_registry_container(name)
    doc = RegistryDoc(id=name, registry=name, loginServer=login_server(name, settings), sku=sku)
    created = await metadata.create_registry(doc)
    existing = await metadata.get_registry(name)
    assert existing is not None
    return existing, created


async def delete_registry(metadata: MetadataStore, blobs: BlobStore, name: str) -> bool:
    await AccessStore(metadata).delete_all(name)  # admin user, tokens, scope maps, role assignments
    deleted = await metadata.delete_registry(name)
    await blobs.delete_registry_container(name)
    return deleted
