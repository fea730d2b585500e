"""The ARM-shaped management API for webhooks (`Microsoft.ContainerRegistry/registries/webhooks`), so the
`azure-mgmt-containerregistry` SDK's `webhooks` operations work against it:

    PUT|GET|PATCH|DELETE /subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.ContainerRegistry
                         /registries/{registry}/webhooks/{webhook}?api-version=2025-11-01
    GET                  .../registries/{registry}/webhooks
    POST                 .../webhooks/{webhook}/ping | /listEvents | /getCallbackConfig

Create, update and delete are long-running operations in ARM; they finish at once here and answer
200/201 with the final body (`provisioningState: Succeeded`), which completes the SDK's poller. The registry
must live in the path's subscription and resource group. Every call is authenticated and authorized first
(arm.py, authorization.py). Custom headers are secrets: getCallbackConfig shows them masked.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from services.management.arm import PROVIDER, ArmCall, ArmError, registry_in_scope
from services.management.authorization import Access
from services.platform.cosmos import Cosmos
from services.webhooks import resources, rules
from services.webhooks.delivery import delivery_key
from services.webhooks.store import DeliveryDoc, WebhookDoc, WebhookStore

log = logging.getLogger("management")


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


# --- the handler ------------------------------------------------------------------------------------------
WEBHOOK_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerRegistry"
    r"/registries/(?P<registry>[^/]+)/webhooks(?:/(?P<webhook>[^/]+)"
    r"(?:/(?P<action>ping|listEvents|getCallbackConfig))?)?/?$",
    re.IGNORECASE,
)


async def webhooks(call: ArmCall) -> Response:
    scope = call.scope()
    name, action, method = call.match["webhook"], call.match["action"], call.request.method
    operation = "registries/webhooks/"
    access: Access = "write"
    if action is not None:
        operation += f"{action}/action"
    elif method == "GET":
        operation, access = operation + "read", "read"
    else:
        operation += "delete" if method == "DELETE" else "write"
    await call.authorize(scope, access, operation)
    registry = (await registry_in_scope(call, scope)).registry
    sub, rg = scope.subscription, scope.resource_group or ""
    metadata = call.services.metadata
    try:
        return await _webhooks(call, metadata, registry, sub, rg, name, action, method)
    except rules.WebhookInvalid as error:
        raise ArmError(400, "InvalidRequest", str(error)) from error
    except resources.WebhookNotFound as error:
        raise ArmError(404, "ResourceNotFound", f"webhook {error} was not found") from error


async def _webhooks(
    call: ArmCall, metadata: Cosmos, registry: str, sub: str, rg: str, name: str | None, action: str | None, method: str
) -> Response:
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
            return JSONResponse({"id": await call.services.dispatcher.ping(doc)})
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
        body = await call.body(WebhookParameters)
        if method == "PUT":
            if body.location is None:
                raise ArmError(400, "LocationRequired", "location is required", target="location")
            doc, created = await resources.put_webhook(metadata, registry, name, body.changes())
            return JSONResponse(webhook_resource(doc, sub, rg), status_code=201 if created else 200)
        doc = await resources.update_webhook(metadata, registry, name, body.changes())
        return JSONResponse(webhook_resource(doc, sub, rg))
    raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a webhook")
