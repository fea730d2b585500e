"""The OpenAPI 3.1 document of the management surface (`GET /openapi/management.json`), built from the route
table's request models so that it cannot drift from what the handlers accept. It describes every operation
the ARM-shaped API serves, its path and query parameters, its request body and ARM's error shape; tests fuzz
it with schemathesis (no 5xx, whatever the input).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.management.access_api import GenerateBody, ScopeMapBody, TokenBody
from services.management.arm import API_VERSIONS
from services.management.registries_api import NameRequest, RegenerateRequest, RegistryCreate, RegistryUpdate
from services.management.replications_api import ReplicationCreate, ReplicationUpdate
from services.management.webhooks_api import WebhookParameters
from services.tasks.models import (
    AgentPoolBody,
    AgentPoolUpdate,
    DockerBuildRequest,
    RunUpdate,
    TaskBody,
    TaskRunBody,
)

_SUB = "/subscriptions/{subscriptionId}"
_GROUP = _SUB + "/resourceGroups/{resourceGroupName}"
_PROVIDER = "/providers/Microsoft.ContainerRegistry"
_REGISTRY = _GROUP + _PROVIDER + "/registries/{registryName}"

_PARAMETERS: dict[str, dict[str, Any]] = {
    "subscriptionId": {"type": "string", "pattern": "^[0-9a-fA-F-]{1,64}$"},
    "resourceGroupName": {"type": "string", "pattern": "^[-\\w.()]{1,90}$"},
    "registryName": {"type": "string", "pattern": "^[a-zA-Z0-9]{5,50}$"},
    "webhookName": {"type": "string", "pattern": "^[a-zA-Z0-9]{5,50}$"},
    "replicationName": {"type": "string", "pattern": "^[a-zA-Z0-9]{5,50}$"},
    "scopeMapName": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{5,50}$"},
    "tokenName": {"type": "string", "pattern": "^[a-zA-Z0-9-]{5,50}$"},
    "location": {"type": "string", "minLength": 1, "maxLength": 64},
    "operationId": {"type": "string", "minLength": 1, "maxLength": 64},
    "runId": {"type": "string", "pattern": "^[a-z]{2}[0-9]{1,10}$"},
    "taskName": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{4,49}$"},
    "agentPoolName": {"type": "string", "pattern": "^[a-zA-Z0-9-]{3,20}$"},
    "taskRunName": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{4,49}$"},
}

# (method, path, request model or None, success statuses)
_OPERATIONS: list[tuple[str, str, type[BaseModel] | None, tuple[str, ...]]] = [
    ("get", _SUB + _PROVIDER + "/registries", None, ("200",)),
    ("get", _GROUP + _PROVIDER + "/registries", None, ("200",)),
    ("post", _SUB + _PROVIDER + "/checkNameAvailability", NameRequest, ("200",)),
    ("get", _SUB + _PROVIDER + "/locations/{location}/asyncOperations/{operationId}", None, ("200",)),
    ("get", _SUB + _PROVIDER + "/locations/{location}/operationResults/{operationId}", None, ("200", "202")),
    ("get", _REGISTRY, None, ("200",)),
    ("put", _REGISTRY, RegistryCreate, ("200", "201")),
    ("patch", _REGISTRY, RegistryUpdate, ("200",)),
    ("delete", _REGISTRY, None, ("202", "204")),
    ("get", _REGISTRY + "/listUsages", None, ("200",)),
    ("post", _REGISTRY + "/listCredentials", None, ("200",)),
    ("post", _REGISTRY + "/regenerateCredential", RegenerateRequest, ("200",)),
    ("post", _REGISTRY + "/generateCredentials", GenerateBody, ("200",)),
    ("get", _REGISTRY + "/scopeMaps", None, ("200",)),
    ("get", _REGISTRY + "/scopeMaps/{scopeMapName}", None, ("200",)),
    ("put", _REGISTRY + "/scopeMaps/{scopeMapName}", ScopeMapBody, ("200", "201")),
    ("patch", _REGISTRY + "/scopeMaps/{scopeMapName}", ScopeMapBody, ("200",)),
    ("delete", _REGISTRY + "/scopeMaps/{scopeMapName}", None, ("200", "204")),
    ("get", _REGISTRY + "/tokens", None, ("200",)),
    ("get", _REGISTRY + "/tokens/{tokenName}", None, ("200",)),
    ("put", _REGISTRY + "/tokens/{tokenName}", TokenBody, ("200", "201")),
    ("patch", _REGISTRY + "/tokens/{tokenName}", TokenBody, ("200",)),
    ("delete", _REGISTRY + "/tokens/{tokenName}", None, ("200", "204")),
    ("get", _REGISTRY + "/webhooks", None, ("200",)),
    ("get", _REGISTRY + "/webhooks/{webhookName}", None, ("200",)),
    ("put", _REGISTRY + "/webhooks/{webhookName}", WebhookParameters, ("200", "201")),
    ("patch", _REGISTRY + "/webhooks/{webhookName}", WebhookParameters, ("200",)),
    ("delete", _REGISTRY + "/webhooks/{webhookName}", None, ("200", "204")),
    ("post", _REGISTRY + "/webhooks/{webhookName}/ping", None, ("200",)),
    ("post", _REGISTRY + "/webhooks/{webhookName}/listEvents", None, ("200",)),
    ("post", _REGISTRY + "/webhooks/{webhookName}/getCallbackConfig", None, ("200",)),
    ("get", _REGISTRY + "/replications", None, ("200",)),
    ("get", _REGISTRY + "/replications/{replicationName}", None, ("200",)),
    ("put", _REGISTRY + "/replications/{replicationName}", ReplicationCreate, ("200", "201")),
    ("patch", _REGISTRY + "/replications/{replicationName}", ReplicationUpdate, ("200",)),
    ("delete", _REGISTRY + "/replications/{replicationName}", None, ("202", "204")),
    ("post", _REGISTRY + "/listBuildSourceUploadUrl", None, ("200",)),
    ("post", _REGISTRY + "/scheduleRun", DockerBuildRequest, ("200",)),
    ("get", _REGISTRY + "/runs", None, ("200",)),
    ("get", _REGISTRY + "/runs/{runId}", None, ("200",)),
    ("patch", _REGISTRY + "/runs/{runId}", RunUpdate, ("200",)),
    ("post", _REGISTRY + "/runs/{runId}/cancel", None, ("200",)),
    ("post", _REGISTRY + "/runs/{runId}/listLogSasUrl", None, ("200",)),
    ("get", _REGISTRY + "/tasks", None, ("200",)),
    ("get", _REGISTRY + "/tasks/{taskName}", None, ("200",)),
    ("put", _REGISTRY + "/tasks/{taskName}", TaskBody, ("200", "201")),
    ("patch", _REGISTRY + "/tasks/{taskName}", TaskBody, ("200",)),
    ("delete", _REGISTRY + "/tasks/{taskName}", None, ("200", "204")),
    ("post", _REGISTRY + "/tasks/{taskName}/listDetails", None, ("200",)),
    ("get", _REGISTRY + "/agentPools", None, ("200",)),
    ("get", _REGISTRY + "/agentPools/{agentPoolName}", None, ("200",)),
    ("put", _REGISTRY + "/agentPools/{agentPoolName}", AgentPoolBody, ("200", "201")),
    ("patch", _REGISTRY + "/agentPools/{agentPoolName}", AgentPoolUpdate, ("200",)),
    ("delete", _REGISTRY + "/agentPools/{agentPoolName}", None, ("202", "204")),
    ("post", _REGISTRY + "/agentPools/{agentPoolName}/listQueueStatus", None, ("200",)),
    ("get", _REGISTRY + "/taskRuns", None, ("200",)),
    ("get", _REGISTRY + "/taskRuns/{taskRunName}", None, ("200",)),
    ("put", _REGISTRY + "/taskRuns/{taskRunName}", TaskRunBody, ("200", "201")),
    ("patch", _REGISTRY + "/taskRuns/{taskRunName}", TaskRunBody, ("200",)),
    ("delete", _REGISTRY + "/taskRuns/{taskRunName}", None, ("200", "204")),
    ("post", _REGISTRY + "/taskRuns/{taskRunName}/listDetails", None, ("200",)),
]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "target": {"type": "string"}},
        }
    },
}


def management_openapi(server_url: str) -> dict[str, Any]:
    components: dict[str, Any] = {"ErrorResponse": _ERROR}
    paths: dict[str, dict[str, Any]] = {}
    for method, path, model, statuses in _OPERATIONS:
        names = [segment[1:-1] for segment in path.split("/") if segment.startswith("{")]
        parameters = [{"name": n, "in": "path", "required": True, "schema": _PARAMETERS[n]} for n in names]
        parameters.append(
            {"name": "api-version", "in": "query", "required": True, "schema": {"enum": sorted(API_VERSIONS)}}
        )
        responses: dict[str, Any] = {status: {"description": "success"} for status in statuses}
        responses["default"] = {
            "description": "an ARM error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
        }
        operation: dict[str, Any] = {
            "operationId": f"{method}_{path.replace('/', '_').replace('{', '').replace('}', '')}",
            "parameters": parameters,
            "responses": responses,
            "security": [{"entra": []}],
        }
        if model is not None:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Microsoft.ContainerRegistry (acr-serverless)", "version": "2025-11-01"},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"entra": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
