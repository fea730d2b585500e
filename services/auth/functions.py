"""The token service's HTTP functions (a Blueprint that `function_app.py` registers)."""

from __future__ import annotations

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from services.auth import routes

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves it untyped


@bp.route(route="oauth2/token", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def oauth2_token(req: Request) -> Response:
    """ACR's token endpoint: Basic credentials (GET) or an OAuth2 form (POST) -> access token."""
    return await routes.handle(req, routes.get_token if req.method == "GET" else routes.post_token)


@bp.route(route="oauth2/exchange", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def oauth2_exchange(req: Request) -> Response:
    """An Entra ID access token -> an ACR refresh token."""
    return await routes.handle(req, routes.post_exchange)
