"""Identity and access: who is calling, and may they do this?

The data plane asks one question per request — `AuthService.admit(request, registry, need)` — and gets a
`Caller` back or a `RegistryError` (401 with a challenge, 403 DENIED). How the answer was reached (admin
user, repository-scoped token, Entra role assignment, anonymous pull, a signed access token) stays here.

Pure rules (no I/O): `scopes.py` (Docker scope strings), `permissions.py` (what each identity may do:
scope maps, built-in scope maps, roles), `passwords.py`, `signing.py` (JWTs, key ring).
Service: `service.py` (authenticate, authorize, issue tokens), `routes.py` (`/oauth2/token`,
`/oauth2/exchange`), `functions.py` (their HTTP functions). Storage: `store.py`.
"""
