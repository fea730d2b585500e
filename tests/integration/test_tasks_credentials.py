"""A task's credentials for other registries (`credentials.customRegistries`) over HTTP against the session
devhost: sealed at rest and in the runs it schedules, shown only by listDetails, merged by PATCH as ACR does
(a login server given as null goes); bad shapes refused with 400; the auth file a run gets (0600, the other
registry's entry beside the run token's); Key Vault references resolved only through the operator's file.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import httpx
import pytest

from services.management.access import assign_role
from services.management.registries import create_registry
from services.platform.secrets import SecretBox, SecretKey
from services.tasks.credentials import CredentialsUnavailable, VaultResolver, resolve_credentials
from services.tasks.execution import registry_files
from services.tasks.scheduling import seal_credentials
from services.tasks.store import RunStore
from tests.conftest import Devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, unique_registry_name

pytestmark = pytest.mark.integration

API = {"api-version": "2025-03-01-preview"}
VAULT = "https://team-vault.vault.azure.net/secrets/pull-password"


def _opaque(value: str) -> dict[str, str]:
    return {"type": "Opaque", "value": value}


def _task(credentials: object) -> dict[str, object]:
    step = {"type": "EncodedTask", "encodedTaskContent": base64.b64encode(b"steps:\n  - cmd: alpine echo\n").decode()}
    return {"location": "westeurope", "properties": {"step": step, "credentials": credentials}}


async def test_credentials_are_sealed_shown_only_in_details_and_merged(
    devhost: Devhost, stores: Stores, entra_issuer: TestIssuer
) -> None:
    registry, owner = unique_registry_name(), str(uuid.uuid4())
    await create_registry(stores.metadata, stores.blobs, stores.settings, registry, "Premium")
    await assign_role(stores.metadata, registry, owner, "Owner", tenant=entra_issuer.tenant)
    base = (
        f"{devhost.url}/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-rg/providers/"
        f"Microsoft.ContainerRegistry/registries/{registry}/tasks"
    )
    headers = {"Authorization": "Bearer " + entra_issuer.token(owner)}
    credentials = {
        "customRegistries": {
            "docker.io": {"userName": _opaque("hub-user"), "password": _opaque("hub-pa55word")},
            "ghcr.io": {"userName": _opaque("gh-user"), "password": {"type": "Vaultsecret", "value": VAULT}},
        }
    }
    async with httpx.AsyncClient(timeout=30, headers=headers, params=API) as http:
        created = await http.put(f"{base}/mirror", json=_task(credentials))
        assert created.status_code == 201, created.text
        shown = created.json()["properties"]["credentials"]["customRegistries"]
        assert shown["docker.io"]["password"]["value"] is None and shown["ghcr.io"]["password"]["value"] == VAULT
        details = (await http.post(f"{base}/mirror/listDetails")).json()["properties"]["credentials"]
        assert details["customRegistries"]["docker.io"]["password"]["value"] == "hub-pa55word"
        raw = await stores.metadata.read("registries", "task:mirror", registry)
        assert raw is not None and "hub-pa55word" not in json.dumps(raw) and "hub-user" not in json.dumps(raw)
        run = await http.post(
            f"{base.removesuffix('/tasks')}/scheduleRun",
            json={"type": "TaskRunRequest", "taskId": created.json()["id"]},
        )
        assert run.status_code == 200, run.text
        doc = await RunStore(stores.metadata).get(registry, run.json()["name"])
        assert doc is not None and set(doc.customRegistries) == {"docker.io", "ghcr.io"}
        assert "credentials" not in doc.request and "hub-pa55word" not in doc.model_dump_json()  # sealed to the run
        await http.post(f"{base.removesuffix('/tasks')}/runs/{doc.runId}/cancel")  # no runner here
        merged = await http.patch(f"{base}/mirror", json={"properties": {"credentials": {"customRegistries": {
            "docker.io": None, "quay.io": {"userName": _opaque("q"), "password": _opaque("q-pass")},
        }}}})  # fmt: skip
        assert merged.status_code == 200, merged.text
        assert set(merged.json()["properties"]["credentials"]["customRegistries"]) == {"ghcr.io", "quay.io"}
        bad: list[tuple[object, str]] = [
            ({"customRegistries": {"docker.io": {"identity": "[system]"}}}, "managed identity"),
            ({"customRegistries": {"docker.io": {"userName": _opaque("u")}}}, "userName and password"),
            ({"customRegistries": {"https://docker.io/x": {"userName": _opaque("u"), "password": _opaque("p")}}},
             "login server"),
            ({"customRegistries": {"docker.io": {"userName": _opaque("u"),
              "password": {"type": "Vaultsecret", "value": "http://169.254.169.254/x"}}}}, "Key Vault secret URI"),
        ]  # fmt: skip
        for body, reason in bad:
            refused = await http.put(f"{base}/refused", json=_task(body))
            assert refused.status_code == 400 and reason in refused.text, refused.text


def test_a_runs_auth_file_and_the_vault_resolver(tmp_path: Path) -> None:
    box = SecretBox([SecretKey.generate()])
    sealed = seal_credentials(
        {
            "other.example:5001": {"userName": _opaque("u1"), "password": _opaque("p1")},
            "vaulted.example": {"userName": _opaque("u2"), "password": {"type": "Vaultsecret", "value": VAULT}},
        },
        box,
        "task-run:r:cb1",
    )
    with pytest.raises(CredentialsUnavailable, match="Key Vault is not reachable"):
        resolve_credentials(sealed, box, "task-run:r:cb1", VaultResolver(""))
    table = tmp_path / "vault.json"
    with pytest.raises(CredentialsUnavailable, match="cannot be read"):
        resolve_credentials(sealed, box, "task-run:r:cb1", VaultResolver(str(table)))
    table.write_text(json.dumps({VAULT: "from-the-vault"}))
    resolved = resolve_credentials(sealed, box, "task-run:r:cb1", VaultResolver(str(table)))
    assert resolved == {"other.example:5001": ("u1", "p1"), "vaulted.example": ("u2", "from-the-vault")}
    missing = {"x.example": {"userName": _opaque("u"), "password": {"type": "Vaultsecret", "value": VAULT + "2"}}}
    with pytest.raises(CredentialsUnavailable, match="is not in TASKS_VAULT_SECRETS_FILE"):
        resolve_credentials(seal_credentials(missing, box, "c"), box, "c", VaultResolver(str(table)))
    # sealed to the run: another run's context does not open them
    with pytest.raises(ValueError):
        resolve_credentials(sealed, box, "task-run:r:cb2", VaultResolver(str(table)))
    files = registry_files(
        tmp_path, "mine.azurecr.io", "mine.azurecr.io", False, "run-token", resolved, frozenset({"other.example:5001"})
    )
    assert files.auth_file.stat().st_mode & 0o777 == 0o600
    auths = json.loads(files.auth_file.read_text())["auths"]
    assert base64.b64decode(auths["other.example:5001"]["auth"]).decode() == "u1:p1"
    assert set(auths) == {"mine.azurecr.io", "other.example:5001", "vaulted.example"}
    assert files.other_registry("other.example:5001/team/app:1") == "other.example:5001"
    assert files.other_registry("elsewhere.example/app:1") is None
    assert 'location = "other.example:5001"\ninsecure = true' in files.registries_conf.read_text()
    assert "vaulted.example" not in files.registries_conf.read_text()  # HTTPS, as every registry not listed
