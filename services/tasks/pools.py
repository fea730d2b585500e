"""Agent pools (`registries/{r}/agentPools/{name}`): the rules of create, scale and delete, and the slots runs
wait for.

A pool is ACR's dedicated compute for runs: `count` instances of a tier (S1/S2/S3 standard, I6 isolated).
Here a pool is a concurrency limit, not machines: a run naming a pool waits in the queue until fewer than
`count` of the pool's runs hold a slot, then runs in the same runner as every other run (count 0 holds its
runs queued; raising it releases them). The slots are the pool document's `running` list, changed under its
ETag, so competing runners never run more than `count` at once. A slot held by a run that has ended (its
runner died) is taken back by the next runner that finds the pool full.

Limits, as ACR documents them: Premium registries only; Linux only; the registry's standard pools together
hold at most TASKS_POOL_VCPU_QUOTA vCPUs (count x the tier's vCPUs; ACR's default quota is 16) and its
isolated (I6) pools TASKS_POOL_ISOLATED_VCPU_QUOTA (ACR's default is 0: raised by a support request). At
most MAX_POOLS_PER_REGISTRY pools (ours: ACR documents none). `virtualNetworkSubnetResourceId` is stored and
shown; nothing here joins a virtual network.
"""

from __future__ import annotations

import re
from typing import Literal

from services.platform.cosmos import ConcurrentUpdate, Cosmos
from services.platform.settings import Settings
from services.tasks.models import (
    AGENT_POOL_NAME,
    POOL_TIER_CPUS,
    TERMINAL,
    AgentPoolBody,
    AgentPoolDoc,
    AgentPoolUpdate,
)
from services.tasks.store import AgentPoolStore, RunStore, agent_pool_doc_id

MAX_POOLS_PER_REGISTRY = 16
ISOLATED_TIERS = frozenset({"I6"})
_NAME = re.compile(AGENT_POOL_NAME)


class PoolInvalid(ValueError):
    def __init__(self, message: str, code: str = "InvalidRequestContent", status: int = 400, target: str = "") -> None:
        super().__init__(message)
        self.code, self.status, self.target = code, status, target


class PoolNotFound(LookupError):
    pass


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def vcpus(pool: AgentPoolDoc) -> int:
    return pool.count * POOL_TIER_CPUS[pool.tier]


def _check_quota(settings: Settings, pools: list[AgentPoolDoc], changed: AgentPoolDoc) -> None:
    """The registry's pools of the changed pool's kind (standard or isolated) within their vCPU quota."""
    isolated = changed.tier in ISOLATED_TIERS
    quota = settings.tasks_pool_isolated_vcpu_quota if isolated else settings.tasks_pool_vcpu_quota
    others = [p for p in pools if p.id != changed.id and (p.tier in ISOLATED_TIERS) == isolated]
    used = sum(vcpus(p) for p in others) + vcpus(changed)
    if used > quota:
        kind = "isolated" if isolated else "standard"
        raise PoolInvalid(
            f"{changed.count} {changed.tier} instances ({vcpus(changed)} vCPUs) would bring the registry's {kind} "
            f"agent pools to {used} vCPUs, over its quota of {quota}",
            "QuotaExceeded",
            target="properties.count",
        )


async def get_pool(metadata: Cosmos, registry: str, name: str) -> AgentPoolDoc | None:
    return await AgentPoolStore(metadata).get(registry, name) if valid_name(name) else None


async def require_pool(metadata: Cosmos, registry: str, name: str) -> AgentPoolDoc:
    pool = await get_pool(metadata, registry, name)
    if pool is None:
        raise PoolNotFound(name)
    return pool


async def list_pools(metadata: Cosmos, registry: str) -> list[AgentPoolDoc]:
    return await AgentPoolStore(metadata).list_pools(registry)


async def put_pool(
    metadata: Cosmos, settings: Settings, registry: str, sku: str, location: str, name: str, body: AgentPoolBody
) -> tuple[AgentPoolDoc, bool]:
    """Create the pool, or scale and retag an existing one (its tier, OS and subnet are fixed)."""
    if not valid_name(name):
        raise PoolInvalid("agent pool names have 3 to 20 letters, digits and hyphens", "InvalidResourceName")
    if sku != "Premium":
        raise PoolInvalid(
            "agent pools are only available for registries of the Premium tier; upgrade the registry first",
            "RegistrySkuNotSupported",
            target="sku",
        )
    store = AgentPoolStore(metadata)
    props = body.properties
    for _ in range(10):
        existing = await store.get(registry, name)
        pools = await store.list_pools(registry)
        if existing is None:
            if len(pools) >= MAX_POOLS_PER_REGISTRY:
                raise PoolInvalid(f"a registry has at most {MAX_POOLS_PER_REGISTRY} agent pools", "QuotaExceeded", 409)
            pool = AgentPoolDoc(
                id=agent_pool_doc_id(name),
                registry=registry,
                name=name,
                location=body.location or location,
                tags=body.tags or {},
                count=1 if props.count is None else props.count,
                tier=props.tier or "S1",
                virtualNetworkSubnetResourceId=props.virtualNetworkSubnetResourceId,
            )
            _check_quota(settings, pools, pool)
            if await store.create(pool):
                return pool, True
            continue
        for field, given in (
            ("tier", props.tier),
            ("virtualNetworkSubnetResourceId", props.virtualNetworkSubnetResourceId),
        ):
            if given is not None and given != getattr(existing, field):
                raise PoolInvalid(f"an agent pool's {field} cannot change", target=f"properties.{field}")
        if props.count is not None:
            existing.count = props.count
        if body.tags is not None:
            existing.tags = body.tags
        _check_quota(settings, pools, existing)
        try:
            return await store.replace(existing), False
        except ConcurrentUpdate:
            continue
    raise ConcurrentUpdate(name)


async def update_pool(
    metadata: Cosmos, settings: Settings, registry: str, name: str, update: AgentPoolUpdate
) -> AgentPoolDoc:
    """Scale (count) and retag; raising the count lets waiting runs start as their messages come round."""
    store = AgentPoolStore(metadata)
    for _ in range(10):
        pool = await require_pool(metadata, registry, name)
        if update.properties.count is not None:
            pool.count = update.properties.count
            _check_quota(settings, await store.list_pools(registry), pool)
        if update.tags is not None:
            pool.tags = update.tags
        try:
            return await store.replace(pool)
        except ConcurrentUpdate:
            continue  # a runner took or gave back a slot meanwhile
    raise ConcurrentUpdate(name)


WAITING: tuple[str, ...] = ("Queued",)
ACTIVE: tuple[str, ...] = ("Queued", "Started", "Running")


async def queued_runs(metadata: Cosmos, registry: str, pool: AgentPoolDoc) -> int:
    """ACR's listQueueStatus: the runs queued for the pool (not yet started)."""
    return await RunStore(metadata).count_in_pool(registry, pool.name, WAITING)


async def delete_pool(metadata: Cosmos, registry: str, name: str) -> bool:
    """Delete the pool; refused (409) while runs are queued for it or running in it: they would never run.
    Cancel them (or let them finish) first. False when there was no such pool."""
    pool = await get_pool(metadata, registry, name)
    if pool is None:
        return False
    active = await RunStore(metadata).count_in_pool(registry, pool.name, ACTIVE)
    if active:
        raise PoolInvalid(
            f"agent pool {pool.name} has {active} queued or running runs: cancel them or let them finish "
            "before deleting it",
            "AgentPoolInUse",
            409,
        )
    return await AgentPoolStore(metadata).delete(registry, pool.name)


async def resolve_pool(metadata: Cosmos, registry: str, name: str | None) -> str | None:
    """The pool a run request names, as the pool spells its name; PoolInvalid when the registry has none so
    named (a run for it would never start)."""
    if not name:
        return None
    pool = await get_pool(metadata, registry, name)
    if pool is None:
        raise PoolInvalid(f"agent pool {name!r} does not exist in this registry", target="agentPoolName")
    return pool.name


# --- slots (the runner) ----------------------------------------------------------------------------------
Slot = Literal["taken", "full", "gone"]


async def take_slot(metadata: Cosmos, registry: str, pool_name: str, run_id: str) -> Slot:
    """A slot of the pool for the run: "taken" (also when it holds one already), "full" (count runs hold
    one: the run waits) or "gone" (the pool was deleted)."""
    pools, runs = AgentPoolStore(metadata), RunStore(metadata)
    for _ in range(20):
        pool = await pools.get(registry, pool_name)
        if pool is None:
            return "gone"
        if run_id in pool.running:
            return "taken"
        holders = list(pool.running)
        if len(holders) >= pool.count:
            # slots of runs that ended without giving theirs back (their runner died) are taken back
            live = []
            for holder in holders:
                run = await runs.get(registry, holder)
                if run is not None and run.status not in TERMINAL:
                    live.append(holder)
            if len(live) >= pool.count:
                if len(live) < len(holders):
                    pool.running = live
                    try:
                        await pools.replace(pool)
                    except ConcurrentUpdate:
                        pass
                return "full"
            holders = live
        pool.running = [*holders, run_id]
        try:
            await pools.replace(pool)
        except ConcurrentUpdate:
            continue
        return "taken"
    return "full"


async def release_slot(metadata: Cosmos, registry: str, pool_name: str, run_id: str) -> None:
    pools = AgentPoolStore(metadata)
    for _ in range(20):
        pool = await pools.get(registry, pool_name)
        if pool is None or run_id not in pool.running:
            return
        pool.running = [r for r in pool.running if r != run_id]
        try:
            await pools.replace(pool)
            return
        except ConcurrentUpdate:
            continue
