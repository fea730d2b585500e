"""Registries as resources: their rules (names, tiers, policies) and their life (create, update, delete).

A registry is a document in Cosmos DB (`registries` container) plus a Blob Storage container of its own,
so the blobs and repositories of two registries never mix. The ARM-shaped API (registries_api.py), the
operator tool and the devhost call these functions.

Deleting a registry is long: every repository, manifest, tag and blob link, every identity, webhook and
rate-limit document of its partition, and its blob container go. The registry is first marked `Deleting`
(from then on the data plane serves nothing of it), then emptied step by step; every step can run again, so
a worker that dies midway is resumed by the cleanup timer (`resume_deletions`), and the registry document
goes last, which is when its name becomes available again.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from services.auth.network import NetworkRuleInvalid, NetworkRuleSet
from services.auth.store import AccessStore
from services.management.access import TOKEN_LIMITS
from services.management.store import (
    LOCAL_RESOURCE_GROUP,
    LOCAL_SUBSCRIPTION,
    OperationDoc,
    RegistryDoc,
    RegistryStore,
)
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos, utcnow
from services.platform.settings import Settings
from services.registry.ledger import BlobLedger
from services.registry.store import ArtifactStore
from services.replication.regions import delete_registry_everywhere
from services.replication.rules import REPLICATION_LIMITS
from services.replication.store import ReplicationStore
from services.scanning.harbor import check_external_scanner_policy
from services.scanning.quarantine import check_vulnerability_policy
from services.webhooks.rules import WEBHOOK_LIMITS
from services.webhooks.store import WebhookStore

log = logging.getLogger("management")

# ACR's rule: 5-50 alphanumeric characters. We keep names lower-case: they become DNS labels.
REGISTRY_NAME = re.compile(r"^[a-z0-9]{5,50}$")

Sku = Literal["Basic", "Standard", "Premium"]
SKUS: tuple[Sku, ...] = ("Basic", "Standard", "Premium")

# ../shared/design/acr-limits.md
SCOPE_MAP_LIMITS = TOKEN_LIMITS  # the same caps in ACR's table
# The storage each tier includes (ACR reports it as the limit of listUsages' Size; more costs extra).
STORAGE_INCLUDED: Mapping[str, int] = {"Basic": 10 * 2**30, "Standard": 100 * 2**30, "Premium": 500 * 2**30}
IP_RULE_LIMITS: Mapping[str, int] = {"Basic": 0, "Standard": 0, "Premium": 200}
PREMIUM_POLICIES = ("retentionPolicy", "trustPolicy")  # ACR offers these on Premium only
# vulnerabilityPolicy is ours (services/scanning/quarantine.py): pulls of images with findings at or above a
# severity are refused; externalScanner too (services/scanning/harbor.py): a Harbor scanner adapter.
POLICY_NAMES = (
    "quarantinePolicy",
    "trustPolicy",
    "retentionPolicy",
    "exportPolicy",
    "softDeletePolicy",
    "vulnerabilityPolicy",
    "externalScanner",
)


class RegistryNameInvalid(ValueError):
    pass


class RegistryInvalid(ValueError):
    """A setting breaks a rule; `target` names the field (ARM's error target)."""

    def __init__(self, message: str, target: str = "") -> None:
        super().__init__(message)
        self.target = target


class RegistryNameTaken(Exception):
    """The name belongs to a registry elsewhere (names are global, like ACR's DNS names)."""


def login_server(name: str, settings: Settings) -> str:
    return f"{name}.{settings.registry_domain}"


def check_name(name: str) -> str:
    if not REGISTRY_NAME.fullmatch(name):
        raise RegistryNameInvalid(
            f"registry name {name[:60]!r} is invalid: use 5-50 lower-case letters and digits (like ACR)"
        )
    return name


# --- the settings a create or update gives ------------------------------------------------------------
@dataclass
class RegistryChanges:
    """None leaves a setting as it is (or its default on create)."""

    sku: Sku | None = None
    location: str | None = None
    tags: dict[str, str] | None = None
    admin_user_enabled: bool | None = None
    anonymous_pull_enabled: bool | None = None
    network_rule_set: dict[str, Any] | None = None
    public_network_access: Literal["Enabled", "Disabled"] | None = None
    data_endpoint_enabled: bool | None = None
    zone_redundancy: Literal["Enabled", "Disabled"] | None = None
    policies: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    unchecked: dict[str, Any] = field(default_factory=dict)


def _policies(current: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Merge and validate ACR's policies (each a small object with `status`)."""
    merged = dict(current)
    for name, value in given.items():
        if name not in POLICY_NAMES:
            raise RegistryInvalid(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}", f"policies.{name}")
        if value is None:
            merged.pop(name, None)
            continue
        if not isinstance(value, dict):
            raise RegistryInvalid(f"policy {name} must be an object", f"policies.{name}")
        policy = {**merged.get(name, {}), **value}
        status = policy.get("status", "disabled")
        if status not in ("enabled", "disabled"):
            raise RegistryInvalid(f"{name}.status must be 'enabled' or 'disabled'", f"policies.{name}.status")
        policy["status"] = status
        if name == "retentionPolicy":
            days = policy.setdefault("days", 7)
            if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= 365:
                raise RegistryInvalid(
                    "retentionPolicy.days must be a whole number from 0 to 365", f"policies.{name}.days"
                )
        if name == "softDeletePolicy":
            days = policy.setdefault("retentionDays", 7)
            if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 90:
                raise RegistryInvalid(
                    "softDeletePolicy.retentionDays must be a whole number from 1 to 90",
                    f"policies.{name}.retentionDays",
                )
        if name == "externalScanner":
            try:
                check_external_scanner_policy(policy)
            except ValueError as exc:
                raise RegistryInvalid(f"externalScanner: {exc}", f"policies.{name}") from None
        if name == "vulnerabilityPolicy":
            try:
                check_vulnerability_policy(policy)
            except ValueError as exc:
                raise RegistryInvalid(f"vulnerabilityPolicy: {exc}", f"policies.{name}") from None
        if name == "trustPolicy" and policy.setdefault("type", "Notary") != "Notary":
            raise RegistryInvalid("trustPolicy.type must be 'Notary'", f"policies.{name}.type")
        merged[name] = policy
    return merged


def apply_changes(doc: RegistryDoc, changes: RegistryChanges) -> RegistryDoc:
    """The registry with the changes applied and checked (tier rules on the result)."""
    values = doc.model_copy(deep=True)
    if changes.sku is not None:
        values.sku = changes.sku
    if changes.location is not None:
        values.location = changes.location.lower().replace(" ", "")
    if changes.tags is not None:
        if len(changes.tags) > 50:
            raise RegistryInvalid("at most 50 tags are allowed", "tags")
        values.tags = dict(changes.tags)
    if changes.admin_user_enabled is not None:
        values.adminUserEnabled = changes.admin_user_enabled
    if changes.anonymous_pull_enabled is not None:
        values.anonymousPullEnabled = changes.anonymous_pull_enabled
    if changes.network_rule_set is not None:
        try:
            rules = NetworkRuleSet.parse(changes.network_rule_set)
        except NetworkRuleInvalid as error:
            raise RegistryInvalid(str(error), "properties.networkRuleSet") from error
        values.networkRuleSet = rules.to_doc() if rules is not None else None
    if changes.public_network_access is not None:
        values.publicNetworkAccess = changes.public_network_access
    if changes.data_endpoint_enabled is not None:
        values.dataEndpointEnabled = changes.data_endpoint_enabled
    if changes.zone_redundancy is not None:
        values.zoneRedundancy = changes.zone_redundancy
    if changes.policies is not None:
        values.policies = _policies(values.policies, changes.policies)
    if changes.identity is not None:
        kind = changes.identity.get("type", "None")
        if kind not in ("None", "SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned"):
            raise RegistryInvalid(f"identity.type {kind!r} is not one of ACR's", "identity.type")
        values.identity = None if kind == "None" else dict(changes.identity)
    check_tier(values)
    return values


def storage_limit(doc: RegistryDoc) -> int:
    """The most a push may make the registry store: the operator's quota, else what the tier includes."""
    return doc.storageQuotaBytes if doc.storageQuotaBytes is not None else STORAGE_INCLUDED[doc.sku]


def ip_rule_count(doc: RegistryDoc) -> int:
    return len((doc.networkRuleSet or {}).get("ipRules") or [])


def enabled(doc: RegistryDoc, policy: str) -> bool:
    return bool((doc.policies.get(policy) or {}).get("status") == "enabled")


SOFT_DELETE_GEO_REPLICATION = "the soft delete policy does not support geo-replicated registries (ACR's rule)"


def check_tier(doc: RegistryDoc) -> None:
    """What the registry's own settings need of its tier (ACR's table)."""
    sku = doc.sku
    rules = doc.networkRuleSet or {}
    if sku != "Premium" and (ip_rule_count(doc) or rules.get("defaultAction", "Allow") == "Deny"):
        raise RegistryInvalid("network rules need the Premium tier", "properties.networkRuleSet")
    if ip_rule_count(doc) > IP_RULE_LIMITS[sku]:
        raise RegistryInvalid(f"the {sku} tier allows {IP_RULE_LIMITS[sku]} IP rules", "properties.networkRuleSet")
    if doc.anonymousPullEnabled and sku == "Basic":
        raise RegistryInvalid("anonymous pull needs the Standard or Premium tier", "properties.anonymousPullEnabled")
    if doc.dataEndpointEnabled and sku != "Premium":
        raise RegistryInvalid("dedicated data endpoints need the Premium tier", "properties.dataEndpointEnabled")
    if doc.zoneRedundancy == "Enabled" and sku != "Premium":
        raise RegistryInvalid("zone redundancy needs the Premium tier", "properties.zoneRedundancy")
    for name in PREMIUM_POLICIES:
        if doc.policies.get(name, {}).get("status") == "enabled" and sku != "Premium":
            raise RegistryInvalid(f"{name} needs the Premium tier", f"properties.policies.{name}")
    if enabled(doc, "softDeletePolicy") and enabled(doc, "retentionPolicy"):
        # ACR's rule: the retention policy and the soft delete policy cannot both be on.
        raise RegistryInvalid(
            "the soft delete policy and the retention policy cannot both be enabled; disable one first",
            "properties.policies.softDeletePolicy",
        )
    if doc.policies.get("exportPolicy", {}).get("status") == "disabled" and sku != "Premium":
        raise RegistryInvalid("disabling export needs the Premium tier", "properties.policies.exportPolicy")


@dataclass(frozen=True)
class Usage:
    name: str
    limit: int
    current: int
    unit: Literal["Count", "Bytes"] = "Count"


async def usages(cosmos: Cosmos, doc: RegistryDoc) -> list[Usage]:
    """What the registry uses of its tier's limits (ACR's listUsages)."""
    access = AccessStore(cosmos)
    webhooks = len(await WebhookStore(cosmos).list_webhooks(doc.registry))
    tokens = len(await access.tokens(doc.registry))
    scope_maps = len(await access.scope_maps(doc.registry))
    sku = doc.sku
    stored = await BlobLedger(cosmos).storage_bytes(doc.registry)
    replicas = sum(not r.home for r in await ReplicationStore(cosmos).in_registry(doc.registry))
    return [
        Usage("Size", storage_limit(doc), stored, "Bytes"),
        Usage("Webhooks", WEBHOOK_LIMITS[sku], webhooks),
        # the home region counts: a Premium registry has one replication before it has any replica
        Usage("Geo-replications", REPLICATION_LIMITS[sku], 1 + replicas if sku == "Premium" or replicas else 0),
        Usage("IPRules", IP_RULE_LIMITS[sku], ip_rule_count(doc)),
        Usage("VNetRules", 100 if sku == "Premium" else 0, 0),
        Usage("Tokens", TOKEN_LIMITS[sku], tokens),
        Usage("ScopeMaps", SCOPE_MAP_LIMITS[sku], scope_maps),
    ]


async def check_usage_fits(cosmos: Cosmos, doc: RegistryDoc) -> None:
    """A tier change must fit what the registry already has (a downgrade is refused, naming what exceeds)."""
    # Storage is not checked: a registry over a smaller tier's storage keeps what it has; its pushes are
    # refused until it is back under (services/registry/quota.py). Only the counted caps apply here.
    over = [
        f"{u.name} ({u.current} > {u.limit})"
        for u in await usages(cosmos, doc)
        if u.unit == "Count" and u.current > u.limit
    ]
    if over:
        raise RegistryInvalid(
            f"the registry does not fit the {doc.sku} tier: {', '.join(over)}; remove them first", "sku.name"
        )


# --- life ---------------------------------------------------------------------------------------------
async def create_registry(
    metadata: Cosmos,
    blobs: BlobStore,
    settings: Settings,
    name: str,
    sku: Sku = "Standard",
    *,
    subscription: str = LOCAL_SUBSCRIPTION,
    resource_group: str = LOCAL_RESOURCE_GROUP,
    changes: RegistryChanges | None = None,
) -> tuple[RegistryDoc, bool]:
    """Create the registry (idempotent); returns it and whether it was new. A name taken in another
    subscription or resource group is RegistryNameTaken."""
    check_name(name)
    store = RegistryStore(metadata)
    existing = await store.get_registry(name)
    if existing is not None:
        if (existing.subscription.lower(), existing.resourceGroup.lower()) != (
            subscription.lower(),
            resource_group.lower(),
        ) or existing.provisioningState == "Deleting":
            raise RegistryNameTaken(name)
        return existing, False
    doc = RegistryDoc(
        id=name,
        registry=name,
        loginServer=login_server(name, settings),
        sku=sku,
        subscription=subscription.lower(),  # GUIDs: one spelling, so that listing by subscription finds it
        resourceGroup=resource_group,
        provisioningState="Creating",
    )
    if changes is not None:
        doc = apply_changes(doc, changes)
    check_tier(doc)
    if not await store.create_registry(doc):  # another create won the race: answer as for an existing one
        return await create_registry(
            metadata, blobs, settings, name, sku, subscription=subscription, resource_group=resource_group
        )
    await blobs.create_registry_container(name)
    doc = await store.get_registry(name) or doc
    doc.provisioningState = "Succeeded"
    return await store.replace_registry(doc), True


async def begin_delete(metadata: Cosmos, doc: RegistryDoc) -> OperationDoc:
    """Mark the registry Deleting and record the operation (the data plane stops serving it at once)."""
    store = RegistryStore(metadata)
    if doc.provisioningState == "Deleting" and doc.deleteOperation:
        found = await store.get_operation(doc.deleteOperation)
        if found is not None:
            return found
    operation = OperationDoc(
        id=f"operation:{uuid.uuid4()}",
        kind="delete",
        target=doc.registry,
        subscription=doc.subscription,
        resourceGroup=doc.resourceGroup,
    )
    operation = await store.put_operation(operation)
    doc.provisioningState = "Deleting"
    doc.deleteOperation = operation.id.removeprefix("operation:")
    await store.replace_registry(doc)
    return operation


async def finish_delete(metadata: Cosmos, blobs: BlobStore, name: str) -> bool:
    """Remove everything of a registry marked Deleting (every step can run again). False when there is no
    such registry any more."""
    store = RegistryStore(metadata)
    doc = await store.get_registry(name)
    if doc is None:
        return False
    operation = await store.get_operation(doc.deleteOperation) if doc.deleteOperation else None
    artifacts = ArtifactStore(metadata)
    repositories = await artifacts.all_repositories(name)
    for repository in repositories:
        await artifacts.delete_repository(name, repository)
    children = await _delete_children(metadata, name)
    await delete_registry_everywhere(metadata.settings, blobs, name)  # its replicas' copies (geo-replication)
    await blobs.delete_registry_container(name)
    await store.delete_registry(name)
    if operation is not None:
        operation.status, operation.endTime = "Succeeded", utcnow()
        operation.progress = {"repositories": len(repositories), "documents": children}
        await store.put_operation(operation)
    log.info("registry %s deleted (%d repositories, %d other documents)", name, len(repositories), children)
    return True


async def _delete_children(metadata: Cosmos, name: str) -> int:
    """Every document of the registry's partition but the registry's own: identities, webhooks,
    rate-limit buckets (each domain keeps its documents there)."""
    sql = "SELECT c.id FROM c WHERE c.registry = @r AND c.id != @r"
    ids = [item["id"] async for item in metadata.query("registries", sql, {"@r": name}, name)]
    for item in ids:
        await metadata.delete("registries", item, name)
    return len(ids)


async def delete_registry(metadata: Cosmos, blobs: BlobStore, name: str) -> bool:
    """Delete a registry now (the operator tool's delete): mark, then empty."""
    doc = await RegistryStore(metadata).get_registry(name)
    if doc is None:
        return False
    await begin_delete(metadata, doc)
    return await finish_delete(metadata, blobs, name)


async def resume_deletions(metadata: Cosmos, blobs: BlobStore) -> int:
    """Finish the deletions a worker left unfinished (the cleanup timer). Returns how many it finished."""
    finished = 0
    for doc in await RegistryStore(metadata).deleting():
        try:
            finished += await finish_delete(metadata, blobs, doc.registry)
        except Exception:  # one stuck registry must not stop the others; the next run tries again
            log.exception("could not finish deleting registry %s", doc.registry)
    return finished
