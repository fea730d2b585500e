"""`make package` builds a zip the Function App runs; here it is unpacked into a clean venv (nothing installed
but what the zip carries, on sys.path as the Python worker puts it) and indexed as the host does:
`app.get_functions()` must list every function with its trigger and bindings. A module missing from the
zip or requirements.txt, or a bad binding, fails here rather than in Azure. Wheels are reused from
.local/wheels (the first build downloads them: ~15 MB).
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from typing import Any

import pytest

from services.platform.settings import Settings
from tests.infra.conftest import ROOT, tunables

INDEX = """
import json, sys
sys.path[:0] = [sys.argv[1] + "/.python_packages/lib/site-packages", sys.argv[1]]
import function_app
out = []
for f in function_app.app.get_functions():
    described = json.loads(f.get_function_json())
    out.append({"name": f.get_function_name(), "bindings": described["bindings"]})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    work = tmp_path_factory.mktemp("package")
    archive = work / "function-app.zip"
    subprocess.run([sys.executable, str(ROOT / "infra" / "scripts" / "package.py"), "--out", str(archive)], check=True)
    app = work / "wwwroot"
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        assert "function_app.py" in names and "host.json" in names
        assert any(n.startswith(".python_packages/lib/site-packages/azure/functions/") for n in names)
        assert not any(n.startswith(("services/devhost/", "services/cli/", "tests/", ".venv/")) for n in names)
        opened.extractall(app)
    env = work / "venv"
    venv.EnvBuilder(with_pip=False, clear=True).create(env)
    done = subprocess.run(
        [str(env / "bin" / "python"), "-I", "-c", INDEX, str(app)],
        capture_output=True,
        text=True,
        cwd=app,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"indexing the package failed:\n{done.stderr[-4000:]}"
    functions: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return functions


def triggers(functions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f["name"]: next(b for b in f["bindings"] if b["direction"] == "IN" and "Trigger" in b["type"])
        for f in functions
    }


def test_every_function_is_indexed_with_its_trigger(indexed: list[dict[str, Any]]) -> None:
    found = triggers(indexed)
    assert {
        "registry_v2",
        "registry_acr_v1",
        "health",
        "metrics",
        "oauth2_token",
        "oauth2_exchange",
        "management_arm",
        "relay_outbox",
        "deliver_webhooks",
        "finish_registry_deletions",
    } <= set(found)
    assert found["registry_v2"]["type"] == "httpTrigger" and found["registry_v2"]["route"] == "v2/{*path}"
    assert found["relay_outbox"]["type"] == "timerTrigger"
    assert found["metrics"]["type"] == "httpTrigger" and found["metrics"]["route"] == "metrics"


def test_bus_triggers_use_provisioned_subscriptions(indexed: list[dict[str, Any]]) -> None:
    """Every Service Bus trigger names the provisioned topic, a provisioned subscription and the identity-based
    connection the infrastructure sets (SERVICEBUS_CONNECTION_STRING__fullyQualifiedNamespace)."""
    values = tunables()
    subscriptions = json.loads(values["BUS_SUBSCRIPTIONS"])
    bus = [t for t in triggers(indexed).values() if t["type"] == "serviceBusTrigger"]
    assert bus, "no Service Bus trigger indexed"
    for trigger in bus:
        assert trigger["topicName"] == values["BUS_TOPIC"] == Settings().bus_topic
        assert trigger["subscriptionName"] in subscriptions, (
            f"{trigger['subscriptionName']} is not a provisioned subscription (BUS_SUBSCRIPTIONS)"
        )
        assert trigger["connection"] == "SERVICEBUS_CONNECTION_STRING"
