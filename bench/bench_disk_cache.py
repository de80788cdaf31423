"""Re-reading 64 KiB files after a remount: from the disk cache vs from local files.

Uploads N files of 64 KiB to a local builtin cluster, reads them once through
a mount with ``-o disk_cache`` (which stores them), remounts, and reads them
again: served from the disk cache, no download. Anchors measured in the same run:
  * the same bytes read from N local files, their pages dropped first (cold),
    as the disk cache's own files are before the re-read,
  * the same local files read again with their pages cached (warm),
  * the same re-read through a mount without a disk cache (downloads),
  * the same paths read from a freshly mounted null pyfuse3 filesystem serving
    bytes from memory (``bench/nullfs.py``): the ceiling of any FUSE daemon
    here, which says how much of the gap to a local file is FUSE itself.
Each figure is files per second for open + read + close of every file, in one
thread, as ``cat`` of each file would; ratios are mount / anchor.

Usage: .venv/bin/python bench/bench_disk_cache.py [--files 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from fdfsmount.mountproc import mounted
from fdfsmount.proto.client import Client
from fdfsmount.status import ask
from harness.cluster import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for bench.run_all
from bench.run_all import null_mount

KIB = 1024


def drop_pages(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_each(paths: list[Path]) -> float:
    """Files per second for open + read + close of each path."""
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(128 * KIB):
                pass
    return len(paths) / (time.perf_counter() - started)


async def upload_all(trackers: list[str], blobs: list[bytes]) -> list[str]:
    async with Client(trackers) as client:
        return [str(await client.upload(b, ext="bin")) for b in blobs]


def run(count: int, work: Path) -> dict[str, Any]:
    blobs = [os.urandom(64 * KIB) for _ in range(count)]
    local = work / "local"
    local.mkdir()
    local_paths = []
    for i, blob in enumerate(blobs):
        path = local / f"f{i:05d}.bin"
        path.write_bytes(blob)
        os.fsync(os.open(path, os.O_RDONLY))
        local_paths.append(path)
    results: dict[str, Any] = {"files": count, "load": os.getloadavg()[0]}
    disk_cache = work / "dc"
    options = ["timeout=30", f"disk_cache={disk_cache}", "disk_cache_min_free=0"]
    with Cluster({"group1": 1}, base_dir=work / "cluster") as cluster:
        fids = trio.run(upload_all, cluster.trackers, blobs)
        mnt = work / "mnt"
        with mounted(cluster.trackers, mnt, ["timeout=30"]) as m:
            results["mount_no_disk_cache_per_s"] = read_each([m.mountpoint / f for f in fids])
        with mounted(cluster.trackers, mnt, options) as m:
            read_each([m.mountpoint / f for f in fids])  # fills the disk cache
            deadline = time.monotonic() + 60
            while ask(str(m.mountpoint))["counters"]["disk_cache_files"] < count:
                if time.monotonic() > deadline:
                    raise SystemExit("the disk cache did not fill")
                time.sleep(0.1)
        for path in (disk_cache).rglob("*"):
            if path.is_file() and path.parent.parent.name == "data":
                drop_pages(path)
        for path in local_paths:
            drop_pages(path)
        with mounted(cluster.trackers, mnt, options) as m:
            paths = [m.mountpoint / f for f in fids]
            results["mount_disk_cache_per_s"] = read_each(paths)
            snap = ask(str(m.mountpoint))
            results["downloads_after_remount"] = snap["client"]["requests"].get("download_file", 0)
            results["disk_cache_hits"] = snap["counters"]["disk_cache_hits"]
            for fid, blob in zip(fids, blobs, strict=True):
                assert (m.mountpoint / fid).read_bytes() == blob
    with null_mount(work / "null", {f: 64 * KIB for f in fids}) as null:
        results["null_fuse_per_s"] = read_each([null / f for f in fids])
    results["local_cold_per_s"] = read_each(local_paths)
    results["local_warm_per_s"] = read_each(local_paths)
    mount = results["mount_disk_cache_per_s"]
    results["ratio_vs_local_cold"] = mount / results["local_cold_per_s"]
    results["ratio_vs_local_warm"] = mount / results["local_warm_per_s"]
    results["ratio_vs_no_disk_cache"] = mount / results["mount_no_disk_cache_per_s"]
    results["ratio_vs_null_fuse"] = mount / results["null_fuse_per_s"]
    results["null_fuse_vs_local_cold"] = results["null_fuse_per_s"] / results["local_cold_per_s"]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-disk-cache-") as tmp:
        results = run(args.files, Path(tmp))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:32} {value:.3f}" if isinstance(value, float) else f"{key:32} {value}")
    return 0 if results["downloads_after_remount"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
