"""The `task-runs` storage queue between the API (which schedules runs) and the runners (which execute them).

A Storage queue, not the event topic: one consumer kind, competing runners, and the queue length is what a
Container Apps job scales on in Azure. A received message stays invisible for the run's timeout plus a
margin, so a runner that dies mid-run lets another pick the message up; the run document decides whether it
is still to do (services/tasks/runner.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient

from services.platform.availability import STORAGE, DependencyTransport
from services.platform.settings import Settings
from services.tasks.models import RunMessage


@dataclass(slots=True)
class ReceivedRun:
    message: RunMessage
    raw: QueueMessage


class RunQueue:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._queue: QueueClient | None = None

    async def open(self) -> None:
        if self._queue is not None:
            return
        queue = self.make_client()
        try:
            await queue.create_queue()
        except ResourceExistsError:
            pass
        self._queue = queue

    def make_client(self) -> QueueClient:
        """QUEUE_ACCOUNT_URL with the managed identity in Azure (the account allows no keys), else the
        connection string (Azurite locally)."""
        transport = DependencyTransport(STORAGE, use_env_settings=self._settings.proxy_from_environment)
        if self._settings.queue_account_url:
            from azure.identity.aio import DefaultAzureCredential

            return QueueClient(
                self._settings.queue_account_url,
                self._settings.tasks_queue,
                credential=DefaultAzureCredential(),
                transport=transport,
            )
        return QueueClient.from_connection_string(
            self._settings.queue_connection_string, self._settings.tasks_queue, transport=transport
        )

    async def close(self) -> None:
        if self._queue is not None:
            await self._queue.close()
            self._queue = None

    def _client(self) -> QueueClient:
        if self._queue is None:
            raise RuntimeError("RunQueue.open() was not awaited")
        return self._queue

    async def send(self, message: RunMessage) -> None:
        await self._client().send_message(message.model_dump_json())

    async def receive(self, invisible_seconds: int) -> ReceivedRun | None:
        async for raw in self._client().receive_messages(max_messages=1, visibility_timeout=invisible_seconds):
            try:
                return ReceivedRun(RunMessage.model_validate_json(raw.content), raw)
            except ValueError:
                await self._client().delete_message(raw)  # not ours: nothing could ever run it
                return None
        return None

    async def keep_invisible(self, received: ReceivedRun, seconds: int) -> None:
        """The run goes on: keep its message from other runners `seconds` longer."""
        received.raw = await self._client().update_message(received.raw, visibility_timeout=seconds)

    async def complete(self, received: ReceivedRun) -> None:
        try:
            await self._client().delete_message(received.raw)
        except ResourceNotFoundError:
            pass
