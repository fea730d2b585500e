"""The read cache's rules (services/platform/readcache.py): pure logic, with real shared memory."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.platform.readcache import SLOTS, ChangeMarks, ReadCache


class Source:
    """A stand-in database: a dict, and a count of the reads that reached it."""

    def __init__(self) -> None:
        self.values: dict[str, str | None] = {}
        self.reads = 0

    def reader(self, key: str):  # type: ignore[no-untyped-def]
        async def read() -> str | None:
            self.reads += 1
            return self.values.get(key)

        return read


def test_marks_are_shared_by_every_mapping_of_one_file(tmp_path: Path) -> None:
    one, two = ChangeMarks(tmp_path / "marks"), ChangeMarks(tmp_path / "marks")
    slot = ChangeMarks.slot("reg/app")
    before = two.read(slot)
    one.changed("reg/app")
    assert two.read(slot) != before
    assert (tmp_path / "marks").stat().st_size == SLOTS * 8


def _change_in_child(path: str, partition: str) -> None:
    ChangeMarks(path).changed(partition)


def test_a_change_made_by_another_process_is_seen(tmp_path: Path) -> None:
    path = str(tmp_path / "marks")
    marks = ChangeMarks(path)
    slot = ChangeMarks.slot("reg/app")
    before = marks.read(slot)
    child = multiprocessing.get_context("spawn").Process(target=_change_in_child, args=(path, "reg/app"))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert marks.read(slot) != before


def test_slots_do_not_depend_on_the_process_hash_seed() -> None:
    assert ChangeMarks.slot("reg/app") == ChangeMarks.slot("reg/app")
    assert 0 <= ChangeMarks.slot("x" * 1000) < SLOTS


async def test_a_value_is_read_once_then_served_until_its_partition_changes() -> None:
    marks, source = ChangeMarks(), Source()
    cache: ReadCache[str | None] = ReadCache(marks, ttl=60)
    source.values["v1"] = "sha256:a"
    assert await cache.get("reg/app", "v1", source.reader("v1")) == "sha256:a"
    assert await cache.get("reg/app", "v1", source.reader("v1")) == "sha256:a"
    assert source.reads == 1 and cache.hits == 1
    source.values["v1"] = "sha256:b"
    marks.changed("reg/app")  # what the store does after its write
    assert await cache.get("reg/app", "v1", source.reader("v1")) == "sha256:b"
    assert source.reads == 2


async def test_a_missing_value_is_cached_too_and_a_write_makes_it_appear() -> None:
    marks, source = ChangeMarks(), Source()
    cache: ReadCache[str | None] = ReadCache(marks, ttl=60)
    assert await cache.get("reg/app", "v1", source.reader("v1")) is None
    assert await cache.get("reg/app", "v1", source.reader("v1")) is None
    assert source.reads == 1
    source.values["v1"] = "sha256:a"
    marks.changed("reg/app")
    assert await cache.get("reg/app", "v1", source.reader("v1")) == "sha256:a"


async def test_a_write_that_lands_while_a_read_is_in_flight_is_not_hidden() -> None:
    """The mark is taken before the read: a write committed after the read started changes the mark, so
    the value the read returned (maybe the old one) is not trusted afterwards."""
    marks, source = ChangeMarks(), Source()
    cache: ReadCache[str | None] = ReadCache(marks, ttl=60)
    source.values["v1"] = "old"

    async def read_then_write_lands() -> str | None:
        value = source.values["v1"]  # the read sees the old value ...
        source.values["v1"] = "new"  # ... and a write commits and marks its partition before it returns
        marks.changed("reg/app")
        return value

    assert await cache.get("reg/app", "v1", read_then_write_lands) == "old"
    assert await cache.get("reg/app", "v1", source.reader("v1")) == "new"


async def test_other_partitions_keep_their_entries() -> None:
    marks, source = ChangeMarks(), Source()
    cache: ReadCache[str | None] = ReadCache(marks, ttl=60)
    partitions = [f"reg/app{i}" for i in range(50)]
    for partition in partitions:
        await cache.get(partition, "v1", source.reader("v1"))
    marks.changed("reg/app0")
    for partition in partitions:
        await cache.get(partition, "v1", source.reader("v1"))
    # only app0 (and whatever shares its slot: none of these, or very few) is read again
    assert 51 <= source.reads <= 52


async def test_entries_expire_after_the_ttl_for_writes_of_other_instances() -> None:
    marks, source = ChangeMarks(), Source()
    cache: ReadCache[str | None] = ReadCache(marks, ttl=0.05)
    await cache.get("reg/app", "v1", source.reader("v1"))
    await asyncio.sleep(0.1)
    await cache.get("reg/app", "v1", source.reader("v1"))
    assert source.reads == 2


async def test_ttl_zero_turns_the_cache_off() -> None:
    source = Source()
    cache: ReadCache[str | None] = ReadCache(ChangeMarks(), ttl=0)
    for _ in range(3):
        await cache.get("reg/app", "v1", source.reader("v1"))
    assert source.reads == 3 and len(cache) == 0 and not cache.enabled


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=200), st.integers(1, 16))
def test_the_cache_never_holds_more_than_its_bound(keys: list[int], bound: int) -> None:
    source = Source()
    cache: ReadCache[str | None] = ReadCache(ChangeMarks(), ttl=60, max_entries=bound)

    async def run() -> None:
        for key in keys:
            await cache.get("reg/app", str(key), source.reader(str(key)))
            assert len(cache) <= bound

    asyncio.run(run())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["read", "write"]), st.integers(0, 3), st.integers(0, 3)), max_size=60))
def test_reads_always_see_the_last_write_of_the_instance(steps: list[tuple[str, int, int]]) -> None:
    """Any sequence of writes (each followed by its mark) and reads: every read returns the current value."""
    marks, source = ChangeMarks(), Source()
    cache: ReadCache[str | None] = ReadCache(marks, ttl=60, max_entries=4)

    async def run() -> None:
        version = 0
        for action, repository, key in steps:
            partition, name = f"reg/app{repository}", f"{repository}:{key}"
            if action == "write":
                version += 1
                source.values[name] = f"v{version}"
                marks.changed(partition)
            else:
                assert await cache.get(partition, name, source.reader(name)) == source.values.get(name)

    asyncio.run(run())


def test_a_marks_file_is_never_shrunk(tmp_path: Path) -> None:
    path = tmp_path / "marks"
    path.write_bytes(b"\0" * (SLOTS * 8 + 100))
    ChangeMarks(path).changed("reg/app")
    assert path.stat().st_size == SLOTS * 8 + 100


@pytest.mark.parametrize("partition", ["", "a", "reg/" + "x" * 300])
def test_any_partition_name_has_a_slot(partition: str) -> None:
    marks = ChangeMarks()
    slot = ChangeMarks.slot(partition)
    before = marks.read(slot)
    marks.changed(partition)
    assert 0 <= slot < SLOTS and marks.read(slot) != before


def test_a_marks_file_reached_through_a_symlink_is_not_used(tmp_path: Path) -> None:
    """The default file sits in a shared temp directory: a link planted there must not make us write
    random bytes into whatever it points at."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "marks").symlink_to(victim)
    marks = ChangeMarks(tmp_path / "marks")
    marks.changed("reg/app")
    assert not marks.shared and victim.read_bytes() == b"precious"


def test_a_marks_file_others_may_write_is_not_shared(tmp_path: Path) -> None:
    path = tmp_path / "marks"
    path.write_bytes(b"\0" * (SLOTS * 8))
    path.chmod(0o666)
    marks = ChangeMarks(path)
    assert not marks.shared
    before = marks.read(ChangeMarks.slot("reg/app"))
    marks.changed("reg/app")  # still works, privately
    assert marks.read(ChangeMarks.slot("reg/app")) != before
    assert path.read_bytes() == b"\0" * (SLOTS * 8)


def test_a_marks_file_made_here_is_shared_and_private_to_its_user(tmp_path: Path) -> None:
    marks = ChangeMarks(tmp_path / "marks")
    assert marks.shared and (tmp_path / "marks").stat().st_mode & 0o077 == 0
