"""Byte ranges: the `Content-Range` of a chunk upload, and the `Range` of a blob download.

Uploads (PATCH, and a closing PUT that carries a last chunk). The spec's form is `<start>-<end>`,
inclusive at both ends (`^[0-9]+-[0-9]+$`). Clients in the wild also send the RFC 9110 response form
`bytes <start>-<end>/<total|*>` and the request form `bytes=<start>-<end>`; we accept all three.
- A header that fits none of them is `BLOB_UPLOAD_INVALID` with 400: it is a bad request, not a range
  the registry could not satisfy.
- `start > end` is `RANGE_INVALID` (416), as CNCF distribution answers it: the range is well-formed
  but names no bytes.
- Whether `start` follows on from the bytes already received is the caller's check, which the spec
  answers with 416 (`RANGE_INVALID`).

Downloads (GET blob). RFC 9110 single ranges: `bytes=a-b`, `bytes=a-`, `bytes=-suffix`. The result is
inclusive `(start, end)`, with `end` clamped to the last byte.
- A header that does not parse is ignored (None: send the whole blob), as RFC 9110 section 14.2 says
  a server may ignore a Range it does not understand, and `a > b` makes a range-spec invalid.
- A header with several ranges is ignored too: the answer is 200 with the whole blob. Answering it
  properly needs a multipart/byteranges body, which no registry client asks for, and RFC 9110 section
  14.2 lets a server ignore Range; the whole body is also what a client that sent several ranges must
  cope with anyway. (Coalescing them into one 206 part is only allowed for small gaps, so it is no
  simpler.)
- A valid range that starts past the end (or a zero-length suffix, or any range of an empty blob) is
  unsatisfiable: `RANGE_NOT_SATISFIABLE` (416) with `Content-Range: bytes */<size>`, as RFC 9110
  section 15.5.17 asks.

Which ranges a blob GET may redirect (`storage_serves`). In the redirect mode the client sends its own
Range to the SAS URL, and nothing can make it change that header, so a redirect is only right when Blob
Storage answers that Range as RFC 9110 asks. Azure's Blob service documents two forms, `bytes=a-` and
`bytes=a-b`; Azurite answers 500 to a suffix (`bytes=-500`, `bytes=-0`), a bogus 206 `bytes 1000-999/1000`
to a start at the end, and serves `items=0-5` as bytes. So only one range in exactly those forms, lying
inside the blob, is redirected; every other Range (suffix, unsatisfiable, end past the blob, several
ranges, other units, odd spellings) is answered by the registry itself, streamed from storage like the
proxy mode does. Those are rare (clients resume with `a-`), so the bytes that pass through the API are few.
"""

from __future__ import annotations

import re
from typing import Final

from services.registry.errors import ErrorCode, RegistryError

# Offsets are int64 on the wire (Go clients, Azure Blob). Capping the digit count also keeps int()
# away from Python's limit on converting very long digit strings.
_MAX_OFFSET: Final = (1 << 63) - 1
_NUM = r"([0-9]{1,19})"
_CONTENT_RANGE_FORMS: Final = (
    re.compile(rf"{_NUM}-{_NUM}"),
    re.compile(rf"bytes {_NUM}-{_NUM}/(?:{_NUM}|\*)", re.IGNORECASE),
    re.compile(rf"bytes={_NUM}-{_NUM}", re.IGNORECASE),
)
_RANGE_UNIT: Final = re.compile(r"bytes[ \t]*=[ \t]*(.*)", re.IGNORECASE | re.DOTALL)
_RANGE_SPEC: Final = re.compile(rf"{_NUM}?[ \t]*-[ \t]*{_NUM}?")
# The one spelling of the two forms Azure's Blob service documents (see the module docstring).
_STORAGE_RANGE: Final = re.compile(rf"bytes={_NUM}-{_NUM}?")
# Longer inputs are cut in error messages so a hostile header cannot bloat the response.
_SHOWN = 100


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def parse_content_range(header: str) -> tuple[int, int]:
    """The inclusive `(start, end)` of an upload chunk's Content-Range."""
    text = header.strip(" \t") if isinstance(header, str) else ""
    for form in _CONTENT_RANGE_FORMS:
        match = form.fullmatch(text)
        if match is None:
            continue
        start, end = int(match[1]), int(match[2])
        if start > _MAX_OFFSET or end > _MAX_OFFSET:
            break
        total = match[3] if form.groups == 3 else None
        if start > end:
            raise RegistryError(
                ErrorCode.RANGE_INVALID,
                f"Content-Range {_shown(header)} ends before it starts",
                {"contentRange": text[:_SHOWN]},
            )
        if total is not None and end >= int(total):
            break  # RFC 9110: a range that ends at or past the complete length is invalid
        return start, end
    raise RegistryError(
        ErrorCode.BLOB_UPLOAD_INVALID,
        f"invalid Content-Range {_shown(header) if isinstance(header, str) else '(missing)'}: "
        "expected <start>-<end>, inclusive, e.g. 0-1023",
        {"contentRange": text[:_SHOWN]},
    )


def _unsatisfiable(header: str, size: int) -> RegistryError:
    return RegistryError(
        ErrorCode.RANGE_NOT_SATISFIABLE,
        f"range {_shown(header)} is not satisfiable for a blob of {size} bytes",
        {"range": header[:_SHOWN], "size": size},
        headers={"Content-Range": f"bytes */{size}"},
    )


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive `(start, end)` to serve of a blob of `size` bytes, or None to serve all of it."""
    if not isinstance(header, str):
        return None
    unit = _RANGE_UNIT.fullmatch(header.strip(" \t"))
    if unit is None:
        return None  # another unit, or not a range at all: ignore it
    ranges = unit[1].strip(" \t")
    if "," in ranges:
        return None  # several ranges: serve the whole blob rather than a multipart body
    spec = _RANGE_SPEC.fullmatch(ranges)
    if spec is None:
        return None
    first, last = spec[1], spec[2]
    if first is None:
        if last is None:
            return None  # a bare "-"
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return max(size - suffix, 0), size - 1
    start = int(first)
    if last is not None and int(last) < start:
        return None  # RFC 9110: last-pos below first-pos makes the range-spec invalid
    if start >= size:
        raise _unsatisfiable(header, size)
    end = size - 1 if last is None else min(int(last), size - 1)
    return start, end


def storage_serves(header: str, size: int) -> bool:
    """Whether a blob GET with this Range may be redirected to storage: one `bytes=a-b` or `bytes=a-`
    that lies inside a blob of `size` bytes (anything else is answered by the registry itself)."""
    match = _STORAGE_RANGE.fullmatch(header) if isinstance(header, str) else None
    if match is None:
        return False
    start = int(match[1])
    end = size - 1 if match[2] is None else int(match[2])
    return start <= end < size
