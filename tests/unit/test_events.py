"""Which operations raise which events, and the ACR payload shapes (services/events)."""

from __future__ import annotations

import json

from services.events.actions import (
    HELM_CONFIG_MEDIA_TYPE,
    Chart,
    ManifestFacts,
    chart_from_config,
    delete_events,
    push_events,
    repository_delete_events,
    request_info,
    untag_events,
)
from services.events.models import EventMessage, RegistryEvent
from services.events.outbox import bus_message, outbox_for

DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
REQUEST = request_info({"host": "myregistry.azurecr.io", "user-agent": "docker/17.09.0-ce"}, "PUT", "req-1")
IMAGE = ManifestFacts("hello-world", "sha256:" + "a" * 64, DOCKER, 524)
CHART = ManifestFacts(
    "charts/web", "sha256:" + "b" * 64, "application/vnd.oci.image.manifest.v1+json", 700, Chart("web", "1.2.3")
)


def test_push_with_a_tag_is_acr_push_payload_field_for_field() -> None:
    [event] = push_events(IMAGE, ["v1"], REQUEST)
    payload = event.payload()
    assert set(payload) == {"id", "timestamp", "action", "target", "request"}
    assert payload["action"] == "push"
    assert payload["target"] == {
        "mediaType": DOCKER,
        "size": 524,
        "digest": IMAGE.digest,
        "length": 524,
        "repository": "hello-world",
        "tag": "v1",
    }
    assert payload["request"] == {
        "id": "req-1",
        "host": "myregistry.azurecr.io",
        "method": "PUT",
        "useragent": "docker/17.09.0-ce",
    }
    assert payload["timestamp"].endswith("Z")


def test_push_by_digest_has_no_tag_and_multi_tag_push_raises_one_per_tag() -> None:
    [untagged] = push_events(IMAGE, [], REQUEST)
    assert "tag" not in untagged.payload()["target"]
    events = push_events(IMAGE, ["a", "b", "c"], REQUEST)
    assert [e.target.tag for e in events] == ["a", "b", "c"]
    assert len({e.id for e in events}) == 3


def test_delete_has_no_tag_nor_size_and_repository_delete_is_one_per_manifest() -> None:
    [event] = delete_events(IMAGE, REQUEST)
    assert event.payload()["action"] == "delete"
    assert event.payload()["target"] == {"mediaType": DOCKER, "digest": IMAGE.digest, "repository": "hello-world"}
    other = ManifestFacts("hello-world", "sha256:" + "c" * 64, DOCKER, 10)
    assert [e.target.digest for e in repository_delete_events([IMAGE, other], REQUEST)] == [IMAGE.digest, other.digest]


def test_tag_delete_is_our_untag_only() -> None:
    [event] = untag_events(IMAGE, "v1", REQUEST)
    assert event.action == "untag" and event.target.tag == "v1"


def test_helm_chart_raises_chart_events_with_name_and_version_and_no_request() -> None:
    actions = [(e.action, e.target.tag) for e in push_events(CHART, ["1.2.3"], REQUEST)]
    assert actions == [("push", "1.2.3"), ("chart_push", "1.2.3")]
    chart_event = push_events(CHART, ["1.2.3"], REQUEST)[1].payload()
    assert "request" not in chart_event
    assert chart_event["target"]["name"] == "web" and chart_event["target"]["version"] == "1.2.3"
    assert [e.action for e in delete_events(CHART, REQUEST)] == ["delete", "chart_delete"]


def test_chart_from_config() -> None:
    config = json.dumps({"name": "web", "version": "1.2.3", "apiVersion": "v2"}).encode()
    assert chart_from_config(HELM_CONFIG_MEDIA_TYPE, config) == Chart("web", "1.2.3")
    assert chart_from_config("application/vnd.oci.image.config.v1+json", config) is None
    assert chart_from_config(HELM_CONFIG_MEDIA_TYPE, b"not json") is None
    assert chart_from_config(HELM_CONFIG_MEDIA_TYPE, b'{"name": 1}') is None


def test_quarantine_is_the_push_shape() -> None:
    push = push_events(IMAGE, ["v1"], REQUEST)[0]
    quarantine = RegistryEvent(action="quarantine", target=push.target, request=push.request)
    assert set(quarantine.payload()) == set(push.payload())


def test_outbox_and_bus_message_round_trip() -> None:
    events = push_events(IMAGE, ["v1", "v2"], REQUEST)
    outbox = outbox_for("myregistry", "myregistry/hello-world", events)
    assert outbox is not None and outbox.outbox == "pending" and len(outbox.events) == 2
    assert outbox_for("r", "r/x", []) is None
    message = bus_message("myregistry", events[0])
    assert message.message_id == events[0].id
    assert message.properties == {
        "action": "push",
        "registry": "myregistry",
        "repository": "hello-world",
        "mediaType": DOCKER,
    }
    assert EventMessage.model_validate_json(message.body).event == events[0]
