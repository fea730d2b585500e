"""The transactional outbox: events are committed with the change that raised them, published after it.

    change + outbox doc ──one transactional batch──> Cosmos DB (repository's partition)
    publish(outbox)     ──one message per event──>   the bus, then the outbox doc is marked and expires
    relay()             ──every few seconds──>       republishes outbox docs committed but still pending
                                                     (the process died, or the bus was down)

Publishing is at least once: an event may reach the bus twice (relay and a slow publisher), so consumers
are idempotent on the event id.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from services.events.models import EventMessage, RegistryEvent
from services.events.store import OutboxDoc, OutboxStore
from services.platform.bus import Bus, OutgoingMessage, open_bus
from services.platform.cosmos import Cosmos
from services.platform.settings import Settings
from services.platform.telemetry import telemetry

log = logging.getLogger("events")


def outbox_for(registry: str, repo: str, events: Sequence[RegistryEvent]) -> OutboxDoc | None:
    """The outbox document of a change's events (None when it raised none)."""
    if not events:
        return None
    return OutboxDoc(
        id=f"outbox:{uuid.uuid4()}",
        repo=repo,
        registry=registry,
        events=[event.payload() for event in events],
        traceparent=telemetry().traceparent(),
    )


def bus_message(registry: str, event: RegistryEvent, trace: Mapping[str, str] | None = None) -> OutgoingMessage:
    """The bus message of one event; `trace`: the properties that carry the trace context."""
    envelope = EventMessage(registry=registry, event=event)
    return OutgoingMessage(
        body=envelope.model_dump_json(exclude_none=True).encode(),
        message_id=event.id,
        properties={**envelope.properties(), **(trace or {})},
    )


class EventPublisher:
    """Puts committed outbox documents on the bus, and relays the ones left behind."""

    def __init__(self, settings: Settings, metadata: Cosmos, bus: Bus | None = None) -> None:
        self._settings = settings
        self._outbox = OutboxStore(metadata)
        self.bus = bus if bus is not None else open_bus(settings)

    async def open(self) -> None:
        await self.bus.open()

    async def close(self) -> None:
        await self.bus.close()

    async def publish(self, outbox: OutboxDoc | None) -> bool:
        """Publish every event of a committed outbox, then mark it. False (and logged) when the bus
        failed: the relay will publish it later."""
        if outbox is None:
            return True
        if self._settings.fault_kill_before_publish:
            # Tests only: die as a crash would, after the commit and before the publish.
            os.kill(os.getpid(), signal.SIGKILL)
        return await self._send(outbox)

    async def relay(self, now: datetime | None = None) -> int:
        """Publish outbox documents committed more than `outbox_relay_after_seconds` ago and still pending.
        Returns how many were published."""
        moment = now or datetime.now(UTC)
        before = moment - timedelta(seconds=self._settings.outbox_relay_after_seconds)
        cutoff = before.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        published = 0
        while True:
            pending = await self._outbox.pending_outbox(cutoff)
            if not pending:
                return published
            for outbox in pending:
                if not await self._send(outbox):
                    return published
                log.info("relayed %s (%d events)", outbox.id, len(outbox.events))
                published += 1

    async def _send(self, outbox: OutboxDoc) -> bool:
        attributes = {
            "messaging.system": "servicebus",
            "messaging.operation.type": "publish",
            "messaging.destination.name": self._settings.bus_topic,
            "messaging.batch.message_count": len(outbox.events),
        }
        try:
            with telemetry().producer_span(outbox.traceparent, attributes) as trace:
                for payload in outbox.events:
                    event = RegistryEvent.model_validate(payload)
                    await self.bus.publish(bus_message(outbox.registry, event, trace))
            await self._outbox.mark_outbox_published(outbox, self._settings.outbox_published_ttl_seconds)
        except Exception:
            log.exception("publishing %s failed; the outbox relay will retry it", outbox.id)
            return False
        return True
