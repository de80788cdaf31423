"""The builtin tracker's view of the cluster and its routing rules (no I/O).

Storages join and heartbeat (see `harness.heartbeat`); a storage is OFFLINE
once heartbeats stop for ``offline_after`` seconds or its tracker link closes.

Catch-up before ACTIVE
----------------------
A storage that (re)joins is SYNCING, not ACTIVE, until it holds everything its
ACTIVE peers logged: for every such peer, its replication mark of the peer's
binlog (generation, offset) reaches the end of the last change the peer
reported (and the same for an OFFLINE peer that took writes on its files), and
the peer no longer takes writes on the joining storage's files ("foreign
writes", which a replica takes while the source is OFFLINE; the peer reports
the sources it still takes them for). Only then does the storage take writes
again, so it never builds on a file that lacks a change acknowledged elsewhere
(upstream's WAIT_SYNC/SYNCING, applied to every rejoin). Storages report their
binlog size before acknowledging a change of an appender file (see
`harness.heartbeat`), so the tracker knows what a replica must hold.

Routing reads (QUERY_FETCH_ONE/ALL) and updates (QUERY_UPDATE)
--------------------------------------------------------------
The file ID names the source storage (server id or IPv4) and the create time
``t``. Each storage reports, per peer, ``synced_until``: it holds every file
that peer created before that time (see `harness.replication`). Then:

* normal files: the ACTIVE storages that are the source or whose progress
  for the source is ``> t`` (with the source gone, also those that applied
  everything it reported: such a replica has the file or answers ENOENT);
* appender and slave files, which change after ``t`` (or whose name carries
  the master's time): the source when ACTIVE, as upstream does; otherwise
  the ACTIVE replicas whose mark of the source's binlog reaches the end the
  source last reported. A replica that misses a change the source
  acknowledged is never chosen: no candidate rather than an old version;
* QUERY_UPDATE: the source when ACTIVE, EAGAIN while it is SYNCING, else the
  first replica chosen as above (which takes "foreign writes" only while it
  too sees the source OFFLINE).

No candidate: ENOENT. FETCH_ONE rotates over the candidates.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fdfsmount.proto.constants import Cmd, RwMode, StorageStatus
from fdfsmount.proto.errors import InvalidFileId
from fdfsmount.proto.fileid import FileType
from fdfsmount.proto.message import ServerAddr
from fdfsmount.proto.records import GroupStat, StorageStat

from .peerproto import PeerAddr
from .store import decoded_name

log = logging.getLogger(__name__)

_ACTIVE = StorageStatus.ACTIVE
_QUERY_UPDATE = Cmd.QUERY_UPDATE
_QUERY_FETCH_ALL = Cmd.QUERY_FETCH_ALL
#: Files that change only as a whole (a replica has them once it synced past their creation).
_REPLICATED_WHOLE = (FileType.NORMAL, FileType.TRUNK)  # a tuple: members compare by identity

RESERVED_RATIO = 0.01


class TrackerError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class StorageNode:
    storage_id: str
    group: str
    ip: str
    port: int
    status: int = StorageStatus.ONLINE
    join_time: int = 0
    up_time: int = 0
    version: str = "6.16.1"
    store_path_count: int = 1
    subdir_count: int = 256
    total_mb: int = 0
    free_mb: int = 0
    current_write_path: int = 0
    connections: tuple[int, int, int] = (0, 0, 0)
    counters: dict[str, int] = field(default_factory=dict)
    synced: dict[str, int] = field(default_factory=dict)
    last_source_ts: int = 0
    #: The storage's own binlog: (generation, size), as last reported.
    binlog: tuple[str, int] = ("", 0)
    #: How far it has applied each peer's binlog: peer id -> (generation, offset).
    synced_offsets: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Sources whose files it currently takes writes for (their source being OFFLINE).
    foreign_writes: frozenset[str] = frozenset()
    #: Sources it ever reported in ``foreign_writes`` that have not caught up with it since.
    owes: set[str] = field(default_factory=set)
    #: Ownership epoch: the wall-clock time (microseconds) of its last change to
    #: or from ACTIVE. Changes to its files carry the epoch they were made in.
    epoch: int = 0
    last_beat: float = 0.0  # monotonic
    last_beat_wall: int = 0
    link: object | None = None
    #: ``ip:port`` as replies name it: set with them by `at`.
    server_addr: ServerAddr = field(init=False)

    def __post_init__(self) -> None:
        self.at(self.ip, self.port)

    def at(self, ip: str, port: int) -> None:
        """Where the storage listens (a rejoin may move it)."""
        self.ip, self.port = ip, port
        self.server_addr = ServerAddr(ip, port)

    @property
    def active(self) -> bool:
        return self.status == _ACTIVE

    def holds_log_of(self, peer: StorageNode) -> bool:
        """This storage has applied everything ``peer`` reported to have logged."""
        generation, size = peer.binlog
        if size == 0:
            return True
        mine = self.synced_offsets.get(peer.storage_id)
        return mine is not None and mine[0] == generation and mine[1] >= size

    def addr(self) -> PeerAddr:
        return PeerAddr(self.storage_id, self.ip, self.port, int(self.status))

    def stat(self) -> StorageStat:
        counters = dict(self.counters)
        counters["last_heart_beat_time"] = self.last_beat_wall
        counters["last_synced_timestamp"] = min(self.synced.values(), default=0)
        return StorageStat(
            status=int(self.status), storage_id=self.storage_id, ip_addr=self.ip,
            rw_mode=RwMode.READ_WRITE, src_id="", version=self.version,
            join_time=self.join_time, up_time=self.up_time, total_mb=self.total_mb,
            free_mb=self.free_mb, reserved_mb=int(self.total_mb * RESERVED_RATIO),
            upload_priority=10, store_path_count=self.store_path_count,
            subdir_count_per_path=self.subdir_count, current_write_path=self.current_write_path,
            storage_port=self.port, connections_alloc=self.connections[0],
            connections_current=self.connections[1], connections_max=self.connections[2],
            counters=counters,
        )  # fmt: skip


@dataclass
class Group:
    name: str
    storages: dict[str, StorageNode] = field(default_factory=dict)
    write_cursor: int = 0
    read_cursor: int = 0

    def add(self, node: StorageNode) -> None:
        """Take a storage in, keeping `storages` in storage ID order."""
        self.storages[node.storage_id] = node
        self.storages = dict(sorted(self.storages.items()))

    def sorted_storages(self) -> list[StorageNode]:
        return list(self.storages.values())  # kept in order by `add`

    def active(self) -> list[StorageNode]:
        return [s for s in self.storages.values() if s.status == _ACTIVE]

    def space(self, active: list[StorageNode] | None = None) -> tuple[int, int]:
        """(total MB, free MB) of the active storage with the least free space."""
        pool = (self.active() if active is None else active) or self.sorted_storages()
        if not pool:
            return 0, 0
        fullest = min(pool, key=lambda s: s.free_mb)
        return fullest.total_mb, fullest.free_mb

    def has_space(self, active: list[StorageNode] | None = None) -> bool:
        return _has_room(*self.space(active))

    def stat(self) -> GroupStat:
        total, free = self.space()
        nodes = self.sorted_storages()
        ports = {s.port for s in nodes}
        active = len(self.active())
        return GroupStat(
            group_name=self.name, total_mb=total, free_mb=free,
            reserved_mb=int(total * RESERVED_RATIO), trunk_free_mb=0, storage_count=len(nodes),
            storage_port=ports.pop() if len(ports) == 1 else -1, readable_count=active,
            writable_count=active, current_write_server=self.write_cursor % max(active, 1),
            store_path_count=nodes[0].store_path_count if nodes else 1,
            subdir_count_per_path=nodes[0].subdir_count if nodes else 256,
            current_trunk_file_id=-1,
        )  # fmt: skip

    def find_source(self, source_id: int | None, source_ip: str | None) -> StorageNode | None:
        if source_id is not None:
            return self.storages.get(str(source_id))
        matches = [s for s in self.sorted_storages() if s.ip == source_ip]
        for s in matches:
            if s.storage_id == source_ip:
                return s
        return matches[0] if matches else None


class Registry:
    def __init__(self, store_lookup: str = "round_robin", offline_after: float = 3.0) -> None:
        if store_lookup not in ("round_robin", "load_balance"):
            raise ValueError(f"unknown store lookup {store_lookup!r}")
        self.groups: dict[str, Group] = {}
        self.store_lookup = store_lookup
        self.offline_after = offline_after
        self._group_cursor = 0
        #: Counts the changes a read's routing can depend on (joins, status changes,
        #: beats that change what a storage holds): an answer remembered at one count
        #: holds while the count stays.
        self.version = 0

    def sorted_groups(self) -> list[Group]:
        return list(self.groups.values())  # kept in name order by `join`

    def group(self, name: str) -> Group:
        group = self.groups.get(name)
        if group is None:
            raise TrackerError(errno.ENOENT, f"no group {name!r}")
        return group

    # ------------------------------------------------------------ storages

    def join(self, info: dict[str, Any], link: object) -> StorageNode:
        self.version += 1
        try:
            group_name = str(info["group"])
            storage_id = str(info["id"])
            ip, port = str(info["ip"]), int(info["port"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TrackerError(errno.EINVAL, f"bad join message: {exc}") from exc
        if not group_name or not storage_id or not ip.startswith("127.") or not 0 < port < 65536:
            raise TrackerError(errno.EINVAL, f"bad join: {group_name}/{storage_id} {ip}:{port}")
        group = self.groups.get(group_name)
        if group is None:
            group = self.groups[group_name] = Group(group_name)
            self.groups = dict(sorted(self.groups.items()))
        for other in self.groups.values():
            if other is not group and storage_id in other.storages:
                raise TrackerError(errno.EEXIST, f"storage {storage_id} belongs to {other.name}")
        node = group.storages.get(storage_id)
        if node is None:
            node = StorageNode(storage_id, group_name, ip, port, join_time=int(time.time()))
            group.add(node)
            log.info("storage %s joined %s at %s:%d", storage_id, group_name, ip, port)
        elif (node.ip, node.port) != (ip, port) or node.status != StorageStatus.ACTIVE:
            log.info("storage %s of %s rejoined at %s:%d", storage_id, group_name, ip, port)
        node.at(ip, port)
        node.link = link
        node.up_time = _as_int(info.get("up_time"), node.up_time)
        node.version = str(info.get("version", node.version))[:8]
        node.store_path_count = max(1, _as_int(info.get("store_path_count"), 1))
        node.subdir_count = max(1, _as_int(info.get("subdir_count"), 256))
        if node.status != StorageStatus.ACTIVE:
            node.status = StorageStatus.ONLINE
        return node

    def beat(self, node: StorageNode, info: dict[str, Any]) -> None:
        routing = (node.synced, node.binlog, node.synced_offsets)
        if node.active and time.monotonic() - node.last_beat > self.offline_after:
            # It was frozen: whatever it did meanwhile, peers may have taken its writes.
            self._set_offline(node, f"no heartbeat for {self.offline_after:g} s")
        node.total_mb = _as_int(info.get("total_mb"), node.total_mb)
        node.free_mb = _as_int(info.get("free_mb"), node.free_mb)
        counters = info.get("counters")
        if isinstance(counters, dict):
            node.counters = {str(k): _as_int(v, 0) for k, v in counters.items()}
        synced = info.get("synced")
        if isinstance(synced, dict):
            node.synced = {str(k): _as_int(v, 0) for k, v in synced.items()}
        conns = info.get("connections")
        if isinstance(conns, list) and len(conns) == 3:
            node.connections = (_as_int(conns[0], 0), _as_int(conns[1], 0), _as_int(conns[2], 0))
        node.last_source_ts = _as_int(info.get("last_source_ts"), node.last_source_ts)
        binlog = info.get("binlog")
        if isinstance(binlog, list) and len(binlog) == 2:
            node.binlog = (str(binlog[0]), _as_int(binlog[1], 0))
        offsets = info.get("synced_offsets")
        if isinstance(offsets, dict):
            node.synced_offsets = {
                str(k): (str(v[0]), _as_int(v[1], 0))
                for k, v in offsets.items()
                if isinstance(v, list) and len(v) == 2
            }
        foreign = info.get("foreign_writes")
        if isinstance(foreign, list):
            node.foreign_writes = frozenset(str(x) for x in foreign)
            node.owes |= node.foreign_writes
        node.last_beat = time.monotonic()
        node.last_beat_wall = int(time.time())
        if (node.synced, node.binlog, node.synced_offsets) != routing:
            self.version += 1  # what it holds of which source's files changed
        self._promote(node)
        if node.active:
            # Peers waiting for this one to stop foreign writes may be done now.
            for peer in self.groups[node.group].storages.values():
                if peer is not node and peer.status == StorageStatus.SYNCING:
                    self._promote(peer)

    def _promote(self, node: StorageNode) -> None:
        """ACTIVE once caught up with every ACTIVE peer, else SYNCING."""
        if node.active or node.last_beat == 0.0:
            return
        lagging = self.catch_up_pending(node)
        if not lagging:
            log.info("storage %s of %s is ACTIVE", node.storage_id, node.group)
            node.status = StorageStatus.ACTIVE
            self.version += 1
            node.epoch = _new_epoch(node.epoch)
        elif node.status != StorageStatus.SYNCING:
            log.info(
                "storage %s of %s is SYNCING: catching up with %s",
                node.storage_id, node.group, ", ".join(lagging),
            )  # fmt: skip
            node.status = StorageStatus.SYNCING
            self.version += 1

    def catch_up_pending(self, node: StorageNode) -> list[str]:
        """The peers ``node`` must still catch up with (or wait for to stop).

        An ACTIVE peer counts; so does one that is not ACTIVE but took writes
        on ``node``'s files which ``node`` has not pulled yet: taking writes
        before it is back would build on files that lack them (nothing
        acknowledged is given up for availability).
        """
        lagging = []
        for peer in self.groups[node.group].sorted_storages():
            if peer is node:
                continue
            holds = node.holds_log_of(peer)
            # A peer that is not ACTIVE takes no writes (its lease ran out).
            if holds and (not peer.active or node.storage_id not in peer.foreign_writes):
                peer.owes.discard(node.storage_id)
            if peer.active:
                if node.storage_id in peer.foreign_writes or not holds:
                    lagging.append(peer.storage_id)
            elif node.storage_id in peer.owes:
                lagging.append(f"{peer.storage_id} (not ACTIVE, took writes for it)")
        return lagging

    def link_closed(self, link: object) -> None:
        for group in self.groups.values():
            for node in group.storages.values():
                if node.link is link:
                    node.link = None
                    self._set_offline(node, "its tracker link closed")

    def expire(self) -> None:
        now = time.monotonic()
        for group in self.groups.values():
            for node in group.storages.values():
                live = node.status in (StorageStatus.ACTIVE, StorageStatus.SYNCING)
                if live and now - node.last_beat > self.offline_after:
                    self._set_offline(node, f"no heartbeat for {self.offline_after:g} s")

    def _set_offline(self, node: StorageNode, why: str) -> None:
        if node.status != StorageStatus.OFFLINE:
            self.version += 1
            log.info("storage %s of %s is OFFLINE: %s", node.storage_id, node.group, why)
            if node.status == StorageStatus.ACTIVE:
                node.epoch = _new_epoch(node.epoch)
            node.status = StorageStatus.OFFLINE

    def peers_of(self, node: StorageNode) -> list[PeerAddr]:
        return [s.addr() for s in self.groups[node.group].sorted_storages()]

    def ownership_of(self, node: StorageNode) -> dict[str, list[str | int]]:
        """Per storage of ``node``'s group: [epoch, binlog generation, binlog end reported].

        A storage stamps its changes with the epoch of the file's source; a
        replica takes a source's writes only once it applied that binlog end.
        """
        return {
            s.storage_id: [s.epoch, s.binlog[0], s.binlog[1]]
            for s in self.groups[node.group].sorted_storages()
        }

    # ------------------------------------------------------------ uploads

    def query_store(
        self, group_name: str | None, all_servers: bool
    ) -> tuple[Group, list[StorageNode], int]:
        if not self.groups:
            raise TrackerError(errno.ENOENT, "no groups")
        if group_name is None:
            group, active = self._pick_group()
        else:
            group = self.group(group_name)
            active = group.active()
            if not active:
                raise TrackerError(errno.ENOENT, f"group {group.name} has no active storage")
            if not group.has_space(active):
                raise TrackerError(errno.ENOSPC, f"group {group.name} is out of space")
        if all_servers:
            servers = active
            first = active[0]
        else:
            first = active[group.write_cursor % len(active)]
            group.write_cursor = (group.write_cursor + 1) % len(active)
            servers = [first]
        path_index = first.current_write_path % first.store_path_count
        first.current_write_path = (path_index + 1) % first.store_path_count
        return group, servers, path_index

    def _pick_group(self) -> tuple[Group, list[StorageNode]]:
        """The group an upload without a group goes to, and its active storages.

        Round robin: the first group from the cursor on with an active storage
        and room, in one pass (this runs for every upload). Load balance: the
        one with the most free space.
        """
        groups = self.sorted_groups()
        count = len(groups)
        balance = self.store_lookup == "load_balance"
        best: tuple[Group, list[StorageNode]] | None = None
        best_free = -1
        some_active = False
        for step in range(count):
            index = (self._group_cursor + step) % count
            group = groups[index]
            active = group.active()
            if not active:
                continue
            some_active = True
            total, free = group.space(active)
            if not _has_room(total, free):
                continue
            if not balance:
                self._group_cursor = (index + 1) % count
                return group, active
            if free > best_free:
                best, best_free = (group, active), free
        if best is not None:
            return best
        if not some_active:
            raise TrackerError(errno.ENOENT, "no group has an active storage")
        raise TrackerError(errno.ENOSPC, "every group is out of space")

    # ------------------------------------------------------------ downloads

    def query_fetch(
        self, cmd: int, group_name: str, remote_name: str
    ) -> tuple[Group, list[StorageNode], bool]:
        """The group, the storages to read from, and whether that answer lasts
        until `version` changes (it does not when one of several holders was
        picked in turn)."""
        group = self.group(group_name)
        try:
            info = decoded_name(group_name, remote_name)
        except (InvalidFileId, ValueError) as exc:
            raise TrackerError(errno.ENOENT, f"undecodable file name {remote_name!r}") from exc
        source = group.find_source(info.source_id, info.source_ip)
        source_key = source.storage_id if source else info.source
        created = info.create_time
        # Plain loops: this runs for every read a client routes.
        holders: list[StorageNode] = []
        if info.file_type in _REPLICATED_WHOLE:
            # With the source gone, a replica that applied all it reported is the best bet.
            gone = source if source is not None and source.status != _ACTIVE else None
            for n in group.storages.values():
                if n.status == _ACTIVE and (
                    n is source
                    or n.synced.get(source_key, 0) > created
                    or (gone is not None and n.holds_log_of(gone))
                ):
                    holders.append(n)
        elif source is not None and source.status == _ACTIVE:
            holders.append(source)
        else:
            for n in group.storages.values():
                if n.status == _ACTIVE and _caught_up(n, source, source_key, created):
                    holders.append(n)
        updating = cmd == _QUERY_UPDATE and source is not None
        if updating and source is not None and source.active:
            holders = [source]
        elif updating and source is not None and source.status == StorageStatus.SYNCING:
            # Its replicas stopped taking its writes and it is not ready yet.
            raise TrackerError(
                errno.EAGAIN, f"source of {group_name}/{remote_name} is catching up; retry"
            )
        if not holders:
            raise TrackerError(errno.ENOENT, f"no active storage holds {group_name}/{remote_name}")
        if cmd == _QUERY_FETCH_ALL:
            return group, holders, True
        if cmd == _QUERY_UPDATE:
            return group, holders[:1], True
        chosen = holders[group.read_cursor % len(holders)]
        group.read_cursor += 1
        return group, [chosen], len(holders) == 1


def _has_room(total_mb: int, free_mb: int) -> bool:
    """Whether a storage has free space beyond the reserve kept on it."""
    return free_mb > int(total_mb * RESERVED_RATIO)


def _caught_up(
    node: StorageNode, source: StorageNode | None, source_key: str, created: int
) -> bool:
    """Whether a replica has the newest acknowledged version of a file changed in place."""
    if node is source:
        return False
    if source is None:
        return node.synced.get(source_key, 0) > created
    # Changes are reported before they are acknowledged: a replica that
    # applied the source's log up to its last report has the newest
    # acknowledged version, or no copy at all (then it says ENOENT).
    return node.holds_log_of(source)


def _new_epoch(previous: int) -> int:
    return max(time.time_ns() // 1000, previous + 1)


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
