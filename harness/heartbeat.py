"""The storage's side of the tracker link: join, heartbeats, and what it may write.

Each tracker gets one long-lived connection: STORAGE_JOIN once, then
STORAGE_BEAT every ``--heartbeat-interval`` seconds. Between them go short
progress beats (binlog size, replication marks, foreign writes): at most every
`MIN_BEAT_GAP` seconds when replication progressed, and at once when a change
waits in `TrackerReporter.announce_blocking`. Every reply lists the storages of our
group with their status (which starts replication from new peers) and the
tracker's ``offline_after``. A broken link is re-established with a short
backoff, so a restarted tracker sees us again within a second or so.

Write fencing
-------------
A tracker's reply is a lease: the tracker cannot call us OFFLINE before
``offline_after`` seconds after it received the beat, so until ``sent +
offline_after`` (less a margin) nobody is told to take our files' writes
unless the reply said so. `may_write` uses the unexpired replies: our own
files only while every one calls us ACTIVE (never after we were frozen past
the lease, never while SYNCING); a peer's files only while every one calls
that peer OFFLINE and us ACTIVE. The sources we take writes for are reported
as ``foreign_writes``; the tracker keeps a rejoining source SYNCING until no
peer lists it any more and it caught up with their binlogs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from fdfsmount.proto.constants import Cmd, StorageStatus
from fdfsmount.proto.errors import ProtocolError
from fdfsmount.proto.wire import encode_header

from .peerproto import MAX_JSON_BODY, PeerCmd, decode_json, decode_peer_list, encode_json
from .serverutil import FramedSocket, PeerClosed, send_all

if TYPE_CHECKING:
    from .storage import StorageServer

log = logging.getLogger(__name__)

MIN_BEAT_GAP = 0.2
CONNECT_TIMEOUT = 3.0
REPLY_TIMEOUT = 10.0
RETRY_DELAY = 0.5
#: How long a change waits for the trackers to learn of it before it is acknowledged.
ANNOUNCE_TIMEOUT = 1.0
#: Our lease ends this much before the tracker could call us OFFLINE.
LEASE_MARGIN = 0.3
DEFAULT_OFFLINE_AFTER = 3.0


@dataclass
class TrackerView:
    """What one tracker last told us, and how far it knows our binlog."""

    statuses: dict[str, int] = field(default_factory=dict)
    #: Per storage: (ownership epoch, binlog generation, binlog end it reported).
    ownership: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    valid_until: float = 0.0  # trio clock
    acked_binlog: int = -1
    connected: bool = False
    #: False after it missed an announce deadline, until it answers again.
    responsive: bool = True


class TrackerReporter:
    def __init__(self, server: StorageServer) -> None:
        self.server = server
        self.views: dict[tuple[str, int], TrackerView] = {}
        self._wake = trio.Event()
        self._acked = trio.Event()
        self._progress_gen = 0
        self._announce_target = 0
        self._lease_wanted = False
        #: Notified after every tracker reply, for changes made in connection threads.
        self._replied = threading.Condition()
        self._token: trio.lowlevel.TrioToken | None = None
        self._loop_thread = threading.get_ident()
        self._clock_offset = 0.0

    def bind(self) -> None:
        """Called from the trio run this reporter lives in, before connections are served."""
        self._token = trio.lowlevel.current_trio_token()
        self._loop_thread = threading.get_ident()
        # trio's clock is perf_counter plus an offset: threads read it that way.
        self._clock_offset = trio.current_time() - time.perf_counter()

    # ------------------------------------------------------------ fencing

    def _fresh_views(self) -> list[TrackerView]:
        # Also called from connection threads: the trio clock is a monotonic
        # clock, and list() copies the views without letting another thread in.
        now = trio.current_time() if self._in_loop() else self._clock_offset + time.perf_counter()
        return [v for v in list(self.views.values()) if v.valid_until > now]

    def _in_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def has_fresh_view(self) -> bool:
        """Whether some tracker's lease is still running (else `confirm_may_write` renews)."""
        return bool(self._fresh_views())

    def _alone(self) -> bool:
        own = self.server.config.server_id
        return all(peer_id == own for peer_id in list(self.server.peers))

    def may_write(self, source: str) -> str | None:
        """None if changes to files of ``source`` may be taken here now, else why not."""
        own = self.server.config.server_id
        views = self._fresh_views()
        if not views:
            return "no tracker confirmed our status recently"
        for view in views:
            if view.statuses.get(own) != StorageStatus.ACTIVE:
                return "this storage is not ACTIVE yet"
            if source == own:
                continue
            if len(views) < len(self.views):
                # The silent tracker may be the one that knows the source's last change.
                return "not every tracker confirmed the source OFFLINE recently"
            if view.statuses.get(source) != StorageStatus.OFFLINE:
                return f"the file's source {source} is not OFFLINE"
            # A change built on a copy that lacks one the source acknowledged
            # would later win over it: only with the source's whole log applied.
            _, generation, end = view.ownership.get(source, (0, "", 0))
            if end and not self.server.replicator.holds(source, generation, end):
                return f"this storage has not applied all of {source}'s changes yet"
        return None

    def write_epoch(self, source: str) -> int | None:
        """The epoch to stamp a change of a ``source`` file with now; None if not allowed.

        Every fresh tracker view agrees on who owns the file (see `may_write`);
        the epoch is the latest change of ownership they report. A change made
        in a later epoch wins over one made in an earlier one (see
        `harness.replication`).
        """
        if self.may_write(source) is not None:
            return None
        return max(view.ownership.get(source, (0, "", 0))[0] for view in self._fresh_views())

    async def confirm_may_write(self, source: str) -> str | None:
        """`may_write`, after renewing a lapsed lease first (bounded by `ANNOUNCE_TIMEOUT`).

        A storage that was frozen, or whose trackers were slow, asks at once
        rather than refusing the writes that were waiting for it.
        """
        why = self.may_write(source)
        if why is None or self._fresh_views():
            return why
        self._lease_wanted = True
        self._wake_up()
        with trio.move_on_after(ANNOUNCE_TIMEOUT):
            while not self._fresh_views():
                await self._acked.wait()
        return self.may_write(source)

    def confirmed(self, binlog_end: int) -> bool:
        """Whether a tracker whose view is still fresh knows our binlog reaches ``binlog_end``.

        With one such tracker, no replica is let take our files' writes before
        it holds that much of our log (see `may_write`).
        """
        if self._alone():
            return True  # alone in the group: no replica could take over
        return any(v.acked_binlog >= binlog_end for v in self._fresh_views())

    def foreign_writes(self) -> list[str]:
        """Peers whose files we take writes for now (or still have such a write under way)."""
        own = self.server.config.server_id
        with self.server.foreign_lock:
            sources = set(self.server.foreign_in_flight)
        for peer_id in list(self.server.peers):
            if peer_id != own and self.may_write(peer_id) is None:
                sources.add(peer_id)
        return sorted(sources)

    # ------------------------------------------------------------ progress

    def poke(self) -> None:
        """Ask for an early progress beat (replication progress changed)."""
        self._progress_gen += 1
        self._wake_up()

    def _wake_up(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    def announce_blocking(self, binlog_size: int) -> None:
        """Return once every responsive tracker knows our binlog reached ``binlog_size``.

        Called (from the connection's thread) before acknowledging a change
        of an appender file, so a tracker never counts a replica as holding a
        file it lacks. The beat is asked for through the trio token. Bounded:
        a tracker that does not answer in time is skipped until it answers.
        """
        if self._alone():
            return
        assert self._token is not None
        self._token.run_sync_soon(self._want_announce, binlog_size)
        deadline = time.monotonic() + ANNOUNCE_TIMEOUT
        with self._replied:
            while self._lagging(binlog_size):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._replied.wait(left)
            else:
                return
        self._give_up_on_laggards(binlog_size)

    def _want_announce(self, binlog_size: int) -> None:
        self._announce_target = max(self._announce_target, binlog_size)
        self._wake_up()

    def _lagging(self, binlog_size: int) -> bool:
        return any(
            v.connected and v.responsive and v.acked_binlog < binlog_size
            for v in list(self.views.values())
        )

    def _give_up_on_laggards(self, binlog_size: int) -> None:
        for key, view in list(self.views.items()):
            if view.connected and view.responsive and view.acked_binlog < binlog_size:
                log.info("tracker %s:%d did not confirm a change in time", *key)
                view.responsive = False

    # ------------------------------------------------------------ links

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for host, port in self.server.config.trackers:
                nursery.start_soon(self._report_to, host, port)

    async def _report_to(self, host: str, port: int) -> None:
        announced = False
        view = self.views.setdefault((host, port), TrackerView())
        while True:
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    reader = FramedSocket(stream.socket, 64 * 1024)
                    await self._exchange(
                        stream.socket, reader, PeerCmd.STORAGE_JOIN, self.join_info(), view
                    )
                    view.connected = True
                    if not announced:
                        log.info("joined tracker %s:%d", host, port)
                        announced = True
                    await self._beat_forever(stream.socket, reader, view)
            except (OSError, PeerClosed, ProtocolError, trio.TooSlowError) as exc:
                view.connected = False
                if announced:
                    log.warning("tracker %s:%d link lost: %s", host, port, exc)
                    announced = False
                else:
                    log.debug("tracker %s:%d unreachable: %s", host, port, exc)
            await trio.sleep(RETRY_DELAY)

    async def _beat_forever(
        self, sock: trio.socket.SocketType, reader: FramedSocket, view: TrackerView
    ) -> None:
        interval = self.server.config.heartbeat_interval
        next_full = trio.current_time()
        sent_gen = -1
        while True:
            now = trio.current_time()
            full = now >= next_full
            gen = self._progress_gen
            info = self.beat_info() if full else self.progress_info()
            await self._exchange(sock, reader, PeerCmd.STORAGE_BEAT, info, view)
            sent_gen = gen
            if full:
                next_full = now + interval
            while view.acked_binlog >= self._announce_target and not self._lease_wanted:
                deadline = next_full
                if self._progress_gen != sent_gen:
                    deadline = min(deadline, now + MIN_BEAT_GAP)
                if trio.current_time() >= deadline:
                    break
                with trio.move_on_at(deadline):
                    await self._wake.wait()

    async def _exchange(
        self,
        sock: trio.socket.SocketType,
        reader: FramedSocket,
        cmd: int,
        info: dict[str, Any],
        view: TrackerView,
    ) -> None:
        sent_at = trio.current_time()
        body = encode_json(info)
        await send_all(sock, encode_header(len(body), cmd, 0) + body)
        with trio.fail_after(REPLY_TIMEOUT):
            header = await reader.read_header()
            if header is None:
                raise PeerClosed("tracker closed the link")
            if header.cmd != Cmd.RESP or header.length > MAX_JSON_BODY:
                raise ProtocolError(f"bad tracker reply header {header}")
            reply = await reader.read_exact(header.length)
        if header.status != 0:
            raise ProtocolError(f"tracker refused cmd {cmd} with status {header.status}")
        decoded = decode_json(reply, "tracker reply")
        peers = decode_peer_list(decoded)
        try:
            offline_after = float(decoded.get("offline_after", DEFAULT_OFFLINE_AFTER))
        except (TypeError, ValueError):
            offline_after = DEFAULT_OFFLINE_AFTER
        old = view.statuses
        view.statuses = {p.storage_id: p.status for p in peers}
        view.ownership = _decode_ownership(decoded.get("ownership"))
        view.valid_until = sent_at + offline_after - LEASE_MARGIN
        view.responsive = True
        self._lease_wanted = False
        if "binlog" in info:
            view.acked_binlog = max(view.acked_binlog, int(info["binlog"][1]))
        self._acked.set()
        self._acked = trio.Event()
        with self._replied:
            self._replied.notify_all()
        self.server.update_peers(peers)
        if old and old != view.statuses:
            # A peer came or went: say at once which foreign writes we take now.
            self.poke()

    def join_info(self) -> dict[str, Any]:
        server = self.server
        config = server.config
        return {
            "group": server.group,
            "id": config.server_id,
            "ip": config.bind,
            "port": config.port,
            "store_path_count": server.store.store_path_count,
            "subdir_count": server.store.subdir_count,
            "version": "6.16.1",
            "up_time": server.start_time,
        }

    def beat_info(self) -> dict[str, Any]:
        server = self.server
        usage = server.store.usage()
        return {
            "group": server.group,
            "id": server.config.server_id,
            "total_mb": usage.total_mb,
            "free_mb": usage.free_mb,
            "reserved_mb": usage.reserved_mb,
            "counters": dict(server.counters.values),
            "connections": [
                server.connections_max,
                server.connections_current,
                server.connections_max,
            ],
            "time": int(time.time()),
            **self.progress_info(),
        }

    def progress_info(self) -> dict[str, Any]:
        """The part of a beat that routing and catch-up depend on."""
        server = self.server
        return {
            "synced": server.replicator.synced(),
            "synced_offsets": server.replicator.synced_offsets(),
            "last_source_ts": server.binlog.last_source_ts,
            "binlog": [server.binlog.generation, server.binlog.source_end],
            "foreign_writes": self.foreign_writes(),
        }


def _decode_ownership(raw: Any) -> dict[str, tuple[int, str, int]]:
    if not isinstance(raw, dict):
        return {}
    out = {}
    for key, value in raw.items():
        if isinstance(value, list) and len(value) == 3:
            try:
                out[str(key)] = (int(value[0]), str(value[1]), int(value[2]))
            except (TypeError, ValueError):
                continue
    return out
