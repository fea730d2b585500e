"""Figures, their medians and ratios, the issue's targets, and the JSON and Markdown reports."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

OURS, OURS_OPEN, PEER, RAW_SDK, RAW_CURL = "ours", "ours-open", "peer", "raw-sdk", "raw-curl"
Better = Literal["higher", "lower"]


@dataclass
class Figure:
    key: str
    title: str
    unit: str
    better: Better
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, subject: str, value: float) -> None:
        self.values.setdefault(subject, []).append(value)

    def median(self, subject: str) -> float:
        values = self.values.get(subject) or []
        return statistics.median(values) if values else math.nan

    def span(self, subject: str) -> tuple[float, float]:
        values = self.values.get(subject) or []
        return (min(values), max(values)) if values else (math.nan, math.nan)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "unit": self.unit,
            "better": self.better,
            "subjects": {
                subject: {
                    "median": self.median(subject),
                    "min": self.span(subject)[0],
                    "max": self.span(subject)[1],
                    "runs": values,
                }
                for subject, values in self.values.items()
            },
        }


class Results:
    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.figures: dict[str, Figure] = {}
        self.notes: list[str] = []
        self.load: list[dict[str, Any]] = []  # the load average at each phase

    def figure(self, key: str, title: str, unit: str, better: Better = "higher") -> Figure:
        if key not in self.figures:
            self.figures[key] = Figure(key, title, unit, better)
        return self.figures[key]

    def get(self, key: str) -> Figure | None:
        return self.figures.get(key)

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "load": self.load,
            "notes": self.notes,
            "figures": {key: figure.to_json() for key, figure in self.figures.items()},
            "targets": [target.to_json() for target in targets(self)],
        }


# --- targets (issue 10) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    ours: float
    reference: float  # the threshold, already scaled (e.g. 80% of raw)
    reference_text: str
    better: Better

    @property
    def status(self) -> str:
        if math.isnan(self.ours) or math.isnan(self.reference):
            return "not measured"
        met = self.ours >= self.reference if self.better == "higher" else self.ours < self.reference
        return "met" if met else "not met"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ours": self.ours,
            "threshold": self.reference,
            "threshold_text": self.reference_text,
            "status": self.status,
        }


def _median(results: Results, key: str, subject: str) -> float:
    figure = results.get(key)
    return figure.median(subject) if figure is not None else math.nan


TARGET_ROWS = (
    ("manifest_head_tag", "manifest HEAD by tag"),
    ("manifest_head_digest", "manifest HEAD by digest"),
    ("manifest_get_tag", "manifest GET by tag"),
    ("manifest_get_digest", "manifest GET by digest"),
    ("blob_head", "blob HEAD"),
)


def targets(results: Results) -> list[Target]:
    """Issue 10's goals, each against what this run measured (ours = authentication on, bearer tokens)."""
    found: list[Target] = []
    big = results.meta.get("big_label", "1 GiB")
    for kind, label in TARGET_ROWS:
        for c in (16, 64):
            peer = _median(results, f"req_{kind}_c{c}_rps", PEER)
            found.append(
                Target(f"{label}, c={c}: ≥ 1.2x distribution rps", _median(results, f"req_{kind}_c{c}_rps", OURS),
                       1.2 * peer, f"{1.2 * peer:,.0f} rps", "higher")
            )  # fmt: skip
    for kind, label in TARGET_ROWS:
        for c, limit in ((16, 50.0), (64, 100.0)):
            found.append(
                Target(f"{label}, c={c}: p99 < {limit:.0f} ms", _median(results, f"req_{kind}_c{c}_p99", OURS),
                       limit, f"{limit:.0f} ms", "lower")
            )  # fmt: skip
    for kind, label in TARGET_ROWS:
        peer = _median(results, f"cpu_req_{kind}_c16", f"{PEER}:api")
        found.append(
            Target(f"{label}, c=16: our API's CPU per request ≤ 0.6x distribution's",
                   _median(results, f"cpu_req_{kind}_c16", f"{OURS}:api"), 0.6 * peer, f"{0.6 * peer:.0f} µs",
                   "lower")
        )  # fmt: skip
    peer_push = _median(results, "cpu_push_big", f"{PEER}:api")
    found.append(
        Target(f"push {big}: our API's CPU per MiB ≤ 0.5x distribution's",
               _median(results, "cpu_push_big", f"{OURS}:api"), 0.5 * peer_push, f"{0.5 * peer_push:.2f} ms/MiB",
               "lower")
    )  # fmt: skip
    raw_azurite = _median(results, "cpu_raw_upload", f"{RAW_SDK}:azurite")
    found.append(
        Target(f"push {big}: Azurite's CPU per MiB ≤ 1.05x the raw SDK upload's",
               _median(results, "cpu_push_big", f"{OURS}:azurite"), 1.05 * raw_azurite,
               f"{1.05 * raw_azurite:.2f} ms/MiB", "lower")
    )  # fmt: skip
    raw_pull = _median(results, "raw_download", RAW_SDK)
    found.append(
        Target(f"pull {big} ≥ 1.0x raw Azurite (SDK)", _median(results, "pull_big", OURS), raw_pull,
               f"{raw_pull:.0f} MB/s", "higher")
    )  # fmt: skip
    peer_tags = _median(results, "tags_page", PEER)
    found.append(
        Target("tags list per page ≤ 1.0x distribution's time", _median(results, "tags_page", OURS),
               peer_tags * 1.0000001, f"{peer_tags:.2f} ms", "lower")
    )  # fmt: skip
    peer_catalog = _median(results, "catalog_page", PEER)
    found.append(
        Target("catalog per page ahead of distribution", _median(results, "catalog_page", OURS), peer_catalog,
               f"{peer_catalog:.2f} ms", "lower")
    )  # fmt: skip
    found.append(
        Target(f"peak RSS of each process during the {big} push < 120 MiB", _median(results, "rss_push_big", OURS),
               120.0, "120 MiB", "lower")
    )  # fmt: skip
    return found


# --- Markdown ------------------------------------------------------------------------------------------


def _num(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(figure: Figure | None, subject: str) -> str:
    if figure is None or not figure.values.get(subject):
        return "-"
    low, high = figure.span(subject)
    median = _num(figure.median(subject))
    if len(figure.values[subject]) == 1:
        return median
    return f"{median} ({_num(low)}-{_num(high)})"


def _ratio(figure: Figure | None, subject: str, other: str, other_figure: Figure | None = None) -> str:
    if figure is None:
        return "-"
    mine = figure.median(subject)
    theirs = (other_figure or figure).median(other)
    if math.isnan(mine) or math.isnan(theirs) or theirs == 0:
        return "-"
    return f"{mine / theirs:.2f}"


def _latency(p50: Figure | None, p99: Figure | None, subject: str) -> str:
    low = p50.median(subject) if p50 is not None else math.nan
    high = p99.median(subject) if p99 is not None else math.nan
    return f"{_num(low)} / {_num(high)}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


REQUEST_KINDS = (
    ("manifest_head_tag", "manifest HEAD by tag"),
    ("manifest_head_digest", "manifest HEAD by digest"),
    ("manifest_get_tag", "manifest GET by tag"),
    ("manifest_get_digest", "manifest GET by digest"),
    ("blob_head", "blob HEAD"),
    ("base_get", "GET /v2/ (no storage: the floor)"),
)


CPU_ROWS = (
    ("cpu_push_big", "skopeo push {big}", "ms/MiB"),
    ("cpu_pull_big", "skopeo pull {big}", "ms/MiB"),
    ("cpu_push_small", "skopeo push {small}", "ms/MiB"),
    ("cpu_raw_upload", "raw SDK upload {big}", "ms/MiB"),
    ("cpu_raw_put_curl", "raw curl PUT {big}", "ms/MiB"),
    ("cpu_raw_download", "raw SDK download {big}", "ms/MiB"),
    ("cpu_raw_get_curl", "raw curl GET {big}", "ms/MiB"),
    *(
        (f"cpu_req_{kind}_c16", f"{label}, c=16", "us/request")
        for kind, label in (
            ("manifest_head_tag", "manifest HEAD by tag"),
            ("manifest_head_digest", "manifest HEAD by digest"),
            ("manifest_get_tag", "manifest GET by tag"),
            ("manifest_get_digest", "manifest GET by digest"),
            ("blob_head", "blob HEAD"),
            ("base_get", "GET /v2/ (no storage)"),
        )
    ),
)
CPU_PROCESSES = ("api", "cosmos", "azurite", "client")


def _cpu_section(results: Results) -> list[str]:
    """CPU per MiB or per request of each process, for ours, the peer and the raw reference."""
    rows: list[list[str]] = []
    big, small = results.meta.get("big_label", "1 GiB"), results.meta.get("small_label", "")
    for key, label, unit in CPU_ROWS:
        figure = results.get(key)
        if figure is None or not figure.values:
            continue
        for subject in (OURS, OURS_OPEN, PEER, RAW_SDK, RAW_CURL):
            parts = {name: figure.median(f"{subject}:{name}") for name in CPU_PROCESSES}
            if all(math.isnan(v) for v in parts.values()):
                continue
            server = sum(v for name, v in parts.items() if name != "client" and not math.isnan(v))
            rows.append(
                [
                    label.format(big=big, small=small),
                    unit,
                    subject,
                    *(_num(parts[name]) for name in CPU_PROCESSES),
                    _num(server),
                ]
            )
    if not rows:
        return []
    out = ["## CPU per unit of work (median of the runs)", ""]
    out += _table(
        ["workload", "unit", "who", "API server", "Cosmos emulator", "Azurite", "client", "server side"],
        rows,
    )
    out += [
        "",
        "API server: our devhost process, or distribution; client: the harness (load generator, Storage "
        "SDK) plus skopeo/curl. Server side = API + emulators: what the registry costs per unit on this "
        "machine, which the load of others changes much less than throughput.",
        "",
    ]
    return out


def markdown(results: Results) -> str:
    meta = results.meta
    out: list[str] = [f"# Benchmark {meta['timestamp']}", ""]
    out.append(f"Command: `{meta['command']}`  ")
    out.append(
        f"Commit {meta.get('commit', '?')}; {meta.get('cpus', '?')} CPUs; {meta.get('peer_version', '')}; "
        f"{meta.get('skopeo_version', '')}; runs per figure: {meta['runs']}; "
        f"request duration {meta['duration']} s.  "
    )
    if meta.get("ours_env"):
        settings = ", ".join(f"`{k}={v}`" for k, v in meta["ours_env"].items())
        out.append(f"Extra settings of our API for this run: {settings}.  ")
    loads = [entry["load1"] for entry in results.load]
    if loads:
        out.append(
            f"Load average (1 min) over the phases: {min(loads):.2f}-{max(loads):.2f} "
            f"(start {loads[0]:.2f}, end {loads[-1]:.2f}); the machine is shared, so read the ratios "
            "(ours and the peer alternate within each run) rather than absolute figures."
        )
    out.append("")
    out.append("Cells: median (min-max) over the runs. ours = our API on Azurite + Cosmos emulator; "
               "peer = CNCF distribution, filesystem storage.")  # fmt: skip
    out.append("")

    big, small = meta.get("big_label", "1 GiB"), meta.get("small_label", "5 x 10 MiB")
    transfer_rows: list[list[str]] = []
    for way, raw_key in (("push", "raw_upload"), ("pull", "raw_download")):
        for size_key, label in (("big", big), ("small", small)):
            figure = results.get(f"{way}_{size_key}")
            if figure is None or not figure.values:
                continue
            raw = results.get(raw_key) if size_key == "big" else None
            curl = results.get("raw_put_curl" if way == "push" else "raw_get_curl") if size_key == "big" else None
            transfer_rows.append(
                [
                    f"skopeo {way} {label}",
                    _cell(figure, OURS),
                    _cell(figure, PEER),
                    _ratio(figure, OURS, PEER),
                    _cell(raw, RAW_SDK),
                    _cell(curl, RAW_CURL),
                    _ratio(figure, OURS, RAW_SDK, raw) if raw else "-",
                    _ratio(figure, OURS, RAW_CURL, curl) if curl else "-",
                ]
            )
    if transfer_rows:
        out += ["## Push and pull (MB/s, 1 MB = 10⁶ bytes of layers)", ""]
        out += _table(
            ["", "ours", "distribution", "ours/peer", "raw Azurite SDK", "raw curl", "ours/SDK", "ours/curl"],
            transfer_rows,
        )
        out += [
            "",
            "raw Azurite SDK: `azure.storage.blob.aio` upload (staged blocks + commit) or download of the "
            "same bytes with our block size and concurrency; raw curl: one PUT Blob, or one GET of the blob "
            "our registry stored, via a SAS URL (what a client does after our 307).",
            "",
        ]

    rss = results.get("rss_push_big")
    if rss is not None and rss.values:
        out += [f"## Peak RSS during the {big} push (MiB)", ""]
        out += _table(
            ["", "ours", "distribution", "ours/peer"],
            [["peak RSS", _cell(rss, OURS), _cell(rss, PEER), _ratio(rss, OURS, PEER)]],
        )
        base = results.get("rss_before_push_big")
        if base is not None:
            out.append("")
            out.append(f"RSS before the push: ours {_cell(base, OURS)}, distribution {_cell(base, PEER)}.")
        out.append("")

    request_rows: list[list[str]] = []
    for kind, label in REQUEST_KINDS:
        for c in meta.get("concurrency", []):
            rps = results.get(f"req_{kind}_c{c}_rps")
            if rps is None or not rps.values:
                continue
            p50 = results.get(f"req_{kind}_c{c}_p50")
            p99 = results.get(f"req_{kind}_c{c}_p99")
            request_rows.append(
                [
                    label,
                    str(c),
                    _cell(rps, OURS),
                    _latency(p50, p99, OURS),
                    _cell(rps, OURS_OPEN),
                    _latency(p50, p99, OURS_OPEN),
                    _cell(rps, PEER),
                    _latency(p50, p99, PEER),
                    _ratio(rps, OURS, PEER),
                    _ratio(rps, OURS_OPEN, PEER),
                ]
            )
    if request_rows:
        out += [f"## Requests (requests/s; latency p50 / p99 in ms; {meta['duration']} s per cell)", ""]
        out += _table(
            [
                "request",
                "c",
                "ours rps (auth)",
                "ours p50 / p99",
                "ours rps (auth off)",
                "auth off p50 / p99",
                "distribution rps",
                "dist. p50 / p99",
                "ours/peer rps",
                "auth off/peer",
            ],
            request_rows,
        )
        out += [
            "",
            f"Load generator: {meta.get('loadgen', 'aiohttp')}, on the same 2-core machine as both servers "
            "(it takes CPU from them; the same for both). ours (auth) sends a bearer token from `/oauth2/token` "
            "on every request, as docker and podman do; ours (auth off) is a registry of the same server with "
            "`authDisabled`; distribution runs without authentication.",
            "",
        ]

    list_rows: list[list[str]] = []
    tags, repositories, n = meta.get("tags", "?"), meta.get("repositories", "?"), meta.get("page_size", "?")
    for key, label in (
        ("tags_page", f"tags list, {tags} tags, n={n}: per page"),
        ("tags_full", f"tags list, {tags} tags, no n: whole list"),
        ("catalog_page", f"catalog, {repositories} repositories, n={n}: per page"),
        ("catalog_full", f"catalog, {repositories} repositories, n=1000: first page"),
    ):
        figure = results.get(key)
        if figure is None or not figure.values:
            continue
        pages = results.get(f"{key}_pages")
        list_rows.append(
            [
                label,
                _cell(figure, OURS),
                _cell(pages, OURS),
                _cell(figure, PEER),
                _cell(pages, PEER),
                _ratio(figure, OURS, PEER),
            ]
        )
    if list_rows:
        out += ["## Tags list and catalog (ms per page; lower is better)", ""]
        out += _table(["", "ours ms", "ours pages", "distribution ms", "dist. pages", "ours/peer time"], list_rows)
        out.append("")

    out += _cpu_section(results)

    found = targets(results)
    out += ["## Targets (issue 10)", ""]
    out += _table(
        ["target", "ours", "threshold", "status"],
        [
            [t.name, _num(t.ours), "-" if math.isnan(t.reference) else t.reference_text, f"**{t.status}**"]
            for t in found
        ],
    )
    notes = list(results.notes)
    if results.meta.get("profile"):
        notes.append(
            "py-spy profiled our API during the c=16 cells and the first big push: those figures are perturbed"
        )
    if notes:
        out += ["", "## Notes", ""]
        out += [f"- {note}" for note in notes]
    out.append("")
    return "\n".join(out)


def _finite(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write(results: Results, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = results.meta["timestamp"].replace(":", "").replace("-", "")
    json_path = directory / f"{stem}.json"
    md_path = directory / f"{stem}.md"
    json_path.write_text(json.dumps(_finite(results.to_json()), indent=2, default=str) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path
