"""Build the zip a Function App runs: function_app.py, host.json, services/ and Linux wheels of the pinned
requirements for CPython 3.11 under .python_packages/lib/site-packages (what the Python worker adds to
sys.path). Wheels are downloaded once into .local/wheels and reused. `make package` runs this.

    python infra/scripts/package.py [--out dist/function-app.zip]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".local" / "wheels"
# The Functions Python 3.11 image is glibc-based x86_64 Linux.
PLATFORM = [
    "--only-binary=:all:",
    "--implementation=cp",
    "--python-version=3.11",
    "--platform=manylinux_2_28_x86_64",
    "--platform=manylinux_2_17_x86_64",
    "--platform=manylinux2014_x86_64",
]
APP_FILES = ["function_app.py", "host.json", "requirements.txt"]
# What the Function App does not run: the local host and the command line (their dependencies are not in
# requirements.txt), and bytecode caches.
EXCLUDED = {"devhost", "cli", "__pycache__"}


def pip(*args: str, check: bool = True) -> bool:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args]
    done = subprocess.run(command, check=check, capture_output=not check)
    return done.returncode == 0


def build(out: Path) -> Path:
    staging = out.with_suffix("")
    shutil.rmtree(staging, ignore_errors=True)
    site = staging / ".python_packages" / "lib" / "site-packages"
    site.mkdir(parents=True)
    requirements = str(ROOT / "requirements.txt")
    install = ("install", *PLATFORM, "--no-index", "--find-links", str(WHEELS), "--target", str(site))
    # From the wheels already downloaded (no index asked); download only what is missing, then again.
    if not pip(*install, "-r", requirements, check=False):
        pip("download", *PLATFORM, "--dest", str(WHEELS), "-r", requirements)
        shutil.rmtree(site)
        site.mkdir(parents=True)
        pip(*install, "-r", requirements)
    for name in APP_FILES:
        shutil.copy2(ROOT / name, staging / name)
    shutil.copytree(
        ROOT / "services",
        staging / "services",
        ignore=lambda folder, names: (
            [n for n in names if n in EXCLUDED or n.endswith(".pyc")]
            if Path(folder) == ROOT / "services"
            else [n for n in names if n == "__pycache__" or n.endswith(".pyc")]
        ),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(staging.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(staging).as_posix())
    temporary.replace(out)
    shutil.rmtree(staging)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "function-app.zip")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
