"""ACR's `/acr/v1/` metadata API over HTTP, against the devhost and the emulators: listing with paging and
ordering, properties, attribute updates, deletes with their events, bad input, and the locks
(`changeableAttributes`) as `/v2/` enforces them.

Every test has a registry of its own (`registry` fixture, credentials off); authorization is in
test_auth_matrix.py, the official SDK and skopeo in tests/e2e/.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from services.platform.cosmos import ConcurrentUpdate, utcnow
from services.registry.locks import DISALLOWED
from services.registry.store import ArtifactStore, repo_key
from tests.integration.conftest import RegistryClient, Stores
from tests.integration.test_distribution_api import (
    LINK_NEXT,
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    descriptor,
    digest_of,
    encode,
    image_manifest,
    push_blob,
    push_manifest,
    put_manifest,
)

pytestmark = pytest.mark.integration

ALL_ENABLED = {"deleteEnabled": True, "writeEnabled": True, "listEnabled": True, "readEnabled": True}


# --- helpers ---------------------------------------------------------------------------------------------
def push(http: httpx.Client, repo: str, tag: str, layers: int = 1) -> str:
    digest, _ = push_manifest(http, repo, tag, image_manifest(http, repo, layers=layers))
    return digest


def patch(http: httpx.Client, path: str, **attributes: Any) -> dict[str, Any]:
    response = http.patch(path, json=attributes)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def follow(http: httpx.Client, url: str, key: str) -> tuple[list[Any], list[str]]:
    """Every item of a paged /acr/v1 list, and the Link of each page that had one."""
    items: list[Any] = []
    links: list[str] = []
    next_url: str | None = url
    while next_url is not None:
        response = http.get(next_url)
        assert response.status_code == 200, response.text
        items.extend(response.json()[key])
        link = response.headers.get("Link")
        if link is None:
            next_url = None
        else:
            match = LINK_NEXT.match(link)
            assert match, link
            links.append(link)
            next_url = match["url"]
        assert len(links) < 100, "pagination does not end"
    return items, links


def assert_locked(response: httpx.Response, attribute: str) -> None:
    assert_error(response, 405, "UNSUPPORTED")
    error = response.json()["errors"][0]
    assert error["message"].startswith(DISALLOWED), error
    assert error["detail"]["attribute"] == attribute, error


async def outbox_actions(stores: Stores, registry: str, repo: str) -> list[tuple[str, str | None, str]]:
    """(action, tag, digest) of every event the repository's changes committed to the outbox."""
    partition = repo_key(registry, repo)
    sql = "SELECT * FROM c WHERE c.repo = @p AND c.type = 'outbox'"
    found = []
    async for doc in stores.metadata.query("artifacts", sql, {"@p": partition}, partition):
        for event in doc["events"]:
            found.append((event["action"], event["target"].get("tag"), event["target"]["digest"]))
    return found


# --- catalog and repositories ----------------------------------------------------------------------------
def test_catalog_lists_every_repository_in_pages(registry: RegistryClient) -> None:
    http = registry.http
    names = ["alpha", "beta/one", "beta/two", "gamma", "z-last"]
    for name in names:
        push(http, name, "v1")
    assert http.get("/acr/v1/_catalog").json() == {"repositories": names}
    found, links = follow(http, "/acr/v1/_catalog?n=2", "repositories")
    assert found == names
    assert links[0] == '</acr/v1/_catalog?last=beta%2Fone&n=2>; rel="next"'
    assert http.get("/acr/v1/_catalog?n=0").json() == {"repositories": []}


def test_repository_properties(registry: RegistryClient) -> None:
    http = registry.http
    first = push(http, "team/app", "v1")
    push(http, "team/app", "v2")
    untagged = image_manifest(http, "team/app")
    push_manifest(http, "team/app", digest_of(encode(untagged)), untagged)
    http.put("/v2/team/app/manifests/latest", content=http.get(f"/v2/team/app/manifests/{first}").content,
             headers={"Content-Type": OCI_MANIFEST})  # fmt: skip
    body = http.get("/acr/v1/team/app").json()
    assert body["registry"] == f"{registry.name}.azurecr.localhost"
    assert body["imageName"] == "team/app"
    assert body["manifestCount"] == 3 and body["tagCount"] == 3
    assert body["changeableAttributes"] == ALL_ENABLED
    assert body["createdTime"] <= body["lastUpdateTime"]
    tag = http.get("/acr/v1/team/app/_tags/latest").json()["tag"]
    assert body["lastUpdateTime"] == tag["lastUpdateTime"]  # the latest change in it


def test_unknown_things_are_404_with_acr_codes(registry: RegistryClient) -> None:
    http = registry.http
    assert_error(http.get("/acr/v1/nothing/here"), 404, "NAME_UNKNOWN")
    assert_error(http.get("/acr/v1/nothing/_tags"), 404, "NAME_UNKNOWN")
    assert_error(http.get("/acr/v1/nothing/_manifests"), 404, "NAME_UNKNOWN")
    assert_error(http.delete("/acr/v1/nothing"), 404, "NAME_UNKNOWN")
    assert_error(http.patch("/acr/v1/nothing", json={"listEnabled": False}), 404, "NAME_UNKNOWN")
    push(http, "app", "v1")
    missing = http.get("/acr/v1/app/_tags/v9")
    assert_error(missing, 404, "TAG_UNKNOWN")
    assert missing.json()["errors"][0]["message"] == "the specified tag does not exist"
    assert_error(http.delete("/acr/v1/app/_tags/v9"), 404, "TAG_UNKNOWN")
    assert_error(http.get(f"/acr/v1/app/_manifests/sha256:{'0' * 64}"), 404, "MANIFEST_UNKNOWN")
    assert_error(http.delete(f"/acr/v1/app/_manifests/sha256:{'0' * 64}"), 404, "MANIFEST_UNKNOWN")
    assert_error(http.get("/acr/v1/app/_tags/v1/extra"), 404, "NAME_UNKNOWN")  # no such route
    # HEAD is GET without the body, on every /acr/v1 read.
    for path in ("/acr/v1/_catalog", "/acr/v1/app", "/acr/v1/app/_tags", "/acr/v1/app/_tags/v1"):
        head = http.head(path)
        assert head.status_code == 200 and head.content == b"", path
    assert http.head("/acr/v1/app/_tags/v9").status_code == 404


# --- tags ------------------------------------------------------------------------------------------------
def test_tag_properties_and_lists(registry: RegistryClient) -> None:
    http = registry.http
    a = push(http, "app", "b-second")
    b = push(http, "app", "a-first")
    push_manifest(http, "app", "c-third", json.loads(http.get(f"/v2/app/manifests/{a}").content))
    tag = http.get("/acr/v1/app/_tags/b-second").json()
    assert tag["registry"] == f"{registry.name}.azurecr.localhost" and tag["imageName"] == "app"
    assert tag["tag"]["name"] == "b-second" and tag["tag"]["digest"] == a
    assert tag["tag"]["signed"] is False
    assert tag["tag"]["changeableAttributes"] == ALL_ENABLED
    assert tag["tag"]["createdTime"] <= tag["tag"]["lastUpdateTime"]

    listing = http.get("/acr/v1/app/_tags").json()
    assert listing["imageName"] == "app" and listing["registry"] == tag["registry"]
    assert [t["name"] for t in listing["tags"]] == ["a-first", "b-second", "c-third"]  # lexical by default
    by_digest = http.get("/acr/v1/app/_tags", params={"digest": a}).json()["tags"]
    assert [t["name"] for t in by_digest] == ["b-second", "c-third"]
    assert [t["name"] for t in http.get("/acr/v1/app/_tags", params={"digest": b}).json()["tags"]] == ["a-first"]


def test_tags_in_time_order_page_through_the_link(registry: RegistryClient) -> None:
    http = registry.http
    pushed = []
    for name in ["m", "c", "x", "a", "q"]:
        push(http, "app", name)
        pushed.append(name)
        time.sleep(0.005)  # distinct lastUpdateTime (milliseconds)
    for order, expected in (("timedesc", pushed[::-1]), ("timeasc", pushed), ("none", sorted(pushed))):
        found, links = follow(http, f"/acr/v1/app/_tags?n=2&orderby={order}", "tags")
        assert [t["name"] for t in found] == expected, order
        assert len(links) == 2
        if order != "none":
            assert f"orderby={order}" in links[0]
    times = [t["lastUpdateTime"] for t in follow(http, "/acr/v1/app/_tags?orderby=timedesc", "tags")[0]]
    assert times == sorted(times, reverse=True)
    # A tag name still works as `last` with orderby while the tag exists.
    rest = http.get("/acr/v1/app/_tags", params={"orderby": "timedesc", "last": "x"}).json()["tags"]
    assert [t["name"] for t in rest] == ["c", "m"]


def test_time_ordered_paging_survives_deleting_the_last_tag_of_a_page(registry: RegistryClient) -> None:
    """`acr purge` deletes the tags of a page, then asks for the next page with the Link's `last`."""
    http = registry.http
    for name in ["t1", "t2", "t3", "t4", "t5"]:
        push(http, "app", name)
        time.sleep(0.005)
    first = http.get("/acr/v1/app/_tags?n=2&orderby=timedesc")
    assert [t["name"] for t in first.json()["tags"]] == ["t5", "t4"]
    for tag in ("t5", "t4"):
        assert http.delete(f"/acr/v1/app/_tags/{tag}").status_code == 202
    link = LINK_NEXT.match(first.headers["Link"])
    assert link is not None
    last = httpx.URL(link["url"]).params["last"]
    second = http.get("/acr/v1/app/_tags", params={"n": 2, "orderby": "timedesc", "last": last})
    assert [t["name"] for t in second.json()["tags"]] == ["t3", "t2"]
    # A plain name that no longer exists cannot be placed in time order.
    assert_error(http.get("/acr/v1/app/_tags", params={"orderby": "timedesc", "last": "t5"}), 404, "TAG_UNKNOWN")


def test_patch_tag_is_partial_and_moves_last_update_time(registry: RegistryClient) -> None:
    http = registry.http
    push(http, "app", "v1")
    before = http.get("/acr/v1/app/_tags/v1").json()["tag"]
    time.sleep(0.005)
    after = patch(http, "/acr/v1/app/_tags/v1", writeEnabled=False)["tag"]
    assert after["changeableAttributes"] == ALL_ENABLED | {"writeEnabled": False}
    assert after["lastUpdateTime"] > before["lastUpdateTime"] and after["createdTime"] == before["createdTime"]
    after = patch(http, "/acr/v1/app/_tags/v1", deleteEnabled=False, readEnabled=None)["tag"]
    assert after["changeableAttributes"] == ALL_ENABLED | {"writeEnabled": False, "deleteEnabled": False}
    assert http.patch("/acr/v1/app/_tags/v1", content=b"").json()["tag"] == after  # empty body: no change
    assert http.get("/acr/v1/app/_tags/v1").json()["tag"] == after


async def test_untag_keeps_the_manifest_and_raises_untag(registry: RegistryClient, stores: Stores) -> None:
    http = registry.http
    digest = push(http, "app", "v1")
    assert http.delete("/acr/v1/app/_tags/v1").status_code == 202
    assert http.get(f"/v2/app/manifests/{digest}").status_code == 200
    assert http.get("/v2/app/manifests/v1").status_code == 404
    assert ("untag", "v1", digest) in await outbox_actions(stores, registry.name, "app")


# --- manifests -------------------------------------------------------------------------------------------
def test_manifest_properties_of_an_image_and_an_index(registry: RegistryClient) -> None:
    http = registry.http
    manifest = image_manifest(http, "multi", layers=2)
    amd64, amd64_body = push_manifest(http, "multi", "amd64", manifest)
    arm64, _ = push_manifest(http, "multi", "arm64", image_manifest(http, "multi"))
    props = http.get(f"/acr/v1/multi/_manifests/{amd64}").json()
    assert props["registry"] == f"{registry.name}.azurecr.localhost" and props["imageName"] == "multi"
    m = props["manifest"]
    assert m["digest"] == amd64 and m["tags"] == ["amd64"]
    assert m["imageSize"] == manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    assert (m["architecture"], m["os"]) == ("amd64", "linux")
    assert m["mediaType"] == OCI_MANIFEST and m["configMediaType"] == manifest["config"]["mediaType"]
    assert m["changeableAttributes"] == ALL_ENABLED
    assert "references" not in m

    arm_body = http.get(f"/v2/multi/manifests/{arm64}").content
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {**descriptor(OCI_MANIFEST, amd64_body), "platform": {"architecture": "amd64", "os": "linux"}},
            {
                **descriptor(OCI_MANIFEST, arm_body),
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
        ],
    }
    top, body = push_manifest(http, "multi", "latest", index)
    m = http.get(f"/acr/v1/multi/_manifests/{top}").json()["manifest"]
    assert m["mediaType"] == OCI_INDEX and m["imageSize"] == len(body) and m["tags"] == ["latest"]
    assert m["references"] == [
        {"digest": amd64, "architecture": "amd64", "os": "linux"},
        {"digest": arm64, "architecture": "arm64", "os": "linux"},
    ]
    assert "architecture" not in m and "configMediaType" not in m


def test_manifest_list_orders_pages_and_names_tags(registry: RegistryClient) -> None:
    http = registry.http
    digests = []
    for tag in ["one", "two", "three"]:
        digests.append(push(http, "app", tag))
        time.sleep(0.005)
    http.put(f"/v2/app/manifests/{digests[0]}", params={"tag": "first"},
             content=http.get(f"/v2/app/manifests/{digests[0]}").content,
             headers={"Content-Type": OCI_MANIFEST})  # fmt: skip
    # The re-push moved the first manifest's lastUpdateTime: it is now the newest.
    newest_first = [digests[0], digests[2], digests[1]]
    found, links = follow(http, "/acr/v1/app/_manifests?n=2&orderby=timedesc", "manifests")
    assert [m["digest"] for m in found] == newest_first and len(links) == 1
    found, _ = follow(http, "/acr/v1/app/_manifests?n=1&orderby=timeasc", "manifests")
    assert [m["digest"] for m in found] == newest_first[::-1]
    found, links = follow(http, "/acr/v1/app/_manifests?n=2", "manifests")
    assert [m["digest"] for m in found] == sorted(digests)
    assert links[0].startswith(f"</acr/v1/app/_manifests?last={quote(sorted(digests)[1], safe='')}&n=2>")
    tags = {m["digest"]: m["tags"] for m in found}
    assert tags[digests[0]] == ["first", "one"] and tags[digests[1]] == ["two"]


def test_patch_manifest_and_quarantine_fields(registry: RegistryClient) -> None:
    http = registry.http
    digest = push(http, "app", "v1")
    body = patch(http, f"/acr/v1/app/_manifests/{digest}", deleteEnabled=False, listEnabled=False)["manifest"]
    assert body["changeableAttributes"] == ALL_ENABLED | {"deleteEnabled": False, "listEnabled": False}
    details = json.dumps({"state": "scan passed"})
    body = patch(http, f"/acr/v1/app/_manifests/{digest}", quarantineState="Passed", quarantineDetails=details)
    attributes = body["manifest"]["changeableAttributes"]
    assert attributes["quarantineState"] == "Passed" and attributes["quarantineDetails"] == details
    assert attributes["deleteEnabled"] is False
    # A push of the same manifest again keeps its attributes.
    push_manifest(http, "app", "v2", json.loads(http.get(f"/v2/app/manifests/{digest}").content))
    again = http.get(f"/acr/v1/app/_manifests/{digest}").json()["manifest"]
    assert again["changeableAttributes"] == attributes and again["tags"] == ["v1", "v2"]


# --- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"writeEnabled": "false"}', "application/json"),
        (b'{"writeEnabled": 0}', "application/json"),
        (b'{"lockEnabled": false}', "application/json"),
        (b'[{"writeEnabled": false}]', "application/json"),
        (b'"writeEnabled"', "application/json"),
        (b'{"quarantineState": "Passed"}', "application/json"),  # manifests only
        (b"x" * 70_000, "application/json"),
    ],
)
def test_bad_patch_bodies_are_400(registry: RegistryClient, body: bytes, content_type: str) -> None:
    http = registry.http
    push(http, "app", "v1")
    for path in ("/acr/v1/app", "/acr/v1/app/_tags/v1"):
        response = http.patch(path, content=body, headers={"Content-Type": content_type})
        assert_error(response, 400, "UNSUPPORTED")
    assert http.get("/acr/v1/app/_tags/v1").json()["tag"]["changeableAttributes"] == ALL_ENABLED


def test_bad_manifest_patch_bodies_are_400(registry: RegistryClient) -> None:
    http = registry.http
    digest = push(http, "app", "v1")
    for body in ({"quarantineState": ""}, {"quarantineState": "Pass ed"}, {"quarantineDetails": 7}, {"x": 1}):
        assert_error(http.patch(f"/acr/v1/app/_manifests/{digest}", json=body), 400, "UNSUPPORTED")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/acr/v1/Bad/Name", 400, "NAME_INVALID"),
        ("GET", "/acr/v1/app..x/_tags", 400, "NAME_INVALID"),
        ("GET", "/acr/v1/app/_tags/-bad", 400, "TAG_INVALID"),
        ("PATCH", f"/acr/v1/app/_tags/{'x' * 129}", 400, "TAG_INVALID"),
        ("GET", "/acr/v1/app/_manifests/latest", 400, "DIGEST_INVALID"),
        ("DELETE", "/acr/v1/app/_manifests/sha256:abc", 400, "DIGEST_INVALID"),
        ("GET", "/acr/v1/app/_tags?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
        ("GET", "/acr/v1/app/_tags?n=ten", 400, "PAGINATION_NUMBER_INVALID"),
        ("GET", "/acr/v1/_catalog?n=1e3", 400, "PAGINATION_NUMBER_INVALID"),
        ("GET", "/acr/v1/app/_tags?orderby=time_desc", 400, "UNSUPPORTED"),
        ("GET", "/acr/v1/app/_manifests?orderby=TIMEDESC", 400, "UNSUPPORTED"),
        ("GET", "/acr/v1/app/_tags?digest=sha256:xyz", 400, "DIGEST_INVALID"),
        ("GET", f"/acr/v1/app/_tags?last={'a' * 600}", 400, "UNSUPPORTED"),
        ("GET", "/acr/v1/app/_tags?orderby=timedesc&last=yesterday|v1", 400, "UNSUPPORTED"),
        ("GET", "/acr/v1/app/_tags?last=%00", 400, "UNSUPPORTED"),
        ("PUT", "/acr/v1/app", 405, "UNSUPPORTED"),
        ("POST", "/acr/v1/app/_tags", 405, "UNSUPPORTED"),
        ("PATCH", "/acr/v1/_catalog", 405, "UNSUPPORTED"),
    ],
)
def test_bad_requests_are_4xx_never_500(
    registry: RegistryClient, method: str, path: str, status: int, code: str
) -> None:
    push(registry.http, "app", "v1")
    response = registry.http.request(method, path, content=b"{}" if method in ("PATCH", "PUT", "POST") else None)
    assert_error(response, status, code)


# --- locks: write and delete -----------------------------------------------------------------------------
def test_write_locked_tag_cannot_be_overwritten_or_deleted(registry: RegistryClient) -> None:
    http = registry.http
    locked = push(http, "app", "v1")
    patch(http, "/acr/v1/app/_tags/v1", writeEnabled=False)
    other = image_manifest(http, "app")
    body = encode(other)
    assert_locked(put_manifest(http, "app", "v1", body), "writeEnabled")
    assert_locked(put_manifest(http, "app", digest_of(body), body, tag="v1"), "writeEnabled")  # ?tag= too
    assert http.get("/v2/app/manifests/v1").headers["Docker-Content-Digest"] == locked
    assert push(http, "app", "v2") != locked  # other tags are not locked
    assert_locked(http.delete("/v2/app/manifests/v1"), "writeEnabled")
    assert_locked(http.delete("/acr/v1/app/_tags/v1"), "writeEnabled")
    # Deleting the manifest would delete the tag: refused too, by /v2/ and /acr/v1/.
    assert_locked(http.delete(f"/v2/app/manifests/{locked}"), "writeEnabled")
    assert_locked(http.delete(f"/acr/v1/app/_manifests/{locked}"), "writeEnabled")
    assert_locked(http.delete("/acr/v1/app"), "writeEnabled")
    assert http.get("/v2/app/manifests/v1").status_code == 200
    # Unlocked, it moves and deletes as before.
    patch(http, "/acr/v1/app/_tags/v1", writeEnabled=True)
    assert put_manifest(http, "app", "v1", body).status_code == 201
    assert http.delete("/v2/app/manifests/v1").status_code == 202


def test_delete_locked_tag_can_move_but_not_be_deleted(registry: RegistryClient) -> None:
    http = registry.http
    first = push(http, "app", "v1")
    patch(http, "/acr/v1/app/_tags/v1", deleteEnabled=False)
    second = push(http, "app", "v1")  # deleteEnabled=false alone allows updates
    assert second != first
    assert http.get("/acr/v1/app/_tags/v1").json()["tag"]["changeableAttributes"]["deleteEnabled"] is False
    assert_locked(http.delete("/acr/v1/app/_tags/v1"), "deleteEnabled")
    assert_locked(http.delete(f"/v2/app/manifests/{second}"), "deleteEnabled")
    assert http.delete(f"/v2/app/manifests/{first}").status_code == 202  # no tag of it is locked now


def test_delete_locked_manifest_survives_every_delete(registry: RegistryClient) -> None:
    http = registry.http
    digest = push(http, "app", "v1")
    patch(http, f"/acr/v1/app/_manifests/{digest}", deleteEnabled=False)
    assert_locked(http.delete(f"/v2/app/manifests/{digest}"), "deleteEnabled")
    assert_locked(http.delete(f"/acr/v1/app/_manifests/{digest}"), "deleteEnabled")
    assert_locked(http.delete("/acr/v1/app"), "deleteEnabled")
    assert http.get("/acr/v1/app").json()["manifestCount"] == 1  # the repository delete deleted nothing
    # Its tag is not locked: untagging is allowed (tag and manifest attributes are separate).
    assert http.delete("/acr/v1/app/_tags/v1").status_code == 202
    assert http.get(f"/v2/app/manifests/{digest}").status_code == 200
    patch(http, f"/acr/v1/app/_manifests/{digest}", deleteEnabled=True, writeEnabled=False)
    assert_locked(http.delete(f"/v2/app/manifests/{digest}"), "writeEnabled")
    # A write-locked manifest cannot be pushed again either (under any tag).
    assert_locked(put_manifest(http, "app", "v9", http.get(f"/v2/app/manifests/{digest}").content), "writeEnabled")


def test_repository_locks(registry: RegistryClient) -> None:
    http = registry.http
    digest = push(http, "app", "v1")
    push(http, "app", "v2")
    patch(http, "/acr/v1/app", deleteEnabled=False)
    assert_locked(http.delete("/acr/v1/app"), "deleteEnabled")
    # "Individual images can still be updated or deleted" (ACR's docs on a delete-locked repository).
    assert http.delete("/v2/app/manifests/v2").status_code == 202
    push(http, "app", "v3")
    unpushed = image_manifest(http, "app")  # its blobs uploaded before the lock
    patch(http, "/acr/v1/app", deleteEnabled=True, writeEnabled=False)
    body = http.get("/acr/v1/app").json()
    assert body["changeableAttributes"] == ALL_ENABLED | {"writeEnabled": False}
    assert_locked(put_manifest(http, "app", "v4", encode(unpushed)), "writeEnabled")
    # a push is refused at its first blob, not after all of them were uploaded (uploads and mounts alike)
    assert_locked(http.post("/v2/app/blobs/uploads/"), "writeEnabled")
    assert_locked(
        http.post("/v2/app/blobs/uploads/", params={"mount": unpushed["layers"][0]["digest"]}), "writeEnabled"
    )
    assert_locked(http.delete("/v2/app/manifests/v1"), "writeEnabled")
    assert_locked(http.delete(f"/v2/app/manifests/{digest}"), "writeEnabled")
    assert_locked(http.delete("/acr/v1/app/_tags/v3"), "writeEnabled")
    assert_locked(http.delete("/acr/v1/app"), "writeEnabled")
    assert http.get("/v2/app/manifests/v1").status_code == 200  # reads are not writes
    layer = unpushed["layers"][0]["digest"]
    assert http.head(f"/v2/app/blobs/{layer}").status_code == 200
    patch(http, "/acr/v1/app", writeEnabled=True, readEnabled=False)
    # "no pull at all": blobs too, not only manifests
    assert http.head(f"/v2/app/blobs/{layer}").status_code == 405
    assert_locked(http.get(f"/v2/app/blobs/{layer}"), "readEnabled")
    patch(http, "/acr/v1/app", readEnabled=True)
    assert http.post("/v2/app/blobs/uploads/").status_code == 202


def test_locked_images_keep_their_blobs(registry: RegistryClient) -> None:
    http = registry.http
    manifest = image_manifest(http, "app")
    digest, _ = push_manifest(http, "app", "v1", manifest)
    layer = manifest["layers"][0]["digest"]
    patch(http, "/acr/v1/app/_tags/v1", writeEnabled=False)
    assert_error(http.delete(f"/v2/app/blobs/{layer}"), 405, "UNSUPPORTED")
    patch(http, "/acr/v1/app/_tags/v1", writeEnabled=True)
    patch(http, f"/acr/v1/app/_manifests/{digest}", deleteEnabled=False)
    assert_error(http.delete(f"/v2/app/blobs/{layer}"), 405, "UNSUPPORTED")
    patch(http, f"/acr/v1/app/_manifests/{digest}", deleteEnabled=True)
    loose = push_blob(http, "app", b"not in any manifest")
    patch(http, "/acr/v1/app", writeEnabled=False)
    assert_error(http.delete(f"/v2/app/blobs/{loose}"), 405, "UNSUPPORTED")
    patch(http, "/acr/v1/app", writeEnabled=True)
    assert http.delete(f"/v2/app/blobs/{loose}").status_code == 202
    assert http.head(f"/v2/app/blobs/{layer}").status_code == 200


# --- locks: list and read --------------------------------------------------------------------------------
def test_list_disabled_things_are_absent_from_lists_but_readable(registry: RegistryClient) -> None:
    http = registry.http
    hidden = push(http, "app", "hidden")
    shown = push(http, "app", "shown")
    push(http, "other", "v1")
    patch(http, "/acr/v1/app/_tags/hidden", listEnabled=False)
    assert http.get("/v2/app/tags/list").json()["tags"] == ["shown"]
    assert [t["name"] for t in http.get("/acr/v1/app/_tags").json()["tags"]] == ["shown"]
    assert http.get("/acr/v1/app/_tags/hidden").status_code == 200
    assert http.get("/v2/app/manifests/hidden").status_code == 200
    patch(http, f"/acr/v1/app/_manifests/{shown}", listEnabled=False)
    assert [m["digest"] for m in http.get("/acr/v1/app/_manifests").json()["manifests"]] == [hidden]
    assert http.get(f"/acr/v1/app/_manifests/{shown}").status_code == 200
    patch(http, "/acr/v1/app", listEnabled=False)
    assert http.get("/v2/_catalog").json()["repositories"] == ["other"]
    assert http.get("/acr/v1/_catalog").json()["repositories"] == ["other"]
    assert http.get("/v2/app/tags/list").json() == {"name": "app", "tags": []}
    assert http.get("/acr/v1/app/_tags").json()["tags"] == []
    assert http.get("/acr/v1/app/_manifests").json()["manifests"] == []
    assert http.get("/acr/v1/app").json()["tagCount"] == 2  # counted all the same


def test_read_disabled_tags_manifests_and_repositories_are_refused_on_pull(registry: RegistryClient) -> None:
    http = registry.http
    digest = push(http, "app", "v1")
    patch(http, "/acr/v1/app/_tags/v1", readEnabled=False)
    assert_locked(http.get("/v2/app/manifests/v1"), "readEnabled")
    head = http.head("/v2/app/manifests/v1")
    assert head.status_code == 405 and not head.content
    assert http.get(f"/v2/app/manifests/{digest}").status_code == 200  # by digest: the manifest's own lock
    patch(http, "/acr/v1/app/_tags/v1", readEnabled=True)
    patch(http, f"/acr/v1/app/_manifests/{digest}", readEnabled=False)
    assert_locked(http.get(f"/v2/app/manifests/{digest}"), "readEnabled")
    assert http.head(f"/v2/app/manifests/{digest}").status_code == 405
    assert http.get("/v2/app/manifests/v1").status_code == 200
    patch(http, f"/acr/v1/app/_manifests/{digest}", readEnabled=True)
    patch(http, "/acr/v1/app", readEnabled=False)
    assert_locked(http.get("/v2/app/manifests/v1"), "readEnabled")
    assert_locked(http.get(f"/v2/app/manifests/{digest}"), "readEnabled")
    assert http.get("/acr/v1/app/_tags/v1").status_code == 200  # the metadata stays readable
    patch(http, "/acr/v1/app", readEnabled=True)
    assert http.get("/v2/app/manifests/v1").status_code == 200


# --- repository delete -----------------------------------------------------------------------------------
async def test_repository_delete_removes_everything_and_raises_delete_events(
    registry: RegistryClient, stores: Stores
) -> None:
    http = registry.http
    one = push(http, "team/app", "v1")
    two = push(http, "team/app", "v2")
    push_manifest(http, "team/app", "v3", json.loads(http.get(f"/v2/team/app/manifests/{two}").content))
    push(http, "team/app/sub", "v1")  # a repository whose name extends it stays
    response = http.delete("/acr/v1/team/app")
    assert response.status_code == 202, response.text
    body = response.json()
    assert sorted(body["manifestsDeleted"]) == sorted([one, two])
    assert sorted(body["tagsDeleted"]) == ["v1", "v2", "v3"]
    assert_error(http.get("/acr/v1/team/app"), 404, "NAME_UNKNOWN")
    assert_error(http.get("/v2/team/app/tags/list"), 404, "NAME_UNKNOWN")
    assert http.get(f"/v2/team/app/manifests/{one}").status_code == 404
    assert http.get("/acr/v1/_catalog").json()["repositories"] == ["team/app/sub"]
    deletes = {(action, digest) for action, _, digest in await outbox_actions(stores, registry.name, "team/app")}
    assert {("delete", one), ("delete", two)} <= deletes
    assert_error(http.delete("/acr/v1/team/app"), 404, "NAME_UNKNOWN")
    # The name can be used again.
    push(http, "team/app", "v1")
    assert http.get("/acr/v1/team/app").json()["tagCount"] == 1


# --- races -----------------------------------------------------------------------------------------------
async def test_a_write_that_read_before_a_lock_cannot_land_after_it(registry: RegistryClient, stores: Stores) -> None:
    """A push or delete checks the locks on what it read, and its batch applies only if that still holds (a
    push: the tag is still not write-locked; a delete: the documents are unchanged, by ETag). One that read
    the tag just before a lock was set fails with ConcurrentUpdate (and the route looks again)."""
    http = registry.http
    push(http, "app", "v1")
    store, repo = ArtifactStore(stores.metadata), repo_key(registry.name, "app")
    stale = await store.get_tag(repo, "v1")
    manifest = await store.get_manifest(repo, stale.digest) if stale else None
    assert stale is not None and manifest is not None
    patch(http, "/acr/v1/app/_tags/v1", writeEnabled=False)
    with pytest.raises(ConcurrentUpdate):
        await store.commit_manifest(manifest, [stale.model_copy(update={"updated": utcnow()})])
    with pytest.raises(ConcurrentUpdate):
        await store.delete_manifest(manifest, [stale])
    fresh = http.get("/acr/v1/app/_tags/v1").json()["tag"]
    assert fresh["changeableAttributes"]["writeEnabled"] is False and fresh["digest"] == stale.digest
    # A tag someone else created meanwhile is not overwritten either: without an ETag the batch creates it.
    current = await store.get_manifest(repo, stale.digest)
    assert current is not None
    with pytest.raises(ConcurrentUpdate):
        await store.commit_manifest(current, [stale.model_copy(update={"etag": None})])


async def test_concurrent_pushes_of_one_tag_all_succeed(registry: RegistryClient) -> None:
    http = registry.http
    bodies = [encode(image_manifest(http, "app")) for _ in range(6)]
    async with httpx.AsyncClient(base_url=str(http.base_url), headers={"Host": http.headers["Host"]}) as client:
        replies = await asyncio.gather(
            *(
                client.put("/v2/app/manifests/latest", content=body, headers={"Content-Type": OCI_MANIFEST})
                for body in bodies
            )
        )
    assert [reply.status_code for reply in replies] == [201] * len(bodies), [r.text for r in replies]
    final = http.get("/acr/v1/app/_tags/latest").json()["tag"]["digest"]
    assert final in {digest_of(body) for body in bodies}
    assert http.get("/acr/v1/app").json()["manifestCount"] == len(bodies)
