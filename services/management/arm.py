"""What every handler of the ARM-shaped API shares: the call, the error shape, the names ARM accepts and the
authorization step. The dispatcher (api.py) and the handlers (registries_api.py, webhooks_api.py) both import
this module, so they never import each other.

Errors are ARM's: `{"error": {"code", "message", "target"?, "details"?}}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from services.management.audit import note_authorized
from services.management.authorization import Access, ArmScope, ManagementAuthorizer, ManagementDenied, Principal
from services.management.store import RegistryDoc, RegistryStore

if TYPE_CHECKING:
    from services.platform.blobs import BlobStore
    from services.platform.cosmos import Cosmos
    from services.platform.settings import Settings
    from services.tasks.queue import RunQueue
    from services.webhooks.delivery import WebhookDispatcher

PROVIDER = "Microsoft.ContainerRegistry"
# The versions of Microsoft.ContainerRegistry's API whose shapes these handlers serve (the SDK's is first).
API_VERSIONS = frozenset(
    {
        "2025-11-01",
        "2025-05-01-preview",
        "2025-04-01",
        "2025-03-01-preview",
        "2024-11-01-preview",
        "2023-11-01-preview",
        "2023-07-01",
        "2023-01-01-preview",
        "2022-12-01",
        "2021-09-01",
        "2019-05-01",
    }
)
REGISTRY_NAME = re.compile(r"[a-z0-9]{5,50}")
SUBSCRIPTION = re.compile(r"[0-9A-Fa-f-]{1,64}")
RESOURCE_GROUP = re.compile(r"[-\w.()]{1,90}")  # ARM's resource group names
MAX_BODY_BYTES = 1024 * 1024

M = TypeVar("M", bound=BaseModel)


class ArmError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, target: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.target = status, code, message, target
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


@dataclass(frozen=True)
class Services:
    """The clients a handler works with (one set per process)."""

    settings: Settings
    metadata: Cosmos
    blobs: BlobStore
    dispatcher: WebhookDispatcher
    authorizer: ManagementAuthorizer
    runs: RunQueue  # the task-runs queue (services/tasks)


@dataclass(frozen=True)
class ArmCall:
    services: Services
    request: Request
    match: re.Match[str]

    @property
    def api_version(self) -> str:
        return self.request.query_params.get("api-version", "")

    def base_url(self) -> str:
        return str(self.request.base_url).rstrip("/")

    def scope(self) -> ArmScope:
        """The call's subscription, resource group and registry, as the path names them (validated)."""
        groups = self.match.groupdict()
        registry = groups.get("registry")
        return ArmScope(
            groups["sub"],
            groups.get("rg"),
            registry.lower() if registry is not None else None,  # ARM names ignore case
        )

    async def authorize(self, scope: ArmScope, access: Access, operation: str) -> Principal:
        """401 or 403 before anything is read or changed. Names ARM would never accept are refused without
        being echoed (after authentication: a stranger learns nothing from the path)."""
        valid = SUBSCRIPTION.fullmatch(scope.subscription) and (
            scope.resource_group is None or RESOURCE_GROUP.fullmatch(scope.resource_group)
        )
        authorizer = self.services.authorizer
        if not valid or (scope.registry is not None and not REGISTRY_NAME.fullmatch(scope.registry[:60])):
            await authorizer.authenticate(self.request)
            raise ManagementDenied(403, "AuthorizationFailed", "the scope of the request is invalid")
        principal = await authorizer.authorize(self.request, scope, access, f"{PROVIDER}/{operation}")
        note_authorized(self.request, f"{PROVIDER}/{operation}", principal)  # for its audit record (audit.py)
        return principal

    async def body(self, model: type[M]) -> M:
        """The JSON body as `model`; 400 naming the field otherwise."""
        raw = await self.request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise ArmError(413, "RequestEntityTooLarge", f"the request body is larger than {MAX_BODY_BYTES} bytes")
        try:
            return model.model_validate_json(raw or b"{}")
        except ValidationError as error:
            errors = error.errors()
            target = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
            reason = errors[0]["msg"] if errors else "invalid JSON"
            message = f"{target}: {reason}" if target else reason
            raise ArmError(
                400, "InvalidRequestContent", f"the request content is invalid: {message}", target=target
            ) from error


def registry_id(scope: ArmScope, name: str) -> str:
    group = f"/subscriptions/{scope.subscription}/resourceGroups/{scope.resource_group}"
    return f"{group}/providers/{PROVIDER}/registries/{name}"


async def registry_in_scope(call: ArmCall, scope: ArmScope, *, deleting_ok: bool = False) -> RegistryDoc:
    """The registry the path names, when it lives in the path's subscription and resource group (ids are
    exact: through any other resource group it is not found, as in ARM)."""
    assert scope.registry is not None
    doc = await RegistryStore(call.services.metadata).get_registry(scope.registry)
    if (
        doc is None
        or doc.subscription.lower() != scope.subscription.lower()
        or doc.resourceGroup.lower() != (scope.resource_group or "").lower()
        or (doc.provisioningState == "Deleting" and not deleting_ok)
    ):
        raise ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{PROVIDER}/registries/{scope.registry}' under resource group "
            f"'{scope.resource_group}' was not found.",
        )
    return doc
