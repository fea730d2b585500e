"""`acr` (the console script) and `python -m services.cli`: run the command tree, turn every failure into one
line on stderr and an exit code scripts can rely on (services/cli/errors.py)."""

from __future__ import annotations

import os
import sys
import traceback

from services.cli.app import app
from services.cli.errors import CliError, ExitCode


def main(argv: list[str] | None = None) -> int:
    try:
        # Standalone mode: click prints usage errors and exits 2 itself (SystemExit, below).
        app(args=argv, prog_name="acr", standalone_mode=True)
    except CliError as error:
        print(error.line(), file=sys.stderr)
        return int(error.exit_code)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else int(ExitCode.BAD_INPUT))
    except Exception as error:
        if os.environ.get("ACR_DEBUG"):
            traceback.print_exc()
        print(f"ERROR: acr failed unexpectedly: {type(error).__name__}: {error} (ACR_DEBUG=1 shows where)",
              file=sys.stderr)  # fmt: skip
        return int(ExitCode.INTERNAL)
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
