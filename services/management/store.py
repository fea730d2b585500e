"""The registry resource's document and queries (`registries` container, the registry's own partition).

    registries [/registry]  <registry>  {type: "registry", registry, loginServer, sku, created,
                                         adminUserEnabled, anonymousPullEnabled, authDisabled, networkRuleSet}

Its child resources live in the same partition, each in its own domain's store: identities and rate-limit
buckets (services/auth/store.py), webhooks (services/webhooks/store.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from services.platform.cosmos import Cosmos, Document, utcnow


class RegistryDoc(Document):
    registry: str
    type: Literal["registry"] = "registry"
    loginServer: str
    sku: Literal["Basic", "Standard", "Premium"] = "Standard"
    created: str = Field(default_factory=utcnow)
    # Identity and access (services/auth): ACR's registry properties, plus `authDisabled`, which is ours
    # and for development and test registries only (no authentication; every caller has every right).
    adminUserEnabled: bool = False
    anonymousPullEnabled: bool = False
    authDisabled: bool = False
    networkRuleSet: dict[str, Any] | None = None


class RegistryStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def get_registry(self, name: str) -> RegistryDoc | None:
        doc = await self._cosmos.read("registries", name, name)
        return RegistryDoc.model_validate(doc) if doc else None

    async def create_registry(self, doc: RegistryDoc) -> bool:
        """Create the registry document; False when it already exists."""
        return await self._cosmos.create("registries", doc) is not None

    async def put_registry(self, doc: RegistryDoc) -> RegistryDoc:
        return RegistryDoc.model_validate(await self._cosmos.upsert("registries", doc))

    async def list_registries(self) -> list[RegistryDoc]:
        sql = "SELECT * FROM c WHERE c.type = 'registry' ORDER BY c.id"
        return [RegistryDoc.model_validate(doc) async for doc in self._cosmos.query_across("registries", sql)]

    async def delete_registry(self, name: str) -> bool:
        """Delete the registry document itself (its children are deleted by their own stores first)."""
        return await self._cosmos.delete("registries", name, name)
