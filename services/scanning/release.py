"""Setting an image's quarantine state: by the scanner when its scan ends, and by an AcrQuarantineWriter
through `PATCH /acr/v1/<name>/_manifests/<digest>`. A release (held -> Passed) raises the image's `push`
events, once: the state change and the outbox are one batch under the manifest's ETag."""

from __future__ import annotations

from services.events.models import EventRequest
from services.events.outbox import EventPublisher
from services.events.store import OutboxDoc
from services.management.store import RegistryDoc
from services.platform.cosmos import ConcurrentUpdate, utcnow
from services.registry.store import ArtifactStore, ManifestDoc
from services.scanning import quarantine

ATTEMPTS = 8


async def release_outbox_for(
    artifacts: ArtifactStore,
    registry: RegistryDoc,
    repository: str,
    before: ManifestDoc,
    new_state: str | None,
    request: EventRequest,
) -> OutboxDoc | None:
    """The outbox of the `push` events a change of state raises (None unless it releases the image)."""
    enabled = quarantine.quarantine_enabled(registry)
    if not enabled or not quarantine.held(before.quarantineState) or quarantine.held(new_state) or new_state is None:
        return None
    tags = sorted(tag.name for tag in await artifacts.tags_of(before.repo, before.digest))
    return quarantine.release_outbox(registry.registry, repository, before, new_state, tags, request, enabled)


async def set_quarantine_state(
    artifacts: ArtifactStore,
    publisher: EventPublisher,
    registry: RegistryDoc,
    repository: str,
    repo: str,
    digest: str,
    state: str,
    details: str,
    request: EventRequest,
) -> ManifestDoc | None:
    """Set the state (and details) unless the image is gone; publish the release's events."""
    for _ in range(ATTEMPTS):
        doc = await artifacts.get_manifest(repo, digest)
        if doc is None:
            return None
        if (doc.quarantineState, doc.quarantineDetails) == (state, details):
            return doc
        outbox = await release_outbox_for(artifacts, registry, repository, doc, state, request)
        doc.quarantineState, doc.quarantineDetails, doc.updated = state, details, utcnow()
        try:
            await artifacts.replace_manifest(doc, outbox)
        except ConcurrentUpdate:
            continue
        await publisher.publish(outbox)
        return doc
    raise ConcurrentUpdate(f"quarantine state of {digest}")
