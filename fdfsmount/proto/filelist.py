"""Listing a group's files from its storages' binlogs (cmd 26, FETCH_ONE_PATH_BINLOG).

Each storage lists the files it holds, created there ('C') or received from
the source ('c'). A file is emitted from its source's stream only, so no set
of seen names is needed; replica lines are emitted (once, through a set) only
for files whose source is not an ACTIVE member of the group. A storage that
fails mid-listing fails the listing: its files would be missing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from . import storage as st
from .binlog import BinlogRecord, BinlogStreamDecoder
from .connection import Connection
from .constants import StorageStatus
from .errors import InvalidFileId, NoStorage, ProtocolError
from .exchange import Exchanger
from .fileid import FileId, decode_file_id, parse_file_id
from .message import ServerAddr
from .records import StorageStat

log = logging.getLogger(__name__)

_BINLOG_READ_SIZE = 64 * 1024
#: The storage writes metadata of file X into a file named X + this suffix.
_META_FILE_SUFFIX = "-m"


class ListingClient(Protocol):
    """What listing needs of the client."""

    exchanger: Exchanger

    async def list_storages(
        self, group: str, storage_id: str | None = None
    ) -> list[StorageStat]: ...


@asynccontextmanager
async def fetch_binlog(
    exchanger: Exchanger, server: ServerAddr, group: str, store_path_index: int
) -> AsyncIterator[AsyncIterator[BinlogRecord]]:
    """The raw FETCH_ONE_PATH_BINLOG records of one storage server and store path."""
    request = st.fetch_binlog_request(group, store_path_index)
    what = f"fetch_one_path_binlog {group}/M{store_path_index:02X} on storage {server}"
    conn, _header, _ = await exchanger.open_reply(server, "storage", request, what)
    try:
        yield BinlogIterator(exchanger, conn, what)
    finally:
        await exchanger.release(conn)


@asynccontextmanager
async def list_files(client: ListingClient, group: str) -> AsyncIterator[AsyncIterator[FileId]]:
    """Every file of a group, from cmd 26 of its ACTIVE storages and store paths."""
    storages = await client.list_storages(group)
    active = [s for s in storages if s.status == StorageStatus.ACTIVE]
    if not active:
        raise NoStorage(f"group {group!r} has no active storage server")
    files = _list_files(client.exchanger, group, active)
    try:
        yield files
    finally:
        await files.aclose()


async def _list_files(
    exchanger: Exchanger, group: str, active: list[StorageStat]
) -> AsyncGenerator[FileId, None]:
    members = {s.storage_id for s in active} | {s.ip_addr for s in active}
    orphans_seen: set[str] = set()
    path_count = max(s.store_path_count for s in active)
    for index in range(path_count):
        for storage in active:
            if index >= storage.store_path_count:
                continue
            addr = ServerAddr(storage.ip_addr, storage.storage_port)
            async with fetch_binlog(exchanger, addr, group, index) as records:
                async for record in records:
                    fid = _listed_file_id(group, record)
                    if fid is None:
                        continue
                    if record.op.isupper():
                        yield fid
                        continue
                    try:
                        source = decode_file_id(fid).source
                    except InvalidFileId:
                        source = ""
                    if source in members or fid.remote_name in orphans_seen:
                        continue
                    orphans_seen.add(fid.remote_name)
                    yield fid


class BinlogIterator:
    """Binlog records of one cmd 26 reply (which ends with the server closing)."""

    def __init__(self, exchanger: Exchanger, conn: Connection, what: str) -> None:
        self._exchanger = exchanger
        self._conn = conn
        self._what = what
        self._decoder = BinlogStreamDecoder()
        self._records: list[BinlogRecord] = []
        self._next = 0
        self._done = False
        self._buf = bytearray(_BINLOG_READ_SIZE)

    def __aiter__(self) -> BinlogIterator:
        return self

    async def __anext__(self) -> BinlogRecord:
        while self._next >= len(self._records):
            if self._done:
                raise StopAsyncIteration
            view = memoryview(self._buf)
            try:
                with self._exchanger.watch(self._conn, self._what):
                    n = await self._conn.receive_until_close_into(view)
                if n:
                    self._records = self._decoder.feed(view[:n])
                else:
                    self._records = []
                    self._done = True
                    self._decoder.close()
            except ProtocolError as exc:
                raise ProtocolError(f"{self._what}: {exc}") from exc
            self._next = 0
        record = self._records[self._next]
        self._next += 1
        return record


def _listed_file_id(group: str, record: BinlogRecord) -> FileId | None:
    """The file ID of a binlog line, or None for metadata files and junk."""
    name = record.remote_name
    if name.endswith(_META_FILE_SUFFIX):
        return None
    try:
        return parse_file_id(f"{group}/{name}")
    except InvalidFileId:
        log.debug("skipping binlog line for %r: not a file ID", name)
        return None
