"""Header framing and fixed-width field helpers shared by every message.

# Strategy
Every FastDFS message is a 10-byte header (body length, command, status)
followed by a body of fixed-width fields: 8-byte big-endian integers,
NUL-padded strings, and at most one trailing string or payload whose size is
whatever the header length leaves. `FieldReader` walks a body and raises
`ProtocolError` (remote fault) on anything short or malformed, so decoders
never leak `struct.error`, `IndexError` or `UnicodeDecodeError`.
Encoders raise `LocalProtocolError` (our fault) for values that do not fit.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

from .constants import GROUP_NAME_LEN, HEADER_SIZE
from .errors import LocalProtocolError, ProtocolError

_HEADER = struct.Struct(">QBB")
_INT64 = struct.Struct(">q")
_UINT64 = struct.Struct(">Q")
_INT32 = struct.Struct(">i")

INT64_MAX = (1 << 63) - 1


class Header(NamedTuple):
    """A decoded 10-byte message header.

    A named tuple: every request and reply decodes one, and a tuple is made
    straight from the unpacked fields at a fraction of a frozen dataclass's cost.
    """

    length: int
    cmd: int
    status: int

    def encode(self) -> bytes:
        return encode_header(self.length, self.cmd, self.status)


_new_header = tuple.__new__


def encode_header(length: int, cmd: int, status: int = 0) -> bytes:
    if not 0 <= length < (1 << 64):
        raise LocalProtocolError(f"body length {length} out of range")
    if not (0 <= cmd <= 255 and 0 <= status <= 255):
        raise LocalProtocolError(f"cmd {cmd} / status {status} out of byte range")
    return _HEADER.pack(length, cmd, status)


def decode_header(data: bytes | bytearray | memoryview) -> Header:
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"header must be {HEADER_SIZE} bytes, got {len(data)}")
    return _new_header(Header, _HEADER.unpack(data))


def decode_header_at(buffer: bytes | bytearray | memoryview, offset: int) -> Header:
    """The header at ``offset`` of ``buffer``, which must hold its 10 bytes there."""
    return _new_header(Header, _HEADER.unpack_from(buffer, offset))


def pack_int(value: int) -> bytes:
    """An 8-byte big-endian signed integer field."""
    try:
        return _INT64.pack(value)
    except struct.error as exc:
        raise LocalProtocolError(f"integer {value} does not fit 8 bytes") from exc


def pack_int32(value: int) -> bytes:
    try:
        return _INT32.pack(value)
    except struct.error as exc:
        raise LocalProtocolError(f"integer {value} does not fit 4 bytes") from exc


def encode_text(text: str, what: str = "text") -> bytes:
    """UTF-8 bytes of ``text``; the inverse of `decode_text` (surrogateescape).

    A string that cannot be encoded (e.g. a lone surrogate outside the
    surrogateescape range) is the caller's fault: `LocalProtocolError`.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{what} {text!r} cannot be encoded") from exc


def pack_fixed(text: str | bytes, size: int, what: str = "field") -> bytes:
    """A NUL-padded field; a value of exactly `size` bytes carries no NUL."""
    raw = encode_text(text, what) if isinstance(text, str) else bytes(text)
    if len(raw) > size:
        raise LocalProtocolError(f"{what} {raw!r} longer than {size} bytes")
    return raw.ljust(size, b"\0")


@functools.lru_cache(maxsize=1024)
def pack_group(group: str) -> bytes:
    """The 16-byte group field (remembered: a cluster has a few groups, named in most messages)."""
    validate_group_name(group)
    return pack_fixed(group, GROUP_NAME_LEN, "group name")


def validate_group_name(group: str) -> None:
    """Group names: 1-16 ASCII letters and digits.

    That is upstream's ``fdfs_validate_group_name``: a tracker or storage
    refuses to start with any other group name, so no other name can exist.
    """
    if not 0 < len(group) <= GROUP_NAME_LEN or not (group.isascii() and group.isalnum()):
        raise LocalProtocolError(f"invalid group name {group!r}")


def decode_text(raw: bytes | bytearray | memoryview, what: str = "text") -> str:
    """Bytes up to the first NUL, as text (non-UTF-8 bytes kept via surrogateescape)."""
    data = bytes(raw)
    end = data.find(b"\0")
    if end >= 0:
        data = data[:end]
    return data.decode("utf-8", "surrogateescape")


class FieldReader:
    """Sequential reader over a message body that fails with `ProtocolError`."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes | bytearray | memoryview, what: str = "reply") -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, size: int) -> bytes:
        if size < 0 or self._pos + size > len(self._data):
            raise ProtocolError(
                f"{self._what}: needed {size} bytes at offset {self._pos}, "
                f"only {self.remaining} left"
            )
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def int64(self) -> int:
        return int(_INT64.unpack(self.take(8))[0])

    def uint64(self) -> int:
        return int(_UINT64.unpack(self.take(8))[0])

    def int32(self) -> int:
        return int(_INT32.unpack(self.take(4))[0])

    def byte(self) -> int:
        return self.take(1)[0]

    def text(self, size: int) -> str:
        return decode_text(self.take(size))

    def rest(self) -> bytes:
        return self.take(self.remaining)

    def rest_text(self) -> str:
        return self.rest().decode("utf-8", "surrogateescape")

    def end(self) -> None:
        if self.remaining:
            raise ProtocolError(f"{self._what}: {self.remaining} unexpected trailing bytes")
