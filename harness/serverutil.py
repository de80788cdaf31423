"""Plumbing shared by the builtin tracker and storage servers.

A trio socket wrapped by `SocketReader` (buffered reads into one reused
buffer, bulk payloads streamed through that same buffer) and `send_all` /
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

from fdfsmount.proto.constants import HEADER_SIZE, Cmd
from fdfsmount.proto.wire import Header, decode_header, encode_header

log = logging.getLogger(__name__)

#: Size of the per-connection receive buffer (upstream's default buff_size).
RECV_BUFFER_SIZE = 256 * 1024
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


class SocketReader:
    """Buffered reader over a trio socket with one reused receive buffer."""

    def __init__(self, sock: trio.socket.SocketType, bufsize: int = RECV_BUFFER_SIZE) -> None:
        self.sock = sock
        self._buf = bytearray(bufsize)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    @property
    def buffered(self) -> int:
        return self._end - self._start

    async def _recv_more(self) -> int:
        """Receive into the free tail of the buffer; 0 means EOF."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buf):
            kept = self._end - self._start
            self._buf[:kept] = self._buf[self._start : self._end]
            self._start, self._end = 0, kept
        try:
            n = await self.sock.recv_into(self._view[self._end :])
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise PeerClosed(str(exc)) from exc
        self._end += n
        return n

    async def read_header(self) -> Header | None:
        """The next request header, or None on a clean EOF between messages."""
        while self.buffered < HEADER_SIZE:
            if await self._recv_more() == 0:
                if self.buffered:
                    raise PeerClosed("connection closed inside a header")
                return None
        raw = bytes(self._view[self._start : self._start + HEADER_SIZE])
        self._start += HEADER_SIZE
        return decode_header(raw)

    async def read_exact(self, size: int) -> bytes:
        """Exactly ``size`` bytes (meant for small fields and bodies)."""
        if size <= len(self._buf):
            while self.buffered < size:
                if await self._recv_more() == 0:
                    raise PeerClosed(f"connection closed, {size - self.buffered} bytes short")
            data = bytes(self._view[self._start : self._start + size])
            self._start += size
            return data
        parts = [bytes(chunk) async for chunk in self.stream(size)]
        return b"".join(parts)

    async def stream(self, size: int) -> AsyncIterator[memoryview]:
        """Yield ``size`` bytes as views into the reused buffer.

        Each view is only valid until the next iteration: consume it (write
        it to a file, hash it) before asking for more.
        """
        remaining = size
        if self.buffered and remaining:
            n = min(self.buffered, remaining)
            chunk = self._view[self._start : self._start + n]
            self._start += n
            remaining -= n
            yield chunk
        while remaining:
            self._start = self._end = 0
            want = min(remaining, len(self._buf))
            try:
                n = await self.sock.recv_into(self._view[:want])
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise PeerClosed(str(exc)) from exc
            if n == 0:
                raise PeerClosed(f"connection closed, {remaining} payload bytes short")
            remaining -= n
            yield self._view[:n]

    async def read_into(self, view: memoryview) -> None:
        """Fill ``view`` completely: buffered bytes first, then straight from the socket."""
        filled = 0
        if self.buffered:
            n = min(self.buffered, len(view))
            view[:n] = self._view[self._start : self._start + n]
            self._start += n
            filled = n
        while filled < len(view):
            try:
                n = await self.sock.recv_into(view[filled:])
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise PeerClosed(str(exc)) from exc
            if n == 0:
                raise PeerClosed(f"connection closed, {len(view) - filled} payload bytes short")
            filled += n

    async def discard(self, size: int) -> None:
        async for _ in self.stream(size):
            pass


async def send_all(sock: trio.socket.SocketType, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = await sock.send(view)
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
