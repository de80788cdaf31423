"""Directory listings of ``Mxx/HH/HH``: a per-group index on disk, refreshed per storage.

# Strategy
FastDFS cannot list a directory, but each storage streams the names of every
file it holds (cmd 26, always from the start of its binlog: upstream offers no
offset to resume from). The names go, batch by batch, into a SQLite index per
group (`listindex`), one table per storage server, so memory stays bounded
whatever the group's size and the index survives remounts.

A refresh asks the tracker for the group's storages (one request) and
re-reads only those whose counters changed since their table was filled
(`listindex.storage_signature`); an unchanged group costs that one request.
A storage read less than `SETTLE_SECONDS` after its last change is read again
next time, since its binlog may not have been flushed yet when we read it.

Readers never wait for a refresh except the very first one of a group with
no index on disk yet, and only up to ``first_wait`` seconds; after that they
get what the pass has stored so far. An index older than ``list_ttl`` (or
loaded from disk at mount) is served as is while a refresh runs in the
mount's nursery. With listing off, or in addition to the index, directories
show the names this host has looked up or created.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .clientapi import ReadClient
from .listindex import GroupIndexDB, last_change, pack_dir, storage_signature
from .proto import FileId, ServerAddr, StorageStat, StorageStatus, decode_file_id
from .proto.binlog import BinlogRecord
from .proto.errors import FdfsError, InvalidFileId, NoStorage
from .proto.fileid import is_valid_remote_name

log = logging.getLogger(__name__)

DirKey = tuple[int, int, int]  # (store path index, HH, HH)
KNOWN_NAMES_LIMIT = 100_000
RETRY_AFTER_FAILURE = 10.0
#: Rows handed to the database per worker-thread call while a storage streams.
BATCH_ROWS = 8192
#: A storage read this soon after its last change is read again at the next refresh.
SETTLE_SECONDS = 3.0
#: Re-read a storage at least this often even if its counters say nothing changed.
FULL_REREAD_AFTER = 24 * 3600.0
#: A deletion made here is hidden at most this long while the index still lists it.
REMOVED_MAX_AGE = 3600.0
META_SUFFIX = "-m"


@dataclass(slots=True)
class ListingStats:
    refreshes: int = 0
    storages_read: int = 0
    storages_skipped: int = 0
    files_streamed: int = 0
    refresh_failures: int = 0


@dataclass(slots=True)
class _GroupState:
    db: GroupIndexDB
    checked_at: float = -math.inf  # (mount clock) when the last refresh started that succeeded
    refreshing: trio.Event | None = None
    failed_at: float = -math.inf
    error: BaseException | None = None
    stream_started: bool = False
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    sources: dict[str, str] = field(default_factory=dict)  # name prefix -> source storage


class Listing:
    """Serves the names of leaf directories; refreshes group indexes in the background."""

    def __init__(
        self,
        client: ReadClient,
        *,
        enabled: bool,
        ttl: float,
        first_wait: float,
        nursery: trio.Nursery | None = None,
        clock: Callable[[], float] = trio.current_time,
        index_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.enabled = enabled
        self.ttl = ttl
        self.first_wait = first_wait
        self.nursery = nursery
        self.index_dir = index_dir
        self.stats = ListingStats()
        self._clock = clock
        self._groups: dict[str, _GroupState] = {}
        self._known: OrderedDict[str, None] = OrderedDict()  # file IDs seen on this host
        self._known_by_dir: dict[tuple[str, DirKey], set[str]] = {}
        self._removed: dict[str, float] = {}  # deleted here -> when (wall clock)
        self._closed = False

    @property
    def remembered_deletions(self) -> int:
        """How many deletions made here are kept to hide names until the next pass."""
        return len(self._removed)

    def close(self) -> None:
        """Close every index file (at unmount); refreshes still running are cancelled and
        close theirs when they end."""
        self._closed = True
        for state in self._groups.values():
            if state.refreshing is None:
                _close_db(state.db)
            else:
                state.scope.cancel()

    def counters(self) -> dict[str, int]:
        out = {
            "list_refreshes": self.stats.refreshes,
            "list_storages_read": self.stats.storages_read,
            "list_storages_skipped": self.stats.storages_skipped,
            "list_files_streamed": self.stats.files_streamed,
            "list_refresh_failures": self.stats.refresh_failures,
            "list_indexed_files": sum(s.db.files for s in self._groups.values()),
        }
        return out

    # -- names this host knows: lookups, and the write side's seam ----------

    def note_file(self, file_id: FileId) -> None:
        """Remember `file_id` exists (looked up, or created on this host)."""
        key = str(file_id)
        self._removed.pop(key, None)
        if key in self._known:
            self._known.move_to_end(key)
            return
        self._known[key] = None
        self._known_by_dir.setdefault(_dir_of(file_id), set()).add(file_id.name)
        while len(self._known) > KNOWN_NAMES_LIMIT:
            old, _ = self._known.popitem(last=False)
            self._unknow(old)

    def forget_file(self, file_id: FileId) -> None:
        """`file_id` was deleted on this host: stop listing it."""
        key = str(file_id)
        self._known.pop(key, None)
        self._unknow(key)
        if not self.enabled:
            return  # no index to hide it from; nothing would ever prune the entry
        self._removed[key] = time.time()
        while len(self._removed) > KNOWN_NAMES_LIMIT:  # no pass for a long time
            del self._removed[next(iter(self._removed))]

    def _unknow(self, key: str) -> None:
        group, remote = key.split("/", 1)
        dir_key = (group, (int(remote[1:3], 16), int(remote[4:6], 16), int(remote[7:9], 16)))
        names = self._known_by_dir.get(dir_key)
        if names is not None:
            names.discard(remote[10:])
            if not names:
                del self._known_by_dir[dir_key]

    # -- reading --------------------------------------------------------------

    async def names(self, group: str, store_path: int, hi: int, lo: int) -> list[str]:
        """Sorted file names in ``/<group>/M<sp>/<hi>/<lo>``."""
        dkey: DirKey = (store_path, hi, lo)
        known = self._known_by_dir.get((group, dkey), ())
        db = await self.index(group) if self.enabled else None
        listed = db.names(store_path, hi, lo) if db is not None else []
        names = sorted(set(listed).union(known)) if known else listed
        if self._removed:
            prefix = f"{group}/M{store_path:02X}/{hi:02X}/{lo:02X}/"
            names = [n for n in names if prefix + n not in self._removed]
        return names

    def has_file(self, file_id: FileId) -> bool:
        """True when the index lists `file_id` (or this host created or saw it)."""
        key = str(file_id)
        if key in self._removed:
            return False
        if key in self._known:
            return True
        state = self._groups.get(file_id.group)
        if state is None:
            return False
        hi, lo = file_id.subdirs
        return state.db.has(file_id.store_path_index, hi, lo, file_id.name)

    def _state(self, group: str) -> _GroupState:
        state = self._groups.get(group)
        if state is None:
            path = None
            if self.index_dir is not None:
                path = self.index_dir / f"{group}.sqlite"
            try:
                db = GroupIndexDB(path)
            except (OSError, sqlite3.Error) as exc:  # a read-only or full cache dir
                if path is None:
                    raise
                log.warning("listing index %s unusable (%s); keeping it in a temporary file",
                            path, exc)  # fmt: skip
                db = GroupIndexDB(None)
            state = self._groups[group] = _GroupState(db)
        return state

    async def index(self, group: str) -> GroupIndexDB | None:
        """The group's index, refreshed in the background when stale; None if listing is
        off. With no index on disk yet, the first call waits up to `first_wait` for it."""
        if not self.enabled:
            return None
        state = self._state(group)
        now = self._clock()
        stale = now - state.checked_at > self.ttl
        if stale and state.refreshing is None and now - state.failed_at > RETRY_AFTER_FAILURE:
            self._start_refresh(group, state)
        db = state.db
        if db.has_index:
            return db
        if state.refreshing is not None:
            with trio.move_on_after(self.first_wait):
                await state.refreshing.wait()
        if db.has_index:
            return db
        if state.refreshing is not None and state.stream_started:
            log.info("listing of %s still loading; showing the files found so far", group)
            return db
        if state.error is not None:
            raise state.error
        return db

    async def refresh(self, groups: Iterable[str]) -> dict[str, int | str]:
        """List `groups` again now (not waiting for `ttl`) and wait for the passes:
        files found per group, or the error that stopped its pass."""
        if not self.enabled:
            return {}
        waits: dict[str, tuple[_GroupState, trio.Event]] = {}
        for group in groups:
            state = self._state(group)
            if state.refreshing is None:
                self._start_refresh(group, state)
            assert state.refreshing is not None
            waits[group] = (state, state.refreshing)
        out: dict[str, int | str] = {}
        for group, (state, done) in waits.items():
            await done.wait()
            if state.error is not None:  # cleared by a pass that completes
                out[group] = str(state.error) or type(state.error).__name__
            else:
                out[group] = state.db.files
        return out

    def _start_refresh(self, group: str, state: _GroupState) -> None:
        state.refreshing = trio.Event()
        state.scope = trio.CancelScope()
        if self.nursery is not None:
            self.nursery.start_soon(self._refresh, group, state, name=f"list {group}")
        else:  # no background nursery (tests): the caller's wait runs it
            raise RuntimeError("Listing needs a nursery to refresh in")

    async def _refresh(self, group: str, state: _GroupState) -> None:
        started = self._clock()
        self.stats.refreshes += 1
        try:
            with state.scope:
                await self._refresh_group(group, state)
        except FdfsError as exc:
            state.failed_at = self._clock()
            state.error = exc
            self.stats.refresh_failures += 1
            if self._closed:  # the client closes at unmount under a running refresh
                log.debug("listing group %s stopped by the unmount: %s", group, exc)
            else:
                log.warning("listing group %s failed: %s", group, exc)
        except Exception as exc:
            state.failed_at = self._clock()
            state.error = exc
            self.stats.refresh_failures += 1
            log.exception("listing group %s failed", group)
        else:
            if state.scope.cancelled_caught:
                return
            state.checked_at = started
            state.error = None
            self._prune_removed(group, state)
            log.debug("refreshed listing of %s in %.2fs", group, self._clock() - started)
        finally:
            state.stream_started = False
            if self._closed:
                _close_db(state.db)
            if state.refreshing is not None:
                state.refreshing.set()
            state.refreshing = None

    async def _refresh_group(self, group: str, state: _GroupState) -> None:
        db = state.db
        storages = await self.client.list_storages(group)
        active = [s for s in storages if s.status == StorageStatus.ACTIVE]
        if not active:
            raise NoStorage(f"group {group!r} has no active storage server")
        members = ",".join(sorted(_storage_key(s) for s in active))
        member_ids = {s.storage_id for s in active} | {s.ip_addr for s in active}
        same_members = db.meta("members") == members
        if not db.has_index:
            await trio.to_thread.run_sync(db.drop_orphan_tables)
        for storage in active:
            key = _storage_key(storage)
            signature = storage_signature(storage)
            entry = db.entries.get(key)
            if (
                same_members
                and entry is not None
                and entry.signature == signature
                and time.time() - entry.read_at < FULL_REREAD_AFTER
            ):
                self.stats.storages_skipped += 1
                continue
            await self._read_storage(group, state, storage, signature, member_ids)
        await trio.to_thread.run_sync(db.retire, [_storage_key(s) for s in active], members)
        db.reload()

    async def _read_storage(
        self,
        group: str,
        state: _GroupState,
        storage: StorageStat,
        signature: str,
        members: set[str],
    ) -> None:
        """Stream one storage's names into a new table, then swap it in."""
        db = state.db
        key = _storage_key(storage)
        read_at = time.time()
        if read_at - last_change(storage) < SETTLE_SECONDS:
            signature = ""  # its binlog may still lack the last change: read it again
        writer = await trio.to_thread.run_sync(db.writer, key)
        if key not in db.entries:
            db.show_partial(key, writer.table)
        addr = ServerAddr(storage.ip_addr, storage.storage_port)
        committed = False
        try:
            batch: list[tuple[int, str]] = []
            for index in range(storage.store_path_count):
                async with self.client.fetch_binlog(addr, group, index) as records:
                    state.stream_started = True
                    async for record in records:
                        row = self._row(record, members, state)
                        if row is None:
                            continue
                        batch.append(row)
                        if len(batch) >= BATCH_ROWS:
                            await trio.to_thread.run_sync(writer.add, batch)
                            self.stats.files_streamed += len(batch)
                            batch = []
            if batch:
                await trio.to_thread.run_sync(writer.add, batch)
                self.stats.files_streamed += len(batch)
            await trio.to_thread.run_sync(
                db.commit_table, key, writer.table, signature, read_at, writer.files
            )
            committed = True
            self.stats.storages_read += 1
        finally:
            db.show_partial(key, None)
            if not committed:
                with trio.CancelScope(shield=True), contextlib.suppress(sqlite3.Error):
                    await trio.to_thread.run_sync(db.drop_table, writer.table)
            with contextlib.suppress(sqlite3.Error):
                db.reload()

    @staticmethod
    def _row(record: BinlogRecord, members: set[str], state: _GroupState) -> tuple[int, str] | None:
        name = record.remote_name
        if name.endswith(META_SUFFIX) or not is_valid_remote_name(name):
            return None
        if not record.op.isupper():
            # Replicated here: listed from its source's stream, unless the source is
            # no active member of the group (then from the replicas, deduplicated).
            prefix = name[10:16]
            source = state.sources.get(prefix)
            if source is None:
                try:
                    source = decode_file_id(f"g/{name}").source
                except InvalidFileId:
                    source = ""
                if len(state.sources) < 4096:
                    state.sources[prefix] = source
            if source in members:
                return None
        d = pack_dir(int(name[1:3], 16), int(name[4:6], 16), int(name[7:9], 16))
        return (d, name[10:])

    def _prune_removed(self, group: str, state: _GroupState) -> None:
        """Deletions made here stay hidden until the index no longer lists them."""
        if not self._removed:
            return
        now = time.time()
        keep: dict[str, float] = {}
        for key, when in self._removed.items():
            if now - when > REMOVED_MAX_AGE:
                continue
            g, remote = key.split("/", 1)
            if g == group:
                sp, hi, lo = int(remote[1:3], 16), int(remote[4:6], 16), int(remote[7:9], 16)
                if not state.db.has(sp, hi, lo, remote[10:]):
                    continue
            keep[key] = when
        self._removed = keep


def _close_db(db: GroupIndexDB) -> None:
    with contextlib.suppress(sqlite3.Error):
        db.close_writer()
        db.close()


def _storage_key(storage: StorageStat) -> str:
    return storage.storage_id or storage.ip_addr


def _dir_of(file_id: FileId) -> tuple[str, DirKey]:
    hi, lo = file_id.subdirs
    return file_id.group, (file_id.store_path_index, hi, lo)
