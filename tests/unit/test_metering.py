"""Every route the dispatcher matches has a route template for its span name and its metric label."""

from __future__ import annotations

import re
from typing import get_args

from services.registry.acr_paths import AcrRouteKind
from services.registry.metering import ROUTE_TEMPLATES, UNMATCHED
from services.registry.reference import RouteKind


def test_every_route_kind_has_a_template_and_nothing_else_does() -> None:
    assert set(ROUTE_TEMPLATES) == set(get_args(RouteKind)) | set(get_args(AcrRouteKind))


def test_templates_hold_placeholders_only_never_names() -> None:
    for template in [*ROUTE_TEMPLATES.values(), UNMATCHED]:
        assert template.startswith(("/v2/", "/acr/v1/"))
        # What varies per request is a {placeholder}; the rest is the API's own fixed segments.
        fixed = re.sub(r"\{[a-z]+\}", "", template)
        assert set(fixed.split("/")) <= {
            "",
            "v2",
            "acr",
            "v1",
            "_catalog",
            "tags",
            "list",
            "manifests",
            "blobs",
            "uploads",
            "referrers",
            "_tags",
            "_manifests",
            "_scan",
            "_deleted",
        }, template
