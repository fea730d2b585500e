"""Microsoft Entra ID access tokens, as `/oauth2/exchange` receives them: verified, never trusted.

A token is accepted only from a configured issuer (`ENTRA_ISSUERS`: JSON list of
`{"issuer", "jwksUri" | "jwks", "audiences"}`), signed (RS256/ES256) by a key of that issuer's JWKS (fetched
and cached; fetched again, at most once a minute, when a token names an unknown key id), for one of the
issuer's audiences, unexpired, with `oid` (or `sub`) and `tid`. In Azure the issuer is
`https://login.microsoftonline.com/<tenant>/v2.0` or `https://sts.windows.net/<tenant>/` with the tenant's
published JWKS; the tests run an issuer of their own with keys they make.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from pydantic import BaseModel, Field

log = logging.getLogger("auth")

DEFAULT_AUDIENCES = [
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net/",
    "https://containerregistry.azure.net",
]
_ALGORITHMS = ["RS256", "ES256"]
_REFETCH_SECONDS = 60.0
_JWKS_TTL_SECONDS = 3600.0


class EntraTokenInvalid(Exception):
    pass


class IssuerConfig(BaseModel):
    issuer: str
    jwksUri: str = ""
    jwks: dict[str, Any] | None = None
    audiences: list[str] = Field(default_factory=lambda: list(DEFAULT_AUDIENCES))


@dataclass(frozen=True, slots=True)
class EntraPrincipal:
    object_id: str
    tenant_id: str
    audience: str = ""  # the audience the token was for (one of its issuer's configured audiences)


def parse_issuers(text: str) -> dict[str, IssuerConfig]:
    if not text.strip():
        return {}
    return {c.issuer: c for c in (IssuerConfig.model_validate(item) for item in json.loads(text))}


class EntraVerifier:
    def __init__(self, issuers: dict[str, IssuerConfig]) -> None:
        self._issuers = issuers
        self._keys: dict[str, tuple[float, dict[str, jwt.PyJWK]]] = {}
        self._fetched: dict[str, float] = {}

    async def _jwks(self, config: IssuerConfig, refresh: bool) -> dict[str, jwt.PyJWK]:
        if config.jwks is not None:
            return _keys_of(config.jwks)
        cached = self._keys.get(config.issuer)
        now = time.monotonic()
        stale = cached is None or cached[0] < now
        may_refetch = now - self._fetched.get(config.issuer, -_REFETCH_SECONDS) >= _REFETCH_SECONDS
        if (stale or refresh) and may_refetch:
            self._fetched[config.issuer] = now
            try:
                timeout = aiohttp.ClientTimeout(total=10)
                async with aiohttp.ClientSession(timeout=timeout) as session, session.get(config.jwksUri) as reply:
                    reply.raise_for_status()
                    keys = _keys_of(await reply.json(content_type=None))
                self._keys[config.issuer] = (now + _JWKS_TTL_SECONDS, keys)
                return keys
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("could not fetch the JWKS of %s: %s", config.issuer, exc)
        return cached[1] if cached is not None else {}

    async def verify(self, token: str) -> EntraPrincipal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise EntraTokenInvalid(f"not a JWT: {exc}") from exc
        config = self._issuers.get(str(unverified.get("iss", "")))
        if config is None:
            raise EntraTokenInvalid("the token's issuer is not trusted by this registry")
        kid = str(header.get("kid", ""))
        keys = await self._jwks(config, refresh=False)
        if kid not in keys:
            keys = await self._jwks(config, refresh=True)
        key = keys.get(kid)
        if key is None:
            raise EntraTokenInvalid("the token is signed by a key its issuer does not publish")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=_ALGORITHMS,
                audience=config.audiences,
                issuer=config.issuer,
                options={"require": ["exp", "iss", "aud"]},
                leeway=60,
            )
        except jwt.PyJWTError as exc:
            raise EntraTokenInvalid(str(exc)) from exc
        object_id = str(claims.get("oid") or claims.get("sub") or "")
        tenant = str(claims.get("tid") or "")
        if not object_id or not tenant:
            raise EntraTokenInvalid("the token names no principal (oid) or tenant (tid)")
        audience = claims.get("aud")
        return EntraPrincipal(object_id, tenant, audience if isinstance(audience, str) else "")


def _keys_of(jwks: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    keys: dict[str, jwt.PyJWK] = {}
    for item in jwks.get("keys", []):
        try:
            key = jwt.PyJWK(item)
        except jwt.PyJWTError:
            continue
        if key.key_id:
            keys[key.key_id] = key
    return keys
