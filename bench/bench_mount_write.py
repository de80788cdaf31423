"""Append throughput through the mount against the client, on a local builtin cluster.

Measures, in one run: ``dd bs=1M conv=fsync`` of a 256 MiB file into a new
file in ``/<group>/`` (an appender upload followed by coalesced appends; the
time includes the fsync and close, which return once the source storage has
every byte) against the strongest anchor, our client doing the same thing
directly: an empty appender upload, then 8 MiB appends of the same file. Prints
both and the ratio (aim: >= 0.8). Runs alternate, so neither side gets all the
cold starts.

Usage: .venv/bin/python bench/bench_mount_write.py [--size-mib 256] [--runs 3]
       [--storages 1] [--write-buffer 8M] [--backend builtin|native] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from fdfsmount.mountproc import mounted
from fdfsmount.proto import FileId, parse_file_id
from fdfsmount.proto.client import Client
from harness.cluster import Cluster

MIB = 1024 * 1024


APPEND = 8 * MIB


async def direct_appends(trackers: list[str], src: Path) -> tuple[float, FileId]:
    """An empty appender, then the file in 8 MiB appends (read as it goes, like dd)."""
    async with Client(trackers) as client, await trio.open_file(src, "rb", buffering=0) as f:
        started = time.perf_counter()
        fid = await client.upload(b"", ext="bin", group="group1", appender=True)
        while chunk := await f.read(APPEND):
            await client.append(fid, chunk)
        return time.perf_counter() - started, fid


def dd_into(src: Path, dest: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["dd", f"if={src}", f"of={dest}", "bs=1M", "conv=fsync", "status=none"], check=True
    )
    return time.perf_counter() - started


async def stored_digest(trackers: list[str], fid: FileId) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    async with Client(trackers) as client, client.download_stream(fid) as chunks:
        async for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--storages", type=int, default=1, help="storages in group1")
    parser.add_argument("--write-buffer", default=None, help="the mount's -o write_buffer")
    parser.add_argument(
        "--backend",
        choices=("builtin", "native"),
        default="builtin",
        help="the harness's servers, or upstream fdfs_trackerd/fdfs_storaged",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    size = args.size_mib * MIB
    options = ["timeout=60"]
    if args.write_buffer:
        options.append(f"write_buffer={args.write_buffer}")
    with (
        tempfile.TemporaryDirectory(prefix="fdfs-bench-") as tmp,
        Cluster(groups={"group1": args.storages}, backend=args.backend) as cluster,
    ):
        src = Path(tmp) / "src.bin"
        digest = hashlib.sha256()
        with open(src, "wb") as out:
            for _ in range(args.size_mib):
                chunk = os.urandom(MIB)
                digest.update(chunk)
                out.write(chunk)
        print(f"{args.backend} cluster: {cluster.trackers[0]}, group1 with "
              f"{args.storages} storage(s); mount options {','.join(options)}")  # fmt: skip
        direct: list[float] = []
        via_mount: list[float] = []
        mount_ids: list[FileId] = []
        with mounted(
            cluster.trackers, Path(tmp) / "mnt", [*options, f"cache_dir={tmp}/cache"]
        ) as proc:
            for run in range(args.runs):
                seconds, _ = trio.run(direct_appends, cluster.trackers, src)
                direct.append(seconds)
                dest = proc.mountpoint / "group1" / f"bench-{run}.bin"
                via_mount.append(dd_into(src, dest))
                mount_ids.append(parse_file_id(os.getxattr(dest, "user.fdfs.file_id").decode()))
        # What the mount wrote is what the storage has.
        stored = trio.run(stored_digest, cluster.trackers, mount_ids[-1])
        assert stored == (size, digest.hexdigest()), "the stored file differs from the source"

    mib = size / MIB
    d, m = statistics.median(direct), statistics.median(via_mount)
    results = {"direct_mib_s": mib / d, "mount_mib_s": mib / m, "ratio": d / m}
    print(f"append of {args.size_mib} MiB into a new appender file (median of {args.runs}):")
    print(f"  client: appender + 8 MiB appends {mib / d:8.1f} MiB/s   runs: {_fmt(direct)}")
    print(f"  dd bs=1M conv=fsync to the mount {mib / m:8.1f} MiB/s   runs: {_fmt(via_mount)}")
    print(f"  ratio mount/client               {d / m:8.2f}   (aim: >= 0.8)")
    print(f"  load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        print(json.dumps(results))
    return 0


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}s" for t in times)


if __name__ == "__main__":
    sys.exit(main())
