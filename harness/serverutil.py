"""Plumbing shared by the builtin tracker and storage servers.

The accept loop (`serve_in_threads`: each client connection is served by
its own thread with a plain blocking socket read through
`BlockingFramedSocket`), the trio shell over the same framer for links and
handlers that run in the event loop (`FramedSocket`, `send_all`,
`send_file`), both over `fdfsmount.proto.frames.FrameDecoder` (one receive
buffer per connection, ``TCP_QUICKACK`` armed while a message is partly
received), the replies every server sends, and the command-line
scaffolding: logging to stderr, the ``READY <port>`` line the launcher waits
for, and a clean exit on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Hashable
from typing import TypeVar

import trio

from fdfsmount.proto.constants import Cmd
from fdfsmount.proto.frames import RECV_BUFFER_SIZE, FrameDecoder, NeedData
from fdfsmount.proto.wire import Header, encode_header

log = logging.getLogger(__name__)

_RESP = int(Cmd.RESP)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Largest chunk handed to one os.sendfile call.
SENDFILE_CHUNK = 4 * 1024 * 1024
#: How long a connection closed after an error reply keeps draining input,
#: so that unread request bytes do not turn our FIN into a RST.
CLOSE_DRAIN_SECONDS = 1.0


class Memo(dict[K, V]):
    """A dict for values that never change once computed (what a name resolves to,
    what a request body decodes to), emptied when it reaches ``limit`` entries.

    Connection threads share one: a get or a put is atomic under the GIL, and
    losing the whole cache now and then costs only the recomputation.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: K, value: V) -> V:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


class PeerClosed(Exception):
    """The peer closed the connection (or reset it) in the middle of a message."""


class RequestError(Exception):
    """A request is answered with a header-only error reply.

    ``close`` says whether the connection is closed after the reply (the
    storage closes after every EINVAL, as upstream does).
    """

    def __init__(self, status: int, message: str = "", *, close: bool | None = None) -> None:
        super().__init__(message or os.strerror(status))
        self.status = status
        self.close = status == errno.EINVAL if close is None else close


class FramedSocket:
    """A trio socket read through one `FrameDecoder` (the trio shell over the codec).

    Every receive lands in the decoder's buffer (or, for bulk payloads, in
    the caller's memory). Before waiting for the rest of a message that
    arrived in part, ``TCP_QUICKACK`` is armed: clients that leave Nagle on
    and write a request's header and body separately (the upstream C
    client) wait for our ACK of the header before sending the body, and
    Linux's delayed ACK would hold it for up to 40 ms; arming the flag sends
    the pending ACK at once. (Upstream's servers re-arm it after every read
    for the same reason; a message that arrived whole needs no early ACK,
    as the reply carries it, so the syscall is saved there.)

    Receives are plain non-blocking syscalls that wait with trio only when
    nothing is there: trio's socket methods take two extra scheduler passes
    per call, which cost more than the request itself. So that a peer
    sending without pause cannot starve the other connections,
    `read_header` yields once when the previous message never had to wait.
    """

    def __init__(
        self,
        sock: trio.socket.SocketType,
        bufsize: int = RECV_BUFFER_SIZE,
        *,
        decoder: FrameDecoder | None = None,
    ) -> None:
        self.sock = sock
        # A connection handed over from its thread keeps its one decoder (and buffered bytes).
        self.decoder = decoder or FrameDecoder(max_body=bufsize, buffer_size=bufsize)
        self._fd = sock.fileno()
        self._quickack = quick_ack(sock)
        self._waited = True

    @property
    def buffered(self) -> int:
        return self.decoder.buffered

    async def _recv_into(self, view: memoryview, partial: bool = True) -> int:
        """Receive into ``view``; ``partial`` says a message is under way (ACK it early)."""
        while True:
            try:
                return os.readv(self._fd, (view,))
            except BlockingIOError:
                self._waited = True
                if partial and self._quickack:
                    self._quickack = quick_ack(self.sock)
                await trio.lowlevel.wait_readable(self._fd)
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise PeerClosed(str(exc)) from exc

    async def _fill(self, partial: bool = True) -> int:
        """Receive more into the decoder's buffer; 0 means EOF."""
        decoder = self.decoder
        n = await self._recv_into(decoder.recv_buffer(), partial)
        decoder.received(n)
        return n

    async def receive_body(self) -> None:
        """Receive more of the current body into the buffer (`PeerClosed` at EOF)."""
        if await self._fill() == 0:
            remaining = self.decoder.body_remaining
            raise PeerClosed(f"connection closed, {remaining} payload bytes short")

    async def read_header(self) -> Header | None:
        """The next message's header, or None on a clean EOF between messages."""
        if not self._waited:
            await trio.lowlevel.checkpoint()
        self._waited = False
        decoder = self.decoder
        while True:
            header = decoder.next_header()
            if not isinstance(header, NeedData):
                return header
            if await self._fill(decoder.buffered > 0) == 0:
                if decoder.buffered:
                    raise PeerClosed("connection closed inside a header")
                return None

    async def read_exact(self, size: int) -> bytes:
        """Exactly ``size`` more bytes of the current body (small fields and bodies)."""
        decoder = self.decoder
        if size > decoder.max_body:
            parts = [bytes(chunk) async for chunk in self.stream(size)]
            return b"".join(parts)
        while True:
            data = decoder.read_body(size)
            if not isinstance(data, NeedData):
                return data
            if await self._fill() == 0:
                raise PeerClosed(f"connection closed, {size - decoder.buffered} bytes short")

    async def stream(self, size: int) -> AsyncIterator[memoryview]:
        """Yield ``size`` more body bytes as views into the receive buffer.

        Each view is only valid until the next iteration: consume it (write
        it to a file, hash it) before asking for more.
        """
        decoder = self.decoder
        remaining = size
        while remaining:
            chunk = decoder.take_body(remaining)
            if chunk:
                remaining -= len(chunk)
                yield chunk
                continue
            if await self._fill() == 0:
                raise PeerClosed(f"connection closed, {remaining} payload bytes short")

    async def read_into(self, view: memoryview) -> None:
        """Fill ``view`` with body bytes: buffered ones first, then straight from the socket."""
        decoder = self.decoder
        head = decoder.take_body(len(view))
        filled = len(head)
        view[:filled] = head
        while filled < len(view):
            n = await self._recv_into(view[filled:])
            if n == 0:
                raise PeerClosed(f"connection closed, {len(view) - filled} payload bytes short")
            decoder.body_received(n)
            filled += n

    async def discard(self, size: int) -> None:
        async for _ in self.stream(size):
            pass

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        await send_all(self._fd, data)

    async def send_reply(self, body: bytes = b"", status: int = 0) -> None:
        await send_all(self._fd, encode_header(len(body), Cmd.RESP, status) + body)


class BlockingFramedSocket:
    """A plain blocking socket read through one `FrameDecoder`, for a connection's own thread.

    The same framing and ``TCP_QUICKACK`` rule as `FramedSocket`, without an
    event loop: a thread blocked in ``recv`` costs nothing, and a request
    that arrives is served with two syscalls and no scheduling. A receive
    waits at most ``timeout`` seconds inside a message (`PeerClosed` after
    that) and forever between messages.
    """

    def __init__(
        self,
        sock: socket.socket,
        bufsize: int = RECV_BUFFER_SIZE,
        *,
        max_body: int | None = None,
        timeout: float | None = 60.0,
        buffer: bytearray | None = None,
    ) -> None:
        """``buffer``: receive into it rather than a new one (see `thread_buffer`)."""
        self.sock = sock
        self.decoder = FrameDecoder(
            max_body=max_body or bufsize, buffer_size=bufsize, buffer=buffer
        )
        if sock.gettimeout() is not None:
            sock.setblocking(True)
        if timeout is not None:
            # Bounds a receive at the OS level, so a blocking recv needs no poll first.
            seconds = int(timeout)
            micros = int((timeout - seconds) * 1e6)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, micros)
            )
        self._quickack = QUICKACK is not None
        self._recv_into = sock.recv_into

    def _fill(self, partial: bool = True) -> int:
        """Receive more into the decoder's buffer; 0 means EOF."""
        decoder = self.decoder
        if partial and self._quickack:
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)  # type: ignore[arg-type]
            except OSError:
                self._quickack = False
        while True:
            try:
                return decoder.receive(self._recv_into)
            except BlockingIOError:  # SO_RCVTIMEO expired
                if partial:
                    raise PeerClosed("connection stalled inside a message") from None
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise PeerClosed(str(exc)) from exc

    def read_header(self) -> Header | None:
        """The next message's header, or None on a clean EOF between messages."""
        decoder = self.decoder
        if not decoder.buffered and self._fill(False) == 0:
            return None  # the usual case: nothing is left of the last request
        while True:
            header = decoder.next_header()
            if not isinstance(header, NeedData):
                return header
            if self._fill(decoder.buffered > 0) == 0:
                if decoder.buffered:
                    raise PeerClosed("connection closed inside a header")
                return None

    def read_request(
        self, limit: int, cmds: Container[int] | None = None
    ) -> tuple[Header, bytes | None] | None:
        """The next message, or None on a clean EOF between messages.

        ``(header, body)`` when it arrived whole with a body of at most
        ``limit`` bytes and (given ``cmds``) one of those commands: the usual
        small request, read in one receive and one decoder call. Otherwise
        ``(header, None)``, its body still to be read (`read_exact`, `discard`,
        the decoder's body calls).
        """
        try:
            message = self.decoder.receive_message(self._recv_into, limit, cmds)
        except BlockingIOError:  # SO_RCVTIMEO: waiting between messages is fine
            if self._fill(False) == 0:
                return None
            message = self.decoder.next_message(limit, cmds)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise PeerClosed(str(exc)) from exc
        if message is None or not isinstance(message, NeedData):
            return message
        header = self.read_header()
        return None if header is None else (header, None)

    def read_exact(self, size: int) -> bytes:
        """Exactly ``size`` more bytes of the current body (at most the buffer size)."""
        decoder = self.decoder
        while True:
            data = decoder.read_body(size)
            if not isinstance(data, NeedData):
                return data
            if self._fill() == 0:
                raise PeerClosed(f"connection closed, {size - decoder.buffered} bytes short")

    def receive_body(self) -> None:
        """Receive more of the current body into the buffer (`PeerClosed` at EOF)."""
        if self._fill() == 0:
            remaining = self.decoder.body_remaining
            raise PeerClosed(f"connection closed, {remaining} payload bytes short")

    def discard(self, size: int) -> None:
        decoder = self.decoder
        while size:
            chunk = decoder.take_body(size)
            if chunk:
                size -= len(chunk)
            else:
                self.receive_body()

    def close_after_error(self) -> None:
        """Half-close, then drain briefly so pending input does not cause a RST."""
        sock = self.sock
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(CLOSE_DRAIN_SECONDS)
            scratch = bytearray(65536)
            total = 0
            while total < (16 << 20):
                n = sock.recv_into(scratch)
                if n == 0:
                    return
                total += n
        except OSError:  # includes the drain's timeout
            return

    def send(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise PeerClosed(str(exc)) from exc

    def send_reply(self, body: bytes = b"", status: int = 0) -> None:
        self.send(encode_header(len(body), _RESP, status) + body)

    def send_file(self, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``fd`` from ``offset`` (os.sendfile, else read+send)."""
        end = offset + count
        out_fd = self.sock.fileno()
        try:
            while offset < end:
                try:
                    sent = os.sendfile(out_fd, fd, offset, min(end - offset, SENDFILE_CHUNK))
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    break
                if sent == 0:
                    raise PeerClosed(f"file ended {end - offset} bytes early")
                offset += sent
            while offset < end:
                chunk = os.pread(fd, min(end - offset, RECV_BUFFER_SIZE), offset)
                if not chunk:
                    raise PeerClosed(f"file ended {end - offset} bytes early")
                self.sock.sendall(chunk)
                offset += len(chunk)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise PeerClosed(str(exc)) from exc


#: ``TCP_QUICKACK`` where the platform has it (Linux), else None.
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def quick_ack(sock: trio.socket.SocketType) -> bool:
    """Ask the kernel to ACK the next segment at once (a one-shot flag on Linux).

    False where that cannot be done, so callers stop trying.
    """
    if QUICKACK is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
    except OSError:
        return False
    return True


async def send_all(
    sock: trio.socket.SocketType | int, data: bytes | bytearray | memoryview
) -> None:
    """Write all of ``data`` to a socket (or its fd), waiting with trio only while it is full."""
    fd = sock if isinstance(sock, int) else sock.fileno()
    try:
        sent = os.write(fd, data)  # the common case: all of it at once, no view
    except BlockingIOError:
        sent = 0
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise PeerClosed(str(exc)) from exc
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    while view:
        try:
            sent = os.write(fd, view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
            continue
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise PeerClosed(str(exc)) from exc
        view = view[sent:]


async def send_file(sock: trio.socket.SocketType, fd: int, offset: int, count: int) -> None:
    """Send ``count`` bytes of ``fd`` from ``offset`` with os.sendfile.

    Falls back to read+send if the kernel refuses sendfile for this pair.
    """
    out_fd = sock.fileno()
    end = offset + count
    while offset < end:
        try:
            sent = os.sendfile(out_fd, fd, offset, min(end - offset, SENDFILE_CHUNK))
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise PeerClosed(str(exc)) from exc
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            await _send_file_by_copy(sock, fd, offset, end - offset)
            return
        if sent == 0:
            raise PeerClosed(f"file ended {end - offset} bytes early")
        offset += sent
        await trio.lowlevel.checkpoint()


async def _send_file_by_copy(
    sock: trio.socket.SocketType, fd: int, offset: int, count: int
) -> None:
    while count > 0:
        chunk = os.pread(fd, min(count, RECV_BUFFER_SIZE), offset)
        if not chunk:
            raise PeerClosed(f"file ended {count} bytes early")
        await send_all(sock, chunk)
        offset += len(chunk)
        count -= len(chunk)


async def send_reply(
    sock: trio.socket.SocketType | int, body: bytes = b"", status: int = 0
) -> None:
    await send_all(sock, encode_header(len(body), Cmd.RESP, status) + body)


async def close_after_error(sock: trio.socket.SocketType) -> None:
    """Half-close, then drain briefly so pending input does not cause a RST."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    with trio.move_on_after(CLOSE_DRAIN_SECONDS):
        scratch = bytearray(65536)
        total = 0
        while total < (16 << 20):
            try:
                n = await sock.recv_into(scratch)
            except OSError:
                return
            if n == 0:
                return
            total += n


#: Serves one accepted connection: the blocking socket and the peer's IP address.
BlockingHandler = Callable[[socket.socket, str], None]


_thread_state = threading.local()


def thread_buffer(size: int) -> bytearray:
    """The calling thread's receive buffer of ``size`` bytes, made once per thread.

    A connection thread serves one connection after another, one at a time:
    its connections share this buffer instead of each allocating (and the
    system zeroing) a new one, which a client that opens a connection per
    request would pay for every request.
    """
    buffer: bytearray | None = getattr(_thread_state, "buffer", None)
    if buffer is None or len(buffer) != size:
        buffer = _thread_state.buffer = bytearray(size)
    return buffer


#: Threads per listener started waiting in ``accept``.
SPARE_ACCEPTORS = 2
#: A thread whose connection ended goes back to ``accept`` while fewer wait
#: (the margin keeps a client that reconnects at once from making a thread
#: start and another end per connection).
MAX_WAITING = 8


class AcceptingThreads:
    """Threads that each accept a connection on one listener and serve it themselves.

    Leader/followers: a thread blocked in ``accept`` takes the next connection
    and serves it on the spot -- no hand-over to another thread or to the event
    loop, which on this kind of client (upstream's C client opens a connection
    per request by default) would cost a wake-up per connection. The kernel
    wakes one waiting thread per connection. When the last waiting thread takes
    a connection, a new one starts waiting, so connections are never queued
    behind a long one (a replication link or a persistent client holds its
    thread for its whole life); a thread whose connection ends goes back to
    ``accept`` while fewer than `MAX_WAITING` wait, and ends otherwise.
    Shutting the listener down ends every waiting thread.
    """

    def __init__(self, listener: socket.socket, serve: BlockingHandler) -> None:
        self._listener = listener
        self._serve = serve
        self._lock = threading.Lock()
        self._waiting = 0
        self._closed = False

    @property
    def waiting(self) -> int:
        """Threads blocked in ``accept``."""
        return self._waiting

    def start(self) -> None:
        for _ in range(SPARE_ACCEPTORS):
            self._spawn()
        if not self._waiting:
            raise OSError(errno.EAGAIN, "could not start a connection thread")

    def close(self) -> None:
        """No thread accepts again: the listener is shut down, which wakes those that wait."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)

    def _spawn(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._waiting += 1
        try:
            threading.Thread(target=self._run, name="fdfs-connection", daemon=True).start()
        except RuntimeError as exc:  # the system refused another thread
            with self._lock:
                self._waiting -= 1
            log.warning("no new connection thread (%s): connections wait for a free one", exc)

    def _run(self) -> None:
        while True:
            try:
                sock, address = self._listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    log.warning("accept failed: %s", exc)
                    time.sleep(0.1)
                    continue
                with self._lock:  # the listener was shut down: the server stops
                    self._waiting -= 1
                return
            with self._lock:
                self._waiting -= 1
                none_left = self._waiting == 0
            if none_left:
                self._spawn()
            self._serve(sock, str(address[0]))
            with self._lock:
                if self._closed or self._waiting >= MAX_WAITING:
                    return
                self._waiting += 1


async def serve_in_threads(
    handler: BlockingHandler,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on host:port forever, each served by ``handler`` in its own thread.

    The handler gets a blocking socket (``TCP_NODELAY`` set: accepted sockets
    inherit it from the listener) and the peer's address, and owns the socket
    until it returns; it runs outside trio's threads (see `AcceptingThreads`), so it
    reaches the event loop with an explicit ``trio_token``. When this task is
    cancelled the listening sockets and every open connection are shut down,
    which ends the threads waiting in ``accept`` and each connection thread's
    blocking receive.
    """
    if not host.startswith("127."):
        raise ValueError(f"refusing to bind {host}: the harness binds loopback addresses only")
    listeners = [
        socket.socket(fileno=listener.socket.detach())
        for listener in await trio.open_tcp_listeners(port, host=host)
    ]
    bound = listeners[0].getsockname()[1]
    open_socks: set[socket.socket] = set()

    def guarded(sock: socket.socket, peer: str) -> None:
        open_socks.add(sock)
        try:
            handler(sock, peer)
        except (PeerClosed, trio.RunFinishedError, trio.Cancelled):
            pass  # the peer left, or the server stopped while serving a handed-over request
        except OSError as exc:
            log.debug("connection ended: %s", exc)
        except Exception:
            log.exception("connection handler failed")
        finally:
            open_socks.discard(sock)
            sock.close()

    acceptors = []
    for listener in listeners:
        listener.setblocking(True)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        acceptors.append(AcceptingThreads(listener, guarded))
    try:
        for threads in acceptors:
            threads.start()
        task_status.started(bound)
        await trio.sleep_forever()
    finally:
        for threads in acceptors:
            threads.close()
        for listener in listeners:
            listener.close()
        for sock in list(open_socks):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------- process glue


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default=os.environ.get("FDFS_HARNESS_LOG", "INFO"), help="logging level"
    )


def setup_logging(level: str, name: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )


def announce_ready(port: int) -> None:
    """The one line on stdout the launcher waits for."""
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()


def run_server(run: Callable[..., Awaitable[None]]) -> None:
    """A server's whole life: ``run`` (a ``task_status`` task reporting its port),
    the READY line once it listens, and a clean stop on SIGTERM or SIGINT."""
    trio.run(_serve_until_signalled, run)


async def _serve_until_signalled(run: Callable[..., Awaitable[None]]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            announce_ready(await nursery.start(run))
            async for signum in signals:
                log.info("received signal %d, shutting down", signum)
                nursery.cancel_scope.cancel()
                break


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)
