"""A local git server for the source-trigger tests: bare repositories served over smart HTTP by the real
`git http-backend` (CGI) behind a small threaded Python HTTP server, and a way to commit and push to them.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
GIT_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV | {"HOME": str(cwd)}, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class _Backend(BaseHTTPRequestHandler):
    root: Path
    redirect_to: str | None = None

    def log_message(self, format: str, *args: object) -> None:
        return

    def _cgi(self) -> None:
        if self.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", self.redirect_to + self.path)
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = GIT_ENV | {
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "REMOTE_ADDR": self.client_address[0],
        }
        done = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True, check=False)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode(errors="replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _cgi
    do_POST = _cgi


@dataclass
class GitServer:
    root: Path
    url: str  # http://127.0.0.1:<port>

    def create(self, name: str) -> tuple[Path, str]:
        """A bare repository `<name>.git` served here, and a working clone of it; (clone, repository URL)."""
        bare = self.root / f"{name}.git"
        git(self.root, "init", "-q", "--bare", "-b", "main", str(bare))
        git(bare, "config", "http.receivepack", "true")
        work = self.root / f"{name}-work"
        git(self.root, "init", "-q", "-b", "main", str(work))
        git(work, "remote", "add", "origin", str(bare))
        return work, f"{self.url}/{name}.git"

    @staticmethod
    def commit(work: Path, files: dict[str, str], message: str, branch: str = "main") -> str:
        """Write `files`, commit them on `branch` and push it; the commit's sha."""
        if git(work, "branch", "--show-current") != branch:
            git(work, "checkout", "-q", "-B", branch)
        for name, text in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", message)
        git(work, "push", "-q", "origin", branch)
        return git(work, "rev-parse", "HEAD")


@contextmanager
def git_server(root: Path, redirect_to: str | None = None) -> Iterator[GitServer]:
    root.mkdir(parents=True, exist_ok=True)
    handler = type("Backend", (_Backend,), {"root": root, "redirect_to": redirect_to})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield GitServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


# --- what a git host sends with an event: the signed headers of GitHub and of Gitea ----------------------------
def github_headers(body: bytes, secret: str, event: str) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={signature}",
        "Content-Type": "application/json",
    }


def gitea_headers(body: bytes, secret: str, event: str) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Gitea-Event": event, "X-Gitea-Signature": signature, "Content-Type": "application/json"}
