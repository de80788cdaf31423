"""The on-disk listing index of one group: file names per leaf directory, per storage server.

# Strategy
One SQLite file per cluster and group in the cache directory. Each storage
server's names live in a table of their own, ``(dir, name)`` with ``dir``
packing ``(store path, HH, HH)`` into one integer; the primary key is a B-tree
on ``(dir, name)``, so a leaf directory is one range scan whatever the group's
size, and nothing of the group is held in memory. A storage is re-read into a
fresh table that replaces the old one in one transaction, so readers always
see a complete listing (deleted files simply are not in the new table) and a
failed read leaves the previous one in place. A leaf's names are the UNION of
the storages' tables, which also drops the duplicates replicas bring.

The ``storages`` table records, per storage, the tracker's view of it when it
was read (`storage_signature`): a refresh compares it with what the tracker
says now, and re-reads only the storages that changed.

Why SQLite: it is in the standard library (no extra dependency, no daemon),
its B-tree answers a range query with a bounded page cache, WAL mode lets the
mount read while a refresh writes from a worker thread, and a crash mid-write
loses at most the refresh in progress. An LSM store (LevelDB, LMDB) would
write faster but adds a compiled dependency for a gain a listing of millions
does not need.

Writers (`Writer`) run in worker threads (`trio.to_thread`); the mount reads
on its own connection in the event loop: point and range queries on the
B-tree take microseconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .proto import StorageStat

log = logging.getLogger(__name__)

#: The SQLite page cache per connection (KiB): the index's whole memory use.
PAGE_CACHE_KIB = 4096
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS storages (
    storage TEXT PRIMARY KEY,   -- storage id, or IP in IP mode
    tbl TEXT NOT NULL,          -- the table holding its names
    signature TEXT NOT NULL,    -- the tracker's view of it when read ('' = read again)
    read_at REAL NOT NULL,      -- wall clock when the read started
    files INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: Counters that change when a storage gains or loses a file (uploads, deletes,
#: links, renames and files replicated to it all move one of them).
_SIGNATURE_COUNTERS = (
    "success_upload_count",
    "success_delete_count",
    "success_create_link_count",
    "success_delete_link_count",
    "success_sync_in_bytes",
    "last_source_update",
    "last_sync_update",
)


def storage_signature(stat: StorageStat) -> str:
    """What must stay the same for a storage's file list to be unchanged.

    Traffic counters (downloads, heartbeats, free space) are left out: they
    move all the time without changing which files exist.
    """
    parts = [
        stat.storage_id, stat.ip_addr, str(stat.storage_port), str(stat.status),
        str(stat.store_path_count), str(stat.join_time), str(stat.up_time),
        *(str(stat.counters.get(name, 0)) for name in _SIGNATURE_COUNTERS),
    ]  # fmt: skip
    return "|".join(parts)


def last_change(stat: StorageStat) -> int:
    """The storage's own clock at its last file change, as the tracker last heard."""
    return max(stat.counters.get("last_source_update", 0), stat.counters.get("last_sync_update", 0))


def pack_dir(store_path: int, hi: int, lo: int) -> int:
    return (store_path << 16) | (hi << 8) | lo


@dataclass(frozen=True, slots=True)
class StorageEntry:
    storage: str
    table: str
    signature: str
    read_at: float
    files: int


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
    db.execute("PRAGMA temp_store=FILE")
    return db


class GroupIndexDB:
    """The index file of one group, opened for reading in the event loop.

    `path` None keeps the index in a temporary file deleted on `close` (no
    usable cache directory).
    """

    def __init__(self, path: Path | None) -> None:
        self._temporary = path is None
        if path is None:
            fd, name = _mkstemp()
            os.close(fd)
            path = Path(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = _open_checked(path)
        self._lock = threading.Lock()  # the write connection: one refresh at a time
        self._tables: list[str] = []
        self._partial: dict[str, str] = {}  # storage -> table being filled, shown meanwhile
        self._query_tables: tuple[str, ...] = ()
        self.entries: dict[str, StorageEntry] = {}
        self.reload()

    def close(self) -> None:
        self._db.close()
        if self._temporary:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.path}{suffix}")

    # -- reading (event loop) --------------------------------------------

    def reload(self) -> None:
        rows = self._db.execute(
            "SELECT storage, tbl, signature, read_at, files FROM storages ORDER BY storage"
        ).fetchall()
        self.entries = {r[0]: StorageEntry(*r) for r in rows}
        self._retable()

    def _retable(self) -> None:
        tables = [e.table for e in self.entries.values()]
        tables += [t for s, t in self._partial.items() if s not in self.entries]
        self._query_tables = tuple(tables)

    @property
    def has_index(self) -> bool:
        return bool(self.entries)

    @property
    def files(self) -> int:
        return sum(e.files for e in self.entries.values())

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def names(self, store_path: int, hi: int, lo: int) -> list[str]:
        """Sorted names in one leaf directory, over every storage's table."""
        tables = self._query_tables
        if not tables:
            return []
        d = pack_dir(store_path, hi, lo)
        sql = " UNION ".join(f"SELECT name FROM {t} WHERE dir = ?" for t in tables)
        try:
            rows = self._db.execute(sql + " ORDER BY 1", (d,) * len(tables)).fetchall()
        except sqlite3.OperationalError as exc:  # a partial table dropped meanwhile
            log.debug("listing query on %s retried: %s", self.path, exc)
            self.reload()
            return self.names(store_path, hi, lo) if self._query_tables != tables else []
        return [r[0] for r in rows]

    def has(self, store_path: int, hi: int, lo: int, name: str) -> bool:
        d = pack_dir(store_path, hi, lo)
        for table in self._query_tables:
            try:
                sql = f"SELECT 1 FROM {table} WHERE dir = ? AND name = ?"
                if self._db.execute(sql, (d, name)).fetchone():
                    return True
            except sqlite3.OperationalError:
                continue
        return False

    def nonempty_subdirs(self, store_path: int, hi: int | None = None) -> set[int]:
        """The HH values under ``M<sp>`` (or ``M<sp>/<hi>``) holding at least one file."""
        found: set[int] = set()
        for table in self._query_tables:
            for sub in range(256):
                if sub in found:
                    continue
                if hi is None:
                    low, high = pack_dir(store_path, sub, 0), pack_dir(store_path, sub, 255)
                else:
                    low = high = pack_dir(store_path, hi, sub)
                sql = f"SELECT 1 FROM {table} WHERE dir BETWEEN ? AND ? LIMIT 1"
                try:
                    if self._db.execute(sql, (low, high)).fetchone():
                        found.add(sub)
                except sqlite3.OperationalError:
                    break
        return found

    # -- writing (worker threads) ----------------------------------------

    def writer(self, storage: str) -> Writer:
        """A new table for `storage`, to fill and then `commit_table` (or `drop_table`)."""
        with self._lock:
            db = self._writer_db()
            # One transaction: two mounts of the same cluster may share this file.
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value FROM meta WHERE key = 'next_table'").fetchone()
            number = int(row[0]) if row else 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('next_table', ?)", (str(number + 1),))
            table = f"names_{number}"
            db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute(
                f"CREATE TABLE {table} (dir INTEGER NOT NULL, name TEXT NOT NULL,"
                " PRIMARY KEY (dir, name)) WITHOUT ROWID"
            )
            db.execute("COMMIT")
        return Writer(self, storage, table)

    _wdb: sqlite3.Connection | None = None

    def _writer_db(self) -> sqlite3.Connection:
        if self._wdb is None:
            self._wdb = _connect(str(self.path))
        return self._wdb

    def show_partial(self, storage: str, table: str | None) -> None:
        """Let readers see `table` while it fills (only for storages not yet indexed)."""
        if table is None:
            self._partial.pop(storage, None)
        else:
            self._partial[storage] = table
        self._retable()

    def insert(self, table: str, rows: list[tuple[int, str]]) -> None:
        with self._lock:
            db = self._writer_db()
            db.execute("BEGIN")
            db.executemany(f"INSERT OR IGNORE INTO {table} VALUES (?, ?)", rows)
            db.execute("COMMIT")

    def commit_table(
        self, storage: str, table: str, signature: str, read_at: float, files: int
    ) -> None:
        """Make `table` the storage's listing; drop the one it replaces."""
        with self._lock:
            db = self._writer_db()
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT tbl FROM storages WHERE storage = ?", (storage,)).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO storages VALUES (?, ?, ?, ?, ?)",
                (storage, table, signature, read_at, files),
            )
            if row is not None and row[0] != table:
                db.execute(f"DROP TABLE IF EXISTS {row[0]}")
            db.execute("COMMIT")

    def set_signature(self, storage: str, signature: str) -> None:
        with self._lock:
            self._writer_db().execute(
                "UPDATE storages SET signature = ? WHERE storage = ?", (signature, storage)
            )

    def drop_table(self, table: str) -> None:
        with self._lock:
            self._writer_db().execute(f"DROP TABLE IF EXISTS {table}")

    def retire(self, keep: Iterable[str], members: str) -> None:
        """Forget storages not in `keep` (gone, or no longer active); record the member set."""
        keep = set(keep)
        with self._lock:
            db = self._writer_db()
            db.execute("BEGIN IMMEDIATE")
            for storage, table in db.execute("SELECT storage, tbl FROM storages").fetchall():
                if storage not in keep:
                    db.execute("DELETE FROM storages WHERE storage = ?", (storage,))
                    db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('members', ?)", (members,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('checked_at', ?)", (str(time.time()),))
            db.execute("COMMIT")

    def drop_orphan_tables(self) -> None:
        """Tables no storage row names (left by a refresh cut short by a crash)."""
        with self._lock:
            db = self._writer_db()
            used = {r[0] for r in db.execute("SELECT tbl FROM storages")}
            names = db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'names_%'"
            ).fetchall()
            for (name,) in names:
                if name not in used:
                    db.execute(f"DROP TABLE IF EXISTS {name}")

    def close_writer(self) -> None:
        with self._lock:
            if self._wdb is not None:
                self._wdb.close()
                self._wdb = None


class Writer:
    """Fills one storage's new table in batches (call from a worker thread)."""

    def __init__(self, index: GroupIndexDB, storage: str, table: str) -> None:
        self.index = index
        self.storage = storage
        self.table = table
        self.files = 0

    def add(self, rows: list[tuple[int, str]]) -> None:
        self.index.insert(self.table, rows)
        self.files += len(rows)


def _mkstemp() -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix="fdfsmount-list-", suffix=".sqlite")


def _open_checked(path: Path) -> sqlite3.Connection:
    """Open (or create) the index; an unreadable or foreign file is started afresh."""
    for attempt in (1, 2):
        db: sqlite3.Connection | None = None
        try:
            db = _connect(str(path))
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema {row[0]}, want {SCHEMA_VERSION}")
            return db
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            if attempt == 2:
                raise
            log.info("listing index %s unusable (%s); starting a new one", path, exc)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{path}{suffix}")
    raise AssertionError("unreachable")
