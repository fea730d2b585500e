"""`acr`'s output: --output json|table|tsv|none and --query (JMESPath), as pure functions of the data."""

from __future__ import annotations

import json

import pytest
import typer

from services.cli.errors import CliError, ExitCode, exit_code_for_status
from services.cli.output import OutputFormat, compile_query, format_table, render, table_rows, tsv_lines
from services.cli.registry_commands import registry_view, usage_view
from services.cli.repository_commands import attributes_view

REGISTRIES = [
    {
        "id": "/subscriptions/s1/resourceGroups/team-rg/providers/Microsoft.ContainerRegistry/registries/teamreg01",
        "name": "teamreg01",
        "location": "westeurope",
        "sku": {"name": "Standard", "tier": "Standard"},
        "tags": {"env": "dev"},
        "properties": {"loginServer": "teamreg01.azurecr.localhost", "adminUserEnabled": True},
    },
    {
        "id": "/subscriptions/s1/resourceGroups/ops/providers/Microsoft.ContainerRegistry/registries/opsreg001",
        "name": "opsreg001",
        "location": "northeurope",
        "sku": {"name": "Premium", "tier": "Premium"},
        "tags": {},
        "properties": {"loginServer": "opsreg001.azurecr.localhost", "adminUserEnabled": False},
    },
]


def test_json_is_indented_and_round_trips() -> None:
    text = render(REGISTRIES, OutputFormat.JSON)
    assert json.loads(text) == REGISTRIES and text.endswith("\n") and '\n  {\n    "id"' in text


def test_query_applies_before_the_format() -> None:
    assert json.loads(render(REGISTRIES, OutputFormat.JSON, "[].name")) == ["teamreg01", "opsreg001"]
    assert render(REGISTRIES, OutputFormat.TSV, "[?sku.name=='Premium'].properties.loginServer") == (
        "opsreg001.azurecr.localhost\n"
    )
    assert json.loads(render(REGISTRIES[0], OutputFormat.JSON, "{n: name, sku: sku.name}")) == {
        "n": "teamreg01",
        "sku": "Standard",
    }


def test_a_null_result_or_none_prints_nothing() -> None:
    assert render(None, OutputFormat.JSON) == ""
    assert render(REGISTRIES, OutputFormat.TABLE, "[0].nothing") == ""
    assert render(REGISTRIES, OutputFormat.NONE) == ""


def test_table_of_objects_keeps_scalar_fields_with_headings() -> None:
    text = render(
        REGISTRIES, OutputFormat.TABLE, "[].{name: name, location: location, admin: properties.adminUserEnabled}"
    )
    assert text.splitlines() == [
        "Name       Location     Admin",
        "---------  -----------  -----",
        "teamreg01  westeurope   True",
        "opsreg001  northeurope  False",
    ]


def test_table_leaves_nested_values_out() -> None:
    rows = table_rows({"name": "a", "sku": {"name": "Basic"}, "tags": ["x"], "count": 2, "none": None})
    assert rows == [{"Name": "a", "Count": 2, "None": None}]


def test_table_of_plain_values_is_one_result_column() -> None:
    assert render(["team/app", "base"], OutputFormat.TABLE).splitlines() == ["Result", "--------", "team/app", "base"]
    assert format_table([]) == ""


def test_the_commands_table_view_is_used_only_without_a_query() -> None:
    table = render(REGISTRIES, OutputFormat.TABLE, None, registry_view).splitlines()
    assert table[0].split() == [
        "Name",
        "ResourceGroup",
        "Location",
        "Sku",
        "LoginServer",
        "CreationDate",
        "AdminEnabled",
    ]
    assert table[2].split() == ["teamreg01", "team-rg", "westeurope", "Standard", "teamreg01.azurecr.localhost", "True"]
    queried = render(REGISTRIES, OutputFormat.TABLE, "[].name", registry_view).splitlines()
    assert queried == ["Result", "---------", "teamreg01", "opsreg001"]


def test_usage_and_attribute_views() -> None:
    usages = {"value": [{"name": "Webhooks", "limit": 10, "currentValue": 1, "unit": "Count"}]}
    assert render(usages, OutputFormat.TABLE, None, usage_view).splitlines()[2].split() == [
        "Webhooks",
        "10",
        "1",
        "Count",
    ]
    tag = {
        "registry": "r.azurecr.localhost",
        "imageName": "team/app",
        "tag": {"name": "v1", "digest": "sha256:ab", "changeableAttributes": {"writeEnabled": False}},
    }
    assert attributes_view(tag) == [
        {"Repository": "team/app", "Name": "v1", "Digest": "sha256:ab", "WriteEnabled": False}
    ]


def test_tsv_is_one_line_per_item_with_stable_columns() -> None:
    assert tsv_lines(REGISTRIES[0]) == [
        "/subscriptions/s1/resourceGroups/team-rg/providers/Microsoft.ContainerRegistry/registries/teamreg01\t"
        "teamreg01\twesteurope\t\t\t"
    ]
    rows = render(REGISTRIES, OutputFormat.TSV, "[].[name, sku.name, properties.adminUserEnabled]")
    assert rows == "teamreg01\tStandard\tTrue\nopsreg001\tPremium\tFalse\n"
    assert tsv_lines([{"a": None, "b": [1, 2, 3], "c": "x\ty"}]) == ["\t3\tx y"]  # a tab inside a value is a space


def test_a_bad_query_is_a_usage_error() -> None:
    assert compile_query("[].name") == "[].name"
    assert compile_query(None) is None
    with pytest.raises(typer.BadParameter, match="not a JMESPath expression"):
        compile_query("[?name==")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, ExitCode.NOT_FOUND),
        (400, ExitCode.BAD_INPUT),
        (405, ExitCode.BAD_INPUT),
        (409, ExitCode.BAD_INPUT),
        (401, ExitCode.AUTH),
        (403, ExitCode.AUTH),
        (429, ExitCode.UNAVAILABLE),
        (500, ExitCode.UNAVAILABLE),
        (503, ExitCode.UNAVAILABLE),
    ],
)
def test_exit_codes_follow_the_status(status: int, code: ExitCode) -> None:
    assert exit_code_for_status(status) is code


def test_an_error_is_one_line_with_the_service_code() -> None:
    error = CliError(ExitCode.NOT_FOUND, "The Resource 'x'\nwas not found.", "ResourceNotFound")
    assert error.line() == "ERROR: (ResourceNotFound) The Resource 'x' was not found."
    assert CliError(ExitCode.BAD_INPUT, "no endpoint").line() == "ERROR: no endpoint"
