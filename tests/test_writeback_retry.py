"""A write-back send the cluster refuses with EAGAIN (a source catching up after an outage,
a storage that may not take changes just now) is sent again within the mount's timeout,
not dropped: the bytes a write() took are stored once the moment passes."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterable, Awaitable, Callable

import pytest
import trio
import trio.testing

from fdfsmount.proto import FileId, parse_file_id
from fdfsmount.proto.errors import ServerError
from fdfsmount.proto.fileid import make_remote_name
from fdfsmount.proto.payload import Data
from fdfsmount.writeback import AppenderWriter, WriteBackFailed, WriteStats

FID: FileId = parse_file_id(
    "group1/"
    + make_remote_name(
        source=100001, create_time=1_600_000_000, size=0, crc32=0, appender=True, ext="log"
    )
)


class RefusingStorage:
    """An appender file's storage that answers EAGAIN to the next `refusals` changes."""

    def __init__(self, content: bytes, refusals: int) -> None:
        self.content = bytearray(content)
        self.refusals = refusals
        self.refused = 0

    def _maybe_refuse(self, op: str) -> None:
        if self.refusals:
            self.refusals -= 1
            self.refused += 1
            raise ServerError(errno.EAGAIN, f"query_update {FID}: source is catching up; retry")

    async def append(self, file_id: FileId | str, data: Data, *, size: int | None = None) -> None:
        self._maybe_refuse("append")
        self.content += await _bytes_of(data)

    async def modify(
        self, file_id: FileId | str, offset: int, data: Data, *, size: int | None = None
    ) -> None:
        self._maybe_refuse("modify")
        body = await _bytes_of(data)
        self.content[offset : offset + len(body)] = body

    async def truncate(self, file_id: FileId | str, size: int = 0) -> None:
        self._maybe_refuse("truncate")
        del self.content[size:]
        self.content.extend(bytes(size - len(self.content)))


async def _bytes_of(data: Data) -> bytes:
    """What a payload holds: a buffer, or the pieces an async iterable yields."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    assert isinstance(data, AsyncIterable), type(data)
    return b"".join([bytes(piece) async for piece in data])


def writer_on(storage: RefusingStorage, nursery: trio.Nursery, retry_for: float) -> AppenderWriter:
    def spawn(fn: Callable[[], Awaitable[None]], name: str) -> None:
        nursery.start_soon(fn, name=name)

    async def query_size(file_id: FileId) -> int:
        return len(storage.content)

    async def fetch(file_id: FileId, offset: int, length: int) -> bytes:
        return bytes(storage.content[offset : offset + length])

    return AppenderWriter(
        storage,  # type: ignore[arg-type]  # the part of WriteClient a writer sends with
        FID,
        len(storage.content),
        spawn=spawn,
        query_size=query_size,
        fetch=fetch,
        flush_size=1 << 20,
        stats=WriteStats(),
        retry_for=retry_for,
    )


async def test_a_refused_send_is_retried_and_nothing_is_lost(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    storage = RefusingStorage(b"start|", refusals=4)
    writer = writer_on(storage, nursery, retry_for=5.0)
    handle = writer.attach()
    assert await writer.write(handle, 6, b"appended") == 8
    assert await writer.write(handle, 0, b"S") == 1  # a modify inside the stored part
    await writer.sync(handle)  # no failure to report
    assert storage.refused == 4
    assert bytes(storage.content) == b"Start|appended"
    assert await writer.read(0, 100) == b"Start|appended"


@pytest.mark.expect_log_warnings
async def test_refusals_past_the_retry_window_fail_the_write_back(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    storage = RefusingStorage(b"start|", refusals=1000)
    writer = writer_on(storage, nursery, retry_for=2.0)
    handle = writer.attach()
    await writer.write(handle, 6, b"never stored")
    began = trio.current_time()
    with pytest.raises(WriteBackFailed) as failed:
        await writer.sync(handle)
    assert failed.value.errno == errno.EIO  # EAGAIN means nothing to a blocking call
    assert trio.current_time() - began <= 2.0  # the window is kept (mock clock: exact)
    assert bytes(storage.content) == b"start|"


async def test_a_refused_truncate_is_retried(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    storage = RefusingStorage(b"0123456789", refusals=3)
    writer = writer_on(storage, nursery, retry_for=5.0)
    await writer.truncate(4)
    assert storage.refused == 3
    assert bytes(storage.content) == b"0123"
    assert writer.size == writer.stored_size == 4 and not writer.stale
