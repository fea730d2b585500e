"""`PUT`/`GET`/`HEAD`/`DELETE /v2/<name>/manifests/<reference>`, by tag or by digest.

PUT validates the manifest (`manifest.parse_manifest`), checks that everything it references is in the
repository, stores its bytes content-addressed, then commits the manifest document, its tags and the outbox
of the events it raises (`services/events/actions.py`) in one transactional batch, then publishes the
events. HEAD by tag is one point read (the tag document carries digest, type and size, and its read lock).

Locks (services/registry/locks.py): a push is refused while the repository, the manifest or a tag it names
is write-locked, a pull while the repository or the tag (by tag) or manifest (by digest) is read-locked, and
deletes go through services/registry/changes.py, which checks theirs.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from azure.core.exceptions import ResourceNotFoundError
from starlette.requests import Request
from starlette.responses import Response

from services.events.actions import ManifestFacts, chart_from_config, push_events, request_info
from services.events.models import EventRequest
from services.events.outbox import outbox_for
from services.platform.cosmos import ConcurrentUpdate, utcnow
from services.registry import changes, locks
from services.registry.app import Call
from services.registry.collector import keep_blob, still_pinned
from services.registry.errors import ErrorCode, RegistryError
from services.registry.ledger import StoredBlobDoc, fence_write
from services.registry.locks import ChangeableAttributes
from services.registry.manifest import ParsedManifest, parse_manifest
from services.registry.manifest_facts import image_size, index_references, platform_from_config, wants_config
from services.registry.reference import Reference, is_tag
from services.registry.store import ManifestDoc, RepositoryDoc, TagDoc, repo_key
from services.scanning.admission import enforce_pull_policies
from services.scanning.quarantine import hold_on_push, quarantine_events

MAX_TAGS_PER_PUSH = 50  # one transactional batch holds at most 100 operations
# Point reads one push has in flight while it checks what its manifest references: enough to hide the
# latency of a read, few enough that one push cannot crowd out everyone else's requests to Cosmos DB.
REFERENCE_CHECKS_AT_ONCE = 16

T = TypeVar("T")


async def _read_manifest_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise _too_large(limit)
    return bytes(data)


def _too_large(limit: int) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_TOO_LARGE, f"manifests may be at most {limit} bytes")


def _manifest_headers(digest: str, media_type: str, size: int) -> dict[str, str]:
    return {
        "Docker-Content-Digest": digest,
        "Content-Type": media_type,
        "Content-Length": str(size),
        "ETag": f'"{digest}"',
    }


async def _resolve(call: Call) -> tuple[str, str, int]:
    """(digest, media type, size) of the manifest the reference names: one point read (from the read cache,
    as are the repository's attributes: services/platform/readcache.py), then the read locks: the tag's for
    a pull by tag, the manifest's for a pull by digest (ACR keeps tag and manifest attributes apart), the
    repository's for both."""
    reference = Reference.parse(call.reference)
    repo = repo_key(call.registry.registry, call.name)
    if reference.tag is not None:
        tag = await call.api.artifacts.get_tag(repo, reference.tag, cached=True)
        if tag is None:
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"tag": reference.tag})
        await _check_read(call, tag.changeableAttributes, {"tag": reference.tag})
        await enforce_pull_policies(call, repo, tag.digest, None, reference.tag)  # quarantine, vulnerabilities
        return tag.digest, tag.mediaType, tag.size
    assert reference.digest is not None
    doc = await call.api.artifacts.get_manifest(repo, str(reference.digest), cached=True)
    if doc is None:
        raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"digest": str(reference.digest)})
    await _check_read(call, doc.changeableAttributes, {"digest": doc.digest})
    await enforce_pull_policies(call, repo, doc.digest, doc, None)  # quarantine, vulnerabilities
    return doc.digest, doc.mediaType, doc.size


async def _check_read(call: Call, attributes: ChangeableAttributes, what: dict[str, str]) -> None:
    repository = await call.api.artifacts.repository_attributes(call.registry.registry, call.name)
    locks.check_read(call.name, repository, attributes, what)


async def head_manifest(call: Call) -> Response:
    digest, media_type, size = await _resolve(call)
    return Response(status_code=200, headers=_manifest_headers(digest, media_type, size))


async def get_manifest(call: Call) -> Response:
    digest, media_type, size = await _resolve(call)
    registry = call.registry.registry
    data = call.api.manifests.get(registry, digest)
    if data is None:
        doc = await call.api.artifacts.get_manifest(repo_key(registry, call.name), digest)
        data = doc.inline_content() if doc is not None else None
        if data is None:
            data = await call.api.blobs.read_all(registry, digest)
        call.api.manifests.put(registry, digest, data)
    return Response(content=data, status_code=200, headers=_manifest_headers(digest, media_type, size))


async def put_manifest(call: Call) -> Response:
    settings = call.api.settings
    reference = Reference.parse(call.reference, writing=True)  # a malformed tag here is 400 TAG_INVALID
    data = await _read_manifest_body(call.request, settings.max_manifest_bytes)
    algorithm = reference.digest.algorithm if reference.digest else "sha256"
    manifest = parse_manifest(
        data, call.request.headers.get("content-type"), algorithm, max_descriptors=settings.max_manifest_descriptors
    )
    if reference.digest is not None and reference.digest != manifest.digest:
        raise RegistryError(
            ErrorCode.DIGEST_INVALID,
            f"the manifest's digest is {manifest.digest}, not {reference.digest}",
            detail={"digest": str(reference.digest)},
        )
    tags = _tags_of(call, reference)
    registry = call.registry.registry
    repo = repo_key(registry, call.name)
    # The garbage collector's fence is read before the links are checked, and the commit requires it
    # unchanged: a link deleted in between makes the commit fail (services/registry/collector.py).
    fence = await call.api.ledger.fence_epoch(repo)
    await _check_references(call, repo, manifest)

    digest = str(manifest.digest)
    config = await _config_of(call, manifest)
    chart = chart_from_config(manifest.config.media_type, config) if manifest.config is not None else None
    architecture, os_name = platform_from_config(config) if wants_config(manifest) else (None, None)
    inline = len(data) <= settings.inline_manifest_bytes
    pinned: StoredBlobDoc | None = None

    async def store_bytes() -> None:
        await call.api.blobs.put(registry, digest, data)

    if not inline:
        await store_bytes()
        pinned = await keep_blob(
            call.api.ledger, registry, digest, len(data), link=None, rewrite=store_bytes, wrote=True
        )
    facts = ManifestFacts(call.name, digest, manifest.media_type, manifest.size, chart)
    # Locks are checked on what is there now, and the batch writes only if that still holds (store.py: it
    # patches only what is not write-locked, creates only what is not there): otherwise ConcurrentUpdate, and
    # the push looks again.
    for attempt in range(changes.ATTEMPTS):
        if attempt:  # the commit lost a race: perhaps against the collector, so check the links again
            fence = await call.api.ledger.fence_epoch(repo)
            await _check_references(call, repo, manifest)
        repository, existing, olds = await _current(call, repo, digest, tags)
        locks.check_push(
            call.name,
            repository.changeableAttributes,
            digest,
            existing.changeableAttributes if existing is not None else None,
            [(tag, old.changeableAttributes if old is not None else None) for tag, old in zip(tags, olds, strict=True)],
        )
        now = utcnow()
        doc = ManifestDoc(
            id=f"manifest:{digest}",
            repo=repo,
            digest=digest,
            mediaType=manifest.media_type,
            size=manifest.size,
            artifactType=manifest.artifact_type,
            subject=str(manifest.subject.digest) if manifest.subject else None,
            referrer=manifest.referrer_descriptor() if manifest.subject else None,
            configMediaType=manifest.config.media_type if manifest.config else None,
            chartName=chart.name if chart else None,
            chartVersion=chart.version if chart else None,
            blobs=[str(d.digest) for d in manifest.required_blobs],
            children=[str(d.digest) for d in manifest.manifests],
            content=base64.b64encode(data).decode() if inline else None,
            created=existing.created if existing is not None else now,
            updated=now,
            imageSize=image_size(manifest),
            architecture=architecture,
            os=os_name,
            references=index_references(manifest),
        )
        if existing is not None:  # a push again: the attributes and quarantine state stay as they were
            doc.changeableAttributes = existing.changeableAttributes
            doc.quarantineState, doc.quarantineDetails = existing.quarantineState, existing.quarantineDetails
            doc.etag = existing.etag
        held = hold_on_push(call.registry, doc)  # quarantinePolicy: a new image waits for its scan
        tag_docs = []
        for tag, old in zip(tags, olds, strict=True):
            tag_doc = TagDoc(
                id=f"tag:{tag}",
                repo=repo,
                name=tag,
                digest=digest,
                mediaType=manifest.media_type,
                size=manifest.size,
                updated=now,
                created=old.created_time if old is not None else now,
            )
            if old is not None:  # a tag moved keeps its attributes (a write-locked one never gets here)
                tag_doc.changeableAttributes, tag_doc.etag = old.changeableAttributes, old.etag
            tag_docs.append(tag_doc)
        outbox = outbox_for(registry, repo, quarantine_events(push_events(facts, tags, _event_request(call)), held))
        try:
            await call.api.artifacts.commit_manifest(doc, tag_docs, outbox, fence_write(repo, fence))
        except ConcurrentUpdate:
            continue
        break
    else:
        raise changes.contended(f"manifest {digest}")
    if pinned is not None:
        await still_pinned(call.api.ledger, pinned, store_bytes)
    await call.api.events.publish(outbox)
    call.api.manifests.put(registry, digest, data)
    headers = {"Location": f"/v2/{call.name}/manifests/{digest}", "Docker-Content-Digest": digest}
    if manifest.subject is not None:
        headers["OCI-Subject"] = str(manifest.subject.digest)
    return Response(status_code=201, headers=headers | {"Content-Length": "0"})


async def _config_of(call: Call, manifest: ParsedManifest) -> bytes | None:
    """The config blob, read once at push, when something is taken from it: a Helm chart's name and version
    (for its events), an image's architecture and os (for /acr/v1); None otherwise."""
    if manifest.config is None or not (manifest.is_helm_chart or wants_config(manifest)):
        return None
    try:
        return await call.api.blobs.read_all(call.registry.registry, str(manifest.config.digest))
    except ResourceNotFoundError:
        return None  # linked but not in storage: the push stands, the platform is left unknown


async def _current(
    call: Call, repo: str, digest: str, tags: list[str]
) -> tuple[RepositoryDoc, ManifestDoc | None, list[TagDoc | None]]:
    """The repository (created if new), the manifest and each tag as they are now, read together."""
    store = call.api.artifacts
    registry = call.registry.registry

    async def repository() -> RepositoryDoc:
        return await store.get_repository(registry, call.name) or await store.create_repository(registry, call.name)

    def read(tag: str) -> Callable[[], Awaitable[TagDoc | None]]:
        return lambda: store.get_tag(repo, tag)

    reads = [read(tag) for tag in tags]
    found, existing, olds = await asyncio.gather(
        repository(), store.get_manifest(repo, digest), gather_bounded(reads, REFERENCE_CHECKS_AT_ONCE)
    )
    return found, existing, olds


def _event_request(call: Call) -> EventRequest:
    return request_info(call.request.headers, call.request.method)


def _tags_of(call: Call, reference: Reference) -> list[str]:
    """The tag in the path, or the `?tag=` parameters of a push by digest (multi-tag push)."""
    tags = [reference.tag] if reference.tag is not None else []
    for tag in call.request.query_params.getlist("tag"):
        if not is_tag(tag):
            raise RegistryError(ErrorCode.TAG_INVALID, f"{tag!r} is not a valid tag", detail={"tag": tag})
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS_PER_PUSH:
        raise RegistryError(ErrorCode.TAG_INVALID, f"at most {MAX_TAGS_PER_PUSH} tags per push")
    return tags


def unique_references(manifest: ParsedManifest) -> tuple[list[str], list[str]]:
    """(blobs, child manifests) the manifest needs in the repository, each digest once, in first-listed order."""
    blobs = dict.fromkeys(str(d.digest) for d in manifest.required_blobs)
    children = dict.fromkeys(str(d.digest) for d in manifest.manifests)
    return list(blobs), list(children)


async def gather_bounded(calls: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """The results of `calls`, in order, with at most `limit` of them running at once; the first failure
    cancels the rest and is raised as it is (no ExceptionGroup: the error handling above expects it)."""
    pending = iter(range(len(calls)))
    results: dict[int, T] = {}

    async def worker() -> None:
        for index in pending:  # shared: each index is taken by one worker
            results[index] = await calls[index]()

    workers = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(calls)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        raise
    return [results[index] for index in range(len(calls))]


async def _check_references(call: Call, repo: str, manifest: ParsedManifest) -> None:
    """Every blob and child manifest the manifest names must already be in the repository."""
    metadata = call.api.artifacts
    blobs, children = unique_references(manifest)
    checks: list[Callable[[], Awaitable[object | None]]] = [
        *(lambda digest=digest: metadata.get_blob_link(repo, digest) for digest in blobs),
        *(lambda digest=digest: metadata.get_manifest(repo, digest) for digest in children),
    ]
    found = await gather_bounded(checks, REFERENCE_CHECKS_AT_ONCE)
    missing = [digest for digest, doc in zip([*blobs, *children], found, strict=True) if doc is None]
    if missing:
        raise RegistryError(
            ErrorCode.MANIFEST_BLOB_UNKNOWN,
            f"the manifest references {len(missing)} blob(s) or manifest(s) the repository does not have",
            detail={"digests": missing},
        )


async def delete_manifest(call: Call) -> Response:
    """By tag: remove only the tag (raises our `untag`, no ACR `delete`). By digest: remove the manifest
    and every tag pointing at it (raises `delete`). Both refused while locked (services/registry/locks.py)."""
    reference = Reference.parse(call.reference)
    if reference.tag is not None:
        tag = reference.tag
        await changes.untag(call, tag, lambda: RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"tag": tag}))
        return Response(status_code=202)
    digest = str(reference.digest)
    await changes.delete_manifest(
        call, digest, lambda: RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"digest": digest})
    )
    return Response(status_code=202)
