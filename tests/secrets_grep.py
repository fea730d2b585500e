"""The secrets grep of a whole test run: every secret the tests create or receive is registered, every log
the run produces is kept, and at the end of the session the run fails if any secret (or its base64 form)
is in any of them.

Registered (`SECRETS`), by watching the tests' own HTTP traffic (httpx and requests, which the Azure SDKs
use) and a few in-process makers, so that no test has to remember it:

- request headers: the password and the whole credential of `Authorization: Basic`, a Bearer token;
- request bodies (JSON or form): `password`, `refresh_token`, `access_token`, webhook `customHeaders` values,
  the `value` of anything `isSecret`, `secret`/`primaryKey`/`secondaryKey` fields;
- response bodies (JSON): the same names, and every `passwords[].value` (admin and token passwords);
- response `Location`: the `sig` of a SAS URL;
- in-process: every password `generate_password` makes, every token a `KeyRing` signs, every Entra token
  the test issuer makes; and whatever a test passes to `register_secret`.

Values the hooks see that are shorter than `MIN_LENGTH` (12) are not registered: they are the tests' dummies
(`"x"`, `"password"`, which is also a word of the logs' messages); `register_secret` takes 6 and more. Nor
are the public emulator keys, which are secret to nobody.

Logs searched: every `*.log` file under the session's temporary folder (each devhost's stdout and stderr,
the task runner's, the emulators' logs) and every record the test process's own loggers emit (root at
INFO, kept in `<basetemp>/in-process.log`; the test clients' request lines are left out), audit records
included. The search extracts the words of each
log once (the alphabets secrets are written in) and looks each secret up in them, so its cost grows with the
size of the logs, not with their size times the number of secrets.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

MIN_LENGTH = 12  # shorter values the tests send are dummies ("password", "not-a-jwt"), and words of the logs
EXPLICIT_MIN_LENGTH = 6  # what a test registers by name is meant as a secret
# Azurite's and the Cosmos DB emulator's well-known keys: printed in their documentation, secret to nobody.
PUBLIC_KEYS = frozenset(
    {
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
    }
)
_SECRET_FIELDS = frozenset(
    {
        "password",
        "refresh_token",
        "access_token",
        "token",
        "accesstoken",
        "refreshtoken",
        "secret",
        "primarykey",
        "secondarykey",
        "client_secret",
    }
)
# The alphabets secrets are written in: a secret in a log is one of the words of one of them.
_ALPHABETS = (
    re.compile(rb"[A-Za-z0-9_-]+"),  # URL-safe base64: passwords, JWT segments
    re.compile(rb"[A-Za-z0-9_.-]+"),  # JWTs
    re.compile(rb"[A-Za-z0-9+/=_-]+"),  # base64 (keys, Basic credentials, base64 forms)
    re.compile(rb"[A-Za-z0-9%._~-]+"),  # URL-encoded (SAS signatures in a URL)
)


def forms(secret: str) -> set[str]:
    """The secret and its base64 forms (standard and URL-safe, padded and not)."""
    raw = secret.encode()
    encoded = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return {secret} | encoded | {e.rstrip("=") for e in encoded}


class SecretRegistry:
    """The session's secrets: each with where it was first seen."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}

    def register(self, value: object, origin: str = "test", min_length: int = MIN_LENGTH) -> None:
        if not isinstance(value, str) or len(value) < min_length or value in PUBLIC_KEYS:
            return
        self.secrets.setdefault(value, origin)

    def __len__(self) -> int:
        return len(self.secrets)

    # --- what the tests send and receive -------------------------------------------------------------------
    def observe_headers(self, headers: Mapping[str, str], origin: str) -> None:
        authorization = headers.get("authorization") or headers.get("Authorization") or ""
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "basic":
            self.register(credential.strip(), origin)
            try:
                _, _, password = base64.b64decode(credential.strip()).decode().partition(":")
            except ValueError:
                return
            self.register(password, origin)
        elif scheme.lower() == "bearer":
            self.register(credential.strip(), origin)
        location = headers.get("location") or headers.get("Location") or ""
        for signature in re.findall(r"[?&]sig=([^&#]+)", location):  # a SAS URL's signature, as sent and decoded
            self.register(signature, origin)
            self.register(unquote(signature), origin)

    def observe_body(self, body: bytes | str | None, content_type: str, origin: str) -> None:
        if not body or len(body) > 1_000_000:
            return
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        if "json" in content_type or text[:1] in ("{", "["):
            try:
                self.observe_json(json.loads(text), origin)
            except ValueError:
                return
        elif "x-www-form-urlencoded" in content_type:
            for key, values in parse_qs(text).items():
                if key.lower() in _SECRET_FIELDS:
                    for value in values:
                        self.register(value, origin)

    def observe_json(self, value: Any, origin: str) -> None:
        if isinstance(value, list):
            for item in value:
                self.observe_json(item, origin)
        elif isinstance(value, dict):
            if value.get("isSecret") is True or value.get("is_secret") is True:
                self.register(value.get("value"), origin)
            for key, item in value.items():
                name = str(key).lower()
                if name in _SECRET_FIELDS:
                    self.register(item, origin)
                elif name == "passwords" and isinstance(item, list):
                    for password in item:
                        if isinstance(password, dict):
                            self.register(password.get("value"), origin)
                elif name in ("customheaders", "custom_headers") and isinstance(item, dict):
                    for header in item.values():
                        self.register(header, origin)
                        if isinstance(header, str) and " " in header:  # "Bearer <token>": the token alone too
                            self.register(header.split(" ", 1)[1], origin)
                self.observe_json(item, origin)


@dataclass(frozen=True)
class Finding:
    path: Path
    secret: str
    form: str  # "as is" or "base64"
    origin: str

    def __str__(self) -> str:
        shown = self.secret[:4] + "..." + f"({len(self.secret)} chars)"
        return f"{self.path}: a secret ({shown}, from {self.origin}) {self.form}"


def words(data: bytes) -> set[bytes]:
    found: set[bytes] = set()
    for alphabet in _ALPHABETS:
        found.update(alphabet.findall(data))
    return found


def scan(paths: Iterable[Path], registry: SecretRegistry) -> list[Finding]:
    """Every registered secret (or base64 form of one) found in the files."""
    wanted: dict[bytes, tuple[str, str]] = {}  # form -> (secret, "as is" | "base64")
    for secret in registry.secrets:
        for form in forms(secret):
            if len(form) >= EXPLICIT_MIN_LENGTH:
                wanted.setdefault(form.encode(), (secret, "as is" if form == secret else "in base64"))
    odd = {form: what for form, what in wanted.items() if not any(a.fullmatch(form) for a in _ALPHABETS)}
    findings: list[Finding] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        present = words(data)
        hits = [form for form in wanted if form in present] + [form for form in odd if form in data]
        seen: set[str] = set()
        for form in hits:
            secret, how = wanted[form]
            if secret not in seen:  # one finding per secret and file, whichever forms it is in
                seen.add(secret)
                findings.append(Finding(path, secret, how, registry.secrets[secret]))
    return findings


def log_files(root: Path) -> Iterator[Path]:
    return (path for path in sorted(root.rglob("*.log")) if path.is_file())


# --- the session's registry, and the hooks that fill it ----------------------------------------------------
SECRETS = SecretRegistry()


def register_secret(value: str, origin: str = "test") -> None:
    """Register a secret the hooks cannot see (one a test hands to a subprocess, say)."""
    SECRETS.register(value, origin, EXPLICIT_MIN_LENGTH)


def _wrap_httpx() -> None:
    import httpx

    def observe(request: httpx.Request, response: httpx.Response | None) -> None:
        SECRETS.observe_headers(request.headers, f"httpx {request.method} {request.url.path}")
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = b""
        SECRETS.observe_body(body, request.headers.get("content-type", ""), f"httpx {request.url.path}")
        if response is not None:
            SECRETS.observe_headers(response.headers, f"httpx response {request.url.path}")
            try:
                content = response.content
            except httpx.ResponseNotRead:
                return  # streamed: the test reads it itself
            SECRETS.observe_body(
                content, response.headers.get("content-type", ""), f"httpx response {request.url.path}"
            )

    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = sync_send(self, request, **kwargs)
        observe(request, None if kwargs.get("stream") else response)
        return response

    async def asend(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = await async_send(self, request, **kwargs)
        observe(request, None if kwargs.get("stream") else response)
        return response

    httpx.Client.send = send  # type: ignore[method-assign]
    httpx.AsyncClient.send = asend  # type: ignore[method-assign]


def _wrap_requests() -> None:
    import requests.adapters

    original = requests.adapters.HTTPAdapter.send

    def send(self: requests.adapters.HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
        response = original(self, request, *args, **kwargs)
        path = urlsplit(str(request.url)).path
        SECRETS.observe_headers(request.headers, f"requests {request.method} {path}")
        body = request.body if isinstance(request.body, bytes | str) else None
        SECRETS.observe_body(body, request.headers.get("Content-Type", ""), f"requests {path}")
        SECRETS.observe_headers(response.headers, f"requests response {path}")
        if not kwargs.get("stream"):
            SECRETS.observe_body(
                response.content, response.headers.get("Content-Type", ""), f"requests response {path}"
            )
        return response

    requests.adapters.HTTPAdapter.send = send  # type: ignore[method-assign]


def _wrap_makers() -> None:
    from services.auth import passwords, signing
    from services.management import access
    from tests import entra_issuer

    generate = passwords.generate_password

    def generate_password() -> str:
        value = generate()
        SECRETS.register(value, "generate_password")
        return value

    passwords.generate_password = generate_password
    access.generate_password = generate_password  # imported by name there

    sign = signing.KeyRing.sign

    def sign_claims(self: signing.KeyRing, claims: dict[str, Any]) -> str:
        token = sign(self, claims)
        SECRETS.register(token, "KeyRing.sign")
        return token

    signing.KeyRing.sign = sign_claims  # type: ignore[method-assign]

    issue = entra_issuer.TestIssuer.token

    def token(self: entra_issuer.TestIssuer, object_id: str, **kwargs: Any) -> str:
        value = issue(self, object_id, **kwargs)
        SECRETS.register(value, "TestIssuer.token")
        return value

    entra_issuer.TestIssuer.token = token  # type: ignore[method-assign]


# --- the plugin ----------------------------------------------------------------------------------------------
class _State:
    basetemp: Path | None = None
    handler: logging.Handler | None = None


_state = _State()


def pytest_configure(config: pytest.Config) -> None:
    _wrap_httpx()
    _wrap_requests()
    _wrap_makers()


@pytest.fixture(scope="session", autouse=True)
def _secrets_grep_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep every record of the test process's loggers in `<basetemp>/in-process.log` (root at INFO; the
    Azure SDKs' and httpx's request lines at WARNING: they are the test clients', not the service's)."""
    basetemp = tmp_path_factory.getbasetemp()
    _state.basetemp = basetemp
    handler = logging.FileHandler(basetemp / "in-process.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    for client in ("azure", "httpx", "httpcore"):  # the test clients' own request lines (their URLs are the
        logging.getLogger(client).setLevel(logging.WARNING)  # tests' choice, hostile ones included)
    _state.handler = handler
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _state.basetemp is None or session.config.getoption("collectonly", False):
        return
    findings = scan(log_files(_state.basetemp), SECRETS)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"secrets grep: {len(SECRETS)} secrets registered, "
            f"{sum(1 for _ in log_files(_state.basetemp))} log files searched, {len(findings)} found"
        )
        for finding in findings:
            reporter.write_line(f"SECRET IN A LOG: {finding}", red=True)
    if findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
