"""A real mount's reads stay coherent with changes made elsewhere, and are tuned from the start:
a same-size rewrite of an appender file by another client within the same second is seen at the
next open; the kernel's readahead window is in place before the first file is read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from mounthelp import client_run

from fdfsmount.mountproc import fuse_available, mounted
from fdfsmount.proto import FileId
from fdfsmount.proto.client import Client
from harness.cluster import Cluster

pytestmark = [
    pytest.mark.processes,
    pytest.mark.mount,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3"),
]

BLOCK = 128 * 1024
OPTIONS = ["timeout=5", "attr_timeout=1", "entry_timeout=1"]


def test_same_size_rewrite_elsewhere_is_seen_at_the_next_open(
    fdfs_cluster: Cluster, tmp_path: Path
) -> None:
    first = b"A" * (3 * BLOCK)  # whole blocks: cacheable under the old (size, mtime) key

    async def create(client: Client) -> FileId:
        with trio.fail_after(60):
            return await client.upload(first, ext="log", appender=True, group="group1")

    fid = client_run(fdfs_cluster, create)
    with mounted(fdfs_cluster.trackers, tmp_path / "mnt", OPTIONS) as proc:
        path = proc.mountpoint / str(fid)
        for round_ in range(4):
            before = path.read_bytes()
            # Overwritten in place elsewhere: same size, most likely the same second;
            # by the client, then by `fdfs modify`, in turn.
            after = bytes([ord("B") + round_]) * len(first)
            if round_ % 2:
                fdfs = [str(Path(sys.executable).with_name("fdfs"))]
                where = ["--tracker", fdfs_cluster.trackers[0]]
                subprocess.run(
                    [*fdfs, "modify", *where, str(fid), "0", "-"],
                    input=after, check=True, timeout=60, capture_output=True,
                )  # fmt: skip
            else:

                async def rewrite(client: Client, data: bytes = after) -> None:
                    with trio.fail_after(60):
                        await client.modify(fid, 0, data)

                client_run(fdfs_cluster, rewrite)
            assert before != after
            assert path.read_bytes() == after, f"round {round_}: stale bytes after reopen"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may tune the kernel's readahead")
def test_kernel_readahead_is_tuned_before_the_first_read(
    fdfs_cluster: Cluster, tmp_path: Path
) -> None:
    async def create(client: Client) -> FileId:
        with trio.fail_after(60):
            return await client.upload(b"x" * BLOCK, ext="bin", group="group1")

    fid = client_run(fdfs_cluster, create)
    with (
        mounted(fdfs_cluster.trackers, tmp_path / "mnt", OPTIONS) as proc,
        open(proc.mountpoint / str(fid), "rb") as f,
    ):
        dev = os.fstat(f.fileno()).st_dev
        knob = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
        assert int(knob.read_text()) == 4096
        assert f.read() == b"x" * BLOCK


def test_small_files_opened_by_many_readers_at_once_read_right(
    fdfs_cluster: Cluster, tmp_path: Path
) -> None:
    """Each small file's first open hands it to the page cache; concurrent opens and
    reads of the same files, all starting together, neither hang nor read wrong bytes."""
    payloads = [os.urandom(1 + (i * 997) % 70_000) for i in range(24)]

    async def upload(client: Client) -> list[FileId]:
        with trio.fail_after(60):
            return [await client.upload(p, ext="bin", group="group1") for p in payloads]

    ids = client_run(fdfs_cluster, upload)
    with mounted(fdfs_cluster.trackers, tmp_path / "mnt", OPTIONS) as proc:
        paths = [os.fspath(proc.mountpoint / str(fid)) for fid in ids]
        readers = [
            subprocess.Popen(
                [sys.executable, "-c", _READ_ALL, *paths],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(6)
        ]
        for reader in readers:
            out, err = reader.communicate(timeout=60)
            assert reader.returncode == 0, err.decode()
            sizes = [int(n) for n in out.split()]
            assert sizes == [len(p) for p in payloads]
        for path, payload in zip(paths, payloads, strict=True):
            with open(path, "rb") as f:
                assert f.read() == payload


# Reads each path in order (6 of these run at once) and prints the sizes read.
_READ_ALL = """
import sys
print(" ".join(str(len(open(p, "rb").read())) for p in sys.argv[1:]))
"""
