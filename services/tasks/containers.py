"""How a `cmd` step's image runs: a container of its own, with podman and the runc OCI runtime, created from
the run's containers/storage (the same `--root`/`--storage-driver vfs` buildah builds into, so an image a
`build` step made is there without a push or a pull) and removed when the step ends, whatever way it ends.

    podman create --name run-<run>-<step> --volume <context>:/workspace --workdir ... --env ... [--user]
                  [--entrypoint] --network <the run's build network> <image> [arguments]
    podman start --attach <name>           # its output, line by line, to the run's log; its exit code
    podman rm --force --time 0 <name>      # always: after success, failure, the step's timeout or a cancel

Each run has its own podman configuration (`CONTAINERS_CONF`, written into the run's directory): file locks
and podman's own state under the run's directory (nothing shared with other runs or the host's podman), no
event log, runc as the runtime, and resource limits no higher than the runner's own hard limits. That last
point is what lets runc work here: podman's default asks for `nofile=1048576`, which runc's setrlimit cannot
grant without CAP_SYS_RESOURCE ("error setting rlimit type 7: operation not permitted"); limits at or under
the current hard limit need no capability.

The container gets the step's environment and nothing of the runner's (podman runs with the run's minimal
environment, services/tasks/execution.py RegistryAccess.env; every `env` entry is NAME=value, so podman never
copies a variable from its own environment). The run's auth file is not in the container.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import tempfile
from pathlib import Path

# podman's own defaults, lowered to the runner's hard limits (raising a hard limit needs CAP_SYS_RESOURCE)
_NOFILE = 1048576
_NPROC = 32768
_NAME_CHARACTERS = re.compile(r"[^a-zA-Z0-9_.-]")
# podman refuses a run root longer than 50 characters (its sockets live there), and a run's directory under
# TASKS_WORK_DIR can be any length: the run root and podman's state live in a short directory of their own,
# linked from the run's directory and removed with it (remove_run_directory).
_SHORT_BASE = Path("/tmp")
_STATE_LINK = "state"


def run_storage(workdir: Path) -> list[str]:
    """The containers/storage arguments of every buildah and podman command of the run: the run's own image
    store (`--root` in the run's directory, `vfs`), and a run root in the run's short state directory."""
    return ["--root", str(workdir / "storage"), "--runroot", str(_state(workdir) / "run"), "--storage-driver", "vfs"]


def _state(workdir: Path) -> Path:
    link = workdir / _STATE_LINK
    if not link.is_symlink():
        link.symlink_to(tempfile.mkdtemp(prefix="acr-", dir=_SHORT_BASE))
    return Path(os.readlink(link))


def remove_run_directory(workdir: Path) -> None:
    """The run's directory and its short state directory (blocking: call it in a thread)."""
    link = workdir / _STATE_LINK
    if link.is_symlink():
        shutil.rmtree(os.readlink(link), ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)


def _limit(kind: int, ceiling: int) -> int:
    _soft, hard = resource.getrlimit(kind)
    return ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)


def containers_conf(workdir: Path) -> Path:
    """The run's podman configuration (see the module's docstring), written once per run directory."""
    path = workdir / "containers.conf"
    if path.exists():
        return path
    nofile, nproc = _limit(resource.RLIMIT_NOFILE, _NOFILE), _limit(resource.RLIMIT_NPROC, _NPROC)
    state = _state(workdir) / "libpod"
    lines = [
        "[containers]",
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]',
        "",
        "[engine]",
        'runtime = "runc"',
        'lock_type = "file"',
        'events_logger = "none"',
        'cgroup_manager = "cgroupfs"',
        f'tmp_dir = "{state}"',
        "",
    ]
    partial = path.with_suffix(".partial")
    partial.write_text("\n".join(lines))
    partial.replace(path)
    return path


def container_name(run_directory: Path, step_id: str) -> str:
    """A podman name for the step's container: unique per run directory and step."""
    return _NAME_CHARACTERS.sub("_", f"{run_directory.name}-{step_id}")[:120]
