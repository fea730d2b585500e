"""Attack measurements: what a hostile client costs the devhost (issue 8, items 3 and 9).

Each script starts its own emulator stack (`services.devhost.stack.LocalStack`) and devhost
(`python -m services.devhost serve`, through `bench.processes.ours`) on free loopback ports, in a temporary
folder that is removed afterwards; every process it started is stopped on the way out, also on Ctrl-C or
SIGTERM. They are not tests (pytest does not collect them) and not part of `make test` or `python -m bench`:

    .venv/bin/python -m bench.attacks.password_flood [--limits on|off] [--seconds 10] [--clients 32]
        item 3: CLIENTS attackers, each from its own X-Forwarded-For address, send wrong admin passwords to
        GET /v2/ of a Premium registry for SECONDS while a prober times the credential-less 401 every 50 ms;
        prints the statuses the attackers got, attempts/s and the prober's p50/p95/max. `--limits off`
        sets both AUTH_FAILURES_PER_*_PER_MINUTE to 0 (no lockout), for the comparison.
    .venv/bin/python -m bench.attacks.upload_rss N ROUNDS
        item 9: devhost RSS before, during (peak) and after ROUNDS rounds of N concurrent 64 MiB monolithic
        uploads.
    .venv/bin/python -m bench.attacks.header_rss [--connections 20] [--mib 20]
        item 9: devhost RSS while CONNECTIONS connections each send a MIB MiB request header.

RSS is VmRSS of the devhost process from /proc/<pid>/status (Linux only), in MiB.
"""

from __future__ import annotations

from pathlib import Path


def rss_mib(pid: int) -> int:
    """Resident memory (VmRSS) of `pid` in MiB, -1 if it cannot be read (e.g. the process has ended)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return -1
    return -1
