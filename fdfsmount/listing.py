"""Directory listings of ``Mxx/HH/HH``: a per-group index built from the storages' file streams.

# Strategy
FastDFS cannot list a directory, but each storage streams the names of every
file it holds (cmd 26); `client.list_files(group)` merges those streams over
the group's storages and store paths. One pass fills an index
``{(store path, HH, HH): names}`` for the whole group, swapped in atomically
when complete.

Readers never wait for a refresh except the very first one of a group, and
only up to ``first_wait`` seconds; after that they get what the pass has
found so far. A stale index (older than ``list_ttl``) is served as is while a
refresh runs in the mount's nursery. With listing off, or in addition to the
index, directories show the names this host has looked up or created.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from .clientapi import ReadClient
from .proto import FileId
from .proto.errors import FdfsError

log = logging.getLogger(__name__)

DirKey = tuple[int, int, int]  # (store path index, HH, HH)
KNOWN_NAMES_LIMIT = 100_000
RETRY_AFTER_FAILURE = 10.0


@dataclass(slots=True)
class GroupIndex:
    """Names per leaf directory of one group, and when they were collected."""

    names: dict[DirKey, list[str]] = field(default_factory=dict)
    built_at: float = -math.inf
    complete: bool = False
    files: int = 0

    def nonempty_subdirs(self, store_path: int, hi: int | None = None) -> set[int]:
        if hi is None:
            return {h for (sp, h, _lo) in self.names if sp == store_path}
        return {lo for (sp, h, lo) in self.names if sp == store_path and h == hi}


@dataclass(slots=True)
class _GroupState:
    index: GroupIndex | None = None  # last complete pass
    building: GroupIndex | None = None  # the pass under way, filled as names arrive
    refreshing: trio.Event | None = None
    failed_at: float = -math.inf
    error: BaseException | None = None


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
    ) -> None:
        self.client = client
        self.enabled = enabled
        self.ttl = ttl
        self.first_wait = first_wait
        self.nursery = nursery
        self._clock = clock
        self._groups: dict[str, _GroupState] = {}
        self._known: OrderedDict[str, None] = OrderedDict()  # file IDs seen on this host
        self._known_by_dir: dict[tuple[str, DirKey], set[str]] = {}
        self._removed: dict[str, float] = {}  # deleted here -> when; hidden until a later pass

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
        self._removed[key] = self._clock()
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
        names = set(self._known_by_dir.get((group, dkey), ()))
        index = await self.index(group) if self.enabled else None
        if index is not None:
            names.update(index.names.get(dkey, ()))
        if self._removed:
            prefix = f"{group}/M{store_path:02X}/{hi:02X}/{lo:02X}/"
            names = {n for n in names if prefix + n not in self._removed}
        return sorted(names)

    def has_file(self, file_id: FileId) -> bool:
        """True when the last complete pass saw `file_id` (or this host created it)."""
        key = str(file_id)
        if key in self._removed:
            return False
        if key in self._known:
            return True
        state = self._groups.get(file_id.group)
        if state is None or state.index is None:
            return False
        return file_id.name in state.index.names.get(_dir_of(file_id)[1], ())

    async def index(self, group: str) -> GroupIndex | None:
        """The group's index, refreshed in the background when stale; None if listing is
        off. The first call per group waits up to `first_wait` for the first pass."""
        if not self.enabled:
            return None
        state = self._groups.setdefault(group, _GroupState())
        now = self._clock()
        stale = state.index is None or now - state.index.built_at > self.ttl
        if stale and state.refreshing is None and now - state.failed_at > RETRY_AFTER_FAILURE:
            self._start_refresh(group, state)
        if state.index is not None:
            return state.index
        if state.refreshing is not None:
            with trio.move_on_after(self.first_wait):
                await state.refreshing.wait()
        if state.index is not None:
            return state.index
        if state.building is not None and state.building.files:
            log.info("listing of %s still loading; showing the %d files found so far",
                     group, state.building.files)  # fmt: skip
            return state.building
        if state.error is not None:
            raise state.error
        return state.building

    async def refresh(self, groups: Iterable[str]) -> dict[str, int | str]:
        """List `groups` again now (not waiting for `ttl`) and wait for the passes:
        files found per group, or the error that stopped its pass."""
        if not self.enabled:
            return {}
        waits: dict[str, tuple[_GroupState, trio.Event]] = {}
        for group in groups:
            state = self._groups.setdefault(group, _GroupState())
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
                out[group] = state.index.files if state.index is not None else 0
        return out

    def _start_refresh(self, group: str, state: _GroupState) -> None:
        state.refreshing = trio.Event()
        if self.nursery is not None:
            self.nursery.start_soon(self._refresh, group, state, name=f"list {group}")
        else:  # no background nursery (tests): the caller's wait runs it
            raise RuntimeError("Listing needs a nursery to refresh in")

    async def _refresh(self, group: str, state: _GroupState) -> None:
        building = GroupIndex()
        state.building = building
        started = self._clock()
        sets: dict[DirKey, set[str]] = {}
        try:
            async with self.client.list_files(group) as files:
                async for fid in files:
                    dkey = (fid.store_path_index, *fid.subdirs)
                    bucket = sets.get(dkey)
                    if bucket is None:
                        bucket = sets[dkey] = set()
                        building.names[dkey] = []
                    if fid.name not in bucket:
                        bucket.add(fid.name)
                        building.names[dkey].append(fid.name)
                        building.files += 1
        except FdfsError as exc:
            state.failed_at = self._clock()
            state.error = exc
            log.warning("listing group %s failed after %d files: %s", group, building.files, exc)
        except Exception as exc:
            state.failed_at = self._clock()
            state.error = exc
            log.exception("listing group %s failed", group)
        else:
            for names in building.names.values():
                names.sort()
            building.built_at = started
            building.complete = True
            state.index = building
            state.error = None
            # A pass that started after a deletion here no longer lists that file.
            self._removed = {
                k: t for k, t in self._removed.items()
                if t >= started or not k.startswith(group + "/")
            }  # fmt: skip
            log.debug(
                "listed group %s: %d files in %.2fs", group, building.files,
                self._clock() - started,
            )  # fmt: skip
        finally:
            state.building = None
            if state.refreshing is not None:
                state.refreshing.set()
            state.refreshing = None


def _dir_of(file_id: FileId) -> tuple[str, DirKey]:
    hi, lo = file_id.subdirs
    return file_id.group, (file_id.store_path_index, hi, lo)
