"""The smallest honest Azure Service Bus stand-in for tests: an AMQP 1.0 broker on python-qpid-proton.

There is no Service Bus emulator without Docker, so the contract tests of `services/platform/bus.py` talk
real AMQP 1.0 through the real `azure-servicebus` SDK to this broker. It implements what the SDK uses:

- SASL ANONYMOUS and the CBS handshake (`$cbs` put-token, answered 202; the token is not checked);
- topics with subscriptions: a message sent to `<topic>` is copied to each `<topic>/Subscriptions/<name>`;
- peek-lock receive with link credit (and drain); settlement by disposition: accepted = complete,
  modified = abandon (redelivered, delivery count + 1), rejected = dead-letter (to
  `<topic>/Subscriptions/<name>/$deadletterqueue`, with DeadLetterReason); after `max_deliveries`
  deliveries an abandoned message is dead-lettered, as MaxDeliveryCount does;
- the annotations the SDK reads: x-opt-sequence-number, x-opt-enqueued-time, x-opt-locked-until; the
  delivery tag is the lock token.

Not implemented: batch sends (message format 0x80013700), `$management` (schedule, peek, renew lock),
sessions, filters, lock expiry. Run it in a thread: ``with ServiceBusTestBroker(["registry-events"],
["webhooks"]) as broker: broker.connection_string``.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from proton import Delivery, Message, symbol, ulong
from proton.handlers import MessagingHandler
from proton.reactor import ApplicationEvent, Container, EventInjector

LOCK_SECONDS = 60


@dataclass
class _Entry:
    message: Message
    sequence: int
    enqueued_ms: int
    deliveries: int = 0  # prior deliveries (AMQP header delivery-count)


@dataclass
class _Queue:
    name: str
    ready: collections.deque[_Entry] = field(default_factory=collections.deque)
    consumers: list[Any] = field(default_factory=list)
    dead_letters: _Queue | None = None


def _path(address: str | None) -> str:
    """`amqp://host:port/topic/Subscriptions/x` and `topic/Subscriptions/x` → `topic/subscriptions/x`."""
    text = address or ""
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("/", 1)[1] if "/" in text else ""
    return text.strip("/").lower()


class _Broker(MessagingHandler):  # type: ignore[misc]
    def __init__(self, url: str, topics: Iterable[str], subscriptions: Iterable[str], max_deliveries: int):
        super().__init__(auto_accept=False, auto_settle=False, prefetch=0)
        self.url = url
        self.max_deliveries = max_deliveries
        self.queues: dict[str, _Queue] = {}
        self.topics: dict[str, list[_Queue]] = {}
        self.sequence = 0
        self.in_flight: dict[Any, tuple[_Queue, _Entry]] = {}
        self.acceptor: Any = None
        self.container: Any = None
        self.ready = threading.Event()
        self.injector = EventInjector()  # wakes the reactor from another thread (stop)
        for topic in topics:
            subs = []
            for sub in subscriptions:
                name = f"{topic}/subscriptions/{sub}".lower()
                dlq = _Queue(name + "/$deadletterqueue")
                queue = _Queue(name, dead_letters=dlq)
                self.queues[queue.name] = queue
                self.queues[dlq.name] = dlq
                subs.append(queue)
            self.topics[topic.lower()] = subs

    # --- lifecycle ---------------------------------------------------------------------------------
    def on_start(self, event: Any) -> None:
        self.container = event.container
        self.acceptor = event.container.listen(self.url)
        event.container.selectable(self.injector)
        self.ready.set()

    def on_shutdown_requested(self, event: Any) -> None:
        self.acceptor.close()
        self.injector.close()
        self.container.stop()

    def on_connection_opening(self, event: Any) -> None:
        event.connection.container = "test-broker"

    def on_connection_bound(self, event: Any) -> None:
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS PLAIN MSSBCBS")
        sasl.done(sasl.OK)

    # --- links -------------------------------------------------------------------------------------
    def on_link_opening(self, event: Any) -> None:
        link = event.link
        if link.is_sender:  # the client receives from us
            address = link.remote_source.address
            link.source.address = address
            link.target.address = link.remote_target.address
            path = _path(address)
            if path == "$cbs":
                pass
            elif path in self.queues:
                self.queues[path].consumers.append(link)
            else:
                link.condition = _condition("amqp:not-found", f"no entity {path!r}")
                link.close()
                return
        else:  # the client sends to us
            link.target.address = link.remote_target.address
            link.source.address = link.remote_source.address
            link.max_message_size = ulong(1024 * 1024)
            path = _path(link.remote_target.address)
            if path != "$cbs" and path not in self.topics:
                link.condition = _condition("amqp:not-found", f"no topic {path!r}")
                link.close()
                return
            link.flow(1000)
        link.open()

    def on_link_closing(self, event: Any) -> None:
        self._forget_link(event.link)

    def on_connection_closing(self, event: Any) -> None:
        for queue in self.queues.values():
            queue.consumers = [c for c in queue.consumers if c.connection is not event.connection]
        self._release_unsettled(lambda link: link.connection is event.connection)

    def on_disconnected(self, event: Any) -> None:
        if event.connection is not None:
            self.on_connection_closing(event)

    def _forget_link(self, link: Any) -> None:
        for queue in self.queues.values():
            if link in queue.consumers:
                queue.consumers.remove(link)
        self._release_unsettled(lambda other: other is link)

    def _release_unsettled(self, matches: Any) -> None:
        for delivery, (queue, entry) in list(self.in_flight.items()):
            if matches(delivery.link):
                del self.in_flight[delivery]
                entry.deliveries += 1  # a lost lock counts as a delivery
                self._requeue(queue, entry)

    # --- messages in ---------------------------------------------------------------------------------
    def on_message(self, event: Any) -> None:
        path = _path(event.link.target.address)
        message: Message = event.message
        if path == "$cbs":
            self._answer_cbs(event, message)
        else:
            now_ms = int(time.time() * 1000)
            for queue in self.topics[path]:
                self.sequence += 1
                copy = Message()
                copy.decode(message.encode())
                self._requeue(queue, _Entry(copy, self.sequence, now_ms))
        event.delivery.update(Delivery.ACCEPTED)
        event.delivery.settle()

    def _answer_cbs(self, event: Any, request: Message) -> None:
        sender = _cbs_sender(event.connection)
        if sender is None:
            return
        reply = Message(
            correlation_id=request.id,
            address=request.reply_to,
            properties={"status-code": 202, "status-description": "Accepted"},
        )
        sender.send(reply)

    # --- messages out --------------------------------------------------------------------------------
    def _requeue(self, queue: _Queue, entry: _Entry) -> None:
        queue.ready.append(entry)
        self._pump(queue)

    def on_sendable(self, event: Any) -> None:
        for queue in self.queues.values():
            if event.link in queue.consumers:
                self._pump(queue)
        if event.link.drain_mode and event.link.credit > 0:
            event.link.drained()

    def _pump(self, queue: _Queue) -> None:
        for link in list(queue.consumers):
            while queue.ready and link.credit > 0:
                entry = queue.ready.popleft()
                self._send(queue, link, entry)
            if link.drain_mode and link.credit > 0 and not queue.ready:
                link.drained()

    def _send(self, queue: _Queue, link: Any, entry: _Entry) -> None:
        message = entry.message
        annotations = dict(message.annotations or {})
        annotations[symbol("x-opt-sequence-number")] = entry.sequence
        annotations[symbol("x-opt-enqueued-time")] = entry.enqueued_ms
        annotations[symbol("x-opt-locked-until")] = int((time.time() + LOCK_SECONDS) * 1000)
        message.annotations = annotations
        message.delivery_count = entry.deliveries
        message.first_acquirer = entry.deliveries == 0
        delivery = link.delivery(uuid.uuid4().bytes_le)
        link.send(message.encode())
        link.advance()
        self.in_flight[delivery] = (queue, entry)

    def on_settled(self, event: Any) -> None:
        self._settle(event.delivery)

    def on_delivery(self, event: Any) -> None:
        delivery = event.delivery
        if delivery.link.is_sender and delivery.remote_state and delivery in self.in_flight:
            self._settle(delivery)

    def _settle(self, delivery: Any) -> None:
        found = self.in_flight.pop(delivery, None)
        if found is None:
            return
        queue, entry = found
        state = delivery.remote_state
        remote = delivery.remote
        if state == Delivery.ACCEPTED:
            pass
        elif state == Delivery.REJECTED:
            info = {}
            condition = remote.condition
            if condition is not None and condition.info:
                info = {str(k): v for k, v in dict(condition.info).items()}
            self._dead_letter(queue, entry, str(info.get("DeadLetterReason", "rejected")), info)
        elif state == Delivery.MODIFIED and remote.undeliverable:
            entry.deliveries += 1
            self._dead_letter(queue, entry, "deferred (not supported by the test broker)", {})
        elif state == Delivery.RELEASED:  # given back unseen (the SDK releases what it buffered)
            queue.ready.appendleft(entry)
            self._pump(queue)
        else:  # MODIFIED: abandoned
            entry.deliveries += 1
            if entry.deliveries >= self.max_deliveries:
                self._dead_letter(queue, entry, "MaxDeliveryCountExceeded", {})
            else:
                self._requeue(queue, entry)
        delivery.update(state if state else Delivery.ACCEPTED)
        delivery.settle()

    def _dead_letter(self, queue: _Queue, entry: _Entry, reason: str, info: dict[str, Any]) -> None:
        if queue.dead_letters is None:
            return
        properties = dict(entry.message.properties or {})
        properties["DeadLetterReason"] = reason
        if info.get("DeadLetterErrorDescription"):
            properties["DeadLetterErrorDescription"] = info["DeadLetterErrorDescription"]
        entry.message.properties = properties
        self._requeue(queue.dead_letters, _Entry(entry.message, entry.sequence, entry.enqueued_ms, 0))


def _cbs_sender(connection: Any) -> Any:
    from proton import Endpoint

    link = connection.link_head(Endpoint.LOCAL_ACTIVE)
    while link is not None:
        if link.is_sender and _path(link.source.address) == "$cbs":
            return link
        link = link.next(Endpoint.LOCAL_ACTIVE)
    return None


def _condition(name: str, description: str) -> Any:
    from proton import Condition

    return Condition(name, description)


class ServiceBusTestBroker:
    """Runs the broker on 127.0.0.1:<free port> in a thread; stops it on exit."""

    def __init__(
        self, topics: Iterable[str], subscriptions: Iterable[str], max_deliveries: int = 5, port: int = 0
    ) -> None:
        self.port = port or _free_port()
        self._handler = _Broker(f"127.0.0.1:{self.port}", topics, subscriptions, max_deliveries)
        self._container = Container(self._handler)
        self._thread = threading.Thread(target=self._run, name="servicebus-test-broker", daemon=True)
        self.error: Exception | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName=RootManageSharedAccessKey;"
            "SharedAccessKey=notchecked;UseDevelopmentEmulator=true;"
        )

    def _run(self) -> None:
        try:
            self._container.run()
        except Exception as exc:  # visible in the test output; the clients then time out
            self.error = exc
            raise

    def __enter__(self) -> ServiceBusTestBroker:
        self._thread.start()
        if not self._handler.ready.wait(10):
            raise RuntimeError("the test broker did not start")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.02)
        raise RuntimeError("the test broker does not accept connections")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._handler.injector.trigger(ApplicationEvent("shutdown_requested"))
        self._thread.join(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
