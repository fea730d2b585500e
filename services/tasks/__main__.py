"""`python -m services.tasks runner`: take runs off the `task-runs` queue and execute them until stopped
(SIGTERM or Ctrl-C). Settings as the app's (services/platform/settings.py), from the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.tasks")
    parser.add_argument("command", choices=["runner"])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    from services.platform.settings import get_settings
    from services.tasks.runner import run_forever

    asyncio.run(run_forever(get_settings()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
