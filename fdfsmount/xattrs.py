"""Extended attributes: ``user.<key>`` from FastDFS metadata, read-only ``user.fdfs.*`` facts.

``getfattr -d`` asks for the list and then every value; metadata is therefore
cached per file for `METADATA_TTL`, so one dump costs one GET_METADATA.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import trio

from .attrs import FileStat, type_name
from .namespace import Node
from .proto import FileId

log = logging.getLogger(__name__)

USER_PREFIX = "user."
FDFS_PREFIX = "user.fdfs."
#: The read-only attributes every file has, in listing order.
FDFS_NAMES = ("file_id", "type", "crc32", "source")
METADATA_TTL = 2.0
METADATA_CACHE_ENTRIES = 10_000

MetadataFetcher = Callable[[FileId], Awaitable[dict[str, str]]]
StatFetcher = Callable[[Node], Awaitable[FileStat]]


class NoAttribute(Exception):
    """No such attribute (ENODATA)."""


def encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def decode_name(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def is_fdfs_name(name: str) -> bool:
    return name.startswith(FDFS_PREFIX)


class Xattrs:
    """Answers getxattr/listxattr for file nodes (directories have none)."""

    def __init__(self, get_metadata: MetadataFetcher, file_stat: StatFetcher) -> None:
        self._get_metadata = get_metadata
        self._file_stat = file_stat
        self._metadata: OrderedDict[str, tuple[dict[str, str], float]] = OrderedDict()

    async def get(self, node: Node, name: bytes) -> bytes:
        if node.file_id is None:
            raise NoAttribute(name)
        text = decode_name(name)
        if not text.startswith(USER_PREFIX):
            # security.*, system.posix_acl_*, trusted.*: none here, and no server call.
            raise NoAttribute(text)
        if is_fdfs_name(text):
            return await self._fdfs_value(node, text[len(FDFS_PREFIX) :])
        meta = await self.metadata(node.file_id)
        value = meta.get(text[len(USER_PREFIX) :])
        if value is None:
            raise NoAttribute(text)
        return value.encode("utf-8", "surrogateescape")

    async def list(self, node: Node) -> list[bytes]:
        if node.file_id is None:
            return []
        names = [encode_name(FDFS_PREFIX + n) for n in FDFS_NAMES]
        meta = await self.metadata(node.file_id)
        names.extend(
            encode_name(USER_PREFIX + key)
            for key in sorted(meta)
            if not is_fdfs_name(USER_PREFIX + key)  # shadowed by the read-only ones
        )
        return names

    async def _fdfs_value(self, node: Node, field: str) -> bytes:
        assert node.file_id is not None
        if field == "file_id":
            return str(node.file_id).encode()
        if field not in FDFS_NAMES:
            raise NoAttribute(FDFS_PREFIX + field)
        fstat = await self._file_stat(node)
        if field == "type":
            return type_name(fstat.file_type).encode()
        if field == "crc32":
            if fstat.crc32 is None:
                raise NoAttribute(FDFS_PREFIX + field)
            return f"{fstat.crc32 & 0xFFFFFFFF:08x}".encode()
        return fstat.source.encode()

    async def metadata(self, file_id: FileId) -> dict[str, str]:
        key = str(file_id)
        entry = self._metadata.get(key)
        now = trio.current_time()
        if entry is not None and now - entry[1] <= METADATA_TTL:
            return entry[0]
        meta = await self._get_metadata(file_id)
        self._metadata[key] = (meta, now)
        self._metadata.move_to_end(key)
        while len(self._metadata) > METADATA_CACHE_ENTRIES:
            self._metadata.popitem(last=False)
        return meta

    def invalidate(self, file_id: FileId) -> None:
        """Forget cached metadata (the write side calls this after SET_METADATA)."""
        self._metadata.pop(str(file_id), None)
