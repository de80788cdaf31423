"""Small reads for the blocking client, done in the caller's thread on blocking sockets.

# Strategy
Handing a call to the client's loop thread and back costs two thread wake-ups,
which dominate a 4 KiB read. The common case -- a normal file (its size is in
its ID), a range inside it, the tracker's pick (or a given server) holding it
-- is done here instead: QUERY_FETCH_ONE and DOWNLOAD_FILE over pooled
blocking sockets, encoded and decoded by the same codec as the trio client.
Anything else -- a status other than 0, a timeout, a broken connection, a
range at or past the end, an appender or slave file, a large range -- returns
None, and the caller takes the trio client's path, which has the full
replica fallback and error reporting. The fast path never raises.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
from collections.abc import Sequence

from . import storage as st
from . import tracker as tr
from .constants import Cmd
from .errors import FdfsError
from .fileid import FileId, decode_file_id
from .message import Request, ServerAddr
from .sockframes import new_decoder, receive_reply

log = logging.getLogger(__name__)

#: Ranges larger than this go through the loop (the hop costs little next to them).
FAST_READ_LIMIT = 1 << 20
_MAX_REPLY = 64 * 1024


class _Miss(Exception):
    """The fast path cannot answer; the caller takes the full path."""


class FastReads:
    """A thread-safe pool of blocking sockets serving small reads of normal files."""

    def __init__(
        self,
        trackers: Sequence[ServerAddr],
        *,
        connect_timeout: float,
        network_timeout: float,
        max_idle_per_server: int,
    ) -> None:
        self.trackers = list(trackers)
        self.connect_timeout = connect_timeout
        self.network_timeout = network_timeout
        self.max_idle_per_server = max_idle_per_server
        self._idle: dict[ServerAddr, list[socket.socket]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._turn = itertools.count()
        self._closed = False

    def read(
        self,
        fid: FileId,
        offset: int,
        length: int | None,
        servers: Sequence[ServerAddr] | None = None,
    ) -> bytes | None:
        """The bytes of the range, or None when the full path must answer."""
        try:
            size = decode_file_id(fid).size
        except FdfsError:
            return None
        if size is None or offset < 0 or offset >= size:
            return None
        want = size - offset if length is None else min(length, size - offset)
        if want <= 0 or want > FAST_READ_LIMIT:
            return None
        try:
            addr = servers[0] if servers else self._fetch_one(fid)
            request = st.download_request(fid.group, fid.remote_name, offset, want)
            body = self._exchange(addr, request, want)
        except (_Miss, OSError, FdfsError) as exc:
            log.debug("fast read of %s missed (%s); taking the full path", fid, exc)
            return None
        if len(body) != want:
            return None
        return body

    def _fetch_one(self, fid: FileId) -> ServerAddr:
        request = tr.query_fetch_request(Cmd.QUERY_FETCH_ONE, fid.group, fid.remote_name)
        tracker = self.trackers[next(self._turn) % len(self.trackers)]
        target = tr.decode_fetch_reply(self._exchange(tracker, request, _MAX_REPLY))
        if not target.servers:
            raise _Miss("no server named")
        return target.servers[0]

    def _exchange(self, addr: ServerAddr, request: Request, max_body: int) -> bytes:
        """Send ``request``, return the reply body of a 0 status; a reused socket found
        dead before the reply is replaced once."""
        data = request.encode()
        for attempt in range(2):
            sock, reused = self._acquire(addr, fresh=attempt > 0)
            decoder = new_decoder(max_body)
            done = False
            try:
                sock.sendall(data)
                reply = receive_reply(sock, decoder, peer=str(addr), allow_eof=reused)
                if reply is None:
                    continue  # the server had closed the idle connection
                if reply.header.status != 0:
                    raise _Miss(f"status {reply.header.status} from {addr}")
                if decoder.buffered:
                    raise _Miss(f"{addr} sent bytes beyond its reply")
                done = True
                return reply.body
            finally:
                if done:
                    self._release(addr, sock)
                else:
                    sock.close()
        raise _Miss(f"{addr} closed two connections")

    def _acquire(self, addr: ServerAddr, *, fresh: bool) -> tuple[socket.socket, bool]:
        self._check_fork()
        if not fresh:
            with self._lock:
                idle = self._idle.get(addr)
                if idle:
                    return idle.pop(), True
        sock = socket.create_connection((addr.host, addr.port), timeout=self.connect_timeout)
        sock.settimeout(self.network_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, False

    def _release(self, addr: ServerAddr, sock: socket.socket) -> None:
        with self._lock:
            idle = self._idle.setdefault(addr, [])
            if not self._closed and len(idle) < self.max_idle_per_server:
                idle.append(sock)
                return
        sock.close()

    def _check_fork(self) -> None:
        if self._pid == os.getpid():
            return
        # Sockets inherited from the parent carry its requests: drop them here
        # (closing the child's descriptors leaves the parent's connections up).
        self._lock = threading.Lock()
        for socks in self._idle.values():
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.close()
        self._idle = {}
        self._pid = os.getpid()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for socks in idle.values():
            for sock in socks:
                sock.close()


__all__ = ["FAST_READ_LIMIT", "FastReads"]
