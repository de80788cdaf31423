"""``fdfsmount warmup MOUNTPOINT PATH...``: fill a mount's disk cache ahead of time.

Reads each file (directories: every file below them) through the mount, so
the read path downloads it and the disk cache (``-o disk_cache=DIR``) keeps it,
crc-checked, exactly as a first read by an application would. Appender files
are skipped: they change, so they are never cached on disk.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .options import human_size
from .status import StatusError, ask

PROG = "fdfsmount warmup"
READ_CHUNK = 1 << 20
SETTLE_WAIT = 60.0  # the disk cache stores files just after they are read


@dataclass
class Tally:
    files: int = 0
    bytes: int = 0
    appenders: int = 0
    failed: int = 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Read files through a mount so that its disk cache (-o disk_cache=DIR) "
        "holds them before anyone asks.",
        epilog="PATH is a file or directory inside MOUNTPOINT (absolute, or relative to it), "
        "e.g. group1/M00/00/1A or group1/M00/00/1A/wKgAAWc...jpg. Exit status: 0 when every "
        "file was read, 1 otherwise.",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("paths", metavar="PATH", nargs="+")
    p.add_argument("-j", "--jobs", type=int, default=4, help="files read at once (default: 4)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def _files(root: str, path: str) -> Iterator[str]:
    full = path if os.path.isabs(path) else os.path.join(root, path)
    full = os.path.realpath(full)
    if full != root and not full.startswith(root + os.sep):
        raise ValueError(f"{path}: not inside {root}")
    if os.path.isdir(full):
        for directory, _dirs, names in os.walk(full):
            for name in sorted(names):
                yield os.path.join(directory, name)
    else:
        yield full


def _is_appender(path: str) -> bool:
    try:
        return os.getxattr(path, "user.fdfs.type") == b"appender"
    except OSError:
        return False


def _read(path: str) -> int:
    total = 0
    buf = bytearray(READ_CHUNK)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def _cache_progress(mountpoint: str) -> tuple[int, int, int]:
    """Files stored, files that failed to be kept, files held."""
    counters = ask(mountpoint).get("counters") or {}
    return (
        counters.get("disk_cache_fills", 0),
        counters.get("disk_cache_fill_failures", 0),
        counters.get("disk_cache_files", 0),
    )


def warmup_main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    root = os.path.realpath(args.mountpoint)
    try:
        snap = ask(root)
    except (StatusError, OSError) as exc:
        print(f"fdfsmount: {exc}", file=sys.stderr)
        return 1
    if "disk_cache_hits" not in (snap.get("counters") or {}):
        print(f"fdfsmount: {root} has no disk cache (mount it with -o disk_cache=DIR)",
              file=sys.stderr)  # fmt: skip
        return 1
    tally = Tally()
    # Before the walk: looking a small file up may fetch, and so store, it already.
    before = _cache_progress(root)
    try:
        files = [f for p in args.paths for f in _files(root, p)]
    except (ValueError, OSError) as exc:
        print(f"fdfsmount: {exc}", file=sys.stderr)
        return 1

    def one(path: str) -> None:
        if _is_appender(path):
            tally.appenders += 1
            return
        try:
            tally.bytes += _read(path)
            tally.files += 1
        except OSError as exc:
            tally.failed += 1
            print(f"fdfsmount: {path}: {exc.strerror or exc}", file=sys.stderr)

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(one, files))
    # The cache stores each file just after its last byte was read: wait until it is quiet.
    deadline = time.monotonic() + SETTLE_WAIT
    last = _cache_progress(root)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.0:
        time.sleep(0.2)
        now = _cache_progress(root)
        if now != last:
            last, quiet_since = now, time.monotonic()
    if not args.quiet:
        print(
            f"read {tally.files} files ({human_size(tally.bytes)}); "
            f"{last[0] - before[0]} stored in the disk cache, which holds {last[2]} files"
            + (f"; {last[1] - before[1]} could not be kept (see the mount's log)"
               if last[1] > before[1] else "")
            + (f"; skipped {tally.appenders} appender files" if tally.appenders else "")
        )
    return 1 if tally.failed else 0
