"""The shared block cache: fixed-size blocks of file content in one LRU bounded in bytes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

BLOCK_SIZE = 128 * 1024

#: (file ID, version) where version is None for files that never change and
#: (size, mtime) for appender files, so a changed appender file misses.
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
        self.size = 0  # bytes held
        self.stats = CacheStats()
        self._blocks: OrderedDict[BlockKey, bytes] = OrderedDict()
        self._by_file: dict[str, set[BlockKey]] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, file_key: FileKey, index: int) -> bytes | None:
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

    def put(self, file_key: FileKey, index: int, data: bytes) -> None:
        if len(data) > self.capacity:
            return
        key = (file_key, index)
        old = self._blocks.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self._blocks[key] = data
        self._by_file.setdefault(file_key[0], set()).add(key)
        self.size += len(data)
        self.stats.inserts += 1
        while self.size > self.capacity:
            self._evict_oldest()

    def discard(self, file_key: FileKey, index: int) -> None:
        key = (file_key, index)
        data = self._blocks.pop(key, None)
        if data is not None:
            self._forget(key, data)

    def drop_file(self, file_id: str) -> int:
        """Forget every block of `file_id` (any version); returns how many."""
        keys = self._by_file.pop(file_id, set())
        for key in keys:
            data = self._blocks.pop(key, None)
            if data is not None:
                self.size -= len(data)
        return len(keys)

    def clear(self) -> None:
        self._blocks.clear()
        self._by_file.clear()
        self.size = 0

    def _evict_oldest(self) -> None:
        key, data = self._blocks.popitem(last=False)
        self._forget(key, data)
        self.stats.evictions += 1

    def _forget(self, key: BlockKey, data: bytes) -> None:
        self.size -= len(data)
        keys = self._by_file.get(key[0][0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_file[key[0][0]]
