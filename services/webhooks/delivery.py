"""The webhook delivery worker: the consumer of the bus's `webhooks` subscription.

For each event, every enabled webhook of the registry whose actions and scope want it gets one delivery,
recorded in Cosmos DB (`delivery:<event id>` in the webhook's partition, kept 30 days): the record makes
delivery idempotent per (event, webhook), and each attempt (request, response, status, duration) is
appended to it, which is what `listEvents` shows. An attempt that fails on the network, or is answered
5xx, 429 or 408, is tried again after an exponential delay with jitter (or the receiver's `Retry-After`);
after `webhook_max_attempts` attempts, or a final 4xx answer, the delivery is dead-lettered and waits for
`redeliver`. Custom headers are secrets: the records keep them masked and nothing logs them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from services.events.models import EventMessage, RegistryEvent, event_timestamp, new_event_id
from services.platform.lifecycle import close_on_shutdown
from services.platform.metadata import ConcurrentUpdate, DeliveryDoc, MetadataStore, WebhookDoc
from services.platform.settings import Settings, get_settings
from services.webhooks import rules

log = logging.getLogger("webhooks")

RESPONSE_CONTENT_LIMIT = 4096
USER_AGENT = "acr-serverless-webhooks/1.0"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    record: dict[str, Any]
    status: int | None
    retry_after: float | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def delivery_key(registry: str, webhook: str) -> str:
    return f"{registry}/{webhook}"


def delivery_id(event_id: str, webhook: str) -> str:
    """Stable across retries and redeliveries, so receivers can drop duplicates by it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{event_id}/{webhook}"))


class WebhookDispatcher:
    def __init__(self, settings: Settings, metadata: MetadataStore | None = None) -> None:
        self._settings = settings
        self.metadata = metadata if metadata is not None else MetadataStore(settings)
        self._owns_metadata = metadata is None
        self._session: aiohttp.ClientSession | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:
            if self._session is None:
                if self._owns_metadata:
                    await self.metadata.open()
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds),
                    headers={"User-Agent": USER_AGENT},
                )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_metadata:
            await self.metadata.close()

    # --- the consumer ------------------------------------------------------------------------------
    async def handle_message(self, body: bytes | str) -> int:
        """One bus message (an `EventMessage`): deliver it to every webhook that wants it. Returns how many
        webhooks it was for."""
        await self.open()
        message = EventMessage.model_validate_json(body)
        webhooks = [
            hook
            for hook in await self.metadata.list_webhooks(message.registry)
            if rules.wants(hook.status, hook.actions, hook.scope, message.event)
        ]
        await asyncio.gather(*(self.deliver(hook, message.event) for hook in webhooks))
        return len(webhooks)

    async def deliver(self, webhook: WebhookDoc, event: RegistryEvent, redeliver: bool = False) -> DeliveryDoc:
        """Deliver one event to one webhook (at most once to a 2xx, unless `redeliver`)."""
        await self.open()
        key = delivery_key(webhook.registry, webhook.name)
        fresh = DeliveryDoc(id=f"delivery:{event.id}", webhook=key, eventId=event.id, event=event.payload())
        doc = await self.metadata.create_delivery(fresh)
        if doc is None:
            found = await self.metadata.get_delivery(key, event.id)
            if found is None:  # expired between the two calls
                return fresh
            doc = found
            if doc.state == "delivered" and not redeliver:
                return doc
            if doc.state == "deadlettered" and not redeliver:
                return doc
        return await self._attempts(webhook, doc, redeliver)

    async def _attempts(self, webhook: WebhookDoc, doc: DeliveryDoc, redeliver: bool) -> DeliveryDoc:
        settings = self._settings
        attempt = 0
        if redeliver:
            doc.state = "pending"
        while True:
            attempt += 1
            try:  # claim: whoever writes second loses, so two workers never both deliver
                doc = await self.metadata.replace_delivery(doc)
            except ConcurrentUpdate:
                log.info("delivery %s of %s is being handled elsewhere", doc.eventId, doc.webhook)
                return doc
            result = await self._post(webhook, doc.event, attempt)
            doc.attempts.append(result.record)
            if result.delivered:
                doc.state = "delivered"
            elif not rules.is_retryable(result.status) or attempt >= settings.webhook_max_attempts:
                doc.state = "deadlettered"
                log.warning(
                    "delivery of event %s to webhook %s dead-lettered after %d attempt(s) (last: %s)",
                    doc.eventId,
                    doc.webhook,
                    attempt,
                    result.status or result.record.get("error"),
                )
            if doc.state != "pending":
                try:
                    return await self.metadata.replace_delivery(doc)
                except ConcurrentUpdate:
                    return doc
            delay = rules.retry_delay(
                attempt,
                settings.webhook_backoff_base_seconds,
                settings.webhook_backoff_max_seconds,
                result.retry_after,
            )
            await asyncio.sleep(delay)

    # --- one HTTP attempt --------------------------------------------------------------------------
    async def _post(self, webhook: WebhookDoc, event: dict[str, Any], attempt: int) -> AttemptResult:
        assert self._session is not None
        if webhook.payloadFormat == "cloudevents":
            body = json.dumps(rules.cloudevent(webhook.registry, event)).encode()
            content_type = rules.CLOUDEVENTS_CONTENT_TYPE
        else:
            body = json.dumps(event).encode()
            content_type = "application/json"
        headers = {"Content-Type": content_type, **webhook.customHeaders}
        headers[rules.DELIVERY_HEADER] = delivery_id(str(event.get("id")), webhook.name)
        if webhook.signingSecret:
            headers[rules.SIGNATURE_HEADER] = rules.signature(webhook.signingSecret, int(time.time()), body)
        secret_names = [*webhook.customHeaders, rules.SIGNATURE_HEADER]
        record: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "attempt": attempt,
            "timestamp": event_timestamp(),
            "request": {
                "method": "POST",
                "requestUri": webhook.serviceUri,
                "version": "1.1",
                "headers": rules.masked_headers(headers, secret_names),
                "content": body.decode(),
            },
        }
        started = time.perf_counter()
        status: int | None = None
        retry_after: float | None = None
        try:
            await self._check_target(webhook.serviceUri)
            async with self._session.post(webhook.serviceUri, data=body, headers=headers) as response:
                content = await response.content.read(RESPONSE_CONTENT_LIMIT)
                status = response.status
                retry_after = rules.parse_retry_after(response.headers.get("Retry-After"))
                record["response"] = {
                    "statusCode": status,
                    "reasonPhrase": response.reason or "",
                    "version": f"{response.version.major}.{response.version.minor}" if response.version else "",
                    "headers": dict(response.headers),
                    "content": content.decode(errors="replace"),
                }
        except TargetRefused as exc:
            record["error"] = str(exc)
            record["refused"] = True
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"[:500]
        record["durationMs"] = round((time.perf_counter() - started) * 1000, 3)
        record["status"] = status
        if record.get("refused"):
            status = 403  # final: not retried
        return AttemptResult(record, status, retry_after)

    async def _check_target(self, uri: str) -> None:
        if self._settings.webhook_allow_private_targets:
            return
        parts = urlsplit(uri)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise TargetRefused(f"cannot resolve {host}: {exc}") from exc
        for info in infos:
            address = str(info[4][0])
            if rules.address_refused(address):
                raise TargetRefused(f"{host} resolves to {address}, a private or local address (refused)")

    # --- commands ----------------------------------------------------------------------------------
    async def ping(self, webhook: WebhookDoc) -> str:
        """POST a `ping` event once (recorded like any delivery); returns its event id."""
        await self.open()
        event_id = new_event_id()
        payload = {"id": event_id, "timestamp": event_timestamp(), "action": "ping"}
        key = delivery_key(webhook.registry, webhook.name)
        doc = DeliveryDoc(id=f"delivery:{event_id}", webhook=key, eventId=event_id, event=payload)
        result = await self._post(webhook, payload, 1)
        doc.attempts.append(result.record)
        doc.state = "delivered" if result.delivered else "deadlettered"
        await self.metadata.create_delivery(doc)
        return event_id

    async def redeliver(self, webhook: WebhookDoc, event_ids: list[str] | None = None) -> list[DeliveryDoc]:
        """Deliver again the dead-lettered deliveries of a webhook (or the events named)."""
        await self.open()
        key = delivery_key(webhook.registry, webhook.name)
        if event_ids is None:
            docs = await self.metadata.list_deliveries(key, state="deadlettered")
        else:
            found = [await self.metadata.get_delivery(key, event_id) for event_id in event_ids]
            docs = [doc for doc in found if doc is not None]
        results: list[DeliveryDoc] = []
        for doc in docs:
            if doc.event.get("action") == "ping":
                continue
            event = RegistryEvent.model_validate(doc.event)
            results.append(await self.deliver(webhook, event, redeliver=True))
        return results


class TargetRefused(Exception):
    """The service URI resolves to an address deliveries may not go to."""


_dispatcher: WebhookDispatcher | None = None


def webhook_dispatcher() -> WebhookDispatcher:
    """The process's one dispatcher (its clients keep connection pools)."""
    global _dispatcher
    if _dispatcher is None:
        _dispatcher = WebhookDispatcher(get_settings())
        close_on_shutdown(_dispatcher.close)
    return _dispatcher
