"""Helpers for tests with a real mount: running programs, and looking at each storage directly."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
from waiting import eventually

from fdfsmount.proto import FileId, FileNotFound, ServerAddr, decode_file_id
from fdfsmount.proto.client import Client
from harness.cluster import Cluster, Node

T = TypeVar("T")
REPLICATION_WAIT = 30.0


def run(*args: str | os.PathLike[str], timeout: float = 120, **kw: object) -> str:
    done = subprocess.run(
        [os.fspath(a) for a in args], capture_output=True, timeout=timeout, check=True, **kw
    )  # type: ignore[call-overload]
    return str(done.stdout.decode(errors="replace"))


def client_run(cluster: Cluster, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run `work(client)` to completion from sync code."""

    async def main() -> T:
        async with Client(cluster.trackers) as client:
            return await work(client)

    return trio.run(main)


def upload_bytes(cluster: Cluster, data: bytes, group: str = "group1") -> FileId:
    """Upload `data` as a normal file (from sync code)."""

    async def upload(client: Client) -> FileId:
        with trio.fail_after(60):
            return await client.upload(data, ext="bin", group=group)

    return client_run(cluster, upload)


def addr_of(node: Node) -> ServerAddr:
    return ServerAddr(node.host, node.port)


def source_node(cluster: Cluster, fid: FileId) -> Node:
    source = decode_file_id(fid).source
    return next(n for n in cluster.storages_of(fid.group) if source in (n.storage_id, n.host))


def wait_replicated(cluster: Cluster, fid: FileId, size: int) -> None:
    """Until every storage of the group has at least `size` bytes of `fid`."""

    async def poll(client: Client) -> None:
        with trio.fail_after(REPLICATION_WAIT):
            for node in cluster.storages_of(fid.group):
                while True:
                    got: bytes | bytearray
                    try:
                        got = await client.read_range(fid, size - 1, 1, servers=[addr_of(node)])
                    except Exception:
                        got = b""
                    if got:
                        break
                    await trio.sleep(0.1)

    client_run(cluster, poll)


async def content_on(client: Client, node: Node, fid: FileId) -> bytes | None:
    """The file's bytes as one storage has them (None: it has no such file)."""
    try:
        size = (await client.info(fid, calc_crc32=False, servers=[addr_of(node)])).size
        return bytes(await client.read_range(fid, 0, size, servers=[addr_of(node)]))
    except FileNotFound:
        return None


async def metadata_on(client: Client, node: Node, fid: FileId) -> dict[str, str] | None:
    try:
        return await client.get_metadata(fid, servers=[addr_of(node)])
    except FileNotFound:
        return None


def check_everywhere(
    cluster: Cluster,
    fid: FileId,
    content: bytes | None,
    meta: dict[str, str] | None = None,
) -> None:
    """`fid` holds `content` and `meta` (default: no metadata) on its source storage at
    once, and on every other storage of the group once replicated; `content` None: the
    file is gone from all of them."""
    if meta is None and content is not None:
        meta = {}

    async def check(client: Client) -> None:
        source = source_node(cluster, fid)
        assert await content_on(client, source, fid) == content, f"{fid} on source {source.name}"
        if meta is not None:
            assert await metadata_on(client, source, fid) == meta
        for node in cluster.storages_of(fid.group):
            if node is source:
                continue

            async def replicated(node: Node = node) -> bool:
                return await content_on(client, node, fid) == content and (
                    meta is None or await metadata_on(client, node, fid) == meta
                )

            with trio.move_on_after(REPLICATION_WAIT):  # the asserts below say what differs
                await eventually(replicated, interval=0.1)
            got = await content_on(client, node, fid)
            assert got == content, f"{fid} on {node.name}: {got!r}"
            if meta is not None:
                assert await metadata_on(client, node, fid) == meta, f"{fid} on {node.name}"

    client_run(cluster, check)
