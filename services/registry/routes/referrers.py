"""`GET /v2/<name>/referrers/<digest>[?artifactType=]`: an image index of the manifests whose `subject` is
`<digest>`. Never 404: a subject that does not exist (yet) simply has no referrers."""

from __future__ import annotations

from starlette.responses import Response

from services.registry.app import Call
from services.registry.digest import Digest
from services.registry.manifest import OCI_INDEX, build_referrers_index
from services.registry.store import repo_key


async def get_referrers(call: Call) -> Response:
    subject = Digest.parse(call.reference)
    repo = repo_key(call.registry.registry, call.name)
    descriptors = await call.api.artifacts.list_referrers(repo, str(subject))
    headers = {}
    artifact_type = call.request.query_params.get("artifactType")
    if artifact_type:
        descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
        headers["OCI-Filters-Applied"] = "artifactType"
    descriptors.sort(key=lambda d: str(d.get("digest")))
    return Response(build_referrers_index(descriptors), media_type=OCI_INDEX, headers=headers)
