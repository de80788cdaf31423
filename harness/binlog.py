"""The builtin storage's binlog and its per-peer replication marks.

# Strategy
One append-only text file per storage, ``<base>/sync/binlog``, one line per
change: ``<unix time> <op> <remote name>[ <extra>]``. Op letters follow
upstream: upper case for changes made here (C create, A append, D delete,
U whole-file update such as a metadata file, M modify, T truncate,
R rename), lower case for the same changes replicated from a peer. Extras:
``A``/``M`` ``<offset> <length>``, ``T`` ``<new size>``, ``R`` the old name
(the record's name is the new one).

Replication relies on one ordering rule: the timestamps of upper-case lines
never decrease, and the timestamp in the name of a newly created file is the
timestamp of its ``C`` (or ``R``) line, taken and written with no await in
between. So a peer that has applied every upper-case line before one with
timestamp ``x`` holds every file of ours created before ``x``; and a peer
that has read to our end of file after we looked at the clock at ``h`` holds
every file created before ``h`` (any later line carries a timestamp >= h).

Changes to an existing file (A, M, T and their lower-case copies) end with
``e<epoch>``: the ownership epoch of the file's source when the change was
made (see `harness.tracker_state`). `Binlog.file_epochs` keeps, per file, the
epoch of the last change made or applied here; replication never applies a
change of an older epoch over it (see `harness.replication`).

The file has a generation id (``binlog.id``): a peer whose mark names
another generation (we were wiped and restarted) starts again from 0.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

log = logging.getLogger(__name__)

SOURCE_OPS = frozenset("CADUMTR")
REPLICA_OPS = frozenset("cadumtr")
#: Ops whose lines the FETCH_ONE_PATH_BINLOG stream lists (renames as creates).
LISTED_OPS = frozenset("CcRr")
MAX_LINE = 1024


@dataclass(frozen=True, slots=True)
class BinlogEntry:
    timestamp: int
    op: str
    name: str
    extra: str = ""
    end: int = 0  # byte offset just past this line

    def line(self) -> bytes:
        return binlog_line(self.timestamp, self.op, self.name, self.extra)

    @property
    def is_source(self) -> bool:
        return self.op in SOURCE_OPS


def binlog_line(timestamp: int, op: str, name: str, extra: str = "") -> bytes:
    """One line of a binlog, as upstream writes it."""
    if extra:
        return f"{timestamp} {op} {name} {extra}\n".encode()
    return f"{timestamp} {op} {name}\n".encode()


EPOCHED_OPS = frozenset("AMTamt")


def with_epoch(extra: str, epoch: int) -> str:
    return f"{extra} e{epoch}"


def split_epoch(extra: str) -> tuple[str, int]:
    """``(extra without the epoch, epoch)``; epoch 0 for lines written without one."""
    head, _, last = extra.rpartition(" ")
    if head and last.startswith("e") and last[1:].isdigit():
        return head, int(last[1:])
    return extra, 0


def parse_line(line: bytes, end: int = 0) -> BinlogEntry | None:
    try:
        ts, op, rest = line.decode("ascii").rstrip("\n").split(" ", 2)
        name, _, extra = rest.partition(" ")
        if len(op) != 1 or op not in SOURCE_OPS | REPLICA_OPS or not name:
            return None
        return BinlogEntry(int(ts), op, name, extra, end)
    except (UnicodeDecodeError, ValueError):
        return None


class Binlog:
    """Append-only change log; readers follow it by byte offset."""

    def __init__(self, sync_dir: Path) -> None:
        sync_dir.mkdir(parents=True, exist_ok=True)
        self.path = sync_dir / "binlog"
        id_path = sync_dir / "binlog.id"
        if not self.path.exists() or not id_path.exists():
            self.path.write_bytes(b"")
            id_path.write_text(uuid.uuid4().hex)
        self.generation = id_path.read_text().strip()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = self._repair_tail()
        #: Byte offset just past the last upper-case line: a peer that applied
        #: our log up to here holds every change made here.
        self.source_end = 0
        #: Per file: the epoch of the last change made or applied here.
        self.file_epochs: dict[str, int] = {}
        self.last_source_ts = self._scan_last_source_ts()
        self._grown = trio.Event()
        #: Held to append, and by a caller that must log a timestamp it took
        #: before any later one (changes are made from connection threads too).
        self.lock = threading.RLock()
        self._token: trio.lowlevel.TrioToken | None = None
        self._loop_thread = threading.get_ident()
        self._wake_pending = False
        #: Tasks in `wait_for_growth` (counted under the lock, so none is missed).
        self._waiting = 0

    def bind(self, token: trio.lowlevel.TrioToken) -> None:
        """The trio run whose tasks follow the log (called from that run)."""
        self._token = token
        self._loop_thread = threading.get_ident()

    def _repair_tail(self) -> int:
        """Drop a half-written last line left by a crash."""
        data_size = os.fstat(self._fd).st_size
        if data_size == 0:
            return 0
        with self.path.open("rb") as f:
            f.seek(max(0, data_size - MAX_LINE))
            tail = f.read()
        if tail.endswith(b"\n"):
            return data_size
        cut = tail.rfind(b"\n")
        keep = data_size - len(tail) + cut + 1 if cut >= 0 else data_size - len(tail)
        log.warning("binlog %s: dropping a partial last line", self.path)
        os.truncate(self.path, keep)
        return keep

    def _scan_last_source_ts(self) -> int:
        last = 0
        for entry in self.read_entries(0):
            self._note_epoch(entry.op, entry.name, entry.extra)
            if entry.is_source:
                last = max(last, entry.timestamp)
                self.source_end = entry.end
        return last

    def _note_epoch(self, op: str, name: str, extra: str) -> None:
        if op in EPOCHED_OPS:
            epoch = split_epoch(extra)[1]
            if epoch:
                self.file_epochs[name] = epoch
        elif op in "Dd":
            self.file_epochs.pop(name, None)
        elif op in "Rr" and extra in self.file_epochs:
            self.file_epochs[name] = self.file_epochs.pop(extra)

    def file_epoch(self, name: str) -> int:
        return self.file_epochs.get(name, 0)

    def close(self) -> None:
        os.close(self._fd)

    # ------------------------------------------------------------ writing

    def next_source_timestamp(self) -> int:
        """The timestamp for a change made here now (never below the last one)."""
        return max(int(time.time()), self.last_source_ts)

    def append(self, timestamp: int, op: str, name: str, extra: str = "") -> None:
        line = binlog_line(timestamp, op, name, extra)  # every change writes one
        with self.lock:
            os.write(self._fd, line)
            self.size += len(line)
            self._note_epoch(op, name, extra)
            if op in SOURCE_OPS:
                self.last_source_ts = max(self.last_source_ts, timestamp)
                self.source_end = self.size
            if not self._waiting:
                return
        if threading.get_ident() == self._loop_thread:
            self._wake()
        elif self._token is not None and not self._wake_pending:
            # Set after the size above: a wake-up already pending sees it too.
            self._wake_pending = True
            self._token.run_sync_soon(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        self._grown.set()
        self._grown = trio.Event()

    def record_source(self, op: str, name: str, extra: str = "") -> int:
        """Log a change made here now; return its timestamp."""
        with self.lock:
            ts = self.next_source_timestamp()
            self.append(ts, op, name, extra)
        return ts

    # ------------------------------------------------------------ reading

    def read_entries(self, offset: int) -> Iterator[BinlogEntry]:
        """Every entry after byte ``offset`` (which must be a line start)."""
        end_of_file = self.size
        if offset >= end_of_file:
            return
        with self.path.open("rb") as f:
            f.seek(offset)
            pos = offset
            while pos < end_of_file:
                line = f.readline(MAX_LINE)
                if not line.endswith(b"\n"):
                    break
                pos += len(line)
                entry = parse_line(line, pos)
                if entry is None:
                    log.warning("binlog %s: skipping bad line ending at %d", self.path, pos)
                    continue
                yield entry

    def read_source_batch(self, offset: int, limit: int) -> tuple[list[BinlogEntry], int]:
        """Up to ``limit`` source entries after ``offset``, and the offset reached.

        The offset reached moves past replica lines too, so a follower that
        is told it is at the end does not rescan them.
        """
        entries: list[BinlogEntry] = []
        end_of_file = self.size
        reached = min(max(offset, 0), end_of_file)
        for entry in self.read_entries(reached):
            if entry.end > end_of_file:
                break
            reached = entry.end
            if entry.is_source:
                entries.append(entry)
                if len(entries) >= limit:
                    return entries, reached
        return entries, end_of_file

    async def wait_for_growth(self, offset: int) -> None:
        """Return once the file extends past ``offset``."""
        while True:
            with self.lock:
                if self.size > offset:
                    return
                self._waiting += 1
                grown = self._grown
            try:
                await grown.wait()
            finally:
                with self.lock:
                    self._waiting -= 1


@dataclass(slots=True)
class SyncMark:
    """How far this storage has applied one peer's binlog."""

    generation: str = ""
    offset: int = 0
    #: Every file the peer created before this timestamp is here.
    synced_until: int = 0


class SyncMarks:
    """Per-peer marks persisted as ``<sync dir>/<peer id>.mark`` (JSON)."""

    def __init__(self, sync_dir: Path) -> None:
        self._dir = sync_dir
        sync_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, peer_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in peer_id)
        return self._dir / f"{safe}.mark"

    def load(self, peer_id: str) -> SyncMark:
        try:
            raw = json.loads(self._path(peer_id).read_text())
            return SyncMark(str(raw["generation"]), int(raw["offset"]), int(raw["synced_until"]))
        except (OSError, ValueError, KeyError, TypeError):
            return SyncMark()

    def save(self, peer_id: str, mark: SyncMark) -> None:
        path = self._path(peer_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "generation": mark.generation,
                    "offset": mark.offset,
                    "synced_until": mark.synced_until,
                }
            )
        )
        os.replace(tmp, path)
