"""What `acr` exits with, and the one error type its commands raise.

Scripts branch on the exit code, so each code names a kind of outcome, not a particular command:

    0  done
    1  not found (the registry, repository, tag, webhook, token... does not exist)
    2  bad input: a usage error, or a request the service refused as invalid, conflicting or not allowed by
       the resource itself (a name taken, an unknown SKU, a write-locked tag)
    3  authentication or authorization refused (no token configured, token expired, no role for it)
    4  the service is unavailable or failed (cannot connect, timeout, 429, 5xx, a long-running operation
       that ended Failed)
    5  acr itself failed unexpectedly (a bug: ACR_DEBUG=1 shows the traceback)
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1
    BAD_INPUT = 2
    AUTH = 3
    UNAVAILABLE = 4
    INTERNAL = 5


class CliError(Exception):
    """A failure to report as one line on stderr, ending the command with `exit_code`."""

    def __init__(self, exit_code: ExitCode, message: str, code: str = "") -> None:
        super().__init__(message)
        self.exit_code, self.message, self.code = exit_code, message, code

    def line(self) -> str:
        # az's shape, "ERROR: (Code) message", on one line whatever the service sent.
        text = " ".join(self.message.split())
        return f"ERROR: ({self.code}) {text}" if self.code else f"ERROR: {text}"


def exit_code_for_status(status: int) -> ExitCode:
    """The exit code of an HTTP error status (ARM's or the registry's)."""
    if status == 404:
        return ExitCode.NOT_FOUND
    if status in (401, 403):
        return ExitCode.AUTH
    if status == 429 or status >= 500:
        return ExitCode.UNAVAILABLE
    return ExitCode.BAD_INPUT  # 400, 405 (a lock), 409 (taken, changed meanwhile), 412, 413, 415, 416, 422
