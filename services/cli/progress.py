"""Progress on long operations: a rich spinner on stderr, only when stderr is a terminal.

stdout carries results (JSON for scripts), so progress never goes there; and when stderr is a file or a pipe
(CI logs, `2>err`), a spinner would only fill it with control sequences, so nothing is shown then.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

Report = Callable[[str], None]


def _console() -> Console | None:
    return Console(stderr=True) if sys.stderr.isatty() else None


@contextmanager
def progress(label: str) -> Iterator[Report]:
    """A spinner showing `label`; the yielded function sets the detail shown after it."""
    console = _console()
    if console is None:
        yield lambda _detail: None
        return
    with console.status(label) as status:
        yield lambda detail: status.update(f"{label} {detail}".rstrip())


def done(message: str) -> None:
    """A closing line after a long operation (terminal only, as the spinner)."""
    console = _console()
    if console is not None:
        console.print(f"[green]✓[/green] {message}", highlight=False)
