"""Read throughput of the mount against the client, on a local builtin cluster.

Measures, in one run:
  * sequential read of a 256 MiB file through the mount vs. our client
    streaming the same file to /dev/null with ``download_to`` (one reused
    buffer, one copy: the strongest anchor of ours; aim: >= 0.8; see also
    ``python -m bench``, which adds upstream's C client),
  * open-read-close of 4 KiB files per second (cold: the daemon downloads each;
    warm: the kernel's page cache answers),
  * stat per second on normal-file paths (cold: each path looked up once by the
    daemon, decoded from the file ID; warm: answered by the kernel's caches).
    The paths are made-up IDs, so this mount trusts IDs (``trust_ids``); what
    confirming existence costs is bench_exists.py's question.

Usage: .venv/bin/python bench/bench_mount_read.py [--size-mib 256] [--runs 3] [--small 500]
       [--backend builtin|native] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from fdfsmount.mountproc import mounted
from fdfsmount.proto import FileId, parse_file_id
from fdfsmount.proto.client import Client
from fdfsmount.proto.fileid import make_remote_name
from harness.cluster import Cluster

MIB = 1024 * 1024


def drop_page_cache(path: Path) -> None:
    """Forget the kernel's cached pages of one file (works on FUSE files too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_sequentially(path: Path, bufsize: int = MIB) -> float:
    """Seconds to read the whole file with 1 MiB reads, as `cat` or `cp` would."""
    buf = bytearray(bufsize)
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - started


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


async def setup(trackers: list[str], big: Path, small_count: int) -> tuple[FileId, list[FileId]]:
    async with Client(trackers) as client:
        big_id = await client.upload(big, ext="bin", group="group1")
        small = [
            await client.upload(os.urandom(4096), ext="dat", group="group1")
            for _ in range(small_count)
        ]
        return big_id, small


async def direct_download(trackers: list[str], fid: FileId, size: int, runs: int) -> list[float]:
    """Seconds for the client to stream the file to /dev/null (not into memory: that
    would add the copy and allocation the mount's kernel path does not pay)."""
    times = []
    async with Client(trackers) as client:
        await client.info(fid)  # a warm pool, as the long-lived mount has
        with await trio.to_thread.run_sync(open, os.devnull, "wb") as sink:
            for _ in range(runs):
                started = time.perf_counter()
                got = await client.download_to(fid, sink)
                times.append(time.perf_counter() - started)
                assert got == size
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small", type=int, default=500, help="number of 4 KiB files")
    parser.add_argument("--stats", type=int, default=5000, help="number of paths to stat")
    parser.add_argument(
        "--backend",
        choices=("builtin", "native"),
        default="builtin",
        help="the harness's servers, or upstream fdfs_trackerd/fdfs_storaged",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    size = args.size_mib * MIB
    results: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="fdfs-bench-") as tmp,
        Cluster(groups={"group1": 2}, backend=args.backend) as cluster,
    ):
        big = Path(tmp) / "big.bin"
        digest = hashlib.sha256()
        with open(big, "wb") as out:
            for _ in range(args.size_mib):
                chunk = os.urandom(MIB)
                digest.update(chunk)
                out.write(chunk)
        big_id, small_ids = trio.run(setup, cluster.trackers, big, args.small)
        big.unlink()
        print(f"{args.backend} cluster: {cluster.trackers[0]}, group1 with 2 storages; {big_id}")

        with mounted(cluster.trackers, Path(tmp) / "mnt", ["timeout=30", "trust_ids"]) as proc:
            mnt = proc.mountpoint
            path = mnt / str(big_id)
            assert sha256_of(path) == digest.hexdigest(), "content differs"
            # Alternate the two, so neither gets all the cold starts.
            direct: list[float] = []
            via_mount: list[float] = []
            for _ in range(args.runs):
                direct += trio.run(direct_download, cluster.trackers, big_id, size, 1)
                drop_page_cache(path)
                via_mount.append(read_sequentially(path))

            small_paths = [mnt / str(fid) for fid in small_ids]
            cold = _open_read_close(small_paths)
            warm = _open_read_close(small_paths)

            fake = [
                mnt / str(parse_file_id("group1/" + make_remote_name(
                    source=100001, create_time=1_700_000_000, size=i, crc32=i,
                    ext="jpg", subdirs=(i % 256, (i // 256) % 256),
                )))
                for i in range(args.stats)
            ]  # fmt: skip
            stat_cold = _stat_all(fake)
            stat_warm = _stat_all(fake)

    mib = size / MIB
    d, m = statistics.median(direct), statistics.median(via_mount)
    results = {
        "direct_mib_s": mib / d,
        "mount_mib_s": mib / m,
        "ratio": d / m,
        "small_open_read_close_cold_per_s": cold,
        "small_open_read_close_warm_per_s": warm,
        "stat_cold_per_s": stat_cold,
        "stat_warm_per_s": stat_warm,
    }
    print(f"sequential read of {args.size_mib} MiB (median of {args.runs}):")
    print(f"  client download_to      {mib / d:8.1f} MiB/s   runs: {_fmt(direct)}")
    print(f"  through the mount       {mib / m:8.1f} MiB/s   runs: {_fmt(via_mount)}")
    print(f"  ratio mount/direct      {d / m:8.2f}   (aim: >= 0.8)")
    print(f"4 KiB files, open-read-close: {cold:8.0f}/s cold, {warm:8.0f}/s warm "
          f"({len(small_ids)} files)")  # fmt: skip
    print(f"stat of normal-file paths:    {stat_cold:8.0f}/s cold, {stat_warm:8.0f}/s warm "
          f"({args.stats} paths)")  # fmt: skip
    if args.json:
        print(json.dumps(results))
    return 0


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}s" for t in times)


def _open_read_close(paths: list[Path]) -> float:
    started = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            assert len(f.read()) == 4096
    return len(paths) / (time.perf_counter() - started)


def _stat_all(paths: list[Path]) -> float:
    started = time.perf_counter()
    for p in paths:
        os.stat(p)
    return len(paths) / (time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
