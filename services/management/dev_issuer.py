"""A local stand-in for Microsoft Entra ID, so a developer can call the management API of `make run`.

The management API takes only Entra tokens for the management endpoint (see authorization.py). Locally
there is no Entra ID, so `make run` makes an issuer of its own: a key (`.local/auth/dev-issuer.json`, 0600),
trusted through `ENTRA_ISSUERS` like any other issuer, and one developer principal that is Owner of the
default registry. `python -m services.management dev-token` prints a token of that principal (valid a day);
`make run` also writes one into `.local/credentials.json` under `"arm"`. Never configured in Azure: there
the issuers are the tenant's real ones.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

MANAGEMENT_AUDIENCE = "https://management.azure.com"
LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
LOCAL_RESOURCE_GROUP = "local-rg"
TOKEN_SECONDS = 24 * 3600


@dataclass(frozen=True)
class DevIssuer:
    tenant: str
    principal: str  # the developer's object id
    kid: str
    key: ec.EllipticCurvePrivateKey

    @property
    def issuer(self) -> str:
        return f"https://login.microsoftonline.com/{self.tenant}/v2.0"

    def setting_entry(self) -> dict[str, Any]:
        """This issuer as one entry of `ENTRA_ISSUERS` (its public key inline: no network involved)."""
        public: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(self.key.public_key()))
        return {"issuer": self.issuer, "jwks": {"keys": [public | {"kid": self.kid, "use": "sig", "alg": "ES256"}]}}

    def token(self, lifetime: int = TOKEN_SECONDS) -> str:
        now = int(time.time())
        claims = {
            "aud": MANAGEMENT_AUDIENCE,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "oid": self.principal,
            "sub": self.principal,
            "tid": self.tenant,
            "name": "local developer",
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})


def load_or_create(path: Path) -> DevIssuer:
    """The issuer kept in `path`, made on first use (the file 0600, its folder 0700)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        private = json.loads(ECAlgorithm.to_jwk(key))
        record = {"tenant": str(uuid.uuid4()), "principal": str(uuid.uuid4()), "kid": uuid.uuid4().hex[:16]}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(record | {"jwk": private}, out)
    data = json.loads(path.read_text())
    loaded = ECAlgorithm.from_jwk(json.dumps(data["jwk"]))
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} does not hold an EC private key")
    return DevIssuer(data["tenant"], data["principal"], data["kid"], loaded)


def with_issuer(setting: str, issuer: DevIssuer) -> str:
    """`ENTRA_ISSUERS` with the local issuer added (the ones configured stay trusted)."""
    entries: list[dict[str, Any]] = json.loads(setting) if setting.strip() else []
    entries = [e for e in entries if e.get("issuer") != issuer.issuer]
    return json.dumps([*entries, issuer.setting_entry()])
