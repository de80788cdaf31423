"""Replication between the storages of one group: each storage pulls from every peer.

# Strategy
A storage runs one `PeerPuller` per other storage of its group (learned
from the tracker's heartbeat replies). The puller asks the peer for the
peer's own changes (upper-case binlog lines) after a byte offset
(SYNC_PULL, a long poll that returns as soon as the peer's binlog grows),
applies each one, and persists ``(generation, offset, synced_until)`` under
``<base>/sync/marks/<peer id>.mark``, so both sides can restart and resume.

Changes carry the ownership epoch they were made in (see `harness.binlog`):
a line of an older epoch than our copy's last change is skipped (its owner
was frozen or down meanwhile and it was never acknowledged), one of a newer
epoch is applied by copying the peer's whole file. Within one epoch,
applying a change copies the peer's *current* bytes (SYNC_FETCH), which is
right because one storage at a time changes a file and a storage catches up
before it takes changes again (see `harness.heartbeat`): a whole
file for C/U, the changed range for A/M, nothing for T/D/R. Since every later
change of the same file is also in the log and applied later, the copy
converges to the peer's file even when it was changed again meanwhile; a
file gone at the peer (deleted or renamed later) is skipped. Re-applying
lines after a crash is harmless for the same reason. Applied changes go to
our own binlog in lower case, which peers do not pull (each storage pulls
every other one directly).

Storages report both ``(generation, offset)`` per peer, which the tracker
compares with the end of the peer's own changes it last reported (see
`harness.tracker_state`: appender files, catch-up before ACTIVE), and
``synced_until``, which routes reads of normal files: after applying a line
with timestamp ``x`` we hold every file the peer created before ``x``, and
after reading to the end of the peer's log the peer's "horizon" (its clock
before it read) covers every file created before that. See `harness.binlog`
for why. A replica counts as holding a file whose ID carries create time
``t`` once ``synced_until > t``.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any

import trio

from fdfsmount.proto.constants import Cmd
from fdfsmount.proto.errors import ProtocolError
from fdfsmount.proto.wire import FieldReader, encode_header, pack_int

from .binlog import BinlogEntry, SyncMark, split_epoch
from .peerproto import (
    MAX_JSON_BODY,
    SYNC_BATCH,
    PeerAddr,
    PeerCmd,
    decode_json,
    encode_json,
    encode_sync_fetch,
    parse_sync_fetch,
)
from .serverutil import FramedSocket, PeerClosed, RequestError, send_all, send_file, send_reply
from .store import LocalFile

if TYPE_CHECKING:
    from .storage import StorageServer

log = logging.getLogger(__name__)

MAX_PULL_WAIT = 5.0
CONNECT_TIMEOUT = 3.0
RETRY_DELAY = 0.3
#: While changes stream in, a peer's mark is written to disk at most this often.
MARK_SAVE_INTERVAL = 0.25
#: How long a peer may take to start answering a fetch.
FETCH_TIMEOUT = 3.0


# ---------------------------------------------------------------- serving side


async def serve_sync_pull(server: StorageServer, sock: trio.socket.SocketType, body: bytes) -> None:
    try:
        request = decode_json(body, "sync pull")
        offset = int(request.get("offset", 0))
        generation = str(request.get("generation", ""))
        wait = min(max(float(request.get("wait", 0)), 0.0), MAX_PULL_WAIT)
    except (ProtocolError, TypeError, ValueError) as exc:
        raise RequestError(errno.EINVAL, f"bad sync pull request: {exc}") from exc
    binlog = server.binlog
    if generation != binlog.generation or offset < 0 or offset > binlog.size:
        offset = 0
    if wait and offset >= binlog.size:
        with trio.move_on_after(wait):
            await binlog.wait_for_growth(offset)
    # The horizon is read before the log: every line written later carries a
    # timestamp >= horizon, so the follower holds all files created before it.
    horizon = int(time.time())
    size = binlog.size
    entries, reached = binlog.read_source_batch(offset, SYNC_BATCH)
    reply = {
        "generation": binlog.generation,
        "offset": reached,
        "eof": reached >= size,
        "horizon": horizon,
        "records": [[e.timestamp, e.op, e.name, e.extra] for e in entries],
    }
    await send_reply(sock, encode_json(reply))


async def serve_sync_fetch(
    server: StorageServer, sock: trio.socket.SocketType, body: bytes
) -> None:
    try:
        offset, length, name = parse_sync_fetch(body)
    except ProtocolError as exc:
        raise RequestError(errno.EINVAL, str(exc)) from exc
    local = server.store.resolve(name)
    try:
        fd = os.open(local.path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        raise RequestError(errno.ENOENT, f"no such file {name}", close=False) from None
    try:
        size = os.fstat(fd).st_size
        start = min(offset, size)
        count = size - start if length < 0 else min(length, size - start)
        await send_all(sock, encode_header(8 + count, Cmd.RESP, 0) + pack_int(size))
        await send_file(sock, fd, start, count)
    finally:
        os.close(fd)
    counters = server.counters.values
    counters["total_sync_out_bytes"] += count
    counters["success_sync_out_bytes"] += count


# ---------------------------------------------------------------- pulling side


class Replicator:
    """Owns one puller per peer of the group."""

    def __init__(self, server: StorageServer) -> None:
        self.server = server
        self.pullers: dict[str, PeerPuller] = {}
        self._nursery: trio.Nursery | None = None
        self._waiting: list[PeerPuller] = []

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for puller in self._waiting:
                nursery.start_soon(puller.run)
            self._waiting.clear()
            await trio.sleep_forever()

    def update_peers(self, peers: list[PeerAddr]) -> None:
        own_id = self.server.config.server_id
        for peer in peers:
            if peer.storage_id == own_id:
                continue
            puller = self.pullers.get(peer.storage_id)
            if puller is not None:
                puller.addr = peer
                continue
            puller = PeerPuller(self.server, peer)
            self.pullers[peer.storage_id] = puller
            log.info("replicating from %s at %s:%d", peer.storage_id, peer.ip, peer.port)
            if self._nursery is None:
                self._waiting.append(puller)
            else:
                self._nursery.start_soon(puller.run)

    def synced(self) -> dict[str, int]:
        return {peer_id: p.mark.synced_until for peer_id, p in self.pullers.items()}

    def holds(self, peer_id: str, generation: str, end: int) -> bool:
        """Whether we applied ``peer_id``'s binlog (of ``generation``) up to ``end``."""
        puller = self.pullers.get(peer_id)
        return (
            puller is not None
            and puller.mark.generation == generation
            and (puller.mark.offset >= end)
        )

    def synced_offsets(self) -> dict[str, list[str | int]]:
        """Per peer: the generation of its binlog and the offset applied up to."""
        return {peer_id: [p.mark.generation, p.mark.offset] for peer_id, p in self.pullers.items()}


class PeerPuller:
    def __init__(self, server: StorageServer, peer: PeerAddr) -> None:
        self.server = server
        self.addr = peer
        self.peer_id = peer.storage_id
        self.mark: SyncMark = server.marks.load(peer.storage_id)
        self._unsaved = False
        self._next_save = 0.0

    async def run(self) -> None:
        failing = False
        while True:
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    stream = await trio.open_tcp_stream(self.addr.ip, self.addr.port)
                async with stream:
                    if failing:
                        log.info("replication from %s resumed", self.peer_id)
                        failing = False
                    await self._follow(stream.socket, FramedSocket(stream.socket))
            except (OSError, PeerClosed, ProtocolError, RequestError, trio.TooSlowError) as exc:
                if not failing:
                    log.info("replication from %s interrupted: %s", self.peer_id, exc)
                    failing = True
            await trio.sleep(RETRY_DELAY)

    async def _follow(self, sock: trio.socket.SocketType, reader: FramedSocket) -> None:
        try:
            await self._follow_changes(sock, reader)
        finally:
            if self._unsaved:  # the link broke or the server stops: keep what was applied
                self._save_mark()

    async def _follow_changes(self, sock: trio.socket.SocketType, reader: FramedSocket) -> None:
        caught_up = False
        while True:
            wait = 0.0
            if caught_up:
                # Wake just after the next second so the horizon moves past
                # files created in this one.
                now = time.time()
                wait = math.floor(now) + 1.05 - now
            reply = await self._pull(sock, reader, wait)
            generation = str(reply["generation"])
            if generation != self.mark.generation:
                if self.mark.generation:
                    log.warning(
                        "peer %s has a new binlog; replicating it from the start", self.peer_id
                    )
                self.mark = SyncMark(generation, 0, 0)
            before = self.mark.synced_until
            for ts, op, name, extra in reply["records"]:
                entry = BinlogEntry(int(ts), str(op), str(name), str(extra))
                await self._apply(sock, reader, entry)
                self.mark.synced_until = max(self.mark.synced_until, entry.timestamp)
            self.mark.offset = int(reply["offset"])
            caught_up = bool(reply["eof"])
            if caught_up:
                self.mark.synced_until = max(self.mark.synced_until, int(reply["horizon"]))
            if reply["records"] or self.mark.synced_until != before:
                self._unsaved = True
                self.server.reporter.poke()
            # The mark on disk only matters after a restart, which re-applies
            # what came after it (applying is idempotent): it is written at
            # most every MARK_SAVE_INTERVAL while changes stream in, not once
            # per change (a new file each time), and whenever the link idles.
            now = trio.current_time()
            if self._unsaved and (not reply["records"] or now >= self._next_save):
                self._save_mark()
                self._next_save = now + MARK_SAVE_INTERVAL

    def _save_mark(self) -> None:
        self.server.marks.save(self.peer_id, self.mark)
        self._unsaved = False

    async def _pull(self, sock: trio.socket.SocketType, reader: FramedSocket, wait: float) -> Any:
        body = encode_json(
            {
                "offset": self.mark.offset,
                "generation": self.mark.generation,
                "wait": wait,
                "peer": self.server.config.server_id,
            }
        )
        await send_all(sock, encode_header(len(body), PeerCmd.SYNC_PULL, 0) + body)
        with trio.fail_after(wait + 30):
            header = await reader.read_header()
            if header is None:
                raise PeerClosed("peer closed the sync link")
            if header.status or header.length > MAX_JSON_BODY:
                raise ProtocolError(f"sync pull refused: {header}")
            reply = decode_json(await reader.read_exact(header.length), "sync pull reply")
        if not isinstance(reply.get("records"), list):
            raise ProtocolError("sync pull reply without records")
        return reply

    # ------------------------------------------------------------ applying

    async def _apply(
        self, sock: trio.socket.SocketType, reader: FramedSocket, entry: BinlogEntry
    ) -> None:
        server = self.server
        local = server.store.try_resolve(entry.name)
        if local is None:
            log.warning(
                "skipping %s of unusable name %r from %s", entry.op, entry.name, self.peer_id
            )
            return
        async with server.locks.hold(entry.name):
            applied = await self._apply_locked(sock, reader, entry, local)
        if applied:
            server.binlog.append(entry.timestamp, entry.op.lower(), entry.name, entry.extra)

    async def _apply_locked(
        self,
        sock: trio.socket.SocketType,
        reader: FramedSocket,
        entry: BinlogEntry,
        local: LocalFile,
    ) -> bool:
        op = entry.op
        extra, epoch = split_epoch(entry.extra)
        mine = self.server.binlog.file_epoch(entry.name)
        if op in "AMT" and epoch != mine:
            if epoch < mine:
                # Made by an owner the file has had since (it was frozen or
                # down meanwhile, and this change was never acknowledged).
                log.info(
                    "skipping %s of %s from %s: epoch %d is older than this copy's %d",
                    op, entry.name, self.peer_id, epoch, mine,
                )  # fmt: skip
                return False
            # A newer owner: our copy may lack or hold changes its copy does
            # not, so take the whole file rather than the changed range.
            return await self._fetch(sock, reader, local)
        if op in "CU":
            if mine and local.path.is_file():
                return False  # replayed: the file has changed here since
            return await self._fetch(sock, reader, local, mtime=entry.timestamp)
        if op in "AM":
            start, _, length = extra.partition(" ")
            try:
                offset, count = int(start), int(length)
            except ValueError:
                log.warning("bad %s line for %s: %r", op, entry.name, entry.extra)
                return False
            if local.path.is_file() and local.path.stat().st_size >= offset:
                return await self._fetch(sock, reader, local, offset=offset, length=count)
            return await self._fetch(sock, reader, local)
        if op == "T":
            if local.path.is_file():
                os.truncate(local.path, int(extra or 0))
                return True
            return await self._fetch(sock, reader, local)
        if op == "D":
            local.path.unlink(missing_ok=True)
            return True
        if op == "R":
            old = self.server.store.try_resolve(entry.extra)
            if old is not None and old.path.is_file():
                local.path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(old.path, local.path)
                return True
            if local.path.is_file():
                return True
            return await self._fetch(sock, reader, local)
        log.warning("unknown op %r from %s", op, self.peer_id)
        return False

    async def _fetch(
        self,
        sock: trio.socket.SocketType,
        reader: FramedSocket,
        local: LocalFile,
        *,
        offset: int = 0,
        length: int = -1,
        mtime: int | None = None,
    ) -> bool:
        """Copy the peer's current bytes; False if the peer no longer has the file."""
        request = encode_sync_fetch(local.remote_name, offset, length)
        await send_all(sock, encode_header(len(request), PeerCmd.SYNC_FETCH, 0) + request)
        # The file's lock is held meanwhile: a frozen peer must not keep it
        # from the writes this storage may take once that peer is OFFLINE.
        with trio.fail_after(FETCH_TIMEOUT):
            header = await reader.read_header()
        if header is None:
            raise PeerClosed("peer closed the sync link")
        if header.status == errno.ENOENT:
            return False
        if header.status or header.length < 8:
            raise ProtocolError(f"sync fetch of {local.remote_name} refused: {header}")
        peer_size = FieldReader(await reader.read_exact(8), "sync fetch").int64()
        count = header.length - 8
        whole = length < 0 and offset == 0
        store = self.server.store
        if whole:
            temp = store.new_temp_path(local.store_path_index)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        else:
            fd = os.open(local.path, os.O_WRONLY)
        try:
            pos = offset
            async for chunk in reader.stream(count):
                view = chunk
                while view:
                    written = os.pwrite(fd, view, pos)
                    pos += written
                    view = view[written:]
        except BaseException:
            os.close(fd)
            if whole:
                store.discard(temp)
            raise
        os.close(fd)
        if whole:
            if mtime is not None:
                os.utime(temp, (mtime, mtime))
            store.place(temp, local)
        elif pos >= peer_size and local.path.stat().st_size > peer_size:
            # The peer's file shrank since this change; a later T line follows.
            os.truncate(local.path, peer_size)
        counters = self.server.counters.values
        counters["total_sync_in_bytes"] += count
        counters["success_sync_in_bytes"] += count
        counters["last_sync_update"] = int(time.time())
        return True
