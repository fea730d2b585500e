"""The `/v2/` route table: (route kind, method) -> handler. One module per resource, as in distribution."""

from __future__ import annotations

from services.registry.app import Handler
from services.registry.routes import base, blobs, catalog, manifests, referrers, tags, uploads

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
    ("blob", "DELETE"): blobs.delete_blob,
    ("upload", "POST"): uploads.start_upload,
    ("upload_session", "GET"): uploads.get_upload,
    ("upload_session", "PATCH"): uploads.patch_upload,
    ("upload_session", "PUT"): uploads.put_upload,
    ("upload_session", "DELETE"): uploads.delete_upload,
    ("referrers", "GET"): referrers.get_referrers,
}
