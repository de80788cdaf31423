"""Listing a big group through the mount: time, memory, remounts, incremental refresh.

One builtin storage lists N synthetic files (``harness.synthetic``; default
1,000,000, spread over the 65,536 ``HH/HH`` directories of ``M00``). Measures:
  * building the index (the first full read of the storage's binlog stream),
  * ``find MOUNT/group -type f | wc -l`` against ``find`` over a local tree of
    the same shape (empty files), as a ratio (the anchor, measured in the same run),
  * the daemon's RSS while ``find`` runs (peak) and after it,
  * ``ls`` of a leaf directory right after a remount (the index is on disk),
  * the binlog streams a refresh of the unchanged group sends (want: 0).

Usage: .venv/bin/python bench/bench_listing.py [--files 1000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fdfsmount.mountproc import mounted
from fdfsmount.status import ask
from harness.cluster import Cluster
from harness.process import RssSampler, rss_mib

GROUP = "big"


def count_files(root: Path) -> tuple[int, float]:
    """``find ROOT -type f | wc -l``: (count, seconds)."""
    started = time.perf_counter()
    out = subprocess.run(
        f"find {root} -type f | wc -l", shell=True, check=True, capture_output=True, text=True
    ).stdout
    return int(out.strip()), time.perf_counter() - started


def make_local_tree(root: Path, files: int) -> None:
    """Empty files in the same M00/HH/HH layout and numbers as the synthetic group."""
    for index in range(files):
        hi, lo = (index // 256) % 256, index % 256
        leaf = root / "M00" / f"{hi:02X}" / f"{lo:02X}"
        if index < 65536:
            leaf.mkdir(parents=True, exist_ok=True)
        fd = os.open(leaf / f"f{index:07d}", os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def counters(mountpoint: Path) -> dict[str, Any]:
    snap = ask(str(mountpoint))
    out: dict[str, Any] = dict(snap.get("counters") or {})
    out["client_ops"] = dict((snap.get("client") or {}).get("requests", {}))
    return out


def run(files: int, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"files": files, "load": os.getloadavg()[0]}
    cache_dir, mnt = work / "cache", work / "mnt"
    options = [f"cache_dir={cache_dir}", "list_ttl=2", "timeout=60"]
    with Cluster({GROUP: 1}, base_dir=work / "cluster", synthetic_files=files) as cluster:
        with mounted(cluster.trackers, mnt, options) as m:
            leaf = mnt / GROUP / "M00" / "12" / "34"
            started = time.perf_counter()
            os.listdir(leaf)  # starts the first index build
            wait_for("the index", lambda: counters(mnt)["list_storages_read"] >= 1, 1800)
            results["index_build_s"] = time.perf_counter() - started
            results["index_files"] = counters(mnt)["list_indexed_files"]
            with RssSampler(m.pid) as sampler:
                found, mount_find_s = count_files(mnt / GROUP)
            results["find_count"] = found
            results["find_mount_s"] = mount_find_s
            results["rss_peak_while_listing_mib"] = sampler.peak_mib
            time.sleep(1)
            results["rss_after_mib"] = rss_mib(m.pid)
            before = counters(mnt)
            time.sleep(2.5)  # past list_ttl
            os.listdir(leaf)
            refreshes = before["list_refreshes"]
            wait_for("a refresh", lambda: counters(mnt)["list_refreshes"] > refreshes, 60)
            time.sleep(0.5)
            after = counters(mnt)
            results["unchanged_refresh_binlog_streams"] = after["client_ops"].get(
                "fetch_one_path_binlog", 0
            ) - before["client_ops"].get("fetch_one_path_binlog", 0)
            results["unchanged_refresh_tracker_requests"] = after["client_ops"].get(
                "server_list_storage", 0
            ) - before["client_ops"].get("server_list_storage", 0)
        with mounted(cluster.trackers, mnt, options) as m:
            leaf = mnt / GROUP / "M00" / "AB" / "CD"
            started = time.perf_counter()
            names = os.listdir(leaf)
            results["leaf_ls_after_remount_s"] = time.perf_counter() - started
            results["leaf_ls_after_remount_names"] = len(names)
            results["rss_after_remount_mib"] = rss_mib(m.pid)
    local = work / "local"
    make_local_tree(local, files)
    found_local, local_find_s = count_files(local)
    shutil.rmtree(local)
    results["find_local_count"] = found_local
    results["find_local_s"] = local_find_s
    results["find_ratio_mount_over_local"] = mount_find_s / local_find_s
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp:
        results = run(args.files, Path(tmp))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:40} {value:.3f}" if isinstance(value, float) else f"{key:40} {value}")
    ok = results["find_count"] == args.files and results["unchanged_refresh_binlog_streams"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
