"""File inodes the kernel holds but nobody is using, kept on disk instead of in memory.

# Strategy
Every entry a READDIRPLUS reply hands out (pyfuse3 always uses it) is an
inode the kernel may keep until memory pressure makes it forget, so `find`
over a million files leaves a million file nodes in the `InodeTable` (about
700 bytes each). The table keeps the most recent `RESIDENT_FILES` file nodes
as objects and moves older ones here: one row of (inode, file ID, parent,
lookup count) in a private SQLite database that lives in a temporary file
(deleted when closed), with a page cache of a few MiB. A node asked for
again comes back as an object; a `forget` for one that is here just counts
down here.

Most questions asked here are about nodes that are not here (every entry a
listing hands out is looked for first). A counting filter of one byte per slot
(`FILTER_SLOTS`, indexed by inode number) answers most of those without a
query; the table keeps nodes whose inode number is their hash, so a file ID's
slot is known before its row is found.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

#: File nodes kept as objects in memory; older ones move to disk.
RESIDENT_FILES = 20_000
#: How many move at once when the table grows past `RESIDENT_FILES`.
SPILL_BATCH = 5_000
PAGE_CACHE_KIB = 2048
FILTER_SLOTS = 1 << 22  # 4 MiB of counters: about 1 in 4 misses still queries at a million


class SpilledFiles:
    """Inode -> (file ID, parent inode, lookups) for file nodes out of memory."""

    def __init__(self) -> None:
        self._db: sqlite3.Connection | None = None
        self._count = 0
        self._filter: bytearray | None = None  # rows per inode slot (saturating at 255)

    def _maybe_here(self, inode: int) -> bool:
        return (
            self._count > 0 and self._filter is not None and self._filter[inode % FILTER_SLOTS] > 0
        )

    def _counted(self, inode: int, step: int) -> None:
        if self._filter is None:
            self._filter = bytearray(FILTER_SLOTS)
        slot = inode % FILTER_SLOTS
        value = self._filter[slot]
        if value < 255:  # saturated slots stay: they only cost a query
            self._filter[slot] = max(0, value + step)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            # "" is SQLite's private temporary database: on disk, gone when closed.
            db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            db.execute(
                "CREATE TABLE files (ino INTEGER PRIMARY KEY, file_id TEXT NOT NULL UNIQUE,"
                " parent INTEGER NOT NULL, lookups INTEGER NOT NULL)"
            )
            self._db = db
        return self._db

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._count = 0
            self._filter = None

    def put_many(self, rows: Iterable[tuple[int, str, int, int]]) -> None:
        rows = list(rows)
        if not rows:
            return
        db = self._conn()
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        for row in rows:
            self._counted(row[0], 1)
        self._count = db.execute("SELECT count(*) FROM files").fetchone()[0]

    def contains(self, inode: int) -> bool:
        if not self._maybe_here(inode):
            return False
        found = self._conn().execute("SELECT 1 FROM files WHERE ino = ?", (inode,)).fetchone()
        return found is not None

    def take(self, inode: int) -> tuple[int, str, int, int] | None:
        """Remove and return the row of `inode`, if it is here."""
        if not self._maybe_here(inode):
            return None
        db = self._conn()
        row = db.execute("SELECT ino, file_id, parent, lookups FROM files WHERE ino = ?",
                         (inode,)).fetchone()  # fmt: skip
        if row is not None:
            db.execute("DELETE FROM files WHERE ino = ?", (inode,))
            self._count -= 1
            self._counted(inode, -1)
        return None if row is None else (int(row[0]), str(row[1]), int(row[2]), int(row[3]))

    def take_key(self, file_id: str, inode: int) -> tuple[int, str, int, int] | None:
        """Remove and return the row of `file_id`, whose inode number is `inode`."""
        if not self._maybe_here(inode):
            return None
        db = self._conn()
        row = db.execute("SELECT ino, file_id, parent, lookups FROM files WHERE file_id = ?",
                         (file_id,)).fetchone()  # fmt: skip
        if row is not None:
            db.execute("DELETE FROM files WHERE ino = ?", (row[0],))
            self._count -= 1
            self._counted(int(row[0]), -1)
        return None if row is None else (int(row[0]), str(row[1]), int(row[2]), int(row[3]))

    def forget(self, inode: int, count: int) -> bool:
        """Count down `inode`'s lookups (gone at 0); False if it is not here."""
        if not self._maybe_here(inode):
            return False
        db = self._conn()
        row = db.execute("SELECT lookups FROM files WHERE ino = ?", (inode,)).fetchone()
        if row is None:
            return False
        if row[0] - count <= 0:
            db.execute("DELETE FROM files WHERE ino = ?", (inode,))
            self._count -= 1
            self._counted(inode, -1)
        else:
            db.execute("UPDATE files SET lookups = ? WHERE ino = ?", (row[0] - count, inode))
        return True
