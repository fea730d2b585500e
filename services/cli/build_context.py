"""The build context `acr build` uploads: the directory as a `.tar.gz`, without what `.dockerignore` names.

`.dockerignore` as Docker reads it: one pattern a line, `#` comments, `!` re-includes, the last matching
pattern decides, `**` matches any number of directories, a pattern that matches a directory excludes what is
under it. The Dockerfile and `.dockerignore` are always sent (the build needs the one; Docker sends both).
Symbolic links are sent as links, never followed (the service refuses one that leaves the context).
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True, slots=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    include: bool


def _translate(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + "(?:/.*)?")


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    rules: list[IgnoreRule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        body = line[1:].strip() if include else line
        body = os.path.normpath(body.lstrip("/")).replace(os.sep, "/")
        if body in ("", "."):
            continue
        rules.append(IgnoreRule(_translate(body), include))
    return rules


def ignored(path: str, rules: list[IgnoreRule]) -> bool:
    """Whether `path` (relative, with `/`) is left out: the last rule that matches decides."""
    verdict = False
    for rule in rules:
        if rule.pattern.fullmatch(path):
            verdict = not rule.include
    return verdict


def context_files(root: Path, dockerfile: str) -> Iterator[str]:
    """The relative paths to send, sorted (directories before what they hold)."""
    ignore_file = root / ".dockerignore"
    rules = parse_dockerignore(ignore_file.read_text(errors="replace")) if ignore_file.is_file() else []
    always = {os.path.normpath(dockerfile).replace(os.sep, "/"), ".dockerignore"}
    for directory, names, files in os.walk(root):
        names.sort()
        relative_dir = os.path.relpath(directory, root).replace(os.sep, "/")
        prefix = "" if relative_dir == "." else relative_dir + "/"
        for name in sorted(files) + [n for n in names if (Path(directory) / n).is_symlink()]:
            path = prefix + name
            if path in always or not ignored(path, rules):
                yield path
        # keep directories with re-included content: only drop one that no `!` rule could bring back
        names[:] = [
            n
            for n in names
            if not (Path(directory) / n).is_symlink()
            and (not ignored(prefix + n, rules) or any(r.include for r in rules))
        ]


def write_context(root: Path, dockerfile: str, out: IO[bytes]) -> int:
    """Write the context's `.tar.gz` to `out`; returns how many files it holds."""
    count = 0
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path in context_files(root, dockerfile):
            tar.add(root / path, arcname=path, recursive=False)
            count += 1
    return count
