"""The devhost's NCRONTAB schedules (six fields, seconds first)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.devhost.triggers import Schedule

T0 = datetime(2025, 3, 7, 10, 15, 3, 500000, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*/5 * * * * *", datetime(2025, 3, 7, 10, 15, 5, tzinfo=UTC)),
        ("* * * * * *", datetime(2025, 3, 7, 10, 15, 4, tzinfo=UTC)),
        ("0 */10 * * * *", datetime(2025, 3, 7, 10, 20, 0, tzinfo=UTC)),
        ("0 0 2 * * *", datetime(2025, 3, 8, 2, 0, 0, tzinfo=UTC)),
        ("30 0 9-17 * * 1-5", datetime(2025, 3, 7, 11, 0, 30, tzinfo=UTC)),
        ("0 0 0 * * 0", datetime(2025, 3, 9, 0, 0, 0, tzinfo=UTC)),  # Sunday is 0
        ("0 0 0 1 1 *", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_next_fire_time(expression: str, expected: datetime) -> None:
    assert Schedule.parse(expression).next_after(T0) == expected


def test_five_field_cron_is_refused() -> None:
    with pytest.raises(ValueError):
        Schedule.parse("*/5 * * * *")
