"""The emulator ports `make run` uses: the Azurite queue and table ports follow the blob port (README)."""

from __future__ import annotations

from services.devhost.__main__ import emulator_ports


def test_defaults_are_the_documented_ports() -> None:
    ports = emulator_ports({})
    assert (ports.blob, ports.queue, ports.table, ports.cosmos) == (10000, 10001, 10002, 8081)


def test_queue_and_table_follow_the_blob_port() -> None:
    ports = emulator_ports({"AZURITE_BLOB_PORT": "20000"})
    assert (ports.blob, ports.queue, ports.table) == (20000, 20001, 20002)


def test_explicit_queue_and_table_ports_win() -> None:
    ports = emulator_ports({"AZURITE_BLOB_PORT": "20000", "AZURITE_QUEUE_PORT": "30001", "AZURITE_TABLE_PORT": "30002"})
    assert (ports.blob, ports.queue, ports.table) == (20000, 30001, 30002)
