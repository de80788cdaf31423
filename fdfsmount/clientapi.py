"""The slice of the protocol client the mount's read side calls, as a typing Protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from .proto import FileId, GroupStat, ServerAddr, StorageStat
from .proto.storage import FileInfo


class ReadClient(Protocol):
    """What `fdfsmount.proto.client.Client` offers for reading (and fakes mimic)."""

    async def read_range(
        self,
        file_id: FileId | str,
        offset: int,
        length: int,
        *,
        servers: Sequence[ServerAddr] | None = None,
    ) -> bytes: ...

    async def fetch_servers(self, file_id: FileId | str) -> list[ServerAddr]: ...

    async def info(self, file_id: FileId | str, *, calc_crc32: bool = True) -> FileInfo: ...

    async def get_metadata(self, file_id: FileId | str) -> dict[str, str]: ...

    async def list_groups(self) -> list[GroupStat]: ...

    async def list_storages(
        self, group: str, storage_id: str | None = None
    ) -> list[StorageStat]: ...

    def list_files(self, group: str) -> AbstractAsyncContextManager[AsyncIterator[FileId]]: ...
