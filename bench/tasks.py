"""ACR Tasks figures on the local stack: the service's overhead on a quick build, and the runs one runner
sustains.

    .venv/bin/python -m bench.tasks [--builds 3] [--runs 8] [--concurrency 2]

Starts Azurite and the Cosmos DB emulator on free ports (state in a temporary folder), a devhost and one task
runner (`python -m services.tasks runner`) against them, and pushes a busybox base image. Then:

- `acr build` to image pushed: `acr build -t app:{{.Run.ID}} .` of a two-line Dockerfile (FROM the base, one
  RUN), wall time from the command's start to its exit (the run Succeeded and the image is in the registry),
  `--builds` times; beside it the same build and push with buildah by hand (a fresh containers storage each
  time, as the runner uses): the difference is what the service adds (upload, scheduling, queue, claim,
  token, log, status).
- runs per minute: `--runs` quick builds scheduled at once (one uploaded context), timed from the first
  scheduleRun to the last run finished, with `TASKS_CONCURRENCY=--concurrency`.

Not a test: no assertions on times, just the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = "benchtasks"
API = {"api-version": "2025-03-01-preview"}
BUSYBOX = Path("/bin/busybox")


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def buildah(storage: Path, *args: str) -> list[str]:
    return [
        "buildah",
        "--root",
        str(storage / "root"),
        "--runroot",
        str(storage / "run"),
        "--storage-driver",
        "vfs",
        *args,
    ]


def push_base(work: Path, address: str) -> None:
    storage = work / "base-storage"
    container = subprocess.run(
        buildah(storage, "from", "scratch"), check=True, capture_output=True, text=True
    ).stdout.strip()
    _run(buildah(storage, "copy", container, str(BUSYBOX), "/bin/busybox"))
    _run(buildah(storage, "copy", container, str(BUSYBOX), "/bin/sh"))
    _run(buildah(storage, "commit", container, "localhost/base:1"))
    _run(buildah(storage, "push", "--tls-verify=false", "localhost/base:1", f"docker://{address}/base:1"))


def by_hand(work: Path, context: Path, address: str, index: int) -> float:
    """buildah build + push, a fresh storage: what the runner runs, without the service around it."""
    storage = work / f"hand-{index}"
    started = time.perf_counter()
    _run(buildah(storage, "build", "--isolation", "chroot", "--tls-verify=false", "-t", "hand:latest", str(context)))
    _run(buildah(storage, "push", "--tls-verify=false", "hand:latest", f"docker://{address}/hand:{index}"))
    elapsed = time.perf_counter() - started
    shutil.rmtree(storage, ignore_errors=True)
    return elapsed


async def prepare(env: dict[str, str], principal: str, tenant: str) -> None:
    from services.management.access import assign_scope_role
    from services.management.dev_issuer import LOCAL_SUBSCRIPTION
    from services.platform.cosmos import Cosmos
    from services.platform.settings import Settings

    settings = Settings(**{k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields})
    cosmos = Cosmos(settings)
    await cosmos.open()
    try:
        await assign_scope_role(cosmos, f"/subscriptions/{LOCAL_SUBSCRIPTION}", principal, "Owner", tenant=tenant)
    finally:
        await cosmos.close()


def main(argv: list[str] | None = None) -> int:
    from services.devhost.stack import LocalStack, free_port
    from services.management import dev_issuer
    from services.management.dev_issuer import LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION

    parser = argparse.ArgumentParser(prog="python -m bench.tasks")
    parser.add_argument("--builds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as state, LocalStack.on_free_ports(Path(state) / "stack") as stack:
        work = Path(state)
        issuer = dev_issuer.load_or_create(work / "dev-issuer.json")
        port = free_port()
        address = f"127.0.0.1:{port}"
        env = (
            dict(os.environ)
            | stack.env()
            | {
                "API_PORT": str(port),
                "LOG_LEVEL": "warning",
                "DEFAULT_REGISTRY": REGISTRY,
                "DEFAULT_REGISTRY_AUTH_DISABLED": "true",  # the base push by hand needs no credentials
                "ENTRA_ISSUERS": dev_issuer.with_issuer("", issuer),
                "TASKS_REGISTRY_ADDRESS": address,
                "TASKS_WORK_DIR": str(work / "runner"),
                "TASKS_CONCURRENCY": str(args.concurrency),
                "TASKS_POLL_SECONDS": "0.5",
            }
        )
        os.environ.update(env)
        asyncio.run(prepare(env, issuer.principal, issuer.tenant))
        devhost = subprocess.Popen(
            [sys.executable, "-m", "services.devhost", "serve", "--port", str(port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        runner = subprocess.Popen(
            [sys.executable, "-m", "services.tasks", "runner"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"http://{address}/v2/", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            push_base(work, address)
            context = work / "context"
            context.mkdir()
            login_server = f"{REGISTRY}.azurecr.localhost"
            (context / "Dockerfile").write_text(f"FROM {login_server}/base:1\nRUN echo built > /built.txt\n")
            (work / "hand-context").mkdir()
            (work / "hand-context" / "Dockerfile").write_text(f"FROM {address}/base:1\nRUN echo built > /built.txt\n")
            cli_env = {k: v for k, v in env.items() if not k.startswith("ACR_")} | {
                "ACR_ENDPOINT": f"http://{address}",
                "ACR_SUBSCRIPTION": LOCAL_SUBSCRIPTION,
                "ACR_TOKEN": issuer.token(),
                "ACR_CONFIG": str(work / "acr.json"),
            }
            acr = [str(Path(sys.executable).with_name("acr")), "build", "-r", REGISTRY, "-g", LOCAL_RESOURCE_GROUP]
            ours: list[float] = []
            hand: list[float] = []
            for index in range(args.builds):
                started = time.perf_counter()
                _run([*acr, "-t", "app:{{.Run.ID}}", "--no-logs", str(context)], cli_env)
                ours.append(time.perf_counter() - started)
                hand.append(by_hand(work, work / "hand-context", address, index))
            per_minute = runs_per_minute(address, issuer.token(), context, args.runs)
        finally:
            for process in (runner, devhost):
                process.terminate()
                process.wait(60)
    print(f"acr build to image pushed, {args.builds} builds: median {statistics.median(ours):.2f} s "
          f"(each: {', '.join(f'{t:.2f}' for t in ours)})")  # fmt: skip
    print(f"buildah build + push by hand: median {statistics.median(hand):.2f} s "
          f"(each: {', '.join(f'{t:.2f}' for t in hand)})")  # fmt: skip
    print(f"service overhead (median difference): {statistics.median(ours) - statistics.median(hand):.2f} s")
    print(f"one runner, TASKS_CONCURRENCY={args.concurrency}: {per_minute:.1f} runs per minute ({args.runs} runs)")
    return 0


def runs_per_minute(address: str, token: str, context: Path, runs: int) -> float:
    """`runs` quick builds of one uploaded context scheduled at once; runs per minute until the last ends."""
    import io
    import tarfile

    from services.management.dev_issuer import LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION

    base = (
        f"http://{address}/subscriptions/{LOCAL_SUBSCRIPTION}/resourceGroups/{LOCAL_RESOURCE_GROUP}"
        f"/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}"
    )
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=60, params=API) as http:
        upload = http.post(f"{base}/listBuildSourceUploadUrl").json()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            tar.add(context / "Dockerfile", arcname="Dockerfile")
        put = httpx.put(upload["uploadUrl"], content=archive.getvalue(), headers={"x-ms-blob-type": "BlockBlob"})
        put.raise_for_status()
        request = {
            "type": "DockerBuildRequest",
            "imageNames": ["load:{{.Run.ID}}"],
            "dockerFilePath": "Dockerfile",
            "sourceLocation": upload["relativePath"],
            "platform": {"os": "Linux"},
        }
        started = time.perf_counter()
        ids = [http.post(f"{base}/scheduleRun", json=request).json()["name"] for _ in range(runs)]
        pending = set(ids)
        while pending:
            time.sleep(0.5)
            for run_id in list(pending):
                status = http.get(f"{base}/runs/{run_id}").json()["properties"]["status"]
                if status in ("Succeeded", "Failed", "Canceled", "Error", "Timeout"):
                    if status != "Succeeded":
                        raise RuntimeError(f"run {run_id} ended {status}")
                    pending.discard(run_id)
        elapsed = time.perf_counter() - started
    return runs * 60 / elapsed


if __name__ == "__main__":
    sys.exit(main())
