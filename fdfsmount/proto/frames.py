"""Sans-IO framing: turn received bytes into (header, body) messages.

`FrameDecoder` buffers bytes and returns `NEED_DATA` until a whole message is
there. It is meant for replies and requests with small bodies; bulk bodies
(downloads, uploads, the binlog stream) are streamed by the I/O layer after
`next_header()`, which therefore accepts any length. Only `next_frame()`,
which would buffer the body, refuses bodies over ``max_body``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .constants import HEADER_SIZE
from .errors import ProtocolError
from .wire import Header, decode_header


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


@dataclass(frozen=True, slots=True)
class Frame:
    header: Header
    body: bytes


class FrameDecoder:
    """Incremental decoder of whole frames with bodies up to ``max_body`` bytes."""

    def __init__(self, max_body: int = 16 << 20) -> None:
        self._buf = bytearray()
        self._header: Header | None = None
        self.max_body = max_body

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    @property
    def trailing(self) -> bytes:
        """Bytes received beyond the frames taken so far."""
        return bytes(self._buf)

    def next_header(self) -> Header | _NeedData:
        """The next header (without consuming its body), whatever its length."""
        if self._header is None:
            if len(self._buf) < HEADER_SIZE:
                return NEED_DATA
            self._header = decode_header(bytes(self._buf[:HEADER_SIZE]))
            del self._buf[:HEADER_SIZE]
        return self._header

    def next_frame(self) -> Frame | _NeedData:
        """The next whole message; `ProtocolError` if its body exceeds ``max_body``."""
        header = self.next_header()
        if isinstance(header, _NeedData):
            return NEED_DATA
        if header.length > self.max_body:
            raise ProtocolError(f"message body of {header.length} bytes is too large")
        if len(self._buf) < header.length:
            return NEED_DATA
        body = bytes(self._buf[: header.length])
        del self._buf[: header.length]
        self._header = None
        return Frame(header, body)
