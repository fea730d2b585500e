"""What a cold start costs: importing the function table, and process start to the first `200` on `/v2/`.

    .venv/bin/python -m bench.cold_start [--rounds 5]

A Functions cold start pays for every module imported at load. Measured here, each `--rounds` times (the
median is printed, with min and max):
- `import function_app` in a fresh interpreter: wall time and peak RSS (`/usr/bin/time`-like, from
  `resource.getrusage` of the child);
- `python -m services.devhost serve` (one worker) against a running emulator stack: from the process start
  to the first `200` on `GET /v2/` (an `authDisabled` default registry). This includes what only the devhost
  does at start (making sure the default registry exists), so it is an upper bound of the host's figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from services.devhost.stack import LocalStack, free_port

ROOT = Path(__file__).resolve().parents[1]


def _import_once() -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import function_app"], cwd=ROOT, check=True)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak_kib, before) / 1024


def _first_200(env: dict[str, str]) -> float:
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.devhost", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env | {"API_PORT": str(port), "FUNCTIONS_WORKER_PROCESS_COUNT": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the devhost exited with {process.returncode}")
            time.sleep(0.01)
    finally:
        process.terminate()
        process.wait(30)


def _summary(values: list[float], unit: str) -> str:
    return f"median {statistics.median(values):.2f} {unit} (min {min(values):.2f}, max {max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_start")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    imports = [_import_once() for _ in range(args.rounds)]
    print(f"import function_app: {_summary([s for s, _ in imports], 's')}; peak RSS of the first import "
          f"{imports[0][1]:.0f} MiB")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, LocalStack.on_free_ports(Path(tmp) / "stack") as stack:
        env = dict(os.environ) | stack.env() | {"DEFAULT_REGISTRY_AUTH_DISABLED": "true", "LOG_LEVEL": "warning"}
        _first_200(env)  # the first start makes the default registry; the ones measured find it
        starts = [_first_200(env) for _ in range(args.rounds)]
    print(f"devhost serve, process start to first 200 on /v2/: {_summary(starts, 's')}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
