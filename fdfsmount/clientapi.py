"""The slices of the protocol client the mount calls (read side, write side), as Protocols."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from .proto import FileId, GroupStat, ServerAddr, StorageStat
from .proto.binlog import BinlogRecord
from .proto.payload import Data
from .proto.replicas import StorageLister
from .proto.storage import FileInfo


class RangeClient(StorageLister, Protocol):
    """Ranged downloads and replica lookups: all that `readpath.ReadPath` asks of a client."""

    async def read_range(
        self,
        file_id: FileId | str,
        offset: int,
        length: int,
        *,
        servers: Sequence[ServerAddr] | None = None,
    ) -> bytes | bytearray: ...


class ReadClient(RangeClient, Protocol):
    """What `fdfsmount.proto.client.Client` offers for reading (and fakes mimic)."""

    async def fetch_servers(self, file_id: FileId | str) -> list[ServerAddr]: ...

    async def info(self, file_id: FileId | str, *, calc_crc32: bool = True) -> FileInfo: ...

    async def get_metadata(self, file_id: FileId | str) -> dict[str, str]: ...

    async def list_groups(self) -> list[GroupStat]: ...

    async def list_storages(
        self, group: str, storage_id: str | None = None
    ) -> list[StorageStat]: ...

    def list_files(self, group: str) -> AbstractAsyncContextManager[AsyncIterator[FileId]]: ...

    def fetch_binlog(
        self, server: ServerAddr, group: str, store_path_index: int
    ) -> AbstractAsyncContextManager[AsyncIterator[BinlogRecord]]: ...


class WriteClient(ReadClient, Protocol):
    """What the write side adds: uploads, appender changes, deletes and metadata edits, and
    asking a chosen server (the source, which has every change first)."""

    async def info(
        self,
        file_id: FileId | str,
        *,
        calc_crc32: bool = True,
        servers: Sequence[ServerAddr] | None = None,
    ) -> FileInfo: ...

    async def get_metadata(
        self, file_id: FileId | str, *, servers: Sequence[ServerAddr] | None = None
    ) -> dict[str, str]: ...

    async def upload(
        self,
        data: Data,
        *,
        size: int | None = None,
        ext: str = "",
        group: str | None = None,
        meta: Mapping[str, str] | None = None,
        appender: bool = False,
        store_path_index: int | None = None,
    ) -> FileId: ...

    async def upload_slave(
        self,
        master: FileId | str,
        data: Data,
        *,
        prefix: str,
        ext: str = "",
        size: int | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> FileId: ...

    async def append(
        self, file_id: FileId | str, data: Data, *, size: int | None = None
    ) -> None: ...

    async def modify(
        self, file_id: FileId | str, offset: int, data: Data, *, size: int | None = None
    ) -> None: ...

    async def truncate(self, file_id: FileId | str, size: int = 0) -> None: ...

    async def delete(self, file_id: FileId | str) -> None: ...

    async def set_metadata(
        self, file_id: FileId | str, meta: Mapping[str, str], *, overwrite: bool = False
    ) -> None: ...

    async def update_server(self, file_id: FileId | str) -> ServerAddr: ...
