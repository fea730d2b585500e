"""The rules of a registry's replications (ACR's geo-replication), free of I/O.

A Premium registry lives in its home region (the registry's `location`) and may have up to 50 replicas in
other Azure regions. The home region is itself a replication, named after its location, that always exists
and cannot be deleted. Each replication has ARM's `provisioningState` (Creating, Updating, Deleting,
Succeeded, Failed) and ACR's `status.displayStatus`:

    Ready     every image pushed so far is in the region
    Syncing   the region is catching up (a new replica being backfilled)
    Failed    the region could not be made (its storage refused)
    Disabled  the regional endpoint is disabled: reads are not routed there (content still syncs)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

DisplayStatus = Literal["Ready", "Syncing", "Failed", "Disabled"]
ZoneRedundancy = Literal["Enabled", "Disabled"]
REPLICATION_NAME = re.compile(r"[A-Za-z0-9]{5,50}")
MAX_TAGS = 50
# Replications a registry may have, its home region included (ACR's per-tier table).
REPLICATION_LIMITS: dict[str, int] = {"Basic": 1, "Standard": 1, "Premium": 50}

# Azure's public regions, as `az account list-locations` names them (ARM also accepts the display names,
# which normalize to these: "West Europe" -> "westeurope").
AZURE_REGIONS = frozenset(
    {
        "australiacentral", "australiacentral2", "australiaeast", "australiasoutheast", "austriaeast",
        "belgiumcentral", "brazilsouth", "brazilsoutheast", "canadacentral", "canadaeast", "centralindia",
        "centralus", "chilecentral", "eastasia", "eastus", "eastus2", "francecentral", "francesouth",
        "germanynorth", "germanywestcentral", "indonesiacentral", "israelcentral", "italynorth", "japaneast",
        "japanwest", "jioindiacentral", "jioindiawest", "koreacentral", "koreasouth", "malaysiawest",
        "mexicocentral", "newzealandnorth", "northcentralus", "northeurope", "norwayeast", "norwaywest",
        "polandcentral", "qatarcentral", "southafricanorth", "southafricawest", "southcentralus",
        "southeastasia", "southindia", "spaincentral", "swedencentral", "swedensouth", "switzerlandnorth",
        "switzerlandwest", "uaecentral", "uaenorth", "uksouth", "ukwest", "westcentralus", "westeurope",
        "westindia", "westus", "westus2", "westus3",
    }
)  # fmt: skip


class ReplicationInvalid(Exception):
    """The request asks for something the rules refuse: `code` is ARM's error code, `target` the field."""

    def __init__(self, message: str, code: str = "InvalidRequest", target: str = "", status: int = 400) -> None:
        super().__init__(message)
        self.code, self.target, self.status = code, target, status


def normalize_region(location: str) -> str:
    """ARM's spelling of a region: "West Europe" and "westeurope" are the same region."""
    return location.replace(" ", "").lower()


def check_region(location: str, available: frozenset[str] | None = None) -> str:
    """The region's normalized name, if it is an Azure region this deployment can serve."""
    region = normalize_region(location)
    if region not in AZURE_REGIONS or (available is not None and region not in available):
        offered = sorted(available if available is not None else AZURE_REGIONS)
        raise ReplicationInvalid(
            f"The provided location '{location[:64]}' is not available for resource type "
            f"'Microsoft.ContainerRegistry/registries/replications'. List of available regions for the resource "
            f"type is '{','.join(offered)}'.",
            "LocationNotAvailableForResourceType",
            "location",
        )
    return region


def check_name(name: str) -> None:
    if not REPLICATION_NAME.fullmatch(name):
        raise ReplicationInvalid(
            "Replication names may contain only alpha numeric characters and must be between 5 and 50 characters",
            "InvalidResourceName",
            "name",
        )


def check_tags(tags: dict[str, str] | None) -> None:
    if tags is not None and len(tags) > MAX_TAGS:
        raise ReplicationInvalid(f"at most {MAX_TAGS} tags are allowed", target="tags")


def check_may_replicate(sku: str, replications: int, limit: int) -> None:
    """A new replica needs the Premium tier and room under the tier's cap (the home region counts)."""
    if sku != "Premium":
        raise ReplicationInvalid(
            "Geo-replication is only available for registries of the Premium tier; upgrade the registry first",
            "RegistrySkuNotSupported",
            "sku",
        )
    if replications >= limit:
        raise ReplicationInvalid(
            f"the registry has {replications} replications, the most its tier allows ({limit})",
            "QuotaExceeded",
            status=409,
        )


@dataclass(frozen=True)
class StatusInputs:
    region_endpoint_enabled: bool
    provisioning_failed: bool
    syncing: bool


def display_status(inputs: StatusInputs) -> DisplayStatus:
    """ACR's status of a replication: a failed one is Failed, a disabled endpoint Disabled, a region that is
    still catching up Syncing, else Ready."""
    if inputs.provisioning_failed:
        return "Failed"
    if not inputs.region_endpoint_enabled:
        return "Disabled"
    if inputs.syncing:
        return "Syncing"
    return "Ready"
