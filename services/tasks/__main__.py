"""`python -m services.tasks runner [--once]`: take runs off the `task-runs` queue and execute them until
stopped (SIGTERM or Ctrl-C); with `--once`, take one run (if the queue has one), execute it and exit: one
execution of the Container Apps job in Azure, started per queued message, so each run has its own container.
Settings as the app's (services/platform/settings.py), from the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.tasks")
    parser.add_argument("command", choices=["runner"])
    parser.add_argument("--once", action="store_true", help="execute one queued run (if any), then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    from services.platform.settings import get_settings
    from services.platform.telemetry import configure_telemetry
    from services.tasks.runner import run_forever, serve_one

    configure_telemetry(get_settings())  # RunDuration (ACR's metric of task runs), where telemetry is on
    if args.once:
        asyncio.run(serve_one(get_settings()))
    else:
        asyncio.run(run_forever(get_settings()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
