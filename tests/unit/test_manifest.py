"""Manifest parsing, validation, and the referrers index."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.registry.digest import Digest
from services.registry.errors import ErrorCode, RegistryError
from services.registry.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    EMPTY_JSON_DIGEST,
    HELM_CHART_CONTENT,
    HELM_CONFIG,
    MAX_MANIFEST_SIZE,
    OCI_EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ParsedManifest,
    build_referrers_index,
    parse_manifest,
)


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


CONFIG: dict[str, Any] = {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": digest_of(b"config"),
    "size": 6,
}
LAYER: dict[str, Any] = {
    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
    "digest": digest_of(b"layer"),
    "size": 5,
}
FOREIGN: dict[str, Any] = {
    "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "digest": digest_of(b"foreign"),
    "size": 7,
    "urls": ["https://example.com/layer"],
}
EMPTY: dict[str, Any] = {
    "mediaType": OCI_EMPTY_JSON,
    "digest": str(EMPTY_JSON_DIGEST),
    "size": 2,
    "data": "e30=",
}
SUBJECT: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest_of(b"subject"), "size": 123}


def image(**extra: Any) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CONFIG, "layers": [LAYER], **extra}


def index(**extra: Any) -> dict[str, Any]:
    child = {
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(b"child"),
        "size": 500,
        "platform": {"architecture": "amd64", "os": "linux"},
    }
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child], **extra}


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def parse(document: object, content_type: str | None = None) -> ParsedManifest:
    return parse_manifest(encode(document), content_type)


def rejected(document: object | bytes, content_type: str | None = None) -> RegistryError:
    data = document if isinstance(document, bytes) else encode(document)
    with pytest.raises(RegistryError) as info:
        parse_manifest(data, content_type)
    assert info.value.code is ErrorCode.MANIFEST_INVALID
    assert info.value.status == 400
    return info.value


# --- accepted manifests ------------------------------------------------------------------------------


def test_oci_image_manifest() -> None:
    data = encode(image(annotations={"a": "b"}))
    manifest = parse_manifest(data, OCI_MANIFEST)
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.digest == Digest.of(data)
    assert manifest.size == len(data)
    assert manifest.config is not None
    assert manifest.config.digest == Digest.parse(CONFIG["digest"])
    assert manifest.config.size == 6
    assert [layer.digest for layer in manifest.layers] == [Digest.parse(LAYER["digest"])]
    assert manifest.manifests == ()
    assert manifest.subject is None
    assert manifest.annotations == {"a": "b"}
    assert not manifest.is_index
    assert not manifest.is_helm_chart


def test_sha512_digest_over_exact_bytes() -> None:
    data = b'  {"schemaVersion":2,"config":' + encode(CONFIG) + b',"layers":[]}\n'
    manifest = parse_manifest(data, OCI_MANIFEST, "sha512")
    assert manifest.digest == Digest.of(data, "sha512")


def test_unsupported_digest_algorithm_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        parse_manifest(encode(image()), OCI_MANIFEST, "md5")


def test_docker_manifest_and_list() -> None:
    docker = image(mediaType=DOCKER_MANIFEST)
    docker["config"] = {**CONFIG, "mediaType": "application/vnd.docker.container.image.v1+json"}
    assert parse(docker, DOCKER_MANIFEST).media_type == DOCKER_MANIFEST
    assert parse(docker).media_type == DOCKER_MANIFEST
    listing = index(mediaType=DOCKER_MANIFEST_LIST)
    parsed = parse(listing, DOCKER_MANIFEST_LIST)
    assert parsed.media_type == DOCKER_MANIFEST_LIST
    assert parsed.is_index


def test_oci_index() -> None:
    manifest = parse(index(), OCI_INDEX)
    assert manifest.is_index
    assert manifest.config is None
    assert manifest.layers == ()
    assert len(manifest.manifests) == 1
    assert manifest.manifests[0].platform == {"architecture": "amd64", "os": "linux"}
    assert manifest.required_blobs == ()


def test_empty_index_and_empty_layers_are_allowed() -> None:
    assert parse(index(manifests=[]), OCI_INDEX).manifests == ()
    assert parse(image(layers=[]), OCI_MANIFEST).layers == ()


def test_content_type_parameters_and_case_are_ignored() -> None:
    assert parse(image(), "Application/VND.oci.image.manifest.v1+JSON; charset=utf-8").media_type == OCI_MANIFEST


@pytest.mark.parametrize("content_type", [None, "", "application/json", "application/octet-stream"])
def test_generic_content_type_uses_the_body(content_type: str | None) -> None:
    assert parse(image(), content_type).media_type == OCI_MANIFEST
    assert parse(index(), content_type).media_type == OCI_INDEX
    assert parse(index(mediaType=DOCKER_MANIFEST_LIST), content_type).media_type == DOCKER_MANIFEST_LIST


def test_media_type_inferred_from_shape() -> None:
    bare_image = image()
    del bare_image["mediaType"]
    bare_index = index()
    del bare_index["mediaType"]
    assert parse(bare_image).media_type == OCI_MANIFEST
    assert parse(bare_index, "application/json").media_type == OCI_INDEX
    # With a specific header and no body field, the header decides.
    assert parse(bare_image, OCI_MANIFEST).media_type == OCI_MANIFEST
    assert parse(bare_index, DOCKER_MANIFEST_LIST).media_type == DOCKER_MANIFEST_LIST


def test_required_blobs_skip_foreign_layers() -> None:
    manifest = parse(image(layers=[LAYER, FOREIGN]), OCI_MANIFEST)
    assert [str(d.digest) for d in manifest.required_blobs] == [CONFIG["digest"], LAYER["digest"]]
    assert manifest.layers[1].urls == ("https://example.com/layer",)


def test_helm_chart() -> None:
    chart = image(
        config={"mediaType": HELM_CONFIG, "digest": digest_of(b"c"), "size": 1},
        layers=[{"mediaType": HELM_CHART_CONTENT, "digest": digest_of(b"t"), "size": 1}],
    )
    assert parse(chart, OCI_MANIFEST).is_helm_chart


def test_artifact_with_subject_and_empty_config() -> None:
    sbom = image(
        artifactType="application/vnd.example.sbom.v1",
        config=EMPTY,
        layers=[{"mediaType": "application/spdx+json", "digest": digest_of(b"sbom"), "size": 4}],
        subject=SUBJECT,
        annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    )
    manifest = parse(sbom, OCI_MANIFEST)
    assert manifest.artifact_type == "application/vnd.example.sbom.v1"
    assert manifest.subject is not None
    assert manifest.subject.digest == Digest.parse(SUBJECT["digest"])
    assert manifest.config is not None
    assert manifest.config.data == "e30="
    assert manifest.referrer_descriptor() == {
        "mediaType": OCI_MANIFEST,
        "digest": str(manifest.digest),
        "size": manifest.size,
        "artifactType": "application/vnd.example.sbom.v1",
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }


def test_referrer_artifact_type_falls_back_to_config_media_type() -> None:
    signature = image(subject=SUBJECT)
    descriptor = parse(signature, OCI_MANIFEST).referrer_descriptor()
    assert descriptor["artifactType"] == CONFIG["mediaType"]
    assert "annotations" not in descriptor
    # An empty artifactType counts as none (distribution spec, "Pushing Manifests with Subject").
    empty_type = parse(image(subject=SUBJECT, artifactType=""), OCI_MANIFEST)
    assert empty_type.artifact_type is None
    assert empty_type.referrer_descriptor()["artifactType"] == CONFIG["mediaType"]


def test_index_referrer_without_artifact_type_has_none() -> None:
    descriptor = parse(index(subject=SUBJECT), OCI_INDEX).referrer_descriptor()
    assert "artifactType" not in descriptor
    with_type = parse(index(subject=SUBJECT, artifactType="application/vnd.example+json"), OCI_INDEX)
    assert with_type.referrer_descriptor()["artifactType"] == "application/vnd.example+json"


def test_unknown_fields_and_layer_media_types_are_allowed() -> None:
    odd = image(layers=[{**LAYER, "mediaType": "application/x-whatever", "extra": [1, 2]}], custom={"x": 1})
    assert parse(odd, OCI_MANIFEST).layers[0].media_type == "application/x-whatever"


def test_unicode_annotations() -> None:
    manifest = parse(image(annotations={"description": "caf\u00e9 \u2603 \U0001f433"}), OCI_MANIFEST)
    assert manifest.annotations == {"description": "caf\u00e9 \u2603 \U0001f433"}


def test_size_limit_only_when_asked() -> None:
    big = image(annotations={"pad": "x" * (MAX_MANIFEST_SIZE + 10)})
    data = encode(big)
    assert parse_manifest(data, OCI_MANIFEST).size == len(data)
    with pytest.raises(RegistryError) as info:
        parse_manifest(data, OCI_MANIFEST, max_size=MAX_MANIFEST_SIZE)
    assert info.value.code is ErrorCode.MANIFEST_TOO_LARGE
    assert info.value.status == 413
    assert info.value.body()["errors"][0]["code"] == "MANIFEST_INVALID"
    exact = encode(image())
    assert parse_manifest(exact, OCI_MANIFEST, max_size=len(exact)).size == len(exact)


# --- rejected manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"not json",
        b"{",
        b'{"schemaVersion": 2,}',
        b"\xff\xfe{}",
        b"\xef\xbb\xbf" + encode(image()),  # a UTF-8 byte-order mark
        encode(image()) + b"trailing",
        encode(image()) + b"{}",
        json.dumps(image()).encode("utf-16"),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"schemaVersion": 2, "x": NaN}',
        b'{"schemaVersion": Infinity}',
        b'{"schemaVersion": ' + b"9" * 5000 + b"}",
    ],
)
def test_not_json(data: bytes) -> None:
    rejected(data, OCI_MANIFEST)


@pytest.mark.parametrize("document", [[], "manifest", 2, None, True, [image()]])
def test_not_an_object(document: object) -> None:
    rejected(document, OCI_MANIFEST)


def test_duplicate_keys_are_rejected() -> None:
    data = b'{"schemaVersion": 2, "schemaVersion": 2, "config": ' + encode(CONFIG) + b', "layers": []}'
    assert "repeats" in rejected(data, OCI_MANIFEST).message
    nested = encode(image()).replace(b'"size": 6', b'"size": 6, "size": 7')
    rejected(nested, OCI_MANIFEST)


@pytest.mark.parametrize("version", [None, 3, "2", 2.0, True, 0, -2, [2]])
def test_schema_version_must_be_2(version: object) -> None:
    document = image()
    if version is None:
        del document["schemaVersion"]
    else:
        document["schemaVersion"] = version
    assert "schemaVersion" in rejected(document, OCI_MANIFEST).message


@pytest.mark.parametrize(
    ("document", "content_type"),
    [
        ({"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}, None),
        ({"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}, DOCKER_SCHEMA1_SIGNED),
        ({"schemaVersion": 1}, DOCKER_SCHEMA1),
        ({"schemaVersion": 2, "mediaType": DOCKER_SCHEMA1}, None),
        (image(), DOCKER_SCHEMA1_SIGNED),
    ],
)
def test_schema1_is_refused_with_advice(document: object, content_type: str | None) -> None:
    assert "schema 1" in rejected(document, content_type).message


def test_header_and_body_media_types_must_agree() -> None:
    message = rejected(image(), OCI_INDEX).message
    assert "does not match" in message
    rejected(image(mediaType=DOCKER_MANIFEST), OCI_MANIFEST)


@pytest.mark.parametrize(
    ("document", "content_type"),
    [
        (image(), "application/vnd.example+json"),
        (image(mediaType="application/vnd.example+json"), None),
        (image(mediaType="application/vnd.oci.artifact.manifest.v1+json"), None),
        ({"schemaVersion": 2}, None),
        ({"schemaVersion": 2, "layers": []}, "application/json"),
        (image(mediaType=2), None),
        (image(mediaType=""), None),
        (image(), "text/plain"),
    ],
)
def test_unknown_or_undecidable_media_type(document: object, content_type: str | None) -> None:
    rejected(document, content_type)


def test_artifact_manifest_gets_an_explanation() -> None:
    message = rejected(image(mediaType="application/vnd.oci.artifact.manifest.v1+json"), None).message
    assert "artifactType" in message


def test_ambiguous_documents_are_rejected() -> None:
    rejected(image(manifests=[]), OCI_MANIFEST)
    rejected(index(layers=[]), OCI_INDEX)
    rejected(index(config=CONFIG), OCI_INDEX)


@pytest.mark.parametrize(
    "change",
    [
        {"config": None},
        {"config": []},
        {"config": "sha256:abc"},
        {"layers": None},
        {"layers": {}},
        {"layers": [None]},
        {"layers": ["x"]},
        {"layers": [[LAYER]]},
        {"subject": "sha256:abc"},
        {"subject": {}},
        {"artifactType": 5},
        {"artifactType": "not a media type"},
        {"annotations": []},
        {"annotations": {"a": 1}},
        {"annotations": {"a": None}},
        {"annotations": "a=b"},
    ],
)
def test_bad_image_fields(change: dict[str, Any]) -> None:
    rejected(image(**change), OCI_MANIFEST)


def test_missing_config_or_layers() -> None:
    without_config = image()
    del without_config["config"]
    assert "config" in rejected(without_config, OCI_MANIFEST).message
    without_layers = image()
    del without_layers["layers"]
    assert "layers" in rejected(without_layers, OCI_MANIFEST).message
    without_manifests = index()
    del without_manifests["manifests"]
    assert "manifests" in rejected(without_manifests, OCI_INDEX).message


@pytest.mark.parametrize(
    "change",
    [
        {"mediaType": None},
        {"mediaType": ""},
        {"mediaType": 1},
        {"mediaType": "nomediatype"},
        {"mediaType": "a/b/c"},
        {"mediaType": "application/x y"},
        {"mediaType": "application/\u00e9"},
        {"digest": None},
        {"digest": 1},
        {"digest": "sha256:abc"},
        {"digest": "sha256:" + "A" * 64},
        {"digest": "md5:" + "a" * 32},
        {"size": None},
        {"size": -1},
        {"size": 1.5},
        {"size": 6.0},
        {"size": "6"},
        {"size": True},
        {"size": False},
        {"size": 2**63},
        {"size": 10**30},
        {"urls": "https://x"},
        {"urls": [1]},
        {"annotations": {"k": 1}},
        {"artifactType": 1},
        {"platform": "linux/amd64"},
        {"platform": {"os": "linux"}},
        {"platform": {"architecture": 1, "os": "linux"}},
        {"data": 1},
    ],
)
def test_bad_descriptor_fields(change: dict[str, Any]) -> None:
    layer = {**LAYER}
    for key, value in change.items():
        if value is None:
            layer.pop(key, None)
        else:
            layer[key] = value
    error = rejected(image(layers=[LAYER, layer]), OCI_MANIFEST)
    assert "layers[1]" in error.message


def test_bad_child_descriptor_in_index() -> None:
    document = index()
    document["manifests"].append({"mediaType": OCI_MANIFEST, "digest": "sha256:nope", "size": 1})
    error = rejected(document, OCI_INDEX)
    assert "manifests[1].digest" in error.message


def test_size_bounds_are_inclusive() -> None:
    assert parse(image(layers=[{**LAYER, "size": 0}]), OCI_MANIFEST).layers[0].size == 0
    assert parse(image(layers=[{**LAYER, "size": 2**63 - 1}]), OCI_MANIFEST).layers[0].size == 2**63 - 1


def test_huge_error_inputs_stay_small() -> None:
    error = rejected(image(), "application/" + "x" * 100_000)
    assert len(error.message) < 1000


# --- descriptors and the referrers index -------------------------------------------------------------


def test_descriptor_to_json_keeps_oci_fields() -> None:
    parsed = parse(
        index(
            manifests=[
                {
                    **SUBJECT,
                    "urls": ["https://a"],
                    "annotations": {"k": "v"},
                    "artifactType": "application/vnd.x+json",
                    "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
                    "data": "e30=",
                }
            ]
        ),
        OCI_INDEX,
    )
    assert parsed.manifests[0].to_json() == {
        **SUBJECT,
        "urls": ["https://a"],
        "annotations": {"k": "v"},
        "artifactType": "application/vnd.x+json",
        "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        "data": "e30=",
    }
    minimal = Descriptor(OCI_MANIFEST, Digest.parse(SUBJECT["digest"]), 123)
    assert minimal.to_json() == SUBJECT
    assert hash(minimal) == hash(Descriptor(OCI_MANIFEST, Digest.parse(SUBJECT["digest"]), 123))


def test_build_referrers_index() -> None:
    entry = parse(image(subject=SUBJECT), OCI_MANIFEST).referrer_descriptor()
    body = build_referrers_index([entry])
    decoded = json.loads(body)
    assert decoded == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    # The index is itself a valid manifest.
    assert parse_manifest(body, OCI_INDEX).manifests[0].digest == Digest.parse(entry["digest"])
    assert json.loads(build_referrers_index([])) == {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
    }


# --- properties --------------------------------------------------------------------------------------

media_types = st.from_regex(r"[a-z][a-z0-9.+-]{0,20}/[a-z][a-z0-9.+-]{0,30}", fullmatch=True)
digests = st.binary(max_size=16).map(lambda b: Digest.of(b))
annotation_maps = st.none() | st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=4)


@st.composite
def descriptors(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mediaType": draw(media_types),
        "digest": str(draw(digests)),
        "size": draw(st.integers(0, 2**63 - 1)),
    }
    if draw(st.booleans()):
        out["urls"] = draw(st.lists(st.text(max_size=20), min_size=1, max_size=2))
    value = draw(annotation_maps)
    if value is not None:
        out["annotations"] = value
    if draw(st.booleans()):
        out["artifactType"] = draw(media_types)
    return out


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST]))
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": kind}
    if kind in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        document["manifests"] = draw(st.lists(descriptors(), max_size=4))
    else:
        document["config"] = draw(descriptors())
        document["layers"] = draw(st.lists(descriptors(), max_size=4))
    if draw(st.booleans()):
        document["subject"] = draw(descriptors())
    if draw(st.booleans()):
        document["artifactType"] = draw(media_types)
    value = draw(annotation_maps)
    if value is not None:
        document["annotations"] = value
    return document


@given(manifests(), st.sampled_from([None, "application/json", "body"]), st.booleans())
@settings(max_examples=200)
def test_valid_manifests_round_trip(document: dict[str, Any], header: str | None, indent: bool) -> None:
    data = json.dumps(document, indent=2 if indent else None).encode()
    content_type = document["mediaType"] if header == "body" else header
    manifest = parse_manifest(data, content_type)
    assert manifest.media_type == document["mediaType"]
    assert manifest.digest == Digest.of(data)
    assert manifest.size == len(data)
    if manifest.is_index:
        assert [d.to_json() for d in manifest.manifests] == document["manifests"]
        assert manifest.required_blobs == ()
    else:
        assert manifest.config is not None
        assert manifest.config.to_json() == document["config"]
        assert [d.to_json() for d in manifest.layers] == document["layers"]
        assert set(manifest.required_blobs) <= {manifest.config, *manifest.layers}
        assert all(not d.urls for d in manifest.required_blobs[1:])
    if "subject" in document:
        assert manifest.subject is not None
        assert manifest.subject.to_json() == document["subject"]
    referrer = manifest.referrer_descriptor()
    assert referrer["digest"] == str(manifest.digest)
    assert referrer.get("annotations") == (document.get("annotations") or None)
    index_body = build_referrers_index([referrer])
    assert parse_manifest(index_body, OCI_INDEX).manifests[0].digest == manifest.digest


@given(manifests(), st.data())
@settings(max_examples=200)
def test_mutated_manifests_raise_only_registry_errors(document: dict[str, Any], data: st.DataObject) -> None:
    """Replace one value anywhere in a valid manifest with junk: parsing either succeeds or says why."""
    mutated = copy.deepcopy(document)
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in items:
            paths.append((node, key))
            walk(value)

    walk(mutated)
    container, key = data.draw(st.sampled_from(paths))
    container[key] = data.draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=10),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        )
    )
    try:
        parse_manifest(encode(mutated), data.draw(st.sampled_from([None, document["mediaType"]])))
    except RegistryError as exc:
        assert exc.code is ErrorCode.MANIFEST_INVALID
        assert exc.message


@given(st.binary(max_size=2000), st.none() | st.sampled_from([OCI_MANIFEST, OCI_INDEX, "application/json"]))
def test_arbitrary_bytes_raise_only_registry_errors(data: bytes, content_type: str | None) -> None:
    try:
        parse_manifest(data, content_type)
    except RegistryError as exc:
        assert exc.code is ErrorCode.MANIFEST_INVALID


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)
manifest_keys = st.sampled_from(
    ["schemaVersion", "mediaType", "config", "layers", "manifests", "subject", "artifactType", "annotations"]
)


@given(st.dictionaries(manifest_keys, json_values, max_size=8), st.none() | st.text(max_size=60))
def test_arbitrary_json_objects_raise_only_registry_errors(document: dict[str, Any], content_type: str | None) -> None:
    try:
        parse_manifest(encode(document), content_type)
    except RegistryError as exc:
        assert exc.code is ErrorCode.MANIFEST_INVALID


# --- the manifest cache (issue 8, item 6) -------------------------------------------------------------


def _cache_digest(i: int) -> str:
    return f"sha256:{i:064x}"


def test_manifest_cache_keeps_large_manifests_out() -> None:
    """400 distinct 4 MiB manifests once took the process from 119 MiB to 1.7 GiB: none of them is kept."""
    from services.platform.settings import Settings
    from services.registry.app import ManifestCache

    settings = Settings()
    cache = ManifestCache(settings.manifest_cache_bytes, settings.manifest_cache_max_manifest_bytes)
    large = b"x" * (4 * 1024 * 1024)
    for i in range(400):
        cache.put("reg", _cache_digest(i), large)
    assert cache.bytes == 0
    assert len(cache) == 0
    assert cache.get("reg", _cache_digest(0)) is None
    at_limit = b"y" * settings.manifest_cache_max_manifest_bytes
    cache.put("reg", "sha256:" + "a" * 64, at_limit)
    assert cache.get("reg", "sha256:" + "a" * 64) is at_limit


def test_manifest_cache_is_bounded_by_bytes_least_recently_used_first() -> None:
    from services.registry.app import ManifestCache

    limit = 1024 * 1024
    cache = ManifestCache(limit, 64 * 1024)
    manifest = b"m" * (50 * 1024)
    for i in range(100):
        cache.put("reg", _cache_digest(i), manifest)
        assert cache.bytes <= limit
    # What is kept is counted with its keys: within the limit, and the limit is used.
    kept = len(cache)
    assert kept == limit // cache.cost("reg", _cache_digest(0), manifest)
    assert cache.bytes == kept * cache.cost("reg", _cache_digest(0), manifest)
    oldest = 100 - kept
    assert cache.get("reg", _cache_digest(oldest - 1)) is None
    assert cache.get("reg", _cache_digest(oldest)) is manifest  # used: now the most recent
    cache.put("reg", _cache_digest(100), manifest)
    assert cache.get("reg", _cache_digest(oldest)) is manifest
    assert cache.get("reg", _cache_digest(oldest + 1)) is None  # the least recently used went instead


def test_manifest_cache_counts_a_digest_once() -> None:
    from services.registry.app import ManifestCache

    cache = ManifestCache(1024 * 1024, 64 * 1024)
    for _ in range(5):
        cache.put("reg", _cache_digest(1), b"z" * 1000)
    assert len(cache) == 1
    assert cache.bytes == cache.cost("reg", _cache_digest(1), b"z" * 1000)


# --- references: how many, and how they are checked (issue 8, item 7) ----------------------------------


def _layers(count: int) -> dict[str, Any]:
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(b"l"), "size": 1}
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CONFIG, "layers": [layer] * count}


def test_too_many_descriptors_is_manifest_invalid() -> None:
    data = json.dumps(_layers(25_000)).encode()
    with pytest.raises(RegistryError) as caught:
        parse_manifest(data, OCI_MANIFEST, max_descriptors=1000)
    assert caught.value.code is ErrorCode.MANIFEST_INVALID
    assert caught.value.status == 400
    assert "at most 1000" in caught.value.message and "25000" in caught.value.message


def test_descriptor_limit_counts_index_children_and_allows_the_limit() -> None:
    child = {"mediaType": OCI_MANIFEST, "digest": digest_of(b"c"), "size": 1}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child] * 11}).encode()
    with pytest.raises(RegistryError) as caught:
        parse_manifest(index, OCI_INDEX, max_descriptors=10)
    assert caught.value.code is ErrorCode.MANIFEST_INVALID
    parsed = parse_manifest(json.dumps(_layers(10)).encode(), OCI_MANIFEST, max_descriptors=10)
    assert len(parsed.layers) == 10


def test_unique_references_are_read_once() -> None:
    from services.registry.routes.manifests import unique_references

    parsed = parse_manifest(json.dumps(_layers(500)).encode(), OCI_MANIFEST)
    blobs, children = unique_references(parsed)
    assert blobs == [CONFIG["digest"], digest_of(b"l")]
    assert children == []


async def test_reference_checks_run_at_most_limit_at_once() -> None:
    import asyncio

    from services.registry.routes.manifests import gather_bounded

    running = 0
    most = 0

    async def check(i: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        running -= 1
        return i * 2

    results = await gather_bounded([lambda i=i: check(i) for i in range(1000)], 16)
    assert results == [i * 2 for i in range(1000)]
    assert most == 16
    assert await gather_bounded([], 16) == []


async def test_a_failed_reference_check_stops_the_others() -> None:
    import asyncio

    from services.registry.routes.manifests import gather_bounded

    started: list[int] = []

    async def check(i: int) -> None:
        started.append(i)
        await asyncio.sleep(0)
        if i == 3:
            raise RuntimeError("Cosmos said no")

    with pytest.raises(RuntimeError, match="Cosmos said no"):
        await gather_bounded([lambda i=i: check(i) for i in range(1000)], 4)
    await asyncio.sleep(0)
    assert len(started) < 20
