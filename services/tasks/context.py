"""Build contexts and Dockerfiles, as the runner reads them (pure: no I/O beyond the archive given).

A context is a `.tar.gz` a client uploaded. It is code someone else wrote, so it is checked member by
member before anything is written: no absolute paths or `..` (path traversal), no symbolic or hard links that
leave the context, no devices or FIFOs, at most `max_members` members and `max_bytes` unpacked. A refused
context fails its run with the reason; nothing of it is extracted.

`base_images` reads a Dockerfile's `FROM` lines (multi-stage included, `ARG`s before the first `FROM`
substituted) and answers the images a build pulls, without the stages it names itself and `scratch`.
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO


class ContextInvalid(ValueError):
    """The context is refused; the message says why (shown in the run's log and error)."""


@dataclass(frozen=True, slots=True)
class ContextLimits:
    max_bytes: int = 512 * 1024 * 1024
    max_members: int = 100_000


def _inside(name: str) -> str | None:
    """The member path normalised inside the context, or None when it would leave it."""
    if name.startswith("/") or "\\" in name:
        return None
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../"):
        return None
    return normal


def check_members(members: list[tarfile.TarInfo], limits: ContextLimits) -> None:
    """Raise ContextInvalid unless every member stays inside the context and the whole fits the limits."""
    if len(members) > limits.max_members:
        raise ContextInvalid(f"the context has more than {limits.max_members} entries")
    total = 0
    for member in members:
        name = member.name
        path = _inside(name)
        if path is None or ".." in name.split("/"):
            raise ContextInvalid(f"path traversal in the context: {name[:200]!r}")
        if member.issym():
            target = member.linkname
            if target.startswith("/") or _inside(posixpath.join(posixpath.dirname(path), target)) is None:
                raise ContextInvalid(f"symbolic link out of the context: {name[:200]!r} -> {target[:200]!r}")
        elif member.islnk():
            if _inside(member.linkname) is None:
                raise ContextInvalid(f"hard link out of the context: {name[:200]!r} -> {member.linkname[:200]!r}")
        elif not (member.isfile() or member.isdir()):
            raise ContextInvalid(f"the context may hold files, directories and links only: {name[:200]!r}")
        total += max(0, member.size)
        if total > limits.max_bytes:
            raise ContextInvalid(f"the context is larger than {limits.max_bytes} bytes unpacked")


def extract_context(archive: IO[bytes], destination: Path, limits: ContextLimits) -> None:
    """Check the `.tar.gz` (or plain tar) whole, then extract it into `destination` (an empty directory)."""
    try:
        with tarfile.open(fileobj=archive, mode="r:*") as tar:
            members = tar.getmembers()
            check_members(members, limits)
            # The data filter refuses the same things again (defence in depth) and drops owners and modes
            # that a context has no business setting (setuid bits).
            tar.extractall(destination, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, tarfile.FilterError):
            raise ContextInvalid(f"the context is refused: {error}") from error
        raise ContextInvalid(f"the context is not a readable tar.gz archive: {error}") from error


# --- Dockerfiles ------------------------------------------------------------------------------------------
_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", re.IGNORECASE)
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def logical_lines(text: str) -> list[str]:
    """The Dockerfile's instructions: continuation lines joined, comments and blank lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current)
        current = ""
    if current.strip():
        lines.append(current)
    return lines


_COPY_FROM = re.compile(r"^\s*(?:COPY|ADD)\s.*?--from=(\S+)", re.IGNORECASE)


def pulled_images(dockerfile: str, build_args: dict[str, str] | None = None) -> list[str]:
    """Every image a build of the Dockerfile reads: its `FROM` images and the images `COPY --from=` names
    (a reference with a registry, tag or digest, not a stage), so the runner can pull them before a build
    that may not pull (services/tasks/network.py)."""
    found = base_images(dockerfile, build_args)
    for line in logical_lines(dockerfile):
        match = _COPY_FROM.match(line)
        if match is not None and any(c in match.group(1) for c in "/:@") and match.group(1) not in found:
            found.append(match.group(1))
    return found


def _substitute(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        default = match.group(2) or ""
        return values.get(name, default) or default

    return _VARIABLE.sub(value, text)


def base_images(dockerfile: str, build_args: dict[str, str] | None = None) -> list[str]:
    """The images the Dockerfile's `FROM` lines pull, in order, each once."""
    args = dict(build_args or {})
    values: dict[str, str] = {}
    stages: set[str] = set()
    found: list[str] = []
    seen_from = False
    for line in logical_lines(dockerfile):
        arg = _ARG.match(line)
        if arg is not None and not seen_from:
            name, default = arg.group(1), arg.group(2) or ""
            values[name] = args.get(name, _substitute(default, values))
            continue
        match = _FROM.match(line)
        if match is None:
            continue
        seen_from = True
        image = _substitute(match.group(1), values)
        if image.lower() != "scratch" and image.lower() not in stages and image not in found:
            found.append(image)
        if match.group(2):
            stages.add(match.group(2).lower())
    return found
