"""The webhook delivery worker: the consumer of the bus's `webhooks` subscription.

For each event, every enabled webhook of the registry whose actions and scope want it gets one delivery,
recorded in Cosmos DB (`delivery:<event id>` in the webhook's partition, kept 30 days): the record makes
delivery idempotent per (event, webhook), and each attempt (request, response, status, duration) is
appended to it, which is what `listEvents` shows. An attempt that fails on the network, or is answered
5xx, 429 or 408, is tried again after an exponential delay with jitter (or the receiver's `Retry-After`);
after `webhook_max_attempts` attempts, or a final 4xx answer, the delivery is dead-lettered and waits for
`redeliver`. Custom headers are secrets: the records keep them masked and nothing logs them.

A webhook's owner chooses where it points, so a delivery must not become a way into the service's network:
redirects are never followed (a 3xx is a failed attempt), every address a service URI resolves to is
checked and the connection goes to an address that was checked (the connector's own resolver does the
check, so there is no second lookup for DNS rebinding to answer differently), and a failed attempt records
only its status and timing, never what the target answered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from services.events.models import EventMessage, RegistryEvent, event_timestamp, new_event_id
from services.platform.cosmos import ConcurrentUpdate, Cosmos
from services.platform.lifecycle import close_on_shutdown
from services.platform.readcache import ReadCache, process_marks
from services.platform.settings import Settings, get_settings
from services.platform.telemetry import telemetry
from services.replication.resources import remote_regions
from services.webhooks import resources, rules
from services.webhooks.store import DeliveryDoc, WebhookDoc, WebhookStore, webhooks_partition

log = logging.getLogger("webhooks")

RESPONSE_CONTENT_LIMIT = 4096
# Of a successful answer, listEvents shows these headers only (nothing that maps the receiver's internals).
SHOWN_RESPONSE_HEADERS = frozenset({"content-type", "content-length", "date"})
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
    def __init__(self, settings: Settings, metadata: Cosmos | None = None) -> None:
        self._settings = settings
        self.metadata = metadata if metadata is not None else Cosmos(settings)
        self._owns_metadata = metadata is None
        self.store = WebhookStore(self.metadata)
        # The webhooks of each registry, as last read (every event needs them): never stale for changes
        # made through this instance, at most READ_CACHE_SECONDS for another instance's.
        self._webhooks: ReadCache[list[WebhookDoc]] = ReadCache(process_marks(), settings.read_cache_seconds, 1024)
        self._session: aiohttp.ClientSession | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:
            if self._session is None:
                if self._owns_metadata:
                    await self.metadata.open()
                resolver = CheckedResolver(aiohttp.ThreadedResolver(), self._settings.webhook_allow_private_targets)
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False),
                    timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds),
                    headers={"User-Agent": USER_AGENT},
                    trust_env=False,  # never through a proxy from the environment: the checked address is the peer
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
        every = await self._webhooks.get(
            webhooks_partition(message.registry), "", lambda: resources.webhooks_of(self.metadata, message.registry)
        )
        webhooks = [hook for hook in every if rules.wants(hook.status, hook.actions, hook.scope, message.event)]
        if webhooks and self._settings.region_storage:  # geo-replicated: regional webhooks (rules.in_region)
            remote = await remote_regions(self.metadata, self._settings, message.registry)
            webhooks = [hook for hook in webhooks if rules.in_region(hook.location, message.event, remote)]
        await asyncio.gather(*(self.deliver(hook, message.event) for hook in webhooks))
        return len(webhooks)

    async def deliver(self, webhook: WebhookDoc, event: RegistryEvent, redeliver: bool = False) -> DeliveryDoc:
        """Deliver one event to one webhook (at most once to a 2xx, unless `redeliver`)."""
        await self.open()
        key = delivery_key(webhook.registry, webhook.name)
        fresh = DeliveryDoc(id=f"delivery:{event.id}", webhook=key, eventId=event.id, event=event.payload())
        doc = await self.store.create_delivery(fresh)  # made now: it is ours (the create is the claim)
        claimed = doc is not None
        if doc is None:
            found = await self.store.get_delivery(key, event.id)
            if found is None:  # expired between the two calls
                return fresh
            doc = found
            if doc.state == "delivered" and not redeliver:
                return doc
            if doc.state == "deadlettered" and not redeliver:
                return doc
        with telemetry().span("webhook delivery", {"webhook.name": webhook.name, "event.action": event.action}):
            return await self._attempts(webhook, doc, redeliver, claimed)

    async def _attempts(
        self, webhook: WebhookDoc, doc: DeliveryDoc, redeliver: bool, claimed: bool = False
    ) -> DeliveryDoc:
        settings = self._settings
        attempt = 0
        if redeliver:
            doc.state = "pending"
        while True:
            attempt += 1
            try:  # claim: whoever writes second loses, so two workers never both deliver
                if not (claimed and attempt == 1):
                    doc = await self.store.replace_delivery(doc)
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
                    return await self.store.replace_delivery(doc)
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
        own = {"Content-Type": content_type, rules.DELIVERY_HEADER: delivery_id(str(event.get("id")), webhook.name)}
        if (traceparent := telemetry().traceparent()) is not None:  # the receiver may continue the trace
            own["traceparent"] = traceparent
        if webhook.signingSecret:
            own[rules.SIGNATURE_HEADER] = rules.signature(webhook.signingSecret, int(time.time()), body)
        headers = rules.delivery_headers(webhook.customHeaders, own)
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
            self._check_literal_target(webhook.serviceUri)
            async with self._session.post(
                webhook.serviceUri, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = rules.parse_retry_after(response.headers.get("Retry-After"))
                record["response"] = {"statusCode": status}
                if 200 <= status < 300:  # what the owner's own receiver said; a failure shows nothing of it
                    content = await response.content.read(RESPONSE_CONTENT_LIMIT)
                    record["response"] |= {
                        "reasonPhrase": response.reason or "",
                        "version": f"{response.version.major}.{response.version.minor}" if response.version else "",
                        "headers": {k: v for k, v in response.headers.items() if k.lower() in SHOWN_RESPONSE_HEADERS},
                        "content": content.decode(errors="replace"),
                    }
        except TargetRefused as exc:
            record["error"] = str(exc)
            record["refused"] = True
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, TargetRefused):
                record["error"], record["refused"] = str(exc.os_error), True
            else:
                record["error"] = "the connection to the service URI failed"
        except TimeoutError:
            record["error"] = "the service URI did not answer in time"
        except (aiohttp.ClientError, OSError):
            record["error"] = "the request to the service URI failed"
        record["durationMs"] = round((time.perf_counter() - started) * 1000, 3)
        record["status"] = status
        if record.get("refused"):
            status = 403  # final: not retried
        return AttemptResult(record, status, retry_after)

    def _check_literal_target(self, uri: str) -> None:
        """An address written in the URI is connected to without any lookup: check it here (names are
        checked by the connector's resolver, `CheckedResolver`)."""
        if self._settings.webhook_allow_private_targets:
            return
        host = (urlsplit(uri).hostname or "").strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return
        if rules.address_refused(host):
            raise TargetRefused(f"{host} is a private or local address (refused)")

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
        await self.store.create_delivery(doc)
        return event_id

    async def redeliver(self, webhook: WebhookDoc, event_ids: list[str] | None = None) -> list[DeliveryDoc]:
        """Deliver again the dead-lettered deliveries of a webhook (or the events named)."""
        await self.open()
        key = delivery_key(webhook.registry, webhook.name)
        if event_ids is None:
            docs = await self.store.list_deliveries(key, state="deadlettered")
        else:
            found = [await self.store.get_delivery(key, event_id) for event_id in event_ids]
            docs = [doc for doc in found if doc is not None]
        results: list[DeliveryDoc] = []
        for doc in docs:
            if doc.event.get("action") == "ping":
                continue
            event = RegistryEvent.model_validate(doc.event)
            results.append(await self.deliver(webhook, event, redeliver=True))
        return results


class TargetRefused(OSError):
    """The service URI resolves to an address deliveries may not go to."""


class CheckedResolver(AbstractResolver):
    """The connector's resolver: what it returns is what the connector connects to, so refusing here (any
    private, loopback or link-local answer refuses the name) leaves no gap between check and connect."""

    def __init__(self, inner: AbstractResolver, allow_private: bool) -> None:
        self._inner, self._allow_private = inner, allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            results = await self._inner.resolve(host, port, family)
        except OSError as exc:
            raise TargetRefused(f"cannot resolve {host}") from exc
        if not self._allow_private:
            for result in results:
                if rules.address_refused(result["host"]):
                    raise TargetRefused(f"{host} resolves to a private or local address (refused)")
        return results

    async def close(self) -> None:
        await self._inner.close()


_dispatcher: WebhookDispatcher | None = None


def webhook_dispatcher() -> WebhookDispatcher:
    """The process's one dispatcher (its clients keep connection pools)."""
    global _dispatcher
    if _dispatcher is None:
        _dispatcher = WebhookDispatcher(get_settings())
        close_on_shutdown(_dispatcher.close)
    return _dispatcher
