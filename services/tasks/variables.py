"""Run variables, as ACR Tasks substitutes them in image names and task files: `{{.Run.ID}}`,
`{{.Run.Registry}}`, `{{.Run.RegistryName}}`, `{{.Run.Date}}`, `{{.Run.OS}}`, `{{.Run.Architecture}}`,
`{{.Run.Commit}}`, `{{.Run.Branch}}` and `{{.Values.<name>}}`; `$Registry` is the registry's login server.
An unknown variable is an error that names it (never left in place or silently emptied).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

_TEMPLATE = re.compile(r"\{\{\s*\.(Run|Values)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ANY_TEMPLATE = re.compile(r"\{\{.*?\}\}")
_REGISTRY_ALIAS = re.compile(r"\$Registry\b")


class VariableUnknown(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RunVariables:
    run_id: str
    login_server: str
    registry_name: str
    os: str = "linux"
    architecture: str = "amd64"
    commit: str = ""
    branch: str = ""
    date: datetime = field(default_factory=lambda: datetime.now(UTC))
    values: dict[str, str] = field(default_factory=dict)

    def run_values(self) -> dict[str, str]:
        return {
            "ID": self.run_id,
            "Registry": self.login_server,
            "RegistryName": self.registry_name,
            "Date": self.date.strftime("%Y%m%d-%H%M%Sz"),  # ACR's format
            "OS": self.os,
            "Architecture": self.architecture,
            "Commit": self.commit,
            "Branch": self.branch,
            "SharedVolume": "/acb/home",
        }


def render(text: str, variables: RunVariables) -> str:
    """`text` with every run variable substituted; VariableUnknown naming the first unknown one."""
    run = variables.run_values()

    def value(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        table = run if kind == "Run" else variables.values
        if name not in table:
            raise VariableUnknown(f"unknown variable {{{{.{kind}.{name}}}}}")
        return table[name]

    rendered = _TEMPLATE.sub(value, text)
    leftover = _ANY_TEMPLATE.search(rendered)
    if leftover is not None:
        raise VariableUnknown(f"unknown template {leftover.group(0)[:80]}")
    return _REGISTRY_ALIAS.sub(variables.login_server, rendered)
