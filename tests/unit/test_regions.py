"""Several regions locally (`make run REGIONS=...`): the Azurite account of each region, the settings a
geo-replicated devhost gets, and the REGION_STORAGE setting's validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.devhost.__main__ import _regions
from services.devhost.stack import LocalStack, region_accounts
from services.platform.settings import Settings
from services.replication.regions import RegionalStorage, regional_settings


def test_the_first_region_keeps_the_default_account_and_each_other_gets_its_own() -> None:
    assert region_accounts(["westeurope", "eastus", "japaneast"]) == {
        "westeurope": "devstoreaccount1",
        "eastus": "acreastus",
        "japaneast": "acrjapaneast",
    }


def test_a_stack_without_regions_sets_nothing_new(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, azurite_blob_port=1, azurite_queue_port=2, azurite_table_port=3, cosmos_port=4)
    assert stack.region_env() == {}
    assert "REGION" not in stack.env() and "REGION_STORAGE" not in stack.env()


def test_a_regional_stack_names_this_instance_region_and_every_account(tmp_path: Path) -> None:
    stack = LocalStack(
        tmp_path, azurite_blob_port=10500, azurite_queue_port=2, azurite_table_port=3, cosmos_port=4,
        regions=("westeurope", "eastus"),
    )  # fmt: skip
    env = stack.region_env()
    assert env["REGION"] == "westeurope"
    storage = json.loads(env["REGION_STORAGE"])
    assert "AccountName=devstoreaccount1;" in storage["westeurope"]
    assert "BlobEndpoint=http://127.0.0.1:10500/acreastus;" in storage["eastus"]
    settings = Settings(region=env["REGION"], region_storage=env["REGION_STORAGE"])
    assert settings.region_accounts() == storage


def test_regions_given_to_make_run_are_azure_regions_without_repeats() -> None:
    assert _regions("West Europe, eastus,,eastus ,japaneast") == ["westeurope", "eastus", "japaneast"]
    assert _regions("") == []
    with pytest.raises(SystemExit, match="mars"):
        _regions("westeurope,mars")


@pytest.mark.parametrize("value", ["{", "[]", '{"eastus": 1}', '"eastus"'])
def test_a_broken_region_map_stops_the_instance_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match="REGION_STORAGE"):
        Settings(region_storage=value)


def test_a_region_account_is_a_connection_string_locally_and_an_account_url_in_azure() -> None:
    base = Settings()
    local = regional_settings(base, "DefaultEndpointsProtocol=http;AccountName=acreastus;AccountKey=k;")
    assert local.blob_connection_string.startswith("DefaultEndpointsProtocol") and local.blob_account_url == ""
    azure = regional_settings(base, "https://acreastus.blob.core.windows.net")
    assert azure.blob_account_url == "https://acreastus.blob.core.windows.net" and azure.blob_connection_string == ""


def test_regions_share_an_account_only_without_a_map() -> None:
    single = RegionalStorage(Settings(), local=None)  # type: ignore[arg-type]
    assert single.regions == [] and single.same_account("westeurope", "eastus") and single.has_storage("eastus")
    geo = RegionalStorage(
        Settings(region="westeurope", region_storage=json.dumps({"westeurope": "a", "eastus": "b"})),
        local=None,  # type: ignore[arg-type]
    )
    assert geo.regions == ["westeurope", "eastus"] and not geo.same_account("westeurope", "eastus")
    assert geo.has_storage("East US") and not geo.has_storage("japaneast")


def test_the_replication_table_shows_the_backfill() -> None:
    from services.cli.replication_commands import replication_view

    syncing = {
        "name": "eastus",
        "location": "eastus",
        "properties": {
            "provisioningState": "Succeeded",
            "status": {"displayStatus": "Syncing"},
            "backfill": {"done": 120, "total": 200},
        },
    }
    [row] = replication_view(syncing)
    assert row["Status"] == "Syncing" and row["Backfill"] == "120/200"
    assert replication_view([{"name": "westeurope", "properties": {}}])[0]["Backfill"] == ""
