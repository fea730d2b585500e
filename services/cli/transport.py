"""HTTP for `acr`: one client, every failure turned into a `CliError` with the right exit code.

The services answer errors in two shapes, and both become one line naming the service's own code:
ARM's `{"error": {"code", "message"}}` (management API) and the OCI/ACR `{"errors": [{"code", "message"}]}`
(`/v2/`, `/acr/v1/`, `/oauth2/`).
"""

from __future__ import annotations

from typing import Any

import httpx

from services.cli.errors import CliError, ExitCode, exit_code_for_status

TIMEOUT = httpx.Timeout(30.0, connect=10.0)
USER_AGENT = "acr-cli/0.1 (acr-serverless)"


def new_client() -> httpx.Client:
    # Redirects are not followed: every API here answers in place, and a redirect would carry the bearer
    # token to wherever it points.
    return httpx.Client(timeout=TIMEOUT, follow_redirects=False, headers={"User-Agent": USER_AGENT})


def send(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, url, **kwargs)
    except httpx.TimeoutException as error:
        raise CliError(ExitCode.UNAVAILABLE, f"{method} {_origin(url)} timed out ({type(error).__name__})") from error
    except httpx.TransportError as error:
        raise CliError(ExitCode.UNAVAILABLE, f"cannot reach {_origin(url)}: {error or type(error).__name__}") from error


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode()}"


def api_error(response: httpx.Response, what: str = "") -> CliError:
    """The error a failed answer stands for: the service's code and message, the status's exit code."""
    code, message = _error_of(response)
    if not message:
        message = f"{response.status_code} {response.reason_phrase}".strip()
    if what:
        message = f"{what}: {message}"
    return CliError(exit_code_for_status(response.status_code), message, code)


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        body: Any = response.json()
    except ValueError:
        text = response.text.strip().splitlines()
        return "", text[0][:300] if text else ""
    if isinstance(body, dict):
        arm = body.get("error")
        if isinstance(arm, dict):
            return str(arm.get("code", "")), str(arm.get("message", ""))
        oci = body.get("errors")
        if isinstance(oci, list) and oci and isinstance(oci[0], dict):
            first = oci[0]
            return str(first.get("code", "")), str(first.get("message", ""))
    return "", ""


def json_of(response: httpx.Response) -> Any:
    """The body of a successful answer; an empty body is None."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as error:
        raise CliError(
            ExitCode.UNAVAILABLE, f"the service answered {response.status_code} with a body that is not JSON"
        ) from error
