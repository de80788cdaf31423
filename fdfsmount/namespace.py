"""The inode table: which paths exist, their stable inode numbers, and lookup counts.

# Strategy
The tree is fixed by FastDFS itself: ``/<group>/M<xx>/<HH>/<HH>/<name>``. A
directory child is therefore decided by its name alone, plus the group's stats
(how many store paths and subdirectories it has). A file name must be one a
storage server could have generated (`check_generated`); anything else is
refused before any I/O. Whether the file exists is the attribute layer's
question (`attrs.FileStats`).

Inode numbers are a hash of the path (of the file ID, for files), so they
stay the same across `forget`, remounts and hosts; a hash collision between
two live nodes falls back to a counter in a separate range. Nodes live in the
table while the kernel holds a lookup reference, so `forget` keeps the table
as small as the kernel's own inode cache.

Aliases (names the write side creates in ``/<group>/``) resolve to the node of
their file ID, so an alias and its file-ID path share one inode.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import pyfuse3
import trio

from . import inodespill
from .proto import FileId, FileIdInfo, FileType, GroupStat, decode_file_id, parse_file_id
from .proto.errors import FdfsError, InvalidFileId
from .proto.fileid import check_generated

log = logging.getLogger(__name__)

ROOT_INODE: int = pyfuse3.ROOT_INODE
_HASH_BITS = 62
_FALLBACK_BASE = 1 << _HASH_BITS  # counter range for colliding paths; still < 2**63
_GROUP_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
_STORE_PATH_RE = re.compile(r"M[0-9A-F]{2}")
_SUBDIR_RE = re.compile(r"[0-9A-F]{2}")

GROUPS_TTL = 30.0  # how long the group list and stats are trusted
GROUPS_MIN_REFRESH = 2.0  # an unknown group name refreshes the list at most this often


class NotFound(Exception):
    """No such entry (maps to ENOENT); raised before any server call."""


class Kind(enum.IntEnum):
    ROOT = 0
    GROUP = 1
    STORE_PATH = 2  # /<group>/Mxx
    SUBDIR1 = 3  # /<group>/Mxx/HH
    SUBDIR2 = 4  # /<group>/Mxx/HH/HH
    FILE = 5


@dataclass(slots=True, eq=False)
class Node:
    """One entry of the tree; directories carry their position, files their ID."""

    kind: Kind
    group: str = ""
    store_path: int = -1
    hi: int = -1
    lo: int = -1
    file_id: FileId | None = None
    id_info: FileIdInfo | None = None  # what the file ID itself says
    parent: int = ROOT_INODE
    inode: int = 0
    lookups: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind is not Kind.FILE

    @property
    def key(self) -> str:
        """What the inode number is derived from: the path (file ID for files)."""
        if self.file_id is not None:
            return str(self.file_id)
        parts = [self.group]
        if self.kind >= Kind.STORE_PATH:
            parts.append(f"M{self.store_path:02X}")
        if self.kind >= Kind.SUBDIR1:
            parts.append(f"{self.hi:02X}")
        if self.kind >= Kind.SUBDIR2:
            parts.append(f"{self.lo:02X}")
        return "/" + "/".join(parts) if self.kind is not Kind.ROOT else "/"

    @property
    def file_type(self) -> FileType:
        assert self.id_info is not None
        return self.id_info.file_type

    def __repr__(self) -> str:
        return f"<{self.kind.name} {self.key} ino={self.inode} n={self.lookups}>"


def hashed_inode(key: str) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> (64 - _HASH_BITS)) + 2  # never 0 or ROOT


def subdir_name(index: int) -> str:
    return f"{index:02X}"


def store_path_name(index: int) -> str:
    return f"M{index:02X}"


# ---------------------------------------------------------------- groups


GroupLister = Callable[[], Awaitable[list[GroupStat]]]


class GroupDirectory:
    """The groups the tracker knows and their stats, cached for `GROUPS_TTL`.

    One refresh runs at a time; callers during a refresh wait for it. Once a
    list is known, an old one is served while a refresh runs in `nursery`, so
    a lookup never waits for the tracker and then for a storage in turn; only a
    name missing from the list waits (at most every `GROUPS_MIN_REFRESH`).
    When the tracker cannot be reached, the last known list keeps being served.
    """

    def __init__(
        self,
        list_groups: GroupLister,
        *,
        ttl: float = GROUPS_TTL,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self._list_groups = list_groups
        self._ttl = ttl
        self._nursery = nursery
        self._groups: dict[str, GroupStat] | None = None
        self._fetched_at = -math.inf
        self._refreshing: trio.Event | None = None
        self._error: BaseException | None = None

    def seed(self, groups: Iterable[GroupStat]) -> None:
        """Install a list fetched elsewhere (the mount's reachability check)."""
        self._groups = {g.group_name: g for g in groups}
        self._fetched_at = trio.current_time()

    async def all(self, *, max_age: float | None = None) -> dict[str, GroupStat]:
        age = trio.current_time() - self._fetched_at
        if self._groups is None or age > (self._ttl if max_age is None else max_age):
            if self._groups is not None and max_age is None and self._nursery is not None:
                if self._refreshing is None:
                    self._nursery.start_soon(self._background_refresh, name="list groups")
                return self._groups
            await self._refresh()
        assert self._groups is not None
        return self._groups

    async def _background_refresh(self) -> None:
        with contextlib.suppress(FdfsError):  # logged by _refresh; the old list stays
            await self._refresh()

    async def get(self, name: str) -> GroupStat | None:
        groups = await self.all()
        if name not in groups:
            groups = await self.all(max_age=GROUPS_MIN_REFRESH)
        return groups.get(name)

    def cached(self, name: str) -> GroupStat | None:
        return self._groups.get(name) if self._groups else None

    async def _refresh(self) -> None:
        while self._refreshing is not None:
            await self._refreshing.wait()
            if self._groups is not None:
                return
            if self._error is not None:
                raise self._error
            # The other refresh was cancelled: run our own.
        self._refreshing = trio.Event()
        try:
            groups = await self._list_groups()
        except FdfsError as exc:
            self._error = exc
            if self._groups is None:
                raise
            # Serve the old list for a while rather than failing every lookup.
            log.warning("list groups failed, serving the cached list: %s", exc)
            self._fetched_at = trio.current_time() - self._ttl + GROUPS_MIN_REFRESH
        else:
            self._groups = {g.group_name: g for g in groups}
            self._fetched_at = trio.current_time()
            self._error = None
        finally:
            self._refreshing.set()
            self._refreshing = None


# ---------------------------------------------------------------- the table


@dataclass(slots=True)
class _Aliases:
    by_name: dict[tuple[str, str], FileId] = field(default_factory=dict)

    def names_in(self, group: str) -> list[str]:
        return sorted(name for (g, name) in self.by_name if g == group)


class InodeTable:
    """Inode numbers <-> nodes, with the kernel's lookup counts."""

    def __init__(self, groups: GroupDirectory) -> None:
        self.groups = groups
        root = Node(Kind.ROOT, inode=ROOT_INODE, parent=ROOT_INODE, lookups=1)
        self._by_inode: dict[int, Node] = {ROOT_INODE: root}
        self._by_key: dict[str, int] = {"/": ROOT_INODE}
        self._next_fallback = _FALLBACK_BASE
        self._aliases = _Aliases()
        self._spilled = inodespill.SpilledFiles()
        self._resident_files = 0

    @property
    def root(self) -> Node:
        return self._by_inode[ROOT_INODE]

    def __len__(self) -> int:
        return len(self._by_inode) + len(self._spilled)

    @property
    def resident(self) -> int:
        """Nodes held as objects in memory (the rest of `len` is on disk)."""
        return len(self._by_inode)

    def get(self, inode: int) -> Node:
        node = self._by_inode.get(inode)
        if node is None:
            node = self._unspill(self._spilled.take(inode))
            if node is None:
                raise NotFound(f"inode {inode} unknown")
        return node

    def find(self, key: str) -> Node | None:
        inode = self._by_key.get(key)
        if inode is not None:
            return self._by_inode[inode]
        if len(self._spilled) and not key.startswith("/"):  # file IDs have no leading /
            return self._unspill(self._spilled.take_key(key, hashed_inode(key)))
        return None

    def inode_for(self, node: Node) -> int:
        """The inode number `node` has or would get, without remembering it."""
        if node.inode:
            return node.inode
        key = node.key
        live = self.find(key)
        if live is not None:
            node.inode = live.inode
            return live.inode
        inode = hashed_inode(key)
        if inode in self._by_inode or self._spilled.contains(inode):
            inode = self._next_fallback  # a different live path hashed the same
            self._next_fallback += 1
        node.inode = inode
        return inode

    def remember(self, node: Node) -> Node:
        """Count one kernel lookup of `node`; returns the live node (maybe an older one)."""
        live = self.find(node.key)
        if live is None:
            live = node
            live.inode = self.inode_for(node)
            other = self._by_inode.get(live.inode)
            if (other is not None and other.key != live.key) or self._spilled.contains(live.inode):
                live.inode = self._next_fallback  # collided meanwhile
                self._next_fallback += 1
            self._add(live)
        live.lookups += 1
        return live

    def forget(self, inode: int, count: int) -> None:
        node = self._by_inode.get(inode)
        if node is None:
            self._spilled.forget(inode, count)
            return
        if node.kind is Kind.ROOT:
            return
        node.lookups -= count
        if node.lookups <= 0:
            del self._by_inode[inode]
            self._by_key.pop(node.key, None)
            if node.kind is Kind.FILE:
                self._resident_files -= 1

    def close(self) -> None:
        """Drop the nodes kept on disk (at unmount)."""
        self._spilled.close()

    def _add(self, node: Node) -> None:
        self._by_inode[node.inode] = node
        self._by_key[node.key] = node.inode
        if node.kind is Kind.FILE:
            self._resident_files += 1
            if self._resident_files > inodespill.RESIDENT_FILES:
                self._spill()

    def _spill(self) -> None:
        """Move the oldest file nodes to disk (see `inodespill`)."""
        rows: list[tuple[int, str, int, int]] = []
        for node in self._by_inode.values():
            # Only nodes numbered by their hash: `find` looks them up by it.
            if node.kind is Kind.FILE and node.inode == hashed_inode(node.key):
                rows.append((node.inode, node.key, node.parent, node.lookups))
                if len(rows) >= inodespill.SPILL_BATCH:
                    break
        for inode, key, _parent, _lookups in rows:
            del self._by_inode[inode]
            self._by_key.pop(key, None)
        self._resident_files -= len(rows)
        self._spilled.put_many(rows)
        log.debug("moved %d file inodes to disk (%d there)", len(rows), len(self._spilled))

    def _unspill(self, row: tuple[int, str, int, int] | None) -> Node | None:
        if row is None:
            return None
        inode, key, parent, lookups = row
        file_id = parse_file_id(key)
        hi, lo = file_id.subdirs
        node = Node(
            Kind.FILE, file_id.group, file_id.store_path_index, hi, lo, file_id,
            decode_file_id(file_id), parent=parent, inode=inode, lookups=lookups,
        )  # fmt: skip
        self._add(node)
        return node

    # -- aliases: the write side's seam ---------------------------------

    def add_alias(self, group: str, name: str, file_id: FileId) -> None:
        self._aliases.by_name[(group, name)] = file_id

    def remove_alias(self, group: str, name: str) -> FileId | None:
        return self._aliases.by_name.pop((group, name), None)

    def alias_target(self, group: str, name: str) -> FileId | None:
        return self._aliases.by_name.get((group, name))

    def aliases_of(self, file_id: FileId) -> list[str]:
        return [name for (g, name), fid in self._aliases.by_name.items() if fid == file_id]

    def alias_names(self, group: str) -> list[str]:
        return self._aliases.names_in(group)

    # -- resolving names -------------------------------------------------

    def parent_of(self, node: Node) -> Node:
        return self._by_inode.get(node.parent, self.root)

    async def child(self, parent: Node, name: str) -> Node:
        """The node `name` names inside `parent`, or `NotFound`; never asks a storage."""
        kind = parent.kind
        if kind is Kind.ROOT:
            if not _GROUP_RE.fullmatch(name) or await self.groups.get(name) is None:
                raise NotFound(name)
            return Node(Kind.GROUP, group=name, parent=parent.inode)
        if kind is Kind.FILE:
            raise NotFound(name)  # the kernel answers ENOTDIR before asking
        stat = await self.groups.get(parent.group)
        if stat is None:
            raise NotFound(parent.group)
        if kind is Kind.GROUP:
            if _STORE_PATH_RE.fullmatch(name):
                index = int(name[1:], 16)
                if index < max(1, stat.store_path_count):
                    return Node(Kind.STORE_PATH, parent.group, index, parent=parent.inode)
            alias = self._aliases.by_name.get((parent.group, name))
            if alias is not None:
                return self.file_node(alias, parent=parent.inode)
            raise NotFound(name)
        if kind in (Kind.STORE_PATH, Kind.SUBDIR1):
            if not _SUBDIR_RE.fullmatch(name) or int(name, 16) >= subdir_count(stat):
                raise NotFound(name)
            if kind is Kind.STORE_PATH:
                return Node(
                    Kind.SUBDIR1, parent.group, parent.store_path, int(name, 16),
                    parent=parent.inode,
                )  # fmt: skip
            return Node(
                Kind.SUBDIR2, parent.group, parent.store_path, parent.hi, int(name, 16),
                parent=parent.inode,
            )  # fmt: skip
        # SUBDIR2: the name must complete a well-formed file ID.
        text = f"{parent.group}/M{parent.store_path:02X}/{parent.hi:02X}/{parent.lo:02X}/{name}"
        try:
            return self.file_node(check_generated(text), parent=parent.inode)
        except InvalidFileId as exc:
            log.debug("%s", exc)
            raise NotFound(name) from None

    def file_node(self, file_id: FileId, *, parent: int = 0) -> Node:
        """A node for `file_id` (live if the kernel knows it); `InvalidFileId` if the
        name's embedded fields do not decode."""
        live = self.find(str(file_id))
        if live is not None:
            return live
        sp = file_id.store_path_index
        hi, lo = file_id.subdirs
        if not parent:
            parent_key = f"/{file_id.group}/M{sp:02X}/{hi:02X}/{lo:02X}"
            parent = self._by_key.get(parent_key, 0) or hashed_inode(parent_key)
        return Node(
            Kind.FILE, file_id.group, sp, hi, lo, file_id, decode_file_id(file_id), parent=parent
        )

    async def child_names(self, node: Node) -> list[str]:
        """Names of the fixed directory levels (not files: see `listing`)."""
        if node.kind is Kind.ROOT:
            return sorted(await self.groups.all())
        stat = await self.groups.get(node.group)
        if stat is None:
            raise NotFound(node.group)
        if node.kind is Kind.GROUP:
            paths = [store_path_name(i) for i in range(max(1, stat.store_path_count))]
            return paths + [n for n in self.alias_names(node.group) if n not in paths]
        if node.kind in (Kind.STORE_PATH, Kind.SUBDIR1):
            return [subdir_name(i) for i in range(subdir_count(stat))]
        raise NotFound(node.key)

    def child_template(self, parent: Node, name: str) -> Node:
        """The child node of a fixed directory level for a name `child_names` gave."""
        if parent.kind is Kind.ROOT:
            return Node(Kind.GROUP, group=name, parent=parent.inode)
        if parent.kind is Kind.GROUP:
            alias = self._aliases.by_name.get((parent.group, name))
            if alias is not None:
                return self.file_node(alias, parent=parent.inode)
            return Node(Kind.STORE_PATH, parent.group, int(name[1:], 16), parent=parent.inode)
        if parent.kind is Kind.STORE_PATH:
            return Node(
                Kind.SUBDIR1, parent.group, parent.store_path, int(name, 16), parent=parent.inode
            )
        if parent.kind is Kind.SUBDIR1:
            return Node(
                Kind.SUBDIR2, parent.group, parent.store_path, parent.hi, int(name, 16),
                parent=parent.inode,
            )  # fmt: skip
        raise NotFound(name)


def subdir_count(stat: GroupStat) -> int:
    count = stat.subdir_count_per_path
    return count if 0 < count <= 256 else 256


def parse_path(path: str) -> list[str]:
    """``/group1/M00/00/00/name`` -> its components (for tools and tests)."""
    return [part for part in path.split("/") if part]
