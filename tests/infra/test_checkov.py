"""checkov (pinned, in its own venv `.local/checkov-venv` made by `make checkov`: its dependencies conflict
with the app's pins) on both flavours: no failed check that is not waived in infra/checkov-waivers.json with a
reason, no parsing error, and no waiver that no longer fails anywhere (stale). Offline (--skip-download).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import BICEP, INFRA, ROOT, TERRAFORM

CHECKOV = ROOT / ".local" / "checkov-venv" / "bin" / "checkov"
WAIVERS: dict[str, str] = json.loads((INFRA / "checkov-waivers.json").read_text())


def run_checkov(directory: Path, framework: str) -> dict[str, Any]:
    if not CHECKOV.is_file():
        pytest.fail(f"{CHECKOV} is missing: run `make checkov` (make test does)")
    done = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", framework, "--skip-download", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.stdout.strip(), f"checkov printed nothing: {done.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture(scope="module")
def reports() -> dict[str, dict[str, Any]]:
    return {"bicep": run_checkov(BICEP, "bicep"), "terraform": run_checkov(TERRAFORM, "terraform")}


def test_every_waiver_has_a_reason() -> None:
    for check, reason in WAIVERS.items():
        assert check.startswith(("CKV_", "CKV2_")) and len(reason) > 40, (check, reason)


@pytest.mark.parametrize("flavour", ["bicep", "terraform"])
def test_no_unwaived_failure(reports: dict[str, dict[str, Any]], flavour: str) -> None:
    report = reports[flavour]
    assert report["summary"]["parsing_errors"] == 0, f"checkov could not parse part of {flavour}"
    assert report["summary"]["resource_count"] > 20
    failed = [
        f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
        for f in report["results"]["failed_checks"]
        if f["check_id"] not in WAIVERS
    ]
    assert not failed, f"{flavour}: failed checks not waived in infra/checkov-waivers.json:\n" + "\n".join(failed)


def test_no_stale_waiver(reports: dict[str, dict[str, Any]]) -> None:
    failing = {f["check_id"] for r in reports.values() for f in r["results"]["failed_checks"]}
    stale = sorted(set(WAIVERS) - failing)
    assert not stale, f"waivers of checks that no longer fail (remove them): {stale}"
