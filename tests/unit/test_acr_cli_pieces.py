"""`acr`'s pure pieces besides output: config keys, the auth file, image references, scope map actions, where
a registry's data plane is reached."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from services.cli.authfile import default_auth_file, store_login
from services.cli.config import ConfigFile, changed_config, load_config, save_config
from services.cli.dataplane import address_of, is_loopback
from services.cli.errors import CliError, ExitCode
from services.cli.repository_commands import Image
from services.cli.token_commands import repository_actions


def test_config_set_validates_keys_and_values(tmp_path: Path) -> None:
    config = changed_config(ConfigFile(), {"endpoint": "http://127.0.0.1:5000/", "resource-group": "rg"})
    assert config.endpoint == "http://127.0.0.1:5000" and config.resource_group == "rg"
    path = tmp_path / "acr" / "config.json"
    save_config(path, config)
    assert json.loads(path.read_text()) == {"endpoint": "http://127.0.0.1:5000", "resource-group": "rg"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path) == config
    assert changed_config(config, {"resource-group": None}).resource_group is None  # unset
    for bad in ({"colour": "x"}, {"endpoint": "ftp://x"}, {"output": "yaml"}, {"endpoint": "http://h/path"}):
        with pytest.raises(CliError) as caught:
            changed_config(config, bad)
        assert caught.value.exit_code is ExitCode.BAD_INPUT


def test_auth_file_location_follows_the_clients_own_order(tmp_path: Path) -> None:
    assert default_auth_file({"REGISTRY_AUTH_FILE": "/a.json", "XDG_RUNTIME_DIR": "/run/u"}) == Path("/a.json")
    assert default_auth_file({"XDG_RUNTIME_DIR": "/run/u"}) == Path("/run/u/containers/auth.json")
    assert default_auth_file({"DOCKER_CONFIG": "/d"}) == Path("/d/config.json")
    assert default_auth_file({}) == Path.home() / ".docker" / "config.json"


def test_login_entry_is_added_beside_the_others(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"other:5000": {"auth": "eDp5"}}, "credsStore": "desktop"}))
    warnings = store_login(path, "reg.azurecr.localhost:5000", "00000000-0000-0000-0000-000000000000", "refresh")
    data = json.loads(path.read_text())
    assert data["auths"]["other:5000"] == {"auth": "eDp5"} and data["credsStore"] == "desktop"
    entry = base64.b64decode(data["auths"]["reg.azurecr.localhost:5000"]["auth"]).decode()
    assert entry == "00000000-0000-0000-0000-000000000000:refresh"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert warnings and "credential helper" in warnings[0]
    path.write_text("[]")
    with pytest.raises(CliError):
        store_login(path, "x", "u", "p")


@pytest.mark.parametrize(
    ("text", "repository", "tag", "digest"),
    [
        ("team/app:v1", "team/app", "v1", ""),
        ("team/app", "team/app", "latest", ""),
        ("team/app@sha256:abc", "team/app", "", "sha256:abc"),
        ("localhost:5000/app", "localhost:5000/app", "latest", ""),  # a colon before a slash is no tag
    ],
)
def test_image_references(text: str, repository: str, tag: str, digest: str) -> None:
    image = Image(text)
    assert (image.repository, image.tag, image.digest) == (repository, tag, digest)


def test_bad_image_references_are_bad_input() -> None:
    for text in (":v1", "app@nodigest"):
        with pytest.raises(CliError) as caught:
            Image(text)
        assert caught.value.exit_code is ExitCode.BAD_INPUT


def test_scope_map_repository_actions() -> None:
    assert repository_actions(["team/app=content/read,metadata/read", "base=content/write"]) == [
        "repositories/team/app/content/read",
        "repositories/team/app/metadata/read",
        "repositories/base/content/write",
    ]
    for bad in (["team/app"], ["team/app=content/fly"], ["=content/read"]):
        with pytest.raises(CliError):
            repository_actions(bad)


def test_data_plane_address() -> None:
    local = address_of("teamreg.azurecr.localhost", "http://127.0.0.1:5000")
    assert local.url("/v2/") == "http://127.0.0.1:5000/v2/"
    assert local.host == local.server == "teamreg.azurecr.localhost:5000"
    azure = address_of("teamreg.azurecr.io", None)
    assert (azure.base_url, azure.host, azure.server) == ("https://teamreg.azurecr.io", None, "teamreg.azurecr.io")
    assert is_loopback("http://127.0.0.1:5000") and is_loopback("http://localhost:1")
    assert not is_loopback("https://management.azure.com")
