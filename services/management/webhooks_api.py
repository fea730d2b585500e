"""The ARM-shaped management API for webhooks (`Microsoft.ContainerRegistry/registries/webhooks`), so the
`azure-mgmt-containerregistry` SDK's `webhooks` operations work against it:

    PUT|GET|PATCH|DELETE /subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.ContainerRegistry
                         /registries/{registry}/webhooks/{webhook}?api-version=2025-11-01
    GET                  .../registries/{registry}/webhooks
    POST                 .../webhooks/{webhook}/ping | /listEvents | /getCallbackConfig

Create, update and delete are long-running operations in ARM; they finish at once here and answer
200/201 with the final body (`provisioningState: Succeeded`), which completes the SDK's poller. Registries are
found by name: the subscription and resource group are echoed in ids, not checked (the rest of the ARM
control plane comes later and lives in this package). Every call is authenticated and authorized first
(`authorization.py`: an Entra token for the management endpoint, Owner/Contributor/Reader on the registry).
Custom headers are secrets: getCallbackConfig shows them masked.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.auth.entra import EntraVerifier, parse_issuers
from services.auth.store import AccessStore
from services.management.authorization import Access, ManagementAuthorizer, ManagementDenied
from services.platform.availability import classify
from services.platform.cosmos import Cosmos
from services.platform.lifecycle import close_on_shutdown
from services.platform.settings import Settings, get_settings
from services.webhooks import resources, rules
from services.webhooks.delivery import WebhookDispatcher, delivery_key
from services.webhooks.store import DeliveryDoc, WebhookDoc, WebhookStore

log = logging.getLogger("management")

PROVIDER = "Microsoft.ContainerRegistry"
REGISTRY_NAME = re.compile(r"[a-z0-9]{5,50}")
SUBSCRIPTION = re.compile(r"[0-9A-Fa-f-]{1,64}")
RESOURCE_GROUP = re.compile(r"[-\w.()]{1,90}")  # ARM's resource group names
WEBHOOK_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerRegistry"
    r"/registries/(?P<registry>[^/]+)/webhooks(?:/(?P<webhook>[^/]+)(?:/(?P<action>ping|listEvents|getCallbackConfig))?)?/?$",
    re.IGNORECASE,
)


# --- request bodies (ARM's WebhookCreateParameters / WebhookUpdateParameters) ----------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class WebhookProperties(_Body):
    serviceUri: str | None = None
    customHeaders: dict[str, str] | None = None
    status: Literal["enabled", "disabled"] | None = None
    scope: str | None = None
    actions: list[str] | None = None
    # ours, beyond ACR
    signingSecret: str | None = None
    payloadFormat: Literal["acr", "cloudevents"] | None = None


class WebhookParameters(_Body):
    location: str | None = None
    tags: dict[str, str] | None = None
    properties: WebhookProperties = Field(default_factory=WebhookProperties)

    def changes(self) -> resources.WebhookChanges:
        p = self.properties
        return resources.WebhookChanges(
            service_uri=p.serviceUri,
            custom_headers=p.customHeaders,
            actions=p.actions,
            status=p.status,
            scope=p.scope,
            location=self.location,
            tags=self.tags,
            signing_secret=p.signingSecret,
            payload_format=p.payloadFormat,
        )


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"code": self.code, "message": self.message}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# --- resource shapes --------------------------------------------------------------------------------------
def resource_id(sub: str, rg: str, registry: str, webhook: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{PROVIDER}/registries/{registry}/webhooks/{webhook}"


def webhook_resource(doc: WebhookDoc, sub: str, rg: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "status": doc.status,
        "scope": doc.scope,
        "actions": doc.actions,
        "provisioningState": "Succeeded",
        "payloadFormat": doc.payloadFormat,
        "signingSecretSet": doc.signingSecret is not None,
    }
    return {
        "id": resource_id(sub, rg, doc.registry, doc.name),
        "name": doc.name,
        "type": f"{PROVIDER}/registries/webhooks",
        "location": doc.location,
        "tags": doc.tags,
        "properties": properties,
    }


def callback_config(doc: WebhookDoc) -> dict[str, Any]:
    return {
        "serviceUri": doc.serviceUri,
        "customHeaders": rules.masked_headers(doc.customHeaders, doc.customHeaders),
    }


def event_rows(delivery: DeliveryDoc) -> list[dict[str, Any]]:
    """ACR's `Event` list shape: one row per delivery attempt, newest first, plus our own fields."""
    rows: list[dict[str, Any]] = []
    for attempt in reversed(delivery.attempts):
        request = attempt.get("request", {})
        response = attempt.get("response") or {}
        try:
            content = json.loads(request.get("content") or "{}")
        except ValueError:
            content = {}
        rows.append(
            {
                "id": attempt.get("id"),
                "eventRequestMessage": {
                    "content": content.get("data", content) if "specversion" in content else content,
                    "headers": request.get("headers", {}),
                    "method": request.get("method", "POST"),
                    "requestUri": request.get("requestUri", ""),
                    "version": request.get("version", "1.1"),
                },
                "eventResponseMessage": {
                    "content": response.get("content", attempt.get("error", "")),
                    "headers": response.get("headers", {}),
                    "reasonPhrase": response.get("reasonPhrase", attempt.get("error", "")),
                    "statusCode": str(response["statusCode"]) if "statusCode" in response else "",
                    "version": response.get("version", ""),
                },
                # ours: the delivery this attempt belongs to and how it went
                "eventId": delivery.eventId,
                "deliveryState": delivery.state,
                "attempt": attempt.get("attempt"),
                "timestamp": attempt.get("timestamp"),
                "durationMs": attempt.get("durationMs"),
            }
        )
    return rows


# --- the API ----------------------------------------------------------------------------------------------
class ManagementApi:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.metadata = Cosmos(self.settings)
        self.dispatcher = WebhookDispatcher(self.settings, self.metadata)
        self.authorizer = ManagementAuthorizer(
            EntraVerifier(parse_issuers(self.settings.entra_issuers)), AccessStore(self.metadata)
        )
        self._opened = False

    async def open(self) -> None:
        if not self._opened:
            await self.metadata.open()
            await self.dispatcher.open()
            self._opened = True

    async def close(self) -> None:
        await self.dispatcher.close()
        await self.metadata.close()
        self._opened = False

    async def handle(self, request: Request) -> Response:
        try:
            await self.open()
            return await self._dispatch(request)
        except ArmError as error:
            return error.response()
        except ManagementDenied as error:
            return ArmError(error.status, error.code, error.message, error.headers).response()
        except rules.WebhookInvalid as error:
            return ArmError(400, "InvalidRequest", str(error)).response()
        except resources.RegistryNotFound as error:
            return ArmError(404, "ResourceNotFound", f"registry {error} was not found").response()
        except resources.WebhookNotFound as error:
            return ArmError(404, "ResourceNotFound", f"webhook {error} was not found").response()
        except Exception as error:
            outage = classify(error)
            if outage is not None:  # Cosmos DB or Storage down or throttling: ARM's 503, not a 500
                log.warning("%s %s: %s", request.method, request.url.path, outage)
                retry = {"Retry-After": str(outage.retry_after_seconds)}
                return ArmError(503, "ServiceUnavailable", "the service is unavailable; retry later", retry).response()
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return ArmError(500, "InternalServerError", "internal error").response()

    async def _dispatch(self, request: Request) -> Response:
        match = WEBHOOK_PATH.match(request.url.path)
        if match is None:
            raise ArmError(404, "NotFound", "no such resource type")
        if not request.query_params.get("api-version"):
            raise ArmError(400, "MissingApiVersionParameter", "the api-version query parameter is required")
        sub, rg, registry = match["sub"], match["rg"], match["registry"].lower()  # ARM names ignore case
        name, action, method = match["webhook"], match["action"], request.method
        await self._authorize(request, sub, rg, registry, name, action)
        metadata = self.metadata
        if name is None:
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a webhook list")
            docs = await resources.list_webhooks(metadata, registry)
            return JSONResponse({"value": [webhook_resource(d, sub, rg) for d in docs]})
        if action is not None:
            if method != "POST":
                raise ArmError(405, "MethodNotAllowed", f"{action} takes POST")
            doc = await resources.get_webhook(metadata, registry, name)
            if action == "ping":
                return JSONResponse({"id": await self.dispatcher.ping(doc)})
            if action == "getCallbackConfig":
                return JSONResponse(callback_config(doc))
            deliveries = await WebhookStore(metadata).list_deliveries(delivery_key(registry, name))
            return JSONResponse({"value": [row for d in deliveries for row in event_rows(d)]})
        if method == "GET":
            doc = await resources.get_webhook(metadata, registry, name)
            return JSONResponse(webhook_resource(doc, sub, rg))
        if method == "DELETE":
            deleted = await resources.delete_webhook(metadata, registry, name)
            return Response(status_code=200 if deleted else 204)
        if method in ("PUT", "PATCH"):
            try:
                body = WebhookParameters.model_validate_json(await request.body() or b"{}")
            except ValidationError as error:
                raise ArmError(400, "InvalidRequestContent", str(error)) from error
            if method == "PUT":
                if body.location is None:
                    raise ArmError(400, "LocationRequired", "location is required")
                doc, created = await resources.put_webhook(metadata, registry, name, body.changes())
                return JSONResponse(webhook_resource(doc, sub, rg), status_code=201 if created else 200)
            doc = await resources.update_webhook(metadata, registry, name, body.changes())
            return JSONResponse(webhook_resource(doc, sub, rg))
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a webhook")

    async def _authorize(
        self, request: Request, sub: str, rg: str, registry: str, name: str | None, action: str | None
    ) -> None:
        """401 or 403 before anything is read or changed (ARM's action names in the refusal)."""
        operation = f"{PROVIDER}/registries/webhooks/"
        access: Access = "write"
        if action is not None:
            operation += f"{action}/action"
        elif request.method == "GET":
            operation, access = operation + "read", "read"
        else:
            operation += "delete" if request.method == "DELETE" else "write"
        if not (REGISTRY_NAME.fullmatch(registry) and SUBSCRIPTION.fullmatch(sub) and RESOURCE_GROUP.fullmatch(rg)):
            # 401 first for strangers; then no such scope for anyone (and nothing of the path echoed back)
            await self.authorizer.authenticate(request)
            raise ManagementDenied(403, "AuthorizationFailed", "the scope of the request is invalid")
        scope = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{PROVIDER}/registries/{registry}"
        await self.authorizer.authorize(request, registry, access, operation, scope)


_api: ManagementApi | None = None


def management_api() -> ManagementApi:
    global _api
    if _api is None:
        _api = ManagementApi()
        close_on_shutdown(_api.close)
    return _api
