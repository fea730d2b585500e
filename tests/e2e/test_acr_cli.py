"""`acr`, the installed console script, driven as a user would against the session devhost: a registry from
creation to deletion (json, table, tsv, --query), its webhooks, scope maps and tokens, `acr login` followed
by real skopeo pushes that use only the auth file it wrote, repository commands with a lock, the delete's
progress on a terminal, and the exit codes scripts rely on.

The principal is fresh and Owner of a fresh subscription (as in test_arm_sdk.py); its Entra token comes from
the session's test issuer through ACR_TOKEN. The registries it makes there inherit that role, data plane
included, so `acr login` needs nothing more.

`<name>.azurecr.localhost` does not resolve on every machine; skopeo reaches it through the devhost used as
its HTTP proxy (HTTP_PROXY), which serves absolute-form requests by their Host like any other.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.devhost.stack import free_port
from services.management.access import assign_scope_role
from services.platform.cosmos import Cosmos
from tests.conftest import Devhost
from tests.e2e.clients import ContainersConfig, Skopeo, build_single_platform_image
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import settings_from_env

ACR = Path(sys.executable).parent / "acr"
GROUP = "cli-rg"


@dataclass(frozen=True)
class Principal:
    subscription: str
    object_id: str
    token: str


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


Acr = Callable[..., Result]


async def _owner_of(env: dict[str, str], subscription: str, principal: str, tenant: str) -> None:
    cosmos = Cosmos(settings_from_env(env))
    await cosmos.open()
    try:
        await assign_scope_role(cosmos, f"/subscriptions/{subscription}", principal, "Owner", tenant=tenant)
    finally:
        await cosmos.close()


@pytest.fixture(scope="module")
def owner(devhost: Devhost, entra_issuer: TestIssuer) -> Principal:
    subscription, object_id = str(uuid.uuid4()), str(uuid.uuid4())
    asyncio.run(_owner_of(devhost.env, subscription, object_id, entra_issuer.tenant))
    return Principal(subscription, object_id, entra_issuer.token(object_id, lifetime=3600))


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """The test's environment without anything that would point acr elsewhere (ACR_*, a state dir, proxies)."""
    drop = ("ACR_", "STATE_DIR", "REGISTRY_AUTH_FILE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    return env | {"ACR_CONFIG": str(tmp_path / "acr-config.json"), "HOME": str(tmp_path)}


@pytest.fixture
def acr(devhost: Devhost, owner: Principal, tmp_path: Path) -> Acr:
    if not ACR.is_file():
        pytest.fail(f"{ACR} is missing: `make setup` installs the project (pip install -e .)", pytrace=False)
    base = _clean_env(tmp_path) | {
        "ACR_ENDPOINT": devhost.url,
        "ACR_SUBSCRIPTION": owner.subscription,
        "ACR_RESOURCE_GROUP": GROUP,
        "ACR_TOKEN": owner.token,
    }

    def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
        done = subprocess.run(
            [str(ACR), *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=base | (env or {}),
            cwd=tmp_path,  # no .local/credentials.json here: only what the test gives counts
            timeout=120,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return run


def _ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}: {result.stderr}"
    return result


def _on_a_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (where the spinner shows); stdout stays a pipe."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL, env=env, cwd=cwd
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    stdout = process.communicate(timeout=30)[0]
    os.close(leader)
    return process.returncode, stdout.decode(), seen.decode(errors="replace")


def test_acr_manages_a_registry_end_to_end(
    acr: Acr,
    devhost: Devhost,
    owner: Principal,
    skopeo: Skopeo,
    containers_config: ContainersConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "cli" + uuid.uuid4().hex[:12]
    assert _ok(acr("check-name", "-n", name)).json() == {"nameAvailable": True}

    created = _ok(acr("create", "-n", name, "--sku", "Basic", "--tags", "env=e2e"))
    resource = created.json()
    assert isinstance(resource, dict) and resource["sku"]["name"] == "Basic"
    assert created.stderr == ""  # no spinner when stderr is not a terminal
    login_server = resource["properties"]["loginServer"]
    assert login_server == f"{name}.azurecr.localhost"

    # list and show: json, table, tsv, --query
    table = _ok(acr("list", "-o", "table")).stdout.splitlines()
    assert table[0].split()[:4] == ["Name", "ResourceGroup", "Location", "Sku"]
    assert any(line.split()[:4] == [name, GROUP, "westeurope", "Basic"] for line in table[2:])
    assert _ok(acr("list", "--query", f"[?name=='{name}'].sku.name", "-o", "tsv")).stdout == "Basic\n"
    assert _ok(acr("show", "-n", name, "--query", "tags")).json() == {"env": "e2e"}

    # the tier, usage, a taken name
    assert _ok(acr("update", "-n", name, "--sku", "Standard", "--query", "sku.name")).json() == "Standard"
    usage = _ok(acr("show-usage", "-n", name, "-o", "table")).stdout.splitlines()
    assert usage[0].split() == ["Name", "Limit", "CurrentValue", "Unit"]
    assert {"Webhooks", "Tokens", "ScopeMaps"} <= {line.split()[0] for line in usage[2:]}
    assert _ok(acr("check-name", "-n", name, "--query", "reason")).json() == "AlreadyExists"

    # webhooks
    hook = _ok(acr("webhook", "create", "-n", "clihook1", "-r", name, "--uri", "https://hooks.example/acr",
                   "--actions", "push,delete")).json()  # fmt: skip
    assert isinstance(hook, dict) and hook["properties"]["actions"] == ["push", "delete"]
    assert _ok(acr("webhook", "list", "-r", name, "--query", "[].name", "-o", "tsv")).stdout == "clihook1\n"
    assert _ok(acr("webhook", "ping", "-n", "clihook1", "-r", name, "--query", "id", "-o", "tsv")).stdout.strip()

    # a scope map and a token on it, with passwords made for it
    _ok(acr("scope-map", "create", "-n", "cimap", "-r", name, "--repository", "team/app=content/read,content/write"))
    token = _ok(acr("token", "create", "-n", "cibot", "-r", name, "--scope-map", "cimap", "--no-passwords")).json()
    assert isinstance(token, dict) and token["properties"]["credentials"]["passwords"] == []
    generated = _ok(acr("token", "credential", "generate", "-n", "cibot", "-r", name, "--password1")).json()
    assert isinstance(generated, dict) and generated["username"] == "cibot"
    password = generated["passwords"][0]["value"]

    # acr login (the Entra principal: Owner of the subscription), then a real push with only the auth file
    auth_file = containers_config.directory / "auth.json"  # the file the skopeo fixture's REGISTRY_AUTH_FILE names
    login = _ok(acr("login", "-n", name, "--auth-file", str(auth_file)))
    port = devhost.host.rsplit(":", 1)[1]
    server = f"{login_server}:{port}"
    assert f"Login Succeeded: {server}" in login.stderr
    entry = json.loads(auth_file.read_text())["auths"][server]
    assert set(entry) == {"auth"} and (auth_file.stat().st_mode & 0o077) == 0
    for variable in ("http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HTTP_PROXY", devhost.url)
    layout, image = build_single_platform_image(tmp_path / "image", [2048], tag="v1")
    skopeo.copy(layout.reference("v1"), f"docker://{server}/team/app:v1", preserve_digests=True)

    # the token signs in too (its password traded for a refresh token, never written) and pushes where it may
    token_auth = tmp_path / "token-auth.json"
    _ok(acr("login", "-n", login_server, "-u", "cibot", "--password-stdin", "--auth-file", str(token_auth),
            stdin=password + "\n"))  # fmt: skip
    assert password not in token_auth.read_text()
    auth_file.write_text(token_auth.read_text())
    skopeo.copy(layout.reference("v1"), f"docker://{server}/team/app:v2", preserve_digests=True)

    # repositories: list, tags, manifests, a lock, untag
    assert _ok(acr("repository", "list", "-n", name)).json() == ["team/app"]
    assert _ok(acr("repository", "show-tags", "-n", name, "--repository", "team/app")).json() == ["v1", "v2"]
    manifests = _ok(acr("repository", "show-manifests", "-n", name, "--repository", "team/app")).json()
    assert isinstance(manifests, list) and manifests[0]["digest"] == image.manifest.digest
    assert sorted(manifests[0]["tags"]) == ["v1", "v2"]
    locked = _ok(acr("repository", "update", "-n", name, "--image", "team/app:v1", "--write-enabled", "false",
                     "--query", "tag.changeableAttributes.writeEnabled"))  # fmt: skip
    assert locked.json() is False
    refused = acr("repository", "untag", "-n", name, "--image", "team/app:v1")
    assert refused.code == 2 and refused.stderr.startswith("ERROR: (UNSUPPORTED)") and "writeEnabled" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1  # one line, no traceback
    _ok(acr("repository", "untag", "-n", name, "--image", "team/app:v2"))
    assert _ok(acr("repository", "show-tags", "-n", name, "--repository", "team/app")).json() == ["v1"]
    shown = _ok(acr("repository", "show", "-n", name, "--repository", "team/app", "-o", "table")).stdout
    assert "team/app" in shown and "TagCount" in shown

    # the image's scan state (no scanner runs in this suite: SCANNER_ENABLED is off) and a rescan asked for
    scan = _ok(acr("scan", "show", "-n", name, "team/app:v1")).json()
    assert scan == {"image": f"team/app@{image.manifest.digest}", "scan": {"state": "queued"}}
    rerun = _ok(acr("scan", "run", "-n", name, f"team/app@{image.manifest.digest}", "-o", "table")).stdout
    assert "queued" in rerun and image.manifest.digest in rerun
    assert acr("scan", "show", "-n", name, "team/app:nosuchtag").code == 1

    # delete, followed on a terminal
    env = _clean_env(tmp_path) | {
        "ACR_ENDPOINT": devhost.url,
        "ACR_SUBSCRIPTION": owner.subscription,
        "ACR_TOKEN": owner.token,
    }
    code, stdout, terminal = _on_a_terminal([str(ACR), "delete", "-n", name, "--yes"], env, tmp_path)
    assert code == 0 and stdout == ""
    assert f"Deleting registry {name}" in terminal and f"Deleted registry {name}" in terminal
    gone = acr("show", "-n", name)
    assert gone.code == 1 and gone.stderr.startswith("ERROR: (ResourceNotFound)")


def test_acr_exit_codes(acr: Acr, tmp_path: Path) -> None:
    missing = acr("show", "-n", "nosuchregistry" + uuid.uuid4().hex[:8])
    assert missing.code == 1 and missing.stderr.startswith("ERROR: (ResourceNotFound)")
    assert acr("repository", "list", "-n", "nosuchregistry" + uuid.uuid4().hex[:8]).code == 1

    unknown_sku = acr("create", "-n", "cli" + uuid.uuid4().hex[:12], "--sku", "Ultra")
    assert unknown_sku.code == 2 and unknown_sku.stderr.startswith("ERROR: (InvalidRequestContent)")
    short = acr("create", "-n", "ab", "--sku", "Basic")
    assert short.code == 2 and "InvalidResourceName" in short.stderr
    assert acr("list", "--query", "[?name==").code == 2  # a bad JMESPath expression: usage error, nothing sent
    assert acr("list", "--bogus").code == 2
    assert acr("repository", "update", "-n", "whatever1", "--repository", "x").code == 2  # nothing to change

    no_token = acr("list", env={"ACR_TOKEN": ""})
    assert no_token.code == 3 and "no management token" in no_token.stderr
    forged = acr("list", env={"ACR_TOKEN": "not-a-token"})
    assert forged.code == 3 and forged.stderr.startswith("ERROR: (InvalidAuthenticationToken)")

    down = acr("list", env={"ACR_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert down.code == 4 and down.stderr.startswith("ERROR: cannot reach http://127.0.0.1:")
    for result in (missing, unknown_sku, no_token, forged, down):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_acr_config_and_token_command(acr: Acr, devhost: Devhost, owner: Principal, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(owner.token + "\n")
    command = shlex.join([sys.executable, "-c", "import sys; print(open(sys.argv[1]).read().strip())", str(token_file)])
    unset = {"ACR_ENDPOINT": "", "ACR_SUBSCRIPTION": "", "ACR_RESOURCE_GROUP": "", "ACR_TOKEN": ""}
    _ok(acr("config", "set", f"endpoint={devhost.url}", f"subscription={owner.subscription}",
            f"resource-group={GROUP}", f"token-command={command}", "output=tsv", env=unset))  # fmt: skip
    shown = _ok(acr("config", "show", "-o", "json", env=unset)).json()
    assert isinstance(shown, dict)
    settings = shown["settings"]
    assert settings["endpoint"] == {"value": devhost.url, "source": "config file"}
    assert settings["token"] == {"value": "(hidden)", "source": "token-command (config file)"}
    assert settings["data-endpoint"]["value"] == devhost.url  # a loopback endpoint is the devhost: it serves both
    assert _ok(acr("list", "--query", "length(@)", env=unset)).stdout.strip().isdigit()  # output=tsv from config
    assert acr("config", "set", "colour=blue", env=unset).code == 2
    _ok(acr("config", "unset", "token-command", env=unset))
    assert acr("list", env=unset).code == 3


def test_acr_replication_commands(acr: Acr) -> None:
    name = "clirep" + uuid.uuid4().hex[:10]
    _ok(acr("create", "-n", name, "--sku", "Premium"))
    made = _ok(acr("replication", "create", "-r", name, "-l", "East US", "--tags", "team=geo")).json()
    assert isinstance(made, dict) and made["name"] == "eastus" and made["tags"] == {"team": "geo"}
    assert made["properties"]["status"]["displayStatus"] == "Ready"
    table = _ok(acr("replication", "list", "-r", name, "-o", "table")).stdout.splitlines()
    assert table[0].split()[:4] == ["Name", "Location", "ProvisioningState", "Status"]
    assert [line.split()[:2] for line in table[2:]] == [["westeurope", "westeurope"], ["eastus", "eastus"]]
    show = acr("replication", "show", "-r", name, "-n", "eastus", "--query", "properties.regionEndpointEnabled")
    assert _ok(show).json() is True
    off = acr("replication", "update", "-r", name, "-n", "eastus", "--region-endpoint-disabled", "--query",
              "properties.status.displayStatus")  # fmt: skip
    assert _ok(off).json() == "Disabled"
    home = acr("replication", "delete", "-r", name, "-n", "westeurope", "-y")
    assert home.code != 0 and "CannotDeleteHomeReplication" in home.stderr
    standard = "clistd" + uuid.uuid4().hex[:10]
    _ok(acr("create", "-n", standard, "--sku", "Standard"))
    refused = acr("replication", "create", "-r", standard, "-l", "eastus")
    assert refused.code != 0 and "RegistrySkuNotSupported" in refused.stderr
    _ok(acr("replication", "delete", "-r", name, "-n", "eastus", "-y"))
    assert _ok(acr("replication", "list", "-r", name, "--query", "[].name")).json() == ["westeurope"]
    _ok(acr("delete", "-n", name, "-y"))
    _ok(acr("delete", "-n", standard, "-y"))
