"""Repository names, tags, references and URL routing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.registry.digest import Digest
from services.registry.errors import ErrorCode, RegistryError
from services.registry.reference import (
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    TAG_PATTERN,
    Reference,
    RouteMatch,
    is_tag,
    match_route,
    validate_repository_name,
)

DIGEST = f"sha256:{hashlib.sha256(b'x').hexdigest()}"

# --- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "0",
        "library/ubuntu",
        "a/b/c/d/e/f",
        "my-app",
        "my--app",
        "my_app",
        "my__app",
        "my.app",
        "a.b-c_d__e---f",
        "samples/hello-world",
        "marketing/campaign10-18/web",
        "blobs/uploads",
        "manifests",
        "a" * MAX_NAME_LENGTH,
    ],
)
def test_valid_names(name: str) -> None:
    assert validate_repository_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Library/ubuntu",
        "UPPER",
        "-a",
        "a-",
        "a.",
        ".a",
        "_a",
        "a___b",
        "a..b",
        "a._b",
        "a/",
        "/a",
        "a//b",
        "a b",
        "a\n",
        "a\nb",
        "ubuntu:latest",
        "a@sha256",
        "caf\u00e9",
        "\u0430",  # Cyrillic a
        "\uff41",  # fullwidth a
        "a" * (MAX_NAME_LENGTH + 1),
        "a/" * 200 + "a",
        "_catalog",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(RegistryError) as info:
        validate_repository_name(name)
    assert info.value.code is ErrorCode.NAME_INVALID
    assert info.value.status == 400
    assert len(info.value.message) < 600


def test_non_string_name() -> None:
    with pytest.raises(RegistryError):
        validate_repository_name(None)  # type: ignore[arg-type]


def test_long_hostile_name_is_rejected_quickly() -> None:
    # A pathological input for naive backtracking is bounded by the length check first.
    with pytest.raises(RegistryError):
        validate_repository_name("a-" * 100_000 + "!")


# --- tags and references -----------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["latest", "v1.0.0", "_", "A", "0", "a" * 128, "1.2.3-rc.1_build.5", "SHA256"])
def test_valid_tags(tag: str) -> None:
    assert is_tag(tag)
    assert Reference.parse(tag) == Reference(tag=tag)
    assert str(Reference.parse(tag)) == tag


@pytest.mark.parametrize("tag", ["", ".a", "-a", "a" * 129, "a/b", "a b", "a\n", "t\u00e4g", "a+b", "a@b"])
def test_invalid_tags(tag: str) -> None:
    assert not is_tag(tag)
    with pytest.raises(RegistryError) as info:
        Reference.parse(tag)
    # Documented choice: a malformed tag names no manifest, so 404 MANIFEST_UNKNOWN on a read...
    assert info.value.code is ErrorCode.MANIFEST_UNKNOWN
    assert info.value.status == 404
    # ...but a write with it is the client's error (issue 10): 400 TAG_INVALID.
    with pytest.raises(RegistryError) as info:
        Reference.parse(tag, writing=True)
    assert info.value.code is ErrorCode.TAG_INVALID
    assert info.value.status == 400


def test_is_tag_rejects_non_strings() -> None:
    assert not is_tag(None)  # type: ignore[arg-type]


def test_digest_reference() -> None:
    reference = Reference.parse(DIGEST)
    assert reference.digest == Digest.parse(DIGEST)
    assert reference.tag is None
    assert reference.is_digest
    assert str(reference) == DIGEST


@pytest.mark.parametrize("text", ["sha256:abc", "sha256:" + "A" * 64, "md5:" + "a" * 32, ":", "a:b", "latest:"])
def test_bad_digest_references(text: str) -> None:
    with pytest.raises(RegistryError) as info:
        Reference.parse(text)
    assert info.value.code is ErrorCode.DIGEST_INVALID


def test_reference_needs_exactly_one_part() -> None:
    with pytest.raises(ValueError):
        Reference()
    with pytest.raises(ValueError):
        Reference(tag="a", digest=Digest.parse(DIGEST))
    with pytest.raises(ValueError):
        Reference(tag="-bad")


def test_reference_non_string() -> None:
    with pytest.raises(RegistryError):
        Reference.parse(7)  # type: ignore[arg-type]


@given(st.from_regex(TAG_PATTERN, fullmatch=True))
def test_every_tag_matching_the_pattern_round_trips(tag: str) -> None:
    assert str(Reference.parse(tag)) == tag


@given(st.text())
def test_reference_parse_raises_only_registry_errors(text: str) -> None:
    try:
        reference = Reference.parse(text)
    except RegistryError as exc:
        assert exc.code in (ErrorCode.DIGEST_INVALID, ErrorCode.MANIFEST_UNKNOWN)
    else:
        assert str(reference) == text


@given(st.text())
def test_name_validation_raises_only_registry_errors(text: str) -> None:
    try:
        assert validate_repository_name(text) == text
    except RegistryError as exc:
        assert exc.code is ErrorCode.NAME_INVALID


# --- routes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/", RouteMatch("base")),
        ("/v2", RouteMatch("base")),
        ("/v2/_catalog", RouteMatch("catalog")),
        ("/v2/_catalog?n=10", RouteMatch("catalog")),
        ("/v2/library/ubuntu/tags/list", RouteMatch("tags", "library/ubuntu")),
        ("/v2/a/b/c/manifests/latest", RouteMatch("manifest", "a/b/c", "latest")),
        (f"/v2/x/manifests/{DIGEST}", RouteMatch("manifest", "x", DIGEST)),
        (f"/v2/x/blobs/{DIGEST}", RouteMatch("blob", "x", DIGEST)),
        ("/v2/x/blobs/uploads/", RouteMatch("upload", "x")),
        ("/v2/x/blobs/uploads", RouteMatch("upload", "x")),
        ("/v2/x/blobs/uploads/?digest=sha256:abc", RouteMatch("upload", "x")),
        ("/v2/x/blobs/uploads/0123abcd", RouteMatch("upload_session", "x", "0123abcd")),
        (f"/v2/x/referrers/{DIGEST}", RouteMatch("referrers", "x", DIGEST)),
        # Names that contain the route keywords.
        ("/v2/blobs/blobs/uploads/", RouteMatch("upload", "blobs")),
        ("/v2/a/blobs/uploads/blobs/uploads/", RouteMatch("upload", "a/blobs/uploads")),
        ("/v2/a/manifests/manifests/latest", RouteMatch("manifest", "a/manifests", "latest")),
        ("/v2/a/tags/list/tags/list", RouteMatch("tags", "a/tags/list")),
        ("/v2/a/blobs/tags/list", RouteMatch("tags", "a/blobs")),
        ("/v2/a/blobs/uploads/uploads", RouteMatch("upload_session", "a", "uploads")),
        ("/v2/a/manifests/list", RouteMatch("manifest", "a", "list")),
        # Not validated here: the route layer reports NAME_INVALID.
        ("/v2/UPPER/manifests/latest", RouteMatch("manifest", "UPPER", "latest")),
        ("/v2/a//b/manifests/latest", RouteMatch("manifest", "a//b", "latest")),
    ],
)
def test_match_route(path: str, expected: RouteMatch) -> None:
    assert match_route(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "/v1/",
        "/v2x/",
        "/v3/a/manifests/latest",
        "/v2/a",
        "/v2/a/",
        "/v2/a/manifests",
        "/v2/a/manifests/",
        "/v2/manifests/latest",
        "/v2/tags/list",
        "/v2/blobs/uploads/",
        "/v2/blobs/uploads/abc",
        "/v2/a/blobs/",
        "/v2/a/tags/list/",
        "/v2/a/referrers/",
        "/v2/a/unknown/x",
        "/v2/_catalog/",
        "v2/a/manifests/latest",
    ],
)
def test_unknown_paths(path: str) -> None:
    assert match_route(path) is None


KEYWORDS = ["blobs", "uploads", "manifests", "tags", "list", "referrers", "v2"]
component = st.one_of(
    st.sampled_from(KEYWORDS),
    st.from_regex(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*", fullmatch=True).filter(lambda c: len(c) <= 40),
)
names = st.lists(component, min_size=1, max_size=6).map("/".join)
tags = st.from_regex(TAG_PATTERN, fullmatch=True) | st.sampled_from(KEYWORDS)
digests = st.binary().map(lambda data: str(Digest.of(data)))
session_ids = st.from_regex(r"[0-9a-f]{32}", fullmatch=True) | st.sampled_from(["uploads", "blobs", "list"])


@given(names)
def test_generated_names_are_valid(name: str) -> None:
    assume(len(name) <= MAX_NAME_LENGTH)
    assert NAME_PATTERN.fullmatch(name)
    assert validate_repository_name(name) == name


@given(name=names, tag=tags, digest=digests, session=session_ids)
def test_every_valid_name_round_trips_through_every_route(name: str, tag: str, digest: str, session: str) -> None:
    cases = [
        (f"/v2/{name}/tags/list", RouteMatch("tags", name)),
        (f"/v2/{name}/manifests/{tag}", RouteMatch("manifest", name, tag)),
        (f"/v2/{name}/manifests/{digest}", RouteMatch("manifest", name, digest)),
        (f"/v2/{name}/blobs/{digest}", RouteMatch("blob", name, digest)),
        (f"/v2/{name}/blobs/uploads/", RouteMatch("upload", name)),
        (f"/v2/{name}/blobs/uploads/{session}", RouteMatch("upload_session", name, session)),
        (f"/v2/{name}/referrers/{digest}", RouteMatch("referrers", name, digest)),
    ]
    for path, expected in cases:
        assert match_route(path) == expected, path


@given(st.text())
def test_match_route_never_raises(text: str) -> None:
    for path in (text, "/v2/" + text):
        route = match_route(path)
        if route is not None:
            assert route.kind in {
                "base",
                "catalog",
                "tags",
                "manifest",
                "blob",
                "upload",
                "upload_session",
                "referrers",
            }
            assert route.name is None or route.name != ""
