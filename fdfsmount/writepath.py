"""The write side: opening appender files for writing, creating files, deleting, renaming aliases.

# Strategy
`WritePath` keeps one write-back object per file open for writing on this
host (`writeback.AppenderWriter`, `writeback.SlaveSpool`), shared by that
file's handles and dropped with the last one. While one exists, reads and
attributes of the file come from it (`fs` asks `writer_of` for an open file's
writer), so this host sees its own writes at once; when it goes, the attribute
and block caches learn the result. Every writer counts its buffers against one
`writeback.WriteBudget` (``write_buffer`` x ``write_buffers``) for the mount.

New files: a name created in ``/<group>/`` becomes an empty appender file
uploaded at once (its file ID exists when `create` returns) plus an *alias*
-- the name, mapped to that ID in the inode table and in the on-disk
`catalog.AliasCatalog`. A name created in a leaf directory next to a master
file, of the form ``<master name without ext><prefix>.<ext>``, becomes a
slave file of that master whose ID is exactly that path. Anything else is
refused (`errors.Refused`, which `fs` turns into an errno and a log line).

Background work starts with `WritePath.run` (from the mount's lifecycle, not
at construction): a task seals extents that have been idle for ``idle``
seconds, so written data reaches the storage even when an application neither
fills the buffer nor closes the file, and the senders of every file run in its
nursery.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable

import trio

from .attrs import FileStat, FileStats, type_name
from .catalog import AliasCatalog, CatalogError
from .clientapi import WriteClient
from .errors import Refused
from .kernelcache import KernelCache
from .listing import Listing
from .namespace import InodeTable, Kind, Node, NotFound
from .proto import (
    FdfsError,
    FileId,
    FileNotFound,
    FileType,
    InvalidFileId,
    ServerAddr,
    StorageStatus,
    decode_file_id,
    parse_file_id,
)
from .proto.constants import EXT_NAME_LEN
from .proto.errors import LocalProtocolError
from .proto.fileid import BASE64_LEN, slave_remote_name, split_ext
from .proto.storage import FileInfo
from .writeback import (
    RETRY_FOR,
    AppenderWriter,
    SlaveSpool,
    SlaveTarget,
    WriteBudget,
    WriteHandle,
    WriteStats,
)
from .xattrs import Xattrs

log = logging.getLogger(__name__)

MIB = 1024 * 1024
FLUSH_SIZE = 8 * MIB  # largest coalesced request
IDLE_FLUSH = 1.0  # seconds after the last write that buffered bytes are sent anyway
WRITE_BUFFERS = 16  # buffers of `flush_size` the whole mount may hold
_STORE_PATH_RE = re.compile(r"M[0-9A-Fa-f]{2}")
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

Writer = AppenderWriter | SlaveSpool


class WritePath:
    """Pending writes, created files and aliases of the mount."""

    def __init__(
        self,
        client: WriteClient,
        *,
        table: InodeTable,
        listing: Listing,
        stats: FileStats,
        xattrs: Xattrs,
        catalog: AliasCatalog,
        forget_blocks: Callable[[FileId], None],
        flush_size: int = FLUSH_SIZE,
        idle: float = IDLE_FLUSH,
        buffers: int = WRITE_BUFFERS,
        retry_for: float = RETRY_FOR,
    ) -> None:
        self.client = client
        self.retry_for = retry_for
        self.table = table
        self.listing = listing
        self.file_stats = stats
        self.xattrs = xattrs
        self.catalog = catalog
        self.flush_size = flush_size
        self.idle = idle
        self.stats = WriteStats()
        self.budget = WriteBudget(flush_size * max(1, buffers))
        self.kernel = KernelCache()
        self._forget_blocks = forget_blocks
        self._nursery: trio.Nursery | None = None
        self._writers: dict[str, Writer] = {}
        self._load_aliases()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The write-back's background work (senders, idle flushes), until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.kernel.use(nursery)
            nursery.start_soon(self._flush_idle, name="write-back idle flush")
            task_status.started()

    def _load_aliases(self) -> None:
        try:
            aliases = self.catalog.load()
        except CatalogError as exc:
            log.error("%s; names created on this host before are not shown", exc)
            return
        for group, name, fid in aliases:
            self.table.add_alias(group, name, fid)
        if aliases:
            log.info("%d aliases from %s", len(aliases), self.catalog.path)

    # -- what the read side asks -------------------------------------------

    def writer_of(self, file_id: FileId | None) -> Writer | None:
        return self._writers.get(str(file_id)) if file_id is not None else None

    def local_stat(self, node: Node) -> FileStat | None:
        """Attributes of a file being written here (None: ask the usual way)."""
        writer = self.writer_of(node.file_id)
        if writer is None or (isinstance(writer, AppenderWriter) and writer.stale):
            return None  # after a failed write-back only the storage knows the size
        return writer.stat()

    def pending_files(self) -> int:
        """Open files with unflushed data (for status reports)."""
        return sum(1 for w in self._writers.values() if w.pending)

    def counters(self) -> dict[str, int]:
        return {
            "write_files": len(self._writers),
            "write_pending_files": self.pending_files(),
            "write_writes": self.stats.writes,
            "write_bytes_written": self.stats.bytes_written,
            "write_requests": self.stats.requests,
            "write_bytes_sent": self.stats.bytes_sent,
            "write_failures": self.stats.failures,
            "write_buffered_bytes": self.budget.used,
            "write_buffer_waits": self.budget.waits,
        }

    # -- opening, writing, closing -----------------------------------------

    def _spawn(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        assert self._nursery is not None, "write-back needs WritePath.run to be running"
        self._nursery.start_soon(fn, name=name)

    def _new_appender(self, file_id: FileId, size: int) -> AppenderWriter:
        writer = AppenderWriter(
            self.client,
            file_id,
            size,
            spawn=self._spawn,
            query_size=self._stored_size,
            fetch=self._fetch,
            flush_size=self.flush_size,
            stats=self.stats,
            budget=self.budget,
            on_failure=self._forget_unstored,
            retry_for=self.retry_for,
        )
        self._writers[str(file_id)] = writer
        return writer

    async def _changes_go_to(self, file_id: FileId) -> ServerAddr:
        """The storage this host's changes of a file go to now (QUERY_UPDATE: its source
        while up, else a replica), which has everything acknowledged to this host. Asked
        each time: where changes go moves with the source's outages, and a replica may
        lag, so a writer's size and stored bytes are asked of this one only."""
        return await self.client.update_server(file_id)

    async def _stored_size(self, file_id: FileId) -> int:
        addr = await self._changes_go_to(file_id)
        return (await self.client.info(file_id, calc_crc32=False, servers=[addr])).size

    async def _fetch(self, file_id: FileId, offset: int, length: int) -> bytes:
        addr = await self._changes_go_to(file_id)
        return bytes(await self.client.read_range(file_id, offset, length, servers=[addr]))

    def _forget_unstored(self, writer: AppenderWriter) -> None:
        """A write-back failed: the kernel's pages hold bytes the storage does not have."""
        node = self.table.find(str(writer.file_id))
        if node is not None:
            self.kernel.forget_data(node.inode)
        self._forget_blocks(writer.file_id)
        self.file_stats.invalidate(writer.file_id)

    async def open(self, node: Node, flags: int) -> WriteHandle:
        """A write handle on an existing file (appender, or a slave still being created)."""
        assert node.file_id is not None and node.id_info is not None
        key = str(node.file_id)
        writer = self._writers.get(key)
        if writer is None:
            if node.id_info.file_type is not FileType.APPENDER:
                raise Refused(
                    errno.EPERM,
                    f"{node.file_id} is a {type_name(node.id_info.file_type)} file: "
                    "only appender files can be written",
                )
            # Close-to-open, from where the changes will go: a replica may lag behind.
            size = await self._stored_size(node.file_id)
            writer = self._writers.get(key) or self._new_appender(node.file_id, size)
        elif isinstance(writer, SlaveSpool) and writer.uploaded:
            raise Refused(errno.EPERM, f"{node.file_id} is a slave file: slaves are written once")
        handle = writer.attach()
        handle.append = bool(flags & os.O_APPEND)
        handle.inode = node.inode
        if flags & os.O_TRUNC:
            try:
                await writer.truncate(0)
            except BaseException:
                await self.release(handle)
                raise
        return handle

    async def write(self, handle: WriteHandle, offset: int, data: bytes) -> int:
        writer = handle.writer
        if handle.append and offset != writer.size:
            # The kernel wrote its pages at its idea of the end; ours differs (another
            # host appended since): let it re-read them.
            self.kernel.forget_data(handle.inode)
        return await writer.write(handle, offset, data)

    async def flush(self, handle: WriteHandle) -> None:
        """close(): send what is buffered; report a failure this handle did not hear of."""
        await handle.writer.sync(handle)

    async def fsync(self, handle: WriteHandle) -> None:
        await handle.writer.sync(handle)

    async def release(self, handle: WriteHandle) -> None:
        writer = handle.writer
        try:
            await writer.sync(None)  # flush did this already, unless the kernel skipped it
        except Exception as exc:
            if isinstance(writer, SlaveSpool) and writer.handles <= 1:
                log.error("%s: not uploaded, its data is lost: %s", writer.file_id, exc)
                writer.discard()
                self.listing.forget_file(writer.file_id)
            # An appender file's bytes still going out are waited for by the idle task.
        finally:
            writer.handles -= 1
            if writer.handles <= 0 and not writer.pending:
                self._retire(writer)

    def _retire(self, writer: Writer) -> None:
        key = str(writer.file_id)
        if self._writers.get(key) is not writer:
            writer.close()
            return
        del self._writers[key]
        writer.close()
        self._forget_blocks(writer.file_id)
        if isinstance(writer, AppenderWriter) and not writer.stale:
            # What this host wrote is what the source has: no need to ask it again.
            info = FileInfo(writer.size, int(writer.mtime), 0, "")
            self.file_stats.note(writer.file_id, info)
        else:
            self.file_stats.invalidate(writer.file_id)

    async def truncate(self, node: Node, size: int, handle: WriteHandle | None) -> None:
        assert node.file_id is not None and node.id_info is not None
        writer = handle.writer if handle is not None else self.writer_of(node.file_id)
        if writer is not None:
            await writer.truncate(size)
            return
        if node.id_info.file_type is not FileType.APPENDER:
            raise Refused(
                errno.EPERM,
                f"{node.file_id} is a {type_name(node.id_info.file_type)} file: "
                "only appender files can be truncated",
            )
        await self.client.truncate(node.file_id, size)
        self.stats.requests += 1
        self._forget_blocks(node.file_id)
        self.file_stats.note(node.file_id, FileInfo(size, int(time.time()), 0, ""))

    async def ensure_stored(self, node: Node) -> None:
        """Upload a slave still being written (metadata can be set on stored files only)."""
        writer = self.writer_of(node.file_id)
        if isinstance(writer, SlaveSpool):
            await writer.upload()

    async def flush_all(self) -> None:
        """Send every buffered write and upload every pending slave (before unmounting)."""

        async def store(writer: Writer) -> None:
            try:
                await writer.sync(None)
            except Exception as exc:
                log.error("could not store %s before unmounting: %s", writer.file_id, exc)

        writers = [w for w in self._writers.values() if w.pending]
        if writers:
            log.info("storing pending writes of %d files", len(writers))
        async with trio.open_nursery() as nursery:
            for writer in writers:
                nursery.start_soon(store, writer)

    async def _flush_idle(self) -> None:
        while True:
            await trio.sleep(min(1.0, max(0.05, self.idle / 2)))
            now = trio.current_time()
            for writer in list(self._writers.values()):
                writer.flush_if_idle(now, self.idle)
                if writer.handles <= 0 and not writer.pending:
                    self._retire(writer)  # closed while its last bytes were still going out

    # -- creating ----------------------------------------------------------

    async def create(self, parent: Node, name: str, flags: int) -> tuple[Node, WriteHandle]:
        if parent.kind is Kind.GROUP:
            node, writer = await self._create_alias(parent, name)
        elif parent.kind is Kind.SUBDIR2:
            node, writer = await self._create_slave(parent, name)
        else:
            raise Refused(
                errno.EPERM,
                "new files go in /<group>/ (appender files), or next to a master file (slaves)",
            )
        handle = writer.attach()
        handle.append = bool(flags & os.O_APPEND)
        return node, handle

    async def _create_alias(self, parent: Node, name: str) -> tuple[Node, Writer]:
        group = parent.group
        if _STORE_PATH_RE.fullmatch(name):
            raise Refused(errno.EPERM, f"{name} is reserved for store paths")
        if self.table.alias_target(group, name) is not None:
            raise Refused(errno.EEXIST, f"{group}/{name} exists")
        fid = await self.client.upload(b"", ext=split_ext(name), group=group, appender=True)
        self.stats.requests += 1
        self.table.add_alias(group, name, fid)
        try:
            self.catalog.add(group, name, fid)
        except CatalogError as exc:
            log.error("%s; alias %s/%s kept until unmount only", exc, group, name)
        log.info("created %s/%s -> %s", group, name, fid)
        self.listing.note_file(fid)
        writer = self._new_appender(fid, 0)
        return self.table.file_node(fid, parent=parent.inode), writer

    async def _create_slave(self, parent: Node, name: str) -> tuple[Node, Writer]:
        where = f"{parent.group}/M{parent.store_path:02X}/{parent.hi:02X}/{parent.lo:02X}"
        fid: FileId | None
        try:
            fid = parse_file_id(f"{where}/{name}")
            if decode_file_id(fid).file_type is not FileType.SLAVE:
                fid = None  # too short: it would read back as a normal file
        except InvalidFileId:
            fid = None
        target = await self._slave_target(parent, where, name) if fid is not None else None
        if fid is None or target is None:
            raise Refused(
                errno.EPERM,
                f"{where}/{name} is not a slave name of a master file in that directory "
                "(<master name without ext><prefix>.<ext>)",
            )
        if str(fid) in self._writers:
            raise Refused(errno.EEXIST, f"{fid} is being created")
        writer = SlaveSpool(self.client, fid, target, stats=self.stats)
        self._writers[str(fid)] = writer
        self.listing.note_file(fid)
        return self.table.file_node(fid, parent=parent.inode), writer

    async def _slave_target(self, parent: Node, where: str, name: str) -> SlaveTarget | None:
        """The master `name` extends, found among likely names or the directory's files."""
        for guess in _master_guesses(name):
            prefix_ext = _slave_suffix(guess, name)
            if prefix_ext is None:
                continue
            try:
                master = parse_file_id(f"{where}/{guess}")
                if decode_file_id(master).file_type is FileType.SLAVE:
                    continue
                await self.client.info(master, calc_crc32=False)
            except (InvalidFileId, FileNotFound):
                continue
            return SlaveTarget(master, *prefix_ext)
        names = await self.listing.names(parent.group, parent.store_path, parent.hi, parent.lo)
        for candidate in names:
            prefix_ext = _slave_suffix(candidate, name)
            if prefix_ext is None:
                continue
            try:
                master = parse_file_id(f"{where}/{candidate}")
                if decode_file_id(master).file_type is FileType.SLAVE:
                    continue
            except InvalidFileId:
                continue
            return SlaveTarget(master, *prefix_ext)
        return None

    # -- deleting and renaming ---------------------------------------------

    async def unlink(self, parent: Node, name: str) -> None:
        if parent.kind not in (Kind.GROUP, Kind.SUBDIR2):
            raise NotFound(name)
        node = await self.table.child(parent, name)
        if node.kind is not Kind.FILE:
            raise Refused(errno.EISDIR, f"{node.key} is a directory")
        assert node.file_id is not None
        fid = node.file_id
        is_alias = parent.kind is Kind.GROUP
        writer = self._writers.get(str(fid))
        if isinstance(writer, SlaveSpool) and not writer.uploaded:
            writer.discard()  # never stored: nothing to delete on a server
        else:
            if writer is not None:
                writer.discard()
            try:
                await self.client.delete(fid)
                self.stats.requests += 1
            except FileNotFound:
                if not is_alias:
                    raise
                log.info("%s/%s -> %s was gone already", parent.group, name, fid)
        log.info("deleted %s", fid)
        self._forget_file(fid, unlinked=(parent.inode, name))

    def _forget_file(self, fid: FileId, *, unlinked: tuple[int, str]) -> None:
        group_node = self.table.find(f"/{fid.group}")
        for alias in self.table.aliases_of(fid):
            self._drop_alias(fid.group, alias)
            if group_node is not None and (group_node.inode, alias) != unlinked:
                self.kernel.forget_entry(group_node.inode, alias)
        hi, lo = fid.subdirs
        leaf = self.table.find(f"/{fid.group}/M{fid.store_path_index:02X}/{hi:02X}/{lo:02X}")
        if leaf is not None and (leaf.inode, fid.name) != unlinked:
            self.kernel.forget_entry(leaf.inode, fid.name)
        self.listing.forget_file(fid)
        self.file_stats.invalidate(fid)
        self._forget_blocks(fid)
        self.xattrs.invalidate(fid)

    def _drop_alias(self, group: str, name: str) -> None:
        self.table.remove_alias(group, name)
        try:
            self.catalog.remove(group, name)
        except CatalogError as exc:
            log.error("%s; alias %s/%s may come back after a remount", exc, group, name)

    async def forget_missing_alias(self, group: str, name: str, file_id: FileId) -> None:
        """An alias whose file is gone (deleted elsewhere): drop it -- once its source
        storage, up and asked directly, says so. "No storage has it" is also what the
        tracker says while the source of a file not yet replicated is down, and the
        name must outlive that (and while the file is open for writing here)."""
        if self.table.alias_target(group, name) != file_id:
            return
        if self.writer_of(file_id) is None and await self._gone_from_source(file_id):
            log.info("%s/%s -> %s: the file is gone; alias removed", group, name, file_id)
            self._drop_alias(group, name)
        else:
            log.info("%s/%s -> %s: not found now; the source storage is not sure, alias kept",
                     group, name, file_id)  # fmt: skip

    async def _gone_from_source(self, file_id: FileId) -> bool:
        info = decode_file_id(file_id)
        try:
            storages = await self.client.list_storages(file_id.group)
        except FdfsError:
            return False
        for s in storages:
            is_source = (
                s.storage_id == str(info.source_id)
                if info.source_id is not None
                else s.ip_addr == info.source_ip
            )
            if is_source:
                if s.status != StorageStatus.ACTIVE or s.storage_port <= 0:
                    return False
                addr = ServerAddr(s.ip_addr, s.storage_port)
                try:
                    await self.client.info(file_id, calc_crc32=False, servers=[addr])
                except FileNotFound:
                    return True
                except FdfsError:
                    return False
                return False
        return False  # a source the tracker does not list: cannot tell

    async def rename(
        self, old_parent: Node, old: str, new_parent: Node, new: str, flags: int
    ) -> None:
        if old_parent.kind is not Kind.GROUP:
            raise Refused(errno.EPERM, "only names created in /<group>/ (aliases) can be renamed")
        fid = self.table.alias_target(old_parent.group, old)
        if fid is None:
            if _STORE_PATH_RE.fullmatch(old):
                raise Refused(errno.EPERM, f"{old} is a store path directory")
            raise NotFound(old)
        if new_parent.kind is not Kind.ROOT and new_parent.group != old_parent.group:
            # mv copies and deletes instead: a new appender file in the other group.
            raise Refused(errno.EXDEV, f"{old_parent.group}/{old} cannot move to another group")
        if new_parent.kind is not Kind.GROUP:
            raise Refused(errno.EPERM, f"aliases live in /{old_parent.group}/ only")
        if flags & RENAME_EXCHANGE:
            raise Refused(errno.EINVAL, "rename with RENAME_EXCHANGE")
        if _STORE_PATH_RE.fullmatch(new):
            raise Refused(errno.EPERM, f"{new} is reserved for store paths")
        group = old_parent.group
        replaced = self.table.alias_target(group, new)
        if replaced is not None and flags & RENAME_NOREPLACE:
            raise Refused(errno.EEXIST, f"{group}/{new} exists")
        if old == new:
            return
        try:
            self.catalog.rename(group, old, new)
        except CatalogError as exc:
            log.error("%s; the rename of %s/%s lasts until unmount only", exc, group, old)
        self.table.remove_alias(group, old)
        self.table.add_alias(group, new, fid)
        log.info("renamed %s/%s -> %s/%s (%s)", group, old, group, new, fid)


def _master_guesses(slave_name: str) -> list[str]:
    """Master names a slave name most likely extends: with the slave's own extension
    (a thumbnail of a .jpg is a .jpg), or without any extension."""
    guesses = []
    ext = split_ext(slave_name)
    if 0 < len(ext) <= EXT_NAME_LEN:
        guesses.append(slave_name[: BASE64_LEN + EXT_NAME_LEN - len(ext)] + "." + ext)
    guesses.append(slave_name[: BASE64_LEN + EXT_NAME_LEN + 1])
    return [g for g in guesses if len(g) < len(slave_name)]


def _slave_suffix(master_name: str, slave_name: str) -> tuple[str, str] | None:
    """(prefix, ext) when `slave_name` is a slave name of `master_name`, else None."""
    dot = master_name.find(".", len(master_name) - (EXT_NAME_LEN + 1))
    base = master_name[:dot] if dot >= 0 else master_name
    if len(slave_name) <= len(base) or not slave_name.startswith(base):
        return None
    rest = slave_name[len(base) :]
    prefix, sep, ext = rest.rpartition(".")
    if not sep or len(ext) > EXT_NAME_LEN:
        prefix, ext = rest, ""
    try:
        derived = slave_remote_name("M00/00/00/" + master_name, prefix, ext)
    except LocalProtocolError:
        return None
    return (prefix, ext) if derived == "M00/00/00/" + slave_name else None
