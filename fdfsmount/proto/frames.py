"""Sans-IO framing: one receive buffer turned into headers and bodies.

# Strategy
Every FastDFS message is a 10-byte header and ``header.length`` body bytes.
`FrameDecoder` owns the single receive buffer of a connection (h11's
``ReceiveBuffer``): the I/O layer puts received bytes into it, the decoder
hands out the next header, then the current message's body, and keeps
whatever arrived beyond it (the next pipelined request, say) for the next
call. It does no I/O and never blocks; "not enough bytes yet" is
`NEED_DATA`. The same decoder serves the client connection, the builtin
tracker and storage, their peer links, and the tests.

Receiving -- either copy bytes in or receive straight into the buffer::

    decoder.feed(data)                      # bytes from anywhere
    n = sock.recv_into(decoder.recv_buffer())
    decoder.received(n)                     # no copy: bytes land in the buffer

Messages -- a message is *current* from `next_header` until its body is
consumed, and `body_remaining` counts what it still owes::

    header = decoder.next_header()          # Header or NEED_DATA
    body = decoder.read_body(n)             # exactly n body bytes, or NEED_DATA
    view = decoder.take_body(limit)         # what is buffered of the body (may be empty)
    decoder.body_received(n)                # n body bytes went straight elsewhere
    frame = decoder.next_frame()            # header + whole body (small messages)
    header, body = decoder.next_message(limit)  # the same, or NEED_DATA with nothing taken
    message = decoder.receive_message(sock.recv_into, limit)  # receive once first if drained

`next_header` returns the current header again while its body is unread,
so a caller can look at it before deciding how to read the body; once the
body is consumed (at once for an empty body) the next call decodes the next
header.

Bulk bodies (uploads, downloads, the binlog stream) are not buffered: after
`take_body` has returned the buffered part, the I/O layer receives the rest
straight into its own memory (a file page, the caller's buffer) and reports
it with `body_received`, so the decoder stays in step without copying.
`want` tells the I/O layer how much the current message still needs beyond
the buffer, so that it never reads past a message it means to stream.

A client waiting for one reply receives the header into the buffer (which
may also pick up the start of the body, or the whole of a small reply), then
for the rest of a large body alternates: `take_body` while `buffered`, else
receive straight into the caller's buffer and report it with
`body_received`. Once a reply is consumed, anything still `buffered` is
bytes beyond it.

Views from `recv_buffer` and `take_body` point into the receive buffer and
are valid until the next `feed`, `recv_buffer` or `received` call. The
buffer grows only when one header plus a `read_body` needs more room; bytes
are never moved while a view is in use by the I/O layer, because it only
asks for a new `recv_buffer` after using the previous view. A drained
buffer offers all its room again.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Final

from .constants import HEADER_SIZE
from .errors import LocalProtocolError, ProtocolError
from .wire import Header, decode_header_at

#: Default size of the receive buffer (upstream's default ``buff_size``).
RECV_BUFFER_SIZE = 256 * 1024


class NeedData:
    """Type of `NEED_DATA`: the buffer does not hold what was asked for yet."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class Frame:
    header: Header
    body: bytes


class FrameDecoder:
    """Incremental decoder over one receive buffer.

    ``max_body`` bounds what `next_frame` buffers whole; bodies of any
    length can be streamed with `take_body` / `body_received`.
    """

    def __init__(
        self,
        max_body: int = 16 << 20,
        buffer_size: int = RECV_BUFFER_SIZE,
        *,
        buffer: bytearray | None = None,
    ) -> None:
        if buffer is None or len(buffer) < max(buffer_size, HEADER_SIZE):
            buffer = bytearray(max(buffer_size, HEADER_SIZE))
        # A given buffer is the caller's to reuse once this decoder is dropped
        # (a server thread serves one connection after another with its own).
        self._buf = buffer
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._header: Header | None = None
        self._remaining = 0
        self.max_body = max_body

    # ------------------------------------------------------------ receiving

    @property
    def buffered(self) -> int:
        """Bytes received and not handed out yet."""
        return self._end - self._start

    @property
    def trailing(self) -> bytes:
        """Bytes received beyond what was taken so far."""
        return bytes(self._view[self._start : self._end])

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        self._make_room(n)
        self._view[self._end : self._end + n] = data
        self._end += n

    def recv_buffer(self, min_size: int = 1) -> memoryview:
        """Free space at the end of the buffer to receive into (at least ``min_size``)."""
        if self._start == self._end:
            self._start = self._end = 0  # the common case of a drained buffer, inline
        if len(self._buf) - self._end < min_size:
            self._make_room(min_size)
        return self._view[self._end :]

    def receive(self, recv_into: Callable[[memoryview], int]) -> int:
        """Receive once with ``recv_into`` (a blocking socket's method) into the buffer.

        Returns what it returned: the byte count, 0 at EOF. `recv_buffer` and
        `received` in one call, for the connection threads' blocking loop (a
        small request arrives through `receive_message` instead).
        """
        n = recv_into(self.recv_buffer())
        self.received(n)
        return n

    def receive_message(
        self,
        recv_into: Callable[[memoryview], int],
        limit: int,
        cmds: Container[int] | None = None,
    ) -> tuple[Header, bytes] | NeedData | None:
        """`next_message`, after one receive with ``recv_into`` if nothing is buffered.

        None when that receive finds the peer closed (a clean EOF between
        messages). A connection thread reads the usual small request with
        this one call.
        """
        if self._start == self._end:
            n = recv_into(self._view)  # drained: the whole buffer is free
            if not 0 <= n <= len(self._buf):
                raise LocalProtocolError(f"received {n} bytes into a smaller buffer")
            if n == 0:
                self._start = self._end = 0
                return None
            self._start, self._end = 0, n
        return self.next_message(limit, cmds)

    def received(self, n: int) -> None:
        """``n`` bytes were received into the view `recv_buffer` returned."""
        if not 0 <= n <= len(self._buf) - self._end:
            raise LocalProtocolError(f"received {n} bytes into a smaller buffer")
        self._end += n

    def _make_room(self, n: int) -> None:
        if self._start == self._end:
            # Drained: the whole buffer is free again, so a connection that
            # runs one small exchange after another receives each in one call.
            self._start = self._end = 0
        if len(self._buf) - self._end >= n:
            return
        kept = self._end - self._start
        if kept + n <= len(self._buf):
            if kept:
                self._buf[:kept] = self._view[self._start : self._end]
        else:
            grown = bytearray(max(kept + n, 2 * len(self._buf)))
            grown[:kept] = self._view[self._start : self._end]
            self._view.release()
            self._buf = grown
            self._view = memoryview(grown)
        self._start, self._end = 0, kept

    # ------------------------------------------------------------ messages

    @property
    def body_remaining(self) -> int:
        """Body bytes the current message still owes (0 between messages)."""
        return self._remaining

    @property
    def want(self) -> int:
        """Bytes the current message needs beyond those buffered (a header between messages)."""
        if self._header is None or (self._remaining == 0):
            return max(HEADER_SIZE - self.buffered, 0)
        return max(self._remaining - self.buffered, 0)

    def next_header(self) -> Header | NeedData:
        """The current message's header while its body is unread, else the next one."""
        if self._header is not None and self._remaining:
            return self._header
        if self._end - self._start < HEADER_SIZE:
            self._header = None
            return NEED_DATA
        header = decode_header_at(self._buf, self._start)
        self._start += HEADER_SIZE
        self._header = header
        self._remaining = header.length
        return header

    def next_message(
        self, limit: int, cmds: Container[int] | None = None
    ) -> tuple[Header, bytes] | NeedData:
        """The next message and its body, if all of it is buffered already.

        Taken only when its body is at most ``limit`` bytes and, given
        ``cmds``, its command is one of them; otherwise `NEED_DATA`, and
        nothing is taken: read the message with `next_header` and the body
        calls. A server reads the usual small request this way in one call.
        """
        start = self._start
        if self._remaining or self._end - start < HEADER_SIZE:
            return NEED_DATA
        header = decode_header_at(self._buf, start)
        length = header.length
        body_at = start + HEADER_SIZE
        if (
            length > limit
            or self._end - body_at < length
            or (cmds is not None and header.cmd not in cmds)
        ):
            return NEED_DATA
        self._start = body_at + length
        self._header = header
        return header, bytes(self._view[body_at : self._start])

    def _check_body(self, size: int) -> None:
        if self._header is None:
            raise LocalProtocolError("no message is being read")
        if not 0 <= size <= self._remaining:
            raise LocalProtocolError(f"asked for {size} body bytes, {self._remaining} left")

    def read_body(self, size: int) -> bytes | NeedData:
        """Exactly ``size`` more bytes of the current body, or `NEED_DATA`."""
        self._check_body(size)
        if size > self.max_body:
            raise ProtocolError(f"a body part of {size} bytes is too large to buffer")
        if self._end - self._start < size:
            self._make_room(size - (self._end - self._start))
            return NEED_DATA
        data = bytes(self._view[self._start : self._start + size])
        self._start += size
        self._remaining -= size
        return data

    def take_body(self, limit: int | None = None) -> memoryview:
        """Up to ``limit`` buffered bytes of the current body (maybe none), without a copy."""
        n = min(self._end - self._start, self._remaining)
        if limit is not None:
            n = min(n, limit)
        view = self._view[self._start : self._start + n]
        self._start += n
        self._remaining -= n
        return view

    def body_received(self, n: int) -> None:
        """``n`` bytes of the current body were received outside the buffer."""
        self._check_body(n)
        if self._end > self._start and n:
            raise LocalProtocolError("body bytes are still buffered: take them first")
        self._remaining -= n

    def next_frame(self) -> Frame | NeedData:
        """The next whole message; `ProtocolError` if its body exceeds ``max_body``."""
        header = self.next_header()
        if isinstance(header, NeedData):
            return NEED_DATA
        if header.length > self.max_body:
            raise ProtocolError(f"message body of {header.length} bytes is too large")
        if self._remaining != header.length:
            raise LocalProtocolError("part of this body was already taken")
        body = self.read_body(header.length)
        if isinstance(body, NeedData):
            return NEED_DATA
        return Frame(header, body)
