"""Write-back of one file: coalesced changes of an appender file, a spooled slave upload.

# Strategy
An `AppenderWriter` holds what this host has written to one appender file and
not yet seen acknowledged, shared by every handle open on the file. A write
lands in the current *extent* (an offset and the written bytes) while it touches or
continues it; a write elsewhere seals the extent and starts the next one. A
hole between the end of the file and a write is zero bytes in the extent when
small, and otherwise left to the storage (TRUNCATE_FILE grows a file with
zeros). An extent is sealed when it reaches its size limit, after an idle
time, and on fsync/flush/close; one sender task per file sends sealed extents
in order to the file's source storage -- MODIFY_FILE for the part inside the
stored file, APPEND_FILE for the rest. At most `MAX_QUEUED` sealed extents
wait, so a writer faster than the storage is held to its pace with bounded
memory, while the next extent fills during a send. The limit starts small
(`FIRST_EXTENT`) and doubles with every full extent up to ``flush_size``, so
the storage gets its first bytes early and a steady sequential writer gets
large requests.

Memory is bounded for the whole mount too: every writer counts the bytes it
buffers against one `WriteBudget`. A write that would take the total past the
budget waits (after sealing the writer's own extent, so that what it holds goes
out) until acknowledged or dropped bytes make room -- writers wait, they do not
grow. When the last buffered byte of the mount is released, freed memory is
handed back to the system.

Errors follow Linux's rule for write-back: a failed send is reported once to
every handle that was open then -- by its next write, fsync or flush (close).
The unsent data is dropped, the kernel is told to forget its pages, and the
file's size is asked again before the next change. Handles get a `WriteBackFailed`
(the storage's errno, else EIO; never ENOENT for a file open here).

Reads while a writer exists lay every unacknowledged extent, oldest first,
over the bytes the source storage returns, so this host sees its own writes at
once whether or not they have been sent. Only the part the storage has
acknowledged is asked of it; past that, what no extent holds is a hole (zeros).

A `SlaveSpool` is a slave file being created: FastDFS writes slaves once, so
its bytes go to a spooled temporary file and are uploaded (UPLOAD_SLAVE_FILE)
at the first fsync or flush. Afterwards it is an ordinary read-only slave.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

import trio

from .attrs import FileStat
from .clientapi import WriteClient
from .errors import Refused
from .proto import FdfsError, FileId, FileIdInfo, FileNotFound, FileType, decode_file_id
from .proto.errors import ServerError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: Queued extents per file besides the one filling: one in flight, one waiting.
MAX_QUEUED = 2
#: The first extent of a writer is sent at this size; the next ones double up to flush_size.
FIRST_EXTENT = 1 * MIB
#: A hole up to this size is sent as zeros with the write after it.
GAP_FILL = 1 * MIB
#: A slave's bytes stay in memory up to this size, then go to a temporary file.
SLAVE_SPOOL_MEMORY = 4 * MIB

#: Bytes buffered by the whole mount at which freed memory is handed back to the system.
TRIM_AFTER = 16 * MIB
#: How long a send refused with EAGAIN is retried (the mount passes its ``timeout``).
RETRY_FOR = 30.0
#: The first pause between such retries; it doubles up to `RETRY_PAUSE_MAX`.
RETRY_PAUSE = 0.05
RETRY_PAUSE_MAX = 0.5

Spawn = Callable[[Callable[[], Awaitable[None]], str], None]
SizeQuery = Callable[[FileId], Awaitable[int]]
RangeFetch = Callable[[FileId, int, int], Awaitable[bytes]]


class WriteBackFailed(FdfsError):
    """A change that could not be stored, as reported to a handle: the errno the storage
    gave (ENOSPC...), else EIO. A storage that does not have a file open here (its
    source is down, a replica answers) is EIO too, not ENOENT: the name is still there.

    A new one is raised for every report: a kept exception would keep the frames it was
    raised through, and with them the write buffers they hold."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code

    @classmethod
    def of(cls, exc: BaseException, file_id: FileId) -> WriteBackFailed:
        if isinstance(exc, WriteBackFailed):
            return cls(exc.errno, str(exc))
        if isinstance(exc, FileNotFound):
            return cls(errno.EIO, f"{file_id}: the storage asked does not have the file: {exc}")
        if isinstance(exc, ServerError) and 0 < exc.errno < 4096 and exc.errno != errno.EAGAIN:
            return cls(exc.errno, str(exc))
        return cls(errno.EIO, str(exc) or type(exc).__name__)


class WriteBudget:
    """Bytes buffered by every writer of the mount, held under `limit`: writers wait."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.used = 0
        self.peak = 0
        self.waits = 0  # writes that had to wait for room
        self._high = 0  # most held since memory was last handed back
        self._freed = trio.Event()

    def room_for(self, n: int) -> bool:
        """True when `n` more bytes fit (always when nothing is held: one huge write
        must be able to go through)."""
        return n <= 0 or self.used == 0 or self.used + n <= self.limit

    def change(self, delta: int) -> None:
        if delta > 0:
            self.used += delta
            self.peak = max(self.peak, self.used)
            self._high = max(self._high, self.used)
        elif delta < 0:
            self.used += delta
            self._freed.set()
            self._freed = trio.Event()
            if self.used <= 0 and self._high >= min(TRIM_AFTER, self.limit // 2):
                self._high = 0
                _trim_memory()

    async def wait(self) -> None:
        self.waits += 1
        await self._freed.wait()


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 -- glibc only
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_LIBC = _load_libc()


def _trim_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps big freed blocks otherwise)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


#: Writes of at least this size are kept as they came; smaller ones are copied together.
KEEP_WRITES_FROM = 32 * 1024


class Extent:
    """Contiguous bytes written at `offset`, not yet acknowledged by the storage.

    Large writes that continue the extent are kept as the `bytes` objects pyfuse3
    made for them (no copy: they go to the socket from there); small ones are
    copied into a shared tail, so that a byte-at-a-time writer does not hold an
    object per byte. A write into the middle joins the extent into one
    bytearray first.
    """

    __slots__ = ("_buf", "_chunks", "_len", "offset")

    def __init__(self, offset: int, zeros: int = 0) -> None:
        self.offset = offset
        self._chunks: list[bytes | bytearray] = [bytearray(zeros)] if zeros else []
        self._buf: bytearray | None = None
        self._len = zeros

    def __len__(self) -> int:
        return self._len

    @property
    def end(self) -> int:
        return self.offset + self._len

    def put(self, at: int, data: bytes) -> None:
        """Write `data` at `at` (relative; at most the current length)."""
        if at == self._len and self._buf is None:
            if len(data) >= KEEP_WRITES_FROM and type(data) is bytes:
                self._chunks.append(data)  # immutable: kept as it is
            elif self._chunks and type(self._chunks[-1]) is bytearray:
                self._chunks[-1] += data
            else:
                self._chunks.append(bytearray(data))
            self._len += len(data)
            return
        buf = self._whole()
        buf[at : at + len(data)] = data
        self._len = len(buf)

    def _whole(self) -> bytearray:
        if self._buf is None:
            self._buf = bytearray(b"".join(self._chunks))
            self._chunks = []
        return self._buf

    def pieces(self, lo: int, hi: int) -> list[memoryview]:
        """Views of bytes [lo, hi) of the extent (relative), without copying."""
        if self._buf is not None:
            return [memoryview(self._buf)[lo:hi]]
        out: list[memoryview] = []
        pos = 0
        for chunk in self._chunks:
            end = pos + len(chunk)
            if end > lo and pos < hi:
                out.append(memoryview(chunk)[max(lo - pos, 0) : min(hi, end) - pos])
            pos = end
            if pos >= hi:
                break
        return out


async def _iterate(views: list[memoryview]) -> AsyncIterator[bytes]:
    """The pieces as a payload of known size (the client sends each as it comes)."""
    for view in views:
        yield cast(bytes, view)  # any buffer is sent as it is


@dataclass(slots=True)
class WriteStats:
    writes: int = 0
    bytes_written: int = 0  # taken from applications
    requests: int = 0  # append, modify and truncate requests sent
    bytes_sent: int = 0
    failures: int = 0


@dataclass(slots=True, eq=False)
class WriteHandle:
    """One open file handle with write access."""

    writer: AppenderWriter | SlaveSpool
    append: bool  # O_APPEND: every write goes to the end, whatever the offset
    seen_errors: int = 0  # failures of the writer already reported to this handle
    inode: int = 0


class AppenderWriter:
    """Coalesced write-back of one appender file, shared by the handles open on it."""

    def __init__(
        self,
        client: WriteClient,
        file_id: FileId,
        size: int,
        *,
        spawn: Spawn,
        query_size: SizeQuery,
        fetch: RangeFetch,
        flush_size: int,
        stats: WriteStats,
        budget: WriteBudget | None = None,
        on_failure: Callable[[AppenderWriter], None] = lambda w: None,
        retry_for: float = RETRY_FOR,
    ) -> None:
        self.client = client
        self.retry_for = retry_for
        self.file_id = file_id
        self.id_info: FileIdInfo = decode_file_id(file_id)
        self.size = size  # as this host shows it: stored + pending
        self.stored_size = size  # as the source storage has it, as far as we know
        self.mtime = time.time()
        self.flush_size = max(1, flush_size)
        self.seal_at = min(self.flush_size, FIRST_EXTENT)  # grows while extents fill up
        self.handles = 0
        self.last_write = trio.current_time()
        self.current: Extent | None = None
        self.queue: deque[Extent] = deque()
        self.failures = 0  # count of failed sends; handles compare with their seen_errors
        self.last_error: WriteBackFailed | None = None
        self.stale = False  # the stored size is unknown after a failure: ask before changing
        self._spawn = spawn
        self._query_size = query_size
        self._fetch = fetch
        self._stats = stats
        self._budget = budget if budget is not None else WriteBudget(1 << 62)
        self._held = 0  # bytes of extents counted against the budget
        self._on_failure = on_failure
        self._sending = False
        self._changed = trio.Event()
        self._lock = trio.Lock()  # truncate and size refreshes, one at a time

    def __repr__(self) -> str:
        return f"<AppenderWriter {self.file_id} size={self.size} queued={len(self.queue)}>"

    # -- state -------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Bytes written here and not yet acknowledged by the storage."""
        return bool(self.current or self.queue or self._sending)

    def stat(self) -> FileStat:
        return FileStat(FileType.APPENDER, self.size, int(self.mtime), None, self.id_info.source)

    def attach(self) -> WriteHandle:
        self.handles += 1
        return WriteHandle(self, append=False, seen_errors=self.failures)

    def _check(self, handle: WriteHandle | None, *, report: bool) -> None:
        """Raise a failure `handle` has not been told about (and mark it told if `report`)."""
        if handle is None or handle.seen_errors >= self.failures:
            return
        if report:
            handle.seen_errors = self.failures
        assert self.last_error is not None
        raise WriteBackFailed.of(self.last_error, self.file_id)

    # -- writing -----------------------------------------------------------

    async def write(self, handle: WriteHandle, offset: int, data: bytes) -> int:
        self._check(handle, report=False)
        if not data:
            return 0
        # The storage is behind: wait for it before taking the data, so that a write
        # that runs out of time has not been taken.
        while len(self.queue) >= MAX_QUEUED:
            await self._wait_changed()
            self._check(handle, report=False)
        while not self._budget.room_for(self._growth(handle, offset, len(data))):
            # The mount holds all it may: let what this file holds go out, and wait.
            self._seal()
            await self._budget.wait()
            self._check(handle, report=False)
        if self.stale:
            await self._refresh()
        if handle.append:
            offset = self.size
        self._place(offset, data)
        self._account()
        self.size = max(self.size, offset + len(data))
        self.mtime = time.time()
        self.last_write = trio.current_time()
        self._stats.writes += 1
        self._stats.bytes_written += len(data)
        if self.current is not None and len(self.current) >= self.seal_at:
            self.seal_at = min(self.flush_size, self.seal_at * 2)
            self._seal()
        return len(data)

    def _growth(self, handle: WriteHandle, offset: int, length: int) -> int:
        """Bytes a write may add to what is buffered (an overwrite of the extent: none)."""
        if handle.append:
            offset = self.size
        cur = self.current
        if cur is not None and cur.offset <= offset and offset + length <= cur.end:
            return 0
        return length + max(0, min(offset - self.size, GAP_FILL))

    def _unsent(self) -> int:
        """Bytes the extents hold now (queued and current)."""
        current = len(self.current) if self.current is not None else 0
        return sum(len(e) for e in self.queue) + current

    def _account(self) -> None:
        """Bring the budget in line with the bytes the extents hold now."""
        held = self._unsent()
        if held != self._held:
            delta, self._held = held - self._held, held
            self._budget.change(delta)

    def _place(self, offset: int, data: bytes) -> None:
        cur = self.current
        if cur is not None and not (
            cur.offset <= offset <= cur.end
            or (cur.end == self.size and 0 < offset - cur.end <= GAP_FILL)
        ):
            self._seal()
            cur = None
        if cur is None:
            start = self.size if self.size < offset <= self.size + GAP_FILL else offset
            cur = self.current = Extent(start, offset - start)
        elif offset > cur.end:
            cur.put(len(cur), bytes(offset - cur.end))
        cur.put(offset - cur.offset, data)

    def _seal(self) -> None:
        if self.current is not None:
            if len(self.current):
                self.queue.append(self.current)
            self.current = None
        self._kick()

    def flush_if_idle(self, now: float, idle: float) -> None:
        if self.current is not None and now - self.last_write >= idle:
            self._seal()

    # -- sending -------------------------------------------------------------

    def _kick(self) -> None:
        if self.queue and not self._sending:
            self._sending = True
            self._spawn(self._send_queue, f"write-back {self.file_id}")

    async def _send_queue(self) -> None:
        try:
            while self.queue:
                extent = self.queue[0]
                try:
                    async with self._lock:
                        await self._send_retrying(extent)
                except Exception as exc:
                    self._fail(exc)
                    break
                if self.queue and self.queue[0] is extent:
                    self.queue.popleft()
                    self._account()
                self._pulse()
        finally:
            self._sending = False
            self._pulse()

    async def _send_retrying(self, extent: Extent) -> None:
        """`_send`, again while the cluster answers EAGAIN (see `_retrying`).

        A retry sends the extent whole again: a modify rewrites the same bytes, and
        an append already made moved `stored_size`, so it becomes a modify.
        """
        await self._retrying(lambda: self._send(extent))

    async def _retrying(self, change: Callable[[], Awaitable[None]]) -> None:
        """`change()`, again while the cluster answers EAGAIN, for up to `retry_for` s.

        EAGAIN is a refusal that changed nothing: the file's source is catching up
        after an outage (the tracker sends no changes anywhere meanwhile), or a storage
        may not take changes of the file just now. Failing at once would drop bytes a
        write() took, or fail a truncate; the moment passes, usually within a second
        or two.
        """
        deadline = trio.current_time() + self.retry_for
        pause = RETRY_PAUSE
        while True:
            try:
                await change()
                return
            except ServerError as exc:
                if exc.errno != errno.EAGAIN or trio.current_time() + pause > deadline:
                    raise
                log.debug("change of %s: %s; retrying in %.2fs", self.file_id, exc, pause)
            await trio.sleep(pause)
            pause = min(pause * 2, RETRY_PAUSE_MAX)

    async def _send(self, extent: Extent) -> None:
        fid = self.file_id
        length = len(extent)
        if extent.offset > self.stored_size:
            # A hole: the storage fills it with zeros, no bytes on the wire.
            await self.client.truncate(fid, extent.offset)
            self._stats.requests += 1
            self.stored_size = extent.offset
        inside = max(0, min(length, self.stored_size - extent.offset))
        if inside:
            await self.client.modify(
                fid, extent.offset, _iterate(extent.pieces(0, inside)), size=inside
            )
            self._stats.requests += 1
        if inside < length:
            await self.client.append(
                fid, _iterate(extent.pieces(inside, length)), size=length - inside
            )
            self._stats.requests += 1
            self.stored_size = extent.end
        self._stats.bytes_sent += length

    def _fail(self, exc: BaseException) -> None:
        lost = self._unsent()
        log.warning("write-back of %s failed, %d bytes not stored: %s", self.file_id, lost, exc)
        self._stats.failures += 1
        self.failures += 1
        self.last_error = WriteBackFailed.of(exc, self.file_id)
        self.queue.clear()
        self.current = None
        self._account()
        self.stale = True
        self.size = self.stored_size
        self._on_failure(self)

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_changed(self) -> None:
        await self._changed.wait()

    async def _quiesce(self) -> None:
        """Seal and wait until nothing is queued or in flight."""
        self._seal()
        while self.queue or self._sending:
            await self._wait_changed()

    async def sync(self, handle: WriteHandle | None) -> None:
        """Return once everything written so far is acknowledged by the source storage;
        raise a failure `handle` was not told about yet (fsync, flush)."""
        await self._quiesce()
        self._check(handle, report=True)

    async def _refresh(self) -> None:
        async with self._lock:
            if self.stale:
                try:
                    self.stored_size = self.size = await self._query_size(self.file_id)
                except FileNotFound as exc:
                    raise WriteBackFailed.of(exc, self.file_id) from None
                self.stale = False

    # -- changing the size ---------------------------------------------------

    async def truncate(self, size: int) -> None:
        await self._quiesce()
        if self.stale:
            await self._refresh()
        if size == self.size == self.stored_size and not self.pending:
            return  # e.g. O_TRUNC of an empty file
        async with self._lock:
            try:
                await self._retrying(lambda: self.client.truncate(self.file_id, size))
            except FileNotFound as exc:
                self.stale = True
                raise WriteBackFailed.of(exc, self.file_id) from None
            except BaseException:
                self.stale = True  # it may or may not have happened
                raise
            self._stats.requests += 1
            self.stored_size = size
            # Writes that raced with the truncate were placed after it.
            ends = [e.end for e in (*self.queue, self.current) if e is not None]
            self.size = max([size, *ends])
            self.mtime = time.time()

    def discard(self) -> None:
        """Forget unsent data (the file is being deleted)."""
        self.queue.clear()
        self.current = None
        self._account()

    def close(self) -> None:
        """Nothing to free: extents are given back to the budget once acknowledged."""
        self._account()

    # -- reading -------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        if self.stale:
            await self._refresh()
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        # Copy the overlapping pending bytes before any await: writes may go on meanwhile,
        # and an extent sent meanwhile may or may not be in what the storage returns.
        pieces: list[tuple[int, bytes]] = []
        for extent in (*self.queue, self.current):
            if extent is None or extent.end <= offset or extent.offset >= end:
                continue
            lo, hi = max(extent.offset, offset), min(extent.end, end)
            pieces.append((lo, b"".join(extent.pieces(lo - extent.offset, hi - extent.offset))))
        out = bytearray(end - offset)
        # Only what the storage has acknowledged is asked of it: past that, bytes not in
        # an extent are a hole this host made (zeros). An append acknowledged meanwhile
        # grows the stored file, never shrinks it, so the range stays inside it.
        stored_end = min(end, self.stored_size)
        if offset < stored_end and not _covers(pieces, offset, stored_end):
            stored = await self._fetch(self.file_id, offset, stored_end - offset)
            out[: len(stored)] = stored[: stored_end - offset]
        for lo, piece in pieces:
            out[lo - offset : lo - offset + len(piece)] = piece
        return bytes(out)


def _covers(pieces: list[tuple[int, bytes]], start: int, end: int) -> bool:
    reach = start
    for lo, piece in sorted(pieces, key=lambda p: p[0]):
        if lo > reach:
            return False
        reach = max(reach, lo + len(piece))
    return reach >= end


@dataclass(slots=True)
class SlaveTarget:
    """What UPLOAD_SLAVE_FILE needs: the master and how the slave's name extends it."""

    master: FileId
    prefix: str
    ext: str


class SlaveSpool:
    """A slave file being written: spooled here, uploaded once at the first fsync/flush."""

    def __init__(
        self, client: WriteClient, file_id: FileId, target: SlaveTarget, *, stats: WriteStats
    ) -> None:
        self.client = client
        self.file_id = file_id
        self.target = target
        self.id_info: FileIdInfo = decode_file_id(file_id)
        self.size = 0
        self.mtime = time.time()
        self.handles = 0
        self.uploaded = False
        # Closed by `close` when the last handle goes.
        self.spool = tempfile.SpooledTemporaryFile(max_size=SLAVE_SPOOL_MEMORY)  # noqa: SIM115
        self._stats = stats
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<SlaveSpool {self.file_id} size={self.size} uploaded={self.uploaded}>"

    @property
    def pending(self) -> bool:
        return not self.uploaded

    def stat(self) -> FileStat:
        source = decode_file_id(self.target.master).source
        return FileStat(
            FileType.SLAVE, self.size, int(self.mtime), None, source, exact=self.uploaded
        )

    def attach(self) -> WriteHandle:
        self.handles += 1
        return WriteHandle(self, append=False)

    def _written_once(self) -> Refused:
        return Refused(errno.EPERM, f"{self.file_id} is a slave file, uploaded already: "
                       "slave files are written once")  # fmt: skip

    async def write(self, handle: WriteHandle, offset: int, data: bytes) -> int:
        if self.uploaded:
            raise self._written_once()
        if handle.append:
            offset = self.size
        if offset > self.size:
            self._zero_fill(offset)
        self.spool.seek(offset)
        self.spool.write(data)
        self.size = max(self.size, offset + len(data))
        self.mtime = time.time()
        self._stats.writes += 1
        self._stats.bytes_written += len(data)
        return len(data)

    def _zero_fill(self, end: int) -> None:
        self.spool.seek(self.size)
        remaining = end - self.size
        while remaining > 0:
            n = min(remaining, MIB)
            self.spool.write(bytes(n))
            remaining -= n
        self.size = end

    async def truncate(self, size: int) -> None:
        if self.uploaded:
            raise self._written_once()
        if size < self.size:
            self.spool.truncate(size)
            self.size = size
        elif size > self.size:
            self._zero_fill(size)
        self.mtime = time.time()

    async def sync(self, handle: WriteHandle | None) -> None:
        await self.upload()

    async def upload(self) -> None:
        async with self._lock:
            if self.uploaded:
                return
            target = self.target
            self.spool.seek(0)
            fid = await self.client.upload_slave(
                target.master,
                cast(BinaryIO, self.spool),
                prefix=target.prefix,
                ext=target.ext,
                size=self.size,
            )
            self._stats.requests += 1
            self._stats.bytes_sent += self.size
            self.uploaded = True
            if fid != self.file_id:
                log.error("slave of %s uploaded as %s, not as %s", target.master, fid, self.file_id)
            log.info("created %s (slave of %s, %d bytes)", fid, target.master, self.size)

    def discard(self) -> None:
        self.uploaded = True  # nothing left to upload

    def flush_if_idle(self, now: float, idle: float) -> None:
        """Slaves wait for fsync/flush: an upload is final."""

    async def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        self.spool.seek(offset)
        return self.spool.read(end - offset)

    def close(self) -> None:
        self.spool.close()
