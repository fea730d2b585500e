"""Manifest parsing and validation: what a pushed manifest is, what it references, what it refers to.

`parse_manifest` accepts the four schema-2 manifest types (OCI image manifest and index, Docker image
manifest and manifest list) and rejects everything else with `MANIFEST_INVALID` (400), or, when given a
`max_size`, with `MANIFEST_TOO_LARGE` (413, reported as `MANIFEST_INVALID`) past it. The registry stores
the exact bytes it was given, so parsing never normalises anything; the digest is taken over the bytes.

Choices, where the specs leave room:

- The media type. The distribution spec says a client MUST send a `Content-Type` equal to the body's
  `mediaType` when the body has one. So when both are present and specific they must agree. When the
  body has none, the header decides; when the header is missing or generic (`application/json`,
  `application/octet-stream`), the body's field decides, and failing that the shape does: `manifests`
  means an OCI index, `config` an OCI image manifest (Docker manifests always carry `mediaType`).
- Ambiguous documents are rejected: an image manifest with a `manifests` field, or an index with
  `config` or `layers`. A document that parses as both kinds could be read differently by different
  clients, which is how content gets past a signature check (the image-spec 1.0.2 advisory).
- Docker schema 1 is `MANIFEST_INVALID` with an explanation, not `UNSUPPORTED`: the spec's 405 for
  UNSUPPORTED means an operation is switched off, while here the operation is fine and the document
  is what the registry will not accept (CNCF distribution answers the same way).
- Empty `layers` is allowed. The image-spec only says portable images SHOULD have a layer, and
  artifacts (signatures, SBOMs) commonly have none. Likewise an empty-descriptor config without an
  `artifactType` is accepted although image-spec 1.1 says it MUST have one: older artifact tools
  push such manifests, and refusing them would strand content that other registries take.
- Duplicate JSON keys are rejected: parsers disagree on which value wins, and a registry must not
  see a different manifest from the one its clients see.
- Descriptors are checked strictly (a supported digest, an integer size that is not a bool, a media
  type shaped as RFC 6838 asks); unknown fields are allowed and kept in the stored bytes.
- How many descriptors a manifest lists (`layers` plus `manifests`) is capped by the caller's
  `max_descriptors` (the `MAX_MANIFEST_DESCRIPTORS` setting, 1,000). Neither the spec, CNCF distribution nor
  ACR's documented limits cap the count; only the 4 MiB size limit does, which admits some 25,000
  descriptors, and each is a read in the repository before the push is accepted. Real images stay far
  below it (Docker refuses more than 127 layers; multi-platform indexes list tens); repeats are legal
  (images repeat their empty layer) and count, but are read once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from services.registry.digest import Digest
from services.registry.errors import ErrorCode, RegistryError

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY_JSON: Final = "application/vnd.oci.empty.v1+json"
# Dropped before image-spec 1.1 was released; named only to explain why it is refused.
OCI_ARTIFACT_MANIFEST: Final = "application/vnd.oci.artifact.manifest.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"
HELM_CONFIG: Final = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_CONTENT: Final = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

IMAGE_MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES: Final = IMAGE_MANIFEST_TYPES | INDEX_TYPES
# Content-Types that say nothing about which manifest this is.
GENERIC_CONTENT_TYPES: Final = frozenset({"", "application/json", "application/octet-stream"})

# The spec asks registries to take manifests of at least 4 MiB; distribution's limit is the same.
MAX_MANIFEST_SIZE: Final = 4 * 1024 * 1024
# The `{}` blob of the empty descriptor (image-spec 1.1, "Guidance for an Empty Descriptor").
EMPTY_JSON_DIGEST: Final = Digest("sha256", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")

# RFC 6838 section 4.2: type "/" subtype, each a restricted-name of at most 127 characters.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE: Final = re.compile(rf"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")
_MAX_SIZE: Final = (1 << 63) - 1  # descriptor sizes are int64
_SCHEMA1_TYPES: Final = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
_SCHEMA1_MESSAGE: Final = (
    "Docker schema 1 manifests are not supported; push with a schema 2 or OCI client "
    "(Docker 1.10 or later, containerd, buildah, oras)"
)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A reference to content by media type, digest and size (image-spec descriptor.md)."""

    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] | None = field(default=None, hash=False)
    artifact_type: str | None = None
    platform: dict[str, Any] | None = field(default=None, hash=False)
    # Base64 of the content itself, when embedded (image-spec 1.1).
    data: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The descriptor in OCI JSON form, with optional fields only when set."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations is not None:
            out["annotations"] = dict(self.annotations)
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        if self.platform is not None:
            out["platform"] = self.platform
        if self.data is not None:
            out["data"] = self.data
        return out


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    """A validated manifest: what it is, what it needs in the repository, and what it refers to."""

    media_type: str
    digest: Digest
    size: int
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str] | None = field(default=None, hash=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def required_blobs(self) -> tuple[Descriptor, ...]:
        """Blobs that must exist in the repository: the config and every layer without `urls`.

        A layer with `urls` (a non-distributable or "foreign" layer) is fetched from those URLs, so
        the registry need not hold it. Index children are manifests, not blobs, and are not listed.
        """
        if self.config is None:
            return ()
        return (self.config, *(layer for layer in self.layers if not layer.urls))

    @property
    def is_helm_chart(self) -> bool:
        return self.config is not None and self.config.media_type == HELM_CONFIG

    def referrer_descriptor(self) -> dict[str, Any]:
        """This manifest's entry in the referrers index of its subject (distribution spec v1.1).

        `artifactType` is the manifest's own, else (image manifests only) its config's media type; an
        index without one gets none. All the manifest's annotations are copied.
        """
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        artifact_type = self.artifact_type or (self.config.media_type if self.config is not None else None)
        if artifact_type:
            out["artifactType"] = artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def build_referrers_index(descriptors: list[dict[str, Any]]) -> bytes:
    """The body of a referrers response: an OCI image index listing `descriptors`."""
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(descriptors)}
    return json.dumps(index, separators=(",", ":")).encode("utf-8")


def _invalid(message: str, detail: object = None) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, message, detail)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _invalid(f"manifest JSON repeats the key {key[:100]!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise _invalid(f"manifest JSON contains {name}, which is not JSON")


def _load_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"manifest is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _invalid(f"manifest is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise _invalid("manifest JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python will convert
        raise _invalid(f"manifest is not valid JSON: {exc}") from None


def _normalise_content_type(content_type: str | None) -> str:
    if content_type is None:
        return ""
    # Registries SHOULD ignore parameters (distribution spec, "Pushing Manifests"); media types are
    # case-insensitive (RFC 6838).
    return content_type.split(";", 1)[0].strip(" \t").lower()


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{where} must be a string")
    return value


def _media_type(value: object, where: str) -> str:
    text = _string(value, where)
    if not _MEDIA_TYPE.fullmatch(text):
        raise _invalid(f"{where} {text[:200]!r} is not a media type (type/subtype, RFC 6838)")
    return text


def _artifact_type(value: object, where: str) -> str | None:
    # The distribution spec treats an empty artifactType as absent ("no artifactType or it is empty").
    if value is None or value == "":
        return None
    return _media_type(value, where)


def _annotations(value: object, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid(f"{where} must be an object of strings")
    return dict(value)


def _platform(value: object, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be an object")
    for key in ("architecture", "os"):
        _string(value.get(key), f"{where}.{key}")
    return value


def _descriptor(value: object, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a descriptor object")
    media_type = _media_type(value.get("mediaType"), f"{where}.mediaType")
    digest_text = _string(value.get("digest"), f"{where}.digest")
    try:
        digest = Digest.parse(digest_text)
    except RegistryError as exc:
        raise _invalid(f"{where}.digest: {exc.message}", exc.detail) from None
    size = value.get("size")
    # bool is an int in Python; JSON true is not a size.
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_SIZE:
        raise _invalid(f"{where}.size must be a non-negative integer")
    urls = value.get("urls")
    if urls is not None and (not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)):
        raise _invalid(f"{where}.urls must be an array of strings")
    artifact_type = value.get("artifactType")
    data = value.get("data")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        urls=tuple(urls or ()),
        annotations=_annotations(value.get("annotations"), f"{where}.annotations"),
        artifact_type=_artifact_type(artifact_type, f"{where}.artifactType"),
        platform=_platform(value.get("platform"), f"{where}.platform"),
        data=None if data is None else _string(data, f"{where}.data"),
    )


def _descriptors(value: object, where: str) -> tuple[Descriptor, ...]:
    if not isinstance(value, list):
        raise _invalid(f"{where} must be an array of descriptors")
    return tuple(_descriptor(item, f"{where}[{i}]") for i, item in enumerate(value))


def _decide_media_type(body: dict[str, Any], header: str) -> str:
    declared = body.get("mediaType")
    if declared is not None:
        declared = _string(declared, "mediaType")
    if header in _SCHEMA1_TYPES or declared in _SCHEMA1_TYPES:
        raise _invalid(_SCHEMA1_MESSAGE)
    if header not in GENERIC_CONTENT_TYPES:
        if declared is not None and declared != header:
            raise _invalid(f"Content-Type {header[:200]!r} does not match the manifest's mediaType {declared[:200]!r}")
        chosen = header
    elif declared is not None:
        chosen = declared
    elif "manifests" in body:
        chosen = OCI_INDEX
    elif "config" in body:
        chosen = OCI_MANIFEST
    else:
        raise _invalid("cannot tell which kind of manifest this is: it has no mediaType, config or manifests")
    if chosen == OCI_ARTIFACT_MANIFEST:
        raise _invalid(
            "OCI artifact manifests were dropped from image-spec 1.1; push an image manifest with "
            "artifactType instead (oras 1.0 and later do)"
        )
    if chosen not in MANIFEST_TYPES:
        raise _invalid(
            f"unsupported manifest media type {chosen[:200]!r}",
            {"supported": sorted(MANIFEST_TYPES)},
        )
    return chosen


def parse_manifest(
    data: bytes,
    content_type: str | None,
    digest_algorithm: str = "sha256",
    *,
    max_size: int | None = None,
    max_descriptors: int | None = None,
) -> ParsedManifest:
    """Validate a pushed manifest and describe it; raises `RegistryError` for anything unacceptable.

    The route layer enforces its configured size limit while reading the body; `max_size` is for
    callers that hold the bytes already (None: no limit here). `max_descriptors` caps how many entries
    `layers` and `manifests` hold together (None: no limit).
    """
    data = bytes(data)
    if max_size is not None and len(data) > max_size:
        raise RegistryError(
            ErrorCode.MANIFEST_TOO_LARGE,
            f"manifest is {len(data)} bytes; the limit is {max_size}",
            {"size": len(data), "limit": max_size},
        )
    body = _load_json(data)
    if not isinstance(body, dict):
        raise _invalid("a manifest must be a JSON object")
    header = _normalise_content_type(content_type)
    schema_version = body.get("schemaVersion")
    if schema_version == 1 and not isinstance(schema_version, bool):
        raise _invalid(_SCHEMA1_MESSAGE)
    media_type = _decide_media_type(body, header)
    if not isinstance(schema_version, int) or isinstance(schema_version, bool) or schema_version != 2:
        raise _invalid("schemaVersion must be 2")
    if max_descriptors is not None:
        # Counted before any descriptor is parsed: the count alone decides.
        listed = sum(len(body[key]) for key in ("layers", "manifests") if isinstance(body.get(key), list))
        if listed > max_descriptors:
            raise _invalid(
                f"a manifest may list at most {max_descriptors} layers and manifests; this one lists {listed}",
                {"descriptors": listed, "limit": max_descriptors},
            )

    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    if media_type in INDEX_TYPES:
        if "config" in body or "layers" in body:
            raise _invalid("an index must not have config or layers; is this an image manifest?")
        manifests = _descriptors(body.get("manifests"), "manifests")
    else:
        if "manifests" in body:
            raise _invalid("an image manifest must not have manifests; is this an index?")
        if "config" not in body:
            raise _invalid("an image manifest needs a config descriptor")
        config = _descriptor(body["config"], "config")
        layers = _descriptors(body.get("layers"), "layers")

    subject = body.get("subject")
    artifact_type = body.get("artifactType")
    try:
        digest = Digest.of(data, digest_algorithm)
    except RegistryError:
        raise ValueError(f"unsupported digest algorithm {digest_algorithm!r}") from None
    return ParsedManifest(
        media_type=media_type,
        digest=digest,
        size=len(data),
        config=config,
        layers=layers,
        manifests=manifests,
        subject=None if subject is None else _descriptor(subject, "subject"),
        artifact_type=_artifact_type(artifact_type, "artifactType"),
        annotations=_annotations(body.get("annotations"), "annotations"),
    )
