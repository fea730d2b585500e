"""Which registry operations raise which events, as ACR does. Pure functions: no storage, no bus.

    manifest push with a tag          push (with the tag)
    push by digest, no tag            push (no tag)
    push by digest with ?tag=a&tag=b  one push per tag
    manifest delete (by digest)       delete (no tag)
    repository delete                 one delete per manifest
    tag delete only                   nothing in ACR; our own `untag` (webhooks opt in to it)

A manifest whose config is a Helm chart (`application/vnd.cncf.helm.config.v1+json`) raises the chart event
as well (`chart_push` / `chart_delete`), with the chart's name and version from its config blob.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.events.models import EventRequest, EventTarget, RegistryEvent

HELM_CONFIG_MEDIA_TYPE = "application/vnd.cncf.helm.config.v1+json"


@dataclass(frozen=True, slots=True)
class Chart:
    name: str
    version: str


@dataclass(frozen=True, slots=True)
class ManifestFacts:
    """What the events need to know of one manifest."""

    repository: str
    digest: str
    media_type: str
    size: int
    chart: Chart | None = None


def chart_from_config(config_media_type: str | None, config: bytes | None) -> Chart | None:
    """The chart a Helm config blob describes (Chart.yaml as JSON); None for anything else."""
    if config_media_type != HELM_CONFIG_MEDIA_TYPE or config is None:
        return None
    try:
        values = json.loads(config)
    except ValueError:
        return None
    if not isinstance(values, dict):
        return None
    name, version = values.get("name"), values.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        return None
    return Chart(name, version)


def request_info(headers: Mapping[str, str], method: str, request_id: str | None = None) -> EventRequest:
    """The `request` of an event: the call's id (new unless given), Host, method and User-Agent."""
    return EventRequest(
        id=request_id or str(uuid.uuid4()),
        host=headers.get("host", ""),
        method=method,
        useragent=headers.get("user-agent", ""),
    )


def push_events(manifest: ManifestFacts, tags: Iterable[str], request: EventRequest) -> list[RegistryEvent]:
    """One `push` per tag (one without a tag for a push by digest), and the chart events alongside."""
    tag_list: list[str | None] = list(tags) or [None]
    events: list[RegistryEvent] = []
    for tag in tag_list:
        target = EventTarget(
            mediaType=manifest.media_type,
            size=manifest.size,
            digest=manifest.digest,
            length=manifest.size,
            repository=manifest.repository,
            tag=tag,
        )
        events.append(RegistryEvent(action="push", target=target, request=request))
        if manifest.chart is not None:
            events.append(RegistryEvent(action="chart_push", target=_chart_target(manifest, tag)))
    return events


def delete_events(manifest: ManifestFacts, request: EventRequest) -> list[RegistryEvent]:
    """A deleted manifest: `delete` without a tag (and `chart_delete` for a chart)."""
    target = EventTarget(mediaType=manifest.media_type, digest=manifest.digest, repository=manifest.repository)
    events = [RegistryEvent(action="delete", target=target, request=request)]
    if manifest.chart is not None:
        events.append(RegistryEvent(action="chart_delete", target=_chart_target(manifest, None)))
    return events


def repository_delete_events(manifests: Iterable[ManifestFacts], request: EventRequest) -> list[RegistryEvent]:
    """A deleted repository: one `delete` per manifest it held."""
    return [event for manifest in manifests for event in delete_events(manifest, request)]


def untag_events(manifest: ManifestFacts, tag: str, request: EventRequest) -> list[RegistryEvent]:
    target = EventTarget(mediaType=manifest.media_type, digest=manifest.digest, repository=manifest.repository, tag=tag)
    return [RegistryEvent(action="untag", target=target, request=request)]


def _chart_target(manifest: ManifestFacts, tag: str | None) -> EventTarget:
    assert manifest.chart is not None
    return EventTarget(
        mediaType=manifest.media_type,
        size=manifest.size,
        digest=manifest.digest,
        repository=manifest.repository,
        tag=tag if tag is not None else manifest.chart.version,
        name=manifest.chart.name,
        version=manifest.chart.version,
    )
