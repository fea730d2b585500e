"""`python -m services.tasks runner --once`: what one execution of the Container Apps job does in Azure (take one
queued run, execute it, complete its message, exit), against the real Azurite queue and Cosmos emulator."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.platform.settings import Settings
from services.tasks.models import RunDoc, RunMessage
from services.tasks.queue import RunQueue
from services.tasks.runner import serve_one
from services.tasks.store import RunStore, run_doc_id
from tests.integration.conftest import Stores, unique_registry_name

pytestmark = pytest.mark.integration


async def test_one_execution_takes_one_run_and_completes_its_message(stores: Stores) -> None:
    settings = Settings(**(stores.settings.model_dump() | {"tasks_queue": "once-" + uuid.uuid4().hex[:10]}))
    registry = unique_registry_name()
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    runs = RunStore(stores.metadata)
    # Left Running by an execution that died: the next execution marks it Error (builds do not resume), so
    # this needs no build and shows the message being handled and completed.
    for run_id in ("cb1", "cb2"):
        await runs.create(
            RunDoc(
                id=run_doc_id(run_id),
                registry=registry,
                runId=run_id,
                number=int(run_id[2:]),
                request={},
                logPath=f"tasks/logs/{run_id}.log",
                createTime=now,
                status="Running",
            )
        )
    queue = RunQueue(settings)
    await queue.open()
    try:
        for run_id in ("cb1", "cb2"):
            await queue.send(RunMessage(registry=registry, runId=run_id))
        assert await serve_one(settings) is True
        statuses = {r: (await runs.get(registry, r)).status for r in ("cb1", "cb2")}  # type: ignore[union-attr]
        assert sorted(statuses.values()) == ["Error", "Running"]  # one execution, one run
        assert await serve_one(settings) is True
        assert {(await runs.get(registry, r)).status for r in ("cb1", "cb2")} == {"Error"}  # type: ignore[union-attr]
        assert await serve_one(settings) is False  # the queue is empty: the execution just exits
        assert await queue.receive(1) is None  # both messages were completed, not left to reappear
    finally:
        await queue.close()
