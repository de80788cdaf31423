"""The pyfuse3 `Operations` of the mount: thin handlers, and the one place errors become errnos.

Reads go to the namespace, listing, read path and xattrs; changes go to the
write path (`writepath.WritePath`). An open file's handle carries its writer
when it was opened for writing; a read of a file being written on this host
is answered by that file's writer, any other by the read path.
"""

from __future__ import annotations

import enum
import errno
import functools
import itertools
import logging
import os
import stat as stat_mod
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar, cast

import pyfuse3
import trio
from pyfuse3 import FileHandleT, FileNameT, FlagT, InodeT, ModeT, XAttrNameT

from . import attrs as attrs_mod
from .attrs import AttrFactory, FileStat, FileStats
from .errors import Refused
from .listing import Listing
from .namespace import GroupDirectory, InodeTable, Kind, Node, NotFound
from .options import MountOptions
from .proto.errors import (
    ConnectError,
    FdfsError,
    FileNotFound,
    InvalidFileId,
    NoStorage,
    ProtocolError,
    ServerError,
    Timeout,
)
from .proto.stats import LatencyHistogram
from .readpath import OpenFile, ReadPath
from .writeback import WriteBackFailed, WriteHandle
from .writepath import WritePath
from .xattrs import NoAttribute, Xattrs, outside_user_namespace

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
OpsT = TypeVar("OpsT", bound="Operations")

#: Handlers whose first argument is a file handle rather than an inode.
_FH_OPS = frozenset({"read", "write", "flush", "fsync", "release", "readdir", "releasedir"})
#: A lookup that failed (not ENOENT) fails again at once for this long. The kernel
#: answers a failed check of a cached name with a fresh lookup of the same name:
#: without this, one `stat` or `open` would wait for the cluster twice.
LOOKUP_FAILURE_MEMORY = 1.0


def _leaf(exc: BaseException) -> BaseException:
    """The one error that stands for `exc`: trio nurseries wrap errors in groups, and
    several parts of one request (blocks of a read) can fail together. The first error
    without an errno wins (a bug shows as such), else the first one."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        item = pending.pop(0)
        if isinstance(item, BaseExceptionGroup):
            pending[:0] = item.exceptions
        else:
            leaves.append(item)
    for leaf in leaves:
        if _errno_of_leaf(leaf) is None:
            return leaf
    return leaves[0] if leaves else exc


def errno_for(exc: BaseException) -> int | None:
    """The errno a domain error stands for; None for an unexpected exception."""
    return _errno_of_leaf(_leaf(exc))


def _errno_of_leaf(exc: BaseException) -> int | None:
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    if isinstance(exc, Refused | WriteBackFailed):
        return exc.errno
    if isinstance(exc, NotFound | FileNotFound | InvalidFileId):
        return errno.ENOENT
    if isinstance(exc, NoAttribute):
        return pyfuse3.ENOATTR
    if isinstance(exc, ServerError):
        # A storage's EAGAIN ("not synced yet, ask another") means nothing to a blocking
        # call: read(2) would hand the application a non-blocking "try again".
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
            return errno.EIO
        return exc.errno if 0 < exc.errno < 4096 else errno.EIO
    if isinstance(exc, Timeout | ConnectError | NoStorage | ProtocolError | trio.TooSlowError):
        return errno.EIO
    if isinstance(exc, FdfsError):
        return errno.EIO
    return None


def _harmless_chmod(wanted: int, shown: int) -> bool:
    """A mode change with nothing to keep: the mode shown, or it less write bits.

    The write bits say what FastDFS allows (appender files take writes), so a copy
    of a read-only file (``cp -a``, ``mv``, ``rsync -a`` into a group make appender
    files) asking for fewer of them loses nothing; more would promise writes.
    """
    wanted, shown = stat_mod.S_IMODE(wanted), stat_mod.S_IMODE(shown)
    return wanted & ~0o222 == shown & ~0o222 and wanted & 0o222 & ~shown == 0


@dataclass(slots=True)
class OpStats:
    """What crossed the FUSE boundary: requests per operation, failures per
    operation and errno name, bytes returned by ``read`` and taken by ``write``."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0
    latency: dict[str, LatencyHistogram] = field(default_factory=dict)  # by operation

    def observe_latency(self, op: str, seconds: float) -> None:
        hist = self.latency.get(op)
        if hist is None:
            hist = self.latency[op] = LatencyHistogram()
        hist.observe(seconds)

    def count_result(self, op: str, result: object) -> None:
        if op == "read" and isinstance(result, bytes | bytearray | memoryview):
            self.bytes_read += len(result)
        elif op == "write" and isinstance(result, int):
            self.bytes_written += result

    def count_error(self, op: str, code: int) -> None:
        by_errno = self.errors.setdefault(op, {})
        name = errno.errorcode.get(code, str(code))
        by_errno[name] = by_errno.get(name, 0) + 1


class Slow(enum.Enum):
    """A fast path's answer when it cannot answer without I/O."""

    NEEDS_IO = enum.auto()


NEEDS_IO = Slow.NEEDS_IO


def fuse_op(
    fn: Callable[Concatenate[OpsT, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[OpsT, P], Coroutine[Any, Any, R]]:
    """Wrap a handler: a debug line, counters, the operation deadline, errors -> `FUSEError`."""
    return _wrap_op(fn, None)


def fuse_op_fast(
    fast: Callable[Concatenate[OpsT, P], R | Slow],
) -> Callable[
    [Callable[Concatenate[OpsT, P], Coroutine[Any, Any, R]]],
    Callable[Concatenate[OpsT, P], Coroutine[Any, Any, R]],
]:
    """`fuse_op` with a synchronous fast path tried first: `fast` answers from memory or
    returns `NEEDS_IO`, and only then does the handler run, under the operation deadline.

    A deadline costs a cancel scope (about as much as the rest of a cached answer), and
    an answer given without awaiting anything cannot be late.
    """

    def wrap(
        fn: Callable[Concatenate[OpsT, P], Coroutine[Any, Any, R]],
    ) -> Callable[Concatenate[OpsT, P], Coroutine[Any, Any, R]]:
        return _wrap_op(fn, fast)

    return wrap


def _wrap_op(
    fn: Callable[Concatenate[OpsT, P], Coroutine[Any, Any, R]],
    fast: Callable[Concatenate[OpsT, P], R | Slow] | None,
) -> Callable[Concatenate[OpsT, P], Coroutine[Any, Any, R]]:
    op = fn.__name__

    @functools.wraps(fn)
    async def handler(self: OpsT, *args: P.args, **kwargs: P.kwargs) -> R:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", op, _describe(args))
        stats = self.op_stats
        stats.requests[op] = stats.requests.get(op, 0) + 1
        started = trio.current_time()
        try:
            answer = NEEDS_IO if fast is None else fast(self, *args, **kwargs)
            if answer is NEEDS_IO:
                # trio.fail_after, without its generator context manager.
                with trio.CancelScope(deadline=started + self.timeout) as scope:
                    result = await fn(self, *args, **kwargs)
                if scope.cancelled_caught:
                    raise trio.TooSlowError
            else:
                result = answer
        except Exception as exc:
            error = self.fuse_error(op, args, exc)
            stats.count_error(op, error.errno)
            raise error from None
        finally:
            stats.observe_latency(op, trio.current_time() - started)
        stats.count_result(op, result)
        return result

    return handler


def _describe(args: Sequence[object]) -> str:
    shown = []
    for arg in args:
        if isinstance(arg, bytes) and len(arg) > 255:  # write and setxattr data
            shown.append(f"<{len(arg)} bytes>")
        elif isinstance(arg, bytes):
            shown.append(repr(os.fsdecode(arg)))
        elif isinstance(arg, int | str | float):
            shown.append(str(arg))
    return " ".join(shown)


@dataclass(slots=True)
class FileHandle:
    """An open file: its read state, and its write handle when opened for writing."""

    file: OpenFile
    write: WriteHandle | None = None
    inode: int = 0


@dataclass(slots=True)
class DirHandle:
    node: Node
    entries: list[tuple[str, Node]] | None = None  # snapshot taken by the first readdir


class Operations(pyfuse3.Operations):
    """Maps FUSE requests onto the namespace, listing, read path and xattrs."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(
        self,
        opts: MountOptions,
        *,
        table: InodeTable,
        groups: GroupDirectory,
        stats: FileStats,
        attrs: AttrFactory,
        listing: Listing,
        readpath: ReadPath,
        xattrs: Xattrs,
        writer: WritePath,
    ) -> None:
        super().__init__()
        self.opts = opts
        self.timeout = opts.timeout
        self.table = table
        self.groups = groups
        self.stats = stats
        self.attrs = attrs
        self.listing = listing
        self.readpath = readpath
        self.xattrs = xattrs
        self.writer = writer
        #: What the daemon tells the kernel (the write path's too: one owner).
        self.kernel = writer.kernel
        self._handles = itertools.count(1)
        self._dirs: dict[int, DirHandle] = {}
        self._files: dict[int, FileHandle] = {}
        self._opens_of: dict[int, int] = {}  # open handles per inode
        #: Inodes opened since the kernel looked them up (it forgets pages with the inode).
        self._opened: set[int] = set()
        self._failed_lookups: dict[tuple[int, str], tuple[int, float]] = {}
        self.op_stats = OpStats()

    # -- the error boundary ------------------------------------------------

    def fuse_error(self, op: str, args: Sequence[object], exc: Exception) -> pyfuse3.FUSEError:
        leaf = _leaf(exc)
        code = _errno_of_leaf(leaf)
        target = self._target(op, args)
        if code is None:
            log.error("%s %s: unexpected error", op, target, exc_info=leaf)
            return pyfuse3.FUSEError(errno.EIO)
        if code == errno.EIO:
            what = (
                f"no answer within {self.timeout:g}s"
                if isinstance(leaf, trio.TooSlowError)
                else str(leaf)
            )
            log.warning("%s %s failed: %s", op, target, what or type(leaf).__name__)
        elif code not in (errno.ENOENT, pyfuse3.ENOATTR) and not isinstance(
            leaf, pyfuse3.FUSEError
        ):
            log.info("%s %s: %s", op, target, leaf)
        return pyfuse3.FUSEError(code)

    def _target(self, op: str, args: Sequence[object]) -> str:
        if not args or not isinstance(args[0], int):
            return ""
        handle = args[0]
        if op in _FH_OPS:
            f = self._files.get(handle)
            if f is not None:
                return str(f.file.file_id)
            d = self._dirs.get(handle)
            return d.node.key if d is not None else f"fh {handle}"
        try:
            node = self.table.get(handle)
        except NotFound:
            return f"inode {handle}"
        if len(args) > 1 and isinstance(args[1], bytes):
            return f"{node.key.rstrip('/')}/{os.fsdecode(args[1])}"
        return node.key

    def _refuse(self, op: str, what: object = "") -> NoReturn:
        """An operation FastDFS has no counterpart for: EPERM (EROFS on ro mounts)."""
        code = errno.EROFS if self.opts.read_only else errno.EPERM
        log.info("refused %s %s: %s", op, what, os.strerror(code))
        raise pyfuse3.FUSEError(code)

    def _check_writable(self, op: str, what: object = "") -> None:
        """Every change is EROFS on a read-only mount."""
        if self.opts.read_only:
            log.info("refused %s %s: %s", op, what, os.strerror(errno.EROFS))
            raise pyfuse3.FUSEError(errno.EROFS)

    # -- attributes --------------------------------------------------------

    async def _stat(self, node: Node, *, fresh: bool = False) -> FileStat:
        """A file's attributes: from the write path while it is written here."""
        assert node.file_id is not None
        local = self.writer.local_stat(node)
        if local is not None:
            return local
        try:
            return await self.stats.get(node, fresh=fresh)
        except FileNotFound:
            # Gone from the cluster (deleted elsewhere, or never there): `ls` stops
            # showing it too, until a later listing pass says otherwise.
            self.listing.forget_file(node.file_id)
            raise

    async def _entry(self, node: Node, *, fresh: bool = False) -> pyfuse3.EntryAttributes:
        if node.kind is not Kind.FILE:
            return self.attrs.directory(node)
        return self.attrs.file(node, await self._stat(node, fresh=fresh))

    @fuse_op
    async def lookup(
        self, parent_inode: InodeT, name: FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        key = (parent_inode, os.fsdecode(name))
        failed = self._failed_lookups.get(key)
        now = trio.current_time()
        if failed is not None:
            if now - failed[1] < LOOKUP_FAILURE_MEMORY:
                raise pyfuse3.FUSEError(failed[0])
            del self._failed_lookups[key]
        try:
            return await self._lookup(parent_inode, key[1])
        except Exception as exc:
            code = errno_for(exc)
            if code not in (None, errno.ENOENT):
                if len(self._failed_lookups) > 10_000:
                    self._failed_lookups.clear()
                self._failed_lookups[key] = (code, trio.current_time())
            raise

    async def _lookup(self, parent_inode: int, text: str) -> pyfuse3.EntryAttributes:
        parent = self.table.get(parent_inode)
        if text == ".":
            child = parent
        elif text == "..":
            child = self.table.parent_of(parent)
        else:
            child = await self.table.child(parent, text)
        if child.kind is Kind.FILE:
            assert child.file_id is not None
            try:
                fstat = await self._stat(child)
            except FileNotFound:
                if parent.kind is Kind.GROUP:  # an alias of a file deleted elsewhere
                    await self.writer.forget_missing_alias(parent.group, text, child.file_id)
                raise
            live = self.table.remember(child)
            self.listing.note_file(child.file_id)
            return self.attrs.file(live, fstat)
        live = self.table.remember(child)
        return self.attrs.directory(live)

    async def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:
        log.debug("forget %d inodes", len(inode_list))
        try:
            for inode, count in inode_list:
                self._opened.discard(inode)
                self.table.forget(inode, count)
        except Exception:
            log.exception("forget %r", inode_list)

    def _stat_now(self, node: Node) -> FileStat | None:
        """`_stat` when it needs no I/O (None: ask)."""
        return self.writer.local_stat(node) or self.stats.known(node)

    def _getattr_now(
        self, inode: InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes | Slow:
        node = self.table.get(inode)
        if node.kind is not Kind.FILE:
            return self.attrs.directory(node)
        fstat = self._stat_now(node)
        return NEEDS_IO if fstat is None else self.attrs.file(node, fstat)

    @fuse_op_fast(_getattr_now)
    async def getattr(self, inode: InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._entry(self.table.get(inode))

    @fuse_op
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return attrs_mod.statfs((await self.groups.all()).values())

    # -- directories ---------------------------------------------------------

    @fuse_op
    async def opendir(self, inode: InodeT, ctx: pyfuse3.RequestContext) -> FileHandleT:
        node = self.table.get(inode)
        if node.kind is Kind.FILE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self._handles)
        self._dirs[fh] = DirHandle(node)
        return fh

    async def _dir_entries(self, node: Node) -> list[tuple[str, Node]]:
        if node.kind is Kind.SUBDIR2:
            names = await self.listing.names(node.group, node.store_path, node.hi, node.lo)
            entries = []
            for name in names:
                try:
                    entries.append((name, await self.table.child(node, name)))
                except NotFound:
                    log.debug("listing of %s has a malformed name %r", node.key, name)
            return entries
        names = await self.table.child_names(node)
        if self.opts.sparse and node.kind in (Kind.STORE_PATH, Kind.SUBDIR1):
            index = await self.listing.index(node.group)
            if index is not None:
                hi = node.hi if node.kind is Kind.SUBDIR1 else None
                used = index.nonempty_subdirs(node.store_path, hi)
                names = [n for n in names if int(n, 16) in used]
        return [(name, self.table.child_template(node, name)) for name in names]

    @fuse_op
    async def readdir(self, fh: FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs[fh]
        if handle.entries is None or start_id == 0:
            handle.entries = await self._dir_entries(handle.node)
        node = handle.node
        if start_id == 0 and not pyfuse3.readdir_reply(token, b".", self.attrs.directory(node), 1):
            return
        if start_id <= 1:
            parent = self.table.parent_of(node)
            if not pyfuse3.readdir_reply(token, b"..", self.attrs.directory(parent), 2):
                return
        for position in range(max(0, start_id - 2), len(handle.entries)):
            name, child = handle.entries[position]
            self.table.inode_for(child)
            if child.kind is Kind.FILE:
                fstat = self.writer.local_stat(child) or self.stats.cached(child)
                attr = self.attrs.file(child, fstat)
            else:
                attr = self.attrs.directory(child)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, position + 3):
                return
            live = self.table.remember(child)
            if live is not child:  # a concurrent lookup got there first
                attr.st_ino = live.inode

    @fuse_op
    async def releasedir(self, fh: FileHandleT) -> None:
        self._dirs.pop(fh, None)

    # -- reading -------------------------------------------------------------

    def _open_now(
        self, inode: InodeT, flags: FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo | Slow:
        """Opening an immutable file for reading, its attributes known: no I/O."""
        if flags & os.O_ACCMODE != os.O_RDONLY:
            return NEEDS_IO
        node = self.table.get(inode)
        if node.kind is not Kind.FILE or not self._immutable(node):
            return NEEDS_IO
        fstat = self._stat_now(node)
        return NEEDS_IO if fstat is None else self._new_handle(node, fstat, None)

    @fuse_op_fast(_open_now)
    async def open(
        self, inode: InodeT, flags: FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        node = self.table.get(inode)
        if node.kind is not Kind.FILE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        assert node.file_id is not None and node.id_info is not None
        handle = None
        if flags & os.O_ACCMODE != os.O_RDONLY:
            self._check_writable("open for writing", node.file_id)
            handle = await self.writer.open(node, flags)
        try:
            # Close-to-open: an appender file is asked again at every open.
            fstat = await self._stat(node, fresh=not self._immutable(node))
        except BaseException:
            if handle is not None:
                await self.writer.release(handle)
            raise
        return self._new_handle(node, fstat, handle)

    def _new_handle(
        self, node: Node, fstat: FileStat, handle: WriteHandle | None
    ) -> pyfuse3.FileInfo:
        assert node.file_id is not None and node.id_info is not None
        f = self.readpath.open(
            node.file_id, node.id_info, fstat.size, immutable=fstat.immutable, mtime=fstat.mtime
        )
        fh = next(self._handles)
        # Pages of immutable files stay valid forever: keep them across opens.
        keep = fstat.immutable and fstat.exact and handle is None
        if keep and node.inode not in self._opened:
            self._opened.add(node.inode)
            self._to_page_cache(node.inode, f)
        self._files[fh] = FileHandle(f, handle, node.inode)
        self._opens_of[node.inode] = self._opens_of.get(node.inode, 0) + 1
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, direct_io=False)

    def _to_page_cache(self, inode: int, f: OpenFile) -> None:
        """At an inode's first open, hand its content to the kernel if we hold it all.

        A small file confirmed at lookup was downloaded whole; stored before
        the open is answered, its reads are the kernel's: no READ reaches us,
        and the attributes stay valid (on a read-write mount a READ we answer
        makes the next stat ask for them again). Safe in the loop only while
        no other handle has the inode open (see `KernelCache.store`).
        """
        if self._opens_of.get(inode) or self.writer.writer_of(f.file_id) is not None:
            return
        data = self.readpath.whole_now(f)
        if data is not None:
            self.kernel.store(inode, data)

    @staticmethod
    def _immutable(node: Node) -> bool:
        return node.id_info is not None and node.id_info.size is not None

    def _read_now(self, fh: FileHandleT, off: int, size: int) -> bytes | Slow:
        """A read the block cache holds whole (and no writer on this host)."""
        h = self._files[fh]
        if h.write is not None or self.writer.writer_of(h.file.file_id) is not None:
            return NEEDS_IO
        data = self.readpath.read_now(h.file, off, size)
        return NEEDS_IO if data is None else cast(bytes, data)

    @fuse_op_fast(_read_now)
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        h = self._files[fh]
        # This host's view while the file is written here (by this handle or another).
        writer = h.write.writer if h.write is not None else self.writer.writer_of(h.file.file_id)
        if writer is not None:
            return await writer.read(off, size)
        try:
            # A memoryview saves a copy; pyfuse3 accepts any contiguous buffer (its stub
            # says bytes).
            return cast(bytes, await self.readpath.read(h.file, off, size))
        except Exception as exc:
            if not isinstance(_leaf(exc), FileNotFound):
                raise
            # Deleted since it was opened: the descriptor is stale (as NFS says it).
            self.stats.note_missing(h.file.file_id)
            log.info("read %s: deleted from the cluster since it was opened", h.file.file_id)
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _write_handle(self, fh: int | None) -> WriteHandle | None:
        h = self._files.get(fh) if fh is not None else None
        return h.write if h is not None else None

    def _flush_now(self, fh: FileHandleT) -> Slow | None:
        if self.opts.read_only:
            # Nothing is ever written here: ENOSYS tells the kernel to stop sending
            # flushes at all (one request less per close).
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return NEEDS_IO if self._write_handle(fh) is not None else None

    @fuse_op_fast(_flush_now)
    async def flush(self, fh: FileHandleT) -> None:
        handle = self._write_handle(fh)
        if handle is not None:
            await self.writer.flush(handle)

    @fuse_op
    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        handle = self._write_handle(fh)
        if handle is not None:
            await self.writer.fsync(handle)

    def _release_now(self, fh: FileHandleT) -> Slow | None:
        h = self._files.get(fh)
        if h is not None and h.write is not None:
            return NEEDS_IO
        self._close_handle(fh)
        return None

    @fuse_op_fast(_release_now)
    async def release(self, fh: FileHandleT) -> None:
        h = self._close_handle(fh)
        if h is not None and h.write is not None:
            await self.writer.release(h.write)

    def _close_handle(self, fh: int) -> FileHandle | None:
        h = self._files.pop(fh, None)
        if h is not None:
            left = self._opens_of.pop(h.inode, 0) - 1
            if left > 0:
                self._opens_of[h.inode] = left
        return h

    # -- extended attributes -------------------------------------------------

    def _getxattr_now(
        self, inode: InodeT, name: XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes | Slow:
        if outside_user_namespace(name):
            # security.capability is asked before every write (the kernel's check for
            # privileges to drop): answered without a deadline scope.
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return NEEDS_IO

    @fuse_op_fast(_getxattr_now)
    async def getxattr(self, inode: InodeT, name: XAttrNameT, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.xattrs.get(self.table.get(inode), name)

    @fuse_op
    async def listxattr(self, inode: InodeT, ctx: pyfuse3.RequestContext) -> Sequence[XAttrNameT]:
        return await self.xattrs.list(self.table.get(inode))

    # -- changes -------------------------------------------------------------

    @fuse_op
    async def setxattr(
        self, inode: InodeT, name: XAttrNameT, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        node = self.table.get(inode)
        self._check_writable("setxattr", node.key)
        await self.writer.ensure_stored(node)
        await self.xattrs.set(node, name, value)

    @fuse_op
    async def removexattr(
        self, inode: InodeT, name: XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        node = self.table.get(inode)
        self._check_writable("removexattr", node.key)
        await self.writer.ensure_stored(node)
        await self.xattrs.remove(node, name)

    @fuse_op
    async def setattr(
        self,
        inode: InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self.table.get(inode)
        self._check_writable("setattr", node.key)
        current = await self._entry(node)
        # FastDFS keeps no modes, owners or times: setting what is shown already is
        # harmless (cp -p, rsync), anything else is refused; times are ignored.
        if fields.update_mode and not _harmless_chmod(attr.st_mode, current.st_mode):
            if self.writer.writer_of(node.file_id) is None:
                self._refuse("chmod", node.key)
            # Open for writing here (rsync's temporary file, a copy cp -a is making): like
            # the mode given to create, one that FastDFS cannot keep is not kept.
            log.info("chmod %o of %s, being written here: not kept",
                     stat_mod.S_IMODE(attr.st_mode), node.key)  # fmt: skip
        if (fields.update_uid and attr.st_uid != current.st_uid) or (
            fields.update_gid and attr.st_gid != current.st_gid
        ):
            self._refuse("chown", node.key)
        if fields.update_size:
            if node.kind is not Kind.FILE:
                raise pyfuse3.FUSEError(errno.EISDIR)
            handle = self._write_handle(fh)
            await self.writer.truncate(node, attr.st_size, handle)
            return await self._entry(node)
        return current

    @fuse_op
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        handle = self._write_handle(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await self.writer.write(handle, off, buf)

    @fuse_op
    async def create(
        self,
        parent_inode: InodeT,
        name: FileNameT,
        mode: ModeT,
        flags: FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self.table.get(parent_inode)
        self._check_writable("create", os.fsdecode(name))
        node, handle = await self.writer.create(parent, os.fsdecode(name), flags)
        live = self.table.remember(node)
        handle.inode = live.inode
        fstat = handle.writer.stat()
        return self._new_handle(live, fstat, handle), self.attrs.file(live, fstat)

    @fuse_op
    async def unlink(
        self, parent_inode: InodeT, name: FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        parent = self.table.get(parent_inode)
        self._check_writable("unlink", os.fsdecode(name))
        await self.writer.unlink(parent, os.fsdecode(name))

    @fuse_op
    async def rename(
        self,
        parent_inode_old: InodeT,
        name_old: FileNameT,
        parent_inode_new: InodeT,
        name_new: FileNameT,
        flags: FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self._check_writable("rename", os.fsdecode(name_old))
        old_parent = self.table.get(parent_inode_old)
        new_parent = self.table.get(parent_inode_new)
        await self.writer.rename(
            old_parent, os.fsdecode(name_old), new_parent, os.fsdecode(name_new), flags
        )

    @fuse_op
    async def mkdir(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._refuse("mkdir", os.fsdecode(name))

    @fuse_op
    async def rmdir(
        self, parent_inode: InodeT, name: FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self._refuse("rmdir", os.fsdecode(name))

    @fuse_op
    async def mknod(
        self,
        parent_inode: InodeT,
        name: FileNameT,
        mode: ModeT,
        rdev: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse("mknod", os.fsdecode(name))

    @fuse_op
    async def symlink(
        self,
        parent_inode: InodeT,
        name: FileNameT,
        target: FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse("symlink", os.fsdecode(name))

    @fuse_op
    async def link(
        self,
        inode: InodeT,
        new_parent_inode: InodeT,
        new_name: FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse("link", os.fsdecode(new_name))

    # -- introspection -------------------------------------------------------

    @property
    def open_files(self) -> int:
        return len(self._files)

    @property
    def readahead_window(self) -> int:
        """The largest readahead window among open files (0: nobody reads sequentially)."""
        return max((h.file.readahead.window for h in self._files.values()), default=0)
