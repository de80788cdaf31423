"""The local disk cache: survives remounts, never serves damaged bytes, LRU within its bounds."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing
from mounthelp import upload_bytes
from opshelp import ClusterView, Env, inprocess_cluster, make_env, read_all, walk
from waiting import eventually

from fdfsmount import diskcache
from fdfsmount.clientapi import ReadClient
from fdfsmount.diskcache import DiskCache
from fdfsmount.metrics import metric_families, take_snapshot
from fdfsmount.mount import MountError, open_disk_cache
from fdfsmount.mountproc import fuse_available, mounted
from fdfsmount.options import GIB, MIB, OptionError, build_options
from fdfsmount.proto import FileId, decode_file_id, parse_file_id
from fdfsmount.proto.fileid import make_remote_name
from harness.cluster import Cluster

KIB = 1024


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> ClusterView:
    """The builtin servers as tasks of this test."""
    return await inprocess_cluster(nursery, tmp_path / "servers")


def downloads(env: Env) -> int:
    return env.client.stats.requests.get("download_file", 0)


async def filled(env: Env, count: int, seconds: float = 10) -> None:
    cache = env.parts.disk_cache
    assert cache is not None
    with trio.fail_after(seconds):
        await eventually(lambda: cache.stats.fills >= count, interval=0.02)


async def test_a_file_read_before_a_remount_comes_from_disk_after_it(
    cluster: ClusterView, nursery: trio.Nursery, tmp_path: Path
) -> None:
    data = random.Random(1).randbytes(64 * KIB)
    options = {"disk_cache": str(tmp_path / "dc"), "disk_cache_min_free": 0}
    async for env in make_env(cluster, nursery, **options):
        fid = await env.client.upload(data, ext="bin", group="group1")
        attr = await walk(env.ops, str(fid))
        assert await read_all(env.ops, attr.st_ino) == data
        await filled(env, 1)
    async for env in make_env(cluster, nursery, **options):  # a remount
        attr = await walk(env.ops, str(fid))
        assert await read_all(env.ops, attr.st_ino) == data
        assert downloads(env) == 0
        cache = env.parts.disk_cache
        assert cache is not None and cache.stats.hits >= 1
        counters = env.parts.counters()
        assert counters["disk_cache_hits"] >= 1 and counters["disk_cache_files"] == 1
        assert counters["disk_cache_bytes"] == len(data)
        names = {family.name for family in metric_families(take_snapshot(env.parts, {}))}
        assert {"fdfsmount_disk_cache_hits", "fdfsmount_disk_cache_corrupt"} <= names


@pytest.mark.expect_log_warnings
async def test_a_damaged_cache_file_is_discarded_and_downloaded_again(
    cluster: ClusterView, nursery: trio.Nursery, tmp_path: Path
) -> None:
    data = random.Random(2).randbytes(64 * KIB)
    options = {"disk_cache": str(tmp_path / "dc"), "disk_cache_min_free": 0}
    async for env in make_env(cluster, nursery, **options):
        fid = await env.client.upload(data, ext="bin", group="group1")
        assert await read_all(env.ops, (await walk(env.ops, str(fid))).st_ino) == data
        await filled(env, 1)
        assert env.parts.disk_cache is not None
        cached = env.parts.disk_cache.path_of(str(fid))
    flipped = bytearray(cached.read_bytes())  # flip a few bytes in the middle
    flipped[30_000:30_008] = bytes(b ^ 0xFF for b in data[30_000:30_008])
    await trio.Path(cached).write_bytes(flipped)
    async for env in make_env(cluster, nursery, **options):
        assert await read_all(env.ops, (await walk(env.ops, str(fid))).st_ino) == data
        cache = env.parts.disk_cache
        assert cache is not None
        assert cache.stats.corrupt == 1 and downloads(env) == 1
        await filled(env, 1)  # and stored again, good this time
        assert zlib.crc32(cached.read_bytes()) == decode_file_id(fid).crc32


async def test_big_files_are_assembled_from_the_reads_and_slaves_are_checked_by_the_server(
    cluster: ClusterView, nursery: trio.Nursery, tmp_path: Path
) -> None:
    big = random.Random(3).randbytes(3 * MIB + 123)
    options = {"disk_cache": str(tmp_path / "dc"), "disk_cache_min_free": 0, "readahead": 0}
    async for env in make_env(cluster, nursery, **options):
        master = await env.client.upload(big, ext="bin", group="group1")
        slave = await env.client.upload_slave(master, b"thumbnail bytes", prefix="_s", ext="bin")
        assert await read_all(env.ops, (await walk(env.ops, str(master))).st_ino) == big
        assert (
            await read_all(env.ops, (await walk(env.ops, str(slave))).st_ino) == b"thumbnail bytes"
        )
        await filled(env, 2)
    async for env in make_env(cluster, nursery, **options):
        assert await read_all(env.ops, (await walk(env.ops, str(master))).st_ino) == big
        assert (
            await read_all(env.ops, (await walk(env.ops, str(slave))).st_ino) == b"thumbnail bytes"
        )
        assert downloads(env) == 0


async def test_appender_files_are_not_cached_on_disk(
    cluster: ClusterView, nursery: trio.Nursery, tmp_path: Path
) -> None:
    options = {"disk_cache": str(tmp_path / "dc"), "disk_cache_min_free": 0}
    async for env in make_env(cluster, nursery, **options):
        fid = await env.client.upload(b"changes", ext="log", group="group1", appender=True)
        assert await read_all(env.ops, (await walk(env.ops, str(fid))).st_ino) == b"changes"
        await trio.sleep(0.2)
        cache = env.parts.disk_cache
        assert cache is not None and cache.files == 0 and not cache.contains(fid)


# ---------------------------------------------------------------- bounds, without a cluster


def normal_file(data: bytes, n: int) -> FileId:
    remote = make_remote_name(source=1, create_time=1_700_000_000 + n, size=len(data),
                              crc32=zlib.crc32(data), ext="bin")  # fmt: skip
    return parse_file_id(f"group1/{remote}")


async def test_least_recently_used_files_go_first_and_the_free_space_floor_holds(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    contents = {normal_file(d, i): d for i, d in enumerate(os.urandom(400 * KIB) for _ in range(3))}
    fids = list(contents)

    async def download(fid: FileId, offset: int, length: int) -> bytes:
        return contents[fid][offset : offset + length]

    cache = DiskCache(tmp_path / "dc", capacity=1 * MIB, min_free=0, nursery=nursery)
    try:
        for fid in fids[:2]:
            assert await cache.fill(fid, decode_file_id(fid), len(contents[fid]), download)
        assert await cache.read(fids[0], 0, 10) == contents[fids[0]][:10]  # fids[1] is now LRU
        assert await cache.fill(fids[2], decode_file_id(fids[2]), 400 * KIB, download)
        assert cache.contains(fids[0]) and cache.contains(fids[2])
        assert not cache.contains(fids[1]) and not cache.path_of(str(fids[1])).exists()
        assert cache.stats.evictions == 1 and cache.bytes == 800 * KIB
    finally:
        cache.close()
    floor = DiskCache(tmp_path / "dc2", capacity=1 * GIB, min_free=1 << 60, nursery=nursery)
    try:
        fid = fids[0]
        assert not await floor.fill(fid, decode_file_id(fid), 400 * KIB, download)
        assert floor.stats.skipped_no_space == 1 and floor.files == 0
    finally:
        floor.close()


@pytest.mark.expect_log_warnings
async def test_a_download_that_does_not_match_its_crc32_is_not_kept(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    fid = normal_file(b"the real bytes", 9)

    async def wrong(fid: FileId, offset: int, length: int) -> bytes:
        return b"not those bytes"[offset : offset + length]

    cache = DiskCache(tmp_path / "dc", capacity=1 * MIB, min_free=0, nursery=nursery)
    try:
        assert not await cache.fill(fid, decode_file_id(fid), 14, wrong)
        assert cache.files == 0 and cache.stats.fill_failures == 1
    finally:
        cache.close()


def test_disk_cache_options() -> None:
    opts = build_options(
        "h:1", "/mnt", ["disk_cache=rel/dc,disk_cache_size=2G,disk_cache_min_free=5G"]
    )
    assert opts.disk_cache == os.path.abspath("rel/dc")
    assert (opts.disk_cache_size, opts.disk_cache_min_free) == (2 * GIB, 5 * GIB)
    with pytest.raises(OptionError, match="disk_cache_size"):
        build_options("h:1", "/mnt", ["disk_cache=/x,disk_cache_size=10K"])


# ---------------------------------------------------------------- a real mount, and warmup


def fdfsmount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fdfsmount", *args], capture_output=True, text=True, timeout=120
    )


def status_of(mountpoint: Path) -> dict[str, Any]:
    done = fdfsmount("status", os.fspath(mountpoint), "--json")
    assert done.returncode == 0, done.stderr
    snap: dict[str, Any] = json.loads(done.stdout)
    return snap


@pytest.mark.mount
@pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3")
def test_warmup_fills_the_disk_cache_and_a_remount_reads_from_it(
    fdfs_cluster: Cluster, tmp_path: Path
) -> None:
    small, big = os.urandom(64 * KIB), os.urandom(5 * MIB + 7)
    fids = [str(upload_bytes(fdfs_cluster, d)) for d in (small, big)]
    mnt = tmp_path / "mnt"
    with mounted(fdfs_cluster.trackers, mnt, ["timeout=10"]) as m:
        done = fdfsmount("warmup", os.fspath(m.mountpoint), fids[0])
        assert done.returncode == 1 and "has no disk cache" in done.stderr
        assert "Traceback" not in done.stderr
    options = ["timeout=10", f"disk_cache={tmp_path / 'dc'}", "disk_cache_min_free=0"]
    with mounted(fdfs_cluster.trackers, mnt, options) as m:
        done = fdfsmount("warmup", os.fspath(m.mountpoint), *fids)
        assert done.returncode == 0, done.stderr
        assert "read 2 files" in done.stdout and "2 stored" in done.stdout
        counters = status_of(m.mountpoint)["counters"]
        assert counters["disk_cache_files"] == 2
        assert counters["disk_cache_bytes"] == len(small) + len(big)
    with mounted(fdfs_cluster.trackers, mnt, options) as m:
        assert (m.mountpoint / fids[0]).read_bytes() == small
        assert (m.mountpoint / fids[1]).read_bytes() == big
        snap = status_of(m.mountpoint)
        assert snap["client"]["requests"].get("download_file", 0) == 0
        assert snap["counters"]["disk_cache_hits"] >= 2
        human = fdfsmount("status", os.fspath(m.mountpoint))
        assert "disk cache" in human.stdout and "listing" in human.stdout


async def test_files_being_assembled_stay_within_the_cache_size(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    blobs = [os.urandom(600 * KIB) for _ in range(3)]
    fids = [normal_file(b, 20 + i) for i, b in enumerate(blobs)]
    cache = DiskCache(tmp_path / "dc", capacity=1 * MIB, min_free=0, nursery=nursery)
    try:
        for fid, blob in zip(fids, blobs, strict=True):
            cache.offer(fid, decode_file_id(fid), len(blob), 0, blob[: 128 * KIB])
        partial_dir = tmp_path / "dc" / "partial"
        names = {
            cache.path_of(str(fid)).name: (fid, blob) for fid, blob in zip(fids, blobs, strict=True)
        }  # a partial file is named <its file's name>.<assembly number>
        # Two would be 1.2 MiB of a 1 MiB cache: one is kept (whichever came last).
        with trio.fail_after(10):
            await eventually(lambda: len(list(partial_dir.iterdir())) == 1, interval=0.01)
            await trio.sleep(0.1)  # and no other comes back
            kept = list(partial_dir.iterdir())
        assert len(kept) == 1
        # The one still being assembled completes and is stored.
        last, blob = names[kept[0].name.split(".")[0]]
        cache.offer(last, decode_file_id(last), len(blob), 128 * KIB, blob[128 * KIB :])
        with trio.fail_after(10):
            await eventually(lambda: cache.contains(last), interval=0.01)
        assert await cache.read(last, 0, 600 * KIB) == blob
    finally:
        cache.close()


async def test_bytes_read_again_while_a_file_is_assembled_are_written_once(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readahead and other readers offer the same bytes twice; the file is stored once."""
    blob = os.urandom(600 * KIB)
    fid = normal_file(blob, 30)
    info = decode_file_id(fid)
    half = 300 * KIB
    writes: list[tuple[str, int]] = []
    real_write_at = diskcache.write_at

    def write_at(path: Path, offset: int, data: bytes | bytearray) -> None:
        writes.append((path.name, offset))
        real_write_at(path, offset, data)

    monkeypatch.setattr(diskcache, "write_at", write_at)
    cache = DiskCache(tmp_path / "dc", capacity=4 * MIB, min_free=0, nursery=nursery)
    try:
        # The first half comes again while the second is still being written.
        cache.offer(fid, info, len(blob), 0, blob[:half])
        cache.offer(fid, info, len(blob), half, blob[half:])
        cache.offer(fid, info, len(blob), 0, blob[:half])
        with trio.fail_after(10):
            await eventually(lambda: cache.contains(fid), interval=0.01)
        # And once more after it is stored: nothing to add.
        cache.offer(fid, info, len(blob), 0, blob[:half])
        await trio.testing.wait_all_tasks_blocked()
        assert await cache.read(fid, 0, len(blob)) == blob
        counters = cache.counters()
        assert counters["disk_cache_files"] == 1 and counters["disk_cache_bytes"] == len(blob)
        assert counters["disk_cache_fill_failures"] == 0 and counters["disk_cache_fills"] == 1
        assert not list((tmp_path / "dc" / "partial").iterdir())
        assert sorted(writes) == sorted({(writes[0][0], 0), (writes[0][0], half)}), writes
    finally:
        cache.close()


async def test_an_unusable_disk_cache_directory_is_a_one_line_mount_error(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    opts = build_options("127.0.0.1:1", "/mnt", [f"disk_cache={blocker}"])
    with pytest.raises(MountError, match=f"disk_cache={blocker}: cannot use it"):
        open_disk_cache(opts, cast(ReadClient, None), nursery)
