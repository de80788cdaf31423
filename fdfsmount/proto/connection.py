"""One FastDFS connection over a trio stream: send a request, receive its reply.

# Strategy
A connection runs one exchange at a time: `send_request`, `receive_header`,
then the body (whole with `receive_body`, into caller buffers with
`receive_into`, or to a sink with `stream_body`). Its state goes BUSY with the
first byte sent and back to IDLE only once the whole reply has been consumed.
Whatever interrupts an exchange -- an error, a timeout, a cancellation, a
caller that stops reading -- therefore leaves it BUSY (or BROKEN), and the
pool closes it instead of reusing it; no error path has to remember to mark it.

Receiving: the reply is framed by a `FrameDecoder` (frames.py, the same
framer the builtin servers use) over a small receive buffer. The header read
receives into that buffer and may also pick up the start of the body -- or
all of a small reply, so a small reply costs one read. The rest of a body is
received straight into the caller's memory and reported to the decoder with
``body_received``: reads never ask for more than the current reply still
owes, and bytes found buffered once a reply is complete are bytes beyond it
(the connection is then broken). trio streams have no ``recv_into``, so for
TCP the connection takes the stream's socket over as a plain non-blocking
socket and calls ``send``/``recv_into`` on it itself, parking in trio only
when the kernel says EAGAIN -- and, right after a request went out, waiting
for the reply before the first ``recv`` (it cannot be there yet). So bulk
data lands in the caller's buffer with no copy, and a small exchange costs
one ``send``, one wait and one ``recv``, with one trip through trio's
scheduler instead of five. Other streams (memory streams in tests) go
through ``receive_some`` plus one copy.

Deadlines are not this module's business (trio's rule): callers wrap calls in
`trio.fail_after`. A caller that wants "no progress for N seconds" rather than
a fixed deadline hands a cancel scope to `watch`: chunks sent or received push
its deadline forward. Moving a deadline costs more than a small exchange's
I/O, so it is moved only once it is more than an eighth of the timeout stale:
the scope fires between 7/8 and 8/8 of the timeout after the last progress.
"""

from __future__ import annotations

import enum
import errno
import inspect
import logging
import select
import socket
from collections.abc import AsyncIterable, Callable
from typing import BinaryIO, Literal

import trio

from .constants import Cmd
from .errors import ConnectionClosed, LocalProtocolError, ProtocolError, server_error
from .frames import FrameDecoder, NeedData
from .message import Request, ServerAddr
from .stats import ClientStats
from .wire import Header

log = logging.getLogger(__name__)

#: Size of the pieces a streamed payload or body moves in.
CHUNK_SIZE = 256 * 1024
#: Default bound on a reply body read whole into memory (not downloads).
MAX_REPLY_SIZE = 64 << 20
#: Payloads up to this size go out in the same write as the request head.
_COALESCE_LIMIT = 64 * 1024
#: Receive buffer of a connection: what one read may pick up beyond a reply header.
_RECV_BUFFER_SIZE = 64 * 1024
#: Bytes a transfer may move without waiting before it lets other tasks run.
_YIELD_EVERY = 1 << 20

Role = Literal["tracker", "storage"]
#: What may follow a request head as its payload: bytes, a binary file
#: positioned at the first byte to send, or an async iterable of chunks.
Payload = bytes | bytearray | memoryview | BinaryIO | AsyncIterable[bytes]
Sink = Callable[[memoryview], object]


class ConnState(enum.Enum):
    IDLE = "idle"  # between exchanges: may be reused
    BUSY = "busy"  # an exchange is under way
    BROKEN = "broken"  # must not be reused
    CLOSED = "closed"


class Connection:
    """A connection to one tracker or storage server."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        addr: ServerAddr,
        *,
        role: Role = "storage",
        stats: ClientStats | None = None,
    ) -> None:
        self.stream = stream
        self.addr = addr
        self.role: Role = role
        self.stats = stats if stats is not None else ClientStats()
        self._sock: socket.socket | None = None
        if isinstance(stream, trio.SocketStream):
            # Ours from now on (the stream's socket is left detached).
            self._sock = socket.socket(fileno=stream.socket.detach())
            self._sock.setblocking(False)
        self._reply_due = False  # a request went out and no reply byte was tried for yet
        self._unyielded = 0  # bytes moved since the last trip through trio's scheduler
        self._frames = FrameDecoder(max_body=0, buffer_size=_RECV_BUFFER_SIZE)
        self._state = ConnState.IDLE
        self._reply_bytes = 0  # bytes received in the current exchange
        #: Completed exchanges; > 0 means the connection came from the pool.
        self.uses = 0
        self.idle_since = trio.current_time()
        self.broken_reason: str | None = None
        self._watchdog: trio.CancelScope | None = None
        self._watchdog_timeout = 0.0
        self._watchdog_set_at = 0.0

    def __repr__(self) -> str:
        return f"<Connection {self.role} {self.addr} {self._state.value} uses={self.uses}>"

    # ------------------------------------------------------------ state

    @property
    def state(self) -> ConnState:
        return self._state

    @property
    def reusable(self) -> bool:
        """Only a connection whose last exchange completed cleanly goes back to the pool."""
        return self._state is ConnState.IDLE

    @property
    def reply_started(self) -> bool:
        """Whether any byte of the current reply has arrived."""
        return self._reply_bytes > 0

    @property
    def body_buffered(self) -> int:
        """Body bytes of the current reply already received (readable without waiting)."""
        return min(self._frames.buffered, self._frames.body_remaining)

    @property
    def body_remaining(self) -> int:
        """Body bytes of the current reply not yet read."""
        return self._frames.body_remaining

    def mark_broken(self, reason: str) -> None:
        if self._state is not ConnState.CLOSED:
            if self._state is not ConnState.BROKEN:
                log.debug("connection to %s %s: %s", self.role, self.addr, reason)
                self.broken_reason = reason
            self._state = ConnState.BROKEN

    def looks_closed(self) -> bool:
        """True when an idle TCP connection is readable: the server closed it or sent junk.

        One poll(2) with a zero timeout; streams without a socket say False.
        """
        if self._sock is None:
            return False
        try:
            poller = select.poll()
            poller.register(self._sock.fileno(), select.POLLIN | select.POLLPRI)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    async def aclose(self) -> None:
        self._state = ConnState.CLOSED
        if self._sock is not None and self._sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
        await trio.aclose_forcefully(self.stream)

    def watch(self, scope: trio.CancelScope | None, timeout: float = 0.0) -> None:
        """Push ``scope``'s deadline to ``timeout`` after each chunk moved (None: stop)."""
        self._watchdog = scope
        self._watchdog_timeout = timeout
        if scope is not None:
            self._watchdog_set_at = scope.deadline - timeout

    def _kick(self) -> None:
        if self._watchdog is not None:
            now = trio.current_time()
            if now - self._watchdog_set_at > self._watchdog_timeout / 8:
                self._watchdog.deadline = now + self._watchdog_timeout
                self._watchdog_set_at = now

    # ------------------------------------------------------------ sending

    async def send_request(
        self, request: Request, payload: Payload | None = None, *, what: str = ""
    ) -> None:
        """Send a request head and exactly ``request.payload_size`` payload bytes.

        A storage may refuse an upload (ENOSPC, EINVAL) before taking its
        payload and close the connection, so sending fails; then the status
        it sent, if it arrived, is raised as a `ServerError` (``what`` names
        the request) instead of `ConnectionClosed`.
        """
        if self._state is not ConnState.IDLE:
            raise LocalProtocolError(f"connection to {self.addr} is {self._state.value}")
        self._state = ConnState.BUSY
        self._reply_bytes = 0
        try:
            await self._send_request(request, payload)
        except ConnectionClosed as exc:
            status = await self._status_sent_early() if request.payload_size else 0
            if status:
                raise server_error(
                    status, what or f"request {request.cmd} to {self.role} {self.addr}"
                ) from exc
            raise

    async def _status_sent_early(self) -> int:
        """The status of a reply header that came before the server closed, else 0."""
        self.mark_broken("the server closed while the request was being sent")
        try:
            header = await self._read_header()
        except ProtocolError:
            return 0
        return header.status

    async def _send_request(self, request: Request, payload: Payload | None) -> None:
        head = request.encode()
        size = request.payload_size
        if payload is None:
            if size:
                raise LocalProtocolError(f"request announces {size} payload bytes, none given")
            await self._send(head)
        elif isinstance(payload, bytes | bytearray | memoryview):
            view = memoryview(payload).cast("B")
            if len(view) != size:
                raise LocalProtocolError(f"payload of {len(view)} bytes, request says {size}")
            if size <= _COALESCE_LIMIT:
                await self._send(head + view)
            else:
                await self._send(head)
                for start in range(0, size, CHUNK_SIZE * 4):
                    await self._send(view[start : start + CHUNK_SIZE * 4])
        elif isinstance(payload, AsyncIterable):
            await self._send(head)
            await self._send_iterable(payload, size)
        else:
            await self._send(head)
            await self._send_file(payload, size)

    async def _send_iterable(self, chunks: AsyncIterable[bytes], size: int) -> None:
        sent = 0
        async for chunk in chunks:
            if not chunk:
                continue
            if sent + len(chunk) > size:
                self.mark_broken("payload longer than announced")
                raise LocalProtocolError(f"payload has more than the {size} bytes announced")
            await self._send(chunk)
            sent += len(chunk)
        if sent != size:
            self.mark_broken("payload shorter than announced")
            raise LocalProtocolError(f"payload ended after {sent} of {size} bytes")

    async def _send_file(self, file: BinaryIO, size: int) -> None:
        # Local files are read synchronously: a page-cache read is cheaper
        # than a thread hop per chunk.
        buf = bytearray(min(CHUNK_SIZE, max(size, 1)))
        view = memoryview(buf)
        readinto = getattr(file, "readinto", None)
        sent = 0
        while sent < size:
            want = min(len(buf), size - sent)
            if readinto is not None:
                n = readinto(view[:want])
                piece = view[: n or 0]
            else:
                data = file.read(want)
                n, piece = len(data), memoryview(data)
            if not n:
                self.mark_broken("payload file shorter than announced")
                raise LocalProtocolError(f"payload file ended after {sent} of {size} bytes")
            await self._send(piece)
            sent += n

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        try:
            if self._sock is not None:
                # The socket directly, as for receiving: one exchange at a time
                # needs none of SocketStream's bookkeeping.
                view = memoryview(data)
                while view:
                    try:
                        n = self._sock.send(view)
                    except BlockingIOError:
                        self._unyielded = 0
                        await trio.lowlevel.wait_writable(self._sock)
                        continue
                    view = view[n:]
                    await self._yield_now_and_then(n)
                self._reply_due = True
            else:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.mark_broken(f"send failed: {exc}")
            raise ConnectionClosed(f"connection to {self.addr} lost while sending: {exc}") from exc
        self.stats.bytes_sent += len(data)
        self._kick()

    # ------------------------------------------------------------ receiving

    async def _recv_into(self, view: memoryview) -> int:
        try:
            if self._sock is not None:
                n = await self._sock_recv_into(self._sock, view)
            else:
                data = await self.stream.receive_some(len(view))
                n = len(data)
                view[:n] = data
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.mark_broken(f"receive failed: {exc}")
            raise ConnectionClosed(f"connection to {self.addr} lost: {exc}") from exc
        if n:
            self.stats.bytes_received += n
            self._reply_bytes += n
            self._kick()
        return n

    async def _recv(self, size: int) -> bytes:
        try:
            if self._sock is not None:
                await self._wait_if_reply_due(self._sock)
                while True:
                    try:
                        data = self._sock.recv(size)
                        break
                    except BlockingIOError:
                        self._unyielded = 0
                        await trio.lowlevel.wait_readable(self._sock)
                await self._yield_now_and_then(len(data))
            else:
                received = await self.stream.receive_some(size)
                data = received if isinstance(received, bytes) else bytes(received)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.mark_broken(f"receive failed: {exc}")
            raise ConnectionClosed(f"connection to {self.addr} lost: {exc}") from exc
        if data:
            self.stats.bytes_received += len(data)
            self._reply_bytes += len(data)
            self._kick()
        return data

    async def _sock_recv_into(self, sock: socket.socket, view: memoryview) -> int:
        await self._wait_if_reply_due(sock)
        while True:
            try:
                n = sock.recv_into(view)
                break
            except BlockingIOError:
                self._unyielded = 0
                await trio.lowlevel.wait_readable(sock)
        await self._yield_now_and_then(n)
        return n

    async def _wait_if_reply_due(self, sock: socket.socket) -> None:
        if self._reply_due:
            # Just sent: the reply cannot be there yet, so skip the EAGAIN.
            self._reply_due = False
            self._unyielded = 0
            await trio.lowlevel.wait_readable(sock)

    async def _yield_now_and_then(self, moved: int) -> None:
        """A checkpoint per `_YIELD_EVERY` bytes moved without waiting.

        A bulk transfer that never meets EAGAIN would otherwise never let
        other tasks (FUSE requests) run, nor a deadline fire.
        """
        self._unyielded += moved
        if self._unyielded >= _YIELD_EVERY:
            self._unyielded = 0
            await trio.lowlevel.checkpoint()

    def _closed_early(self, what: str) -> ConnectionClosed:
        self.mark_broken(f"closed by the server {what}")
        if self._reply_bytes == 0:
            return ConnectionClosed(
                f"{self.role} {self.addr} closed the connection without replying"
            )
        return ConnectionClosed(f"{self.role} {self.addr} closed the connection {what}")

    async def receive_header(self) -> Header:
        """Read the reply header; a header-only reply completes the exchange."""
        if self._state is not ConnState.BUSY:
            raise LocalProtocolError(f"no request under way on {self.addr}")
        return await self._read_header()

    async def _read_header(self) -> Header:
        frames = self._frames
        while True:
            header = frames.next_header()
            if not isinstance(header, NeedData):
                break
            n = await self._recv_into(frames.recv_buffer())
            if not n:
                raise self._closed_early("in the middle of a reply header")
            frames.received(n)
        if header.cmd != Cmd.RESP:
            self.mark_broken(f"reply with command {header.cmd}")
            raise ProtocolError(
                f"{self.role} {self.addr} replied with command {header.cmd}, expected {Cmd.RESP}"
            )
        self._finish_if_complete()
        return header

    def expect_status(self, header: Header, what: str) -> None:
        """Raise the `ServerError` for a non-zero status; ``what`` names op, file and server."""
        if header.status == 0:
            return
        if header.length:
            # FastDFS error replies are header only; what follows is unknown.
            self.mark_broken(f"status {header.status} reply with a {header.length}-byte body")
        elif header.status == errno.EINVAL and self.role == "storage":
            # A storage server closes the connection after every EINVAL reply.
            self.mark_broken("storage closes the connection after EINVAL")
        raise server_error(header.status, what)

    async def receive_into(self, view: memoryview) -> int:
        """Read up to ``len(view)`` bytes of the reply body; 0 once it is complete."""
        frames = self._frames
        left = frames.body_remaining
        if left == 0:
            return 0
        if frames.buffered:
            part = frames.take_body(len(view))
            n = len(part)
            view[:n] = part
        else:
            n = await self._recv_into(view[: min(len(view), left)])
            if not n:
                raise self._closed_early(f"with {left} reply bytes outstanding")
            frames.body_received(n)
        self._finish_if_complete()
        return n

    async def receive_chunk(self, max_size: int) -> bytes:
        """Up to ``max_size`` bytes of the reply body as new bytes; b"" once it is complete.

        For results returned as bytes this beats `receive_into`: the bytes
        come straight from the socket, with no zeroed buffer to copy out of.
        """
        frames = self._frames
        left = frames.body_remaining
        if left == 0:
            return b""
        if frames.buffered:
            data = bytes(frames.take_body(max_size))
        else:
            data = await self._recv(min(max_size, left))
            if not data:
                raise self._closed_early(f"with {left} reply bytes outstanding")
            frames.body_received(len(data))
        self._finish_if_complete()
        return data

    async def receive_exactly_into(self, view: memoryview) -> None:
        """Fill ``view`` from the reply body (which must hold that many bytes)."""
        left = self._frames.body_remaining
        if len(view) > left:
            raise LocalProtocolError(f"want {len(view)} bytes, the reply owes {left}")
        got = 0
        while got < len(view):
            got += await self.receive_into(view[got:])

    async def receive_body(self, max_size: int = MAX_REPLY_SIZE) -> bytes:
        """The rest of the reply body as bytes; `ProtocolError` beyond ``max_size``."""
        frames = self._frames
        size = frames.body_remaining
        if size > max_size:
            self.mark_broken(f"reply body of {size} bytes")
            raise ProtocolError(
                f"{self.role} {self.addr} sent a {size}-byte reply body (limit {max_size})"
            )
        if size <= frames.buffered:
            body = bytes(frames.take_body(size))
            self._finish_if_complete()
            return body
        buf = bytearray(size)
        await self.receive_exactly_into(memoryview(buf))
        return bytes(buf)

    async def stream_body(self, sink: Sink, *, chunk_size: int = CHUNK_SIZE) -> int:
        """Pass the rest of the body to ``sink`` in chunks; returns the bytes passed.

        The memoryview handed to ``sink`` is reused: copy what you keep. ``sink``
        may be a plain function or return an awaitable.
        """
        buf = bytearray(min(chunk_size, max(self._frames.body_remaining, 1)))
        view = memoryview(buf)
        total = 0
        while self._frames.body_remaining:
            n = await self.receive_into(view)
            result = sink(view[:n])
            if inspect.isawaitable(result):
                await result
            total += n
            self._kick()
        return total

    async def receive_until_close_into(self, view: memoryview) -> int:
        """Read a reply that ends when the server closes (FETCH_ONE_PATH_BINLOG); 0 at EOF.

        Its header announces a length no stream reaches (`BINLOG_STREAM_LENGTH`),
        so the framer counts it down like any body. Such a connection can never
        be reused.
        """
        self.mark_broken("reply ends with the server closing")
        frames = self._frames
        if frames.buffered:
            part = frames.take_body(len(view))
            view[: len(part)] = part
            return len(part)
        if not frames.body_remaining:
            return 0
        n = await self._recv_into(view[: min(len(view), frames.body_remaining)])
        if n:
            frames.body_received(n)
        return n

    def _finish_if_complete(self) -> None:
        if self._state is not ConnState.BUSY or self._frames.body_remaining:
            return
        extra = self._frames.buffered
        if extra:
            self.mark_broken(f"{extra} bytes beyond the reply")
            raise ProtocolError(f"{self.role} {self.addr} sent {extra} bytes beyond its reply")
        self._state = ConnState.IDLE
        self.uses += 1
        self.idle_since = trio.current_time()

    # ------------------------------------------------------------ one exchange

    async def request(
        self,
        request: Request,
        payload: Payload | None = None,
        *,
        what: str,
        max_size: int = MAX_REPLY_SIZE,
    ) -> bytes:
        """Send a request and return its whole reply body (raising for a bad status)."""
        await self.send_request(request, payload, what=what)
        header = await self.receive_header()
        self.expect_status(header, what)
        return await self.receive_body(max_size)
