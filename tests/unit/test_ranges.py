"""Content-Range of chunk uploads and Range of blob downloads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registry.errors import ErrorCode, RegistryError
from services.registry.ranges import parse_content_range, parse_range, storage_serves

# --- Content-Range (uploads) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0-0", (0, 0)),
        ("0-1023", (0, 1023)),
        ("1024-2047", (1024, 2047)),
        ("  5-9  ", (5, 9)),
        ("bytes 0-1023/4096", (0, 1023)),
        ("bytes 0-1023/*", (0, 1023)),
        ("BYTES 0-9/10", (0, 9)),
        ("bytes=0-1023", (0, 1023)),
        ("Bytes=3-4", (3, 4)),
        ("9223372036854775806-9223372036854775807", (9223372036854775806, 9223372036854775807)),
        ("007-010", (7, 10)),
    ],
)
def test_content_range_forms(header: str, expected: tuple[int, int]) -> None:
    assert parse_content_range(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        " ",
        "-",
        "0-",
        "-5",
        "a-b",
        "0 - 9",
        "0-9\n",
        "0-9,10-19",
        "+1-2",
        "-1-2",
        "1.0-2",
        "bytes 0-9",
        "bytes 0-9/",
        "bytes 0-9/9",  # ends at the complete length: invalid per RFC 9110
        "bytes 0-9/x",
        "bytes=0-",
        "bytes=-5",
        "bytes: 0-9",
        "items 0-9/10",
        "\u0661-\u0662",  # Arabic-Indic digits are not ASCII digits
        "9223372036854775808-9223372036854775809",  # past int64
        "1" * 5000 + "-" + "2" * 5000,  # longer than Python converts by default
    ],
)
def test_malformed_content_range_is_400(header: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_content_range(header)
    assert info.value.code is ErrorCode.BLOB_UPLOAD_INVALID
    assert info.value.status == 400
    assert len(info.value.message) < 400


def test_backwards_content_range_is_416() -> None:
    with pytest.raises(RegistryError) as info:
        parse_content_range("10-9")
    assert info.value.code is ErrorCode.RANGE_INVALID
    assert info.value.status == 416
    assert info.value.body()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"


def test_content_range_non_string() -> None:
    with pytest.raises(RegistryError):
        parse_content_range(None)  # type: ignore[arg-type]


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_content_range_round_trip(a: int, b: int) -> None:
    start, end = min(a, b), max(a, b)
    assert parse_content_range(f"{start}-{end}") == (start, end)
    assert parse_content_range(f"bytes={start}-{end}") == (start, end)
    assert parse_content_range(f"bytes {start}-{end}/*") == (start, end)


@given(st.text())
def test_content_range_raises_only_registry_errors(text: str) -> None:
    try:
        start, end = parse_content_range(text)
    except RegistryError as exc:
        assert exc.code in (ErrorCode.BLOB_UPLOAD_INVALID, ErrorCode.RANGE_INVALID)
        assert exc.status in (400, 416)
    else:
        assert 0 <= start <= end


# --- Range (downloads) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=0-9", 10, (0, 9)),
        ("bytes=0-99", 10, (0, 9)),  # clamped to the last byte
        ("bytes=5-", 10, (5, 9)),
        ("bytes=9-", 10, (9, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-10", 10, (0, 9)),
        ("bytes=-100", 10, (0, 9)),
        ("BYTES=1-2", 10, (1, 2)),
        ("bytes = 1 - 2", 10, (1, 2)),
        ("  bytes=1-2  ", 10, (1, 2)),
        ("bytes=0-", 1, (0, 0)),
    ],
)
def test_range_satisfiable(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=5-1",  # last below first: an invalid range-spec, ignored
        "bytes=0-1,3-4",  # several ranges: serve everything
        "bytes=0-1, 3-4",
        "items=0-1",
        "0-1",
        "bytes=0-1\n",
        "bytes=\u0661-\u0662",
        "bytes=" + "1" * 25 + "-",
    ],
)
def test_range_ignored(header: str) -> None:
    assert parse_range(header, 10) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-", 10),
        ("bytes=10-20", 10),
        ("bytes=100-200", 10),
        ("bytes=-0", 10),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
        ("bytes=0-0", 0),
    ],
)
def test_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RegistryError) as info:
        parse_range(header, size)
    assert info.value.code is ErrorCode.RANGE_NOT_SATISFIABLE
    assert info.value.status == 416
    assert info.value.headers == {"Content-Range": f"bytes */{size}"}


def test_range_non_string() -> None:
    assert parse_range(None, 10) is None  # type: ignore[arg-type]


@given(st.text(), st.integers(0, 2**40))
def test_range_raises_only_registry_errors(text: str, size: int) -> None:
    for header in (text, "bytes=" + text):
        try:
            result = parse_range(header, size)
        except RegistryError as exc:
            assert exc.status == 416
            assert exc.headers["Content-Range"] == f"bytes */{size}"
        else:
            if result is not None:
                start, end = result
                assert 0 <= start <= end < size


@given(st.integers(0, 2**40), st.integers(0, 2**41), st.integers(0, 2**41))
def test_range_results_lie_inside_the_blob(size: int, a: int, b: int) -> None:
    for header in (f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}"):
        try:
            result = parse_range(header, size)
        except RegistryError:
            # Only ranges that start at or past the end (or empty suffixes / empty blobs) are refused.
            assert size == 0 or a >= size or (header == f"bytes=-{b}" and b == 0)
            continue
        if result is None:
            assert header == f"bytes={a}-{b}" and b < a
            continue
        start, end = result
        assert 0 <= start <= end < size
        if header.endswith("-"):
            assert (start, end) == (a, size - 1)
        elif header.startswith("bytes=-"):
            assert end - start + 1 == min(b, size)
        else:
            assert (start, end) == (a, min(b, size - 1))


# --- which Ranges a blob GET may redirect to storage (issue 10) ---------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "redirected"),
    [
        ("bytes=0-9", 10, True),
        ("bytes=9-9", 10, True),
        ("bytes=5-", 10, True),
        ("bytes=0-", 1, True),
        ("bytes=-3", 10, False),  # a suffix: Azurite answers 500, Azure documents no such form
        ("bytes=-0", 10, False),
        ("bytes=0-10", 10, False),  # an end past the blob: clamped by the registry, not left to storage
        ("bytes=10-", 10, False),  # unsatisfiable: the registry's 416
        ("bytes=0-", 0, False),
        ("bytes=5-1", 10, False),
        ("bytes=0-1,3-4", 10, False),  # several ranges
        ("bytes = 0-1", 10, False),  # valid, but not the one spelling storage documents
        ("BYTES=0-1", 10, False),
        ("items=0-1", 10, False),
        ("", 10, False),
        ("bytes=" + "1" * 25 + "-", 10, False),
    ],
)
def test_storage_serves(header: str, size: int, redirected: bool) -> None:
    assert storage_serves(header, size) is redirected
