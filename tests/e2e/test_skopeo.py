"""skopeo against the registry: multi-platform copy round trip, inspect, list-tags, delete, cross-repository
copy (blob mounts) and a 1 GiB push/pull (marked slow)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.clients import (
    OCI_INDEX,
    OCI_MANIFEST,
    CommandError,
    OciLayout,
    RegistryHttp,
    Skopeo,
    build_multi_platform_index,
    build_single_platform_image,
    reachable_blobs,
    sha256_digest,
    sha256_file,
)


def test_copy_all_multiplatform_index_round_trip(
    skopeo: Skopeo,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    source, built = build_multi_platform_index(tmp_path / "source", tag="v1")
    repo = repo_name("multi")
    remote = f"docker://{registry_host}/{repo}:v1"

    skopeo.copy(source.reference("v1"), remote, all_images=True, preserve_digests=True)

    # The registry serves the index by tag, byte for byte, with its media type and digest.
    response = registry_http.get_manifest(repo, "v1")
    assert response.status_code == 200, response.text
    assert response.content == source.read_blob(built.index.digest)
    assert response.headers["content-type"] == OCI_INDEX
    assert response.headers["docker-content-digest"] == built.index.digest
    # ...and each child manifest by digest.
    for image in built.images:
        child = registry_http.get_manifest(repo, image.manifest.digest)
        assert child.status_code == 200
        assert child.headers["content-type"] == OCI_MANIFEST
        assert child.content == source.read_blob(image.manifest.digest)

    pulled = OciLayout(tmp_path / "pulled")
    skopeo.copy(remote, f"oci:{pulled.root}:v1", all_images=True, preserve_digests=True)

    top = pulled.resolve("v1")
    assert top.digest == built.index.digest
    assert top.media_type == OCI_INDEX
    expected = reachable_blobs(source, built.index.digest)
    assert len(expected) == 1 + 3 * 2 + 4  # index, 3 manifests + 3 configs, 4 layers
    assert pulled.blob_digests() == expected
    for digest in expected:
        data = pulled.read_blob(digest)
        assert sha256_digest(data) == digest
        assert data == source.read_blob(digest), digest

    index = json.loads(pulled.read_blob(built.index.digest))
    platforms = [(m["platform"]["architecture"], m["platform"].get("variant")) for m in index["manifests"]]
    assert platforms == [("amd64", None), ("arm64", "v8"), ("arm", "v7")]
    assert index["manifests"][2]["annotations"] == {"org.example.descriptor": "armv7"}
    assert index["annotations"]["org.example.index"] == "multi"


def test_inspect_raw_and_parsed(
    skopeo: Skopeo, registry_host: str, repo_name: Callable[[str], str], tmp_path: Path
) -> None:
    layout, image = build_single_platform_image(
        tmp_path / "src", [4096, 2048], tag="1.0", labels={"org.example.team": "registry"}
    )
    repo = repo_name("inspect")
    remote = f"docker://{registry_host}/{repo}:1.0"
    skopeo.copy(layout.reference("1.0"), remote, preserve_digests=True)

    raw = skopeo.inspect_raw(remote)
    assert raw == layout.read_blob(image.manifest.digest)
    raw_config = skopeo.inspect_raw(remote, config=True)
    assert raw_config == layout.read_blob(image.config.digest)

    info = skopeo.inspect(remote)
    assert info["Name"] == f"{registry_host}/{repo}"
    assert info["Digest"] == image.manifest.digest
    assert info["RepoTags"] == ["1.0"]
    assert info["Architecture"] == "amd64"
    assert info["Os"] == "linux"
    assert info["Labels"] == {"org.example.team": "registry"}
    assert info["Layers"] == [layer.descriptor.digest for layer in image.layers]

    # By digest as well.
    by_digest = skopeo.inspect(f"docker://{registry_host}/{repo}@{image.manifest.digest}")
    assert by_digest["Digest"] == image.manifest.digest


def test_list_tags(
    skopeo: Skopeo,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    layout, image = build_single_platform_image(tmp_path / "src", [1024], tag="src")
    repo = repo_name("tags")
    tags = ["v2", "latest", "v1.0.0", "V3", "a_b-c.d", "0.9", "zz"]
    for tag in tags:
        skopeo.copy(layout.reference("src"), f"docker://{registry_host}/{repo}:{tag}", preserve_digests=True)

    assert sorted(skopeo.list_tags(f"docker://{registry_host}/{repo}")) == sorted(tags)
    assert sorted(registry_http.tags(repo)) == sorted(tags)
    for tag in tags:
        head = registry_http.head_manifest(repo, tag)
        assert head.status_code == 200
        assert head.headers["docker-content-digest"] == image.manifest.digest


def test_tags_list_is_in_lexical_order(
    skopeo: Skopeo,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """distribution-spec: the tag list MUST be in lexical order — case-insensitive or ASCIIbetical, both are
    accepted here. (CNCF distribution 2.8 answers in directory order, so this fails against it.)"""
    layout, _ = build_single_platform_image(tmp_path / "src", [1024], tag="src")
    repo = repo_name("order")
    tags = ["v2", "latest", "v1.0.0", "V3", "a_b-c.d", "0.9", "zz", "B"]
    for tag in tags:
        skopeo.copy(layout.reference("src"), f"docker://{registry_host}/{repo}:{tag}", preserve_digests=True)

    listed = registry_http.tags(repo)
    assert listed in (sorted(tags, key=str.lower), sorted(tags)), listed


def test_delete_removes_manifest_and_tag(
    skopeo: Skopeo,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    layout, image = build_single_platform_image(tmp_path / "src", [1024], tag="src")
    keep_layout, keep = build_single_platform_image(tmp_path / "keep", [1024], tag="src")
    repo = repo_name("delete")
    skopeo.copy(layout.reference("src"), f"docker://{registry_host}/{repo}:doomed", preserve_digests=True)
    skopeo.copy(keep_layout.reference("src"), f"docker://{registry_host}/{repo}:kept", preserve_digests=True)
    assert registry_http.get_manifest(repo, "doomed").status_code == 200

    skopeo.delete(f"docker://{registry_host}/{repo}:doomed")

    assert registry_http.get_manifest(repo, image.manifest.digest).status_code == 404
    assert registry_http.head_manifest(repo, image.manifest.digest).status_code == 404
    assert registry_http.get_manifest(repo, "doomed").status_code == 404
    assert "doomed" not in registry_http.tags(repo)
    with pytest.raises(CommandError):
        skopeo.inspect_raw(f"docker://{registry_host}/{repo}:doomed")
    # The other image of the repository is untouched.
    kept = registry_http.get_manifest(repo, "kept")
    assert kept.status_code == 200
    assert kept.content == keep_layout.read_blob(keep.manifest.digest)


def test_copy_between_repositories(
    skopeo: Skopeo,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    layout, image = build_single_platform_image(tmp_path / "src", [256 * 1024, 64 * 1024], tag="src")
    first, second = repo_name("first"), repo_name("second")
    skopeo.copy(layout.reference("src"), f"docker://{registry_host}/{first}:v1", preserve_digests=True)

    # Same registry, other repository: skopeo mounts the layers from `first` (it remembers where it pushed
    # them) instead of uploading them again; its debug log shows each mount request and its outcome.
    copy = skopeo.copy(
        f"docker://{registry_host}/{first}:v1",
        f"docker://{registry_host}/{second}:v1",
        preserve_digests=True,
        debug=True,
    )
    log = copy.stderr.decode()
    for layer in image.layers:
        quoted = layer.descriptor.digest.replace(":", "%3A")
        assert f"/v2/{second}/blobs/uploads/?from={first.replace('/', '%2F')}&mount={quoted}" in log, log
        assert f"digest={quoted}" not in log, f"layer {layer.descriptor.digest} was uploaded, not mounted"
    assert log.count("mount OK") == len(image.layers), log

    copied = registry_http.get_manifest(second, "v1")
    assert copied.status_code == 200
    assert copied.content == layout.read_blob(image.manifest.digest)
    for digest in [image.config.digest, *(layer.descriptor.digest for layer in image.layers)]:
        assert registry_http.get_blob(second, digest) == layout.read_blob(digest)

    # The mount endpoint itself: a blob of `first` mounts into a third repository with 201 Created.
    third = repo_name("third")
    layer_digest = image.layers[0].descriptor.digest
    mounted = registry_http.mount_blob(third, layer_digest, first)
    assert mounted.status_code == 201, (mounted.status_code, mounted.headers, mounted.text)
    assert mounted.headers["docker-content-digest"] == layer_digest
    assert "location" in mounted.headers
    assert registry_http.get_blob(third, layer_digest) == layout.read_blob(layer_digest)


@pytest.mark.slow
def test_push_pull_1gib_single_layer(
    skopeo: Skopeo, registry_host: str, repo_name: Callable[[str], str], tmp_path: Path
) -> None:
    size = 1 << 30
    started = time.monotonic()
    layout, image = build_single_platform_image(tmp_path / "src", [size], tag="big")
    built_in = time.monotonic() - started
    layer = image.layers[0].descriptor
    assert layer.size > size  # tar header + padding around the 1 GiB file
    remote = f"docker://{registry_host}/{repo_name('big')}:1gib"

    push = skopeo.copy(layout.reference("big"), remote, preserve_digests=True, timeout=1800)
    pulled = OciLayout(tmp_path / "pulled")
    pull = skopeo.copy(remote, f"oci:{pulled.root}:1gib", preserve_digests=True, timeout=1800)

    assert pulled.resolve("1gib").digest == image.manifest.digest
    assert pulled.blob_path(layer.digest).stat().st_size == layer.size
    assert sha256_file(pulled.blob_path(layer.digest)) == layer.digest
    mb = layer.size / 1e6
    print(
        f"\n[1 GiB] registry={registry_host} layer={layer.size} bytes (built in {built_in:.1f}s)\n"
        f"[1 GiB] skopeo push: {push.seconds:.2f}s = {mb / push.seconds:.0f} MB/s\n"
        f"[1 GiB] skopeo pull: {pull.seconds:.2f}s = {mb / pull.seconds:.0f} MB/s"
    )


def _lock(registry_http: RegistryHttp, path: str, **attributes: bool) -> None:
    response = registry_http.client.patch(f"/acr/v1/{path}", json=attributes)
    assert response.status_code == 200, response.text


def test_locked_tag_survives_a_skopeo_push_and_a_skopeo_delete(
    skopeo: Skopeo,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """ACR's image lock (`az acr repository update --write-enabled false`), set through /acr/v1/, holds
    against a real client: skopeo's copy over the tag and its delete (which resolves the tag and deletes
    the manifest by digest) both fail, and the tag keeps its image."""
    old_layout, old = build_single_platform_image(tmp_path / "old", [1024], tag="src")
    new_layout, new = build_single_platform_image(tmp_path / "new", [2048], tag="src")
    repo = repo_name("locked")
    target = f"docker://{registry_host}/{repo}:release"
    skopeo.copy(old_layout.reference("src"), target, preserve_digests=True)
    _lock(registry_http, f"{repo}/_tags/release", writeEnabled=False)

    with pytest.raises(CommandError) as pushed:
        skopeo.copy(new_layout.reference("src"), target, preserve_digests=True)
    assert "disallowed" in pushed.value.stderr
    with pytest.raises(CommandError):
        skopeo.delete(target)
    assert skopeo.inspect_raw(target) == old_layout.read_blob(old.manifest.digest)
    assert registry_http.get_manifest(repo, old.manifest.digest).status_code == 200

    # Other tags of the repository are not locked; unlocked, the tag moves and deletes again.
    skopeo.copy(new_layout.reference("src"), f"docker://{registry_host}/{repo}:next", preserve_digests=True)
    _lock(registry_http, f"{repo}/_tags/release", writeEnabled=True)
    skopeo.copy(new_layout.reference("src"), target, preserve_digests=True)
    assert skopeo.inspect_raw(target) == new_layout.read_blob(new.manifest.digest)
    skopeo.delete(target)
    with pytest.raises(CommandError):
        skopeo.inspect_raw(target)


def test_delete_locked_manifest_and_read_locked_tag_with_skopeo(
    skopeo: Skopeo,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    layout, image = build_single_platform_image(tmp_path / "src", [1024], tag="src")
    repo = repo_name("manifest-lock")
    target = f"docker://{registry_host}/{repo}:v1"
    skopeo.copy(layout.reference("src"), target, preserve_digests=True)
    _lock(registry_http, f"{repo}/_manifests/{image.manifest.digest}", deleteEnabled=False)
    with pytest.raises(CommandError):
        skopeo.delete(f"docker://{registry_host}/{repo}@{image.manifest.digest}")
    with pytest.raises(CommandError):
        skopeo.delete(target)
    assert registry_http.get_manifest(repo, image.manifest.digest).status_code == 200

    _lock(registry_http, f"{repo}/_tags/v1", readEnabled=False)
    with pytest.raises(CommandError) as pulled:
        skopeo.copy(target, f"oci:{tmp_path / 'pulled'}:v1")
    assert "disallowed" in pulled.value.stderr
    # By digest the manifest's own attributes apply, and it is readable.
    skopeo.copy(f"docker://{registry_host}/{repo}@{image.manifest.digest}", f"oci:{tmp_path / 'by-digest'}:v1")
