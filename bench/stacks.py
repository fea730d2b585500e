"""Summarise py-spy collapsed stacks (`py-spy record --format raw`, what `--profile` writes).

    python -m bench.stacks bench/results/<stamp>-profile-manifest_head_tag-c16.txt [--top 25]

Prints where the samples are: by component (the library of the innermost frame: our code, azure-cosmos,
azure-core, aiohttp, uvicorn, starlette, pydantic, asyncio, ...), and the functions with the most samples
inclusive (on the stack) and self (innermost).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")

# First match wins; matched against the frame's file as py-spy prints it (relative to site-packages).
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("services/", "ours (services/)"),
    ("function_app.py", "ours (services/)"),
    ("cosmos/", "azure-cosmos"),
    ("storage/blob/", "azure-storage-blob"),
    ("core/", "azure-core"),
    ("aiohttp/", "aiohttp"),
    ("yarl/", "aiohttp"),
    ("multidict/", "aiohttp"),
    ("uvicorn/", "uvicorn"),
    ("starlette/", "starlette"),
    ("fastapi/", "starlette"),
    ("pydantic", "pydantic"),
    ("azure/functions/", "azure-functions"),
    ("azurefunctions/", "azure-functions"),
    ("asyncio/", "asyncio"),
    ("ssl.py", "ssl"),
    ("json/", "json"),
    ("hashlib", "hashing"),
    ("hashing.py", "hashing"),
    ("uuid.py", "uuid"),
    ("logging/", "logging"),
    ("email/", "stdlib other"),
    ("urllib/", "stdlib other"),
    ("<frozen", "stdlib other"),
)


LIBRARIES = frozenset(
    {
        "ours (services/)",
        "azure-cosmos",
        "azure-storage-blob",
        "azure-core",
        "aiohttp",
        "uvicorn",
        "starlette",
        "pydantic",
        "azure-functions",
        "hashing",
    }
)
# aiohttp with trust_env=True (azure-core's default) looks up ~/.netrc and the proxy variables in a
# worker thread on every request.
_TRUST_ENV = re.compile(r"netrc|get_env_proxy_for_url|proxies_from_env|_get_netrc_auth")


def attribute(frames: Sequence[str]) -> str:
    """Who a sample is for: the nearest library frame from the leaf (a stdlib leaf such as json, ssl or
    uuid counts for the library that called it), with idle waits and aiohttp's trust_env work apart."""
    function, file = parse_frame(frames[-1])
    if function == "_worker" and "concurrent/futures/thread.py" in file:
        return "idle: thread-pool workers waiting"
    if function == "Runner.run":
        return "event loop in C (uvloop I/O, httptools) or idle"
    if any(_TRUST_ENV.search(frame) for frame in frames):
        return "aiohttp trust_env lookups in threads (netrc, proxy variables)"
    if function in ("ThreadPoolExecutor.submit", "BaseEventLoop.run_in_executor") or ("to_thread" in function):
        return "thread hand-off (run_in_executor/to_thread)"
    for frame in reversed(frames):
        name = component(parse_frame(frame)[1])
        if name in LIBRARIES:
            return name
    return "other (stdlib)"


def parse_frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["function"], match["file"]


def component(file: str) -> str:
    for needle, name in COMPONENTS:
        if needle in file:
            return name
    return file.split("/")[0] if file else "?"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def summary(stacks: Sequence[tuple[list[str], int]], top: int = 20) -> str:
    total = sum(count for _, count in stacks)
    if not total:
        return "no samples"
    by_component: Counter[str] = Counter()
    by_owner: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        function, file = parse_frame(frames[-1])
        by_component[component(file)] += count
        by_owner[attribute(frames)] += count
        self_time[f"{function} ({file})"] += count
        seen: set[str] = set()
        for frame in frames:
            function, file = parse_frame(frame)
            key = f"{function} ({file})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
    lines = [f"{total} samples", "", "samples by owner (nearest library frame from the leaf):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_owner.most_common()]
    lines += ["", "self time by component (of the leaf frame):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_component.most_common()]
    lines += ["", f"top {top} inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", f"top {top} self:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in self_time.most_common(top)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stacks", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    for path in args.files:
        print(f"== {path}")
        print(summary(load(path), args.top))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
