"""The pure parts of the `/acr/v1/` API: path matching, list parameters and time cursors
(services/registry/acr_paths.py), the lock rules and PATCH bodies (services/registry/locks.py), and what
is worked out of a manifest at push (services/registry/manifest_facts.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from services.registry.acr_paths import (
    DEFAULT_PAGE,
    MAX_PAGE,
    AcrRoute,
    ListQuery,
    Order,
    cursor,
    list_query,
    match_acr_route,
    next_link,
    tag_reference,
    time_key,
)
from services.registry.errors import RegistryError
from services.registry.locks import (
    DISALLOWED,
    AttributesPatch,
    ChangeableAttributes,
    ManifestAttributesPatch,
    check_blob_delete,
    check_manifest_delete,
    check_push,
    check_read,
    check_repository_delete,
    check_untag,
    parse_patch,
)
from services.registry.manifest import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, parse_manifest
from services.registry.manifest_facts import image_size, index_references, platform_from_config, wants_config

D = "sha256:" + "a" * 64
OPEN = ChangeableAttributes()


def off(**names: bool) -> ChangeableAttributes:
    return ChangeableAttributes(**{name: False for name in names})


# --- paths -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/acr/v1/_catalog", AcrRoute("acr_catalog")),
        ("/acr/v1/app", AcrRoute("acr_repository", "app")),
        ("/acr/v1/team/sub/app", AcrRoute("acr_repository", "team/sub/app")),
        ("/acr/v1/team/app/_tags", AcrRoute("acr_tags", "team/app")),
        ("/acr/v1/team/app/_tags/v1.0", AcrRoute("acr_tag", "team/app", "v1.0")),
        ("/acr/v1/team/app/_manifests", AcrRoute("acr_manifests", "team/app")),
        (f"/acr/v1/team/app/_manifests/{D}", AcrRoute("acr_manifest", "team/app", D)),
        ("/acr/v1/app/_tags?n=1", AcrRoute("acr_tags", "app")),
        ("/acr/v1/_deleted/_catalog", AcrRoute("acr_deleted_catalog")),
        ("/acr/v1/_deleted/team/app/_manifests", AcrRoute("acr_deleted_manifests", "team/app")),
        ("/acr/v1/_deleted/team/app/_tags", AcrRoute("acr_deleted_tags", "team/app")),
        (f"/acr/v1/_deleted/team/app/_manifests/{D}", AcrRoute("acr_deleted_manifest", "team/app", D)),
        # names may look like endpoints only where they cannot be: `_tags` as the name's last part is not one
        ("/acr/v1/_tags/_tags", AcrRoute("acr_tags", "_tags")),
    ],
)
def test_paths_match_from_the_end(path: str, route: AcrRoute) -> None:
    assert match_acr_route(path) == route


@pytest.mark.parametrize(
    "path",
    ["/acr/v1/", "/acr/v1", "/v2/app/tags/list", "/acr/v1/_tags", "/acr/v1/_catalog/x", "/acr/v1/a//b",
     "/acr/v1/app/", "/acr/v1/app/_tags/v1/x", "/acr/v2/app", "/acr/v1/app/_blobs/x", "/acr/v1/_deleted/",
     "/acr/v1/_deleted/app", "/acr/v1/_deleted/a//b/_tags", "/acr/v1/_deleted/app/_tags/v1", "/acr/v1/_deleted/x/y"],
)  # fmt: skip
def test_other_paths_are_no_route(path: str) -> None:
    assert match_acr_route(path) is None


# --- list parameters -------------------------------------------------------------------------------------
def test_list_query_defaults_and_caps() -> None:
    assert list_query(QueryParams("")) == ListQuery(DEFAULT_PAGE, "", Order.NAME)
    assert list_query(QueryParams("n=5000")).n == MAX_PAGE
    assert list_query(QueryParams("n=0")).n == 0
    # orderby and digest only where the endpoint has them
    assert list_query(QueryParams("orderby=bogus&digest=x")).order is Order.NAME
    query = list_query(QueryParams(f"orderby=timeasc&digest={D}&last=v1"), ordered=True, by_digest=True)
    assert query == ListQuery(DEFAULT_PAGE, "v1", Order.TIME_ASC, D)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("n=-1", "PAGINATION_NUMBER_INVALID"),
        ("n=1.5", "PAGINATION_NUMBER_INVALID"),
        ("n=%EF%BC%91", "PAGINATION_NUMBER_INVALID"),  # a fullwidth digit is not a number here
        ("n=9999999999", "PAGINATION_NUMBER_INVALID"),
        ("orderby=time_desc", "UNSUPPORTED"),
        ("orderby=TIMEDESC", "UNSUPPORTED"),
        ("digest=sha256:zz", "DIGEST_INVALID"),
        ("last=" + "x" * 513, "UNSUPPORTED"),
        ("last=a%0Ab", "UNSUPPORTED"),
    ],
)
def test_bad_list_parameters(query: str, code: str) -> None:
    with pytest.raises(RegistryError) as caught:
        list_query(QueryParams(query), ordered=True, by_digest=True)
    assert caught.value.code.wire_code == code and caught.value.status == 400


def test_time_cursors() -> None:
    key = time_key("2024-05-01T10:00:00.123Z", "v1")
    assert key == "2024-05-01T10:00:00.123Z|v1"
    assert cursor(key) == key
    assert cursor(time_key("2024-05-01T10:00:00.123Z", D)) is not None
    assert cursor("v1") is None  # a plain name
    for bad in ("yesterday|v1", "2024-05-01T10:00:00Z|", "2024-05-01T10:00:00Z|a|b"):
        with pytest.raises(RegistryError):
            cursor(bad)


@given(
    st.lists(
        st.tuples(st.integers(0, 999), st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)),
        unique_by=lambda pair: pair[1],
        min_size=2,
    )
)
def test_time_keys_sort_by_time_then_name(items: list[tuple[int, str]]) -> None:
    # One property orders a time-ordered list; within a timestamp it must still order (by name), so that a
    # page boundary inside a tie is exact.
    stamped = [(f"2024-01-01T00:00:00.{ms:03d}Z", name) for ms, name in items]
    assert sorted(stamped, key=lambda pair: time_key(*pair)) == sorted(stamped)


def test_next_link_keeps_order_and_quotes() -> None:
    query = ListQuery(2, "", Order.TIME_DESC, D)
    link = next_link("/acr/v1/team/app/_tags", query, "2024-05-01T10:00:00.123Z|v1")
    assert link == {
        "Link": "</acr/v1/team/app/_tags?last=2024-05-01T10%3A00%3A00.123Z%7Cv1&n=2&orderby=timedesc"
        f'&digest=sha256%3A{"a" * 64}>; rel="next"'
    }
    assert next_link("/acr/v1/_catalog", ListQuery(3, "", Order.NAME), "a/b") == {
        "Link": '</acr/v1/_catalog?last=a%2Fb&n=3>; rel="next"'
    }


def test_tag_reference() -> None:
    assert tag_reference("v1.0_x-y") == "v1.0_x-y"
    for bad in ("-v", ".v", "a" * 129, "a:b", ""):
        with pytest.raises(RegistryError) as caught:
            tag_reference(bad)
        assert caught.value.code.wire_code == "TAG_INVALID"


# --- PATCH bodies ----------------------------------------------------------------------------------------
def test_patch_is_partial() -> None:
    current = off(deleteEnabled=True)
    merged = current.merged(parse_patch(b'{"writeEnabled": false}', AttributesPatch))
    assert merged == off(deleteEnabled=True, writeEnabled=True)
    assert current.merged(parse_patch(b'{"writeEnabled": null}', AttributesPatch)) == current
    assert current.merged(parse_patch(b"", AttributesPatch)) == current
    assert current.merged(parse_patch(b"null", AttributesPatch)) == current
    patch = parse_patch(b'{"readEnabled": true, "quarantineState": "Passed"}', ManifestAttributesPatch)
    assert patch.quarantineState == "Passed"
    assert off(readEnabled=True).merged(patch) == OPEN


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'"x"', b"1", b'{"writeEnabled": "false"}', b'{"writeEnabled": 1}', b'{"WriteEnabled": false}',
     b'{"quarantineState": "Passed"}', b"{}" + b" " * 70_000],
)  # fmt: skip
def test_bad_patch_bodies(body: bytes) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_patch(body, AttributesPatch)
    assert caught.value.status == 400 and caught.value.code.wire_code == "UNSUPPORTED"


# --- the lock rules --------------------------------------------------------------------------------------
def refused(check: object, *args: object) -> str | None:
    """The attribute that refused, or None."""
    try:
        check(*args)  # type: ignore[operator]
    except RegistryError as error:
        assert error.status == 405 and error.code.wire_code == "UNSUPPORTED"
        assert error.message.startswith(DISALLOWED)
        return str(error.body()["errors"][0]["detail"]["attribute"])
    return None


def test_push_rules() -> None:
    assert refused(check_push, "r", OPEN, D, None, [("v1", None)]) is None
    assert refused(check_push, "r", off(writeEnabled=True), D, None, []) == "writeEnabled"
    assert refused(check_push, "r", OPEN, D, off(writeEnabled=True), []) == "writeEnabled"
    assert refused(check_push, "r", OPEN, D, None, [("new", None), ("v1", off(writeEnabled=True))]) == "writeEnabled"
    # deleteEnabled, listEnabled, readEnabled do not stop a push
    locked = off(deleteEnabled=True, listEnabled=True, readEnabled=True)
    assert refused(check_push, "r", locked, D, locked, [("v1", locked)]) is None


def test_delete_rules() -> None:
    assert refused(check_untag, "r", OPEN, "v1", OPEN) is None
    assert refused(check_untag, "r", OPEN, "v1", off(deleteEnabled=True)) == "deleteEnabled"
    assert refused(check_untag, "r", OPEN, "v1", off(writeEnabled=True)) == "writeEnabled"
    assert refused(check_untag, "r", off(writeEnabled=True), "v1", OPEN) == "writeEnabled"
    # a delete-locked repository still lets its images go (ACR's docs)
    assert refused(check_untag, "r", off(deleteEnabled=True), "v1", OPEN) is None
    assert refused(check_manifest_delete, "r", off(deleteEnabled=True), D, OPEN, []) is None
    assert refused(check_manifest_delete, "r", OPEN, D, off(deleteEnabled=True), []) == "deleteEnabled"
    assert refused(check_manifest_delete, "r", OPEN, D, OPEN, [("a", OPEN), ("b", off(writeEnabled=True))]) == (
        "writeEnabled"
    )
    assert refused(check_repository_delete, "r", OPEN, [(D, OPEN)], [("a", OPEN)]) is None
    assert refused(check_repository_delete, "r", off(deleteEnabled=True), [], []) == "deleteEnabled"
    assert refused(check_repository_delete, "r", OPEN, [(D, off(writeEnabled=True))], []) == "writeEnabled"
    assert refused(check_repository_delete, "r", OPEN, [], [("a", off(deleteEnabled=True))]) == "deleteEnabled"
    # list and read locks never stop a delete
    assert refused(check_repository_delete, "r", off(listEnabled=True, readEnabled=True), [], []) is None


def test_read_and_blob_rules() -> None:
    assert refused(check_read, "r", OPEN, OPEN, {"tag": "v1"}) is None
    assert refused(check_read, "r", OPEN, off(readEnabled=True), {"tag": "v1"}) == "readEnabled"
    assert refused(check_read, "r", off(readEnabled=True), OPEN, {"digest": D}) == "readEnabled"
    assert refused(check_read, "r", off(writeEnabled=True, deleteEnabled=True), None, {"digest": D}) is None
    assert refused(check_blob_delete, "r", D, OPEN, None) is None
    assert refused(check_blob_delete, "r", D, off(writeEnabled=True), None) == "writeEnabled"
    with pytest.raises(RegistryError) as caught:
        check_blob_delete("r", D, OPEN, ("tag", "v1"))
    assert caught.value.status == 405 and "tag 'v1'" in caught.value.message


# --- manifest facts --------------------------------------------------------------------------------------
def _image(config_size: int, layer_sizes: list[int]) -> bytes:
    def desc(media_type: str, size: int, n: int) -> dict[str, object]:
        return {"mediaType": media_type, "digest": "sha256:" + f"{n:064x}", "size": size}

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc(OCI_CONFIG, config_size, 0),
            "layers": [
                desc("application/vnd.oci.image.layer.v1.tar+gzip", s, i + 1) for i, s in enumerate(layer_sizes)
            ],
        }
    ).encode()


def test_image_facts() -> None:
    manifest = parse_manifest(_image(100, [1000, 20]), OCI_MANIFEST)
    assert image_size(manifest) == 1120
    assert wants_config(manifest) and index_references(manifest) is None
    assert not wants_config(parse_manifest(_image(2 << 20, []), OCI_MANIFEST))  # too big to read at push
    assert platform_from_config(b'{"architecture": "arm64", "os": "linux", "variant": "v8"}') == ("arm64", "linux")
    for config in (None, b"not json", b"[]", b'{"architecture": 7, "os": ""}', b'{"os": "' + b"x" * 65 + b'"}'):
        assert platform_from_config(config) == (None, None)


def test_index_facts() -> None:
    child = {"mediaType": OCI_MANIFEST, "digest": D, "size": 10}
    data = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                child | {"platform": {"architecture": "amd64", "os": "linux"}},
                child | {"digest": "sha256:" + "b" * 64},
            ],
        }
    ).encode()
    manifest = parse_manifest(data, OCI_INDEX)
    assert image_size(manifest) == len(data)
    assert index_references(manifest) == [
        {"digest": D, "architecture": "amd64", "os": "linux"},
        {"digest": "sha256:" + "b" * 64},
    ]
