"""The demo: a local builtin cluster with sample files, mounted at a printed path until Ctrl-C.

``python -m fdfsmount.demo [--mountpoint DIR]`` (what ``scripts/demo.sh`` runs).
Everything it starts -- tracker, storages, the mount -- is stopped again on
Ctrl-C or SIGTERM. A mount left behind by an earlier, killed demo (its
daemon gone) is cleared first; a live one is never touched: the demo picks
the next free directory (``/tmp/fdfs-demo-2/mnt`` ...) or, for a mountpoint
given on the command line, refuses.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import trio

from .mountproc import (
    MountFailed,
    MountState,
    clear_stale,
    fuse_available,
    mount_state,
    mounted,
    state_file_pid,
)
from .proto import FileId
from .proto.client import Client

log = logging.getLogger(__name__)

DEFAULT_MOUNTPOINT = "/tmp/fdfs-demo/mnt"
MOUNT_OPTIONS = ["timeout=10", "list_ttl=5"]

README_TEXT = b"""Hello from FastDFS!

This file lives in a FastDFS cluster. Its path under the mount is its file ID:
<group>/M<store path>/<HH>/<HH>/<name>. Nothing here is a local copy: every
read is a ranged download from a storage server.
"""


class Stop(Exception):
    """SIGINT or SIGTERM arrived."""


@dataclass
class Samples:
    text: FileId
    image: FileId
    log: FileId


def sample_png(width: int = 96, height: int = 64) -> bytes:
    """A small, valid PNG (a colour gradient): an image-like binary file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, 160)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


async def upload_samples(trackers: Sequence[str]) -> Samples:
    async with Client(list(trackers)) as client:
        text = await client.upload(
            README_TEXT, ext="txt", group="group1", meta={"title": "hello", "lang": "en"}
        )
        image = await client.upload(
            sample_png(), ext="png", group="group1", meta={"width": "96", "height": "64"}
        )
        log_id = await client.upload(
            b"demo started\n", ext="log", group="group2", appender=True,
            meta={"owner": "demo", "kind": "appender log"},
        )  # fmt: skip
        await client.append(log_id, b"appended a second line\n")
        return Samples(text, image, log_id)


ALTERNATIVES = 20  # /tmp/fdfs-demo-2/mnt ... tried when the default is in use


class InUse(Exception):
    """The mountpoint holds a live mount that is not this demo's."""


def clear_stale_mount(mountpoint: Path) -> None:
    """A demo killed hard leaves a dead mount (its daemon gone); a lazy unmount clears it.

    A live mount is someone's: `InUse`, never unmounted.
    """
    if mount_state(mountpoint) is MountState.STALE and clear_stale(mountpoint):
        print(f"cleared a stale mount at {mountpoint} (its fdfsmount process is gone)")
    if mount_state(mountpoint) is MountState.LIVE:
        pid = state_file_pid(mountpoint)
        owner = f"fdfsmount pid {pid}" if pid else "a live mount"
        raise InUse(f"{mountpoint} is in use by {owner}")


def choose_mountpoint(wanted: Path, *, explicit: bool) -> Path:
    """`wanted`, cleared of a stale mount; the next free default directory if a live
    mount holds the default one; `InUse` for a busy explicit mountpoint."""
    candidates = [wanted]
    if not explicit:
        base = wanted.parent
        candidates += [
            base.with_name(f"{base.name}-{n}") / wanted.name for n in range(2, ALTERNATIVES + 2)
        ]
    for index, candidate in enumerate(candidates):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            clear_stale_mount(candidate)
        except InUse as exc:
            if explicit or index == len(candidates) - 1:
                raise
            print(f"{exc}; using another directory", flush=True)
            continue
        return candidate
    raise AssertionError("unreachable")


def explain(mountpoint: Path, samples: Samples, trackers: Sequence[str], conf: Path) -> str:
    q = shlex.quote

    def at(fid: FileId) -> str:
        return q(str(mountpoint / str(fid)))

    leaf = mountpoint / str(samples.text).rsplit("/", 1)[0]
    # The venv's bin is rarely on PATH when the demo runs through scripts/demo.sh.
    fdfs = q(str(Path(sys.executable).with_name("fdfs")))
    return f"""
FastDFS cluster (builtin servers): tracker {", ".join(trackers)}
  group1: 2 storage servers (replicas), group2: 1 storage server
Mounted at {mountpoint}

Sample files:
  text        {samples.text}
  image       {samples.image}
  appender    {samples.log}

Try, in another terminal:
  ls {q(str(mountpoint))}                  # one directory per group
  ls {q(str(leaf))}
  ls -lR {q(str(mountpoint / "group2/M00/00"))} | head
  cat {at(samples.text)}
  file {at(samples.image)}
  getfattr -d {at(samples.log)}            # FastDFS metadata as user.* xattrs
  stat {at(samples.log)}

Write through the mount (new files in /<group>/ are appender files):
  echo hello > {q(str(mountpoint / "group1/hello.txt"))}
  echo again >> {q(str(mountpoint / "group1/hello.txt"))}
  getfattr -n user.fdfs.file_id {q(str(mountpoint / "group1/hello.txt"))}
  setfattr -n user.owner -v me {at(samples.log)}
  truncate -s 4 {at(samples.log)}

Upload more and see it appear (listing refreshes every 5 s):
  {fdfs} --conf {q(str(conf))} upload /etc/hostname
  {fdfs} --conf {q(str(conf))} append {samples.log} /etc/hostname

Press Ctrl-C to unmount and stop the cluster.
"""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def run_demo(mountpoint: Path, *, explicit: bool = True) -> int:
    from harness.cluster import Cluster

    if not fuse_available():
        print("fdfsmount demo: needs /dev/fuse and fusermount3 (apt-get install fuse3)")
        return 1
    try:
        mountpoint = choose_mountpoint(mountpoint, explicit=explicit)
    except InUse as exc:
        print(f"fdfsmount demo: {exc}; stop that demo or pass another --mountpoint")
        return 1
    except OSError as exc:
        print(f"fdfsmount demo: {mountpoint}: {exc.strerror or exc}")
        return 1
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        print("starting a FastDFS cluster (1 tracker, 3 storage servers) ...", flush=True)
        with Cluster(groups={"group1": 2, "group2": 1}) as cluster:
            samples = trio.run(upload_samples, cluster.trackers)
            log_path = mountpoint.parent / "fdfsmount.log"
            # Names created in the demo go with the demo's cluster, not to ~/.cache.
            options = [*MOUNT_OPTIONS, f"cache_dir={cluster.base_dir}/fdfsmount-cache"]
            with mounted(cluster.trackers, mountpoint, options, log_path=log_path):
                print(explain(mountpoint, samples, cluster.trackers, cluster.client_conf))
                print(f"(mount log: {log_path})", flush=True)
                while True:
                    signal.pause()
    except Stop as stop:
        print(f"\n{stop}: unmounting and stopping the cluster ... done")
        return 0
    except MountFailed as exc:
        print(f"fdfsmount demo: the mount failed: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fdfsmount.demo",
        description="Start a local FastDFS cluster with sample files and mount it.",
    )
    parser.add_argument(
        "--mountpoint",
        help=f"default: {DEFAULT_MOUNTPOINT} (or the next free /tmp/fdfs-demo-N/mnt "
        "while another demo runs)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    explicit = args.mountpoint is not None
    wanted = Path(args.mountpoint or DEFAULT_MOUNTPOINT).absolute()
    return run_demo(wanted, explicit=explicit)


if __name__ == "__main__":
    sys.exit(main())
