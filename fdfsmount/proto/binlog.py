"""Incremental decoder of the FETCH_ONE_PATH_BINLOG (cmd 26) reply stream.

# Strategy
The reply header's length is the sentinel 2^58, not a real length. Lines
``<unix time> <op> <remote name>\\n`` follow, then 8 big-endian bytes equal
to the number of line bytes sent, then the server closes the connection.
There is no end marker, and the count may itself contain ``\\n`` bytes, so the
decoder always holds back the last 8 bytes it has seen: only bytes before
them can be lines. At end of stream exactly those 8 bytes must remain and
match the count.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ProtocolError

_COUNT = struct.Struct(">Q")
TRAILER_SIZE = 8
MAX_LINE = 4096


@dataclass(frozen=True, slots=True)
class BinlogRecord:
    timestamp: int
    op: str  # 'C' created here, 'c' replicated here, 'L'/'l' links
    remote_name: str
    extra: str = ""  # link target for 'L'/'l' lines


class BinlogStreamDecoder:
    """Feed bytes as they arrive; get records; call `close()` at EOF."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._line_bytes = 0
        self._closed = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[BinlogRecord]:
        if self._closed:
            raise ProtocolError("binlog stream: data after close")
        self._buf += data
        records: list[BinlogRecord] = []
        limit = len(self._buf) - TRAILER_SIZE
        start = 0
        while start < limit:
            end = self._buf.find(b"\n", start, limit)
            # Same limit whether the line is complete or still arriving, so
            # the outcome does not depend on how the stream was chunked.
            if (limit if end < 0 else end) - start > MAX_LINE:
                raise ProtocolError("binlog stream: line too long")
            if end < 0:
                break
            records.append(_parse_line(bytes(self._buf[start:end])))
            start = end + 1
        if start:
            self._line_bytes += start
            del self._buf[:start]
        return records

    def close(self) -> int:
        """Check the trailer at end of stream; return the number of line bytes."""
        self._closed = True
        if len(self._buf) != TRAILER_SIZE:
            raise ProtocolError(
                f"binlog stream ended with {len(self._buf)} unparsed bytes (want an 8-byte count)"
            )
        count = int(_COUNT.unpack(self._buf)[0])
        if count != self._line_bytes:
            raise ProtocolError(f"binlog stream count {count} != {self._line_bytes} bytes received")
        return count


_LINE_RE = re.compile(rb"(0|[1-9][0-9]{0,18}) ([A-Za-z]) ([!-~]+)(?: ([!-~]+))?")


def _parse_line(line: bytes) -> BinlogRecord:
    """``<time> <op> <name>[ <extra>]``, as upstream's storage_binlog_write_ex writes it."""
    match = _LINE_RE.fullmatch(line)
    if match is None:
        raise ProtocolError(f"binlog stream: bad line {line[:80]!r}")
    ts, op, name, extra = match.groups()
    return BinlogRecord(int(ts), op.decode(), name.decode(), (extra or b"").decode())


def encode_binlog_lines(records: Iterable[BinlogRecord]) -> bytes:
    out = []
    for rec in records:
        extra = f" {rec.extra}" if rec.extra else ""
        out.append(f"{rec.timestamp} {rec.op} {rec.remote_name}{extra}\n".encode())
    return b"".join(out)


def encode_binlog_trailer(line_bytes: int) -> bytes:
    return _COUNT.pack(line_bytes)
