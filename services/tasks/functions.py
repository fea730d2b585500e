"""The tasks' functions (a Blueprint registered in function_app.py).

`trigger_base_image_runs` consumes the `tasks` subscription of the `registry-events` topic: a push that moves
a tag a task's last build started FROM runs that task.
`fire_task_timers` runs at second 5 of every minute and schedules the runs of the task timers due then.
`relay_runs` runs every 5 seconds and sends the queue messages of runs written but never dispatched (the
process died between writing the run and sending its message, or the queue was down). Locally the devhost
runs it on the same schedule.
"""

from __future__ import annotations

import asyncio
import logging

import azure.functions as func
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.platform.lifecycle import close_on_shutdown
from services.platform.settings import get_settings
from services.platform.telemetry import telemetry
from services.tasks.queue import RunQueue
from services.tasks.scheduling import relay_runs as relay

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger("tasks")

_clients: tuple[Cosmos, RunQueue] | None = None
_blobs: BlobStore | None = None
_opening = asyncio.Lock()


async def relay_clients() -> tuple[Cosmos, RunQueue]:
    global _clients
    async with _opening:
        if _clients is None:
            settings = get_settings()
            metadata, queue = Cosmos(settings), RunQueue(settings)
            await metadata.open()
            await queue.open()
            close_on_shutdown(metadata.close)
            close_on_shutdown(queue.close)
            _clients = (metadata, queue)
    return _clients


async def timer_blobs() -> BlobStore:
    global _blobs
    async with _opening:
        if _blobs is None:
            blobs = BlobStore(get_settings())
            await blobs.open()
            close_on_shutdown(blobs.close)
            _blobs = blobs
    return _blobs


@bp.timer_trigger(arg_name="timer", schedule="*/5 * * * * *", run_on_startup=False, use_monitor=False)
async def relay_runs(timer: func.TimerRequest) -> None:
    """Send the messages of queued runs that were never dispatched."""
    metadata, queue = await relay_clients()
    sent = await relay(metadata, queue, get_settings())
    if sent:
        log.info("relay_runs: %d run(s) dispatched", sent)


@bp.timer_trigger(arg_name="timer", schedule="5 * * * * *", run_on_startup=False, use_monitor=False)
async def fire_task_timers(timer: func.TimerRequest) -> None:
    """Each minute: the runs of the task timer triggers due this minute (services/tasks/triggers.py)."""
    from datetime import UTC, datetime

    from services.platform.secrets import secret_box
    from services.tasks.triggers import fire_timers

    metadata, queue = await relay_clients()
    settings = get_settings()
    blobs = await timer_blobs()
    box = secret_box(settings.secrets_keys, settings.secrets_keys_file)
    fired = await fire_timers(metadata, blobs, queue, box, datetime.now(UTC))
    if fired:
        log.info("fire_task_timers: %d run(s) scheduled", fired)


@bp.timer_trigger(arg_name="timer", schedule="0 17 3 * * *", run_on_startup=False, use_monitor=False)
async def expire_task_files(timer: func.TimerRequest) -> None:
    """Daily: run logs and uploaded sources older than TASKS_LOG_RETENTION_DAYS (services/tasks/retention.py)."""
    from datetime import UTC, datetime

    from services.tasks.retention import expire_task_files as expire

    metadata, _ = await relay_clients()
    await expire(metadata, await timer_blobs(), get_settings(), datetime.now(UTC))


@bp.service_bus_topic_trigger(
    arg_name="message",
    topic_name="registry-events",
    subscription_name="tasks",
    connection="SERVICEBUS_CONNECTION_STRING",
)
async def trigger_base_image_runs(message: func.ServiceBusMessage) -> None:
    """A registry event: run the tasks whose base image it moved (services/tasks/triggers.py)."""
    from services.events.models import EventMessage
    from services.platform.secrets import secret_box
    from services.tasks.triggers import on_image_pushed

    with telemetry().consumer_span("tasks", message.application_properties, message.message_id):
        envelope = EventMessage.model_validate_json(message.get_body())
        metadata, queue = await relay_clients()
        settings = get_settings()
        box = secret_box(settings.secrets_keys, settings.secrets_keys_file)
        blobs = await timer_blobs()
        with telemetry().span("base image trigger", {"event.action": envelope.event.action}):
            await on_image_pushed(metadata, blobs, queue, box, envelope.registry, envelope.event.payload())


@bp.route(route="tasks/hooks/{registry}/{task}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def task_source_hook(req: Request) -> Response:
    """A GitHub or Gitea push event for a task's source trigger, authenticated by its HMAC alone
    (services/tasks/hooks.py)."""
    from services.platform.secrets import secret_box
    from services.tasks.hooks import MAX_BODY_BYTES, handle_push

    too_large = JSONResponse({"error": f"the event is larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
    declared = req.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
        return too_large
    body = bytearray()
    async for chunk in req.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return too_large
    metadata, queue = await relay_clients()
    settings = get_settings()
    box = secret_box(settings.secrets_keys, settings.secrets_keys_file)
    blobs = await timer_blobs()
    # the route's two last segments (read from the path: the same under the Functions host and the devhost)
    registry, _, task = req.url.path.rstrip("/").rpartition("/tasks/hooks/")[2].partition("/")
    answer = await handle_push(metadata, blobs, queue, box, registry, task, dict(req.headers), bytes(body))
    return JSONResponse(answer.body, status_code=answer.status)
