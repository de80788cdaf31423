"""The pyfuse3 `Operations` of the mount: thin handlers, and the one place errors become errnos."""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar, cast

import pyfuse3
import trio
from pyfuse3 import FileHandleT, FileNameT, FlagT, InodeT, ModeT, XAttrNameT

from . import attrs as attrs_mod
from .attrs import AttrFactory, FileStats
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
from .readpath import OpenFile, ReadPath
from .writepath import WritePath
from .xattrs import NoAttribute, Xattrs

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
OpsT = TypeVar("OpsT", bound="Operations")

#: Handlers whose first argument is a file handle rather than an inode.
_FH_OPS = frozenset({"read", "write", "flush", "fsync", "release", "readdir", "releasedir"})


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (trio nurseries wrap errors)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def errno_for(exc: BaseException) -> int | None:
    """The errno a domain error stands for; None for an unexpected exception."""
    exc = _leaf(exc)
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    if isinstance(exc, NotFound | FileNotFound | InvalidFileId):
        return errno.ENOENT
    if isinstance(exc, NoAttribute):
        return pyfuse3.ENOATTR
    if isinstance(exc, ServerError):
        return exc.errno if 0 < exc.errno < 4096 else errno.EIO
    if isinstance(exc, Timeout | ConnectError | NoStorage | ProtocolError | trio.TooSlowError):
        return errno.EIO
    if isinstance(exc, FdfsError):
        return errno.EIO
    return None


@dataclass(slots=True)
class OpStats:
    """What crossed the FUSE boundary: requests per operation, failures per
    operation and errno name, bytes returned by ``read`` and taken by ``write``."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0

    def count_result(self, op: str, result: object) -> None:
        if op == "read" and isinstance(result, bytes | bytearray | memoryview):
            self.bytes_read += len(result)
        elif op == "write" and isinstance(result, int):
            self.bytes_written += result

    def count_error(self, op: str, code: int) -> None:
        by_errno = self.errors.setdefault(op, {})
        name = errno.errorcode.get(code, str(code))
        by_errno[name] = by_errno.get(name, 0) + 1


def fuse_op(
    fn: Callable[Concatenate[OpsT, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[OpsT, P], Coroutine[Any, Any, R]]:
    """Wrap a handler: a debug line, counters, the operation deadline, errors -> `FUSEError`."""
    op = fn.__name__

    @functools.wraps(fn)
    async def handler(self: OpsT, *args: P.args, **kwargs: P.kwargs) -> R:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", op, _describe(args))
        stats = self.op_stats
        stats.requests[op] = stats.requests.get(op, 0) + 1
        try:
            with trio.fail_after(self.timeout):
                result = await fn(self, *args, **kwargs)
        except Exception as exc:
            error = self.fuse_error(op, args, exc)
            stats.count_error(op, error.errno)
            raise error from None
        stats.count_result(op, result)
        return result

    return handler


def _describe(args: Sequence[object]) -> str:
    shown = []
    for arg in args:
        if isinstance(arg, bytes):
            shown.append(repr(os.fsdecode(arg)))
        elif isinstance(arg, int | str | float):
            shown.append(str(arg))
    return " ".join(shown)


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
        self._handles = itertools.count(1)
        self._dirs: dict[int, DirHandle] = {}
        self._files: dict[int, OpenFile] = {}
        self.op_stats = OpStats()

    # -- the error boundary ------------------------------------------------

    def fuse_error(self, op: str, args: Sequence[object], exc: Exception) -> pyfuse3.FUSEError:
        code = errno_for(exc)
        target = self._target(op, args)
        leaf = _leaf(exc)
        if code is None:
            log.exception("%s %s: unexpected error", op, target, exc_info=exc)
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
                return str(f.file_id)
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
        """Every change is refused until the write side lands (EROFS on ro mounts)."""
        code = errno.EROFS if self.opts.read_only else errno.EPERM
        log.info("refused %s %s: %s", op, what, os.strerror(code))
        raise pyfuse3.FUSEError(code)

    # -- attributes --------------------------------------------------------

    async def _entry(self, node: Node, *, fresh: bool = False) -> pyfuse3.EntryAttributes:
        if node.kind is not Kind.FILE:
            return self.attrs.directory(node)
        assert node.file_id is not None
        fstat = await self.stats.get(node, fresh=fresh, listed=self.listing.has_file(node.file_id))
        return self.attrs.file(node, fstat)

    @fuse_op
    async def lookup(
        self, parent_inode: InodeT, name: FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self.table.get(parent_inode)
        text = os.fsdecode(name)
        if text == ".":
            child = parent
        elif text == "..":
            child = self.table.parent_of(parent)
        else:
            child = await self.table.child(parent, text)
        if child.kind is Kind.FILE:
            assert child.file_id is not None
            fstat = await self.stats.get(child, listed=self.listing.has_file(child.file_id))
            live = self.table.remember(child)
            self.listing.note_file(child.file_id)
            return self.attrs.file(live, fstat)
        live = self.table.remember(child)
        return self.attrs.directory(live)

    async def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:
        log.debug("forget %d inodes", len(inode_list))
        try:
            for inode, count in inode_list:
                self.table.forget(inode, count)
        except Exception:
            log.exception("forget %r", inode_list)

    @fuse_op
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
                attr = self.attrs.file(child, self.stats.cached(child))
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

    @fuse_op
    async def open(
        self, inode: InodeT, flags: FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        node = self.table.get(inode)
        if node.kind is not Kind.FILE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        assert node.file_id is not None and node.id_info is not None
        if flags & os.O_ACCMODE != os.O_RDONLY:
            self._refuse("open for writing", node.file_id)
        # Close-to-open: an appender file is asked again at every open.
        fstat = await self.stats.get(node, fresh=not self._immutable(node))
        f = self.readpath.open(
            node.file_id, node.id_info, fstat.size, immutable=fstat.immutable, mtime=fstat.mtime
        )
        fh = next(self._handles)
        self._files[fh] = f
        # Pages of immutable files stay valid forever: keep them across opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=fstat.immutable, direct_io=False)

    @staticmethod
    def _immutable(node: Node) -> bool:
        return node.id_info is not None and node.id_info.size is not None

    @fuse_op
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        # A memoryview saves a copy; pyfuse3 accepts any contiguous buffer (its stub says bytes).
        return cast(bytes, await self.readpath.read(self._files[fh], off, size))

    @fuse_op
    async def flush(self, fh: FileHandleT) -> None:
        return None

    @fuse_op
    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        return None

    @fuse_op
    async def release(self, fh: FileHandleT) -> None:
        self._files.pop(fh, None)

    # -- extended attributes -------------------------------------------------

    @fuse_op
    async def getxattr(self, inode: InodeT, name: XAttrNameT, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.xattrs.get(self.table.get(inode), name)

    @fuse_op
    async def listxattr(self, inode: InodeT, ctx: pyfuse3.RequestContext) -> Sequence[XAttrNameT]:
        return await self.xattrs.list(self.table.get(inode))

    # -- changes: the write side's seams (refused for now) ---------------------

    @fuse_op
    async def setxattr(
        self, inode: InodeT, name: XAttrNameT, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self._refuse("setxattr", self.table.get(inode).key)

    @fuse_op
    async def removexattr(
        self, inode: InodeT, name: XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self._refuse("removexattr", self.table.get(inode).key)

    @fuse_op
    async def setattr(
        self,
        inode: InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse("setattr", self.table.get(inode).key)

    @fuse_op
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        self._refuse("write", fh)

    @fuse_op
    async def create(
        self,
        parent_inode: InodeT,
        name: FileNameT,
        mode: ModeT,
        flags: FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._refuse("create", os.fsdecode(name))

    @fuse_op
    async def unlink(
        self, parent_inode: InodeT, name: FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self._refuse("unlink", os.fsdecode(name))

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
        self._refuse("rename", os.fsdecode(name_old))

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
        return max((f.readahead.window for f in self._files.values()), default=0)
