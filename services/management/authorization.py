"""Who may call the management API, and on which registry: ARM's authentication and role check.

Azure Resource Manager serves a call only with a bearer token from Microsoft Entra ID for the management
audience, and only when a role assigned to the caller on the resource (here: the registry) grants the
operation. We do the same, with the issuers the registry already trusts (`ENTRA_ISSUERS`, see
services/auth/entra.py):

- no `Authorization`, or anything but a valid Entra token for the management endpoint (Basic credentials,
  our own ACR tokens, a token for the registry's data-plane audience, an expired or forged one) is
  `401 AuthenticationFailed` / `InvalidAuthenticationToken` with ARM's `WWW-Authenticate` challenge;
- reads (`GET`) need Owner, Contributor, Reader or the Container Registry configuration reader role;
  writes and actions (`PUT`, `PATCH`, `DELETE`, `ping`, `listEvents`, `getCallbackConfig`, credentials)
  need Owner, Contributor or Container Registry Contributor and Data Access Configuration Administrator.
  A role counts when it is assigned on the registry itself, on its resource group or on its subscription
  (creating a registry needs one of the last two). Anything else, including a registry that does not
  exist, is `403 AuthorizationFailed`, so the answer never tells a stranger which registries exist.

The registry's network rules do not apply: in Azure the management endpoint is ARM's, not the registry's,
and a registry whose rules lock everyone out must still be repairable by its owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request

from services.auth.entra import EntraTokenInvalid, EntraVerifier
from services.auth.store import AccessStore, RoleAssignmentDoc
from services.management.store import RegistryStore, ScopeRoleAssignmentDoc

# Tokens for these audiences are management tokens (what `az` and the management SDK ask Entra for).
MANAGEMENT_AUDIENCES = frozenset(
    {
        "https://management.azure.com",
        "https://management.azure.com/",
        "https://management.core.windows.net",
        "https://management.core.windows.net/",
    }
)
WRITER_ROLES = frozenset(
    {"Owner", "Contributor", "Container Registry Contributor and Data Access Configuration Administrator"}
)
READER_ROLES = WRITER_ROLES | {"Reader", "Container Registry Configuration Reader and Data Access Configuration Reader"}
CONTROL_PLANE_ROLES = READER_ROLES
CHALLENGE = 'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token"'

Access = Literal["read", "write"]


class ManagementDenied(Exception):
    """The call is refused: `status` 401 (who are you?) or 403 (not you), with ARM's code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": CHALLENGE} if self.status == 401 else {}


@dataclass(frozen=True, slots=True)
class Principal:
    object_id: str
    tenant_id: str


def roles_granting(access: Access) -> frozenset[str]:
    return WRITER_ROLES if access == "write" else READER_ROLES


@dataclass(frozen=True, slots=True)
class ArmScope:
    """Where an operation acts: a subscription, a resource group of it, or a registry in that group."""

    subscription: str
    resource_group: str | None = None
    registry: str | None = None

    def __str__(self) -> str:
        text = f"/subscriptions/{self.subscription}"
        if self.resource_group is not None:
            text += f"/resourceGroups/{self.resource_group}"
            if self.registry is not None:
                text += f"/providers/Microsoft.ContainerRegistry/registries/{self.registry}"
        return text

    def covered_by(self, assignment_scope: str) -> bool:
        """Whether a role assigned at `assignment_scope` (a subscription or resource group) reaches here."""
        mine = str(self).lower().split("/providers/", 1)[0] + "/"
        return mine.startswith(assignment_scope.lower().rstrip("/") + "/")


def grants(assignments: list[RoleAssignmentDoc], principal: Principal, access: Access) -> bool:
    """Whether the principal holds a role on the registry that allows `access`. Repository-conditioned
    assignments are data-plane grants and never reach the control plane."""
    wanted = roles_granting(access)
    return any(
        a.principalId == principal.object_id
        and (not a.tenantId or a.tenantId == principal.tenant_id)
        and a.condition is None
        and a.role in wanted
        for a in assignments
    )


def scope_grants(
    assignments: list[ScopeRoleAssignmentDoc], principal: Principal, access: Access, scope: ArmScope
) -> bool:
    """Whether a role at subscription or resource group scope allows `access` at `scope`."""
    wanted = roles_granting(access)
    return any(
        a.principalId == principal.object_id
        and (not a.tenantId or a.tenantId == principal.tenant_id)
        and a.role in wanted
        and scope.covered_by(a.scope)
        for a in assignments
    )


def bearer_token(header: str) -> str:
    if not header:
        raise ManagementDenied(
            401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ManagementDenied(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        )
    return token.strip()


class ManagementAuthorizer:
    def __init__(self, verifier: EntraVerifier, access: AccessStore, registries: RegistryStore) -> None:
        self._verifier = verifier
        self._access = access
        self._registries = registries

    async def authenticate(self, request: Request) -> Principal:
        token = bearer_token(request.headers.get("authorization", ""))
        try:
            found = await self._verifier.verify(token)
        except EntraTokenInvalid as error:
            raise ManagementDenied(
                401, "InvalidAuthenticationToken", f"The access token is invalid: {error}"
            ) from error
        if found.audience not in MANAGEMENT_AUDIENCES:
            raise ManagementDenied(
                401,
                "InvalidAuthenticationToken",
                "The access token has an invalid audience: ask for a token for https://management.azure.com",
            )
        return Principal(found.object_id, found.tenant_id)

    async def may(
        self,
        principal: Principal,
        scope: ArmScope,
        access: Access,
        scope_assignments: list[ScopeRoleAssignmentDoc] | None = None,
    ) -> bool:
        """Whether the principal may `access` at `scope` (roles at that scope or above it). A caller asking
        about many registries of one subscription passes its scope assignments, read once."""
        if scope_assignments is None:
            scope_assignments = await self._registries.scope_role_assignments(scope.subscription)
        if scope_grants(scope_assignments, principal, access, scope):
            return True
        if scope.registry is None:
            return False
        return grants(await self._access.role_assignments(scope.registry), principal, access)

    async def authorize(self, request: Request, scope: ArmScope, access: Access, operation: str) -> Principal:
        """The caller, when they may perform `operation` (ARM's action name) at `scope`; else the refusal."""
        principal = await self.authenticate(request)
        if not await self.may(principal, scope, access):
            raise ManagementDenied(
                403,
                "AuthorizationFailed",
                f"The client '{principal.object_id}' with object id '{principal.object_id}' does not have "
                f"authorization to perform action '{operation}' over scope '{scope}' or the scope is invalid.",
            )
        return principal
