"""A registry's replications as resources: list, read, create, update, delete, with the rules of
rules.py. The management API (services/management/replications_api.py) and the worker go through these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.management.store import RegistryDoc, RegistryStore
from services.platform.cosmos import ConcurrentUpdate, Cosmos, utcnow
from services.platform.settings import Settings
from services.replication import rules
from services.replication.store import ReplicationDoc, ReplicationStore, replication_id


class ReplicationNotFound(LookupError):
    pass


def _changed_meanwhile() -> rules.ReplicationInvalid:
    message = "the replication was changed meanwhile; read it again and retry"
    return rules.ReplicationInvalid(message, "Conflict", status=409)


@dataclass(frozen=True, slots=True)
class ReplicationChanges:
    """What a PUT or PATCH gives; None leaves a setting as it is (or its default on create)."""

    location: str | None = None
    tags: dict[str, str] | None = None
    region_endpoint_enabled: bool | None = None
    zone_redundancy: Literal["Enabled", "Disabled"] | None = None


def home_replication(registry: RegistryDoc) -> ReplicationDoc:
    """The home region's replication as it is before anyone changes it."""
    return ReplicationDoc(
        id=replication_id(registry.location),
        registry=registry.registry,
        name=registry.location,
        location=registry.location,
        home=True,
        zoneRedundancy=registry.zoneRedundancy,
        created=registry.created,
        statusTimestamp=registry.created,
    )


async def list_replications(metadata: Cosmos, registry: RegistryDoc) -> list[ReplicationDoc]:
    """Every region of the registry, the home region first; none below the Premium tier."""
    if registry.sku != "Premium":
        return []
    stored = await ReplicationStore(metadata).in_registry(registry.registry)
    home = next((doc for doc in stored if doc.home), None) or home_replication(registry)
    return [home, *(doc for doc in stored if not doc.home)]


async def get_replication(metadata: Cosmos, registry: RegistryDoc, name: str) -> ReplicationDoc:
    for doc in await list_replications(metadata, registry):
        if doc.id == replication_id(name):
            return doc
    raise ReplicationNotFound(name)


async def put_replication(
    metadata: Cosmos,
    registry: RegistryDoc,
    name: str,
    changes: ReplicationChanges,
    available: frozenset[str] | None = None,
    syncing: bool = False,
) -> tuple[ReplicationDoc, bool]:
    """Create the replication (or replace what a PUT may change of an existing one); returns it and whether
    it is new. `available`: the regions this deployment has storage for (None: any Azure region)."""
    rules.check_name(name)
    rules.check_tags(changes.tags)
    location = rules.check_region(changes.location or "", available)
    existing = await list_replications(metadata, registry)
    found = next((doc for doc in existing if doc.id == replication_id(name)), None)
    if found is not None:
        if found.location != location:
            raise rules.ReplicationInvalid(
                f"The replication '{name}' already exists in location '{found.location}'.",
                "InvalidResourceLocation",
                "location",
            )
        return await update_replication(metadata, registry, name, changes), False
    if location != registry.location and (registry.policies.get("softDeletePolicy") or {}).get("status") == "enabled":
        raise rules.ReplicationInvalid(
            "the soft delete policy does not support geo-replicated registries (ACR's rule): disable it first",
            target="location",
        )
    rules.check_may_replicate(registry.sku, len(existing), rules.REPLICATION_LIMITS[registry.sku])
    same_place = next((doc for doc in existing if doc.location == location), None)
    if same_place is not None:
        raise rules.ReplicationInvalid(
            f"the registry already has a replication in {location}: '{same_place.name}'", "Conflict", status=409
        )
    doc = ReplicationDoc(
        id=replication_id(name),
        registry=registry.registry,
        name=name,
        location=location,
        tags=dict(changes.tags or {}),
        regionEndpointEnabled=True if changes.region_endpoint_enabled is None else changes.region_endpoint_enabled,
        zoneRedundancy=changes.zone_redundancy or "Disabled",
        syncing=syncing,  # content pushed before it existed is still to come (services/replication/backfill.py)
    )
    created = await ReplicationStore(metadata).create(doc)
    if created is None:  # another PUT of the same name won the race: answer as for an existing one
        return await update_replication(metadata, registry, name, changes), False
    return created, True


async def update_replication(
    metadata: Cosmos, registry: RegistryDoc, name: str, changes: ReplicationChanges
) -> ReplicationDoc:
    """Change tags and the regional endpoint (zone redundancy is chosen when the replication is made)."""
    rules.check_tags(changes.tags)
    doc = await get_replication(metadata, registry, name)
    if doc.provisioningState == "Deleting":
        raise ReplicationNotFound(name)
    if changes.zone_redundancy is not None and changes.zone_redundancy != doc.zoneRedundancy:
        raise rules.ReplicationInvalid(
            "zone redundancy is chosen when a replication is created and cannot be changed",
            target="properties.zoneRedundancy",
        )
    changed = doc.model_copy(deep=True)
    if changes.tags is not None:
        changed.tags = dict(changes.tags)
    if changes.region_endpoint_enabled is not None and changes.region_endpoint_enabled != doc.regionEndpointEnabled:
        changed.regionEndpointEnabled = changes.region_endpoint_enabled
        changed.statusTimestamp = utcnow()
    store = ReplicationStore(metadata)
    if doc.etag is None:  # the home region, changed for the first time
        created = await store.create(changed)
        if created is None:
            raise _changed_meanwhile()
        return created
    try:
        return await store.replace(changed)
    except ConcurrentUpdate as error:
        raise _changed_meanwhile() from error


async def begin_delete(metadata: Cosmos, registry: RegistryDoc, name: str, operation: str) -> ReplicationDoc:
    """Mark a replica Deleting (reads stop going there at once); the home region cannot be deleted."""
    doc = await get_replication(metadata, registry, name)
    if doc.home:
        raise rules.ReplicationInvalid(
            f"'{doc.name}' is the registry's home region ({doc.location}); its replication cannot be deleted",
            "CannotDeleteHomeReplication",
            "name",
        )
    if doc.provisioningState == "Deleting":
        return doc
    doc.provisioningState, doc.deleteOperation, doc.statusTimestamp = "Deleting", operation, utcnow()
    try:
        return await ReplicationStore(metadata).replace(doc)
    except ConcurrentUpdate as error:
        raise _changed_meanwhile() from error


async def remote_regions(metadata: Cosmos, settings: Settings, registry: str) -> frozenset[str]:
    """The registry's regions (not being deleted) whose storage is not this instance's: where a push made here
    still has to travel. Empty for a deployment of one region."""
    doc = await RegistryStore(metadata).get_registry(registry)
    if doc is None or not settings.region_storage:
        return frozenset()
    home = rules.normalize_region(settings.region)
    accounts = settings.region_accounts()
    return frozenset(
        r.location
        for r in await list_replications(metadata, doc)
        if r.provisioningState != "Deleting" and r.location in accounts and accounts[r.location] != accounts.get(home)
    )


def status_of(doc: ReplicationDoc) -> rules.DisplayStatus:
    return rules.display_status(
        rules.StatusInputs(
            region_endpoint_enabled=doc.regionEndpointEnabled,
            provisioning_failed=doc.failed,
            syncing=doc.syncing,
        )
    )
