"""One reply over a blocking socket, framed by `FrameDecoder`.

# Strategy
For the places that speak FastDFS over a plain blocking socket -- the
blocking client's small reads, the harness's tracker queries -- without the
trio connection. The reading is the connection's: the header is received
into the decoder's buffer, which may pick up the body too (a small reply
costs one ``recv``), and the rest of a larger body is received straight into
a buffer of its final size. Nothing is read past the reply except by the
header read; bytes it picked up beyond the reply stay in the decoder, and a
caller that pools the socket must not reuse it then (`decoder.buffered`).
Timeouts are the socket's own (``settimeout``).
"""

from __future__ import annotations

from typing import Literal, Protocol, overload

from .constants import HEADER_SIZE, Cmd
from .errors import ConnectionClosed, ProtocolError
from .frames import Frame, FrameDecoder, NeedData

#: Receive buffer for one exchange: what the header read may pick up.
_BUFFER_LIMIT = 64 * 1024


class Receiver(Protocol):
    """What is read from: a blocking `socket.socket`."""

    def recv_into(self, buffer: memoryview, /) -> int: ...


def new_decoder(max_body: int) -> FrameDecoder:
    """A decoder sized for replies of up to ``max_body`` bytes (at most 64 KiB of buffer)."""
    return FrameDecoder(max_body=max_body, buffer_size=min(HEADER_SIZE + max_body, _BUFFER_LIMIT))


@overload
def receive_reply(
    sock: Receiver, decoder: FrameDecoder, *, peer: str, allow_eof: Literal[False] = False
) -> Frame: ...
@overload
def receive_reply(
    sock: Receiver, decoder: FrameDecoder, *, peer: str, allow_eof: bool
) -> Frame | None: ...
def receive_reply(
    sock: Receiver, decoder: FrameDecoder, *, peer: str, allow_eof: bool = False
) -> Frame | None:
    """The next reply on ``sock``.

    ``allow_eof``: None if the server closed before sending a byte (an idle
    pooled connection it dropped); else that is a `ConnectionClosed` too.
    `ProtocolError` for a message that is not a reply or a body larger than
    ``decoder.max_body``. ``peer`` names the server in errors.
    """
    got_any = decoder.buffered > 0
    while True:
        header = decoder.next_header()
        if not isinstance(header, NeedData):
            break
        n = sock.recv_into(decoder.recv_buffer())
        if not n:
            if allow_eof and not got_any:
                return None
            raise ConnectionClosed(f"{peer} closed the connection in the middle of a reply")
        got_any = True
        decoder.received(n)
    if header.cmd != Cmd.RESP:
        raise ProtocolError(f"{peer} replied with command {header.cmd}, expected {Cmd.RESP}")
    if header.length > decoder.max_body:
        raise ProtocolError(
            f"{peer} sent a {header.length}-byte reply body (limit {decoder.max_body})"
        )
    if header.length <= decoder.buffered:
        return Frame(header, bytes(decoder.take_body(header.length)))
    body = bytearray(header.length)
    view = memoryview(body)
    got = 0
    while decoder.body_remaining:
        if decoder.buffered:
            part = decoder.take_body()
            view[got : got + len(part)] = part
            got += len(part)
            continue
        n = sock.recv_into(view[got : got + decoder.body_remaining])
        if not n:
            raise ConnectionClosed(
                f"{peer} closed the connection with {decoder.body_remaining} reply bytes"
                " outstanding"
            )
        decoder.body_received(n)
        got += n
    return Frame(header, bytes(body))


__all__ = ["Receiver", "new_decoder", "receive_reply"]
