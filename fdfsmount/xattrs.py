"""Extended attributes: ``user.<key>`` from FastDFS metadata, read-only ``user.fdfs.*`` facts.

The ``user.fdfs.*`` facts are virtual: answered by name, but not listed (as
CephFS does with its ``ceph.*`` attributes). Copying tools copy what
listxattr names: ``cp -a``, ``mv`` and ``rsync -X`` would otherwise try to
set another file's ID on the copy (or, for rsync, remove it from a copy in
the mount) and print an error per file. Setting one to the value it has is
accepted (a restore of a dump); to any other value it is ENOTSUP, which
coreutils leaves unreported when it copies attributes it was not asked for,
while ``setfattr`` still fails with it.

``getfattr -d`` asks for the list and then every value; metadata is therefore
cached per file for `METADATA_TTL`, so one dump costs one GET_METADATA.

Changes go to the file's source storage: ``setxattr`` merges one key
(SET_METADATA 'M'), ``removexattr`` writes back all the others (SET_METADATA
'O'). Both read the current metadata from the source first and cache the
result, so this host sees its change at once even where replicas lag.
"""

from __future__ import annotations

import errno
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

import trio

from .attrs import FileStat, type_name
from .errors import Refused
from .namespace import Node
from .proto import FileId
from .proto.constants import MAX_META_NAME_LEN, MAX_META_VALUE_LEN, META_FIELD_SEP, META_RECORD_SEP

log = logging.getLogger(__name__)

USER_PREFIX = "user."
FDFS_PREFIX = "user.fdfs."
#: The read-only attributes every file has, in listing order.
FDFS_NAMES = ("file_id", "type", "crc32", "source")
METADATA_TTL = 2.0
METADATA_CACHE_ENTRIES = 10_000

MetadataFetcher = Callable[[FileId], Awaitable[dict[str, str]]]
StatFetcher = Callable[[Node], Awaitable[FileStat]]
#: (file ID, metadata, overwrite): SET_METADATA 'O' when overwrite, else 'M'.
MetadataSetter = Callable[[FileId, Mapping[str, str], bool], Awaitable[None]]


class NoAttribute(Exception):
    """No such attribute (ENODATA)."""


def encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def decode_name(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def is_fdfs_name(name: str) -> bool:
    return name.startswith(FDFS_PREFIX)


def outside_user_namespace(name: bytes) -> bool:
    """security.*, system.posix_acl_*, trusted.*: none exist here (no server call needed)."""
    return not name.startswith(_USER_PREFIX_BYTES)


_USER_PREFIX_BYTES = USER_PREFIX.encode()


class Xattrs:
    """Answers getxattr/listxattr for file nodes (directories have none)."""

    def __init__(
        self,
        get_metadata: MetadataFetcher,
        file_stat: StatFetcher,
        *,
        set_metadata: MetadataSetter | None = None,
        source_metadata: MetadataFetcher | None = None,
    ) -> None:
        self._get_metadata = get_metadata
        self._file_stat = file_stat
        self._set_metadata = set_metadata
        self._source_metadata = source_metadata or get_metadata
        self._metadata: OrderedDict[str, tuple[dict[str, str], float]] = OrderedDict()

    async def get(self, node: Node, name: bytes) -> bytes:
        if node.file_id is None:
            raise NoAttribute(name)
        text = decode_name(name)
        if outside_user_namespace(name):
            raise NoAttribute(text)
        if is_fdfs_name(text):
            return await self._fdfs_value(node, text[len(FDFS_PREFIX) :])
        meta = await self.metadata(node.file_id)
        value = meta.get(text[len(USER_PREFIX) :])
        if value is None:
            raise NoAttribute(text)
        return value.encode("utf-8", "surrogateescape")

    async def list(self, node: Node) -> list[bytes]:
        """The metadata keys; the virtual ``user.fdfs.*`` names are not listed."""
        if node.file_id is None:
            return []
        await self._file_stat(node)  # a file deleted elsewhere is ENOENT here too
        meta = await self.metadata(node.file_id)
        return [
            encode_name(USER_PREFIX + key)
            for key in sorted(meta)
            if not is_fdfs_name(USER_PREFIX + key)  # shadowed by the read-only ones
        ]

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
        self._remember(file_id, meta)
        while len(self._metadata) > METADATA_CACHE_ENTRIES:
            self._metadata.popitem(last=False)
        return meta

    def invalidate(self, file_id: FileId) -> None:
        """Forget cached metadata (the write side calls this after SET_METADATA)."""
        self._metadata.pop(str(file_id), None)

    def clear(self) -> int:
        """Forget all cached metadata; how many files' worth."""
        dropped = len(self._metadata)
        self._metadata.clear()
        return dropped

    def _remember(self, file_id: FileId, meta: dict[str, str]) -> None:
        key = str(file_id)
        self._metadata[key] = (meta, trio.current_time())
        self._metadata.move_to_end(key)

    # -- changing ----------------------------------------------------------

    async def set(self, node: Node, name: bytes, value: bytes) -> None:
        """setxattr ``user.<key>``: merge one key into the file's metadata."""
        text = decode_name(name)
        if is_fdfs_name(text) and node.file_id is not None:
            try:
                shown: bytes | None = await self._fdfs_value(node, text[len(FDFS_PREFIX) :])
            except NoAttribute:
                shown = None
            if shown == value:
                return  # what it is already: nothing to change
            raise Refused(errno.ENOTSUP, f"{text} of {node.file_id} is read-only")
        file_id, key = self._writable(node, name)
        text = value.decode("utf-8", "surrogateescape")
        if len(value) > MAX_META_VALUE_LEN:
            raise Refused(errno.ERANGE, f"metadata values are at most {MAX_META_VALUE_LEN} bytes")
        if META_FIELD_SEP in value or META_RECORD_SEP in value:
            raise Refused(errno.EINVAL, "metadata values cannot hold bytes 0x01 or 0x02")
        assert self._set_metadata is not None
        current = await self._source_metadata(file_id)
        await self._set_metadata(file_id, {key: text}, False)
        self._remember(file_id, {**current, key: text})

    async def remove(self, node: Node, name: bytes) -> None:
        """removexattr ``user.<key>``: write back the file's metadata without that key."""
        file_id, key = self._writable(node, name)
        assert self._set_metadata is not None
        current = dict(await self._source_metadata(file_id))
        if key not in current:
            raise NoAttribute(USER_PREFIX + key)
        del current[key]
        await self._set_metadata(file_id, current, True)
        self._remember(file_id, current)

    def _writable(self, node: Node, name: bytes) -> tuple[FileId, str]:
        text = decode_name(name)
        if not text.startswith(USER_PREFIX):
            raise Refused(errno.ENOTSUP, f"{text}: only user.* attributes are supported")
        if node.file_id is None:
            raise Refused(errno.EPERM, f"{node.key}: directories have no metadata")
        if is_fdfs_name(text):
            raise Refused(errno.ENOTSUP, f"{text} of {node.file_id} is read-only")
        if self._set_metadata is None:
            raise Refused(errno.EPERM, "metadata cannot be changed here")
        key = text[len(USER_PREFIX) :]
        raw = encode_name(key)
        if not raw or META_FIELD_SEP in raw or META_RECORD_SEP in raw:
            raise Refused(errno.EINVAL, f"{text}: not a valid metadata name")
        if len(raw) > MAX_META_NAME_LEN:
            raise Refused(errno.ERANGE, f"metadata names are at most {MAX_META_NAME_LEN} bytes")
        return node.file_id, key
