"""The storage's side of the tracker link: join, then heartbeat, per tracker.

Each tracker gets one long-lived connection: STORAGE_JOIN once, then
STORAGE_BEAT every ``--heartbeat-interval`` seconds, or sooner (at most every
`MIN_BEAT_GAP` seconds) when replication progress changed, so the tracker
routes reads to a fresh replica quickly. Every reply lists the storages of
our group, which starts replication from new peers. A broken link is
re-established with a short backoff, so a restarted tracker sees us again
within a second or so.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from fdfsmount.proto.constants import Cmd
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


class TrackerReporter:
    def __init__(self, server: StorageServer) -> None:
        self.server = server
        self._poked = trio.Event()

    def poke(self) -> None:
        """Ask for an early heartbeat (replication progress changed)."""
        self._poked.set()
        self._poked = trio.Event()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for host, port in self.server.config.trackers:
                nursery.start_soon(self._report_to, host, port)

    async def _report_to(self, host: str, port: int) -> None:
        announced = False
        while True:
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    reader = FramedSocket(stream.socket, 64 * 1024)
                    await self._exchange(
                        stream.socket, reader, PeerCmd.STORAGE_JOIN, self.join_info()
                    )
                    if not announced:
                        log.info("joined tracker %s:%d", host, port)
                        announced = True
                    await self._beat_forever(stream.socket, reader)
            except (OSError, PeerClosed, ProtocolError, trio.TooSlowError) as exc:
                if announced:
                    log.warning("tracker %s:%d link lost: %s", host, port, exc)
                    announced = False
                else:
                    log.debug("tracker %s:%d unreachable: %s", host, port, exc)
            await trio.sleep(RETRY_DELAY)

    async def _beat_forever(self, sock: trio.socket.SocketType, reader: FramedSocket) -> None:
        interval = self.server.config.heartbeat_interval
        while True:
            poked = self._poked
            await self._exchange(sock, reader, PeerCmd.STORAGE_BEAT, self.beat_info())
            sent_at = trio.current_time()
            with trio.move_on_after(interval):
                await poked.wait()
            await trio.sleep_until(sent_at + MIN_BEAT_GAP)

    async def _exchange(
        self, sock: trio.socket.SocketType, reader: FramedSocket, cmd: int, info: dict[str, Any]
    ) -> None:
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
        self.server.update_peers(decode_peer_list(decode_json(reply, "tracker reply")))

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
            "synced": server.replicator.synced(),
            "last_source_ts": server.binlog.last_source_ts,
            "time": int(time.time()),
        }
