"""The pull-time check of the registry's quarantine and vulnerability policies (services/scanning/quarantine.py
has the rules). It costs nothing while both policies are off: the registry document is already at hand,
and only with a policy on are the manifest (a pull by tag has read only its tag) and the scan state read."""

from __future__ import annotations

from services.auth.permissions import QUARANTINE_READ, QUARANTINE_WRITE
from services.registry.app import Call
from services.registry.errors import ErrorCode, RegistryError
from services.registry.store import ManifestDoc
from services.scanning import quarantine
from services.scanning.store import ScanStore


async def enforce_pull_policies(
    call: Call, repo: str, digest: str, manifest: ManifestDoc | None, tag: str | None
) -> None:
    """Refuse the pull of a quarantined image, or of one whose report breaks the vulnerability policy."""
    registry = call.registry
    quarantining = quarantine.quarantine_enabled(registry)
    policy = quarantine.vulnerability_policy(registry)
    if not quarantining and policy is None:
        return
    if quarantining:
        manifest = manifest or await call.api.artifacts.get_manifest(repo, digest)
        if manifest is not None:
            may = quarantine.may_read_quarantined(
                call.caller.identity.kind, call.caller.may(QUARANTINE_READ, call.name)
            )
            quarantine.check_quarantine(registry, manifest, tag, may)
    if policy is not None:
        scan = await ScanStore(call.api.metadata).get(repo, digest)
        quarantine.check_vulnerabilities(policy, call.name, scan)


def check_quarantine_writer(call: Call) -> None:
    """Setting quarantineState/quarantineDetails takes AcrQuarantineWriter (or the admin user)."""
    if not quarantine.may_read_quarantined(call.caller.identity.kind, call.caller.may(QUARANTINE_WRITE, call.name)):
        raise RegistryError(
            ErrorCode.DENIED,
            f"{quarantine.DISALLOWED} Setting the quarantine state takes the AcrQuarantineWriter role.",
            detail={"repository": call.name},
        )
