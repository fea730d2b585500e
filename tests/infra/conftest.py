"""Readers of the two infrastructure flavours (parsed, never deployed: no Azure is reachable from tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP = INFRA / "bicep"
TERRAFORM = INFRA / "terraform"


def bicep_files() -> list[Path]:
    return sorted(BICEP.rglob("*.bicep"))


def terraform_files() -> list[Path]:
    return sorted(TERRAFORM.rglob("*.tf"))


def parse_bicep(path: Path) -> dict[str, Any]:
    parsed: dict[str, Any] = BicepParser().parse(file_path=path)
    return parsed


def unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of labels and string values ('"name"'); drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_terraform(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        parsed: dict[str, Any] = hcl2.load(handle)
    return parsed


@dataclass
class Declared:
    """What one flavour declares: resource declarations by type (a loop or a condition counts once) and
    the names of the roles it assigns."""

    resources: dict[str, int] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)

    def add(self, kind: str) -> None:
        self.resources[kind] = self.resources.get(kind, 0) + 1


def tunables() -> dict[str, str]:
    data: dict[str, str] = json.loads((INFRA / "app-settings.json").read_text())
    return data
