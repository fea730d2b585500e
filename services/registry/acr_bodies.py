"""The `/acr/v1/` response bodies, shaped as ACR's 2021-07-01 data-plane API defines them (the models the
`azure-containerregistry` SDK deserializes: `RepositoryAttributes`, `TagAttributes`, `TagList`,
`ManifestAttributes`, `AcrManifests`, `Repositories`, `DeletedRepository`), built from our documents.

Fields ACR marks optional are left out when we have no value for them (an image without a platform in its
config, an image manifest's `references`). Manifests carry `quarantineState`/`quarantineDetails` inside
`changeableAttributes`, where ACR's own clients read them, once a scanner has set them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.registry.locks import ChangeableAttributes
from services.registry.store import ManifestDoc, RepositoryDoc, TagDoc


class Body(BaseModel):
    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ManifestChangeableAttributes(ChangeableAttributes):
    quarantineState: str | None = None
    quarantineDetails: str | None = None


class RepositoryAttributes(Body):
    registry: str
    imageName: str
    createdTime: str
    lastUpdateTime: str
    manifestCount: int
    tagCount: int
    changeableAttributes: ChangeableAttributes


class TagAttributesBase(Body):
    name: str
    digest: str
    createdTime: str
    lastUpdateTime: str
    signed: bool = False  # Docker Content Trust, which ACR retired; nothing here signs tags
    changeableAttributes: ChangeableAttributes


class TagAttributes(Body):
    registry: str
    imageName: str
    tag: TagAttributesBase


class TagList(Body):
    registry: str
    imageName: str
    tags: list[TagAttributesBase]


class ManifestPlatform(Body):
    digest: str
    architecture: str | None = None
    os: str | None = None


class ManifestAttributesBase(Body):
    digest: str
    imageSize: int
    createdTime: str
    lastUpdateTime: str
    architecture: str | None = None
    os: str | None = None
    mediaType: str
    configMediaType: str | None = None
    tags: list[str]
    references: list[ManifestPlatform] | None = None
    changeableAttributes: ManifestChangeableAttributes
    # Ours (an extension ACR's clients ignore): the image's scan state (services/scanning/store.py), in the
    # body of one manifest only.
    scan: dict[str, Any] | None = None


class ManifestAttributes(Body):
    registry: str
    imageName: str
    manifest: ManifestAttributesBase


class ManifestList(Body):
    registry: str
    imageName: str
    manifests: list[ManifestAttributesBase]


class Repositories(Body):
    repositories: list[str]


class DeletedRepository(Body):
    manifestsDeleted: list[str]
    tagsDeleted: list[str]


def repository_body(
    login_server: str, doc: RepositoryDoc, manifests: int, tags: int, last_update: str | None
) -> RepositoryAttributes:
    """`lastUpdateTime` is the latest change of anything in the repository or of its attributes."""
    latest = max(stamp for stamp in (doc.created, doc.updated, last_update) if stamp)
    return RepositoryAttributes(
        registry=login_server,
        imageName=doc.name,
        createdTime=doc.created,
        lastUpdateTime=latest,
        manifestCount=manifests,
        tagCount=tags,
        changeableAttributes=doc.changeableAttributes,
    )


def tag_base(doc: TagDoc) -> TagAttributesBase:
    return TagAttributesBase(
        name=doc.name,
        digest=doc.digest,
        createdTime=doc.created_time,
        lastUpdateTime=doc.updated,
        changeableAttributes=doc.changeableAttributes,
    )


def manifest_base(doc: ManifestDoc, tags: list[str]) -> ManifestAttributesBase:
    attributes = ManifestChangeableAttributes(
        **doc.changeableAttributes.model_dump(),
        quarantineState=doc.quarantineState,
        quarantineDetails=doc.quarantineDetails,
    )
    return ManifestAttributesBase(
        digest=doc.digest,
        # Manifests pushed before imageSize was recorded report their own size.
        imageSize=doc.imageSize if doc.imageSize is not None else doc.size,
        createdTime=doc.created,
        lastUpdateTime=doc.last_update,
        architecture=doc.architecture,
        os=doc.os,
        mediaType=doc.mediaType,
        configMediaType=doc.configMediaType,
        tags=tags,
        references=[ManifestPlatform.model_validate(ref) for ref in doc.references] if doc.references else None,
        changeableAttributes=attributes,
    )
