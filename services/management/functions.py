"""The management API's HTTP function (a Blueprint registered in function_app.py): the ARM-shaped routes
under `/subscriptions/...`, handed to `webhooks_api.ManagementApi` (the rest of the control plane joins it)."""

from __future__ import annotations

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from services.management.webhooks_api import management_api

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.route(
    route="subscriptions/{*path}",
    methods=["GET", "PUT", "PATCH", "DELETE", "POST"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
async def management_arm(req: Request) -> Response:
    """ARM-shaped management API (Microsoft.ContainerRegistry/registries/webhooks)."""
    return await management_api().handle(req)
