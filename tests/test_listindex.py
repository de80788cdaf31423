"""The on-disk listing index: persistence across remounts, incremental refresh, deletions."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from opshelp import Env, listdir, make_env, walk
from waiting import eventually

from fdfsmount.listindex import GroupIndexDB, pack_dir
from fdfsmount.listing import Listing, ListingStats
from fdfsmount.proto import FileId, ServerAddr
from fdfsmount.proto.binlog import BinlogRecord
from harness.cluster import Cluster

# ---------------------------------------------------------------- the index file


def test_tables_swap_whole_and_union_over_storages(tmp_path: Path) -> None:
    db = GroupIndexDB(tmp_path / "g.sqlite")
    try:
        a = db.writer("s1")
        a.add([(pack_dir(0, 1, 2), "b.txt"), (pack_dir(0, 1, 2), "a.txt")])
        a.add([(pack_dir(0, 1, 2), "a.txt"), (pack_dir(0, 3, 4), "c.txt")])  # duplicate ignored
        db.commit_table("s1", a.table, "sig1", 1.0, a.files)
        b = db.writer("s2")
        b.add([(pack_dir(0, 1, 2), "a.txt"), (pack_dir(1, 0, 0), "d.txt")])
        db.commit_table("s2", b.table, "sig2", 1.0, b.files)
        db.reload()
        assert db.names(0, 1, 2) == ["a.txt", "b.txt"]  # sorted, replicas merged
        assert db.names(1, 0, 0) == ["d.txt"] and db.names(0, 9, 9) == []
        assert db.has(0, 3, 4, "c.txt") and not db.has(0, 3, 4, "x.txt")
        assert db.nonempty_subdirs(0) == {1, 3} and db.nonempty_subdirs(0, 1) == {2}
        # Re-reading s1 replaces its table: what the new read lacks is gone.
        again = db.writer("s1")
        again.add([(pack_dir(0, 1, 2), "b.txt")])
        db.commit_table("s1", again.table, "sig1b", 2.0, again.files)
        db.reload()
        assert db.names(0, 1, 2) == ["a.txt", "b.txt"]  # a.txt still on s2
        assert not db.has(0, 3, 4, "c.txt")
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'names_%'"
        tables = {r[0] for r in sqlite3.connect(db.path).execute(sql)}
        assert tables == {again.table, b.table}
        db.retire(["s1"], "s1")
        db.reload()
        assert db.names(1, 0, 0) == [] and set(db.entries) == {"s1"}
    finally:
        db.close_writer()
        db.close()


def test_a_damaged_index_file_is_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    db = GroupIndexDB(path)
    try:
        assert not db.has_index and db.names(0, 0, 0) == []
    finally:
        db.close()


# ---------------------------------------------------------------- against a cluster


async def wait_listed(env: Env, fid: FileId, present: bool = True, seconds: float = 20) -> None:
    listing = env.parts.listing
    hi, lo = fid.subdirs
    with trio.fail_after(seconds):
        while True:
            names = await listing.names(fid.group, fid.store_path_index, hi, lo)
            if (fid.name in names) == present:
                return
            await trio.sleep(0.1)


async def wait_settled(env: Env, seconds: float = 30) -> None:
    """Until a whole refresh passes without re-reading any storage."""
    listing = env.parts.listing
    with trio.fail_after(seconds):
        while True:
            before = (listing.stats.refreshes, listing.stats.storages_read)
            while listing.stats.refreshes < before[0] + 2:
                await listing.names("group1", 0, 0, 0)
                await trio.sleep(0.05)
            if listing.stats.storages_read == before[1]:
                return


def binlog_streams(env: Env) -> int:
    return env.client.stats.requests.get("fetch_one_path_binlog", 0)


async def test_an_unchanged_group_is_refreshed_without_any_binlog_stream(
    cluster: Cluster, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async for env in make_env(cluster, nursery, list_ttl=0.1, cache_dir=str(tmp_path)):
        fid = await env.client.upload(b"counted once", ext="txt", group="group1")
        await wait_listed(env, fid)
        await wait_settled(env)
        listing = env.parts.listing
        streams, refreshes = binlog_streams(env), listing.stats.refreshes
        requests = dict(env.client.stats.requests)
        with trio.fail_after(10):
            while listing.stats.refreshes < refreshes + 5:
                await listing.names("group1", 0, 0, 0)
                await trio.sleep(0.05)
        done = listing.stats.refreshes - refreshes
        assert binlog_streams(env) == streams
        sent = {op: n - requests.get(op, 0) for op, n in env.client.stats.requests.items()}
        sent = {op: n for op, n in sent.items() if n}
        # One tracker request per refresh, however many storages the group has.
        assert set(sent) == {"server_list_storage"}
        assert done <= sent["server_list_storage"] <= done + 1
        assert fid.name in await listing.names("group1", 0, *fid.subdirs)


async def test_a_new_file_is_found_by_rereading_its_storage(
    cluster: Cluster, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async for env in make_env(cluster, nursery, list_ttl=0.1, cache_dir=str(tmp_path)):
        await env.parts.listing.names("group2", 0, 0, 0)
        await wait_settled(env)
        listing = env.parts.listing
        read_before = listing.stats.storages_read
        fid = await env.client.upload(b"only group2", ext="txt", group="group2")
        await wait_listed(env, fid)
        # group2 has one storage and group1 did not change: one storage was read
        # (again later while the change is fresh, see SETTLE_SECONDS).
        assert listing.stats.storages_read > read_before
        assert listing.has_file(fid)


async def test_deleted_files_leave_the_index(
    cluster: Cluster, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async for env in make_env(cluster, nursery, list_ttl=0.1, cache_dir=str(tmp_path)):
        keep = await env.client.upload(b"stays", ext="txt", group="group1")
        gone = await env.client.upload(b"goes", ext="txt", group="group1")
        await wait_listed(env, keep)
        await wait_listed(env, gone)
        await env.client.delete(gone)  # not through the mount: nothing hides it locally
        await wait_listed(env, gone, present=False)
        assert not env.parts.listing.has_file(gone)
        assert env.parts.listing.has_file(keep)


async def test_a_remount_serves_the_last_index_at_once(
    cluster: Cluster, nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for env in make_env(cluster, nursery, list_ttl=60, cache_dir=str(tmp_path)):
        fid = await env.client.upload(b"before the remount", ext="txt", group="group1")
        await wait_listed(env, fid)
    release = trio.Event()
    async for env in make_env(cluster, nursery, list_ttl=60, cache_dir=str(tmp_path)):
        real_fetch_binlog = env.client.fetch_binlog
        started = 0
        fetch = real_fetch_binlog

        @asynccontextmanager
        async def stalled(
            server: ServerAddr, group: str, index: int
        ) -> AsyncIterator[AsyncIterator[BinlogRecord]]:
            nonlocal started
            started += 1
            await release.wait()
            async with fetch(server, group, index) as records:  # noqa: B023 - one pass
                yield records

        monkeypatch.setattr(env.client, "fetch_binlog", stalled)
        hi, lo = fid.subdirs
        leaf = await walk(env.ops, f"group1/M00/{hi:02X}/{lo:02X}")
        # Answered while the stream is held up: no waiting for any stream.
        assert fid.name in await listdir(env.ops, leaf.st_ino, monkeypatch)
        # ... and a refresh runs behind it.
        listing = env.parts.listing
        stats = listing.stats

        def refreshed(stats: ListingStats = stats) -> bool:
            return stats.refreshes > 0

        with trio.fail_after(10):
            await eventually(refreshed)
        release.set()


def test_listing_without_a_cache_dir_uses_a_temporary_file() -> None:
    listing = Listing(None, enabled=True, ttl=1, first_wait=1)  # type: ignore[arg-type]
    fid = FileId("group1", "M00/00/00/wKgAAWc1EV6AAAAAAAAAAAAAAAA.txt")
    assert not listing.has_file(fid)
    listing.close()
