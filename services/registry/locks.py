"""ACR's changeable attributes (`deleteEnabled`, `writeEnabled`, `listEnabled`, `readEnabled`) of
repositories, tags and manifests, and what each one forbids. Pure rules: no storage.

What ACR documents (container-registry-image-lock.md, the delete-operation troubleshooting article) and how
it is applied here:

    attribute = false      on a tag                  on a manifest              on a repository
    writeEnabled           no push naming the tag,   no push of that manifest,  no push, untag or
                           no untag                  no delete                  delete in it, no repo delete
    deleteEnabled          no untag                  no delete                  no repository delete (its
                                                                                images can still be deleted:
                                                                                "Individual images can still
                                                                                be updated or deleted")
    listEnabled            absent from tag lists     absent from manifest lists absent from the catalogs,
                                                                                and everything in it from lists
    readEnabled            no pull by that tag       no pull by that digest     no pull at all

Tag and manifest attributes are separate ("setting deleteEnabled=false for the tag won't set the same for the
corresponding manifest"). Two consequences the docs imply: deleting a manifest removes its tags, so a locked
tag blocks the delete of the manifest it points at ("if the image attributes are set with writeEnabled=false
or deleteEnabled=false, then it will block image deletion"); and a repository delete removes everything, so
any locked tag or manifest in it blocks it (the troubleshooting article's "a lock exists on your repository,
manifest, or image"). The attributes themselves can always be changed (that is how things are unlocked),
with `metadata/write`.

ACR does not document the status code of a refusal. Its message is documented ("The operation is
disallowed on this registry, repository or image."); Docker prints it as `unknown: ...`, so ACR's code is
outside the OCI list. We answer `405` with the spec's `UNSUPPORTED` code and ACR's message, followed by which
attribute refused it: the distribution spec names 405 for a delete the registry has switched off, and
services/registry/errors.py already reports switched-off operations as 405 `UNSUPPORTED`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.registry.errors import ErrorCode, RegistryError

DISALLOWED = "The operation is disallowed on this registry, repository or image."
# PATCH bodies are four booleans (and two short strings for manifests); anything bigger is not one.
MAX_PATCH_BYTES = 64 * 1024

Attribute = Literal["deleteEnabled", "writeEnabled", "listEnabled", "readEnabled"]


class ChangeableAttributes(BaseModel):
    """The four switches, stored on repository, tag and manifest documents (missing means enabled)."""

    model_config = ConfigDict(extra="ignore")

    deleteEnabled: bool = True
    writeEnabled: bool = True
    listEnabled: bool = True
    readEnabled: bool = True

    def merged(self, patch: AttributesPatch) -> ChangeableAttributes:
        """These attributes with the patch's non-null fields applied (ACR's PATCH is a partial update)."""
        changes = patch.model_dump(include=set(ChangeableAttributes.model_fields), exclude_none=True)
        return self.model_copy(update=changes)


class AttributesPatch(BaseModel):
    """`PATCH /acr/v1/<name>` and `.../_tags/<tag>` bodies. Strict: `"false"` or `0` is not a boolean, and a
    field ACR does not have is refused rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)

    deleteEnabled: bool | None = None
    writeEnabled: bool | None = None
    listEnabled: bool | None = None
    readEnabled: bool | None = None


class ManifestAttributesPatch(AttributesPatch):
    """`PATCH /acr/v1/<name>/_manifests/<digest>`: also the quarantine fields a scanner sets (ACR's
    quarantine pattern: `{"quarantineState": "Passed", "quarantineDetails": "<json string>"}`). Stored only:
    nothing acts on them until the quarantine policy is implemented."""

    quarantineState: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z]+$")
    quarantineDetails: str | None = Field(default=None, max_length=16 * 1024)


P = TypeVar("P", bound=AttributesPatch)


def parse_patch(body: bytes, model: type[P]) -> P:
    """A PATCH body as `model`; an empty body or `null` changes nothing (the body is optional in ACR's API).
    Anything else that is not a valid body is `400 UNSUPPORTED` (the spec's code for "an invalid set of
    parameters"), naming the fields at fault."""
    if len(body) > MAX_PATCH_BYTES:
        raise RegistryError(ErrorCode.UNSUPPORTED, f"the body is over {MAX_PATCH_BYTES} bytes", status=400)
    if not body.strip() or body.strip() == b"null":
        return model()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(part) for part in error["loc"]) or "(body)", "problem": error["msg"]}
            for error in exc.errors(include_url=False, include_input=False)[:8]
        ]
        allowed = ", ".join(model.model_fields)
        raise RegistryError(
            ErrorCode.UNSUPPORTED,
            f"the body must be a JSON object with only these optional fields: {allowed}",
            detail=problems,
            status=400,
        ) from None


# --- refusals -------------------------------------------------------------------------------------------
def disallowed(reason: str, detail: dict[str, Any]) -> RegistryError:
    return RegistryError(ErrorCode.UNSUPPORTED, f"{DISALLOWED} {reason}", detail=detail, status=405)


def _off(attributes: ChangeableAttributes, *names: Attribute) -> Attribute | None:
    """The first of `names` that is switched off."""
    return next((name for name in names if not getattr(attributes, name)), None)


def check_push(
    repository: str,
    repository_attributes: ChangeableAttributes,
    digest: str,
    manifest_attributes: ChangeableAttributes | None,
    tags: Iterable[tuple[str, ChangeableAttributes | None]],
) -> None:
    """A manifest PUT: the repository, the manifest if it exists already, and every existing tag it names
    must be writable (a tag that does not exist yet is a new tag, never an overwrite)."""
    if not repository_attributes.writeEnabled:
        raise disallowed(
            f"Repository '{repository}' has writeEnabled=false.",
            {"repository": repository, "attribute": "writeEnabled"},
        )
    if manifest_attributes is not None and not manifest_attributes.writeEnabled:
        raise disallowed(
            f"Manifest {digest} has writeEnabled=false.",
            {"repository": repository, "digest": digest, "attribute": "writeEnabled"},
        )
    for tag, attributes in tags:
        if attributes is not None and not attributes.writeEnabled:
            raise disallowed(
                f"Tag '{tag}' has writeEnabled=false.",
                {"repository": repository, "tag": tag, "attribute": "writeEnabled"},
            )


def check_untag(
    repository: str, repository_attributes: ChangeableAttributes, tag: str, attributes: ChangeableAttributes
) -> None:
    """Deleting a tag (the manifest stays)."""
    if not repository_attributes.writeEnabled:
        raise disallowed(
            f"Repository '{repository}' has writeEnabled=false.",
            {"repository": repository, "attribute": "writeEnabled"},
        )
    off = _off(attributes, "writeEnabled", "deleteEnabled")
    if off is not None:
        raise disallowed(f"Tag '{tag}' has {off}=false.", {"repository": repository, "tag": tag, "attribute": off})


def check_manifest_delete(
    repository: str,
    repository_attributes: ChangeableAttributes,
    digest: str,
    attributes: ChangeableAttributes,
    tags: Iterable[tuple[str, ChangeableAttributes]],
) -> None:
    """Deleting a manifest, which removes every tag pointing at it."""
    if not repository_attributes.writeEnabled:
        raise disallowed(
            f"Repository '{repository}' has writeEnabled=false.",
            {"repository": repository, "attribute": "writeEnabled"},
        )
    off = _off(attributes, "writeEnabled", "deleteEnabled")
    if off is not None:
        raise disallowed(
            f"Manifest {digest} has {off}=false.", {"repository": repository, "digest": digest, "attribute": off}
        )
    for tag, tag_attributes in tags:
        off = _off(tag_attributes, "writeEnabled", "deleteEnabled")
        if off is not None:
            raise disallowed(
                f"Tag '{tag}' of manifest {digest} has {off}=false.",
                {"repository": repository, "digest": digest, "tag": tag, "attribute": off},
            )


def check_repository_delete(
    repository: str,
    repository_attributes: ChangeableAttributes,
    manifests: Iterable[tuple[str, ChangeableAttributes]],
    tags: Iterable[tuple[str, ChangeableAttributes]],
) -> None:
    """Deleting a repository and everything in it: refused as a whole if anything in it is locked."""
    off = _off(repository_attributes, "writeEnabled", "deleteEnabled")
    if off is not None:
        raise disallowed(f"Repository '{repository}' has {off}=false.", {"repository": repository, "attribute": off})
    for digest, attributes in manifests:
        off = _off(attributes, "writeEnabled", "deleteEnabled")
        if off is not None:
            raise disallowed(
                f"Manifest {digest} in it has {off}=false.",
                {"repository": repository, "digest": digest, "attribute": off},
            )
    for tag, attributes in tags:
        off = _off(attributes, "writeEnabled", "deleteEnabled")
        if off is not None:
            raise disallowed(
                f"Tag '{tag}' in it has {off}=false.", {"repository": repository, "tag": tag, "attribute": off}
            )


def check_read(
    repository: str,
    repository_attributes: ChangeableAttributes,
    attributes: ChangeableAttributes | None,
    what: dict[str, str],
) -> None:
    """A pull of a manifest by tag (`what` = {"tag": ...}, the tag's attributes) or by digest (the
    manifest's)."""
    if not repository_attributes.readEnabled:
        raise disallowed(
            f"Repository '{repository}' has readEnabled=false.",
            {"repository": repository, "attribute": "readEnabled"},
        )
    if attributes is not None and not attributes.readEnabled:
        (kind, value), *_ = what.items()
        shown = f"Tag '{value}'" if kind == "tag" else f"Manifest {value}"
        raise disallowed(
            f"{shown} has readEnabled=false.", {"repository": repository, kind: value, "attribute": "readEnabled"}
        )


def check_blob_delete(
    repository: str,
    digest: str,
    repository_attributes: ChangeableAttributes,
    protected_by: tuple[str, str] | None,
) -> None:
    """Deleting a blob link: not in a write-locked repository, and not a blob a locked manifest (or a locked
    tag's manifest) needs. `protected_by` is ("manifest"|"tag", name) of such a lock, if any."""
    if not repository_attributes.writeEnabled:
        raise disallowed(
            f"Repository '{repository}' has writeEnabled=false.",
            {"repository": repository, "attribute": "writeEnabled"},
        )
    if protected_by is not None:
        kind, name = protected_by
        shown = f"tag '{name}'" if kind == "tag" else f"manifest {name}"
        raise disallowed(
            f"Blob {digest} belongs to the locked {shown}.", {"repository": repository, "digest": digest, kind: name}
        )


def check_blob_read(repository: str, repository_attributes: ChangeableAttributes) -> None:
    """A blob pull (HEAD/GET): refused in a read-locked repository ("no pull at all"); blobs have no
    attributes of their own."""
    check_read(repository, repository_attributes, None, {})


def check_blob_push(repository: str, repository_attributes: ChangeableAttributes) -> None:
    """Starting an upload or a mount: refused in a write-locked repository ("no push"), at the first blob
    rather than at the manifest, so a client does not upload gigabytes only to be refused at the end."""
    if not repository_attributes.writeEnabled:
        raise disallowed(
            f"Repository '{repository}' has writeEnabled=false.",
            {"repository": repository, "attribute": "writeEnabled"},
        )
