"""The read path: ranged downloads via the shared block cache, adaptive readahead, replica choice.

# Strategy
Content is fetched in aligned blocks (`BLOCK_SIZE`) and kept in one LRU
(`BlockCache`) bounded by ``cache_size``. A read takes its blocks from the
cache, joins a download already running for them, or downloads the missing
run itself — so random readers fetch only the blocks they touch.

A read that misses blocks downloads them itself, inline, into one buffer
that the cache then slices (no spawned task, no join). A normal file small
enough (`WHOLE_FILE_LIMIT`) is fetched whole by its first read, so the
reads after it are cache hits.

Each open file keeps a `Readahead`: once a reader has proved sequential (a
read that continues where the previous one ended), each time it gets within
half a window of the end of what was prefetched the window doubles (from ~1
MiB to the ``readahead`` option) and the next stretch is fetched in chunks by
tasks in the mount's nursery, spread over the file's replicas. Prefetch is
started only after the read that triggered it has its own blocks, and never
covers them, so it cannot delay that read. A random read resets the window.
Blocks a sequential reader has consumed are dropped (the kernel keeps those
pages), which leaves the cache to readahead.

Blocks of appender files are keyed per open: an appender file may be
rewritten in place (same size, same second) by another host, and the only
version the server reports, (size, mtime), cannot tell; so cached blocks of
an appender file serve the open that fetched them and no other (close-to-open).

Server health (which replicas failed lately) is the client's `ServerHealth`,
shared, so the directory below orders replicas the way the client does. A
file that no replica could serve fails at once for `DOWN_MEMORY` seconds; that
memory is per file, so other files on the same servers are tried normally.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from .blockcache import Block, BlockCache, FileKey, buffer_slice
from .clientapi import RangeClient
from .diskcache import DiskCache
from .proto import FileId, FileIdInfo, FileType
from .proto.errors import ConnectError, FdfsError, ProtocolError, Timeout
from .proto.health import DOWN_MEMORY, ServerHealth
from .proto.replicas import ReplicaDirectory

log = logging.getLogger(__name__)

MIB = 1024 * 1024
INITIAL_WINDOW = 1 * MIB
SEQUENTIAL_SLACK = 1 * MIB  # the kernel may deliver neighbouring async reads out of order
MIN_CHUNK = 512 * 1024
MAX_CHUNK = 8 * MIB
MAX_PARALLEL_CHUNKS = 8  # prefetch downloads in flight, whole mount
#: Normal files up to this size are fetched whole by their first read.
WHOLE_FILE_LIMIT = 512 * 1024
#: Normal files up to this size have their existence confirmed by downloading them
#: whole (`fetch_to_confirm`): one round trip where a query and a read would be two.
FETCH_TO_CONFIRM_LIMIT = 64 * 1024

__all__ = ["DOWN_MEMORY", "OpenFile", "ReadPath", "Readahead", "ReplicaDirectory"]


class Readahead:
    """Decides, read by read, what to prefetch for one open file (no I/O)."""

    def __init__(self, maximum: int, initial: int = INITIAL_WINDOW) -> None:
        self.maximum = maximum
        self.initial = min(initial, maximum)
        self.window = 0  # 0: not in a sequential run
        self.next_offset = -1  # where a sequential reader reads next (-1: no read yet)
        self.prefetched_to = 0  # end of what has been scheduled

    @property
    def sequential(self) -> bool:
        return self.window > 0

    def on_read(self, offset: int, end: int) -> tuple[int, int] | None:
        """Record a read of [offset, end); return a range to prefetch, if any."""
        if self.maximum <= 0:
            return None
        if self.next_offset < 0 or abs(offset - self.next_offset) > SEQUENTIAL_SLACK:
            # A first read, or a jump: sequential only once the next read continues this one.
            self.window = 0
            self.prefetched_to = 0
            self.next_offset = end
            return None
        self.next_offset = max(self.next_offset, end)
        if self.window == 0:
            self.window = self.initial
            self.prefetched_to = max(self.prefetched_to, end)
        elif self.prefetched_to - end >= self.window // 2:
            return None
        else:
            self.window = min(self.window * 2, self.maximum)
        start = max(self.prefetched_to, end)
        stop = end + self.window
        self.prefetched_to = stop
        return (start, stop) if stop > start else None


@dataclass(slots=True)
class OpenFile:
    """One open file handle on the read side."""

    file_id: FileId
    id_info: FileIdInfo
    size: int  # as known at open; appender files may have grown since
    version: int | None  # None: never changes; else this open's own number
    readahead: Readahead
    dropped_to: int = 0  # blocks below this index were dropped behind a sequential reader

    @property
    def key(self) -> FileKey:
        return (str(self.file_id), self.version)

    @property
    def immutable(self) -> bool:
        return self.version is None


@dataclass(slots=True)
class _Pending:
    """A block being downloaded: waiters take `data` once `done` is set (None: failed)."""

    done: trio.Event = field(default_factory=trio.Event)
    data: Block | None = None


@dataclass(slots=True)
class ReadStats:
    reads: int = 0
    bytes_read: int = 0
    downloads: int = 0
    bytes_downloaded: int = 0
    prefetch_chunks: int = 0
    prefetch_failures: int = 0
    waited_on_prefetch: int = 0


class ReadPath:
    """Serves `read` for open files; prefetches in the mount's nursery."""

    def __init__(
        self,
        client: RangeClient,
        cache: BlockCache,
        *,
        readahead: int,
        timeout: float,
        nursery: trio.Nursery | None = None,
        health: ServerHealth | None = None,
        before_first_open: Callable[[], None] | None = None,
        replicas: ReplicaDirectory | None = None,
        disk_cache: DiskCache | None = None,
    ) -> None:
        self.client = client
        self.disk_cache = disk_cache  # whole immutable files on local disk (-o disk_cache)
        self.cache = cache
        self.block = cache.block_size
        # Never prefetch more than half the cache: the rest serves other readers.
        self.max_window = min(readahead, cache.capacity // 2) if nursery is not None else 0
        self.timeout = timeout
        self.nursery = nursery
        #: The client's server health (pass the client's own: one owner of "who failed").
        self.health = health if health is not None else ServerHealth()
        # Replica order: the client's directory when it has one (one owner), else our own.
        self.replicas = replicas if replicas is not None else ReplicaDirectory(client, self.health)
        self.stats = ReadStats()
        self._pending: dict[tuple[FileKey, int], _Pending] = {}
        self._chunk_limiter = trio.CapacityLimiter(MAX_PARALLEL_CHUNKS)
        self._chunk_counter = itertools.count()
        self._opens = itertools.count(1)
        # Runs in the first open, before it is answered (the mount tunes the
        # kernel's readahead there: the kernel copies it into each opened file).
        self._before_first_open = before_first_open

    def open(self, file_id: FileId, id_info: FileIdInfo, size: int, *, immutable: bool,
             mtime: int = 0) -> OpenFile:  # fmt: skip
        # (size, mtime) cannot tell a same-size rewrite within the same second
        # apart: an appender file's blocks are this open's own.
        if self._before_first_open is not None:
            hook, self._before_first_open = self._before_first_open, None
            hook()
        version = None if immutable else next(self._opens)
        return OpenFile(file_id, id_info, size, version, Readahead(self.max_window))

    async def fetch_to_confirm(self, file_id: FileId, id_info: FileIdInfo) -> bool:
        """Confirm that a small normal file exists by downloading it whole into the cache.

        A lookup confirms existence, and the open and read that usually follow
        would download the file: for a small file, one download does both. False
        (nothing asked) when the file is not small, not immutable, or already
        cached in memory or on disk (then a query is cheaper); `FileNotFound` if no replica has it.
        The disk cache is not asked: only a server can say the file still exists.
        """
        size = id_info.size
        if (
            size is None
            or not 0 < size <= FETCH_TO_CONFIRM_LIMIT
            or id_info.file_type not in (FileType.NORMAL, FileType.TRUNK)
            or self.cache.contains((str(file_id), None), 0)
            or (self.disk_cache is not None and self.disk_cache.contains(file_id))
        ):
            return False
        f = OpenFile(file_id, id_info, size, None, Readahead(0))
        await self._download(f, 0, -(-size // self.block), local_ok=False)
        return True

    def invalidate(self, file_id: FileId) -> None:
        """Forget cached content of `file_id` (the write side calls this after changes)."""
        self.cache.drop_file(str(file_id))

    def read_now(
        self, f: OpenFile, offset: int, size: int
    ) -> bytes | bytearray | memoryview | None:
        """`read` when the cache holds every block it needs (no I/O); else None."""
        end = min(offset + size, f.size) if f.immutable else offset + size
        if offset >= end or size <= 0:
            self.stats.reads += 1
            return b""
        first, last = offset // self.block, (end - 1) // self.block
        blocks: list[Block] = []
        for index in range(first, last + 1):
            data = self.cache.get(f.key, index)
            if data is None:
                return None
            blocks.append(data)
            if len(data) < self.block:
                break  # end of file
        self.stats.reads += 1
        ahead = f.readahead.on_read(offset, end)
        return self._answer(f, offset, end, blocks, ahead)

    def whole_now(self, f: OpenFile) -> bytes | bytearray | memoryview | None:
        """All of an immutable file of one block, if the cache holds it (no I/O); else None.

        What the mount hands to the kernel's page cache at open (no read is counted).
        """
        if not f.immutable or not 0 < f.size <= self.block:
            return None
        block = self.cache.get(f.key, 0)
        if block is None or len(block) != f.size:
            return None
        return buffer_slice(block.buf, block.start, len(block))

    async def read(self, f: OpenFile, offset: int, size: int) -> bytes | bytearray | memoryview:
        """Up to `size` bytes at `offset`; short only at the end of the file.

        Usually a memoryview into a downloaded buffer (no copy): pyfuse3 takes
        any contiguous buffer.
        """
        self.stats.reads += 1
        # An appender file may have grown since open: only the server knows its end.
        end = min(offset + size, f.size) if f.immutable else offset + size
        if offset >= end or size <= 0:
            return b""
        ahead = f.readahead.on_read(offset, end)
        first, last = offset // self.block, (end - 1) // self.block
        blocks = await self._blocks(f, first, last)
        return self._answer(f, offset, end, blocks, ahead)

    def _answer(
        self,
        f: OpenFile,
        offset: int,
        end: int,
        blocks: list[Block],
        ahead: tuple[int, int] | None,
    ) -> bytes | bytearray | memoryview:
        """The bytes [offset, end) out of `blocks` (which start at `offset`'s block)."""
        first = offset // self.block
        if ahead is not None and self.nursery is not None:
            # Only now, and only past this read's blocks: readahead never delays its reader.
            self._prefetch(f, max(ahead[0], (first + len(blocks)) * self.block), ahead[1])
        skip = offset - first * self.block
        want = min(end - offset, sum(len(b) for b in blocks) - skip)
        if all(b.follows(a) for a, b in itertools.pairwise(blocks)):
            # One slice of one buffer: hand it out as it is.
            result: bytes | bytearray | memoryview = buffer_slice(
                blocks[0].buf, blocks[0].start + skip, want
            )
        else:
            result = memoryview(b"".join(b.view() for b in blocks))[skip : skip + want]
        if f.readahead.sequential:
            self._drop_behind(f, offset)
        self.stats.bytes_read += want
        return result

    def _drop_behind(self, f: OpenFile, offset: int) -> None:
        below = offset // self.block
        if below - f.dropped_to > 64:  # far jump (or first call): do not walk the gap
            f.dropped_to = below - 1 if below else 0
        for index in range(f.dropped_to, below):
            self.cache.discard(f.key, index)
        f.dropped_to = max(f.dropped_to, below)

    # -- blocks ------------------------------------------------------------

    async def _blocks(self, f: OpenFile, first: int, last: int) -> list[Block]:
        """Blocks first..last (the last may be short, or empty past EOF)."""
        found: dict[int, Block] = {}
        waiting: list[tuple[int, _Pending]] = []
        missing: list[int] = []
        for index in range(first, last + 1):
            data = self.cache.get(f.key, index)
            if data is not None:
                found[index] = data
                continue
            pending = self._pending.get((f.key, index))
            if pending is not None:
                waiting.append((index, pending))
            else:
                missing.append(index)
        if waiting:
            self.stats.waited_on_prefetch += 1
        if len(missing) + len(waiting) == 1 and missing:
            index = missing[0]
            found.update(await self._download(f, index, self._whole_file_stop(f, index)))
        elif missing or waiting:
            async with trio.open_nursery() as nursery:
                for run_start, run_end in _runs(missing):
                    nursery.start_soon(self._download_into, f, run_start, run_end, found)
                for index, pending in waiting:
                    nursery.start_soon(self._await_pending, f, index, pending, found)
        blocks: list[Block] = []
        for index in range(first, last + 1):
            data = found[index]
            blocks.append(data)
            if len(data) < self.block:
                break  # end of file
        return blocks

    def _whole_file_stop(self, f: OpenFile, index: int) -> int:
        """Where a download for block `index` should stop: the file's end if small."""
        stop = index + 1
        if not f.immutable or f.size > WHOLE_FILE_LIMIT:
            return stop
        last = -(-f.size // self.block)
        while (
            stop < last
            and not self.cache.contains(f.key, stop)
            and (f.key, stop) not in self._pending
        ):
            stop += 1
        return stop

    async def _await_pending(
        self, f: OpenFile, index: int, pending: _Pending, into: dict[int, Block]
    ) -> None:
        await pending.done.wait()
        if pending.data is not None:
            into[index] = pending.data
        else:  # the prefetch failed: try ourselves, within our own deadline
            into.update(await self._download(f, index, index + 1))

    async def _download_into(
        self, f: OpenFile, first: int, stop: int, into: dict[int, Block]
    ) -> None:
        into.update(await self._download(f, first, stop))

    async def _download(
        self,
        f: OpenFile,
        first: int,
        stop: int,
        *,
        rotate: int = 0,
        claimed: dict[tuple[FileKey, int], _Pending] | None = None,
        local_ok: bool = True,
    ) -> dict[int, Block]:
        """Download blocks [first, stop) as one ranged request; cache and return them.

        Readers wanting these blocks meanwhile wait on their `_Pending` entries
        (`claimed` ones, registered by a prefetch, or new ones registered here).
        """
        offset = first * self.block
        length = (stop - first) * self.block
        if f.immutable:
            length = max(0, min(length, f.size - offset))
        if claimed is None:
            mine: dict[tuple[FileKey, int], _Pending] = {}
            for key in ((f.key, i) for i in range(first, stop)):
                if key not in self._pending:
                    mine[key] = self._pending[key] = _Pending()
        else:
            mine = claimed
        blocks: dict[int, Block] = {}
        try:
            data: bytes | bytearray = b""
            local = await self._from_disk(f, offset, length) if length > 0 and local_ok else None
            if local is not None:
                data = local
            elif length > 0:
                # A file that just failed on every replica fails at once (the
                # kernel retries a failed read immediately).
                self.health.check_file(f.file_id)
                servers = await self.replicas.servers_for(f.file_id, f.id_info, rotate=rotate)
                try:
                    data = await self.client.read_range(f.file_id, offset, length, servers=servers)
                except (Timeout, ConnectError, ProtocolError) as exc:
                    self.health.file_down(f.file_id, exc)
                    raise
                self.health.file_up(f.file_id)
                self.stats.downloads += 1
                self.stats.bytes_downloaded += len(data)
                self._to_disk(f, offset, data)
            blocks = self._split(f, first, stop, data)
        finally:
            self._settle(mine, blocks)
        return blocks

    # -- the disk cache's seam ---------------------------------------------

    async def _from_disk(self, f: OpenFile, offset: int, length: int) -> bytes | None:
        if self.disk_cache is None or not f.immutable:
            return None
        return await self.disk_cache.read(f.file_id, offset, length)

    def _to_disk(self, f: OpenFile, offset: int, data: bytes | bytearray) -> None:
        if self.disk_cache is not None and f.immutable:
            self.disk_cache.offer(f.file_id, f.id_info, f.size, offset, data)

    def _settle(
        self, pending_blocks: dict[tuple[FileKey, int], _Pending], blocks: dict[int, Block]
    ) -> None:
        """Hand the downloaded `blocks` (none, on failure) to whoever waits for them."""
        for key, pending in pending_blocks.items():
            if self._pending.get(key) is pending:
                del self._pending[key]
            pending.data = blocks.get(key[1])
            pending.done.set()

    def _split(
        self, f: OpenFile, first: int, stop: int, data: bytes | bytearray
    ) -> dict[int, Block]:
        """Cut `data` (blocks first.. of the file) into blocks, without copying."""
        blocks: dict[int, Block] = {}
        for i, index in enumerate(range(first, stop)):
            block = Block(
                data, min(i * self.block, len(data)), min((i + 1) * self.block, len(data))
            )
            blocks[index] = block
            complete = len(block) == self.block
            if complete or f.immutable:
                self.cache.put(f.key, index, block)
            if not complete:
                break  # end of file: later blocks do not exist
        return blocks

    # -- readahead -----------------------------------------------------------

    def _prefetch(self, f: OpenFile, start: int, stop: int) -> None:
        # Not past the size seen at open, even for an appender file: what it grows by
        # later is fetched by the reads that ask for it.
        stop = min(stop, f.size)
        first = start // self.block
        stop_block = -(-stop // self.block)
        chunk_blocks = max(1, min(MAX_CHUNK, max(MIN_CHUNK, f.readahead.window // 4)) // self.block)
        index = first
        while index < stop_block:
            # Skip what is cached or already coming.
            while index < stop_block and (
                self.cache.contains(f.key, index) or (f.key, index) in self._pending
            ):
                index += 1
            run_end = index
            while (
                run_end < stop_block
                and run_end - index < chunk_blocks
                and not self.cache.contains(f.key, run_end)
                and (f.key, run_end) not in self._pending
            ):
                run_end += 1
            if run_end > index:
                self._start_chunk(f, index, run_end)
            index = run_end

    def _start_chunk(self, f: OpenFile, first: int, stop: int) -> None:
        assert self.nursery is not None
        # Claim the blocks now, so that reads arriving meanwhile wait for this chunk.
        claimed = {(f.key, i): _Pending() for i in range(first, stop)}
        self._pending.update(claimed)
        self.stats.prefetch_chunks += 1
        self.nursery.start_soon(self._prefetch_chunk, f, first, stop, claimed)

    async def _prefetch_chunk(
        self, f: OpenFile, first: int, stop: int, claimed: dict[tuple[FileKey, int], _Pending]
    ) -> None:
        blocks: dict[int, Block] = {}
        try:
            async with self._chunk_limiter:
                with trio.move_on_after(self.timeout):
                    blocks = await self._download(
                        f, first, stop, rotate=next(self._chunk_counter), claimed=claimed
                    )
        except FdfsError as exc:
            self.stats.prefetch_failures += 1
            log.debug("readahead of %s blocks %d..%d failed: %s", f.file_id, first, stop, exc)
        except Exception:
            self.stats.prefetch_failures += 1
            log.exception("readahead of %s blocks %d..%d failed", f.file_id, first, stop)
        finally:
            self._settle(claimed, blocks)


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """[3, 4, 5, 9] -> [(3, 6), (9, 10)]."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs
