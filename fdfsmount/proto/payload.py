"""Upload sources: bytes, local files, binary file objects and async byte streams.

A request must announce its payload size before the first payload byte, so
an async stream without a known size is spooled first: into memory up to
``SPOOL_MEMORY`` bytes, then into an anonymous temporary file. Memory use
stays bounded whatever the size.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import IO, BinaryIO

import trio

from .connection import Payload
from .errors import LocalProtocolError

#: What the client's upload/append/modify accept as data.
Data = bytes | bytearray | memoryview | os.PathLike[str] | BinaryIO | AsyncIterable[bytes]

SPOOL_MEMORY = 8 << 20


@dataclass
class PreparedPayload:
    """A payload of known size, plus a way to send it again if possible."""

    size: int
    source: Payload
    _file: IO[bytes] | None = None
    _start: int = 0
    _replayable: bool = True

    def rewind(self) -> bool:
        """Make the payload ready to be sent again; False when it cannot be."""
        if not self._replayable:
            return False
        if self._file is not None:
            self._file.seek(self._start)
        return True


@asynccontextmanager
async def prepare_payload(data: Data, size: int | None = None) -> AsyncIterator[PreparedPayload]:
    """Open ``data`` for sending and learn its size; files opened here are closed after."""
    if isinstance(data, str):
        raise TypeError("pass bytes, a path (os.PathLike), a binary file or an async iterable")
    async with AsyncExitStack() as stack:
        if isinstance(data, bytes | bytearray | memoryview):
            view = memoryview(data).cast("B")
            _check_size(size, len(view))
            yield PreparedPayload(len(view), view)
        elif isinstance(data, os.PathLike):
            # Opening may block (a FIFO waits for its writer): not on the event loop.
            file = stack.enter_context(await trio.to_thread.run_sync(open, os.fspath(data), "rb"))
            if size is None:
                size = os.fstat(file.fileno()).st_size
            yield PreparedPayload(size, file, file, 0)
        elif isinstance(data, AsyncIterable):
            if size is not None:
                yield PreparedPayload(size, data, _replayable=False)
            else:
                spool = stack.enter_context(_spool())
                async for chunk in data:
                    spool.write(chunk)
                size = spool.tell()
                spool.seek(0)
                yield PreparedPayload(size, spool, spool, 0)  # type: ignore[arg-type]
        elif hasattr(data, "read"):
            yield _file_payload(data, size, stack)
        else:
            raise TypeError(f"cannot upload a {type(data).__name__}")


def _file_payload(file: BinaryIO, size: int | None, stack: AsyncExitStack) -> PreparedPayload:
    seekable = False
    with suppress(AttributeError, ValueError):
        seekable = file.seekable()
    if seekable:
        start = file.tell()
        if size is None:
            size = file.seek(0, io.SEEK_END) - start
            file.seek(start)
        return PreparedPayload(size, file, file, start)
    if size is not None:
        return PreparedPayload(size, file, _replayable=False)
    # A pipe or socket: spool it to learn the size.
    spool = stack.enter_context(_spool())
    while chunk := file.read(1 << 20):
        spool.write(chunk)
    size = spool.tell()
    spool.seek(0)
    return PreparedPayload(size, spool, spool, 0)  # type: ignore[arg-type]


def _spool() -> tempfile.SpooledTemporaryFile[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)


def _check_size(size: int | None, actual: int) -> None:
    if size is not None and size != actual:
        raise LocalProtocolError(f"size={size} given for {actual} bytes of data")
