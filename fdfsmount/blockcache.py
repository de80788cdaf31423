"""The shared block cache: fixed-size blocks of file content in one LRU bounded in bytes.

A block is a slice of the buffer it was downloaded in (a readahead chunk holds
many), so filling the cache copies nothing and adjacent blocks can be served
as one slice. The bound counts whole buffers: a buffer's memory is charged
while any of its blocks is cached, which is the memory really held.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

BLOCK_SIZE = 128 * 1024


@dataclass(frozen=True, slots=True)
class Block:
    """Bytes ``buf[start:end]`` of a downloaded buffer."""

    buf: bytes | bytearray  # a download lands in a bytearray; never changed afterwards
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def view(self) -> memoryview:
        return memoryview(self.buf)[self.start : self.end]

    def follows(self, other: Block) -> bool:
        """True when this block continues `other` inside the same buffer."""
        return self.buf is other.buf and self.start == other.end

    @classmethod
    def of(cls, data: bytes | bytearray) -> Block:
        return cls(data, 0, len(data))


def buffer_slice(buf: bytes | bytearray, start: int, size: int) -> bytes | bytearray | memoryview:
    """``size`` bytes of ``buf`` from ``start``: the buffer itself when that is all of it
    (handed out as it is), else a view (no copy either way)."""
    if start == 0 and size == len(buf):
        return buf
    return memoryview(buf)[start : start + size]


#: (file ID, version) where version is None for files that never change and
#: the number of the open that fetched them for appender files.
FileKey = tuple[str, Hashable]
BlockKey = tuple[FileKey, int]


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    inserts: int = 0
    evictions: int = 0


class BlockCache:
    """LRU of file blocks keyed by (file key, block index), at most `capacity` bytes.

    Blocks are ``block_size`` bytes except a file's last one. A capacity of 0
    disables caching (every `put` is dropped at once).
    """

    def __init__(self, capacity: int, block_size: int = BLOCK_SIZE) -> None:
        if block_size <= 0:
            raise ValueError("block size must be positive")
        self.capacity = max(0, capacity)
        self.block_size = block_size
        self.size = 0  # bytes of the buffers held
        self.stats = CacheStats()
        self._blocks: OrderedDict[BlockKey, Block] = OrderedDict()
        self._by_file: dict[str, set[BlockKey]] = {}
        self._buffers: dict[int, int] = {}  # id(buffer) -> cached blocks of it

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, file_key: FileKey, index: int) -> Block | None:
        key = (file_key, index)
        data = self._blocks.get(key)
        if data is None:
            self.stats.misses += 1
            return None
        self._blocks.move_to_end(key)
        self.stats.hits += 1
        return data

    def contains(self, file_key: FileKey, index: int) -> bool:
        return (file_key, index) in self._blocks

    def put(self, file_key: FileKey, index: int, block: Block) -> None:
        if len(block.buf) > self.capacity:
            return
        key = (file_key, index)
        old = self._blocks.pop(key, None)
        if old is not None:
            self._release(old)
        self._blocks[key] = block
        self._by_file.setdefault(file_key[0], set()).add(key)
        self._hold(block)
        self.stats.inserts += 1
        while self.size > self.capacity and self._blocks:
            self._evict_oldest()

    def _hold(self, block: Block) -> None:
        ident = id(block.buf)
        count = self._buffers.get(ident, 0)
        if not count:
            self.size += len(block.buf)
        self._buffers[ident] = count + 1

    def _release(self, block: Block) -> None:
        ident = id(block.buf)
        count = self._buffers[ident] - 1
        if count:
            self._buffers[ident] = count
        else:
            del self._buffers[ident]
            self.size -= len(block.buf)

    def discard(self, file_key: FileKey, index: int) -> None:
        key = (file_key, index)
        block = self._blocks.pop(key, None)
        if block is not None:
            self._forget(key, block)

    def drop_file(self, file_id: str) -> int:
        """Forget every block of `file_id` (any version); returns how many."""
        keys = self._by_file.pop(file_id, set())
        for key in keys:
            block = self._blocks.pop(key, None)
            if block is not None:
                self._release(block)
        return len(keys)

    def clear(self) -> None:
        self._blocks.clear()
        self._by_file.clear()
        self._buffers.clear()
        self.size = 0

    def _evict_oldest(self) -> None:
        key, block = self._blocks.popitem(last=False)
        self._forget(key, block)
        self.stats.evictions += 1

    def _forget(self, key: BlockKey, block: Block) -> None:
        self._release(block)
        keys = self._by_file.get(key[0][0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_file[key[0][0]]
