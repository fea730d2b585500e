"""Helm charts as OCI artifacts, pushed the way `helm push` does and pulled back the way `helm pull` does."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.e2e.clients import (
    HELM_CHART_CONTENT,
    HELM_CONFIG,
    OCI_MANIFEST,
    RegistryHttp,
    build_helm_chart,
    push_helm_chart,
    read_chart_file,
    sha256_digest,
)

# What helm (oras-go) sends when it pulls a chart manifest.
HELM_ACCEPT = "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.parametrize(("version", "tag"), [("1.2.3", "1.2.3"), ("0.4.0-rc.1+build.7", "0.4.0-rc.1_build.7")])
def test_helm_chart_push_and_pull(
    registry_http: RegistryHttp, repo_name: Callable[[str], str], version: str, tag: str
) -> None:
    chart = build_helm_chart("webapp", version)
    assert chart.tag == tag
    namespace = repo_name("charts")
    repo = f"{namespace}/{chart.name}"

    pushed = push_helm_chart(registry_http, namespace, chart)

    # Tag = chart version (helm's '+' -> '_').
    assert registry_http.tags(repo) == [tag]

    # Pull: manifest by tag, then config and chart blobs.
    response = registry_http.get_manifest(repo, tag, accept=HELM_ACCEPT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == OCI_MANIFEST
    assert response.headers["docker-content-digest"] == pushed.digest
    assert response.content == pushed.body
    manifest = json.loads(response.content)
    assert manifest["config"]["mediaType"] == HELM_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [HELM_CHART_CONTENT]
    assert manifest["annotations"]["org.opencontainers.image.version"] == version
    assert manifest["annotations"]["org.opencontainers.image.title"] == chart.name

    config = registry_http.get_blob(repo, manifest["config"]["digest"])
    assert config == chart.config_bytes
    assert json.loads(config) == chart.metadata
    assert json.loads(config)["version"] == version

    package = registry_http.get_blob(repo, manifest["layers"][0]["digest"])
    assert package == chart.package
    assert sha256_digest(package) == manifest["layers"][0]["digest"]
    assert len(package) == manifest["layers"][0]["size"]
    chart_yaml = read_chart_file(package, f"{chart.name}/Chart.yaml")
    assert f"version: {version}\n" in chart_yaml
    assert "apiVersion: v2\n" in chart_yaml
    assert "kind: Deployment" in read_chart_file(package, f"{chart.name}/templates/deployment.yaml")
    assert "replicaCount: 1" in read_chart_file(package, f"{chart.name}/values.yaml")

    # By digest too (what `helm pull ...@sha256:` does).
    by_digest = registry_http.get_manifest(repo, pushed.digest, accept=HELM_ACCEPT)
    assert by_digest.status_code == 200
    assert by_digest.content == pushed.body


def test_helm_chart_versions_are_tags(registry_http: RegistryHttp, repo_name: Callable[[str], str]) -> None:
    namespace = repo_name("charts")
    charts = [build_helm_chart("api", version) for version in ("0.1.0", "0.2.0", "1.0.0")]
    digests = {chart.version: push_helm_chart(registry_http, namespace, chart).digest for chart in charts}

    assert sorted(registry_http.tags(f"{namespace}/api")) == ["0.1.0", "0.2.0", "1.0.0"]
    assert len(set(digests.values())) == 3
    for chart in charts:
        response = registry_http.get_manifest(f"{namespace}/api", chart.tag, accept=HELM_ACCEPT)
        assert response.status_code == 200
        assert response.headers["docker-content-digest"] == digests[chart.version]
        layer = json.loads(response.content)["layers"][0]
        assert registry_http.get_blob(f"{namespace}/api", layer["digest"]) == chart.package
