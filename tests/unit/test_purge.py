"""`acr purge`'s pure parts: the filter, the duration and which tags and manifests it picks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from services.cli.errors import CliError, ExitCode
from services.cli.purge_command import parse_ago, parse_filter, select_tags, select_untagged


def test_filter_splits_at_the_last_colon_and_matches_whole_names() -> None:
    f = parse_filter("team/.*:v[0-9]+")
    assert f.repository.fullmatch("team/app") and not f.repository.fullmatch("other/team/app")
    assert f.tag.fullmatch("v12") and not f.tag.fullmatch("v12-rc")
    for bad in ("no-colon", ":v1", "repo:", "[:x", "repo:(("):
        with pytest.raises(CliError):
            parse_filter(bad)


def test_filters_are_re2_linear_whatever_the_pattern() -> None:
    # Python's re backtracks exponentially on this pair (2^60 paths); RE2 answers at once.
    f = parse_filter("patho:(a+)+$")
    assert f.tag.fullmatch("a" * 60) and not f.tag.fullmatch("a" * 60 + "b")
    assert parse_filter(r"team/.*:v\d+\.\d+(-rc\d+)?").tag.fullmatch("v1.2-rc3")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (r"repo:(a)\1", "invalid escape sequence"),  # a backreference
        ("repo:(?!v1).*", "invalid perl operator"),  # a lookahead
        ("(?<=x)repo:.*", "invalid perl operator"),  # a lookbehind, in the repository expression
        ("repo:a{5000}", "invalid repetition size"),
    ],
)
def test_what_re2_refuses_is_named_before_anything_runs(text: str, reason: str) -> None:
    with pytest.raises(CliError) as refused:
        parse_filter(text)
    assert reason in refused.value.message and "RE2" in refused.value.message
    assert refused.value.exit_code == ExitCode.BAD_INPUT


def test_a_filter_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(CliError, match="longer than"):
        parse_filter("repo:" + "a" * 2000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("1d6h", timedelta(days=1, hours=6)),
        ("15m", timedelta(minutes=15)),
        ("90s", timedelta(seconds=90)),
        ("0", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_ago(text) == expected


@pytest.mark.parametrize("text", ["", "d", "1w", "-1d", "1.5d", "6h1d", "30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(CliError):
        parse_ago(text)


def test_select_tags_keeps_the_latest_and_the_young() -> None:
    now = datetime(2026, 1, 31, tzinfo=UTC)
    tags = [{"name": f"v{day}", "lastUpdateTime": f"2026-01-{day:02d}T00:00:00Z"} for day in range(1, 31)]
    tags.append({"name": "latest", "lastUpdateTime": "2026-01-01T00:00:00Z"})
    tags.append({"name": "odd", "lastUpdateTime": "not a time"})
    picked = select_tags(tags, re.compile(r"v\d+"), now - timedelta(days=10), keep=3)
    # older than 10 days: v1..v20; the 3 most recent of those (v20, v19, v18) stay
    assert [tag["name"] for tag in picked] == [f"v{day}" for day in range(17, 0, -1)]


def test_select_untagged_spares_the_children_of_a_tagged_index() -> None:
    manifests = [
        {"digest": "sha256:index", "tags": ["multi"], "references": [{"digest": "sha256:child"}]},
        {"digest": "sha256:child", "tags": []},
        {"digest": "sha256:orphan", "tags": []},
        {"digest": "sha256:image", "tags": ["v1"]},
    ]
    assert [m["digest"] for m in select_untagged(manifests)] == ["sha256:orphan"]
