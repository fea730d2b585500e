"""ORAS artifacts with OCI 1.1 `artifactType` and `subject`, and the referrers API
(`GET /v2/<name>/referrers/<digest>`, distribution-spec v1.1 "Listing Referrers")."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.clients import (
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    TITLE_ANNOTATION,
    OrasArtifactClient,
    PushedManifest,
    RegistryHttp,
    compact_json,
    sha256_digest,
)

SBOM_TYPE = "application/vnd.example.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.example.signature.v1"
SBOM_LAYER_TYPE = "application/spdx+json"
LEGACY_CONFIG_TYPE = "application/vnd.example.attestation.config.v1+json"


def _write_sbom(directory: Path, name: str = "sbom.spdx.json") -> Path:
    path = directory / name
    path.write_bytes(
        json.dumps({"spdxVersion": "SPDX-2.3", "name": "e2e", "nonce": os.urandom(16).hex()}, indent=2).encode()
    )
    return path


def _push_sbom(
    oras_client: OrasArtifactClient,
    registry_host: str,
    repo: str,
    reference: str,
    subject: PushedManifest | None,
    tmp_path: Path,
    *,
    artifact_type: str = SBOM_TYPE,
    annotations: dict[str, str] | None = None,
) -> tuple[PushedManifest, Path, Mapping[str, str]]:
    sbom = _write_sbom(tmp_path, f"{artifact_type.rsplit('/', 1)[1].replace('+', '.')}-{reference}.json")
    manifest_annotations = annotations or {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    pushed, response = oras_client.push_artifact(
        f"{registry_host}/{repo}:{reference}",
        [(sbom, SBOM_LAYER_TYPE)],
        artifact_type=artifact_type,
        subject=subject.subject if subject is not None else None,
        annotations=manifest_annotations,
        workdir=tmp_path,
    )
    assert response.status_code == 201, (response.status_code, response.text)
    assert response.headers["Docker-Content-Digest"] == pushed.digest
    return pushed, sbom, pushed.response_headers


def _referrers(response: httpx.Response) -> list[dict[str, Any]]:
    """The descriptors of a referrers response, after checking it is a 200 OCI image index."""
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["content-type"].split(";")[0].strip() == OCI_INDEX
    index = json.loads(response.content)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    manifests: list[dict[str, Any]] = index["manifests"]
    assert isinstance(manifests, list)
    return manifests


def test_pull_artifact_back_byte_identical(
    oras_client: OrasArtifactClient,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    repo = repo_name("artifact")
    subject = registry_http.push_small_image(repo, "app")
    pushed, sbom, _ = _push_sbom(oras_client, registry_host, repo, "sbom", subject, tmp_path)

    manifest = json.loads(pushed.body)
    assert manifest["artifactType"] == SBOM_TYPE
    assert manifest["config"] == {"mediaType": OCI_EMPTY, "size": 2, "digest": EMPTY_JSON_DIGEST}
    assert manifest["subject"] == {
        "mediaType": OCI_MANIFEST,
        "digest": subject.digest,
        "size": len(subject.body),
    }

    # The registry stores the manifest byte for byte, artifactType and subject included.
    served = registry_http.get_manifest(repo, "sbom")
    assert served.status_code == 200
    assert served.content == pushed.body
    assert served.headers["content-type"] == OCI_MANIFEST
    assert served.headers["docker-content-digest"] == pushed.digest
    by_digest = registry_http.get_manifest(repo, pushed.digest)
    assert by_digest.status_code == 200
    assert by_digest.content == pushed.body
    assert registry_http.get_blob(repo, EMPTY_JSON_DIGEST) == b"{}"

    out = tmp_path / "pulled"
    files = oras_client.pull(target=f"{registry_host}/{repo}:sbom", outdir=str(out))
    assert [Path(f).name for f in files] == [sbom.name]
    assert Path(files[0]).read_bytes() == sbom.read_bytes()
    assert manifest["layers"][0]["annotations"][TITLE_ANNOTATION] == sbom.name
    assert manifest["layers"][0]["digest"] == sha256_digest(sbom.read_bytes())


def test_push_with_subject_answers_oci_subject_header(
    oras_client: OrasArtifactClient,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    repo = repo_name("subject")
    subject = registry_http.push_small_image(repo, "app")
    _, _, headers = _push_sbom(oras_client, registry_host, repo, "sbom", subject, tmp_path)
    # distribution-spec v1.1: a registry that processes `subject` MUST answer OCI-Subject: <subject digest>.
    assert headers.get("OCI-Subject") == subject.digest, headers


def test_referrers_lists_artifact_with_artifact_type(
    oras_client: OrasArtifactClient,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    repo = repo_name("referrers")
    subject = registry_http.push_small_image(repo, "app")
    annotations = {
        "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
        "org.example.sbom.format": "spdx",
    }
    pushed, _, _ = _push_sbom(oras_client, registry_host, repo, "sbom", subject, tmp_path, annotations=annotations)

    descriptors = _referrers(registry_http.referrers(repo, subject.digest))
    assert descriptors == [
        {
            "mediaType": OCI_MANIFEST,
            "digest": pushed.digest,
            "size": len(pushed.body),
            "artifactType": SBOM_TYPE,
            "annotations": annotations,
        }
    ]
    # The referrer itself is not a subject of anything.
    assert _referrers(registry_http.referrers(repo, pushed.digest)) == []

    # A referrer without `artifactType` is listed with its config media type as artifactType.
    config = registry_http.push_blob(repo, b'{"kind":"attestation"}')
    layer = registry_http.push_blob(repo, os.urandom(64))
    legacy = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": LEGACY_CONFIG_TYPE, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer.digest, "size": layer.size}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": len(subject.body)},
    }
    legacy_pushed = registry_http.put_manifest(repo, "legacy", compact_json(legacy), OCI_MANIFEST)
    assert legacy_pushed.response_headers.get("OCI-Subject") == subject.digest
    by_digest = {d["digest"]: d for d in _referrers(registry_http.referrers(repo, subject.digest))}
    assert set(by_digest) == {pushed.digest, legacy_pushed.digest}
    assert by_digest[legacy_pushed.digest] == {
        "mediaType": OCI_MANIFEST,
        "digest": legacy_pushed.digest,
        "size": len(legacy_pushed.body),
        "artifactType": LEGACY_CONFIG_TYPE,
    }


def test_referrers_artifact_type_filter(
    oras_client: OrasArtifactClient,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    repo = repo_name("filter")
    subject = registry_http.push_small_image(repo, "app")
    sbom, _, _ = _push_sbom(oras_client, registry_host, repo, "sbom", subject, tmp_path)
    signature, _, _ = _push_sbom(
        oras_client, registry_host, repo, "sig", subject, tmp_path, artifact_type=SIGNATURE_TYPE
    )

    everything = _referrers(registry_http.referrers(repo, subject.digest))
    listed = {m["digest"]: m["artifactType"] for m in everything}
    assert listed == {sbom.digest: SBOM_TYPE, signature.digest: SIGNATURE_TYPE}

    filtered = registry_http.referrers(repo, subject.digest, artifact_type=SBOM_TYPE)
    only = _referrers(filtered)
    assert filtered.headers.get("OCI-Filters-Applied") == "artifactType", dict(filtered.headers)
    assert [(m["digest"], m["artifactType"]) for m in only] == [(sbom.digest, SBOM_TYPE)]

    none = registry_http.referrers(repo, subject.digest, artifact_type="application/vnd.example.none")
    assert _referrers(none) == []
    assert none.headers.get("OCI-Filters-Applied") == "artifactType"


def test_referrers_of_unknown_subject_is_empty_index(
    oras_client: OrasArtifactClient,
    registry_host: str,
    registry_http: RegistryHttp,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    repo = repo_name("empty")
    registry_http.push_small_image(repo, "app")  # the repository exists; the subject below does not (yet)
    absent = sha256_digest(os.urandom(32))

    assert _referrers(registry_http.referrers(repo, absent)) == []
