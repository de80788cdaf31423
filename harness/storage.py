"""Builtin FastDFS storage server, byte-compatible with upstream 6.16.1.

Usage::

    python -m harness.storage --group G --bind 127.0.0.x --port P --base-dir DIR \\
        --tracker HOST:PORT [--tracker ...] [--storage-id N] [--store-paths N] \\
        [--subdirs N] [--heartbeat-interval S] [--id-in-filename id|ip] [--ip-size 16|46]

Prints ``READY <port>`` on stdout once listening (``--port 0`` picks a free
port), logs to stderr, exits cleanly on SIGTERM/SIGINT.

Client commands: 11 upload, 12 delete, 13 set metadata, 14 download,
15 get metadata, 21 upload slave, 22 file info, 23 upload appender,
24 append, 26 fetch one path binlog, 34 modify, 36 truncate,
38 regenerate appender name, 111 active test, 82 quit. Errors answer the
status upstream answers; every EINVAL reply is followed by closing the
connection, ENOENT/EEXIST/ENOSPC keep it open (a request's payload is read
and dropped first). Files live in ``<base>/store<i>/data/HH/HH/<name>``
(see `harness.store`), changes are logged in ``<base>/sync/binlog`` (see
`harness.binlog`) and pulled by the other storages of the group (see
`harness.replication`).

One writer per file: an append, modify or truncate this storage may not take
now (it is not ACTIVE, its tracker lease lapsed, or the file's source is not
OFFLINE; see `harness.heartbeat`) answers EAGAIN and changes nothing. Such a
change is acknowledged only once the trackers know how far our binlog reaches.

Each client connection is served by its own thread; slave uploads, appender
renames, binlog fetches and replication pulls run in the trio loop (see
`StorageServer.handle` and docs/builtin-servers.md).

Disk full: while the file ``<base-dir>/.full`` (or ``<base-dir>/DISK_FULL``)
exists the storage reports 0 MB free to the tracker and answers appends with
ENOSPC (28), and uploads too from its next heartbeat on (uploads go by the
usage last reported, as upstream's do); removing it restores normal service.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import ipaddress
import logging
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import trio

from fdfsmount.proto.binlog import encode_binlog_trailer
from fdfsmount.proto.constants import (
    BINLOG_STREAM_LENGTH,
    QUERY_FINFO_NO_CRC32,
    STORE_PATH_ANY,
    Cmd,
)
from fdfsmount.proto.errors import InvalidFileId, ProtocolError
from fdfsmount.proto.fileid import (
    BASE64_LEN,
    MAX_SERVER_ID,
    FileType,
    is_appender_name,
    make_remote_name,
    slave_remote_name,
)
from fdfsmount.proto.metadata import (
    Metadata,
    decode_metadata,
    encode_stored_metadata,
    merge_metadata,
)
from fdfsmount.proto.peer import PeerAddr, PeerCmd
from fdfsmount.proto.records import STAT_COUNTER_NAMES
from fdfsmount.proto.storage import (
    APPEND_FIXED,
    GROUP_REMOTE_BODY_MAX,
    MODIFY_FIXED,
    SLAVE_FIXED,
    UPLOAD_FIXED,
    FileInfo,
    UploadHead,
    encode_file_id_reply,
    encode_file_info_message,
    expect_empty,
    parse_append_head,
    parse_download_range,
    parse_fetch_binlog_body,
    parse_group_remote_body,
    parse_modify_head,
    parse_regenerate_body,
    parse_set_metadata_body,
    parse_slave_head,
    parse_truncate_body,
    parse_upload_head,
    split_group_remote,
)
from fdfsmount.proto.wire import Header, decode_text, encode_header

from . import serverutil, synthetic
from .binlog import LISTED_OPS, Binlog, SyncMarks, with_epoch
from .heartbeat import TrackerReporter
from .replication import Replicator, serve_sync_fetch, serve_sync_pull
from .serverutil import BlockingFramedSocket, FramedSocket, PeerClosed, RequestError, send_reply
from .store import (
    LOGIC_PATH_LEN,
    LocalFile,
    Store,
    crc32,
    decoded_name,
    file_crc32,
)

log = logging.getLogger(__name__)

VERSION = "6.16.1"
#: Bodies of commands without a streamed payload must fit the receive buffer.
MAX_SMALL_BODY = serverutil.RECV_BUFFER_SIZE
_QUIT = int(Cmd.QUIT)
#: How many request bodies naming a file `group_file` remembers.
NAMED_BODIES = 8192
#: Files whose crc32 QUERY_FILE_INFO computes from the content (the name carries none).
_CRC_OF_CONTENT = (FileType.APPENDER, FileType.SLAVE)  # a tuple: members compare by identity
#: Downloads up to this size go out in the same write as the reply header.
SMALL_REPLY = 64 * 1024
#: Payloads from this size on are received into two alternating buffers.
PIPELINE_THRESHOLD = 8 << 20
PIPELINE_CHUNK = 4 << 20
#: Modifies up to this size keep the old bytes to undo them (see `recheck_writable`).
UNDO_LIMIT = 1 << 20


@dataclass
class StorageConfig:
    group: str
    bind: str
    port: int
    base_dir: Path
    trackers: list[tuple[str, int]]
    storage_id: str | None = None
    store_paths: int = 1
    subdirs: int = 256
    heartbeat_interval: float = 1.0
    id_in_filename: str = "ip"
    ip_size: int = 16
    synthetic_files: int = 0  # made-up files cmd 26 lists on store path 0 (see harness.synthetic)

    @property
    def server_id(self) -> str:
        """The id the tracker knows us by: the storage id, or the IP in ip mode."""
        return self.storage_id or self.bind


@dataclass
class Conn:
    sock: trio.socket.SocketType
    reader: FramedSocket
    client: str
    fd: int = -1
    _payload_buffers: tuple[memoryview, memoryview] | None = None

    def payload_buffers(self) -> tuple[memoryview, memoryview]:
        """Two chunk buffers reused by every large upload on this connection."""
        if self._payload_buffers is None:
            self._payload_buffers = (
                memoryview(bytearray(PIPELINE_CHUNK)),
                memoryview(bytearray(PIPELINE_CHUNK)),
            )
        return self._payload_buffers


@dataclass
class ThreadConn:
    """A client connection as its own thread serves it (see `StorageServer.handle`)."""

    sock: socket.socket
    reader: BlockingFramedSocket
    client: str
    _in_trio: Conn | None = None

    def in_trio(self) -> Conn:
        """The same connection (and receive buffer) for a handler that runs in trio."""
        if self._in_trio is None:
            trio_sock = trio.socket.from_stdlib_socket(self.sock)
            reader = FramedSocket(trio_sock, decoder=self.reader.decoder)
            self._in_trio = Conn(trio_sock, reader, self.client, self.sock.fileno())
        return self._in_trio


def write_chunk(fd: int, chunk: memoryview, pos: int | None, crc: int) -> int:
    """Write a payload chunk (appending when ``pos`` is None); return the running crc32."""
    crc = crc32(chunk, crc)
    view = chunk
    while view:
        written = os.write(fd, view) if pos is None else os.pwrite(fd, view, pos)
        if pos is not None:
            pos += written
        view = view[written:]
    return crc


_W = TypeVar("_W", trio.Event, threading.Event)


class FileLocks:
    """One lock per remote name, so changes to one file never interleave.

    Taken by trio tasks (`hold`) and by connection threads (`hold_blocking`)
    alike: a name is free or held, with a queue of waiters to hand it to.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._queues: dict[str, deque[trio.Event | threading.Event]] = {}
        self._token: trio.lowlevel.TrioToken | None = None
        self._loop_thread = threading.get_ident()

    def bind(self, token: trio.lowlevel.TrioToken) -> None:
        """The trio run whose tasks take these locks (called from that run)."""
        self._token = token
        self._loop_thread = threading.get_ident()

    def _acquire(self, name: str, make_waiter: Callable[[], _W]) -> _W | None:
        """None if ``name`` was free and is ours now, else our waiter in its queue."""
        with self._mutex:
            queue = self._queues.get(name)
            if queue is None:
                self._queues[name] = deque()
                return None
            waiter = make_waiter()  # only when it must wait: a threading.Event is not cheap
            queue.append(waiter)
            return waiter

    def acquire_blocking(self, name: str) -> None:
        """Take ``name``'s lock in a connection thread, waiting while another holds it."""
        event = self._acquire(name, threading.Event)
        if event is not None:
            event.wait()

    def release(self, name: str) -> None:
        """Free ``name``'s lock (handing it to the next waiter)."""
        with self._mutex:
            queue = self._queues[name]
            if not queue:
                del self._queues[name]
                return
            waiter = queue.popleft()
        if isinstance(waiter, threading.Event) or threading.get_ident() == self._loop_thread:
            waiter.set()
        else:
            assert self._token is not None
            self._token.run_sync_soon(waiter.set)

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        event = self._acquire(name, trio.Event)
        if event is not None:
            try:
                await event.wait()
            except BaseException:
                with self._mutex:
                    queue = self._queues[name]
                    waiting = event in queue
                    if waiting:
                        queue.remove(event)
                if not waiting:  # it was handed to us meanwhile: hand it on
                    self.release(name)
                raise
        try:
            yield
        finally:
            self.release(name)

    def hold_blocking(self, name: str) -> _HeldBlocking:
        """``with locks.hold_blocking(name):`` in a connection thread."""
        return _HeldBlocking(self, name)


class _HeldBlocking:
    """`FileLocks.hold_blocking`'s context manager (a class: it runs on every change)."""

    __slots__ = ("_locks", "_name")

    def __init__(self, locks: FileLocks, name: str) -> None:
        self._locks = locks
        self._name = name

    def __enter__(self) -> None:
        self._locks.acquire_blocking(self._name)

    def __exit__(self, *exc_info: object) -> None:
        self._locks.release(self._name)


@dataclass
class Counters:
    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_COUNTER_NAMES, 0))
    #: Connection threads and trio tasks both count.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def op(self, name: str, ok: bool, nbytes: int = 0) -> None:
        values = self.values
        total, success, total_bytes, success_bytes = _counter_keys(name)
        with self.lock:
            values[total] += 1
            if ok:
                values[success] += 1
            if total_bytes in values:
                values[total_bytes] += nbytes
                if ok:
                    values[success_bytes] += nbytes


@functools.cache
def _counter_keys(name: str) -> tuple[str, str, str, str]:
    """The counters an operation bumps (made once per operation name)."""
    return (
        f"total_{name}_count",
        f"success_{name}_count",
        f"total_{name}_bytes",
        f"success_{name}_bytes",
    )


class NewTempFile:
    """A new temp file, open for writing (`StorageServer.new_temp_file`): ``with`` gives
    its name and fd, closes the fd after and removes the file on failure.

    A class rather than a generator context manager: every upload opens one.
    """

    __slots__ = ("_fd", "_store", "_temp")

    def __init__(
        self, store: Store, store_path_index: int, subdirs: tuple[int, int] | None
    ) -> None:
        self._store = store
        temp = self._temp = store.new_temp_path(store_path_index, subdirs)
        # O_TRUNC, not O_EXCL: a name a killed storage left behind holds nothing of use.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            self._fd = os.open(temp, flags, 0o644)
        except FileNotFoundError:
            if subdirs is None:
                raise
            os.makedirs(os.path.dirname(temp), exist_ok=True)  # the subdirectory's first file
            self._fd = os.open(temp, flags, 0o644)

    def __enter__(self) -> tuple[str, int]:
        return self._temp, self._fd

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            os.close(self._fd)
        except BaseException:
            self._store.discard(self._temp)
            raise
        if exc_type is not None:
            self._store.discard(self._temp)


#: Command handlers; they return True when the connection must be closed.
#: A payload handler reads the body itself, a body handler is given it whole.
PayloadHandler = Callable[[Conn, Header], Coroutine[Any, Any, bool | None]]
BodyHandler = Callable[[Conn, Header, bytes], Coroutine[Any, Any, bool | None]]


class StorageServer:
    """State and client-command handlers of one storage server."""

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.group = config.group
        base = config.base_dir
        base.mkdir(parents=True, exist_ok=True)
        self.store = Store(base, config.store_paths, config.subdirs)
        self.binlog = Binlog(base / "sync")
        self.marks = SyncMarks(base / "sync" / "marks")
        self.locks = FileLocks()
        self.counters = Counters()
        self.peers: dict[str, PeerAddr] = {}
        #: Source id -> changes of its files under way here while it is OFFLINE.
        self.foreign_in_flight: dict[str, int] = {}
        self.foreign_lock = threading.Lock()
        self.start_time = int(time.time())
        self.connections_current = 0
        self.connections_max = 0
        self.rng = random.Random()
        if config.id_in_filename == "id":
            if not config.storage_id or not config.storage_id.isdigit():
                raise ValueError("--id-in-filename id needs a numeric --storage-id")
            self.source: int | str = int(config.storage_id)
            if not 0 < self.source <= MAX_SERVER_ID:
                raise ValueError(f"storage id must be 1..{MAX_SERVER_ID}")
        else:
            self.source = str(ipaddress.IPv4Address(config.bind))
        self.reporter = TrackerReporter(self)
        self.replicator = Replicator(self)
        self._token: trio.lowlevel.TrioToken | None = None
        self._conn_lock = threading.Lock()
        self._named: serverutil.Memo[bytes, LocalFile] = serverutil.Memo(NAMED_BODIES)
        # Each connection is served by its own thread (`handle`). The commands
        # clients send all the time run right there; the others are handed to
        # the trio loop.
        self._thread_payload_handlers: dict[int, Callable[[ThreadConn, Header], None]] = {
            Cmd.UPLOAD_FILE: self.cmd_upload,
            Cmd.UPLOAD_APPENDER_FILE: self.cmd_upload,
            Cmd.APPEND_FILE: self.cmd_append,
            Cmd.MODIFY_FILE: self.cmd_modify,
        }
        # Requests taken whole when all of one arrived at once (`_serve_connection`):
        # small uploads too, which otherwise stream to disk through the table above.
        self._thread_body_handlers: dict[int, Callable[[ThreadConn, Header, bytes], None]] = {
            Cmd.UPLOAD_FILE: self.cmd_upload_whole,
            Cmd.UPLOAD_APPENDER_FILE: self.cmd_upload_whole,
            Cmd.DOWNLOAD_FILE: self.cmd_download,
            Cmd.QUERY_FILE_INFO: self.cmd_query_file_info,
            Cmd.GET_METADATA: self.cmd_get_metadata,
            Cmd.DELETE_FILE: self.cmd_delete,
            Cmd.SET_METADATA: self.cmd_set_metadata,
            Cmd.ACTIVE_TEST: self.cmd_active_test,
            Cmd.TRUNCATE_FILE: self.cmd_truncate,
        }
        # Handed to trio: commands whose content is streamed to disk read their own bodies.
        self._payload_handlers: dict[int, PayloadHandler] = {
            Cmd.UPLOAD_SLAVE_FILE: self.cmd_upload_slave,
        }
        # The others get their whole (small) body.
        self._body_handlers: dict[int, BodyHandler] = {
            Cmd.REGENERATE_APPENDER_FILENAME: self.cmd_regenerate,
            Cmd.FETCH_ONE_PATH_BINLOG: self.cmd_fetch_binlog,
            PeerCmd.SYNC_PULL: self.cmd_sync_pull,
            PeerCmd.SYNC_FETCH: self.cmd_sync_fetch,
        }

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        if self.config.synthetic_files:  # generated before READY: listings start at once
            await trio.to_thread.run_sync(self.synthetic_file)
        self._token = trio.lowlevel.current_trio_token()
        self.locks.bind(self._token)
        self.binlog.bind(self._token)
        self.reporter.bind()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                serverutil.serve_in_threads, self.handle, self.config.bind, self.config.port
            )
            self.config.port = port
            log.info(
                "storage %s of %s listening on %s:%d", self.config.server_id, self.group,
                self.config.bind, port,
            )  # fmt: skip
            nursery.start_soon(self.reporter.run)
            nursery.start_soon(self.replicator.run)
            task_status.started(port)

    def peer_ip(self, storage_id: str) -> str:
        if storage_id == self.config.server_id:
            return self.config.bind
        peer = self.peers.get(storage_id)
        return peer.ip if peer else ""

    def update_peers(self, peers: list[PeerAddr]) -> None:
        for peer in peers:
            self.peers[peer.storage_id] = peer
        self.replicator.update_peers(peers)

    # ------------------------------------------------------------ dispatch

    def handle(self, sock: socket.socket, client: str) -> None:
        """Serve one client connection, in its own thread (see `serverutil.serve_in_threads`)."""
        reader = BlockingFramedSocket(
            sock, timeout=None, buffer=serverutil.thread_buffer(serverutil.RECV_BUFFER_SIZE)
        )
        conn = ThreadConn(sock, reader, client)
        with self._conn_lock:
            self.connections_current += 1
            self.connections_max = max(self.connections_max, self.connections_current)
        try:
            self._serve_connection(conn)
        finally:
            with self._conn_lock:
                self.connections_current -= 1

    def _serve_connection(self, conn: ThreadConn) -> None:
        reader = conn.reader
        whole = self._thread_body_handlers  # these take their (small) body whole
        while True:
            message = reader.read_request(MAX_SMALL_BODY, whole)
            if message is None:
                return
            header, body = message
            try:
                if body is not None:  # the usual case: a small request, all here
                    whole[header.cmd](conn, header, body)
                    continue
                if header.cmd == _QUIT:
                    return
                if self._dispatch_here(conn, header):
                    return
            except (RequestError, ProtocolError) as error:
                exc = error if isinstance(error, RequestError) else RequestError(
                    errno.EINVAL, str(error)
                )
                level = (
                    logging.DEBUG if exc.status in (errno.ENOENT, errno.EEXIST) else logging.INFO
                )
                log.log(
                    level,
                    "cmd %d from %s: %s (status %d)",
                    header.cmd,
                    conn.client,
                    exc,
                    exc.status,
                )
                reader.send_reply(status=exc.status)
                if exc.close:
                    reader.close_after_error()
                    return

    def _dispatch_here(self, conn: ThreadConn, header: Header) -> bool | None:
        """Run a command whose body was not taken whole in the connection's thread, or
        hand it to trio (`ProtocolError` and `RequestError` go to the caller)."""
        cmd = header.cmd
        streamed = self._thread_payload_handlers.get(cmd)
        if streamed is not None:
            streamed(conn, header)
            return None
        handler = self._thread_body_handlers.get(cmd)
        if handler is not None:
            if header.length > MAX_SMALL_BODY:
                raise RequestError(errno.EINVAL, f"body of {header.length} bytes is too large")
            handler(conn, header, conn.reader.read_exact(header.length))
            return None
        if cmd not in self._payload_handlers and cmd not in self._body_handlers:
            raise RequestError(errno.EINVAL, f"unknown cmd {cmd}")
        return self._hand_to_trio(conn, header)

    def _hand_to_trio(self, conn: ThreadConn, header: Header) -> bool | None:
        """Run the command in the trio loop (the socket is non-blocking meanwhile).

        A replication link (a peer's SYNC_PULL/SYNC_FETCH) sends nothing else
        for its whole life, one request per change: it stays in trio to its
        end rather than paying a hand-over per request.
        """
        in_trio = conn.in_trio()
        conn.sock.setblocking(False)
        try:
            if header.cmd in (PeerCmd.SYNC_PULL, PeerCmd.SYNC_FETCH):
                trio.from_thread.run(self._serve_in_trio, in_trio, header, trio_token=self._token)
                return True
            return trio.from_thread.run(self._dispatch, in_trio, header, trio_token=self._token)
        finally:
            conn.sock.setblocking(True)

    async def _serve_in_trio(self, conn: Conn, header: Header | None) -> None:
        """Serve the rest of a connection in trio, starting with ``header``'s request."""
        while header is not None and header.cmd != Cmd.QUIT:
            try:
                if await self._dispatch(conn, header):
                    return
            except RequestError as exc:
                log.info("cmd %d from %s: %s (status %d)", header.cmd, conn.client, exc, exc.status)
                await send_reply(conn.fd, status=exc.status)
                if exc.close:
                    await serverutil.close_after_error(conn.sock)
                    return
            header = await conn.reader.read_header()

    async def _dispatch(self, conn: Conn, header: Header) -> bool | None:
        """Run the command's handler; a request the codec refuses is answered EINVAL."""
        try:
            streamed = self._payload_handlers.get(header.cmd)
            if streamed is not None:
                return await streamed(conn, header)
            handler = self._body_handlers.get(header.cmd)
            if handler is None:
                raise RequestError(errno.EINVAL, f"unknown cmd {header.cmd}")
            if header.length > MAX_SMALL_BODY:
                raise RequestError(errno.EINVAL, f"body of {header.length} bytes is too large")
            body = await conn.reader.read_exact(header.length)
            return await handler(conn, header, body)
        except ProtocolError as exc:
            raise RequestError(errno.EINVAL, str(exc)) from exc

    def check_group(self, group: str) -> None:
        if group != self.group:
            raise RequestError(errno.EINVAL, f"group {group!r} is not {self.group!r}")

    async def fail_after_payload(self, conn: Conn, remaining: int, error: RequestError) -> NoReturn:
        """Answer a non-closing error only once the request's payload is consumed."""
        if not error.close:
            await conn.reader.discard(remaining)
        raise error

    # ------------------------------------------------------------ uploads

    async def receive_to(self, conn: Conn, fd: int, size: int, offset: int | None = None) -> int:
        """Write ``size`` payload bytes to ``fd`` (at ``offset``, else appending); return crc32.

        Large payloads go through two reused buffers: while a worker thread
        checksums and writes one chunk, the next is received into the other.
        """
        if size >= PIPELINE_THRESHOLD:
            return await self._receive_pipelined(conn, fd, size, offset)
        crc = 0
        pos = offset
        reader = conn.reader
        remaining = size
        while remaining:
            chunk = reader.decoder.take_body(remaining)
            if not chunk:
                await reader.receive_body()
                continue
            crc = write_chunk(fd, chunk, pos, crc)
            remaining -= len(chunk)
            if pos is not None:
                pos += len(chunk)
        return crc

    async def _receive_pipelined(self, conn: Conn, fd: int, size: int, offset: int | None) -> int:
        buffers = conn.payload_buffers()
        crc = 0
        previous: trio.Event | None = None

        async def flush(view: memoryview, pos: int | None, done: trio.Event) -> None:
            nonlocal crc
            try:
                crc = await trio.to_thread.run_sync(write_chunk, fd, view, pos, crc)
            finally:
                done.set()

        async with trio.open_nursery() as nursery:
            received = 0
            turn = 0
            while received < size:
                view = buffers[turn % 2][: min(PIPELINE_CHUNK, size - received)]
                await conn.reader.read_into(view)
                if previous is not None:
                    await previous.wait()
                done = trio.Event()
                pos = None if offset is None else offset + received
                nursery.start_soon(flush, view, pos, done)
                previous = done
                received += len(view)
                turn += 1
        return crc

    def new_temp_file(
        self, store_path_index: int, subdirs: tuple[int, int] | None = None
    ) -> NewTempFile:
        """A new temp file in the store path (in the data subdirectory ``subdirs``, see
        `Store.new_temp_path`): ``with`` it for its name and fd."""
        return NewTempFile(self.store, store_path_index, subdirs)

    async def receive_new_file(
        self, conn: Conn, store_path_index: int, size: int
    ) -> tuple[str, int]:
        with self.new_temp_file(store_path_index) as (temp, fd):
            crc = await self.receive_to(conn, fd, size)
        return temp, crc

    def receive_to_here(self, conn: ThreadConn, fd: int, size: int, offset: int | None) -> int:
        """Write ``size`` payload bytes to ``fd`` at ``offset`` (None: where it is), in the
        connection's thread; return their crc32."""
        crc = 0
        reader = conn.reader
        decoder = reader.decoder
        remaining = size
        while remaining:
            chunk = decoder.take_body(remaining)
            if not chunk:
                reader.receive_body()
                continue
            crc = write_chunk(fd, chunk, offset, crc)
            remaining -= len(chunk)
            if offset is not None:
                offset += len(chunk)
        return crc

    def receive_new_file_here(
        self, conn: ThreadConn, size: int, where: tuple[int, tuple[int, int]]
    ) -> tuple[str, int]:
        """Receive an upload's content into a new temp file where it will be placed
        (store path, data subdirectory), in the connection's thread."""
        with self.new_temp_file(*where) as (temp, fd):
            crc = self.receive_to_here(conn, fd, size, None)
        return temp, crc

    def cmd_upload(self, conn: ThreadConn, header: Header) -> None:
        """An upload whose content streams to disk as it arrives."""
        if header.length < UPLOAD_FIXED:
            raise RequestError(errno.EINVAL, "upload body too short")
        raw_head = conn.reader.read_exact(UPLOAD_FIXED)
        head = parse_upload_head(raw_head, body_length=header.length)
        where = self.upload_path(conn, head, unread=head.size)
        try:
            temp, crc = self.receive_new_file_here(conn, head.size, where)
        except PeerClosed:
            self.counters.op("upload", False, head.size)
            raise
        self.finish_upload(conn, header, head, where, temp, crc)

    def cmd_upload_whole(self, conn: ThreadConn, header: Header, body: bytes) -> None:
        """An upload that arrived whole in one receive (the usual small file): its
        content goes to disk in one write, from the body as it is."""
        if len(body) < UPLOAD_FIXED:
            raise RequestError(errno.EINVAL, "upload body too short")
        head = parse_upload_head(body[:UPLOAD_FIXED], body_length=len(body))
        where = self.upload_path(conn, head, unread=0)
        with self.new_temp_file(*where) as (temp, fd):
            crc = write_chunk(fd, memoryview(body)[UPLOAD_FIXED:], None, 0)
        self.finish_upload(conn, header, head, where, temp, crc)

    def upload_path(
        self, conn: ThreadConn, head: UploadHead, *, unread: int
    ) -> tuple[int, tuple[int, int]]:
        """The store path and data subdirectory an upload goes to, once its space is
        checked; a refused upload's ``unread`` payload bytes are consumed first if the
        connection stays."""
        index = head.store_path_index
        if index == STORE_PATH_ANY:
            index = self.store.choose_store_path()
        elif index >= self.store.store_path_count:
            raise RequestError(errno.EINVAL, f"invalid store path index {index}")
        try:
            self.store.check_space(head.size)
        except RequestError as exc:
            self.counters.op("upload", False, head.size)
            if unread and not exc.close:
                conn.reader.discard(unread)
            raise
        return index, self.store.next_subdirs()

    def finish_upload(
        self,
        conn: ThreadConn,
        header: Header,
        head: UploadHead,
        where: tuple[int, tuple[int, int]],
        temp: str,
        crc: int,
    ) -> None:
        appender = header.cmd == Cmd.UPLOAD_APPENDER_FILE
        remote = self.place_new_file(temp, where, head.size, crc, head.ext, appender)
        self.counters.op("upload", True, head.size)
        self.counters.values["last_source_update"] = int(time.time())
        conn.reader.send_reply(encode_file_id_reply(self.group, remote))

    def place_new_file(
        self,
        temp: str,
        where: tuple[int, tuple[int, int]],
        size: int,
        crc: int,
        ext: str,
        appender: bool,
    ) -> str:
        """Name, move into place and log a finished upload (``where``: its store path
        and data subdirectory, the temp file's).

        The name's timestamp and its ``C`` line are taken under the binlog's
        lock (see `harness.binlog` for why).
        """
        index, subdirs = where
        for _ in range(10):
            with self.binlog.lock:
                ts = self.binlog.next_source_timestamp()
                remote = make_remote_name(
                    source=self.source, create_time=ts, size=size, crc32=crc,
                    ext=ext, appender=appender, store_path_index=index,
                    subdirs=subdirs, rng=self.rng,
                )  # fmt: skip
                local = self.store.made(remote, index, subdirs)
                if not os.access(local.file, os.F_OK):
                    self.store.place(temp, local)
                    self.binlog.append(ts, "C", remote)
                    return remote
        self.store.discard(temp)
        raise RequestError(errno.EBUSY, "could not generate a unique file name", close=False)

    async def cmd_upload_slave(self, conn: Conn, header: Header) -> None:
        if header.length <= SLAVE_FIXED:
            raise RequestError(errno.EINVAL, "upload slave body too short")
        raw_head = await conn.reader.read_exact(SLAVE_FIXED)
        head = parse_slave_head(raw_head, body_length=header.length)
        prefix = head.prefix
        master_name = decode_text(await conn.reader.read_exact(head.master_name_len))
        master = self.store.resolve(master_name)
        try:
            self.store.check_space(head.size)
            self.store.stat(master)
            try:
                slave_name = slave_remote_name(master_name, prefix, head.ext)
            except ValueError as exc:
                raise RequestError(errno.EINVAL, str(exc)) from exc
            slave = self.store.resolve(slave_name)
            if slave.path.exists():
                raise RequestError(errno.EEXIST, f"slave {slave_name} exists")
        except RequestError as exc:
            self.counters.op("upload", False, head.size)
            await self.fail_after_payload(conn, head.size, exc)
        temp, _crc = await self.receive_new_file(conn, slave.store_path_index, head.size)
        if slave.path.exists():
            self.store.discard(temp)
            raise RequestError(errno.EEXIST, f"slave {slave_name} exists")
        self.store.place(temp, slave)
        self.binlog.record_source("C", slave_name)
        self.counters.op("upload", True, head.size)
        self.counters.values["last_source_update"] = int(time.time())
        await send_reply(conn.fd, encode_file_id_reply(self.group, slave_name))

    # ------------------------------------------------------------ appender files

    def check_appender(self, name: str) -> tuple[LocalFile, os.stat_result]:
        local = self.store.resolve(name)
        info = self.store.stat(local)
        if not is_appender_name(name):
            raise RequestError(errno.EINVAL, f"{name} is not an appender file")
        return local, info

    def source_of(self, name: str) -> str:
        """The storage id (or IP) that created ``name``; "" if the name does not say."""
        try:
            info = decoded_name(self.group, name)
        except (InvalidFileId, ValueError):
            return ""
        return str(info.source_id) if info.source_id is not None else info.source_ip or ""

    def check_writable(self, name: str) -> None:
        """Refuse (EAGAIN) a change this storage may not take now (see `harness.heartbeat`).

        Decided from the cached tracker leases; only a lapsed lease is renewed
        first, in trio (a frozen storage asks at once rather than refusing).
        """
        source = self.source_of(name) or self.config.server_id
        why = self.reporter.may_write(source)
        if why is not None and not self.reporter.has_fresh_view():
            why = trio.from_thread.run(
                self.reporter.confirm_may_write, source, trio_token=self._token
            )
        if why is not None:
            raise RequestError(errno.EAGAIN, f"not changing {name} now: {why}", close=False)

    def recheck_writable(self, name: str, undo: Callable[[], object]) -> int:
        """After receiving a change: if our lease lapsed meanwhile (we were frozen), undo it.

        Peers may have taken writes on the file since; logging the change now
        would replicate it over theirs. Returns the epoch to log the change with.
        """
        source = self.source_of(name) or self.config.server_id
        epoch = self.reporter.write_epoch(source)
        if epoch is None:
            why = self.reporter.may_write(source) or "ownership changed"
            undo()
            raise RequestError(errno.EAGAIN, f"change of {name} undone: {why}", close=False)
        return epoch

    def confirm_change(self, name: str, epoch: int | None) -> None:
        """Acknowledge a logged change only if the trackers learned of it in its epoch.

        `TrackerReporter.announce_blocking` reports our binlog end; had we been frozen
        meanwhile, the file may have changed owner (another epoch) and a peer
        may have taken writes on a copy without this change. The change then
        stays logged but loses to theirs, so it must not be acknowledged.
        """
        end = self.binlog.source_end
        self.reporter.announce_blocking(end)
        if epoch is None:
            return
        source = self.source_of(name) or self.config.server_id
        now = self.reporter.write_epoch(source)
        if not self.reporter.confirmed(end):
            log.info("change of %s not acknowledged: no tracker confirmed it in time", name)
            raise RequestError(
                errno.EIO, f"change of {name} not confirmed by any tracker", close=False
            )
        if now != epoch:
            log.info(
                "change of %s not acknowledged: its owner changed while it was reported "
                "(epoch %d, now %s)", name, epoch, now,
            )  # fmt: skip
            raise RequestError(
                errno.EIO, f"change of {name} not confirmed: ownership changed", close=False
            )

    @contextmanager
    def writing(self, name: str) -> Iterator[None]:
        """Hold ``name``'s lock for a change; count it while it changes a peer's file."""
        source = self.source_of(name)
        foreign = source not in ("", self.config.server_id)
        with self.locks.hold_blocking(name):
            if foreign:
                with self.foreign_lock:
                    self.foreign_in_flight[source] = self.foreign_in_flight.get(source, 0) + 1
            try:
                yield
            finally:
                if foreign:
                    with self.foreign_lock:
                        left = self.foreign_in_flight[source] - 1
                        if left:
                            self.foreign_in_flight[source] = left
                        else:
                            del self.foreign_in_flight[source]

    def read_fixed_head(self, conn: ThreadConn, header: Header, fixed: int) -> bytes:
        """The fixed fields of 24/34 (EINVAL if the body cannot even hold them)."""
        if header.length <= fixed:
            raise RequestError(errno.EINVAL, "body too short")
        return conn.reader.read_exact(fixed)

    def fail_after_payload_here(
        self, conn: ThreadConn, remaining: int, error: RequestError
    ) -> NoReturn:
        """Answer a non-closing error only once the request's payload is consumed."""
        if not error.close:
            conn.reader.discard(remaining)
        raise error

    def cmd_append(self, conn: ThreadConn, header: Header) -> None:
        raw_head = self.read_fixed_head(conn, header, APPEND_FIXED)
        name_len, size = parse_append_head(raw_head, body_length=header.length)
        name = decode_text(conn.reader.read_exact(name_len))
        with self.writing(name):
            try:
                local, info = self.check_appender(name)
                self.check_writable(name)
                if size and self.store.is_full():
                    raise RequestError(errno.ENOSPC, "disk full")
            except RequestError as exc:
                self.counters.op("append", False, size)
                self.fail_after_payload_here(conn, size, exc)
            epoch: int | None = None
            if size:
                start = info.st_size
                fd = os.open(local.path, os.O_WRONLY)
                try:
                    self.receive_to_here(conn, fd, size, offset=start)
                    epoch = self.recheck_writable(name, lambda: os.ftruncate(fd, start))
                except BaseException:
                    os.ftruncate(fd, start)
                    self.counters.op("append", False, size)
                    raise
                finally:
                    os.close(fd)
                self.binlog.record_source("A", name, with_epoch(f"{start} {size}", epoch))
                self.counters.values["last_source_update"] = int(time.time())
            self.counters.op("append", True, size)
        self.confirm_change(name, epoch)
        conn.reader.send_reply()

    def cmd_modify(self, conn: ThreadConn, header: Header) -> None:
        raw_head = self.read_fixed_head(conn, header, MODIFY_FIXED)
        name_len, offset, size = parse_modify_head(raw_head, body_length=header.length)
        name = decode_text(conn.reader.read_exact(name_len))
        with self.writing(name):
            try:
                local, info = self.check_appender(name)
                self.check_writable(name)
                if offset > info.st_size:
                    raise RequestError(errno.EINVAL, f"offset {offset} > size {info.st_size}")
            except RequestError as exc:
                self.counters.op("modify", False, size)
                self.fail_after_payload_here(conn, size, exc)
            epoch: int | None = None
            if size:
                fd = os.open(local.path, os.O_RDWR)
                # Kept to undo the change should our lease lapse while it arrives.
                before = os.pread(fd, size, offset) if size <= UNDO_LIMIT else None
                try:
                    self.receive_to_here(conn, fd, size, offset=offset)
                    if before is not None:
                        old = (before, info.st_size)
                        epoch = self.recheck_writable(name, lambda: _restore(fd, offset, *old))
                    else:
                        # Too big to undo: logged in no epoch (it loses to every
                        # other change) and refused, if our lease lapsed meanwhile.
                        source = self.source_of(name) or self.config.server_id
                        epoch = self.reporter.write_epoch(source)
                finally:
                    os.close(fd)
                self.binlog.record_source("M", name, with_epoch(f"{offset} {size}", epoch or 0))
                epoch = -1 if epoch is None else epoch
                self.counters.values["last_source_update"] = int(time.time())
            self.counters.op("modify", True, size)
        self.confirm_change(name, epoch)
        conn.reader.send_reply()

    def cmd_truncate(self, conn: ThreadConn, header: Header, body: bytes) -> None:
        name, new_size = parse_truncate_body(body)
        with self.writing(name):
            try:
                local, info = self.check_appender(name)
                self.check_writable(name)
            except RequestError:
                self.counters.op("truncate", False)
                raise
            epoch: int | None = None
            if new_size != info.st_size:
                epoch = self.recheck_writable(name, lambda: None)
                os.truncate(local.path, new_size)
                self.binlog.record_source("T", name, with_epoch(str(new_size), epoch))
                self.counters.values["last_source_update"] = int(time.time())
            self.counters.op("truncate", True)
        self.confirm_change(name, epoch)
        conn.reader.send_reply()

    async def cmd_regenerate(self, conn: Conn, header: Header, body: bytes) -> None:
        name = parse_regenerate_body(body)
        async with self.locks.hold(name):
            local, info = self.check_appender(name)
            crc = await trio.to_thread.run_sync(file_crc32, local.path)
            # Only now, with the content known, take the timestamp and rename.
            with self.binlog.lock:
                ts = self.binlog.next_source_timestamp()
                fresh = make_remote_name(
                    source=self.source, create_time=ts, size=info.st_size, crc32=crc,
                    store_path_index=local.store_path_index, subdirs=local.subdirs, rng=self.rng,
                )  # fmt: skip
                # Upstream keeps the old name's random digits and extension.
                new_name = (
                    fresh[: LOGIC_PATH_LEN + BASE64_LEN] + name[LOGIC_PATH_LEN + BASE64_LEN :]
                )
                target = self.store.resolve(new_name)
                if target.path.exists():
                    raise RequestError(errno.EBUSY, "regenerated name exists", close=False)
                os.rename(local.path, target.path)
                self.binlog.append(ts, "R", new_name, name)
        await send_reply(conn.fd, encode_file_id_reply(self.group, new_name))

    # ------------------------------------------------------------ reads

    def cmd_download(self, conn: ThreadConn, header: Header, body: bytes) -> None:
        offset, length, names = parse_download_range(body)
        if len(names) <= GROUP_REMOTE_BODY_MAX:
            local = self.group_file(names)  # one entry for the file's download, info, delete
        else:
            # Longer than any file ID, but like upstream looked up (and refused) all the same.
            group, name = split_group_remote(names)
            self.check_group(group)
            local = self.store.resolve(name)
        try:
            fd = os.open(local.file, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            self.counters.op("download", False)
            raise RequestError(errno.ENOENT, f"no such file {local.remote_name}") from None
        try:
            size = os.fstat(fd).st_size
            if offset >= size:
                self.counters.op("download", False)
                raise RequestError(errno.EINVAL, f"offset {offset} >= file size {size}")
            count = size - offset if length == 0 else min(length, size - offset)
            try:
                if count <= SMALL_REPLY:
                    # One write for header and content: one segment, one wake-up.
                    data = os.pread(fd, count, offset)
                    conn.reader.send(encode_header(count, Cmd.RESP) + data)
                else:
                    conn.reader.send(encode_header(count, Cmd.RESP, 0))
                    conn.reader.send_file(fd, offset, count)
            except PeerClosed:
                self.counters.op("download", False, count)
                raise
            self.counters.op("download", True, count)
        finally:
            os.close(fd)

    def group_file(self, body: bytes) -> LocalFile:
        """The file named by a group + remote name body (12, 15, 22)."""
        local = self._named.get(body)
        if local is None:
            # Clients name a file in several requests in a row (info, download, delete).
            group, name = parse_group_remote_body(body)
            self.check_group(group)
            local = self._named.put(body, self.store.resolve(name))
        return local

    def cmd_get_metadata(self, conn: ThreadConn, header: Header, body: bytes) -> None:
        local = self.group_file(body)
        try:
            self.store.stat(local)
            meta = self.store.read_metadata(local)
            if meta is None:
                raise RequestError(errno.ENOENT, f"{local.remote_name} has no metadata")
        except RequestError:
            self.counters.op("get_meta", False)
            raise
        self.counters.op("get_meta", True)
        conn.reader.send_reply(meta)

    def cmd_query_file_info(self, conn: ThreadConn, header: Header, body: bytes) -> None:
        local = self.group_file(body)
        info = self.store.stat(local)
        name = local.remote_name
        if len(name) < LOGIC_PATH_LEN + BASE64_LEN:
            raise RequestError(errno.EINVAL, f"file name {name!r} too short")
        try:
            decoded = decoded_name(self.group, name)
        except (InvalidFileId, ValueError) as exc:
            raise RequestError(errno.EINVAL, str(exc)) from exc
        if decoded.file_type in _CRC_OF_CONTENT:
            # Computed right here: this is the connection's own thread.
            crc = 0 if header.status & QUERY_FINFO_NO_CRC32 else file_crc32(local.path)
        else:
            crc = decoded.crc32 or 0
        if decoded.source_id is not None:
            source_ip = self.peer_ip(str(decoded.source_id))
        else:
            source_ip = decoded.source_ip or ""
        reply = FileInfo(info.st_size, int(info.st_mtime), crc, source_ip)
        conn.reader.send(encode_file_info_message(reply, self.config.ip_size))

    def cmd_active_test(self, conn: ThreadConn, header: Header, body: bytes) -> None:
        expect_empty(body, "active test")
        conn.reader.send_reply()

    # ------------------------------------------------------------ delete, metadata

    def cmd_delete(self, conn: ThreadConn, header: Header, body: bytes) -> None:
        local = self.group_file(body)
        with self.locks.hold_blocking(local.remote_name):
            try:
                self.store.stat(local)
            except RequestError:
                self.counters.op("delete", False)
                raise
            os.unlink(local.file)
            self.binlog.record_source("D", local.remote_name)
            # Most files have no metadata: look before unlinking (no exception then).
            if os.access(local.meta_file, os.F_OK, follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(local.meta_file)
                    self.binlog.record_source("D", local.remote_name + "-m")
            self.counters.op("delete", True)
            self.counters.values["last_source_update"] = int(time.time())
        conn.reader.send_reply()

    def cmd_set_metadata(self, conn: ThreadConn, header: Header, body: bytes) -> None:
        request = parse_set_metadata_body(body)
        self.check_group(request.group)
        local = self.store.resolve(request.remote_name)
        with self.locks.hold_blocking(local.remote_name + "-m"):
            try:
                self.store.stat(local)
            except RequestError:
                self.counters.op("set_meta", False)
                raise
            self.apply_metadata(local, request.meta, overwrite=request.overwrite)
            self.counters.op("set_meta", True)
        conn.reader.send_reply()

    def apply_metadata(self, local: LocalFile, new_meta: Metadata, *, overwrite: bool) -> None:
        meta_name = local.remote_name + "-m"
        existed = local.meta_path.exists()
        if not new_meta:
            if overwrite and existed:
                local.meta_path.unlink()
                self.binlog.record_source("D", meta_name)
            return
        records = new_meta
        if not overwrite and existed:
            records = merge_metadata(decode_metadata(local.meta_path.read_bytes()), new_meta)
        meta_local = self.store.resolve(meta_name)
        self.store.write_whole(meta_local, encode_stored_metadata(records))
        self.binlog.record_source("U" if existed else "C", meta_name)

    # ------------------------------------------------------------ binlog, sync

    async def cmd_fetch_binlog(self, conn: Conn, header: Header, body: bytes) -> bool:
        group, index = parse_fetch_binlog_body(body)
        self.check_group(group)
        if index >= self.store.store_path_count:
            raise RequestError(errno.EINVAL, f"invalid store path index {index}")
        # Scanning the log and checking each file can take a while on a big
        # store: do it off the event loop.
        lines = await trio.to_thread.run_sync(self.listed_lines, index)
        await serverutil.send_all(conn.fd, encode_header(BINLOG_STREAM_LENGTH, Cmd.RESP, 0))
        sent = 0
        batch: list[bytes] = []
        for line in lines:
            batch.append(line)
            sent += len(line)
            if len(batch) >= 512:
                await serverutil.send_all(conn.fd, b"".join(batch))
                batch.clear()
        if index == 0 and self.config.synthetic_files:
            await serverutil.send_all(conn.fd, b"".join(batch))
            batch.clear()
            sent += await self.send_synthetic_lines(conn)
        batch.append(encode_binlog_trailer(sent))
        await serverutil.send_all(conn.fd, b"".join(batch))
        await serverutil.close_after_error(conn.sock)
        return True

    def synthetic_file(self) -> Path:
        return synthetic.ensure_synthetic_file(
            self.config.base_dir / "synthetic-binlog",
            self.config.synthetic_files,
            synthetic.source_bytes(self.source),
            self.store.subdir_count,
        )

    async def send_synthetic_lines(self, conn: Conn) -> int:
        """Stream the synthetic files' lines (generated once into the base dir)."""
        path = await trio.to_thread.run_sync(self.synthetic_file)
        sent = 0
        async with await trio.open_file(path, "rb") as lines:
            while chunk := await lines.read(1 << 20):
                await serverutil.send_all(conn.fd, chunk)
                sent += len(chunk)
        return sent

    def listed_lines(self, store_path_index: int) -> list[bytes]:
        """Binlog lines of the files of one store path that still exist (cmd 26)."""
        prefix = f"M{store_path_index:02X}/"
        seen: set[str] = set()
        lines = []
        for entry in self.binlog.read_entries(0):
            if entry.op not in LISTED_OPS or not entry.name.startswith(prefix):
                continue
            if entry.name in seen or not self.store.exists(entry.name):
                continue
            seen.add(entry.name)
            op = "C" if entry.op in "CR" else "c"
            lines.append(f"{entry.timestamp} {op} {entry.name}\n".encode())
        return lines

    async def cmd_sync_pull(self, conn: Conn, header: Header, body: bytes) -> None:
        await serve_sync_pull(self, conn.sock, body)

    async def cmd_sync_fetch(self, conn: Conn, header: Header, body: bytes) -> None:
        await serve_sync_fetch(self, conn.sock, body)


def _restore(fd: int, offset: int, before: bytes, old_size: int) -> None:
    """Put back the bytes (and size) a modify at ``offset`` replaced."""
    write_chunk(fd, memoryview(before), offset, 0)
    if os.fstat(fd).st_size > old_size:
        os.ftruncate(fd, old_size)


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> StorageConfig:
    parser = argparse.ArgumentParser(
        prog="python -m harness.storage", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--group", required=True)
    parser.add_argument("--bind", required=True, help="127.x address to listen on")
    parser.add_argument("--port", type=int, required=True, help="port (0 = any free port)")
    parser.add_argument("--base-dir", type=Path, required=True)
    parser.add_argument(
        "--tracker", action="append", required=True, type=serverutil.parse_hostport,
        help="tracker HOST:PORT (repeatable)",
    )  # fmt: skip
    parser.add_argument("--storage-id", default=None, help="storage id (storage-id mode)")
    parser.add_argument("--store-paths", type=int, default=1)
    parser.add_argument("--subdirs", type=int, default=256)
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument(
        "--synthetic-files", type=int, default=0,
        help="list this many made-up files on store path 0 (listing tests at scale)",
    )  # fmt: skip
    parser.add_argument("--id-in-filename", choices=("id", "ip"), default=None)
    parser.add_argument(
        "--ip-size", type=int, choices=(16, 46), default=16,
        help="IP field size in QUERY_FILE_INFO replies (response_ip_addr_size)",
    )  # fmt: skip
    serverutil.add_common_args(parser)
    args = parser.parse_args(argv)
    serverutil.setup_logging(args.log_level, "storage")
    id_mode = args.id_in_filename or ("id" if args.storage_id else "ip")
    return StorageConfig(
        group=args.group, bind=args.bind, port=args.port, base_dir=args.base_dir,
        trackers=args.tracker, storage_id=args.storage_id, store_paths=args.store_paths,
        subdirs=args.subdirs, heartbeat_interval=args.heartbeat_interval, id_in_filename=id_mode,
        ip_size=args.ip_size, synthetic_files=args.synthetic_files,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    server = StorageServer(config)
    serverutil.run_server(server.run)


if __name__ == "__main__":
    main()
