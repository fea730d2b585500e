"""Git contexts fetched the way the runner fetches them (services/tasks/gitsource.py), from a real `git
http-backend` on this machine: exactly the commit asked for, a directory of it, the branch head; and what is
refused: a private address unless allowed, a redirect (never followed, even to the same server), a repository
over the size limit, a symbolic link out of the tree, a commit that is not there, and URLs a task may not name.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.tasks.context import ContextLimits
from services.tasks.gitsource import (
    FetchLimits,
    GitFetchFailed,
    GitSourceInvalid,
    fetch_source,
    git_env,
    parse_git_url,
)
from tests.e2e.gitserver import GitServer, git, git_server

pytestmark = pytest.mark.integration

ALLOWED = FetchLimits(60, 5 * 1024 * 1024, ContextLimits(max_bytes=5 * 1024 * 1024), allow_private=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    with git_server(tmp_path_factory.mktemp("git")) as served:
        yield served


def _fetch(url: str, commit: str | None, tmp: Path, limits: FetchLimits = ALLOWED) -> tuple[str, Path, list[str]]:
    work = tmp / os.urandom(4).hex()
    (work / "context").mkdir(parents=True)
    lines: list[str] = []
    sha = asyncio.run(fetch_source(parse_git_url(url), commit, work, work / "context", limits, lines.append))
    return sha, work / "context", lines


def test_the_commit_asked_for_is_fetched_not_the_branch_head(server: GitServer, tmp_path: Path) -> None:
    work, url = server.create("exact")
    first = server.commit(work, {"Dockerfile": "FROM scratch\n", "app/version.txt": "one\n"}, "one")
    second = server.commit(work, {"app/version.txt": "two\n"}, "two")
    sha, context, _ = _fetch(url, first, tmp_path)
    assert sha == first and (context / "app/version.txt").read_text() == "one\n"
    assert not (context / ".git").exists()  # the tree alone, not the repository
    head, context, _ = _fetch(url + "#main:app", None, tmp_path)  # the branch's head, one directory of it
    assert head == second and sorted(p.name for p in context.iterdir()) == ["version.txt"]
    assert (context / "version.txt").read_text() == "two\n"


def test_what_a_fetch_refuses(server: GitServer, tmp_path: Path) -> None:
    work, url = server.create("refusals")
    server.commit(work, {"Dockerfile": "FROM scratch\n"}, "one")
    with pytest.raises(GitFetchFailed, match="private or local address"):  # the policy of webhook targets
        _fetch(url, None, tmp_path, FetchLimits(60, 10**6, ContextLimits(), allow_private=False))
    with pytest.raises(GitFetchFailed, match="could not fetch"):  # a commit the repository does not have
        _fetch(url, "0123456789" * 4, tmp_path)
    with pytest.raises(GitFetchFailed, match="could not fetch"):
        _fetch(url + "#no-such-branch", None, tmp_path)
    big = os.urandom(3 * 1024 * 1024).hex()  # 6 MB of text that does not compress away
    server.commit(work, {"big.txt": big}, "big")
    with pytest.raises(GitFetchFailed, match="larger than"):
        _fetch(url, None, tmp_path, FetchLimits(60, 1024 * 1024, ContextLimits(), allow_private=True))


def test_a_symbolic_link_out_of_the_tree_is_refused(server: GitServer, tmp_path: Path) -> None:
    work, url = server.create("links")
    (work / "escape").symlink_to("../../../../etc/passwd")
    sha = server.commit(work, {"Dockerfile": "FROM scratch\n"}, "link")
    with pytest.raises(GitFetchFailed, match="symbolic link out of the context"):
        _fetch(url, sha, tmp_path)


def test_redirects_are_never_followed(server: GitServer, tmp_path: Path) -> None:
    work, _ = server.create("moved")
    sha = server.commit(work, {"Dockerfile": "FROM scratch\n"}, "one")
    with (
        git_server(tmp_path / "redirector", redirect_to=server.url) as redirector,
        pytest.raises(GitFetchFailed, match="could not fetch"),
    ):
        _fetch(f"{redirector.url}/moved.git", sha, tmp_path)
    assert _fetch(f"{server.url}/moved.git", sha, tmp_path)[0] == sha  # the same fetch, not redirected, works


def test_git_runs_with_nothing_of_the_runners_environment(tmp_path: Path) -> None:
    source = parse_git_url("https://git.example.com/org/repo.git#main")
    env = git_env(tmp_path, source, "203.0.113.7", token="tok")
    assert set(env) - {k for k in env if k.startswith("GIT_CONFIG_")} == {
        "PATH", "HOME", "GIT_TERMINAL_PROMPT", "GIT_ALLOW_PROTOCOL", "GIT_PROTOCOL_FROM_USER",
    }  # fmt: skip
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    config = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    assert config["http.followRedirects"] == "false" and config["credential.helper"] == ""
    assert config["http.curloptResolve"] == "git.example.com:443:203.0.113.7"  # pinned to the checked address
    assert env["GIT_ALLOW_PROTOCOL"] == "https" and env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    # the token travels as a header in git's own environment, never in the URL or argv
    assert config["http.extraHeader"].startswith("Authorization: Basic ")
    assert git(tmp_path, "--version").startswith("git version")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://user:pw@git.example.com/r.git", "credentials"),
        ("ftp://git.example.com/r.git", "http(s) URL"),
        ("https://git.example.com/r.git?x=1", "query"),
        ("https://git.example.com/../r.git", "path"),
        ("https://git.example.com/r.git#-upload-pack=x", "branch"),
        ("https://git.example.com/r.git#main:../../etc", "directory"),
        ("https://git.example.com/r.git#a..b", "branch"),
        ("https://" + "a" * 1100 + ".com/r.git", "at most 1024"),
    ],
)
def test_git_urls_a_task_may_not_name(url: str, reason: str) -> None:
    with pytest.raises(GitSourceInvalid, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_git_url(url)
