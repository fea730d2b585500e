"""The devhost's HTTP side: serve `function_app.py`'s HTTP functions with uvicorn.

The Azure Functions host cannot run here, so this is its local stand-in: it reads the function table
(`app.get_functions()`), turns each HTTP trigger's route template into a Starlette route, and calls the
user function with the request, exactly as the FastAPI HTTP extension does under the real host.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import azure.functions as func
from azure.functions.decorators.function_app import Function
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_TEMPLATE_PARAMETER = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\??\}")


def starlette_paths(template: str) -> list[str]:
    """`v2/{*path}` -> `/v2/{path:path}` (and `/v2`, since a catch-all may be empty)."""

    def convert(match: re.Match[str]) -> str:
        return f"{{{match.group(2)}:path}}" if match.group(1) else f"{{{match.group(2)}}}"

    path = "/" + _TEMPLATE_PARAMETER.sub(convert, template.strip("/"))
    paths = [path]
    if path.endswith(":path}"):
        bare = path[: path.rindex("/{")]
        paths.append(bare or "/")
    return paths


def http_routes(functions: Iterable[Function]) -> list[Route]:
    routes: list[Route] = []
    for function in functions:
        trigger: Any = function.get_trigger()
        if trigger.get_binding_name() != "httpTrigger":
            continue
        user_function: Callable[..., Awaitable[Response]] = function.get_user_function()
        argument = trigger.name

        async def endpoint(
            request: Request, call: Callable[..., Awaitable[Response]] = user_function, arg: str = argument
        ) -> Response:
            return await call(**{arg: request})

        methods = [str(getattr(m, "value", m)) for m in (trigger.methods or [])] or None
        for path in starlette_paths(str(trigger.route or function.get_function_name())):
            routes.append(Route(path, endpoint, methods=methods))
    return routes


def build_app(
    function_app: func.FunctionApp,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    on_startup: Callable[[list[Function]], Awaitable[None]] | None = None,
) -> Starlette:
    """The HTTP functions as a Starlette app; `on_startup` gets the whole function table (the timer and bus
    triggers are started from it, see triggers.py)."""
    functions = function_app.get_functions()  # may be called only once per app

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if on_startup is not None:
            await on_startup(functions)
        yield
        if on_shutdown is not None:
            await on_shutdown()

    return Starlette(routes=http_routes(functions), lifespan=lifespan)
