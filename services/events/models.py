"""The event payloads, field for field as ACR sends them to webhooks (`push`, `delete`, `quarantine`,
`chart_push`, `chart_delete`), plus our own `untag`, and the envelope that carries one event on the bus.

ACR's shapes (see shared/design/acr-limits.md):

    push        {id, timestamp, action, target{mediaType, size, digest, length, repository, tag?}, request}
    delete      {id, timestamp, action, target{mediaType, digest, repository}, request}
    quarantine  the push shape with action "quarantine"
    chart_*     {id, timestamp, action, target{mediaType, size, digest, repository, tag, name, version}}
    untag       ours: the delete shape plus the tag (ACR raises nothing when only a tag is deleted)
    replicated  ours: an image reached a region of a geo-replicated registry: the push shape's target plus
                registry, region and lagMs (from the push being accepted to the copy being complete)

A geo-replicated registry also raises ACR's per-region `push`: the push shape plus `region`, once the image
is in that region, for the webhooks whose location is that region (services/replication/worker.py). Events
with a `region` are echoes of a push that was already handled: only webhooks act on them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EventAction = Literal["push", "delete", "quarantine", "chart_push", "chart_delete", "untag", "replicated"]
ACR_ACTIONS: tuple[EventAction, ...] = ("push", "delete", "quarantine", "chart_push", "chart_delete")
ALL_ACTIONS: tuple[EventAction, ...] = (*ACR_ACTIONS, "untag", "replicated")


def event_timestamp() -> str:
    """RFC 3339 in UTC with a `Z`, as ACR writes it."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_event_id() -> str:
    return str(uuid.uuid4())


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EventTarget(_Payload):
    mediaType: str
    size: int | None = None
    digest: str
    length: int | None = None
    repository: str
    tag: str | None = None
    name: str | None = None  # chart events: the chart's name
    version: str | None = None  # chart events: the chart's version


class EventRequest(_Payload):
    id: str
    host: str
    method: str
    useragent: str


class RegistryEvent(_Payload):
    id: str = Field(default_factory=new_event_id)
    timestamp: str = Field(default_factory=event_timestamp)
    action: EventAction
    target: EventTarget
    request: EventRequest | None = None
    # geo-replication (ours): the region a per-region push or a `replicated` event is about
    registry: str | None = None
    region: str | None = None
    lagMs: int | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON body ACR posts (absent fields omitted, as ACR omits them)."""
        return self.model_dump(exclude_none=True)


class EventMessage(_Payload):
    """One event on the bus: the ACR payload and the registry it happened in (the payload does not say)."""

    registry: str
    event: RegistryEvent

    def properties(self) -> dict[str, str]:
        """Application properties that subscriptions may filter on."""
        properties = {
            "action": self.event.action,
            "registry": self.registry,
            "repository": self.event.target.repository,
            "mediaType": self.event.target.mediaType,
        }
        if self.event.region is not None:
            properties["region"] = self.event.region
        return properties
