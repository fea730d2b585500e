"""The function table of function_app.py, indexed once per test process (`app.get_functions()` may be called
only once per app: a second call raises a duplicate-name error)."""

from __future__ import annotations

from typing import Any

import function_app

_CACHE: list[Any] = []


def function_table() -> dict[str, Any]:
    if not _CACHE:
        _CACHE.extend(function_app.app.get_functions())
    return {f.get_function_name(): f for f in _CACHE}
