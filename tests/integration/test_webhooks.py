"""Push and delete events reach webhooks through the whole pipeline, and none is lost.

A devhost of this module's own (its own bus topic, so no other devhost takes its messages; short retry
delays) serves the registry; webhooks are created in-process; a real HTTP receiver gets the deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from services.management.access import update_registry
from services.management.registries import create_registry
from services.webhooks.delivery import delivery_key
from services.webhooks.resources import WebhookChanges, put_webhook
from services.webhooks.store import DeliveryDoc, WebhookStore
from tests.conftest import ROOT, Devhost, running_devhost
from tests.integration.conftest import Stores, registry_client, unique_registry_name
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
FAST_RETRIES = {
    "WEBHOOK_BACKOFF_BASE_SECONDS": "0.05",
    "WEBHOOK_BACKOFF_MAX_SECONDS": "0.2",
    "WEBHOOK_MAX_ATTEMPTS": "4",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
    "OUTBOX_RELAY_AFTER_SECONDS": "1",
}


@pytest.fixture(scope="module")
def topic() -> str:
    return "wh" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def hooks_devhost(stack: dict[str, str], topic: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    env = stack | FAST_RETRIES | {"BUS_TOPIC": topic}
    with running_devhost(env, tmp_path_factory.mktemp("hooks-devhost")) as host:
        yield host


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as instance:
        yield instance


class Registry:
    def __init__(self, name: str, http: httpx.Client, stores: Stores) -> None:
        self.name, self.http, self.stores = name, http, stores

    async def webhook(self, name: str, uri: str, **settings: object) -> None:
        changes = WebhookChanges(
            service_uri=uri,
            actions=settings.pop("actions", ["push", "delete"]),  # type: ignore[arg-type]
            **settings,  # type: ignore[arg-type]
        )
        await put_webhook(self.stores.metadata, self.name, name, changes)

    async def delivery(self, webhook: str, event_id: str, state: str = "delivered") -> DeliveryDoc:
        """The delivery record once it reaches `state` (the receiver may see a request before it is saved)."""
        for _ in range(500):
            doc = await WebhookStore(self.stores.metadata).get_delivery(delivery_key(self.name, webhook), event_id)
            if doc is not None and doc.state == state:
                return doc
            await asyncio.sleep(0.02)
        raise AssertionError(f"delivery {event_id} to {webhook} never became {state}: {doc}")


@pytest.fixture
async def registry(hooks_devhost: Devhost, stores: Stores) -> AsyncIterator[Registry]:
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium")
    await update_registry(stores.metadata, name, auth_disabled=True)  # the auth suites test credentials
    with registry_client(hooks_devhost, name) as http:
        yield Registry(name, http, stores)


def push_image(http: httpx.Client, repo: str, reference: str, tags: list[str] | None = None) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": uuid.uuid4().hex}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    assert http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=config).status_code == 201
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(config)},
            "layers": [],
        }
    ).encode()
    if reference == "@digest":
        reference = "sha256:" + hashlib.sha256(manifest).hexdigest()
    response = http.put(
        f"/v2/{repo}/manifests/{reference}",
        params=[("tag", t) for t in tags or []],
        content=manifest,
        headers={"Content-Type": OCI_MANIFEST, "User-Agent": "it-tests/1.0"},
    )
    assert response.status_code == 201, response.text
    return response.headers["Docker-Content-Digest"]


async def test_push_reaches_the_webhook_as_acr_payload_with_headers_and_signature(
    registry: Registry, receiver: WebhookReceiver
) -> None:
    await registry.webhook(
        "hookone",
        f"{receiver.url}/one",
        custom_headers={"Authorization": "Bearer s3cret-value", "X-Team": "platform"},
        signing_secret="shh",
    )
    digest = push_image(registry.http, "team/app", "v1")
    receiver.wait_for(lambda r: len(r.events("/one")) == 1)
    [request] = receiver.on("/one")
    event = request.json()
    assert event["action"] == "push"
    assert event["target"] == {
        "mediaType": OCI_MANIFEST,
        "size": event["target"]["size"],
        "digest": digest,
        "length": event["target"]["size"],
        "repository": "team/app",
        "tag": "v1",
    }
    assert event["request"]["method"] == "PUT"
    assert event["request"]["useragent"] == "it-tests/1.0"
    assert event["request"]["host"].startswith(registry.name)
    assert request.headers["Authorization"] == "Bearer s3cret-value"
    assert request.headers["X-Team"] == "platform"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Registry-Delivery"]
    stamp, mac = (part.split("=", 1)[1] for part in request.headers["X-Registry-Signature"].split(","))
    expected = hmac.new(b"shh", f"{stamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, expected)
    delivery = await registry.delivery("hookone", event["id"])
    assert delivery is not None and delivery.state == "delivered"
    recorded = delivery.attempts[0]
    assert recorded["response"]["statusCode"] == 200
    assert "s3cret" not in json.dumps(recorded["request"]["headers"])  # secrets are masked
    # ... and stored sealed: neither the document nor the emulator's journal on disk holds them in clear
    raw = await WebhookStore(registry.stores.metadata).get_webhook(registry.name, "hookone")
    assert raw is not None and raw.customHeaders == {} and raw.signingSecret is None and raw.sealedSecrets
    journal = Path(registry.stores.settings.secrets_keys_file).parents[1] / "cosmos"
    assert list(journal.rglob("*")), "the emulator's journal was not found"
    assert not any(b"s3cret-value" in f.read_bytes() for f in journal.rglob("*") if f.is_file())


async def test_redirects_are_not_followed_and_a_failure_records_nothing_of_the_answer(
    registry: Registry, receiver: WebhookReceiver
) -> None:
    # Issue 8, item 2: a 307 to a private address used to be followed (custom headers and body along), and
    # listEvents showed the final answer (status, headers, 4 KiB of body): a readable SSRF.
    receiver.redirects["/hop"] = f"{receiver.url}/internal"
    await registry.webhook("redirected", f"{receiver.url}/hop", custom_headers={"Authorization": "Bearer s3cret"})
    push_image(registry.http, "redir", "v1")
    receiver.wait_for(lambda r: len(r.on("/hop")) == 1)
    event_id = receiver.on("/hop")[0].json()["id"]
    delivery = await registry.delivery("redirected", event_id, state="deadlettered")
    assert receiver.on("/internal") == []
    assert [a["response"] for a in delivery.attempts] == [{"statusCode": 307}]
    recorded = delivery.model_dump_json()
    assert "topsecret" not in recorded and "banner" not in recorded and "/internal" not in recorded


async def test_multi_tag_push_by_digest_gives_one_event_per_tag_and_delete_gives_delete(
    registry: Registry, receiver: WebhookReceiver
) -> None:
    await registry.webhook("hooktwo", f"{receiver.url}/two", actions=["push", "delete", "untag"])
    digest = push_image(registry.http, "multi", "@digest", tags=["a", "b", "c"])
    receiver.wait_for(lambda r: len(r.events("/two")) == 3)
    assert sorted(e["target"]["tag"] for e in receiver.events("/two")) == ["a", "b", "c"]
    assert registry.http.delete("/v2/multi/manifests/a").status_code == 202
    receiver.wait_for(lambda r: len(r.events("/two")) == 4)
    untag = receiver.events("/two")[-1]
    assert untag["action"] == "untag" and untag["target"]["tag"] == "a"
    assert registry.http.delete(f"/v2/multi/manifests/{digest}").status_code == 202
    receiver.wait_for(lambda r: len(r.events("/two")) == 5)
    delete = receiver.events("/two")[-1]
    assert delete["action"] == "delete"
    assert delete["target"] == {"mediaType": OCI_MANIFEST, "digest": digest, "repository": "multi"}


async def test_scope_filters_and_disabled_webhooks_are_honoured(registry: Registry, receiver: WebhookReceiver) -> None:
    await registry.webhook("scopetag", f"{receiver.url}/tag", scope="app:v1")
    await registry.webhook("scoperepo", f"{receiver.url}/repo", scope="app:*")
    await registry.webhook("scopeother", f"{receiver.url}/other", scope="other:*")
    await registry.webhook("disabledone", f"{receiver.url}/off", status="disabled")
    await registry.webhook("everything", f"{receiver.url}/all")
    push_image(registry.http, "app", "v1")
    push_image(registry.http, "app", "v2")
    receiver.wait_for(lambda r: len(r.events("/all")) == 2 and len(r.events("/repo")) == 2)
    receiver.wait_for(lambda r: len(r.events("/tag")) == 1)
    assert [e["target"]["tag"] for e in receiver.events("/tag")] == ["v1"]
    # the receiver saw every delivery of these pushes already (all webhooks of an event are done together)
    assert receiver.on("/other") == [] and receiver.on("/off") == []


async def test_receiver_failing_then_recovering_gets_every_event_once(
    registry: Registry, receiver: WebhookReceiver
) -> None:
    await registry.webhook("flaky", f"{receiver.url}/flaky")
    receiver.answers = [500, 503]
    push_image(registry.http, "flaky", "v1")
    receiver.wait_for(lambda r: len(r.events("/flaky")) == 1)
    [event] = receiver.events("/flaky")
    delivery = await registry.delivery("flaky", event["id"])
    assert delivery is not None and delivery.state == "delivered"
    assert [a["status"] for a in delivery.attempts] == [500, 503, 200]
    assert len(receiver.on("/flaky")) == 3


async def test_receiver_down_past_the_last_retry_is_dead_lettered_then_redelivered_by_command(
    registry: Registry, receiver: WebhookReceiver, hooks_devhost: Devhost
) -> None:
    await registry.webhook("downhook", f"{receiver.url}/down")
    receiver.default_status = 503
    push_image(registry.http, "down", "v1")
    receiver.wait_for(lambda r: len(r.on("/down")) == 4)
    event_id = receiver.on("/down")[0].json()["id"]
    delivery = await registry.delivery("downhook", event_id, "deadlettered")
    assert len(delivery.attempts) == 4
    receiver.default_status = 200
    done = subprocess.run(  # noqa: ASYNC221 (a command line, run as a user would)
        [sys.executable, "-m", "services.management", "webhook", "redeliver", registry.name, "downhook"],
        cwd=ROOT,
        env=os.environ | hooks_devhost.env | {"WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(receiver.events("/down")) == 1
    delivery = await registry.delivery("downhook", event_id)
    assert delivery is not None and delivery.state == "delivered" and len(delivery.attempts) == 5


async def test_cloudevents_format(registry: Registry, receiver: WebhookReceiver) -> None:
    await registry.webhook("cloudhook", f"{receiver.url}/ce", payload_format="cloudevents")
    push_image(registry.http, "ce/app", "v1")
    receiver.wait_for(lambda r: len(r.events("/ce")) == 1)
    [request] = receiver.on("/ce")
    assert request.headers["Content-Type"].startswith("application/cloudevents+json")
    event = request.json()
    assert event["specversion"] == "1.0"
    assert event["type"] == "Microsoft.ContainerRegistry.ImagePushed"
    assert event["source"] == f"/registries/{registry.name}"
    assert event["subject"] == "ce/app:v1"
    assert event["data"]["action"] == "push" and event["id"] == event["data"]["id"]


async def test_registry_killed_between_commit_and_publish_is_delivered_by_the_relay(
    registry: Registry, receiver: WebhookReceiver, stack: dict[str, str], topic: str, tmp_path: Path
) -> None:
    await registry.webhook("relayhook", f"{receiver.url}/relay")
    env = stack | FAST_RETRIES | {"BUS_TOPIC": topic, "FAULT_KILL_BEFORE_PUBLISH": "true"}
    with (
        running_devhost(env, tmp_path) as doomed,
        registry_client(doomed, registry.name) as http,
        pytest.raises(httpx.TransportError),  # the process dies before it answers
    ):
        push_image(http, "relay/app", "v1")
    # Nobody published the committed event: the relay_outbox timer of the surviving devhost does.
    receiver.wait_for(lambda r: len(r.events("/relay")) == 1, timeout=60)
    [event] = receiver.events("/relay")
    assert event["action"] == "push" and event["target"]["repository"] == "relay/app"
