"""The error catalogue: statuses, spec codes, and the JSON envelope."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registry.errors import ErrorCode, RegistryError

# The distribution spec v1.1 "Error Codes" list.
SPEC_CODES = {
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
}
# Deliberate exceptions, documented in errors.py.
OUTSIDE_SPEC = {"TAG_INVALID", "PAGINATION_NUMBER_INVALID", "TAG_UNKNOWN", "UNKNOWN", "UNAVAILABLE"}


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.BLOB_UNKNOWN, 404),
        (ErrorCode.BLOB_UPLOAD_INVALID, 400),
        (ErrorCode.BLOB_UPLOAD_UNKNOWN, 404),
        (ErrorCode.DIGEST_INVALID, 400),
        (ErrorCode.MANIFEST_BLOB_UNKNOWN, 400),
        (ErrorCode.MANIFEST_INVALID, 400),
        (ErrorCode.MANIFEST_UNKNOWN, 404),
        (ErrorCode.NAME_INVALID, 400),
        (ErrorCode.NAME_UNKNOWN, 404),
        (ErrorCode.SIZE_INVALID, 400),
        (ErrorCode.UNAUTHORIZED, 401),
        (ErrorCode.DENIED, 403),
        (ErrorCode.UNSUPPORTED, 405),
        (ErrorCode.TOOMANYREQUESTS, 429),
        (ErrorCode.RANGE_INVALID, 416),
        (ErrorCode.RANGE_NOT_SATISFIABLE, 416),
        (ErrorCode.MANIFEST_TOO_LARGE, 413),
        (ErrorCode.TAG_INVALID, 400),
        (ErrorCode.PAGINATION_NUMBER_INVALID, 400),
        (ErrorCode.TAG_UNKNOWN, 404),
        (ErrorCode.UNKNOWN, 500),
        (ErrorCode.UNAVAILABLE, 503),
    ],
)
def test_status_of_each_code(code: ErrorCode, status: int) -> None:
    assert code.status == status
    assert RegistryError(code).status == status


def test_every_wire_code_is_in_the_spec_list_or_a_documented_exception() -> None:
    for code in ErrorCode:
        assert code.wire_code in SPEC_CODES | OUTSIDE_SPEC, code
        # The spec: only uppercase letters and underscores.
        assert re.fullmatch(r"[A-Z_]+", code.wire_code)
        assert code.message


def test_spec_codes_report_their_own_name() -> None:
    for code in ErrorCode:
        if code.name in SPEC_CODES:
            assert code.wire_code == code.name


def test_aliases_are_distinct_members_not_enum_aliases() -> None:
    # Equal wire codes must not collapse RANGE_INVALID into BLOB_UPLOAD_INVALID.
    assert len({ErrorCode.RANGE_INVALID, ErrorCode.BLOB_UPLOAD_INVALID}) == 2
    assert ErrorCode.RANGE_INVALID.status != ErrorCode.BLOB_UPLOAD_INVALID.status
    assert ErrorCode.RANGE_INVALID.wire_code == "BLOB_UPLOAD_INVALID"
    assert ErrorCode.MANIFEST_TOO_LARGE.wire_code == "MANIFEST_INVALID"
    assert ErrorCode.RANGE_NOT_SATISFIABLE.wire_code == "SIZE_INVALID"
    assert len(list(ErrorCode)) == 22


def test_body_has_spec_envelope() -> None:
    error = RegistryError(ErrorCode.BLOB_UNKNOWN, "no such blob", {"digest": "sha256:abc"})
    assert error.body() == {
        "errors": [{"code": "BLOB_UNKNOWN", "message": "no such blob", "detail": {"digest": "sha256:abc"}}]
    }


def test_body_omits_missing_detail_and_uses_default_message() -> None:
    error = RegistryError(ErrorCode.DENIED)
    assert error.message == "requested access to the resource is denied"
    assert error.body() == {"errors": [{"code": "DENIED", "message": error.message}]}


def test_alias_body_reports_the_spec_code() -> None:
    assert RegistryError(ErrorCode.RANGE_INVALID).body()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"


def test_falsy_details_are_kept() -> None:
    # Only None means "no detail"; 0, "" and [] are data.
    details: list[object] = [0, "", [], {}]
    for detail in details:
        assert RegistryError(ErrorCode.SIZE_INVALID, detail=detail).body()["errors"][0]["detail"] == detail


def test_status_override_and_headers() -> None:
    error = RegistryError(ErrorCode.BLOB_UPLOAD_INVALID, "out of order", status=416, headers={"Range": "0-9"})
    assert error.status == 416
    assert error.code is ErrorCode.BLOB_UPLOAD_INVALID
    assert error.headers == {"Range": "0-9"}
    assert error.detail is None


def test_headers_are_copies() -> None:
    given_headers = {"A": "1"}
    error = RegistryError(ErrorCode.DENIED, headers=given_headers)
    given_headers["B"] = "2"
    error.headers["C"] = "3"
    assert error.headers == {"A": "1"}
    assert RegistryError(ErrorCode.DENIED).headers == {}


def test_is_an_exception_with_useful_text() -> None:
    with pytest.raises(RegistryError) as info:
        raise RegistryError(ErrorCode.NAME_INVALID, "bad name")
    assert "NAME_INVALID" in str(info.value)
    assert "bad name" in str(info.value)
    assert "NAME_INVALID" in repr(info.value)


def test_empty_message_is_kept() -> None:
    # The spec lets message be empty; only None falls back to the default.
    assert RegistryError(ErrorCode.DENIED, "").message == ""


@given(
    code=st.sampled_from(list(ErrorCode)),
    message=st.text(),
    detail=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    ),
)
def test_body_is_always_serialisable_json(code: ErrorCode, message: str, detail: object) -> None:
    body = RegistryError(code, message, detail).body()
    decoded = json.loads(json.dumps(body))
    assert decoded["errors"][0]["code"] == code.wire_code
    assert decoded["errors"][0]["message"] == message
