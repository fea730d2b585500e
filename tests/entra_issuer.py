"""A Microsoft Entra ID stand-in for tests: an issuer with an RSA key the test makes, and its JWKS.

`ENTRA_ISSUERS` (the registry's setting) gets `issuer.setting()`, which carries the JWKS inline, so no
network is involved; `token(object_id)` makes access tokens shaped like Entra's (iss, aud, tid, oid).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from azure.core.credentials import AccessToken
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ARM_AUDIENCE = "https://management.azure.com"


class TestIssuer:
    __test__ = False  # not a test class

    def __init__(self, tenant: str | None = None) -> None:
        self.tenant = tenant or str(uuid.uuid4())
        self.issuer = f"https://login.microsoftonline.com/{self.tenant}/v2.0"
        self.kid = uuid.uuid4().hex[:16]
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [public | {"kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def setting(self) -> str:
        return json.dumps([{"issuer": self.issuer, "jwks": self.jwks()}])

    def token(
        self,
        object_id: str,
        *,
        audience: str = ARM_AUDIENCE,
        lifetime: int = 3600,
        key: rsa.RSAPrivateKey | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "aud": audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "oid": object_id,
            "sub": object_id,
            "tid": self.tenant,
        } | claims
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": self.kid})


class IssuerCredential:
    """A TokenCredential as azure-identity would give, but from a test's own Entra issuer."""

    def __init__(self, issuer: TestIssuer, object_id: str, audience: str = ARM_AUDIENCE) -> None:
        self.issuer, self.object_id, self.audience = issuer, object_id, audience
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(self.issuer.token(self.object_id, audience=self.audience), int(time.time()) + 3600)
