"""The route table of `/v2/` and `/acr/v1/`: (route kind, method) -> handler. One module per resource, as in
distribution; the `acr_*` kinds are ACR's metadata API (services/registry/acr_paths.py)."""

from __future__ import annotations

from services.registry.app import Handler
from services.registry.changes import guard_blob_delete
from services.registry.routes import (
    acr_deleted,
    acr_manifests,
    acr_repositories,
    acr_tags,
    base,
    blobs,
    catalog,
    manifests,
    referrers,
    tags,
    uploads,
)

ROUTES: dict[tuple[str, str], Handler] = {
    ("base", "GET"): base.get_base,
    ("catalog", "GET"): catalog.get_catalog,
    ("tags", "GET"): tags.get_tags,
    ("manifest", "GET"): manifests.get_manifest,
    ("manifest", "HEAD"): manifests.head_manifest,
    ("manifest", "PUT"): manifests.put_manifest,
    ("manifest", "DELETE"): manifests.delete_manifest,
    ("blob", "GET"): blobs.get_blob,
    ("blob", "HEAD"): blobs.head_blob,
    ("blob", "DELETE"): guard_blob_delete(blobs.delete_blob),  # locked images keep their blobs
    ("upload", "POST"): uploads.start_upload,
    ("upload_session", "GET"): uploads.get_upload,
    ("upload_session", "PATCH"): uploads.patch_upload,
    ("upload_session", "PUT"): uploads.put_upload,
    ("upload_session", "DELETE"): uploads.delete_upload,
    ("referrers", "GET"): referrers.get_referrers,
    ("acr_catalog", "GET"): acr_repositories.get_catalog,
    ("acr_repository", "GET"): acr_repositories.get_repository,
    ("acr_repository", "PATCH"): acr_repositories.patch_repository,
    ("acr_repository", "DELETE"): acr_repositories.delete_repository,
    ("acr_tags", "GET"): acr_tags.list_tags,
    ("acr_tag", "GET"): acr_tags.get_tag,
    ("acr_tag", "PATCH"): acr_tags.patch_tag,
    ("acr_tag", "DELETE"): acr_tags.delete_tag,
    ("acr_manifests", "GET"): acr_manifests.list_manifests,
    ("acr_manifest", "GET"): acr_manifests.get_manifest,
    ("acr_manifest", "PATCH"): acr_manifests.patch_manifest,
    ("acr_manifest", "DELETE"): acr_manifests.delete_manifest,
    ("acr_manifest_scan", "POST"): acr_manifests.request_scan,
    ("acr_deleted_catalog", "GET"): acr_deleted.get_catalog,
    ("acr_deleted_manifests", "GET"): acr_deleted.list_manifests,
    ("acr_deleted_tags", "GET"): acr_deleted.list_tags,
    ("acr_deleted_manifest", "POST"): acr_deleted.restore_manifest,
}
