"""`python -m bench`: start the stack, our API and the peer, run the phases, write the report, stop all.

Phases (`--only`, comma-separated; all by default):
    manifests  manifest HEAD/GET by tag and by digest, blob HEAD: rps and p50/p99 at each concurrency
    lists      tags list of a repository with 1,000 tags and catalog of 1,000 repositories, per page
    push       skopeo push and pull of a 1 GiB one-layer image and a 50 MiB five-layer image (MB/s),
               and the peak RSS of both servers during the 1 GiB push
    raw        the physical reference: the same 1 GiB to and from Azurite without the registry

Within each run ours and the peer alternate (the order flips every run), so a change in the machine's
load hits both; the report gives the median with min and max over `--runs`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench import processes, report, storage, workloads
from bench.loadgen import ENGINES, Engine, run_load
from bench.processes import CpuMeter, RssSampler, ServerProcess, sigterm_unwinds
from bench.report import OURS, OURS_OPEN, PEER, RAW_CURL, RAW_SDK, Results
from bench.workloads import GiB, MiB, RandomPool, SkopeoRunner
from services.devhost.stack import LocalStack
from services.platform.settings import Settings
from tests.e2e.clients import MANIFEST_ACCEPT

PHASES = ("manifests", "lists", "push", "raw")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
WARM_UP_BYTES = 256 * MiB
T = TypeVar("T")


@dataclass
class Options:
    runs: int = 3
    duration: float = 5.0
    only: tuple[str, ...] = PHASES
    concurrency: tuple[int, ...] = (1, 16, 64)
    big: int = GiB
    small_layers: tuple[int, ...] = (10 * MiB,) * 5
    tags: int = 1000
    repositories: int = 1000
    page_size: int = 100
    out: Path = RESULTS_DIR
    loadgen: Engine = "lean"
    ours_env: dict[str, str] = field(default_factory=dict)
    profile: bool = False
    keep: bool = False
    quick: bool = False
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 run, short cells")
    parser.add_argument("--only", default=",".join(PHASES), help=f"phases to run, of {','.join(PHASES)}")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3; --quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per request cell (default 5; --quick 0.5)")
    parser.add_argument("--concurrency", default="1,16,64", help="request concurrencies (default 1,16,64)")
    parser.add_argument("--big-mib", type=int, help="size of the one-layer image in MiB (default 1024)")
    parser.add_argument("--tags", type=int, help="tags in the tags-list repository (default 1000)")
    parser.add_argument("--repositories", type=int, help="repositories for the catalog (default 1000)")
    parser.add_argument("--page-size", type=int, default=100, help="n for the paged lists (default 100)")
    parser.add_argument(
        "--loadgen", choices=ENGINES, default="lean", help="load generator engine (default lean; see loadgen.py)"
    )
    parser.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for our API only (repeatable), e.g. UPLOAD_CONCURRENCY=8, for A/B runs",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON and Markdown go")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record py-spy profiles of our API (c=16 request cells and the big push, first run); "
        "they perturb those figures",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data and logs)")
    args = parser.parse_args(argv)

    only = tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = sorted(set(only) - set(PHASES))
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    options = Options(
        only=only,
        page_size=args.page_size,
        out=args.out,
        loadgen=args.loadgen,
        profile=args.profile,
        keep=args.keep,
    )
    options.concurrency = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    for setting in args.ours_env:
        name, equals, value = setting.partition("=")
        if not equals or not name:
            parser.error(f"--ours-env wants NAME=VALUE, not {setting!r}")
        options.ours_env[name] = value
    if args.quick:
        options.quick = True
        options.runs, options.duration = 1, 0.5
        options.big, options.small_layers = 32 * MiB, (1 * MiB,) * 5
        options.tags, options.repositories = 120, 120
    if args.runs is not None:
        options.runs = args.runs
    if args.duration is not None:
        options.duration = args.duration
    if args.big_mib is not None:
        options.big = args.big_mib * MiB
    if args.tags is not None:
        options.tags = args.tags
    if args.repositories is not None:
        options.repositories = args.repositories
    if options.runs < 1 or options.duration <= 0 or not options.concurrency:
        parser.error("--runs, --duration and --concurrency must be positive")
    options.command = "python -m bench" + ("" if not argv else " " + " ".join(argv))
    return options


def _size_label(size: int) -> str:
    return f"{size / GiB:g} GiB" if size >= GiB else f"{size / MiB:g} MiB"


def _run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on uvloop when it is there (the load generator needs all the speed it can get)."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None

    async def call() -> T:
        return await make()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(call())


def _command_output(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


class Profiler:
    """`py-spy record` of a process and its worker processes while a `with` block runs (collapsed stacks,
    `--format raw`)."""

    def __init__(self, pid: int, output: Path, enabled: bool) -> None:
        self.pid = pid
        self.output = output
        self.binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.enabled = enabled and Path(self.binary).exists()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        if self.enabled:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            argv = [self.binary, "record", "--pid", str(self.pid), "--rate", "250", "--nonblocking", "--subprocesses"]
            argv += ["--format", "raw", "--output", str(self.output)]
            self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # let it attach
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Bench:
    def __init__(
        self,
        options: Options,
        results: Results,
        stack: LocalStack,
        ours: ServerProcess,
        peer: ServerProcess,
        workdir: Path,
    ) -> None:
        self.options = options
        self.results = results
        self.stack = stack
        self.servers = {OURS: ours, PEER: peer}
        self.workdir = workdir
        self.settings = Settings()
        self.stamp = results.meta["timestamp"].replace(":", "").replace("-", "")

    def pids(self, subject: str) -> dict[str, int]:
        """The server-side processes of a subject: our API and the emulators, or distribution."""
        if subject in (OURS, OURS_OPEN):
            return {"api": self.servers[OURS].pid, **self.stack.pids}
        if subject == PEER:
            return {"api": self.servers[PEER].pid}
        return {"azurite": self.stack.pids["azurite"]}

    def add_cpu(self, key: str, title: str, unit: str, subject: str, meter: CpuMeter, per: float) -> None:
        """CPU of each process of `subject` per unit of work (`per` units were done)."""
        figure = self.results.figure(key, title, unit, "lower")
        scale = 1e6 if unit == "us/request" else 1e3
        for name, seconds in meter.seconds.items():
            figure.add(f"{subject}:{name}", scale * seconds / max(per, 1e-9))

    def order(self, run: int, subjects: Sequence[str] = (OURS, PEER)) -> list[str]:
        shift = run % len(subjects)
        return [*subjects[shift:], *subjects[:shift]]

    def note_load(self, phase: str) -> None:
        one, five, fifteen = os.getloadavg()
        self.results.load.append({"phase": phase, "load1": one, "load5": five, "load15": fifteen})

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def profiler(self, name: str, subject: str, wanted: bool) -> Profiler:
        output = self.options.out / f"{self.stamp}-profile-{name}.txt"
        return Profiler(self.servers[OURS].pid, output, self.options.profile and wanted and subject == OURS)

    # --- manifests ------------------------------------------------------------------------------------
    async def subject_headers(self, subject: str, scopes: Sequence[str]) -> dict[str, str]:
        """What a client of `subject` sends on every request: for ours, a bearer token for `scopes` (as
        docker and podman do); for ours with auth off, the Host of the open registry; nothing for the peer."""
        server = self.servers[OURS if subject == OURS_OPEN else subject]
        if subject == OURS and server.credentials:
            return await workloads.bearer_header(server.url, server.credentials, scopes)
        if subject == OURS_OPEN and server.open_host:
            return {"Host": server.open_host}
        return {}

    def seeding_headers(self, subject: str) -> dict[str, str]:
        """Headers for the untimed writes that prepare a phase: Basic credentials straight on /v2/ for ours."""
        server = self.servers[OURS if subject == OURS_OPEN else subject]
        if subject == OURS and server.credentials:
            return workloads.basic_header(server.credentials)
        if subject == OURS_OPEN and server.open_host:
            return {"Host": server.open_host}
        return {}

    def request_subjects(self) -> tuple[str, ...]:
        return (OURS, OURS_OPEN, PEER) if self.servers[OURS].open_host else (OURS, PEER)

    async def requests_phase(self) -> None:
        self.note_load("manifests")
        targets: dict[str, dict[str, tuple[str, str, dict[str, str]]]] = {}
        accept = {"Accept": MANIFEST_ACCEPT}
        repo = "bench/requests"
        subjects = self.request_subjects()
        for subject in subjects:
            server = self.servers[OURS if subject == OURS_OPEN else subject]
            async with workloads.session(16, self.seeding_headers(subject)) as http:
                image = await workloads.push_small_image(http, server.url, repo, "latest")
            auth = await self.subject_headers(subject, [f"repository:{repo}:pull"])
            manifests = f"{server.url}/v2/{repo}/manifests"
            targets[subject] = {
                "manifest_head_tag": ("HEAD", f"{manifests}/latest", accept | auth),
                "manifest_head_digest": ("HEAD", f"{manifests}/{image.digest}", accept | auth),
                "manifest_get_tag": ("GET", f"{manifests}/latest", accept | auth),
                "manifest_get_digest": ("GET", f"{manifests}/{image.digest}", accept | auth),
                "blob_head": ("HEAD", f"{server.url}/v2/{repo}/blobs/{image.layer.digest}", auth),
                "base_get": ("GET", f"{server.url}/v2/", auth),
            }
        for kind, label in report.REQUEST_KINDS:
            for c in self.options.concurrency:
                rps = self.results.figure(f"req_{kind}_c{c}_rps", f"{label}, c={c}", "rps")
                p50 = self.results.figure(f"req_{kind}_c{c}_p50", f"{label}, c={c}, p50", "ms", "lower")
                p99 = self.results.figure(f"req_{kind}_c{c}_p99", f"{label}, c={c}, p99", "ms", "lower")
                for run in range(self.options.runs):
                    for subject in self.order(run, subjects):
                        method, url, headers = targets[subject][kind]
                        with (
                            self.profiler(f"{kind}-c{c}", subject, c == 16 and run == 0),
                            CpuMeter(self.pids(subject)) as cpu,
                        ):
                            result = await run_load(
                                method,
                                url,
                                concurrency=c,
                                duration=self.options.duration,
                                headers=headers,
                                engine=self.options.loadgen,
                            )
                        self.add_cpu(
                            f"cpu_req_{kind}_c{c}",
                            f"CPU per {label}, c={c}",
                            "us/request",
                            subject,
                            cpu,
                            result.completed,
                        )
                        if not result.ok:
                            self.results.notes.append(
                                f"{subject} {label} c={c} run {run}: statuses {dict(result.statuses)}, "
                                f"{result.errors} transport errors"
                            )
                        rps.add(subject, result.rps)
                        p50.add(subject, result.p50_ms)
                        p99.add(subject, result.p99_ms)
                    self.log(
                        f"{label:<24} c={c:<3} run {run}: "
                        + ", ".join(f"{subject} {rps.values[subject][-1]:8.0f} rps" for subject in subjects)
                    )

    # --- lists ----------------------------------------------------------------------------------------
    async def lists_phase(self) -> None:
        self.note_load("lists")
        options = self.options
        tags_repo, catalog_prefix = "bench/tags", "bench/catalog"
        for subject, server in self.servers.items():
            async with workloads.session(16, self.seeding_headers(subject)) as http:
                seeded = await workloads.seed_tags(http, server.url, tags_repo, options.tags)
                self.results.notes.append(
                    f"seeded {seeded.count} tags on {subject} in {seeded.seconds:.1f} s ({seeded.method})"
                )
                seeded = await workloads.seed_repositories(http, server.url, catalog_prefix, options.repositories)
                self.results.notes.append(
                    f"seeded {seeded.count} repositories on {subject} in {seeded.seconds:.1f} s ({seeded.method})"
                )
                self.log(f"seeded {subject}: {options.tags} tags, {options.repositories} repositories")
        scopes = [f"repository:{tags_repo}:pull", "registry:catalog:*"]
        sessions = {
            subject: workloads.session(16, await self.subject_headers(subject, scopes)) for subject in self.servers
        }
        try:
            n = options.page_size
            cases = (
                ("tags_page", f"/v2/{tags_repo}/tags/list?n={n}", "tags", False),
                ("tags_full", f"/v2/{tags_repo}/tags/list", "tags", False),
                ("catalog_page", f"/v2/_catalog?n={n}", "repositories", False),
                ("catalog_full", "/v2/_catalog?n=1000", "repositories", True),
            )
            for key, path, field_name, first_only in cases:
                figure = self.results.figure(key, key.replace("_", " "), "ms", "lower")
                pages = self.results.figure(f"{key}_pages", f"{key} pages", "pages", "lower")
                for run in range(options.runs):
                    for subject in self.order(run):
                        paging = await workloads.page_through(
                            sessions[subject], self.servers[subject].url, path, field_name
                        )
                        times = paging.page_seconds[:1] if first_only else paging.page_seconds
                        figure.add(subject, 1000 * sum(times) / len(times))
                        pages.add(subject, paging.pages)
                        if run == 0:
                            self.results.notes.append(
                                f"{subject} GET {path}: {paging.pages} page(s), {paging.items} items"
                            )
                self.log(f"{key:<13} ours {figure.median(OURS):7.2f} ms, peer {figure.median(PEER):7.2f} ms")
        finally:
            for http in sessions.values():
                await http.close()

    # --- push, pull, raw ------------------------------------------------------------------------------
    def transfer_phase(self) -> None:
        self.note_load("push")
        options = self.options
        do_push, do_raw = "push" in options.only, "raw" in options.only
        skopeo = SkopeoRunner(self.workdir / "containers")
        self.results.meta["skopeo_version"] = skopeo.version()
        raw = storage.RawStorage(
            self.stack.blob_connection_string,
            self.stack.azurite_blob_port,
            self.settings.block_size,
            self.settings.upload_concurrency,
        )
        self.log(f"making {_size_label(max(options.big, sum(options.small_layers)))} of random data")
        pool = RandomPool(self.workdir / "random.bin", max(options.big, sum(options.small_layers)))
        mb = 1e6
        figures = {
            (way, size): self.results.figure(f"{way}_{size}", f"skopeo {way} {size}", "MB/s")
            for way in ("push", "pull")
            for size in ("big", "small")
        }
        rss = self.results.figure("rss_push_big", "peak RSS during the big push", "MiB", "lower")
        rss_before = self.results.figure("rss_before_push_big", "RSS before the big push", "MiB", "lower")
        raw_up = self.results.figure("raw_upload", "raw Azurite SDK upload", "MB/s")
        raw_down = self.results.figure("raw_download", "raw Azurite SDK download", "MB/s")
        curl_put = self.results.figure("raw_put_curl", "curl PUT Blob via SAS", "MB/s")
        curl_get = self.results.figure("raw_get_curl", "curl GET via SAS", "MB/s")

        self.warm_up(skopeo, raw, pool, do_push, do_raw)
        for run in range(options.runs):
            nonce = f"r{run}-{uuid.uuid4().hex[:8]}"
            self.log(f"run {run}: building images {nonce}")
            big = workloads.build_image(self.workdir / f"big-{run}", pool, [options.big], nonce)
            small = workloads.build_image(self.workdir / f"small-{run}", pool, options.small_layers, nonce + "-s")
            subjects = [*([OURS, PEER] if do_push else []), *(["raw"] if do_raw else [])]
            order = self.order(run, subjects)
            big_layer = big.layers[0]
            raw_name = f"{nonce}.bin"
            for size_key, image in (("big", big), ("small", small)):
                repo = f"bench/push-{size_key}-{run}"
                for subject in order:
                    _settle()
                    if subject == "raw":
                        if size_key == "big":
                            source = big.layout.blob_path(big_layer.digest)
                            with CpuMeter(self.pids("raw")) as cpu:
                                seconds = _run_async(partial(raw.upload, source, raw_name))
                            raw_up.add(RAW_SDK, big_layer.size / mb / seconds)
                            self.add_cpu(
                                "cpu_raw_upload",
                                "CPU per MiB, raw SDK upload",
                                "ms/MiB",
                                RAW_SDK,
                                cpu,
                                big_layer.size / MiB,
                            )
                            with CpuMeter(self.pids("raw")) as cpu:
                                seconds = raw.curl_put(source, raw_name + ".curl")
                            curl_put.add(RAW_CURL, big_layer.size / mb / seconds)
                            self.add_cpu(
                                "cpu_raw_put_curl",
                                "CPU per MiB, curl PUT Blob",
                                "ms/MiB",
                                RAW_CURL,
                                cpu,
                                big_layer.size / MiB,
                            )
                        continue
                    server = self.servers[subject]
                    with (
                        RssSampler(server.pid) as sampler,
                        self.profiler("push-big", subject, run == 0 and size_key == "big"),
                        CpuMeter(self.pids(subject)) as cpu,
                    ):
                        seconds = skopeo.push(image, server.host, repo, server.credentials)
                    if size_key == "big":
                        rss.add(subject, sampler.peak / MiB)
                        rss_before.add(subject, sampler.before / MiB)
                    figures["push", size_key].add(subject, image.layer_bytes / mb / seconds)
                    self.add_cpu(
                        f"cpu_push_{size_key}",
                        f"CPU per MiB pushed, {size_key}",
                        "ms/MiB",
                        subject,
                        cpu,
                        image.layer_bytes / MiB,
                    )
                self._log_transfer("push", size_key, run, figures["push", size_key], raw_up, size_key == "big")
                for subject in order:
                    _settle()
                    if subject == "raw":
                        if size_key == "big":
                            target = self.workdir / "raw-download.bin"
                            with CpuMeter(self.pids("raw")) as cpu:
                                seconds = _run_async(partial(raw.download, raw_name, target))
                            raw_down.add(RAW_SDK, big_layer.size / mb / seconds)
                            self.add_cpu(
                                "cpu_raw_download",
                                "CPU per MiB, raw SDK download",
                                "ms/MiB",
                                RAW_SDK,
                                cpu,
                                big_layer.size / MiB,
                            )
                            target.unlink()
                            url = (
                                raw.registry_blob_url(self.settings.default_registry, big_layer.digest)
                                if do_push
                                else raw.sas_url(storage.RAW_CONTAINER, raw_name, _read_permission())
                            )
                            with CpuMeter(self.pids("raw")) as cpu:
                                seconds = raw.curl_get(url, target, big_layer.size)
                            curl_get.add(RAW_CURL, big_layer.size / mb / seconds)
                            self.add_cpu(
                                "cpu_raw_get_curl",
                                "CPU per MiB, curl GET via SAS",
                                "ms/MiB",
                                RAW_CURL,
                                cpu,
                                big_layer.size / MiB,
                            )
                            target.unlink()
                        continue
                    server = self.servers[subject]
                    destination = self.workdir / f"pulled-{subject}"
                    with CpuMeter(self.pids(subject)) as cpu:
                        seconds = skopeo.pull(image, server.host, repo, destination, server.credentials)
                    workloads.remove_tree(destination)
                    figures["pull", size_key].add(subject, image.layer_bytes / mb / seconds)
                    self.add_cpu(
                        f"cpu_pull_{size_key}",
                        f"CPU per MiB pulled, {size_key}",
                        "ms/MiB",
                        subject,
                        cpu,
                        image.layer_bytes / MiB,
                    )
                self._log_transfer("pull", size_key, run, figures["pull", size_key], raw_down, size_key == "big")
            if do_raw:
                _run_async(partial(_delete_raw, raw, [raw_name, raw_name + ".curl"]))
            workloads.remove_tree(big.layout.root)
            workloads.remove_tree(small.layout.root)
            self.note_load(f"push run {run}")
        pool.path.unlink()

    def warm_up(
        self, skopeo: SkopeoRunner, raw: storage.RawStorage, pool: RandomPool, do_push: bool, do_raw: bool
    ) -> None:
        """One untimed push and pull of a small image to each registry, and a raw upload, so no timed run
        pays for first use (connections, Azurite's first extents, caches).

        It does not remove everything: our first timed 1 GiB push still runs at about half the speed of
        the next two, with Azurite spending twice the CPU per MiB; neither this warm-up nor `_settle`
        changed that, and it is not explained yet. The median of three runs is not affected by it."""
        size = min(WARM_UP_BYTES, pool.size)
        self.log(f"warm-up: {_size_label(size)} to each registry and to Azurite, untimed")
        image = workloads.build_image(self.workdir / "warm-up", pool, [size], f"warm-{uuid.uuid4().hex[:8]}")
        if do_push:
            for subject in (OURS, PEER):
                server = self.servers[subject]
                skopeo.push(image, server.host, "bench/warm-up", server.credentials)
                skopeo.pull(image, server.host, "bench/warm-up", self.workdir / "warm-up-pulled", server.credentials)
                workloads.remove_tree(self.workdir / "warm-up-pulled")
        if do_raw:
            source = image.layout.blob_path(image.layers[0].digest)
            _run_async(partial(raw.upload, source, "warm-up.bin"))
            _run_async(partial(_delete_raw, raw, ["warm-up.bin"]))
        workloads.remove_tree(image.layout.root)

    def _log_transfer(
        self, way: str, size_key: str, run: int, figure: report.Figure, raw: report.Figure, with_raw: bool
    ) -> None:
        parts = [f"{s} {v[-1]:7.1f} MB/s" for s, v in figure.values.items() if len(v) > run]
        if with_raw and len(raw.values.get(RAW_SDK, [])) > run:
            parts.append(f"raw SDK {raw.values[RAW_SDK][-1]:7.1f} MB/s")
        self.log(f"{way} {size_key} run {run}: " + ", ".join(parts))


def _settle() -> None:
    """Flush dirty pages before a timed transfer: each writes 1 GiB, and the kernel's writeback of what the
    previous one (or the image build) left would otherwise land on whoever comes next."""
    os.sync()


def _read_permission() -> Any:
    from azure.storage.blob import BlobSasPermissions

    return BlobSasPermissions(read=True)


async def _delete_raw(raw: storage.RawStorage, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(Exception):
            await raw.delete(name)


def meta(options: Options) -> dict[str, Any]:
    commit = _command_output(["git", "-C", str(processes.REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _command_output(["git", "-C", str(processes.REPO_ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": options.command,
        "commit": commit + ("+dirty" if dirty else ""),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "peer_version": processes.distribution_version(),
        "runs": options.runs,
        "duration": options.duration,
        "concurrency": list(options.concurrency),
        "phases": list(options.only),
        "big_label": _size_label(options.big),
        "small_label": f"{len(options.small_layers)} x {_size_label(options.small_layers[0])}",
        "big_bytes": options.big,
        "small_layers": list(options.small_layers),
        "tags": options.tags,
        "repositories": options.repositories,
        "page_size": options.page_size,
        "quick": options.quick,
        "profile": options.profile,
        "ours_env": options.ours_env,
        "loadgen": f"bench/loadgen.py, engine {options.loadgen} (asyncio on uvloop, one process, keep-alive)",
        "load_start": os.getloadavg(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    results = Results(meta(options))
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    status = 0
    try:
        with sigterm_unwinds(), ExitStack() as running:
            stack = LocalStack.on_free_ports(workdir / "stack")
            print(f"[bench] starting the emulators, our API and distribution in {workdir}", flush=True)
            running.enter_context(stack)
            credentials = _run_async(partial(processes.prepare_our_registries, stack.env()))
            ours = running.enter_context(
                processes.ours(
                    stack.env(),
                    workdir / "logs",
                    options.ours_env,
                    credentials=credentials,
                    open_registry=processes.OPEN_REGISTRY,
                )
            )
            peer = running.enter_context(processes.peer(workdir / "peer", workdir / "logs"))
            bench = Bench(options, results, stack, ours, peer, workdir)
            if "manifests" in options.only:
                _run_async(bench.requests_phase)
            if "lists" in options.only:
                _run_async(bench.lists_phase)
            if "push" in options.only or "raw" in options.only:
                bench.transfer_phase()
            bench.note_load("end")
    except (KeyboardInterrupt, SystemExit) as stop:
        results.notes.append(f"interrupted ({stop!r}): the figures are partial")
        status = 130
    except Exception as error:
        traceback.print_exc()
        results.notes.append(f"failed ({error!r}): the figures are partial; see the log above")
        status = 1
    finally:
        if options.keep:
            print(f"[bench] kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results.meta["seconds"] = round(time.monotonic() - started, 1)
    results.meta["load_end"] = os.getloadavg()
    text = report.markdown(results)
    json_path, md_path = report.write(results, options.out)
    print("\n" + text)
    print(f"[bench] wrote {json_path} and {md_path} in {results.meta['seconds']} s", flush=True)
    return status
