"""`/metrics` under a real client: a skopeo round trip (copy in, copy out) moves the push and pull counters
by exactly the manifest PUTs and GETs skopeo sent (read from its own debug log), as ACR counts them.

A devhost of this module's own with METRICS_ENDPOINT on (what `make run` sets): its counters are this
process's alone, so nothing else in the session moves them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Devhost, running_devhost
from tests.e2e.clients import Skopeo, build_single_platform_image

pytestmark = pytest.mark.e2e

# skopeo --debug logs each request as: level=debug msg="GET http://127.0.0.1:5000/v2/<repo>/manifests/<ref>"
SKOPEO_REQUEST = re.compile(r'msg="(?P<method>[A-Z]+) https?://[^/"]+/v2/(?P<path>[^"\s]+)"')
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


@pytest.fixture(scope="module")
def metrics_devhost(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    with running_devhost(stack | {"METRICS_ENDPOINT": "true"}, tmp_path_factory.mktemp("metrics")) as host:
        yield host


def scrape(devhost: Devhost) -> dict[tuple[str, str], float]:
    """{(metric, labels): value} of the devhost's /metrics (loopback: no token needed)."""
    response = httpx.get(f"{devhost.url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[tuple[str, str], float] = {}
    for line in response.text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples[(match["name"], match["labels"])] = float(match["value"])
    return samples


def image_requests(log: str) -> tuple[int, int]:
    """How many manifest GETs (pulls) and PUTs (pushes) a skopeo debug log shows."""
    pulls = pushes = 0
    for match in SKOPEO_REQUEST.finditer(log):
        if "/manifests/" not in match["path"]:
            continue
        pulls += match["method"] == "GET"
        pushes += match["method"] == "PUT"
    return pulls, pushes


def counter(samples: dict[tuple[str, str], float], name: str, registry: str) -> float:
    return samples.get((f"{name}_total", f'registry="{registry}"'), 0.0)


def test_a_skopeo_round_trip_moves_the_push_and_pull_counters_by_what_skopeo_did(
    metrics_devhost: Devhost, skopeo: Skopeo, repo_name: Callable[[str], str], tmp_path: Path
) -> None:
    registry = metrics_devhost.env.get("DEFAULT_REGISTRY", "local")
    layout, _ = build_single_platform_image(tmp_path / "src", [4096, 2048], tag="v1")
    remote = f"docker://{metrics_devhost.host}/{repo_name('metered')}:v1"
    before = scrape(metrics_devhost)

    pushed = skopeo.copy(layout.reference("v1"), remote, debug=True)
    pulled = skopeo.copy(remote, f"oci:{tmp_path / 'out'}:v1", debug=True)

    push_gets, push_puts = image_requests(pushed.stderr.decode())
    pull_gets, pull_puts = image_requests(pulled.stderr.decode())
    assert push_puts == 1 and pull_puts == 0 and pull_gets >= 1, (push_gets, push_puts, pull_gets, pull_puts)
    after = scrape(metrics_devhost)
    moved = {
        name: counter(after, name, registry) - counter(before, name, registry)
        for name in ("totalpushcount", "successfulpushcount", "totalpullcount", "successfulpullcount")
    }
    gets = push_gets + pull_gets
    assert moved == {"totalpushcount": 1, "successfulpushcount": 1, "totalpullcount": gets, "successfulpullcount": gets}
    # the request histogram: by route template and status class, never by repository
    text = httpx.get(f"{metrics_devhost.url}/metrics", timeout=30).text
    assert 'http_route="/v2/{name}/manifests/{reference}"' in text and "metered" not in text
    assert f'storageused_bytes{{registry="{registry}"}}' in text
