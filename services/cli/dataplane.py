"""A registry's data plane as `acr` calls it: ACR's token flow, then `/acr/v1/` and `/v2/` with access tokens.

Signing in is ACR's: an Entra token (the profile's management token) is exchanged at `/oauth2/exchange` for
a refresh token of this registry, or a username and password (admin user, repository-scoped token) are
traded at `/oauth2/token` (`grant_type=password`, `access_type=offline`) for one; the refresh token then
buys an access token per scope (`repository:<name>:metadata_read`, `registry:catalog:*`...).

Where the data plane is. In Azure it is `https://<login server>`. Locally the devhost serves every registry
on one address and picks the registry by `Host`, and `<name>.azurecr.localhost` does not resolve
everywhere, so `data-endpoint` (default: the management endpoint when that is a loopback address, which is
the devhost) names the address to connect to, and requests carry `Host: <login server>[:port]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.cli.config import TokenSource
from services.cli.errors import CliError, ExitCode
from services.cli.transport import api_error, json_of, send

REFRESH_TOKEN_USER = "00000000-0000-0000-0000-000000000000"  # ACR's username for a refresh-token password
CATALOG_SCOPE = "registry:catalog:*"
MAX_PAGES = 10_000


@dataclass(frozen=True)
class RegistryAddress:
    login_server: str  # the registry's name for itself (the token service, the audience of its tokens)
    base_url: str  # where requests go
    host: str | None  # the Host header to send, when the URL's host is not the login server
    server: str  # what clients push to, `<login server>[:port]`: the key of the auth file entry

    def url(self, path: str) -> str:
        return self.base_url + path


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def address_of(login_server: str, data_endpoint: str | None) -> RegistryAddress:
    if not data_endpoint:
        return RegistryAddress(login_server, f"https://{login_server}", None, login_server)
    port = urlsplit(data_endpoint).port
    server = f"{login_server}:{port}" if port else login_server
    return RegistryAddress(login_server, data_endpoint.rstrip("/"), server, server)


@dataclass(frozen=True)
class PasswordCredentials:
    username: str
    password: str


@dataclass
class RegistryClient:
    """One registry's data plane, signed in as the Entra principal of the profile or with a password."""

    http: httpx.Client
    address: RegistryAddress
    entra: TokenSource
    password: PasswordCredentials | None = None
    _refresh: str | None = field(default=None, repr=False)
    _access: dict[str, str] = field(default_factory=dict, repr=False)

    def _headers(self, token: str | None = None) -> dict[str, str]:
        headers = {"Host": self.address.host} if self.address.host else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _form(self, path: str, form: dict[str, str | list[str]], what: str) -> dict[str, Any]:
        response = send(self.http, "POST", self.address.url(path), data=form, headers=self._headers())
        if response.status_code >= 400:
            raise api_error(response, what)
        body = json_of(response)
        if not isinstance(body, dict):
            raise CliError(ExitCode.UNAVAILABLE, f"{what}: the answer is not a JSON object")
        return body

    def refresh_token(self) -> str:
        """A refresh token of this registry for the signed-in identity (made once per run)."""
        if self._refresh is None:
            service = self.address.login_server
            if self.password is None:
                body = self._form(
                    "/oauth2/exchange",
                    {"grant_type": "access_token", "service": service, "access_token": self.entra.get()},
                    "the registry did not accept the Entra token",
                )
            else:
                body = self._form(
                    "/oauth2/token",
                    {
                        "grant_type": "password",
                        "service": service,
                        "username": self.password.username,
                        "password": self.password.password,
                        "access_type": "offline",
                    },
                    "the registry did not accept the username and password",
                )
            token = body.get("refresh_token")
            if not isinstance(token, str) or not token:
                raise CliError(ExitCode.AUTH, "the registry gave no refresh token for these credentials")
            self._refresh = token
        return self._refresh

    def access_token(self, scope: str | None) -> str:
        key = scope or ""
        if key not in self._access:
            form: dict[str, str | list[str]] = {
                "grant_type": "refresh_token",
                "service": self.address.login_server,
                "refresh_token": self.refresh_token(),
            }
            if scope:
                form["scope"] = scope
            body = self._form("/oauth2/token", form, "the registry did not give an access token")
            token = body.get("access_token") or body.get("token")
            if not isinstance(token, str) or not token:
                raise CliError(ExitCode.AUTH, "the registry gave no access token")
            self._access[key] = token
        return self._access[key]

    def call(
        self, method: str, path: str, scope: str | None, *, body: Any = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        """One request with an access token for `scope`; an error answer raises (OCI code and message).

        A scope the identity lacks is left out of the token (ACR's rule), so the request then gets 401
        `insufficient_scope`: exit 3, as any refusal."""
        headers = self._headers(self.access_token(scope))
        response = send(self.http, method, self.address.url(path), headers=headers, json=body, params=params)
        if response.status_code >= 400:
            raise api_error(response)
        return response

    def pages(self, path: str, scope: str, key: str, params: dict[str, Any], top: int | None) -> list[Any]:
        """The items under `key` of a list, following the `Link: <...>; rel="next"` header, at most `top`."""
        items: list[Any] = []
        url: str | None = path
        query: dict[str, Any] | None = params
        for _ in range(MAX_PAGES):
            if url is None or (top is not None and len(items) >= top):
                break
            response = self.call("GET", url, scope, params=query)
            page = json_of(response) or {}
            items.extend(page.get(key) or [])
            following = response.links.get("next", {}).get("url")
            url, query = (following, None) if following else (None, None)  # the link carries the query
        return items[:top] if top is not None else items

    def check_sign_in(self) -> None:
        """`GET /v2/` with an access token: the registry accepts the identity (what `docker login` checks)."""
        self.call("GET", "/v2/", None)
