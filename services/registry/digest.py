"""Content digests: parsing, validating and computing `<algorithm>:<encoded>` identifiers.

The grammar is the OCI image-spec's (descriptor.md, "Digests"):

    digest                := algorithm ":" encoded
    algorithm             := algorithm-component (algorithm-separator algorithm-component)*
    algorithm-component   := /[a-z0-9]+/
    algorithm-separator   := /[+._-]/
    encoded               := /[a-zA-Z0-9=_-]+/

The image-spec lets registries accept well-formed digests of algorithms they do not know; we do not,
because every digest we accept names content we must later hash and verify. Only the two registered
algorithms are supported, and for them the spec fixes the encoding: sha256 is 64 and sha512 is 128
*lowercase* hex characters. Anything else is `DIGEST_INVALID` (400), with a message that says which
rule was broken.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from services.registry.errors import ErrorCode, RegistryError

# The length of the hex encoding of each supported algorithm.
SUPPORTED_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

_ALGORITHM = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*")
_ENCODED = re.compile(r"[a-zA-Z0-9=_-]+")
_LOWER_HEX = re.compile(r"[0-9a-f]+")
# Longer inputs are cut in error messages so a hostile header cannot bloat the response.
_SHOWN = 160


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def _invalid(text: str, why: str) -> RegistryError:
    detail = {"digest": text[:_SHOWN]}
    return RegistryError(ErrorCode.DIGEST_INVALID, f"invalid digest {_shown(text)}: {why}", detail)


def _check(algorithm: str, hex_: str, text: str) -> None:
    expected = SUPPORTED_ALGORITHMS.get(algorithm)
    if expected is None:
        supported = ", ".join(sorted(SUPPORTED_ALGORITHMS))
        raise _invalid(text, f"unsupported algorithm {_shown(algorithm)} (supported: {supported})")
    if len(hex_) != expected or not _LOWER_HEX.fullmatch(hex_):
        raise _invalid(text, f"a {algorithm} digest is {expected} lowercase hexadecimal characters")


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated digest of a supported algorithm; construction validates, so every instance is sound."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        _check(self.algorithm, self.hex, f"{self.algorithm}:{self.hex}")

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse `text`; raises `RegistryError(DIGEST_INVALID)` if it is malformed or unsupported."""
        if not isinstance(text, str):
            raise _invalid(repr(text), "a digest must be a string")
        algorithm, sep, encoded = text.partition(":")
        if not sep:
            raise _invalid(text, "expected <algorithm>:<encoded>")
        # fullmatch, not match-with-$: `$` also matches before a trailing newline.
        if not _ALGORITHM.fullmatch(algorithm):
            raise _invalid(text, "the algorithm must be lowercase letters and digits joined by + . _ -")
        if not _ENCODED.fullmatch(encoded):
            raise _invalid(text, "the encoded part must be letters, digits, '=', '_' or '-'")
        _check(algorithm, encoded, text)
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview, algorithm: str = "sha256") -> Digest:
        """The digest of `data` under `algorithm` (sha256 or sha512)."""
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise _invalid(f"{algorithm}:", f"unsupported algorithm {_shown(algorithm)}")
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())
