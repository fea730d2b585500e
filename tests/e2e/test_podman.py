"""buildah builds, buildah/podman push, podman pulls back into a fresh storage root (all daemonless, vfs)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

from tests.e2e.clients import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    Buildah,
    OciLayout,
    Podman,
    RegistryHttp,
    build_single_platform_image,
    sha256_digest,
)


def _file_from_layers(layout: OciLayout, manifest_digest: str, path: str) -> bytes:
    """Content of `path` in the topmost layer of an OCI layout image that contains it."""
    manifest = json.loads(layout.read_blob(manifest_digest))
    for layer in reversed(manifest["layers"]):
        with tarfile.open(fileobj=io.BytesIO(layout.read_blob(layer["digest"])), mode="r:*") as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") == path.lstrip("/"):
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    return extracted.read()
    raise AssertionError(f"{path} not found in {manifest_digest}")


def test_buildah_scratch_push_then_podman_pull(
    buildah: Buildah,
    fresh_podman: Podman,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    payload = os.urandom(200 * 1024)
    (tmp_path / "payload.bin").write_bytes(payload)
    container = buildah.from_image("scratch")
    buildah.copy(container, tmp_path / "payload.bin", "/payload.bin")
    buildah.config_image(
        container,
        "--label", "org.example.built-by=buildah",
        "--label", "org.example.case=scratch",
        "--env", "E2E=1",
        "--cmd", "/payload.bin",
    )  # fmt: skip
    buildah.commit(container, "localhost/e2e-scratch:1")

    remote = f"{registry_host}/{repo_name('scratch')}:1"
    pushed = buildah.push("localhost/e2e-scratch:1", f"docker://{remote}", tmp_path / "push.digest")
    assert pushed.startswith("sha256:")

    served = registry_http.get_manifest(remote.split("/", 1)[1].rsplit(":", 1)[0], "1")
    assert served.status_code == 200
    assert served.headers["docker-content-digest"] == pushed
    assert sha256_digest(served.content) == pushed
    assert served.headers["content-type"] == OCI_MANIFEST

    image_id = fresh_podman.pull(remote)
    info = fresh_podman.image_inspect(remote)
    assert info["Id"] == image_id
    assert info["Digest"] == pushed
    assert f"{remote.rsplit(':', 1)[0]}@{pushed}" in info["RepoDigests"]
    assert info["Labels"]["org.example.built-by"] == "buildah"
    assert info["Labels"]["org.example.case"] == "scratch"
    assert "E2E=1" in info["Config"]["Env"]
    assert info["Config"]["Cmd"] == ["/payload.bin"]

    # The file made it through push and pull intact.
    saved = OciLayout(tmp_path / "saved")
    fresh_podman.save_oci_dir(remote, saved.root)
    top = json.loads((saved.root / "index.json").read_text())["manifests"][0]
    assert _file_from_layers(saved, top["digest"], "/payload.bin") == payload


def test_buildah_from_oci_layout_podman_push_docker_format(
    buildah: Buildah,
    podman: Podman,
    fresh_podman: Podman,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    base_layout, base = build_single_platform_image(
        tmp_path / "base", [64 * 1024], tag="base", compress=True, labels={"org.example.base": "yes"}
    )
    container = buildah.from_image(base_layout.reference("base"))
    extra = tmp_path / "extra.txt"
    extra.write_text("added on top of an OCI layout base\n")
    buildah.copy(container, extra, "/etc/extra.txt")
    buildah.config_image(container, "--label", "org.example.stage=derived")
    buildah.commit(container, "localhost/e2e-derived:2")

    repo = repo_name("derived")
    remote = f"{registry_host}/{repo}:2"
    # podman (sharing buildah's storage root) pushes as Docker schema 2.
    pushed = podman.push("localhost/e2e-derived:2", f"docker://{remote}", tmp_path / "d", "--format", "v2s2")

    served = registry_http.get_manifest(repo, "2")
    assert served.status_code == 200
    assert served.headers["content-type"] == DOCKER_MANIFEST
    assert served.headers["docker-content-digest"] == pushed
    manifest = served.json()
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert len(manifest["layers"]) == 2
    for layer in manifest["layers"]:
        blob = registry_http.get_blob(repo, layer["digest"])
        assert hashlib.sha256(blob).hexdigest() == layer["digest"].split(":", 1)[1]
        assert len(blob) == layer["size"]

    fresh_podman.pull(remote)
    info = fresh_podman.image_inspect(remote)
    assert info["Digest"] == pushed
    assert info["Labels"]["org.example.base"] == "yes"
    assert info["Labels"]["org.example.stage"] == "derived"
    assert info["ManifestType"] == DOCKER_MANIFEST
    # The base layer's uncompressed content (diff_id) survived build, push and pull.
    assert info["RootFS"]["Layers"][0] == base.layers[0].diff_id
    assert len(info["RootFS"]["Layers"]) == 2
