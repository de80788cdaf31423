"""The trio FastDFS client: one method per operation, routed through the trackers.

# Strategy
Routing follows the upstream C client. Uploads ask a tracker where to store
(101/104; 106/107 for the other servers of the group when the first one
cannot be reached). Appender operations, delete, set_metadata and slave
uploads go to the file's source server (QUERY_UPDATE, 103). Reads, info and
get_metadata go to the tracker's pick (QUERY_FETCH_ONE, 102) and fall back to
the other replicas (QUERY_FETCH_ALL, 105) when a server cannot be reached,
times out, breaks the protocol -- or answers ENOENT, since a replica may not
have received the file yet. Only when every replica says ENOENT is the file
missing; if some replica could not be asked, the transport error wins.

Trackers are tried in turn, starting one further on each call, and a server
that failed recently goes to the back of every list for a while, so a dead
tracker or replica costs a connect timeout once, not on every call.

The plumbing (deadlines, pooled connections, failure memory) lives in
`exchange`; reading byte ranges with failover in `download`; listing a group
in `filelist`. Which servers failed lately is one `ServerHealth`, shared with
whoever else picks servers (the mount's replica directory).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from types import TracebackType
from typing import BinaryIO, TypeVar

import trio

from . import filelist
from . import storage as st
from . import tracker as tr
from .binlog import BinlogRecord
from .clientconf import parse_server_addr, read_client_conf
from .connection import Payload, Role
from .constants import QUERY_FINFO_KEEP_SILENCE, QUERY_FINFO_NO_CRC32, Cmd
from .download import ChunkIterator, RangeReader, Replicas
from .errors import (
    ConnectError,
    FdfsError,
    FileNotFound,
    NoStorage,
    ServerError,
)
from .exchange import TRANSPORT_ERRORS, Exchanger, op_name
from .fileid import FileId, FileType, decode_file_id, parse_file_id
from .health import ServerHealth
from .message import Request, ServerAddr
from .payload import Data, PreparedPayload, prepare_payload
from .pool import ConnectFn, ConnectionPool
from .records import GroupStat, StorageStat
from .replicas import ReplicaDirectory
from .stats import ClientStats
from .storage import FileInfo

log = logging.getLogger(__name__)

T = TypeVar("T")

_DOWNLOAD_BUFFER = 1 << 20


def _file_id(file_id: FileId | str) -> FileId:
    if isinstance(file_id, FileId):
        return file_id
    return parse_file_id(file_id)


def _clean_ext(ext: str) -> str:
    return ext[1:] if ext.startswith(".") else ext


class Client:
    """A FastDFS client for trio. Use as ``async with Client([...]) as client``.

    ``connect`` replaces how connections are opened (tests pass memory streams).
    """

    def __init__(
        self,
        trackers: Sequence[str | tuple[str, int] | ServerAddr],
        *,
        connect_timeout: float = 5.0,
        network_timeout: float = 30.0,
        max_idle_per_server: int = 8,
        idle_timeout: float = 60.0,
        connect: ConnectFn | None = None,
        health: ServerHealth | None = None,
        replica_directory: bool = False,
    ) -> None:
        if isinstance(trackers, str):
            trackers = [t for t in trackers.split(",") if t.strip()]
        self.trackers = [parse_server_addr(t) for t in trackers]
        if not self.trackers:
            raise ValueError("at least one tracker address is needed")
        if connect_timeout <= 0 or network_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.connect_timeout = connect_timeout
        self.stats = ClientStats()
        self._pool = ConnectionPool(
            connect_timeout=connect_timeout,
            max_idle_per_server=max_idle_per_server,
            idle_timeout=idle_timeout,
            connect=connect,
            stats=self.stats,
        )
        #: Which servers failed lately; pass one in to share it with other choosers.
        self.health = health if health is not None else ServerHealth()
        self.exchanger = Exchanger(
            self._pool, network_timeout=network_timeout, health=self.health, stats=self.stats
        )
        self._tracker_turn = 0
        #: With ``replica_directory``: reads go to the file's source first, then the
        #: group's other active storages (listed once per 30 s), without a tracker
        #: query per read; else the tracker picks per read, like the C client.
        self.replicas = ReplicaDirectory(self, self.health) if replica_directory else None

    @classmethod
    def from_conf(cls, path: str | os.PathLike[str], **overrides: object) -> Client:
        """A client configured from a FastDFS client.conf; keyword arguments win."""
        conf = read_client_conf(path)
        kwargs: dict[str, object] = {}
        if conf.connect_timeout is not None:
            kwargs["connect_timeout"] = conf.connect_timeout
        if conf.network_timeout is not None:
            kwargs["network_timeout"] = conf.network_timeout
        kwargs.update(overrides)
        trackers = kwargs.pop("trackers", conf.trackers)
        return cls(trackers, **kwargs)  # type: ignore[arg-type]

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections (the client cannot be used afterwards)."""
        await self._pool.aclose()

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    @property
    def network_timeout(self) -> float:
        """Seconds an exchange may go without progress (settable: the exchanger follows)."""
        return self.exchanger.network_timeout

    @network_timeout.setter
    def network_timeout(self, seconds: float) -> None:
        self.exchanger.network_timeout = seconds

    # ============================================================ plumbing

    async def _exchange(
        self,
        addr: ServerAddr,
        role: Role,
        request: Request,
        decode: Callable[[bytes], T],
        *,
        what: str,
        payload: Payload | None = None,
    ) -> T:
        return await self.exchanger.exchange(
            addr, role, request, decode, what=what, payload=payload
        )

    async def _tracker(
        self, request: Request, decode: Callable[[bytes], T], subject: str = ""
    ) -> T:
        """Ask the trackers in turn until one answers (a status reply is an answer)."""
        op = op_name(request.cmd)
        order = self.trackers[self._tracker_turn :] + self.trackers[: self._tracker_turn]
        self._tracker_turn = (self._tracker_turn + 1) % len(self.trackers)
        failures: list[FdfsError] = []
        for addr in self.health.order(order):
            what = f"{op}{' ' + subject if subject else ''} on tracker {addr}"
            try:
                return await self._exchange(addr, "tracker", request, decode, what=what)
            except TRANSPORT_ERRORS as exc:
                failures.append(exc)
                if len(failures) < len(self.trackers):
                    log.warning("%s; trying the next tracker", exc)
        if len(failures) == 1:
            raise failures[0]
        last = failures[-1]
        detail = "; ".join(str(e) for e in failures)
        raise type(last)(f"no tracker answered: {detail}") from last

    async def _explain_missing(
        self, exc: FileNotFound, group: str, *, writable: bool, fid: FileId | None = None
    ) -> FdfsError:
        """Make sense of a tracker's ENOENT to a query (the status alone is ambiguous).

        Upstream says ENOENT for an unknown group and for a group without a
        readable (writable) storage; trackers that track replication may also
        say it for a file no storage holds. The group's stats tell them apart.
        """
        try:
            stat = await self.group(group)
        except FileNotFound:
            return FileNotFound(f"{exc.message}: no group {group!r}")
        except FdfsError:
            stat = None
        usable = 0
        if stat is not None:
            usable = stat.writable_count if writable else stat.readable_count
        if fid is not None and usable > 0:
            return FileNotFound(f"{exc.message}: no storage server of the group holds it")
        kind = "writable" if writable else "readable"
        return NoStorage(f"{exc.message}: no {kind} storage server in group {group!r}")

    async def _query_file(self, cmd: Cmd, fid: FileId) -> tr.FetchTarget:
        request = tr.query_fetch_request(cmd, fid.group, fid.remote_name)
        try:
            return await self._tracker(request, tr.decode_fetch_reply, str(fid))
        except FileNotFound as exc:
            writable = cmd == Cmd.QUERY_UPDATE
            raise await self._explain_missing(exc, fid.group, writable=writable, fid=fid) from None

    async def _query_store(self, group: str | None, *, all_servers: bool = False) -> tr.StoreTarget:
        request = tr.query_store_request(group, all_servers=all_servers)
        try:
            return await self._tracker(request, tr.decode_store_reply, group or "")
        except FileNotFound as exc:
            if group is None:
                raise NoStorage(f"{exc.message}: no writable storage server") from None
            raise await self._explain_missing(exc, group, writable=True) from None

    async def _update_server(self, fid: FileId) -> ServerAddr:
        return (await self._query_file(Cmd.QUERY_UPDATE, fid)).servers[0]

    async def update_server(self, file_id: FileId | str) -> ServerAddr:
        """The storage that takes changes of the file (QUERY_UPDATE): its source, while up."""
        return await self._update_server(_file_id(file_id))

    async def _storage(
        self,
        addr: ServerAddr,
        request: Request,
        decode: Callable[[bytes], T],
        fid: FileId | str | None = None,
        payload: Payload | None = None,
    ) -> T:
        what = f"{op_name(request.cmd)}{' ' + str(fid) if fid else ''} on storage {addr}"
        return await self._exchange(addr, "storage", request, decode, what=what, payload=payload)

    async def _read_any(
        self,
        fid: FileId,
        op: str,
        attempt: Callable[[ServerAddr], Awaitable[T]],
        *,
        servers: Sequence[ServerAddr] | None = None,
        fetch_all: bool = False,
    ) -> T:
        """Run ``attempt`` on the file's replicas until one succeeds."""
        replicas = Replicas(
            self, self.health, fid, servers, fetch_all=fetch_all, directory=self.replicas
        )
        while (addr := await replicas.next()) is not None:
            try:
                return await attempt(addr)
            except FileNotFound:
                replicas.not_found.append(addr)
            except TRANSPORT_ERRORS as exc:
                replicas.failed(exc)
        raise replicas.final_error(op)

    @staticmethod
    def _require_appender(fid: FileId, op: str) -> None:
        # The storage refuses these on other files with EINVAL (and closes the
        # connection); the file ID says so already, so spare the round trip.
        if decode_file_id(fid).file_type is not FileType.APPENDER:
            raise ServerError(errno.EINVAL, f"{op} {fid}: not an appender file")

    # ============================================================ uploads

    async def upload(
        self,
        data: Data,
        *,
        size: int | None = None,
        ext: str = "",
        group: str | None = None,
        meta: Mapping[str, str] | None = None,
        appender: bool = False,
        store_path_index: int | None = None,
    ) -> FileId:
        """Upload a normal (or appender) file; returns its file ID.

        ``data``: bytes, a path (``size`` defaults to the file's size), a binary
        file object, or an async iterable of chunks (spooled to a temporary
        file first when ``size`` is not given). ``meta`` is set right after.
        """
        ext = _clean_ext(ext)
        async with prepare_payload(data, size) as payload:
            target = await self._query_store(group)
            index = target.store_path_index if store_path_index is None else store_path_index
            request = st.upload_request(
                payload.size, ext, store_path_index=index, appender=appender
            )
            addr, fid = await self._upload_somewhere(target, request, payload)
        if meta:
            await self._set_metadata_after_upload(addr, fid, meta)
        return fid

    async def _upload_somewhere(
        self, target: tr.StoreTarget, request: Request, payload: PreparedPayload
    ) -> tuple[ServerAddr, FileId]:
        first = target.servers[0]
        try:
            return first, await self._upload_on(first, request, payload)
        except ConnectError as exc:
            # Not even connected, so nothing was sent: another server of the
            # group can take the upload.
            error: ConnectError = exc
        others = await self._query_store(target.group, all_servers=True)
        for addr in self.health.order([s for s in others.servers if s != first]):
            log.warning("%s; trying %s", error, addr)
            try:
                return addr, await self._upload_on(addr, request, payload)
            except ConnectError as exc:
                error = exc
        raise error

    async def _upload_on(
        self, addr: ServerAddr, request: Request, payload: PreparedPayload
    ) -> FileId:
        return await self._storage(addr, request, st.decode_file_id_reply, payload=payload.source)

    async def _set_metadata_after_upload(
        self, addr: ServerAddr, fid: FileId, meta: Mapping[str, str]
    ) -> None:
        request = st.set_metadata_request(fid.group, fid.remote_name, dict(meta), overwrite=True)
        try:
            await self._storage(addr, request, _expect_empty, fid)
        except FdfsError as exc:
            exc.add_note(f"the file was uploaded as {fid}, without its metadata")
            raise

    async def upload_slave(
        self,
        master: FileId | str,
        data: Data,
        *,
        prefix: str,
        ext: str = "",
        size: int | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> FileId:
        """Upload a slave file of ``master``: its ID is the master's plus ``prefix``."""
        master_id = _file_id(master)
        ext = _clean_ext(ext)
        async with prepare_payload(data, size) as payload:
            addr = await self._update_server(master_id)
            request = st.upload_slave_request(master_id.remote_name, payload.size, prefix, ext)
            fid = await self._storage(
                addr, request, st.decode_file_id_reply, master_id, payload.source
            )
        if meta:
            await self._set_metadata_after_upload(addr, fid, meta)
        return fid

    # ============================================================ downloads

    def _reader(
        self,
        file_id: FileId | str,
        offset: int,
        length: int | None,
        *,
        servers: Sequence[ServerAddr] | None = None,
        fetch_all: bool = False,
        past_end_ok: bool = False,
    ) -> RangeReader:
        return RangeReader(
            self.exchanger,
            self,
            _file_id(file_id),
            offset,
            length,
            servers=servers,
            fetch_all=fetch_all,
            past_end_ok=past_end_ok,
            directory=self.replicas,
        )

    async def download(
        self, file_id: FileId | str, *, offset: int = 0, length: int | None = None
    ) -> bytearray:
        """The file's bytes (or ``length`` bytes from ``offset``; None = to the end).

        The reply is received straight into the returned bytearray (no copy
        after the kernel's); ``bytes(...)`` it if you need it hashable. An
        offset equal to the size (any offset of an empty file) gives an empty
        buffer; one beyond the size is the server's EINVAL.
        """
        async with self._reader(file_id, offset, length) as reader:
            return await reader.read_all()

    async def read_range(
        self,
        file_id: FileId | str,
        offset: int,
        length: int,
        *,
        servers: Sequence[ServerAddr] | None = None,
    ) -> bytearray:
        """Up to ``length`` bytes at ``offset``; empty at or past the end of the file.

        Replicas come from ``servers`` or QUERY_FETCH_ALL and are tried in turn.
        The bytes land in the returned buffer straight from the socket.
        """
        if length <= 0:
            return bytearray()
        async with self._reader(
            file_id, offset, length, servers=servers, fetch_all=True, past_end_ok=True
        ) as reader:
            return await reader.read_all()

    async def download_to(
        self,
        file_id: FileId | str,
        dest: str | os.PathLike[str] | BinaryIO,
        *,
        offset: int = 0,
        length: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream the file into ``dest`` (a path or a binary file); returns the bytes written.

        Memory use is one 1 MiB buffer. A path is created or truncated, and
        removed again if the download fails. ``progress`` gets the running total.
        """
        if isinstance(dest, str | os.PathLike):
            path = os.fspath(dest)
            with await trio.to_thread.run_sync(open, path, "wb") as file:
                try:
                    return await self.download_to(
                        file_id, file, offset=offset, length=length, progress=progress
                    )
                except BaseException:
                    file.close()
                    with suppress(OSError):
                        os.unlink(path)
                    raise
        buf = bytearray(_DOWNLOAD_BUFFER)
        view = memoryview(buf)
        written = 0
        async with self._reader(file_id, offset, length) as reader:
            await reader.start()
            while n := await reader.readinto(view):
                _write_all(dest, view[:n])
                written += n
                if progress is not None:
                    progress(written)
        return written

    @asynccontextmanager
    async def download_stream(
        self, file_id: FileId | str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """``async with client.download_stream(fid) as chunks: async for chunk in chunks``.

        Each chunk is a fresh bytes object of at most 256 KiB. Leaving the block
        early closes the connection (a partly read reply is never reused).
        """
        async with self._reader(file_id, offset, length) as reader:
            await reader.start()
            yield ChunkIterator(reader)

    async def tracker_pick(self, file_id: FileId | str) -> list[ServerAddr]:
        """The storage the tracker picks to serve the file (QUERY_FETCH_ONE)."""
        fid = _file_id(file_id)
        return list((await self._query_file(Cmd.QUERY_FETCH_ONE, fid)).servers)

    async def fetch_servers(self, file_id: FileId | str) -> list[ServerAddr]:
        """Every storage server able to serve the file (QUERY_FETCH_ALL)."""
        fid = _file_id(file_id)
        return list((await self._query_file(Cmd.QUERY_FETCH_ALL, fid)).servers)

    # ============================================================ inspecting

    async def info(
        self,
        file_id: FileId | str,
        *,
        calc_crc32: bool = True,
        servers: Sequence[ServerAddr] | None = None,
    ) -> FileInfo:
        """QUERY_FILE_INFO on a replica (or on ``servers``, in turn): size, mtime, crc32
        and source IP."""
        fid = _file_id(file_id)
        flags = 0 if calc_crc32 else QUERY_FINFO_NO_CRC32
        request = st.query_file_info_request(fid.group, fid.remote_name, flags)

        async def attempt(addr: ServerAddr) -> FileInfo:
            return await self._storage(addr, request, st.decode_file_info_reply, fid)

        return await self._read_any(fid, "query_file_info", attempt, servers=servers)

    async def exists(self, file_id: FileId | str) -> bool:
        """Whether any replica has the file (False for an unknown group too)."""
        fid = _file_id(file_id)
        try:
            await self._file_size_somewhere(fid)
        except FileNotFound:
            return False
        return True

    async def _file_size_somewhere(self, fid: FileId) -> int:
        request = st.query_file_info_request(
            fid.group, fid.remote_name, QUERY_FINFO_NO_CRC32 | QUERY_FINFO_KEEP_SILENCE
        )

        async def attempt(addr: ServerAddr) -> int:
            return (await self._storage(addr, request, st.decode_file_info_reply, fid)).size

        return await self._read_any(fid, "query_file_info", attempt)

    async def file_size_on(self, addr: ServerAddr, fid: FileId) -> int:
        """The file's size as ``addr`` holds it (QUERY_FILE_INFO without crc32)."""
        request = st.query_file_info_request(
            fid.group, fid.remote_name, QUERY_FINFO_NO_CRC32 | QUERY_FINFO_KEEP_SILENCE
        )
        return (await self._storage(addr, request, st.decode_file_info_reply, fid)).size

    async def get_metadata(
        self, file_id: FileId | str, *, servers: Sequence[ServerAddr] | None = None
    ) -> dict[str, str]:
        """The file's metadata; {} when it has none. ``servers``: ask these, in turn."""
        fid = _file_id(file_id)
        request = st.get_metadata_request(fid.group, fid.remote_name)

        async def attempt(addr: ServerAddr) -> dict[str, str]:
            try:
                return await self._storage(addr, request, st.decode_metadata_reply, fid)
            except FileNotFound:
                # ENOENT also means "no metadata": is the file itself there?
                await self.file_size_on(addr, fid)
                return {}

        return await self._read_any(fid, "get_metadata", attempt, servers=servers)

    # ============================================================ changing

    async def delete(self, file_id: FileId | str) -> None:
        fid = _file_id(file_id)
        addr = await self._update_server(fid)
        await self._storage(addr, st.delete_request(fid.group, fid.remote_name), _expect_empty, fid)

    async def set_metadata(
        self, file_id: FileId | str, meta: Mapping[str, str], *, overwrite: bool = False
    ) -> None:
        """Merge ``meta`` into the file's metadata, or replace it all (``overwrite``)."""
        fid = _file_id(file_id)
        request = st.set_metadata_request(
            fid.group, fid.remote_name, dict(meta), overwrite=overwrite
        )
        addr = await self._update_server(fid)
        await self._storage(addr, request, _expect_empty, fid)

    async def append(self, file_id: FileId | str, data: Data, *, size: int | None = None) -> None:
        """Append to an appender file."""
        fid = _file_id(file_id)
        self._require_appender(fid, "append_file")
        async with prepare_payload(data, size) as payload:
            addr = await self._update_server(fid)
            request = st.append_request(fid.remote_name, payload.size)
            await self._storage(addr, request, _expect_empty, fid, payload.source)

    async def modify(
        self, file_id: FileId | str, offset: int, data: Data, *, size: int | None = None
    ) -> None:
        """Overwrite part of an appender file; writing at its end (offset == size) grows it."""
        fid = _file_id(file_id)
        self._require_appender(fid, "modify_file")
        async with prepare_payload(data, size) as payload:
            addr = await self._update_server(fid)
            request = st.modify_request(fid.remote_name, offset, payload.size)
            await self._storage(addr, request, _expect_empty, fid, payload.source)

    async def truncate(self, file_id: FileId | str, size: int = 0) -> None:
        """Shrink or grow (with NUL bytes) an appender file."""
        fid = _file_id(file_id)
        self._require_appender(fid, "truncate_file")
        addr = await self._update_server(fid)
        await self._storage(addr, st.truncate_request(fid.remote_name, size), _expect_empty, fid)

    async def regenerate_appender_name(self, file_id: FileId | str) -> FileId:
        """Turn an appender file into a normal one with a new ID (size and crc32 in the name)."""
        fid = _file_id(file_id)
        self._require_appender(fid, "regenerate_appender_filename")
        addr = await self._update_server(fid)
        request = st.regenerate_appender_request(fid.remote_name)
        return await self._storage(addr, request, st.decode_file_id_reply, fid)

    # ============================================================ cluster

    async def list_groups(self) -> list[GroupStat]:
        return await self._tracker(tr.list_groups_request(), tr.decode_groups_reply)

    async def group(self, name: str) -> GroupStat:
        """One group's stats; `FileNotFound` when there is no such group."""
        return await self._tracker(tr.list_one_group_request(name), tr.decode_one_group_reply, name)

    async def list_storages(self, group: str, storage_id: str | None = None) -> list[StorageStat]:
        """The group's storage servers (or one, by storage id) as the tracker sees them."""
        request = tr.list_storages_request(group, storage_id)
        return await self._tracker(request, tr.decode_storages_reply, group)

    def fetch_binlog(
        self, server: ServerAddr, group: str, store_path_index: int
    ) -> AbstractAsyncContextManager[AsyncIterator[BinlogRecord]]:
        """The raw FETCH_ONE_PATH_BINLOG records of one storage server and store path.

        ``async with client.fetch_binlog(addr, "group1", 0) as records: async for r in records``.
        """
        return filelist.fetch_binlog(self.exchanger, server, group, store_path_index)

    def list_files(self, group: str) -> AbstractAsyncContextManager[AsyncIterator[FileId]]:
        """Every file of a group (see `filelist.list_files`).

        ``async with client.list_files("group1") as files: async for fid in files``.
        """
        return filelist.list_files(self, group)


def _expect_empty(body: bytes) -> None:
    st.expect_empty(body, "reply")


def _write_all(dest: BinaryIO, data: memoryview) -> None:
    while data:
        n = dest.write(data)
        if n is None or n >= len(data):
            return
        data = data[n:]


__all__ = ["Client", "ClientStats", "FileInfo", "op_name"]
