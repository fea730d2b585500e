"""Digest parsing, validation and computation."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registry.digest import SUPPORTED_ALGORITHMS, Digest
from services.registry.errors import ErrorCode, RegistryError

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_SHA512 = hashlib.sha512(b"").hexdigest()


def test_parse_sha256() -> None:
    digest = Digest.parse(f"sha256:{EMPTY_SHA256}")
    assert digest == Digest("sha256", EMPTY_SHA256)
    assert digest.algorithm == "sha256"
    assert digest.hex == EMPTY_SHA256
    assert str(digest) == f"sha256:{EMPTY_SHA256}"


def test_parse_sha512() -> None:
    digest = Digest.parse(f"sha512:{EMPTY_SHA512}")
    assert digest.algorithm == "sha512"
    assert len(digest.hex) == 128


def test_supported_algorithms() -> None:
    assert SUPPORTED_ALGORITHMS == {"sha256": 64, "sha512": 128}


def test_of_matches_hashlib() -> None:
    assert Digest.of(b"") == Digest("sha256", EMPTY_SHA256)
    assert Digest.of(b"", "sha512") == Digest("sha512", EMPTY_SHA512)
    assert Digest.of(bytearray(b"abc")).hex == hashlib.sha256(b"abc").hexdigest()
    assert Digest.of(memoryview(b"abc"), "sha512").hex == hashlib.sha512(b"abc").hexdigest()


def test_of_unsupported_algorithm() -> None:
    with pytest.raises(RegistryError) as info:
        Digest.of(b"x", "md5")
    assert info.value.code is ErrorCode.DIGEST_INVALID


def test_digests_are_hashable_and_comparable() -> None:
    a = Digest.parse(f"sha256:{EMPTY_SHA256}")
    b = Digest("sha256", EMPTY_SHA256)
    assert a == b
    assert {a: 1}[b] == 1
    assert a != Digest.of(b"x")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected <algorithm>:<encoded>"),
        ("sha256", "expected <algorithm>:<encoded>"),
        (EMPTY_SHA256, "expected <algorithm>:<encoded>"),
        (":" + EMPTY_SHA256, "algorithm"),
        ("sha256:", "encoded"),
        ("SHA256:" + EMPTY_SHA256, "algorithm"),
        ("sha256:" + EMPTY_SHA256.upper(), "lowercase"),
        ("sha256:" + EMPTY_SHA256[:-1], "64"),
        ("sha256:" + EMPTY_SHA256 + "0", "64"),
        ("sha256:" + EMPTY_SHA256 + "\n", "encoded"),
        ("sha256:" + EMPTY_SHA256 + " ", "encoded"),
        (" sha256:" + EMPTY_SHA256, "algorithm"),
        ("sha256:" + "g" * 64, "lowercase"),
        ("sha256:" + "=" * 64, "lowercase"),
        ("sha256:" + EMPTY_SHA256 + ":x", "encoded"),
        ("sha512:" + EMPTY_SHA256, "128"),
        ("sha384:" + "a" * 96, "unsupported algorithm"),
        ("md5:" + "a" * 32, "unsupported algorithm"),
        ("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", "unsupported algorithm"),
        ("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", "unsupported algorithm"),
        ("sha256-:" + EMPTY_SHA256, "algorithm"),
        ("sha__256:" + EMPTY_SHA256, "algorithm"),
        ("sha256:\u0661" * 1, "encoded"),  # an Arabic-Indic digit is not hex
        ("sha256:" + "\uff41" * 64, "encoded"),  # fullwidth 'a'
    ],
)
def test_invalid_digests(text: str, why: str) -> None:
    with pytest.raises(RegistryError) as info:
        Digest.parse(text)
    assert info.value.code is ErrorCode.DIGEST_INVALID
    assert info.value.status == 400
    assert why in info.value.message


def test_huge_input_message_is_bounded() -> None:
    with pytest.raises(RegistryError) as info:
        Digest.parse("sha256:" + "a" * 1_000_000)
    assert len(info.value.message) < 1000
    assert len(str(info.value.detail)) < 1000


def test_non_string_input() -> None:
    with pytest.raises(RegistryError) as info:
        Digest.parse(b"sha256:" + EMPTY_SHA256.encode())  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.DIGEST_INVALID


def test_direct_construction_validates() -> None:
    with pytest.raises(RegistryError):
        Digest("sha256", "abc")
    with pytest.raises(RegistryError):
        Digest("sha1", "a" * 40)


def test_frozen() -> None:
    digest = Digest.of(b"")
    with pytest.raises(AttributeError):
        digest.hex = "0" * 64  # type: ignore[misc]


@given(st.binary(), st.sampled_from(sorted(SUPPORTED_ALGORITHMS)))
def test_of_round_trips_through_str(data: bytes, algorithm: str) -> None:
    digest = Digest.of(data, algorithm)
    assert Digest.parse(str(digest)) == digest
    assert digest.hex == hashlib.new(algorithm, data).hexdigest()


@given(st.text())
def test_parse_arbitrary_text_raises_only_registry_errors(text: str) -> None:
    try:
        digest = Digest.parse(text)
    except RegistryError as exc:
        assert exc.code is ErrorCode.DIGEST_INVALID
    else:
        assert str(digest) == text


@given(
    st.sampled_from(sorted(SUPPORTED_ALGORITHMS)),
    st.text(alphabet="0123456789abcdefABCDEF=_-xyz", min_size=0, max_size=140),
)
def test_parse_near_miss_encodings(algorithm: str, encoded: str) -> None:
    text = f"{algorithm}:{encoded}"
    valid = len(encoded) == SUPPORTED_ALGORITHMS[algorithm] and all(c in "0123456789abcdef" for c in encoded)
    if valid:
        assert str(Digest.parse(text)) == text
    else:
        with pytest.raises(RegistryError):
            Digest.parse(text)
