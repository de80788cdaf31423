"""The alias catalog: names created in ``/<group>/`` on this host, kept across remounts.

One SQLite file per cluster (the tracker set) in the cache directory, so that
mounts of different clusters never see each other's names. The mount loads
every alias at start; the file is created only when the first alias is.

# Strategy

SQLite never runs on the mount's event loop: two mounts sharing a catalog
wait on each other's locks (``busy_timeout``), and that wait must not stall
every FUSE request. Changes (`add`, `remove`, `rename`) are queued, in order,
to one writer thread and return at once; the in-memory inode table is the
truth while mounted, the file is what the next mount starts from. A failed
write is logged by the writer thread. `flush` waits for the queue to drain and
`close` drains it before closing (both from a thread when called in trio:
``await trio.to_thread.run_sync(catalog.close)``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .proto import FileId, InvalidFileId, parse_file_id

log = logging.getLogger(__name__)

SYSTEM_CACHE_DIR = "/var/cache/fdfsmount"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS aliases (
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    file_id TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (grp, name)
);
CREATE TABLE IF NOT EXISTS cluster (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class CatalogError(Exception):
    """The catalog file cannot be read or written (the message names it)."""


def default_cache_dir() -> Path:
    """``/var/cache/fdfsmount`` for root, else ``$XDG_CACHE_HOME/fdfsmount``."""
    if os.geteuid() == 0:
        return Path(SYSTEM_CACHE_DIR)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fdfsmount"


def cluster_key(trackers: Iterable[object]) -> str:
    """A short stable name for a tracker set (order does not matter)."""
    text = ",".join(sorted({str(t) for t in trackers}))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class AliasCatalog:
    """Aliases ``(group, name) -> file ID`` of one cluster, persisted in SQLite.

    `path` None keeps them in memory only (tests, or no usable cache directory).
    """

    def __init__(self, path: Path | None, *, trackers: Iterable[object] = ()) -> None:
        self.path = path
        self._trackers = ",".join(sorted({str(t) for t in trackers}))
        self._db: sqlite3.Connection | None = None
        self._memory: dict[tuple[str, str], FileId] = {}
        self._db_lock = threading.Lock()  # the connection is used by one thread at a time
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    @classmethod
    def for_cluster(cls, cache_dir: str | os.PathLike[str] | None,
                    trackers: Iterable[object]) -> AliasCatalog:  # fmt: skip
        trackers = list(trackers)
        directory = Path(cache_dir) if cache_dir else default_cache_dir()
        return cls(directory / f"aliases-{cluster_key(trackers)}.sqlite", trackers=trackers)

    # -- reading -----------------------------------------------------------

    def load(self) -> list[tuple[str, str, FileId]]:
        """Every alias; nothing when the file does not exist yet."""
        if self.path is None:
            return [(g, n, fid) for (g, n), fid in sorted(self._memory.items())]
        self.flush()
        if self._db is None and not self.path.exists():
            return []
        rows = self._execute("SELECT grp, name, file_id FROM aliases ORDER BY grp, name")
        out = []
        for group, name, text in rows:
            try:
                out.append((group, name, parse_file_id(text)))
            except InvalidFileId:
                log.warning("catalog %s: alias %s/%s has a bad file ID %r; ignored",
                            self.path, group, name, text)  # fmt: skip
        return out

    # -- changing ----------------------------------------------------------

    # Each change is queued to the writer thread and returns at once.

    def add(self, group: str, name: str, file_id: FileId) -> None:
        if self.path is None:
            self._memory[(group, name)] = file_id
            return
        self._submit(
            f"alias {group}/{name} -> {file_id} kept until unmount only",
            "INSERT OR REPLACE INTO aliases (grp, name, file_id, created) VALUES (?, ?, ?, ?)",
            (group, name, str(file_id), time.time()),
        )

    def remove(self, group: str, name: str) -> None:
        if self.path is None:
            self._memory.pop((group, name), None)
            return
        self._submit(
            f"alias {group}/{name} may come back after a remount",
            "DELETE FROM aliases WHERE grp = ? AND name = ?",
            (group, name),
        )

    def rename(self, group: str, old: str, new: str) -> None:
        """Move alias `old` to `new` (replacing an alias `new`) in one transaction."""
        if self.path is None:
            fid = self._memory.pop((group, old))
            self._memory[(group, new)] = fid
            return
        self._submit(
            f"the rename of {group}/{old} to {new} lasts until unmount only",
            "DELETE FROM aliases WHERE grp = ? AND name = ?",
            (group, new),
            "UPDATE aliases SET name = ? WHERE grp = ? AND name = ?",
            (new, group, old),
        )

    def flush(self) -> None:
        """Block until every queued change is written (or has failed and been logged)."""
        if self._writer is not None:
            self._queue.join()

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close the file."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- the writer thread ---------------------------------------------------

    def _submit(self, consequence: str, *statements: object) -> None:
        pairs = list(zip(statements[::2], statements[1::2], strict=True))

        def write() -> None:
            with self._db_lock:
                db = self._connect()
                try:
                    with db:
                        for sql, params in pairs:
                            db.execute(str(sql), params)  # type: ignore[arg-type]
                except sqlite3.Error as exc:
                    raise CatalogError(f"alias catalog {self.path}: {exc}") from exc

        def job() -> None:
            try:
                write()
            except CatalogError as exc:
                log.error("%s; %s", exc, consequence)

        with self._writer_lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_queued, name="fdfsmount-catalog", daemon=True
                )
                self._writer.start()
        self._queue.put(job)

    def _write_queued(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                job()
            except Exception:
                log.exception("alias catalog %s: writing failed", self.path)
            finally:
                self._queue.task_done()

    # -- SQLite ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False)
            # WAL + NORMAL: a commit survives the daemon dying; one fsync per checkpoint.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=2000")
            db.executescript(_SCHEMA)
            if self._trackers:
                with db:
                    db.execute(
                        "INSERT OR IGNORE INTO cluster (key, value) VALUES ('trackers', ?)",
                        (self._trackers,),
                    )
        except (OSError, sqlite3.Error) as exc:
            raise CatalogError(f"alias catalog {self.path}: {exc}") from exc
        self._db = db
        return db

    def _execute(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[str, str, str]]:
        with self._db_lock:
            db = self._connect()
            try:
                return list(db.execute(sql, params))
            except sqlite3.Error as exc:
                raise CatalogError(f"alias catalog {self.path}: {exc}") from exc
