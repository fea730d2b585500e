"""The function table. Each function is a few lines that hand the trigger to a service.

HTTP functions use the FastAPI HTTP extension (`azurefunctions-extensions-http-fastapi`), which gives true
request and response streaming under the Functions host, so layers stream to Blob Storage instead of being
buffered. Locally, `services/devhost` reads this same table and serves it with uvicorn.

The whole `/v2/` API is one function: repository names contain slashes, and the host's route templates only
allow a catch-all as the last segment, so `/v2/<name>/blobs/...` cannot be told from
`/v2/<name>/manifests/...` by a template. The routing happens in `services/registry/app.py`.
"""

from __future__ import annotations

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from services.auth.functions import bp as auth_functions
from services.events.functions import bp as events_functions
from services.management.functions import bp as management_functions
from services.platform.health import health_probe
from services.platform.metrics_endpoint import metrics_response
from services.platform.settings import get_settings
from services.platform.telemetry import configure_telemetry, observed_http
from services.registry.app import registry_api
from services.replication.functions import bp as replication_functions
from services.scanning.functions import bp as scanning_functions
from services.tasks.functions import bp as tasks_functions
from services.webhooks.functions import bp as webhooks_functions

configure_telemetry(get_settings())  # traces and metrics, once per process; off unless a setting turns it on

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(events_functions)  # relay_outbox (timer)
app.register_functions(webhooks_functions)  # deliver_webhooks (Service Bus topic subscription "webhooks")
app.register_functions(replication_functions)  # replicate_images (Service Bus topic subscription "replication")
app.register_functions(management_functions)  # management_arm: the ARM-shaped API under /subscriptions/
app.register_functions(auth_functions)  # /oauth2/token, /oauth2/exchange
app.register_functions(scanning_functions)  # scan_images (subscription "scanning"), rescans, re-match (timers)
app.register_functions(tasks_functions)  # relay_runs (timer): runs written but not yet on the task-runs queue

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@app.route(route="v2/{*path}", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
async def registry_v2(req: Request) -> Response:
    """The OCI Distribution API (`/v2/`)."""
    return await registry_api().handle(req)


@app.route(route="acr/v1/{*path}", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
async def registry_acr_v1(req: Request) -> Response:
    """ACR's metadata API (`/acr/v1/`: repositories, tags, manifests and their locks), through the same
    dispatcher as `/v2/` (registry by Host, authorization, errors)."""
    return await registry_api().handle(req)


@app.route(route="health/{probe}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: Request) -> Response:
    """Probes for load balancers, no credentials: `/health/live`, `/health/ready` (Cosmos DB and Storage)."""
    readiness = registry_api().readiness
    return await observed_http(req, lambda r: health_probe(r, readiness), route=lambda: "/health/{probe}")


@app.route(route="metrics", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def metrics(req: Request) -> Response:
    """Prometheus text (METRICS_ENDPOINT; loopback only, or a bearer token: services/platform/metrics_endpoint.py)."""
    return metrics_response(req, get_settings())
