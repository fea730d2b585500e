"""Registries as resources: create, list, delete (the control plane's first piece).

A registry is a document in Cosmos DB (`registries` container) plus a Blob Storage container of its own,
so the blobs and repositories of two registries never mix. The ARM-shaped management API will call these
same functions.
"""

from __future__ import annotations

import re
from typing import Literal

from services.auth.store import AccessStore
from services.management.store import RegistryDoc, RegistryStore
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.platform.settings import Settings
from services.registry.store import ArtifactStore

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
    metadata: Cosmos, blobs: BlobStore, settings: Settings, name: str, sku: Sku = "Standard"
) -> tuple[RegistryDoc, bool]:
    """Create the registry (idempotent); returns it and whether it was new."""
    check_name(name)
    await blobs.create_registry_container(name)
    doc = RegistryDoc(id=name, registry=name, loginServer=login_server(name, settings), sku=sku)
    store = RegistryStore(metadata)
    created = await store.create_registry(doc)
    existing = await store.get_registry(name)
    assert existing is not None
    return existing, created


async def delete_registry(metadata: Cosmos, blobs: BlobStore, name: str) -> bool:
    await AccessStore(metadata).delete_all(name)  # admin user, tokens, scope maps, role assignments
    deleted = await _delete_registry_documents(metadata, name)
    await blobs.delete_registry_container(name)
    return deleted


async def _delete_registry_documents(metadata: Cosmos, name: str) -> bool:
    """The registry document, its repositories and their artifacts."""
    registries = RegistryStore(metadata)
    if await registries.get_registry(name) is None:
        return False
    artifacts = ArtifactStore(metadata)
    for repository in await artifacts.all_repositories(name):
        await artifacts.delete_repository(name, repository)
    return await registries.delete_registry(name)
