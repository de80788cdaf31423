"""What confirming existence costs: the default mount against ``-o trust_ids``, in one run.

Two mounts of one local builtin cluster, one default (a normal file exists once a
storage confirmed it, kept for ``exists_ttl``) and one with ``trust_ids`` (a
well-formed ID is a file, no round trip). Both with ``entry_timeout=0`` and
``attr_timeout=0``, so every path is unseen by the kernel and each call reaches
the daemon. Measured on the same N files of 4 KiB, passes interleaved:

  * stat/s, cold (the default mount asks a storage once per file) and warm
    (its positive cache answers),
  * open-read-close/s of the 4 KiB files, with the positive cache warm,

and the ratio default / trust_ids for each (aim: >= 0.8 once the cache is warm).
The storages have read every file once before, so neither mount pays their cold disk.

Usage: .venv/bin/python bench/bench_exists.py [--files 1000] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

from fdfsmount.mountproc import mounted
from fdfsmount.proto import FileId
from fdfsmount.proto.client import Client
from harness.cluster import Cluster

FILE_SIZE = 4096
#: Long enough that the warm passes of one run stay inside it.
EXISTS_TTL = 300
COMMON = ["timeout=30", "entry_timeout=0", "attr_timeout=0", f"exists_ttl={EXISTS_TTL}"]


async def setup(trackers: list[str], count: int) -> list[FileId]:
    async with Client(trackers) as client:
        ids = [
            await client.upload(os.urandom(FILE_SIZE), ext="dat", group="group1")
            for _ in range(count)
        ]
        for fid in ids:  # the storages' own caches: warm for both mounts alike
            assert len(await client.download(fid)) == FILE_SIZE
        return ids


def stat_all(paths: list[Path]) -> float:
    started = time.perf_counter()
    for p in paths:
        os.stat(p)
    return len(paths) / (time.perf_counter() - started)


def open_read_close(paths: list[Path]) -> float:
    started = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            if len(f.read()) != FILE_SIZE:
                raise AssertionError(f"{p}: short read")
    return len(paths) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="number of 4 KiB files")
    parser.add_argument("--runs", type=int, default=3, help="warm passes per mount")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="fdfs-bench-") as tmp,
        Cluster(groups={"group1": 2}) as cluster,
    ):
        ids = trio.run(setup, cluster.trackers, args.files)
        with (
            mounted(cluster.trackers, Path(tmp) / "default", COMMON) as default,
            mounted(cluster.trackers, Path(tmp) / "trust", [*COMMON, "trust_ids"]) as trust,
        ):
            mounts = {"default": default.mountpoint, "trust_ids": trust.mountpoint}
            paths = {name: [m / str(fid) for fid in ids] for name, m in mounts.items()}
            results: dict[str, dict[str, float]] = {name: {} for name in mounts}

            def measure(metric: str, fn: Callable[[list[Path]], float], runs: int) -> None:
                samples: dict[str, list[float]] = {name: [] for name in mounts}
                for run in range(runs):  # interleaved, each first in turn, so load hits both
                    order = list(mounts) if run % 2 == 0 else list(reversed(mounts))
                    for name in order:
                        samples[name].append(fn(paths[name]))
                for name in mounts:
                    results[name][metric] = statistics.median(samples[name])

            measure("stat_cold_per_s", stat_all, 1)  # once: a second pass is warm
            measure("stat_warm_per_s", stat_all, args.runs)
            measure("open_read_close_per_s", open_read_close, args.runs)

    print(
        f"{args.files} files of 4 KiB, group1 with 2 builtin storages; every path unseen by "
        f"the kernel (entry/attr_timeout=0); exists_ttl={EXISTS_TTL}s; load {load:.1f}"
    )
    print(f"{'':28}{'default':>10}{'trust_ids':>11}{'ratio':>8}")
    ratios = {}
    for metric in results["default"]:
        d, t = results["default"][metric], results["trust_ids"][metric]
        ratios[metric] = d / t
        print(f"{metric:28}{d:10.0f}{t:11.0f}{d / t:8.2f}")
    print("aim: ratio >= 0.8 once the positive cache is warm (the two warm rows)")
    if args.json:
        print(json.dumps({"results": results, "ratios": ratios, "load": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
