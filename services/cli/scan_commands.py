"""`acr scan show|run <image>`: an image's scan state (the `scan` extension field of `/acr/v1`'s manifest
attributes) and a rescan asked for (`POST /acr/v1/<name>/_manifests/<digest>/_scan`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.cli.dataplane import RegistryClient
from services.cli.output import OutputOption, QueryOption
from services.cli.repository_commands import Image
from services.cli.session import PasswordOption, RegistryNameOption, ResourceGroupOption, UsernameOption, session_of

scan_app = typer.Typer(help="Image scans: state, findings and rescans.", no_args_is_help=True)

ImageArgument = Annotated[str, typer.Argument(help="repository:tag or repository@sha256:...")]


def _digest(client: RegistryClient, image: Image) -> str:
    if image.digest:
        return image.digest
    body = client.call("GET", image.path, f"repository:{image.repository}:metadata_read").json()
    return str(body["tag"]["digest"])


def scan_view(result: Any) -> list[dict[str, Any]]:
    """One row: the image, the state and the counts per severity."""
    scan = result.get("scan") or {}
    row: dict[str, Any] = {"Image": result.get("image"), "State": scan.get("state")}
    for severity, count in (scan.get("counts") or {}).items():
        row[severity.capitalize()] = count
    if scan.get("worst"):
        row["Worst"] = f"{scan['worst'].get('id')} ({scan['worst'].get('severity')})"
    if scan.get("reason"):
        row["Reason"] = scan["reason"]
    return [row]


@scan_app.command("show")
def show(
    ctx: typer.Context,
    image: ImageArgument,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Show an image's scan: queued, scanning, done (counts per severity, the SBOM's and the report's
    digests) or failed (with the reason)."""
    parsed = Image(image)
    client = session_of(ctx).data_plane(name, resource_group, username, password)
    digest = _digest(client, parsed)
    path = f"/acr/v1/{parsed.repository}/_manifests/{digest}"
    manifest = client.call("GET", path, f"repository:{parsed.repository}:metadata_read").json()["manifest"]
    result = {"image": f"{parsed.repository}@{digest}", "scan": manifest.get("scan")}
    session_of(ctx).emit(result, output, query, scan_view)


@scan_app.command("run")
def run(
    ctx: typer.Context,
    image: ImageArgument,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Scan an image again (its layers are read again); `acr scan show` follows it."""
    parsed = Image(image)
    client = session_of(ctx).data_plane(name, resource_group, username, password)
    digest = _digest(client, parsed)
    path = f"/acr/v1/{parsed.repository}/_manifests/{digest}/_scan"
    body = client.call("POST", path, f"repository:{parsed.repository}:metadata_write").json()
    session_of(ctx).emit({"image": f"{parsed.repository}@{digest}", "scan": body.get("scan")}, output, query, scan_view)
