"""The local disk cache of immutable files (``-o disk_cache=DIR``), kept across remounts.

# Strategy
Normal, trunk and slave files never change once written, so their bytes can
be kept on local disk and served again after an eviction from the memory
block cache or a remount. Appender files change, and are never cached here.

Layout: ``DIR/<cluster>/`` holds ``index.sqlite`` (file ID, size, crc32 and
last use of every entry, for LRU eviction with bounded memory) and the files
themselves under ``data/<2 hex>/<sha256 of the file ID>``. A file enters the
cache only whole and verified: the downloads the read path makes anyway are
written at their offsets into a partial file (``partial/``), and once every
byte is there its crc32 is checked against the one the file ID carries (for
a slave, whose ID carries its master's, against the crc32 the storage
reports), and it is renamed into ``data/``. Each entry is checked against its
crc32 again the first time a mount uses it, so a file damaged on disk is
discarded and downloaded again, never served.

Blocking work (writes, crc checks of big files, eviction) runs in worker
threads; reads of up to `INLINE_READ` bytes are one ``pread`` on the event loop,
which is cheaper than a thread hop. The cache stays within ``disk_cache_size``
and keeps at least ``disk_cache_min_free`` free on its file system, evicting
the least recently used entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .proto import FileId, FileIdInfo, FileType

log = logging.getLogger(__name__)

INLINE_READ = 1 << 20  # reads up to this size are a pread on the event loop
VERIFY_INLINE = 1 << 20  # entries up to this size are crc-checked on the event loop
MAX_PARTIALS = 64  # files being assembled at once; the least recent is dropped
VERIFIED_MEMORY = 100_000  # entries known good in this mount (checked once per mount)
TOUCH_FLUSH = 1000  # last-use updates batched before they are written
CRC_CHUNK = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    file_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    crc32 INTEGER NOT NULL,
    last_used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_lru ON entries (last_used);
"""


@dataclass(slots=True)
class DiskCacheStats:
    hits: int = 0
    misses: int = 0
    bytes_served: int = 0
    fills: int = 0
    fill_failures: int = 0
    corrupt: int = 0
    evictions: int = 0
    skipped_no_space: int = 0


@dataclass(slots=True)
class _Partial:
    path: Path
    size: int
    ranges: list[tuple[int, int]] = field(default_factory=list)  # merged, sorted [start, end)
    writing: int = 0  # writes in flight; the file is whole when all ranges are in and none is
    dropped: bool = False  # given up for room or after a failed write; the last writer unlinks

    def covers(self, start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in self.ranges)

    def add(self, start: int, end: int) -> None:
        merged: list[tuple[int, int]] = []
        for s, e in sorted([*self.ranges, (start, end)]):
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        self.ranges = merged

    @property
    def complete(self) -> bool:
        return self.ranges == [(0, self.size)]


CrcLookup = Callable[[FileId], Awaitable[int]]


def cacheable(info: FileIdInfo) -> bool:
    """Files whose bytes never change: normal, trunk and slave files."""
    return info.file_type in (FileType.NORMAL, FileType.TRUNK, FileType.SLAVE)


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CRC_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


class DiskCache:
    """Whole immutable files on local disk, keyed by file ID, verified by crc32."""

    def __init__(
        self,
        directory: Path,
        *,
        capacity: int,
        min_free: int,
        crc_of: CrcLookup | None = None,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self.directory = directory
        self.capacity = capacity
        self.min_free = min_free
        self.crc_of = crc_of  # the storage's crc32 of a slave file
        self.nursery = nursery
        self.stats = DiskCacheStats()
        (directory / "data").mkdir(parents=True, exist_ok=True)
        partial = directory / "partial"
        partial.mkdir(exist_ok=True)
        for leftover in partial.iterdir():  # assembled by a mount that ended meanwhile
            with contextlib.suppress(OSError):
                leftover.unlink()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(directory / "index.sqlite"), isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA cache_size=-2048")
        self._db.executescript(_SCHEMA)
        # The event loop's own connection: WAL lets it read while a worker thread writes.
        self._rdb = sqlite3.connect(
            str(directory / "index.sqlite"), isolation_level=None, check_same_thread=False
        )
        row = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM entries").fetchone()
        self.files, self.bytes = int(row[0]), int(row[1])
        self._verified: OrderedDict[str, None] = OrderedDict()
        self._touched: dict[str, float] = {}
        self._partials: OrderedDict[str, _Partial] = OrderedDict()
        self._filling: set[str] = set()
        # Each assembly gets a path of its own: a file read again while its first
        # copy is being verified and moved in must not write into that copy.
        self._generation = itertools.count()

    def close(self) -> None:
        with self._lock:
            self._flush_touches()
            self._db.close()
        self._rdb.close()

    def counters(self) -> dict[str, int]:
        out = {f"disk_cache_{k}": v for k, v in self._stats_items()}
        out["disk_cache_files"] = self.files
        out["disk_cache_bytes"] = self.bytes
        return out

    def _stats_items(self) -> list[tuple[str, int]]:
        s = self.stats
        return [
            ("hits", s.hits), ("misses", s.misses), ("bytes_served", s.bytes_served),
            ("fills", s.fills), ("fill_failures", s.fill_failures), ("corrupt", s.corrupt),
            ("evictions", s.evictions), ("skipped_no_space", s.skipped_no_space),
        ]  # fmt: skip

    def _partial_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.directory / "partial" / f"{digest}.{next(self._generation)}"

    def path_of(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.directory / "data" / digest[:2] / digest

    # -- reading ----------------------------------------------------------

    def _entry(self, key: str) -> tuple[int, int] | None:
        row = self._rdb.execute(
            "SELECT size, crc32 FROM entries WHERE file_id = ?", (key,)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    async def read(self, file_id: FileId, offset: int, length: int) -> bytes | None:
        """Up to `length` bytes at `offset` from the cached file, or None if not cached."""
        key = str(file_id)
        entry = self._entry(key)
        if entry is None:
            self.stats.misses += 1
            return None
        size, crc = entry
        path = self.path_of(key)
        if key not in self._verified:
            good = await self._verify(path, size, crc)
            if not good:
                self.stats.corrupt += 1
                self.stats.misses += 1
                log.warning("disk cache: %s failed its crc32 check; discarded, downloading it "
                            "again", file_id)  # fmt: skip
                await trio.to_thread.run_sync(self._remove, key)
                return None
            self._verified[key] = None
            if len(self._verified) > VERIFIED_MEMORY:
                self._verified.popitem(last=False)
        length = max(0, min(length, size - offset))
        try:
            if length <= INLINE_READ:
                data = _pread(path, offset, length)
            else:
                data = await trio.to_thread.run_sync(_pread, path, offset, length)
        except OSError as exc:
            log.info("disk cache: reading %s failed (%s); downloading it", file_id, exc)
            self._verified.pop(key, None)
            await trio.to_thread.run_sync(self._remove, key)
            self.stats.misses += 1
            return None
        if len(data) != length:  # truncated behind our back
            self._verified.pop(key, None)
            await trio.to_thread.run_sync(self._remove, key)
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        self.stats.bytes_served += length
        self._touched[key] = time.time()
        if len(self._touched) >= TOUCH_FLUSH:
            with self._lock:
                self._flush_touches()
        return data

    async def _verify(self, path: Path, size: int, crc: int) -> bool:
        def check() -> bool:
            try:
                if path.stat().st_size != size:
                    return False
                return file_crc32(path) == crc
            except OSError:
                return False

        if size <= VERIFY_INLINE:
            return check()
        return await trio.to_thread.run_sync(check)

    def contains(self, file_id: FileId) -> bool:
        return self._entry(str(file_id)) is not None

    # -- filling ------------------------------------------------------------

    def offer(
        self, file_id: FileId, info: FileIdInfo, size: int, offset: int, data: bytes | bytearray
    ) -> None:
        """Downloaded bytes of an immutable file: assemble them; store the file once whole.

        Never blocks: the writing happens in a task of the mount's nursery.
        """
        if not cacheable(info) or size <= 0 or not data or size > self.capacity:
            return
        if self.nursery is None:
            return
        key = str(file_id)
        if key in self._filling:
            return
        self.nursery.start_soon(self._take, file_id, info, size, offset, data)

    async def _take(
        self, file_id: FileId, info: FileIdInfo, size: int, offset: int, data: bytes | bytearray
    ) -> None:
        key = str(file_id)
        try:
            partial = self._partials.get(key)
            if partial is None:
                if key in self._filling or self._entry(key) is not None:
                    return
                # Files being assembled count too: together at most the cache's size,
                # and never below the free-space floor.
                while self._partials and (
                    len(self._partials) >= MAX_PARTIALS
                    or sum(p.size for p in self._partials.values()) + size > self.capacity
                ):
                    _, dropped = self._partials.popitem(last=False)
                    dropped.dropped = True
                    if not dropped.writing:
                        with contextlib.suppress(OSError):
                            dropped.path.unlink()
                if self._free_bytes() - size < self.min_free:
                    self.stats.skipped_no_space += 1
                    return
                partial = _Partial(self._partial_path(key), size)
                self._partials[key] = partial
            else:
                self._partials.move_to_end(key)
            end = min(size, offset + len(data))
            if partial.covers(offset, end):  # read again (readahead, another reader)
                return
            # Claimed before it is written, so a read of the same bytes meanwhile adds
            # nothing, and the file is moved in only once no write is in flight.
            partial.add(offset, end)
            partial.writing += 1
            try:
                await trio.to_thread.run_sync(write_at, partial.path, offset, data[: end - offset])
            except BaseException:
                partial.dropped = True
                if self._partials.get(key) is partial:
                    del self._partials[key]
                raise
            finally:
                partial.writing -= 1
                if partial.dropped and not partial.writing:
                    with contextlib.suppress(OSError):
                        partial.path.unlink()
            if partial.dropped:
                return
            if partial.complete and not partial.writing and key not in self._filling:
                self._filling.add(key)
                del self._partials[key]
                try:
                    await self._commit(file_id, info, partial)
                finally:
                    self._filling.discard(key)
        except Exception as exc:  # a full disk, a vanished directory: the cache is optional
            self.stats.fill_failures += 1
            log.info("disk cache: keeping %s failed: %s", file_id, exc)

    async def _commit(self, file_id: FileId, info: FileIdInfo, partial: _Partial) -> None:
        key = str(file_id)
        if info.file_type is FileType.SLAVE:
            if self.crc_of is None:
                raise ValueError("no way to learn a slave file's crc32")
            expected = await self.crc_of(file_id)
        else:
            assert info.crc32 is not None
            expected = info.crc32
        actual = await trio.to_thread.run_sync(file_crc32, partial.path)
        if actual != expected & 0xFFFFFFFF:
            self.stats.fill_failures += 1
            log.warning("disk cache: %s downloaded with crc32 %08x, its ID says %08x; not kept",
                        file_id, actual, expected)  # fmt: skip
            with contextlib.suppress(OSError):
                partial.path.unlink()
            return
        stored = await trio.to_thread.run_sync(self._store, key, partial.path, partial.size, actual)
        if stored:
            self.stats.fills += 1
            self._verified[key] = None

    def _store(self, key: str, source: Path, size: int, crc: int) -> bool:
        """Move a verified file in, making room first (worker thread)."""
        if not self._make_room(size):
            self.stats.skipped_no_space += 1
            with contextlib.suppress(OSError):
                source.unlink()
            return False
        target = self.path_of(key)
        target.parent.mkdir(exist_ok=True)
        with self._lock:
            # Stored twice (a warmup racing a read): the second copy replaces the first.
            row = self._db.execute("SELECT size FROM entries WHERE file_id = ?", (key,)).fetchone()
            if row is not None:
                self.files -= 1
                self.bytes -= int(row[0])
            os.replace(source, target)
            self._db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)", (key, size, crc, time.time())
            )
            self.files += 1
            self.bytes += size
        return True

    async def fill(
        self,
        file_id: FileId,
        info: FileIdInfo,
        size: int,
        download: Callable[[FileId, int, int], Awaitable[bytes]],
        chunk: int = 8 << 20,
    ) -> bool:
        """Download the whole file into the cache now (warmup); True if it is cached."""
        if not cacheable(info) or size <= 0:
            return False
        if self.contains(file_id):
            return True
        key = str(file_id)
        partial = _Partial(self._partial_path(key), size)
        try:
            offset = 0
            while offset < size:
                data = await download(file_id, offset, min(chunk, size - offset))
                if not data:
                    raise ValueError(f"download of {file_id} ended at {offset} of {size} bytes")
                await trio.to_thread.run_sync(write_at, partial.path, offset, data)
                offset += len(data)
            partial.add(0, size)
            await self._commit(file_id, info, partial)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.path.unlink()
            raise
        return self.contains(file_id)

    # -- room --------------------------------------------------------------

    def _free_bytes(self) -> int:
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize

    def _make_room(self, size: int) -> bool:
        """Evict least recently used entries until `size` more bytes fit (worker thread)."""
        with self._lock:
            self._flush_touches()
            while self.files and (
                self.bytes + size > self.capacity or self._free_bytes() - size < self.min_free
            ):
                rows = self._db.execute(
                    "SELECT file_id, size FROM entries ORDER BY last_used LIMIT 64"
                ).fetchall()
                if not rows:
                    break
                for key, entry_size in rows:
                    self._delete_locked(key, int(entry_size))
                    self.stats.evictions += 1
                    if self.bytes + size <= self.capacity and (
                        self._free_bytes() - size >= self.min_free
                    ):
                        break
            return self.bytes + size <= self.capacity and self._free_bytes() - size >= self.min_free

    def _remove(self, key: str) -> None:
        with self._lock:
            row = self._db.execute("SELECT size FROM entries WHERE file_id = ?", (key,)).fetchone()
            if row is not None:
                self._delete_locked(key, int(row[0]))

    def _delete_locked(self, key: str, size: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_of(key).unlink()
        self._db.execute("DELETE FROM entries WHERE file_id = ?", (key,))
        self._touched.pop(key, None)
        self._verified.pop(key, None)
        self.files -= 1
        self.bytes -= size

    def _flush_touches(self) -> None:
        if self._touched:
            touched = [(t, k) for k, t in self._touched.items()]
            self._touched = {}
            self._db.executemany("UPDATE entries SET last_used = ? WHERE file_id = ?", touched)


def _pread(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def write_at(path: Path, offset: int, data: bytes | bytearray) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n
    finally:
        os.close(fd)
