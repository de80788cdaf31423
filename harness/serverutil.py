"""Plumbing shared by the builtin tracker and storage servers.

A trio socket wrapped by `FramedSocket` (the trio shell over
`fdfsmount.proto.frames.FrameDecoder`: one receive buffer per connection,
bulk payloads streamed through it or received straight into the caller's
memory, ``TCP_QUICKACK`` re-armed after every receive) and `send_all` /
`send_file` (os.sendfile on the socket fd), the replies every server sends,
the accept loop, and the command-line scaffolding: logging to stderr, the
``READY <port>`` line the launcher waits for, and a clean exit on SIGTERM.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import trio

from fdfsmount.proto.constants import Cmd
from fdfsmount.proto.frames import RECV_BUFFER_SIZE, FrameDecoder, NeedData
from fdfsmount.proto.wire import Header, encode_header

log = logging.getLogger(__name__)

#: Largest chunk handed to one os.sendfile call.
SENDFILE_CHUNK = 4 * 1024 * 1024
#: How long a connection closed after an error reply keeps draining input,
#: so that unread request bytes do not turn our FIN into a RST.
CLOSE_DRAIN_SECONDS = 1.0


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
    the caller's memory) and re-arms ``TCP_QUICKACK``: clients that leave
    Nagle on and write a request's header and body separately (the upstream
    C client) wait for our ACK of the header before sending the body, and
    Linux's delayed ACK would hold it for up to 40 ms. Upstream's servers
    re-arm it after each read for the same reason.

    Receives are plain non-blocking syscalls that wait with trio only when
    nothing is there: trio's socket methods take two extra scheduler passes
    per call, which cost more than the request itself. So that a peer
    sending without pause cannot starve the other connections,
    `read_header` yields once when the previous message never had to wait.
    """

    def __init__(self, sock: trio.socket.SocketType, bufsize: int = RECV_BUFFER_SIZE) -> None:
        self.sock = sock
        self.decoder = FrameDecoder(max_body=bufsize, buffer_size=bufsize)
        self._fd = sock.fileno()
        self._quickack = quick_ack(sock)
        self._waited = True

    @property
    def buffered(self) -> int:
        return self.decoder.buffered

    async def _recv_into(self, view: memoryview) -> int:
        while True:
            try:
                n = os.readv(self._fd, (view,))
            except BlockingIOError:
                self._waited = True
                await trio.lowlevel.wait_readable(self._fd)
                continue
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise PeerClosed(str(exc)) from exc
            break
        if self._quickack and n:
            self._quickack = quick_ack(self.sock)
        return n

    async def _fill(self) -> int:
        """Receive more into the decoder's buffer; 0 means EOF."""
        decoder = self.decoder
        n = await self._recv_into(decoder.recv_buffer())
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
            if await self._fill() == 0:
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
        await send_all(self.sock, data)


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


async def send_all(sock: trio.socket.SocketType, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data``, waiting with trio only while the socket buffer is full."""
    fd = sock.fileno()
    view = memoryview(data)
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


async def send_reply(sock: trio.socket.SocketType, body: bytes = b"", status: int = 0) -> None:
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


ConnectionHandler = Callable[[trio.SocketStream], Awaitable[None]]


async def serve(
    handler: ConnectionHandler,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on host:port forever; report the bound port."""
    if not host.startswith("127."):
        raise ValueError(f"refusing to bind {host}: the harness binds loopback addresses only")
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]

    async def guarded(stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        except (PeerClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except OSError as exc:
            log.debug("connection ended: %s", exc)
        except Exception:
            log.exception("connection handler failed")
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    task_status.started(bound)
    await trio.serve_listeners(guarded, listeners)


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
