"""The management API fuzzed from its own OpenAPI document (schemathesis): whatever the path, query and body,
no operation answers 5xx. The caller is Owner of a subscription of its own, so creates, updates and deletes
really run there (and nowhere else: the default registry lives in another subscription)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from services.management.api import ROUTES
from tests.conftest import Devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import make_subscription_owner

pytestmark = pytest.mark.integration

FUZZ_SUBSCRIPTION = str(uuid.uuid4())
FUZZ_OWNER = str(uuid.uuid4())


def _schema(devhost: Devhost) -> Any:
    document = httpx.get(f"{devhost.url}/openapi/management.json", timeout=30).json()
    # Aim the fuzzing at the subscription the caller owns (other subscriptions only ever answer 403).
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation["parameters"]:
                if parameter["name"] == "subscriptionId":
                    parameter["schema"] = {"enum": [FUZZ_SUBSCRIPTION]}
                if parameter["name"] == "api-version":
                    parameter["schema"] = {"enum": ["2025-11-01"]}
    return schemathesis.openapi.from_dict(document)


def test_no_management_operation_answers_5xx(devhost: Devhost, entra_issuer: TestIssuer) -> None:
    # schemathesis's pytest plugin does not run under pytest 9 yet: each operation's strategy is driven by
    # hypothesis here instead.
    asyncio.run(make_subscription_owner(devhost.env, FUZZ_SUBSCRIPTION, FUZZ_OWNER, entra_issuer.tenant))
    headers = {"Authorization": f"Bearer {entra_issuer.token(FUZZ_OWNER)}"}
    failures: list[str] = []
    operations = [result.ok() for result in _schema(devhost).get_all_operations()]
    assert len(operations) >= 30
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            try:
                response = case.call(base_url=devhost.url, headers=headers)
            except requests.ConnectionError as error:  # the server dropped the request: as bad as a 5xx
                failures.append(f"{case.method} {case.formatted_path} {case.body!r}: {error}")
                return
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")

        run()
    assert not failures, "\n".join(failures[:20]) + "\n" + devhost.log.read_text()[-3000:]


def test_the_document_names_every_route_the_api_serves(devhost: Devhost) -> None:
    document = httpx.get(f"{devhost.url}/openapi/management.json", timeout=30).json()
    assert document["openapi"] == "3.1.0"
    assert sum(len(operations) for operations in document["paths"].values()) >= 30
    samples = {
        "{subscriptionId}": FUZZ_SUBSCRIPTION,
        "{resourceGroupName}": "rg",
        "{registryName}": "reg01",
        "{webhookName}": "hook1",
        "{replicationName}": "eastus",
        "{scopeMapName}": "map01",
        "{tokenName}": "tok01",
        "{location}": "westeurope",
        "{operationId}": "op1",
    }
    concrete = []
    for path in document["paths"]:
        for name, value in samples.items():
            path = path.replace(name, value)
        concrete.append(path)
    for pattern, _ in ROUTES:  # every route the dispatcher serves is documented
        assert any(pattern.match(path) for path in concrete), pattern.pattern
