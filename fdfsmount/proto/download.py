"""Reading a file's bytes from its replicas: the client's fallback and resume logic.

# Strategy
`Replicas` yields the storage servers to try for one file: the given ones,
or the tracker's pick (QUERY_FETCH_ONE) and then, if that fails, the rest
(QUERY_FETCH_ALL), recently failed servers last. It records why each one
failed so the final error says whether the file is missing everywhere (every
replica said ENOENT) or some replica could not be asked (the transport error
wins: a missing file cannot be concluded).

`RangeReader` reads one byte range. When a replica fails part way, the next
one is asked for the rest only, and its reply must hold exactly the bytes
still missing. Reads at or past the end are settled without the server where
the file ID tells the size (normal files), else by asking the size after the
server's EINVAL (real servers refuse any offset >= size, even 0 of an empty
file).

`read_all` receives the whole range straight into one buffer allocated at
its final size (`recv_into`), so a download to memory costs no join and no
copy beyond the kernel's.

The client hands in its `Exchanger` (connections, deadlines, failure
memory) and a `ReplicaLocator` (its tracker queries); nothing here reaches
into the client.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import trio

from . import storage as st
from .connection import CHUNK_SIZE, Connection
from .errors import (
    FdfsError,
    FileNotFound,
    InvalidFileId,
    LocalProtocolError,
    ProtocolError,
    ServerError,
)
from .exchange import TRANSPORT_ERRORS, Exchanger
from .fileid import FileId
from .health import ServerHealth
from .message import ServerAddr
from .replicas import ReplicaDirectory, decoded_file_id

log = logging.getLogger(__name__)

R = TypeVar("R")

__all__ = ["TRANSPORT_ERRORS", "ChunkIterator", "RangeReader", "ReplicaLocator", "Replicas"]


class ReplicaLocator(Protocol):
    """Where a file's replicas are: the tracker's answers (the client offers these)."""

    async def tracker_pick(self, file_id: FileId | str) -> list[ServerAddr]: ...

    async def fetch_servers(self, file_id: FileId | str) -> list[ServerAddr]: ...

    async def file_size_on(self, addr: ServerAddr, fid: FileId) -> int: ...


class Replicas:
    """The storage servers to try for reading one file; asks the tracker lazily."""

    def __init__(
        self,
        locator: ReplicaLocator,
        health: ServerHealth,
        fid: FileId,
        servers: Sequence[ServerAddr] | None,
        *,
        fetch_all: bool,
        directory: ReplicaDirectory | None = None,
    ) -> None:
        self._locator = locator
        self._health = health
        self._directory = directory
        self.fid = fid
        self._queue: list[ServerAddr] = list(servers) if servers is not None else []
        self._given = servers is not None
        self._fetch_all = fetch_all
        self._asked_one = False
        self._asked_all = False
        self.tried: list[ServerAddr] = []
        self.not_found: list[ServerAddr] = []
        self.failures: list[FdfsError] = []

    async def next(self) -> ServerAddr | None:
        while True:
            while self._queue:
                addr = self._queue.pop(0)
                if addr not in self.tried:
                    self.tried.append(addr)
                    return addr
            if self._given or self._asked_all:
                return None
            if self._directory is not None:
                # The group's storages, source first: no tracker query per read.
                self._asked_all = True
                listed = await self._directory.servers_for(self.fid)
                if listed:
                    self._queue = [s for s in listed if s not in self.tried]
                    continue
                self._asked_all = False
                self._directory = None
            if not self._fetch_all and not self._asked_one:
                self._asked_one = True
                servers = await self._locator.tracker_pick(self.fid)
            else:
                self._asked_all = True
                try:
                    servers = await self._locator.fetch_servers(self.fid)
                except FdfsError as exc:
                    if not self.tried:
                        raise
                    log.debug("QUERY_FETCH_ALL for %s failed: %s", self.fid, exc)
                    return None
            self._queue = self._health.order([s for s in servers if s not in self.tried])

    def failed(self, exc: FdfsError) -> None:
        self.failures.append(exc)
        log.warning("%s; trying other replicas", exc)

    def final_error(self, op: str) -> FdfsError:
        if self.failures:
            last = self.failures[-1]
            if len(self.tried) == 1:
                return last
            detail = "; ".join(str(e) for e in self.failures)
            if self.not_found:
                detail += f"; no such file on {', '.join(map(str, self.not_found))}"
            error = type(last)(f"{op} {self.fid}: no replica could serve it: {detail}")
            error.__cause__ = last
            return error
        where = ", ".join(map(str, self.not_found)) or "any storage"
        return FileNotFound(f"{op} {self.fid}: no such file on {where}")


class RangeReader:
    """One byte range of a file, read from its replicas.

    A replica that fails before the range is complete is replaced by the next
    one, which continues from where the first stopped.
    """

    def __init__(
        self,
        exchanger: Exchanger,
        locator: ReplicaLocator,
        fid: FileId,
        offset: int,
        length: int | None,
        *,
        servers: Sequence[ServerAddr] | None,
        fetch_all: bool,
        past_end_ok: bool,
        directory: ReplicaDirectory | None = None,
    ) -> None:
        if offset < 0 or (length is not None and length < 0):
            raise LocalProtocolError(f"bad range: offset {offset}, length {length}")
        self._exchanger = exchanger
        self._locator = locator
        self.fid = fid
        self.position = offset
        self._length = length  # as asked; None: to the end of the file
        self._expected: int | None = None  # reply length, when the file ID tells the size
        self._past_end_ok = past_end_ok
        self._replicas = Replicas(
            locator, exchanger.health, fid, servers, fetch_all=fetch_all, directory=directory
        )
        self.total: int | None = None  # bytes this range holds, once known
        self.delivered = 0
        self._conn: Connection | None = None
        self._addr: ServerAddr | None = None
        self._started_at = 0.0

    async def __aenter__(self) -> RangeReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._release()

    def _what(self, addr: ServerAddr) -> str:
        return f"download_file {self.fid} on storage {addr}"

    async def start(self) -> int:
        """Find a replica that serves the range; returns the number of bytes it holds."""
        if self.total is not None:
            return self.total
        try:
            size = decoded_file_id(self.fid).size
        except InvalidFileId:
            size = None
        if size is not None:
            if self._at_or_past_end(size):
                return self.total or 0
            available = size - self.position
            self._expected = available if self._length is None else min(self._length, available)
        if self._length == 0:
            self.total = 0
            return 0
        await self._open_next()
        return self.total or 0

    def _at_or_past_end(self, size: int) -> bool:
        """True (range empty) at the end; EINVAL past it unless reading like read(2)."""
        if self.position < size:
            return False
        if self.position > size and not self._past_end_ok:
            raise ServerError(
                errno.EINVAL,
                f"download_file {self.fid}: offset {self.position} is past the end "
                f"of the file ({size} bytes)",
            )
        self.total = 0
        return True

    def _request_length(self) -> int:
        if self.total is not None:
            return self.total - self.delivered
        # As asked (0 = to the end), like the C client, even when the size is known.
        return self._length or 0

    async def _open_next(self) -> None:
        exchanger = self._exchanger
        while (addr := await self._replicas.next()) is not None:
            length = self._request_length()
            request = st.download_request(
                self.fid.group, self.fid.remote_name, self.position, length
            )
            what = self._what(addr)
            self._started_at = trio.current_time()
            try:
                conn, header, _ = await exchanger.open_reply(addr, "storage", request, what)
            except FileNotFound:
                self._replicas.not_found.append(addr)
                continue
            except ServerError as exc:
                if exc.errno == errno.EINVAL and not self.delivered:
                    size = await self._size_after_einval(addr)
                    if size is not None and self._at_or_past_end(size):
                        return
                raise
            except TRANSPORT_ERRORS as exc:
                self._replicas.failed(exc)
                continue
            expected = length if self.total is not None else self._expected
            if (expected is not None and header.length != expected) or (
                length and header.length > length
            ):
                conn.mark_broken("unexpected download length")
                await exchanger.release(conn)
                error = ProtocolError(
                    f"{what}: reply of {header.length} bytes, expected "
                    f"{expected if expected is not None else f'at most {length}'}"
                )
                exchanger.count_failure("download_file", addr, error)
                self._replicas.failed(error)
                continue
            if self.total is None:
                self.total = header.length
            self._conn, self._addr = conn, addr
            await self._finish_if_done()
            return
        raise self._replicas.final_error("download_file")

    async def _size_after_einval(self, addr: ServerAddr) -> int | None:
        try:
            return await self._locator.file_size_on(addr, self.fid)
        except FdfsError:
            return None

    async def readinto(self, view: memoryview) -> int:
        """Read the next bytes of the range into ``view``; 0 once it is complete."""

        async def receive(conn: Connection) -> int:
            return await conn.receive_into(view)

        return await self._pull(receive, int) or 0

    async def read_chunk(self, max_size: int) -> bytes:
        """The next bytes of the range (at most ``max_size``); b"" once it is complete."""

        async def receive(conn: Connection) -> bytes:
            return await conn.receive_chunk(max_size)

        return await self._pull(receive, len) or b""

    async def _pull(
        self, receive: Callable[[Connection], Awaitable[R]], size: Callable[[R], int]
    ) -> R | None:
        """Receive from the current replica, switching replicas on failure; None at the end."""
        if self.total is None:
            await self.start()
        while self._conn is not None:
            conn, addr = self._conn, self._addr
            assert addr is not None
            try:
                if conn.body_buffered:
                    result = await receive(conn)  # no waiting: no deadline needed
                else:
                    with self._exchanger.watch(conn, self._what(addr)):
                        result = await receive(conn)
            except TRANSPORT_ERRORS as exc:
                self._exchanger.count_failure("download_file", addr, exc)
                await self._release()
                self._replicas.failed(exc)
                await self._open_next()
                continue
            n = size(result)
            self.position += n
            self.delivered += n
            await self._finish_if_done()
            return result
        return None

    async def read_all(self) -> bytearray:
        """The whole range, received straight into one buffer of its final size."""
        total = await self.start()
        buf = bytearray(total)
        view = memoryview(buf)
        got = 0
        while got < total:
            n = await self.readinto(view[got:])
            if not n:
                raise ProtocolError(f"download_file {self.fid}: reply ended early")
            got += n
        return buf

    async def _finish_if_done(self) -> None:
        conn = self._conn
        if conn is not None and conn.body_remaining == 0 and self._addr is not None:
            self._exchanger.count_success(self._addr, self._started_at, "download_file")
            await self._release()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._exchanger.release(conn)


class ChunkIterator:
    def __init__(self, reader: RangeReader, chunk_size: int = CHUNK_SIZE) -> None:
        self._reader = reader
        self._buf = bytearray(chunk_size)

    def __aiter__(self) -> ChunkIterator:
        return self

    async def __anext__(self) -> bytes:
        n = await self._reader.readinto(memoryview(self._buf))
        if not n:
            raise StopAsyncIteration
        return bytes(self._buf[:n])
