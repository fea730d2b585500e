"""Run logs and uploaded sources expire after TASKS_LOG_RETENTION_DAYS (services/tasks/retention.py), with an
explicit clock: nothing goes before its time; then the old log is deleted and its run says so (listLogSasUrl
404 naming the expiry), a recent run keeps its log, an orphan upload goes and the context a task names stays.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.management.access import assign_role
from services.management.registries import create_registry
from services.tasks.models import RunDoc, TaskDoc
from services.tasks.retention import expire_task_files
from services.tasks.scheduling import log_path, new_source_path
from services.tasks.store import RunStore, TaskStore, run_doc_id, task_doc_id
from tests.conftest import Devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, unique_registry_name

pytestmark = pytest.mark.integration


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_logs_and_sources_expire_after_the_retention_days(
    devhost: Devhost, stores: Stores, entra_issuer: TestIssuer
) -> None:
    registry, owner = unique_registry_name(), str(uuid.uuid4())
    await create_registry(stores.metadata, stores.blobs, stores.settings, registry, "Premium")
    await assign_role(stores.metadata, registry, owner, "Owner", tenant=entra_issuer.tenant)
    now = datetime.now(UTC)
    runs = RunStore(stores.metadata)
    for run_id, finished in (("cb1", now - timedelta(hours=1)), ("cb2", now + timedelta(days=5))):
        doc = RunDoc(
            id=run_doc_id(run_id), registry=registry, runId=run_id, number=int(run_id[2:]), status="Succeeded",
            request={"type": "DockerBuildRequest"}, logPath=log_path(run_id), finishTime=_iso(finished),
        )  # fmt: skip
        await runs.create(doc)
        await stores.blobs.create_append(registry, doc.logPath)
        await stores.blobs.append(registry, doc.logPath, f"log of {run_id}\n".encode())
    orphan, named = new_source_path(), new_source_path()
    for path in (orphan, named):
        url = await stores.blobs.path_url(registry, path, 600, write=True)
        async with httpx.AsyncClient(timeout=30) as http:
            put = await http.put(url, content=b"context", headers={"x-ms-blob-type": "BlockBlob"})
        assert put.status_code == 201
    task = TaskDoc(
        id=task_doc_id("keeper"), registry=registry, name="keeper", location="westeurope",
        step={"type": "Docker", "contextPath": named, "dockerFilePath": "Dockerfile"},
    )  # fmt: skip
    assert await TaskStore(stores.metadata).create(task)
    days = stores.settings.tasks_log_retention_days
    assert days == 30  # the default, as ACR keeps run logs

    early = await expire_task_files(stores.metadata, stores.blobs, stores.settings, now, [registry])
    assert (early.logs, early.sources) == (0, 0)  # nothing is old yet
    later = now + timedelta(days=days, hours=2)
    expired = await expire_task_files(stores.metadata, stores.blobs, stores.settings, later, [registry])
    assert (expired.logs, expired.sources) == (1, 1)
    assert await stores.blobs.path_size(registry, log_path("cb1")) is None
    assert await stores.blobs.path_size(registry, log_path("cb2")) is not None  # finished 5 days later: kept
    assert await stores.blobs.path_size(registry, orphan) is None
    assert await stores.blobs.path_size(registry, named) is not None  # the task's context lives with the task
    gone = await runs.get(registry, "cb1")
    assert gone is not None and gone.logExpired and gone.logExpiredTime == _iso(later)
    kept = await runs.get(registry, "cb2")
    assert kept is not None and not kept.logExpired
    again = await expire_task_files(stores.metadata, stores.blobs, stores.settings, later, [registry])
    assert (again.logs, again.sources) == (0, 0)

    base = (
        f"{devhost.url}/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-rg/providers/"
        f"Microsoft.ContainerRegistry/registries/{registry}/runs"
    )
    headers = {"Authorization": "Bearer " + entra_issuer.token(owner)}
    async with httpx.AsyncClient(timeout=30, headers=headers, params={"api-version": "2025-03-01-preview"}) as http:
        shown = await http.get(f"{base}/cb1")
        assert shown.json()["properties"]["logExpired"] is True
        link = await http.post(f"{base}/cb1/listLogSasUrl")
        assert link.status_code == 404 and f"expired after {days} days" in link.text
        assert (await http.post(f"{base}/cb2/listLogSasUrl")).status_code == 200
