"""`python -m bench.lifecycle`: what the lifecycle work costs and how fast it collects, on Azurite and the
Cosmos emulator started here (services/devhost/stack.py).

    gc       blobs deleted per minute by one collection of N unreferenced blobs (`--blobs`, 3,000), each
             linked in one of 10 repositories, the collector's default concurrency; with the Cosmos and
             Storage calls per blob the collector made and the CPU milliseconds per blob of this process
             and of each emulator (`--profile`: also this process's hottest functions, by cProfile).
             `PYTHONPATH=<other tree> python bench/lifecycle.py --only gc` runs this bench against another
             revision's collector (before/after on the same machine state)
    push     small images pushed per second (a config, two 4 KiB layers, a manifest; 8 clients for
             `--seconds`) against this tree's devhost and one of `--baseline` (a git revision without the
             bookkeeping: its own worktree), alternating, `--runs` times each
    recount  time to recount the storage usage of a registry holding `--recount-blobs` stored blobs (their
             documents are seeded straight into the ledger in batches of 100, not pushed), then the time
             of the single aggregate query the recount used before

Prints one line per figure. Figures are for comparison within one run on this machine, not absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import hashlib
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from services.devhost.stack import LocalStack, free_port
from services.management.access import update_registry
from services.management.registries import create_registry
from services.platform.blobs import BlobStore
from services.platform.cosmos import BatchOperation, Cosmos
from services.platform.settings import Settings
from services.registry.collector import GarbageCollector, recount_storage
from services.registry.ledger import BlobLedger, StorageUsageDoc, StoredBlobDoc, stored_blob_id
from services.registry.store import ArtifactStore, BlobLinkDoc, repo_key

ROOT = Path(__file__).resolve().parents[1]


def settings_of(env: dict[str, str], **extra: object) -> Settings:
    fields = set(Settings.model_fields)
    values: dict[str, object] = {key.lower(): value for key, value in env.items() if key.lower() in fields}
    return Settings(**(values | extra))  # type: ignore[arg-type]


async def new_registry(settings: Settings, cosmos: Cosmos, blobs: BlobStore) -> str:
    name = "bench" + uuid.uuid4().hex[:12]
    await create_registry(cosmos, blobs, settings, name)
    await update_registry(cosmos, name, auth_disabled=True)
    return name


async def bounded(limit: int, jobs: list[object]) -> None:
    slots = asyncio.Semaphore(limit)

    async def run(job: object) -> None:
        async with slots:
            await job  # type: ignore[misc]

    await asyncio.gather(*(run(job) for job in jobs))


# --- profile -------------------------------------------------------------------------------------------------
COSMOS_CALLS = ("read", "query", "query_across", "create", "upsert", "replace", "delete", "patch", "batch")
STORAGE_CALLS = ("etag", "delete_if_unchanged", "delete_many_if_unchanged", "etags", "delete")


def count_calls(target: object, names: tuple[str, ...], prefix: str, counts: Counter[str]) -> None:
    """Count the calls of `target`'s methods `names` (on this instance only: the bench's own clients)."""
    for name in names:
        method = getattr(target, name, None)
        if method is None:
            continue
        if name.startswith("query"):

            def wrap_iter(method: Callable[..., Any] = method, key: str = f"{prefix}.{name}") -> Callable[..., Any]:
                @functools.wraps(method)
                def counted(*args: Any, **kwargs: Any) -> Any:
                    counts[key] += 1
                    return method(*args, **kwargs)

                return counted

            setattr(target, name, wrap_iter())
        else:

            def wrap(method: Callable[..., Any] = method, key: str = f"{prefix}.{name}") -> Callable[..., Any]:
                @functools.wraps(method)
                async def counted(*args: Any, **kwargs: Any) -> Any:
                    counts[key] += 1
                    return await method(*args, **kwargs)

                return counted

            setattr(target, name, wrap())


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@contextmanager
def profiled(pids: dict[str, int], count: int, profile: bool) -> Iterator[None]:
    """Print the CPU milliseconds per blob each process spent (this one, each emulator) and, with `profile`,
    this process's hottest functions (cProfile, which slows this process down)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    mine = time.process_time()
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    try:
        yield
    finally:
        if profiler is not None:
            profiler.disable()
        spent = {"bench (python)": time.process_time() - mine}
        spent |= {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        print(
            "gc: CPU ms per blob: "
            + ", ".join(f"{name} {value / count * 1000:.2f}" for name, value in spent.items())
            + f"; total {sum(spent.values()) / count * 1000:.2f}"
        )
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())


# --- gc ------------------------------------------------------------------------------------------------------
async def bench_gc(env: dict[str, str], count: int, pids: dict[str, int], profile: bool) -> None:
    settings = settings_of(env, gc_grace_seconds=0.0)
    cosmos, blobs = Cosmos(settings), BlobStore(settings)
    await cosmos.open()
    await blobs.open()
    try:
        name = await new_registry(settings, cosmos, blobs)
        ledger, artifacts = BlobLedger(cosmos), ArtifactStore(cosmos)

        async def seed(index: int) -> None:
            data = os.urandom(512) + index.to_bytes(8, "big")
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            repo = repo_key(name, f"bench/r{index % 10}")
            await blobs.put(name, digest, data)
            await artifacts.put_blob_link(BlobLinkDoc(id=f"blob:{digest}", repo=repo, digest=digest, size=len(data)))
            await ledger.create_counted(
                StoredBlobDoc(
                    id=stored_blob_id(digest),
                    registry=name,
                    digest=digest,
                    size=len(data),
                    due=time.time() - 10,
                    pinned=time.time() - 10,
                )
            )

        started = time.monotonic()
        await bounded(32, [seed(i) for i in range(count)])
        print(f"gc: seeded {count} unreferenced, linked blobs in {time.monotonic() - started:.1f} s")
        counts: Counter[str] = Counter()
        count_calls(cosmos, COSMOS_CALLS, "cosmos", counts)
        count_calls(blobs, STORAGE_CALLS, "storage", counts)
        with profiled(pids, count, profile):
            started = time.monotonic()
            report = await GarbageCollector(settings, cosmos, blobs).run(name)
            elapsed = time.monotonic() - started
        assert report.deleted == count, (report.deleted, report.examined, report.busy)
        print(
            "gc: calls per collected blob: "
            + ", ".join(f"{key} {value / count:.3f}" for key, value in sorted(counts.items()))
            + f"; cosmos {sum(v for k, v in counts.items() if k.startswith('cosmos')) / count:.3f}"
            + f", storage {sum(v for k, v in counts.items() if k.startswith('storage')) / count:.3f}"
        )
        print(
            f"gc: {report.deleted} blobs deleted in {elapsed:.1f} s = {report.deleted / elapsed * 60:,.0f} blobs/min "
            f"(concurrency {settings.gc_concurrency})"
        )
    finally:
        await cosmos.close()
        await blobs.close()


# --- push ------------------------------------------------------------------------------------------------------
def start_devhost(tree: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full = os.environ | env | {"API_PORT": str(port), "LOG_LEVEL": "warning", "PYTHONPATH": str(tree)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.devhost", "serve", "--port", str(port)],
            cwd=tree,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/", timeout=2).status_code in (200, 401):
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"devhost in {tree} did not start: {log.read_text()[-2000:]}")


async def push_for(url: str, registry: str, seconds: float, clients: int) -> float:
    """Images pushed per second: each client pushes fresh small images (two layers, a config, a manifest)."""
    host = url.split("//", 1)[1]
    headers = {"Host": f"{registry}.azurecr.localhost:{host.rsplit(':', 1)[1]}"}
    pushed = 0
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        nonlocal pushed
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            while time.monotonic() < deadline:
                blobs = [os.urandom(4096), os.urandom(4096), os.urandom(200)]
                descriptors = []
                for data in blobs:
                    digest = "sha256:" + hashlib.sha256(data).hexdigest()
                    reply = await http.post(
                        f"/v2/bench/c{index}/blobs/uploads/", params={"digest": digest}, content=data
                    )
                    assert reply.status_code == 201, reply.text
                    descriptors.append({"mediaType": "application/octet-stream", "digest": digest, "size": len(data)})
                manifest = {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": descriptors[2] | {"mediaType": "application/vnd.oci.image.config.v1+json"},
                    "layers": descriptors[:2],
                }
                reply = await http.put(
                    f"/v2/bench/c{index}/manifests/v{pushed}",
                    json=manifest,
                    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                )
                assert reply.status_code == 201, reply.text
                pushed += 1

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return pushed / (time.monotonic() - started)


async def bench_push(env: dict[str, str], baseline: str, runs: int, seconds: float, state: Path) -> None:
    base_tree = state / "baseline"
    git = ["git", "-C", str(ROOT), "worktree"]
    await asyncio.to_thread(subprocess.run, [*git, "add", "--detach", str(base_tree), baseline], check=True)
    settings = settings_of(env)
    cosmos, blobs = Cosmos(settings), BlobStore(settings)
    await cosmos.open()
    await blobs.open()
    results: dict[str, list[float]] = {"with bookkeeping": [], f"without ({baseline})": []}
    try:
        trees = {"with bookkeeping": ROOT, f"without ({baseline})": base_tree}
        hosts = {label: start_devhost(tree, env, state / f"{label[:4]}.log") for label, tree in trees.items()}
        try:
            for run in range(runs):
                order = list(hosts) if run % 2 == 0 else list(reversed(hosts))
                for label in order:
                    registry = await new_registry(settings, cosmos, blobs)
                    results[label].append(await push_for(hosts[label][1], registry, seconds, clients=8))
        finally:
            for process, _ in hosts.values():
                process.terminate()
                process.wait(timeout=15)
    finally:
        await cosmos.close()
        await blobs.close()
        await asyncio.to_thread(subprocess.run, [*git, "remove", "--force", str(base_tree)], check=False)
    for label, values in results.items():
        print(
            f"push {label}: median {statistics.median(values):.1f} images/s "
            f"(min {min(values):.1f}, max {max(values):.1f}, {runs} runs of {seconds:.0f} s, 8 clients)"
        )


# --- recount ---------------------------------------------------------------------------------------------------
async def bench_recount(env: dict[str, str], count: int) -> None:
    settings = settings_of(env)
    cosmos, blobs = Cosmos(settings), BlobStore(settings)
    await cosmos.open()
    await blobs.open()
    try:
        name = await new_registry(settings, cosmos, blobs)

        async def seed(first: int) -> None:
            # Seeding only: stored-blob documents written straight into the ledger, a batch of 100 at a time
            # (the usage is made from their sum below), not through pushes.
            operations: list[BatchOperation] = []
            for index in range(first, min(first + 100, count)):
                digest = "sha256:" + hashlib.sha256(index.to_bytes(8, "big") + name.encode()).hexdigest()
                doc = StoredBlobDoc(id=stored_blob_id(digest), registry=name, digest=digest, size=1000 + index % 7)
                operations.append(("create", (doc.to_item(),)))
            await cosmos.batch("registries", name, operations)

        started = time.monotonic()
        await bounded(8, [seed(first) for first in range(0, count, 100)])
        expected = sum(1000 + index % 7 for index in range(count))
        await cosmos.upsert("registries", StorageUsageDoc(registry=name, storageBytes=expected - 1))  # one lost
        print(f"recount: seeded {count} stored-blob documents in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        recount = await recount_storage(BlobLedger(cosmos), name)
        elapsed = time.monotonic() - started
        assert (recount.blobs, recount.storage_bytes, recount.previous) == (count, expected, expected - 1), recount
        assert recount.applied and await BlobLedger(cosmos).storage_bytes(name) == expected
        print(f"recount: {recount.blobs} blobs, {recount.storage_bytes} bytes recounted in {elapsed:.2f} s")
        # What the recount did before: two aggregate queries, each of which the emulator answers by scanning
        # the partition (the read timeout is `COSMOS_READ_TIMEOUT_SECONDS`).
        started = time.monotonic()
        try:
            totals = []
            for aggregate in ("COUNT(1)", "SUM(c.size)"):
                sql = f"SELECT VALUE {aggregate} FROM c WHERE c.registry = @r AND c.type = 'storedBlob'"
                totals.append(
                    sum([int(str(item)) async for item in cosmos.query("registries", sql, {"@r": name}, name)])
                )
            outcome = f"{totals[0]} blobs, {totals[1]} bytes"
        except Exception as exc:  # a timeout, as the emulator tends to answer large aggregates
            outcome = f"failed: {type(exc).__name__}"
        print(f"recount: the two aggregate queries (before): {outcome} in {time.monotonic() - started:.2f} s")
    finally:
        await cosmos.close()
        await blobs.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lifecycle", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="gc,push,recount")
    parser.add_argument("--blobs", type=int, default=3000)
    parser.add_argument("--recount-blobs", type=int, default=100_000)
    parser.add_argument("--baseline", default="67adcc8")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--profile", action="store_true", help="gc: CPU per process and the hottest functions")
    args = parser.parse_args()
    phases = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as folder:
        state = Path(folder)
        stack = LocalStack(
            state / "stack",
            azurite_blob_port=free_port(),
            azurite_queue_port=free_port(),
            azurite_table_port=free_port(),
            cosmos_port=free_port(),
            node_modules=ROOT / "node_modules",
        )
        with stack:
            env = stack.env()
            if "gc" in phases:
                asyncio.run(bench_gc(env, args.blobs, stack.pids, args.profile))
            if "push" in phases:
                asyncio.run(bench_push(env, args.baseline, args.runs, args.seconds, state))
            if "recount" in phases:
                asyncio.run(bench_recount(env, args.recount_blobs))


if __name__ == "__main__":
    main()
