"""The control plane's documents and queries (`registries` container).

    registries [/registry]
      <registry>                   {type: "registry", registry, loginServer, sku, created, subscription,
                                    resourceGroup, location, tags, provisioningState, adminUserEnabled,
                                    anonymousPullEnabled, authDisabled, networkRuleSet, publicNetworkAccess,
                                    policies, ...} in the registry's own partition
      "scope:<subscription>"       roleAssignment:<id>  control-plane roles at subscription or resource group
                                    scope {type: "scopeRoleAssignment", scope, principalId, tenantId, role}
      "operations"                 operation:<id>  a long-running operation {status, kind, registry,
                                    startTime, endTime, error, ttl 7 days} (ARM's Azure-AsyncOperation)

Registry names are global (like ACR's DNS names): the registry's partition is its name, whatever its
subscription and resource group. Its child resources live in the same partition, each in its own domain's
store: identities and rate-limit buckets (services/auth/store.py), webhooks (services/webhooks/store.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from services.platform.cosmos import Cosmos, Document, utcnow

LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
LOCAL_RESOURCE_GROUP = "local-rg"
OPERATIONS_PARTITION = "operations"
OPERATION_TTL_SECONDS = 7 * 24 * 3600


def scope_partition(subscription: str) -> str:
    return f"scope:{subscription.lower()}"


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
    # The resource as Azure Resource Manager sees it. Registries made by the operator tool or the devhost
    # belong to the local subscription and resource group.
    subscription: str = LOCAL_SUBSCRIPTION
    resourceGroup: str = LOCAL_RESOURCE_GROUP
    location: str = "westeurope"
    tags: dict[str, str] = Field(default_factory=dict)
    provisioningState: Literal["Creating", "Updating", "Deleting", "Succeeded", "Failed"] = "Succeeded"
    publicNetworkAccess: Literal["Enabled", "Disabled"] = "Enabled"
    dataEndpointEnabled: bool = False
    zoneRedundancy: Literal["Enabled", "Disabled"] = "Disabled"
    policies: dict[str, Any] = Field(default_factory=dict)
    identity: dict[str, Any] | None = None
    deleteOperation: str | None = None  # the operation deleting it (resumable by the cleanup timer)
    # The operator's storage quota in bytes (ours; None: the tier's included storage is the limit).
    storageQuotaBytes: int | None = None


class ScopeRoleAssignmentDoc(Document):
    """A control-plane role at subscription (`/subscriptions/<s>`) or resource group scope."""

    registry: str  # partition: "scope:<subscription>"
    type: Literal["scopeRoleAssignment"] = "scopeRoleAssignment"
    scope: str
    principalId: str
    tenantId: str = ""
    role: str
    created: str = Field(default_factory=utcnow)


class OperationDoc(Document):
    """A long-running operation, as ARM's Azure-AsyncOperation status reports it."""

    registry: str = OPERATIONS_PARTITION
    type: Literal["operation"] = "operation"
    kind: Literal["create", "update", "delete"]
    target: str  # the registry it acts on
    subscription: str = LOCAL_SUBSCRIPTION
    resourceGroup: str = LOCAL_RESOURCE_GROUP
    status: Literal["InProgress", "Succeeded", "Failed", "Canceled"] = "InProgress"
    startTime: str = Field(default_factory=utcnow)
    endTime: str | None = None
    error: dict[str, str] | None = None
    progress: dict[str, int] = Field(default_factory=dict)  # ours: what a delete has removed so far
    startedBy: str | None = None  # the principal's object id: they may follow it whatever their roles
    ttl: int = OPERATION_TTL_SECONDS


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

    async def replace_registry(self, doc: RegistryDoc) -> RegistryDoc:
        """Write back only if nobody else did since it was read (ConcurrentUpdate otherwise)."""
        return RegistryDoc.model_validate(await self._cosmos.replace("registries", doc))

    async def list_registries(self) -> list[RegistryDoc]:
        sql = "SELECT * FROM c WHERE c.type = 'registry' ORDER BY c.id"
        return [RegistryDoc.model_validate(doc) async for doc in self._cosmos.query_across("registries", sql)]

    async def registries_in(
        self, subscription: str, resource_group: str | None, after: str, limit: int
    ) -> list[RegistryDoc]:
        """Up to `limit` registries of a subscription (and resource group), by name after `after` (ARM's
        list pages). Cross-partition, as listing a subscription is; ordered here rather than by the query,
        which the local emulator does not order across partitions."""
        sql = "SELECT * FROM c WHERE c.type = 'registry' AND c.subscription = @s"
        group = resource_group.lower() if resource_group is not None else None
        found = [
            RegistryDoc.model_validate(item)
            async for item in self._cosmos.query_across("registries", sql, {"@s": subscription.lower()})
            if item["id"] > after and (group is None or str(item.get("resourceGroup", "")).lower() == group)
        ]
        return sorted(found, key=lambda doc: doc.registry)[:limit]

    async def deleting(self) -> list[RegistryDoc]:
        """Registries whose deletion has not finished (the cleanup timer resumes them)."""
        sql = "SELECT * FROM c WHERE c.type = 'registry' AND c.provisioningState = 'Deleting'"
        return [RegistryDoc.model_validate(doc) async for doc in self._cosmos.query_across("registries", sql)]

    # --- control-plane roles at subscription and resource group scope ------------------------------------
    async def scope_role_assignments(self, subscription: str) -> list[ScopeRoleAssignmentDoc]:
        partition = scope_partition(subscription)
        sql = "SELECT * FROM c WHERE c.registry = @p AND c.type = 'scopeRoleAssignment'"
        return [
            ScopeRoleAssignmentDoc.model_validate(item)
            async for item in self._cosmos.query("registries", sql, {"@p": partition}, partition)
        ]

    async def put_scope_role_assignment(self, doc: ScopeRoleAssignmentDoc) -> None:
        await self._cosmos.upsert("registries", doc)

    # --- long-running operations ----------------------------------------------------------------------
    async def get_operation(self, operation: str) -> OperationDoc | None:
        doc = await self._cosmos.read("registries", f"operation:{operation}", OPERATIONS_PARTITION)
        return OperationDoc.model_validate(doc) if doc else None

    async def put_operation(self, doc: OperationDoc) -> OperationDoc:
        return OperationDoc.model_validate(await self._cosmos.upsert("registries", doc))

    async def delete_registry(self, name: str) -> bool:
        """Delete the registry document itself (its children are deleted by their own stores first)."""
        return await self._cosmos.delete("registries", name, name)
