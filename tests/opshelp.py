"""Helpers for tests that call `Operations` directly (no kernel) against a harness cluster.

Most of these tests run the builtin servers inside the test's own trio run
(`harness.inprocess`): no processes, ports the kernel picks, nothing left when
the test ends. Tests that stop or freeze a storage use a process `Cluster`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import pyfuse3
import pytest
import trio

from fdfsmount.mount import MountParts, build_operations
from fdfsmount.options import MountOptions
from fdfsmount.proto import FileId, parse_file_id
from fdfsmount.proto.client import Client
from fdfsmount.proto.fileid import make_remote_name
from harness.inprocess import start_inprocess_cluster

CTX = pyfuse3.RequestContext()
ROOT = pyfuse3.ROOT_INODE
MIB = 1024 * 1024


class StorageView(Protocol):
    """What these tests read of a storage node, in process or out."""

    @property
    def host(self) -> str: ...
    @property
    def storage_id(self) -> str | None: ...


class ClusterView(Protocol):
    """What these tests read of a cluster: a `Cluster` or an `InProcessCluster`."""

    @property
    def trackers(self) -> list[str]: ...
    def storages_of(self, group: str) -> Sequence[StorageView]: ...


async def inprocess_cluster(nursery: trio.Nursery, base_dir: Path) -> ClusterView:
    """group1 with two storages and group2 with one, as tasks of this trio run."""
    return await start_inprocess_cluster(nursery, base_dir)


@dataclass
class Env:
    parts: MountParts
    client: Client
    cluster: ClusterView

    @property
    def ops(self):  # type: ignore[no-untyped-def]
        return self.parts.ops


async def make_env(
    cluster: ClusterView, nursery: trio.Nursery, **options: object
) -> AsyncIterator[Env]:
    """Operations over their own client (short timeouts), as the mount wires them.

    The alias catalog goes to a temporary directory unless ``cache_dir=`` is given.
    """
    with tempfile.TemporaryDirectory(prefix="fdfs-cache-") as cache_dir:
        options.setdefault("cache_dir", cache_dir)
        opts = replace(MountOptions(mountpoint="/unused", timeout=10.0), **options)  # type: ignore[arg-type]
        connect, network = opts.client_timeouts
        async with Client(
            cluster.trackers, connect_timeout=connect, network_timeout=network
        ) as client:
            parts = build_operations(opts, client, nursery)
            await nursery.start(parts.writer.run)
            try:
                yield Env(parts, client, cluster)
            finally:
                parts.writer.catalog.close()
                parts.listing.close()
                if parts.disk_cache is not None:
                    parts.disk_cache.close()


async def walk(ops: pyfuse3.Operations, path: str) -> pyfuse3.EntryAttributes:
    inode = ROOT
    attr = await ops.getattr(ROOT, CTX)
    for part in path.strip("/").split("/"):
        if part:
            attr = await ops.lookup(inode, part.encode(), CTX)
            inode = attr.st_ino
    return attr


async def listdir(
    ops: pyfuse3.Operations, inode: int, monkeypatch: pytest.MonkeyPatch
) -> dict[str, pyfuse3.EntryAttributes]:
    entries: dict[str, pyfuse3.EntryAttributes] = {}

    def reply(token: object, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        entries[name.decode()] = attr
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    fh = await ops.opendir(inode, CTX)
    try:
        await ops.readdir(fh, 0, pyfuse3.ReaddirToken())
    finally:
        await ops.releasedir(fh)
    entries.pop(".", None)
    entries.pop("..", None)
    return entries


async def read_all(ops: pyfuse3.Operations, inode: int, chunk: int = 128 * 1024) -> bytes:
    fi = await ops.open(inode, os.O_RDONLY, CTX)
    out = bytearray()
    try:
        while data := await ops.read(fi.fh, len(out), chunk):
            out += data
    finally:
        await ops.release(fi.fh)
    return bytes(out)


def requests(client: Client) -> int:
    return sum(client.stats.requests.values())


def fake_id(group: str = "group1", size: int = 1234, appender: bool = False) -> FileId:
    remote = make_remote_name(
        source=100001, create_time=1_700_000_000, size=size, crc32=0xDEADBEEF,
        appender=appender, ext="jpg", subdirs=(0x12, 0x34),
    )  # fmt: skip
    return parse_file_id(f"{group}/{remote}")


async def expect_errno(code: int, coro: object) -> None:
    with pytest.raises(pyfuse3.FUSEError) as info:
        await coro  # type: ignore[misc]
    assert info.value.errno == code
