"""File attributes: modes and ownership, sizes and times from file IDs or QUERY_FILE_INFO, statfs.

Normal files describe themselves: their ID carries size, create time and
crc32. Whether the file exists is another matter: a well-formed ID may name a
file that was never uploaded or was deleted since. Unless the mount trusts IDs
(``trust_ids``), a normal file's existence is confirmed with QUERY_FILE_INFO
(without crc32, so the storage reads no data) and the answer is kept for
``exists_ttl``; "no such file" is kept for `MISSING_TTL`, so a storm of
requests for a missing name costs one query every few seconds.

Appender and slave files are asked for (QUERY_FILE_INFO) and the answers
cached here: appender answers briefly (they grow), slave answers for long
(they are immutable); either answer confirms existence too.
"""

from __future__ import annotations

import logging
import math
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import pyfuse3
import trio

from .namespace import Kind, Node
from .proto import FileId, FileType, GroupStat
from .proto.errors import FileNotFound
from .proto.storage import FileInfo

log = logging.getLogger(__name__)

BLOCK_SIZE = 4096  # statfs block size
IO_BLOCK_SIZE = 128 * 1024  # st_blksize: nudges readers to large reads
APPENDER_INFO_TTL = 1.0
IMMUTABLE_INFO_TTL = 3600.0
EXISTS_TTL = 10.0  # how long a confirmed existence of a normal file is trusted
MISSING_TTL = 2.0  # how long "no such file" is remembered
INFO_CACHE_ENTRIES = 100_000

InfoFetcher = Callable[[FileId], Awaitable[FileInfo]]


@dataclass(frozen=True, slots=True)
class FileStat:
    """What the mount shows of a file, wherever it came from."""

    file_type: FileType
    size: int
    mtime: int  # seconds
    crc32: int | None
    source: str
    exact: bool = True  # False: a placeholder until a server is asked

    @property
    def immutable(self) -> bool:
        return self.file_type is not FileType.APPENDER

    @property
    def version(self) -> tuple[int, int] | None:
        """Changes whenever the content may have changed (None: never changes)."""
        return None if self.immutable else (self.size, self.mtime)


def type_name(file_type: FileType) -> str:
    """The name `user.fdfs.type` shows: trunk files are normal files stored in a trunk."""
    return "normal" if file_type is FileType.TRUNK else file_type.value


class InfoCache:
    """QUERY_FILE_INFO answers per file ID, each valid for a time-to-live.

    Concurrent askers for one file share one request. Bounded LRU.
    """

    def __init__(self, fetch: InfoFetcher, *, max_entries: int = INFO_CACHE_ENTRIES) -> None:
        self._fetch = fetch
        self._entries: OrderedDict[str, tuple[FileInfo, float]] = OrderedDict()
        self._pending: dict[str, trio.Event] = {}
        self._max_entries = max_entries

    def peek(self, file_id: FileId, max_age: float, *, touch: bool = False) -> FileInfo | None:
        """The answer if one is at most `max_age` old (`touch`: count it as a use)."""
        key = str(file_id)
        entry = self._entries.get(key)
        if entry is None or trio.current_time() - entry[1] > max_age:
            return None
        if touch:
            self._entries.move_to_end(key)
        return entry[0]

    async def get(self, file_id: FileId, max_age: float) -> FileInfo:
        key = str(file_id)
        while True:
            cached = self.peek(file_id, max_age)
            if cached is not None:
                self._entries.move_to_end(key)
                return cached
            pending = self._pending.get(key)
            if pending is None:
                break
            await pending.wait()
            max_age = math.inf  # whatever that request got is fresh enough for us
            if key not in self._entries:
                break  # it failed or was cancelled: ask ourselves
        self._pending[key] = done = trio.Event()
        try:
            info = await self._fetch(file_id)
            self.put(file_id, info)
            return info
        finally:
            del self._pending[key]
            done.set()

    def put(self, file_id: FileId, info: FileInfo) -> None:
        key = str(file_id)
        self._entries[key] = (info, trio.current_time())
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, file_id: FileId) -> None:
        self._entries.pop(str(file_id), None)

    def clear(self) -> int:
        """Forget everything; how many entries were dropped."""
        dropped = len(self._entries)
        self._entries.clear()
        return dropped


class FileStats:
    """`FileStat` of a file node, from its ID or from a cached QUERY_FILE_INFO.

    `fetch_info` asks a replica for everything (crc32 included); `confirm` only
    whether the file is there (no crc32: the storage reads no data).
    """

    def __init__(
        self,
        fetch_info: InfoFetcher,
        *,
        confirm: InfoFetcher | None = None,
        trust_ids: bool = False,
        exists_ttl: float = EXISTS_TTL,
        missing_ttl: float = MISSING_TTL,
    ) -> None:
        self.info = InfoCache(fetch_info)
        self.confirmed = InfoCache(confirm or fetch_info)
        self.trust_ids = trust_ids
        self.exists_ttl = exists_ttl
        self.missing_ttl = missing_ttl
        self._missing: OrderedDict[str, float] = OrderedDict()

    async def get(self, node: Node, *, fresh: bool = False) -> FileStat:
        """`fresh`: bypass the caches (close-to-open), except a very recent "missing"."""
        assert node.file_id is not None and node.id_info is not None
        ident = node.id_info
        if ident.file_type in (FileType.NORMAL, FileType.TRUNK):
            assert ident.size is not None
            if not self.trust_ids:
                await self.confirm(node.file_id, max_age=0.0 if fresh else self.exists_ttl)
            return FileStat(
                ident.file_type, ident.size, ident.create_time, ident.crc32, ident.source
            )
        ttl = APPENDER_INFO_TTL if ident.file_type is FileType.APPENDER else IMMUTABLE_INFO_TTL
        info = await self._ask(self.info, node.file_id, 0.0 if fresh else ttl)
        return self._from_info(node, info)

    def known(self, node: Node) -> FileStat | None:
        """What `get` would answer now without asking a server; None if it would ask
        (or would fail: the asking path raises the error)."""
        assert node.file_id is not None and node.id_info is not None
        ident = node.id_info
        file_id = node.file_id
        if ident.file_type in (FileType.NORMAL, FileType.TRUNK):
            assert ident.size is not None
            if not self.trust_ids and (
                self.info.peek(file_id, self.exists_ttl) is None
                and self.confirmed.peek(file_id, self.exists_ttl, touch=True) is None
            ):
                return None
            return FileStat(
                ident.file_type, ident.size, ident.create_time, ident.crc32, ident.source
            )
        ttl = APPENDER_INFO_TTL if ident.file_type is FileType.APPENDER else IMMUTABLE_INFO_TTL
        info = self.info.peek(file_id, ttl, touch=True)
        return None if info is None else self._from_info(node, info)

    async def confirm(self, file_id: FileId, *, max_age: float) -> None:
        """Return once the cluster confirmed `file_id` within `max_age`; `FileNotFound` if not."""
        # A full answer (appender, slave, or this host's own note) confirms as well.
        if self.info.peek(file_id, max_age) is not None:
            return
        await self._ask(self.confirmed, file_id, max_age)

    def missing(self, file_id: FileId) -> bool:
        """True while a recent answer said `file_id` is not in the cluster."""
        key = str(file_id)
        at = self._missing.get(key)
        if at is None:
            return False
        if trio.current_time() - at <= self.missing_ttl:
            return True
        del self._missing[key]
        return False

    async def _ask(self, cache: InfoCache, file_id: FileId, max_age: float) -> FileInfo:
        if self.missing(file_id):
            raise FileNotFound(f"query_file_info {file_id}: no such file (asked just now)")
        try:
            return await cache.get(file_id, max_age)
        except FileNotFound:
            self._note_missing(file_id)
            raise

    def _note_missing(self, file_id: FileId) -> None:
        key = str(file_id)
        self._missing[key] = trio.current_time()
        self._missing.move_to_end(key)
        while len(self._missing) > INFO_CACHE_ENTRIES:
            self._missing.popitem(last=False)
        self.info.invalidate(file_id)
        self.confirmed.invalidate(file_id)

    def cached(self, node: Node) -> FileStat:
        """Best answer without I/O; `exact` is False when a server must be asked."""
        assert node.file_id is not None and node.id_info is not None
        ident = node.id_info
        if ident.size is not None:
            return FileStat(
                ident.file_type, ident.size, ident.create_time, ident.crc32, ident.source
            )
        ttl = APPENDER_INFO_TTL if ident.file_type is FileType.APPENDER else IMMUTABLE_INFO_TTL
        info = self.info.peek(node.file_id, ttl)
        if info is None:
            return FileStat(ident.file_type, 0, ident.create_time, None, ident.source, exact=False)
        return self._from_info(node, info)

    @staticmethod
    def _from_info(node: Node, info: FileInfo) -> FileStat:
        assert node.id_info is not None
        return FileStat(
            node.id_info.file_type,
            info.size,
            info.create_time,
            info.crc32 or node.id_info.crc32,
            node.id_info.source or info.source_ip,
        )

    # -- the write side's seam -----------------------------------------

    def note(self, file_id: FileId, info: FileInfo) -> None:
        """Record attributes this host knows first-hand (after an append, truncate...)."""
        self._missing.pop(str(file_id), None)
        self.info.put(file_id, info)

    def note_missing(self, file_id: FileId) -> None:
        """A download or another request found `file_id` gone."""
        self._note_missing(file_id)

    def invalidate(self, file_id: FileId) -> None:
        """Forget what is known of `file_id` (changed, created or deleted here): ask again."""
        self._missing.pop(str(file_id), None)
        self.info.invalidate(file_id)
        self.confirmed.invalidate(file_id)

    def clear(self) -> int:
        """Forget everything (``fdfsmount ctl drop-caches``); how many entries were dropped."""
        dropped = self.info.clear() + self.confirmed.clear() + len(self._missing)
        self._missing.clear()
        return dropped


class AttrFactory:
    """Builds `EntryAttributes` with the mount's ownership, umask and timeouts."""

    def __init__(
        self, *, uid: int, gid: int, umask: int, attr_timeout: float, entry_timeout: float
    ) -> None:
        self.uid = uid
        self.gid = gid
        self.umask = umask
        self.attr_timeout = attr_timeout
        self.entry_timeout = entry_timeout
        self.mount_time_ns = time.time_ns()

    def _base(self, inode: int, mode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.generation = 0
        attr.entry_timeout = self.entry_timeout
        attr.attr_timeout = self.attr_timeout
        attr.st_mode = mode
        attr.st_uid = self.uid
        attr.st_gid = self.gid
        attr.st_rdev = 0
        attr.st_blksize = IO_BLOCK_SIZE
        return attr

    def directory(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = self._base(node.inode, stat.S_IFDIR | (0o755 & ~self.umask))
        # Leaves hold files only; other levels hold directories (nlink counts ".." links).
        attr.st_nlink = 2
        attr.st_size = 4096
        attr.st_blocks = 8
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.mount_time_ns
        return attr

    def file(self, node: Node, fstat: FileStat) -> pyfuse3.EntryAttributes:
        perm = 0o444 if fstat.immutable else 0o644
        attr = self._base(node.inode, stat.S_IFREG | (perm & ~self.umask))
        attr.st_nlink = 1
        attr.st_size = fstat.size
        attr.st_blocks = (fstat.size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = fstat.mtime * 1_000_000_000
        if not fstat.immutable or not fstat.exact:
            # Appender files change under us: let every stat reach the daemon,
            # which answers from its short-lived cache (and fresh after open).
            attr.attr_timeout = 0
        return attr

    def for_node(self, node: Node, fstat: FileStat | None) -> pyfuse3.EntryAttributes:
        if node.kind is Kind.FILE:
            assert fstat is not None
            return self.file(node, fstat)
        return self.directory(node)


def statfs(groups: Iterable[GroupStat]) -> pyfuse3.StatvfsData:
    """The whole cluster's space: the sum over its groups, in 4 KiB blocks."""
    total_mb = free_mb = 0
    for group in groups:
        total_mb += max(0, group.total_mb)
        free_mb += max(0, group.free_mb)
    per_mb = (1024 * 1024) // BLOCK_SIZE
    data = pyfuse3.StatvfsData()
    data.f_bsize = BLOCK_SIZE
    data.f_frsize = BLOCK_SIZE
    data.f_blocks = total_mb * per_mb
    data.f_bfree = free_mb * per_mb
    data.f_bavail = free_mb * per_mb
    data.f_files = 0
    data.f_ffree = 0
    data.f_favail = 0
    data.f_namemax = 255
    return data
