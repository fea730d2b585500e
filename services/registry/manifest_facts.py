"""What the `/acr/v1/` API reports of a manifest beyond its bytes, worked out once at push: the image's
size, its platform (from the config blob) and, for an index, its children's platforms. Pure functions.

- `imageSize` is the sum of the config's and the layers' sizes, as their descriptors state them (foreign
  layers included: they are part of the image even if the registry does not hold them). An index has no
  config or layers; ACR documents no size for one, and we report the index's own size.
- `architecture` and `os` come from the image config (`application/vnd.oci.image.config.v1+json` or Docker's
  `application/vnd.docker.container.image.v1+json`), read at push only when the config is at most
  `CONFIG_READ_LIMIT` bytes (real configs are a few KiB; one that is not a JSON object, or whose fields are
  not short strings, gives neither).
- `references` lists an index's children with the platform its descriptors name.
"""

from __future__ import annotations

import json
from typing import Any, Final

from services.registry.manifest import DOCKER_CONFIG, OCI_CONFIG, ParsedManifest

CONFIG_READ_LIMIT: Final = 1 << 20
IMAGE_CONFIG_TYPES: Final = frozenset({OCI_CONFIG, DOCKER_CONFIG})
_MAX_PLATFORM_FIELD = 64


def image_size(manifest: ParsedManifest) -> int:
    if manifest.config is None:
        return manifest.size
    return manifest.config.size + sum(layer.size for layer in manifest.layers)


def wants_config(manifest: ParsedManifest) -> bool:
    """Whether the config blob is worth reading for its platform."""
    config = manifest.config
    return config is not None and config.media_type in IMAGE_CONFIG_TYPES and config.size <= CONFIG_READ_LIMIT


def _short_string(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= _MAX_PLATFORM_FIELD and value.isprintable():
        return value
    return None


def platform_from_config(data: bytes | None) -> tuple[str | None, str | None]:
    """(architecture, os) of an image config, each None when absent or not a short string."""
    if data is None:
        return None, None
    try:
        config: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(config, dict):
        return None, None
    return _short_string(config.get("architecture")), _short_string(config.get("os"))


def index_references(manifest: ParsedManifest) -> list[dict[str, str]] | None:
    """An index's children as ACR's `references`: digest, and architecture and os where the index says."""
    if not manifest.is_index:
        return None
    references = []
    for child in manifest.manifests:
        entry = {"digest": str(child.digest)}
        platform = child.platform or {}
        for key in ("architecture", "os"):
            value = _short_string(platform.get(key))
            if value is not None:
                entry[key] = value
        references.append(entry)
    return references
