"""Where a webhook delivery may connect (issue 8, item 2): the connector's resolver checks every address it
returns, so the address connected to is one that was checked, and a name that answers a private address
on any lookup is refused."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from services.webhooks.delivery import CheckedResolver, TargetRefused


class ScriptedResolver(AbstractResolver):
    """Answers each lookup with the next address of its script (a rebinding DNS server, for instance)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        return [
            {"hostname": host, "host": address, "port": port, "family": family, "proto": 0, "flags": 0}
            for address in self.answers.pop(0)
        ]

    async def close(self) -> None:
        pass


async def test_a_public_answer_is_what_the_connector_gets() -> None:
    inner = ScriptedResolver(["20.50.2.1"])
    results = await CheckedResolver(inner, allow_private=False).resolve("hooks.example.com", 443)
    assert [r["host"] for r in results] == ["20.50.2.1"] and inner.lookups == 1


@pytest.mark.parametrize(
    "answer", [["127.0.0.1"], ["169.254.169.254"], ["20.50.2.1", "10.0.0.5"], ["::1"], ["fd00::1"]]
)
async def test_any_private_answer_refuses_the_name(answer: list[str]) -> None:
    with pytest.raises(TargetRefused):
        await CheckedResolver(ScriptedResolver(answer), allow_private=False).resolve("rebind.example.com", 80)


async def test_rebinding_gets_nowhere_each_lookup_is_checked() -> None:
    inner = ScriptedResolver(["20.50.2.1"], ["127.0.0.1"])
    resolver = CheckedResolver(inner, allow_private=False)
    assert (await resolver.resolve("rebind.example.com", 80))[0]["host"] == "20.50.2.1"
    with pytest.raises(TargetRefused):
        await resolver.resolve("rebind.example.com", 80)


async def test_local_runs_may_allow_private_targets() -> None:
    results = await CheckedResolver(ScriptedResolver(["127.0.0.1"]), allow_private=True).resolve("localhost", 80)
    assert results[0]["host"] == "127.0.0.1"
