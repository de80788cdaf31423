"""Which storage servers can serve a file, best first, without asking the tracker per file.

One `ReplicaDirectory` per client: the group's active storages are listed once
per `STORAGES_TTL`, a file's source (named in its ID) goes first, and the
shared `ServerHealth` moves servers that failed lately to the back. Both the
client's reads (with ``replica_directory=True``) and the mount's read and
write paths take their replica order from here.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import OrderedDict
from typing import Protocol

import trio

from .constants import StorageStatus
from .errors import FdfsError, FileNotFound, InvalidFileId
from .fileid import FileId, FileIdInfo, FileType, decode_file_id
from .health import ServerHealth
from .message import ServerAddr
from .records import StorageStat

log = logging.getLogger(__name__)

STORAGES_TTL = 30.0
#: How long the tracker's holders of an appender file are trusted while its source is
#: among them (the source has every change while it is up); without it, not at all.
HOLDERS_TTL = 1.0
#: After the trackers failed to name holders, how long the group's list serves instead.
HOLDERS_RETRY = 5.0
FRESH_FILE_AGE = 300  # seconds: younger files may not have reached every replica yet


#: `decode_file_id`, remembered for recently used IDs (a read decodes its file's ID
#: for the size and for the source; a small request should not pay that twice).
decoded_file_id = functools.lru_cache(maxsize=8192)(decode_file_id)


class StorageLister(Protocol):
    """The tracker queries a directory needs (the client offers them)."""

    async def list_storages(
        self, group: str, storage_id: str | None = None
    ) -> list[StorageStat]: ...

    async def fetch_servers(self, file_id: FileId | str) -> list[ServerAddr]: ...


class ReplicaDirectory:
    """Which storage servers can serve a file, best first, without asking per file.

    The storages of a group are listed once per `STORAGES_TTL`; a file's source
    server (named in its ID) goes first, then the group's other active storages.
    ``rotate`` spreads the chunks of a large read over the replicas. Servers
    that failed lately (timed out, refused, broke a reply: the client notes
    each in the shared `ServerHealth`) go last, so a frozen replica costs one
    timeout, not one per chunk.
    """

    def __init__(self, client: StorageLister, health: ServerHealth) -> None:
        self._client = client
        self.health = health
        self._groups: dict[str, tuple[float, list[tuple[str, str, ServerAddr]]]] = {}
        self._per_file: OrderedDict[str, list[ServerAddr]] = OrderedDict()
        self._failed_at: dict[str, float] = {}
        self._holders: OrderedDict[str, tuple[float, list[ServerAddr]]] = OrderedDict()
        self._holders_failed_at: dict[str, float] = {}

    async def servers_for(
        self, file_id: FileId, info: FileIdInfo | None = None, *, rotate: int = 0
    ) -> list[ServerAddr] | None:
        """The servers to read `file_id` from, best first (None: no idea, ask the tracker)."""
        if info is None:
            try:
                info = decoded_file_id(file_id)
            except InvalidFileId:
                return None
        storages = await self._group_storages(file_id.group)
        if info.file_type is FileType.APPENDER:
            holders = await self._appender_holders(file_id, info, storages)
            if holders is not None:
                return holders or None  # none: the tracker is asked again, and says why
        if storages:
            source = [a for (sid, ip, a) in storages if _is_source(info, sid, ip)]
            others = [a for (sid, ip, a) in storages if not _is_source(info, sid, ip)]
            if source and (info.file_type is FileType.APPENDER or _is_fresh(info)):
                rotate = 0  # replicas may lag behind the source
            servers = source + others
        else:
            servers = await self._fetch_servers(file_id)
        if not servers:
            return None
        turn = rotate % len(servers)
        return self.health.order(servers[turn:] + servers[:turn])

    async def _appender_holders(
        self, file_id: FileId, info: FileIdInfo, storages: list[tuple[str, str, ServerAddr]]
    ) -> list[ServerAddr] | None:
        """The storages the tracker says hold the newest version of an appender file,
        source first (None: the tracker did not answer).

        An appender file changes in place, and replication runs behind: a replica
        may lack a change its source acknowledged a moment ago, however healthy
        both look. So reads (and the size asked at open) go only to storages the
        tracker names (QUERY_FETCH_ALL), in its order with the source first, and
        a source that failed lately is not put behind a replica that may lag.
        """
        key = str(file_id)
        now = trio.current_time()
        cached = self._holders.get(key)
        if cached is not None and now - cached[0] < HOLDERS_TTL:
            return cached[1]
        if now - self._holders_failed_at.get(file_id.group, -math.inf) < HOLDERS_RETRY:
            return None  # the trackers did not answer just now: do not wait for them per read
        try:
            holders = await self._client.fetch_servers(file_id)
        except FileNotFound:
            return []  # gone, or no storage has the newest version: never an older one
        except FdfsError as exc:
            log.debug("QUERY_FETCH_ALL for %s failed (%s); using the group's storages", key, exc)
            self._holders_failed_at[file_id.group] = now
            return None
        source = {a for (sid, ip, a) in storages if _is_source(info, sid, ip)}
        holders = sorted(holders, key=lambda a: a not in source)
        if holders and holders[0] in source:
            self._holders[key] = (now, holders)
            self._holders.move_to_end(key)
            if len(self._holders) > 10_000:
                self._holders.popitem(last=False)
        else:
            self._holders.pop(key, None)
        return holders

    async def _group_storages(self, group: str) -> list[tuple[str, str, ServerAddr]]:
        now = trio.current_time()
        cached = self._groups.get(group)
        if cached is not None and now - cached[0] < STORAGES_TTL:
            return cached[1]
        if now - self._failed_at.get(group, -math.inf) < STORAGES_TTL:
            return cached[1] if cached else []
        try:
            stats = await self._client.list_storages(group)
        except FdfsError as exc:
            log.info("list storages of %s failed (%s); asking the tracker per file", group, exc)
            self._failed_at[group] = now
            return cached[1] if cached else []
        active = [
            (s.storage_id, s.ip_addr, ServerAddr(s.ip_addr, s.storage_port))
            for s in stats
            if s.status == StorageStatus.ACTIVE and s.storage_port > 0
        ]
        self._groups[group] = (now, active)
        return active

    async def _fetch_servers(self, file_id: FileId) -> list[ServerAddr]:
        key = str(file_id)
        servers = self._per_file.get(key)
        if servers is None:
            servers = await self._client.fetch_servers(file_id)
            self._per_file[key] = servers
            if len(self._per_file) > 10_000:
                self._per_file.popitem(last=False)
        return servers


def _is_source(info: FileIdInfo, storage_id: str, ip: str) -> bool:
    if info.source_id is not None:
        return storage_id == str(info.source_id)
    return ip == info.source_ip


def _is_fresh(info: FileIdInfo) -> bool:
    return time.time() - info.create_time < FRESH_FILE_AGE
