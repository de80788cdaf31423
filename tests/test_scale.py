"""Listing at scale: a storage listing a million synthetic files (see `harness.synthetic`)."""

from __future__ import annotations

import os
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio
from opshelp import listdir, make_env, walk
from waiting import eventually, wait_until

from fdfsmount.listing import ListingStats
from fdfsmount.mountproc import fuse_available, mounted
from fdfsmount.proto import decode_file_id, parse_file_id
from fdfsmount.status import ask
from harness.process import rss_mib
from harness.pytest_plugin import ClusterFactory
from harness.synthetic import source_bytes, synthetic_name

pytestmark = pytest.mark.processes  # starts servers, mounts or programs

MIB = 1024 * 1024





def refreshed_and_skipped(stats: ListingStats) -> bool:
    return stats.refreshes >= 1 and stats.storages_skipped >= 1


@pytest.mark.slow
async def test_a_million_files_are_all_listed_with_bounded_memory(
    fdfs_cluster_factory: ClusterFactory,
    nursery: trio.Nursery,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = 1_000_000
    cluster = await fdfs_cluster_factory.start_async(
        groups={"big": 1}, synthetic_files=files, storage_id_mode=True
    )
    storage_id = int(cluster.storages_of("big")[0].storage_id or 0)
    baseline = rss_mib()
    peak = baseline
    async for env in make_env(cluster, nursery, cache_dir=str(tmp_path), list_ttl=3600):
        listing = env.parts.listing
        await listing.names("big", 0, 0, 0)  # starts the first read
        with trio.fail_after(900):
            while listing.stats.storages_read < 1:
                peak = max(peak, rss_mib())
                await trio.sleep(0.2)
        assert listing.counters()["list_indexed_files"] == files
        # Every leaf, counted: each file once.
        total = 0
        for hi in range(256):
            for lo in range(256):
                total += len(await listing.names("big", 0, hi, lo))
            peak = max(peak, rss_mib())
        assert total == files
        # A leaf through the file system operations holds exactly its synthetic files.
        leaf = await walk(env.ops, "big/M00/01/02")
        names = set(await listdir(env.ops, leaf.st_ino, monkeypatch))
        want = {
            synthetic_name(i, source_bytes(storage_id))[10:] for i in range(0x0102, files, 65536)
        }
        assert names == want
        one = parse_file_id(f"big/M00/01/02/{sorted(names)[0]}")
        assert decode_file_id(one).source == str(storage_id)
    # Memory did not grow with the file count (the names live on disk).
    assert peak - baseline < 80, f"RSS grew by {peak - baseline:.0f} MiB"

    # A remount: the index is there at once, and a refresh of the unchanged
    # group streams nothing.
    async for env in make_env(cluster, nursery, cache_dir=str(tmp_path), list_ttl=3600):
        listing = env.parts.listing
        assert len(await listing.names("big", 0, 0xAB, 0xCD)) in (15, 16)
        with trio.fail_after(30):
            await eventually(partial(refreshed_and_skipped, listing.stats))
        assert env.client.stats.requests.get("fetch_one_path_binlog", 0) == 0
        assert listing.stats.storages_read == 0


@pytest.mark.slow
@pytest.mark.mount
@pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3")
def test_find_through_the_mount_counts_every_file_and_memory_stays_bounded(
    fdfs_cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    # Enough files that most file inodes the kernel holds move to disk
    # (inodespill.RESIDENT_FILES); 16x16 directories keep the run short.
    files = 60_000
    cluster = fdfs_cluster_factory(groups={"big": 1}, synthetic_files=files, subdirs=16)
    options = ["timeout=60", f"cache_dir={tmp_path / 'cache'}"]
    with mounted(cluster.trackers, tmp_path / "mnt", options) as m:
        os.listdir(m.mountpoint / "big" / "M00" / "00" / "00")
        wait_until(
            lambda: ask(str(m.mountpoint))["counters"]["list_storages_read"] >= 1,
            timeout=600, interval=0.2, what="the index to be built",
        )  # fmt: skip
        out = subprocess.run(
            f"find {m.mountpoint / 'big'} -type f | wc -l",
            shell=True, check=True, capture_output=True, text=True, timeout=1800,
        ).stdout  # fmt: skip
        assert int(out) == files
        counters = ask(str(m.mountpoint))["counters"]
        assert counters["inodes_in_memory"] < counters["inodes"]
        assert rss_mib(m.pid) < 150
    with mounted(cluster.trackers, tmp_path / "mnt", options) as m:
        names = os.listdir(m.mountpoint / "big" / "M00" / "0A" / "0B")
        assert len(names) == len(range(0x0A * 16 + 0x0B, files, 256))
