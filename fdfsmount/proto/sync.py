"""A blocking FastDFS client for threads: the trio client run on a loop thread of its own.

# Strategy
One trio event loop runs in a background (daemon) thread for each `Client`.
Every method submits a call of the trio client (`fdfsmount.proto.client`) to
that loop and waits on a `concurrent.futures.Future`; calls from many threads
run concurrently on the loop and share its connection pool, so the client is
safe to share between threads and costs one thread, not one per caller.
Exceptions are the trio client's own (`FileNotFound`, `Timeout`, ...),
re-raised in the calling thread. A caller interrupted while waiting (Ctrl-C)
cancels its call on the loop before the interrupt propagates.

Work that could stall the shared loop stays in the caller's thread: reading
an upload from a socket-like file object (a WSGI request body) and writing a
download into a caller's file object. Local files and bytes are handed to the
loop as they are.

Lifecycle: `close()` (or leaving the ``with`` block) closes the pooled
connections and joins the loop thread. A client never closed is closed when
it is garbage collected or at interpreter exit, and its thread is a daemon,
so a forgotten client never keeps a process alive.

Fork: after ``os.fork()`` the child has no loop thread. A client used in the
child starts a fresh loop and pool there; connections inherited from the
parent are never used by the child (they would interleave with the parent's
requests), so a client created before a pre-forking server forks its
workers (gunicorn ``--preload``, multiprocessing) just works in each worker.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
import stat
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from types import TracebackType
from typing import Any, BinaryIO, TypeVar, cast

import trio

from .client import Client as TrioClient
from .clientconf import parse_server_addr, read_client_conf
from .errors import FdfsError, Timeout
from .fastread import FastReads
from .fileid import FileId, decode_file_id, parse_file_id, split_ext
from .message import ServerAddr
from .payload import Data
from .records import GroupStat, StorageStat
from .storage import FileInfo

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Chunks of a caller's file object fed to an upload, and queued per download.
_PUMP_CHUNK = 256 * 1024
_DOWNLOAD_QUEUE = 4
_SPOOL_MEMORY = 8 << 20
_JOIN_TIMEOUT = 10.0


class ClientClosed(FdfsError, RuntimeError):
    """The blocking client was closed (or its loop thread died) before the call ran."""


class CallCancelled(FdfsError):
    """The call was cancelled on the loop because its caller stopped waiting."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How to reach the cluster: trackers and timeouts (as in a FastDFS client.conf).

    ``call_timeout`` bounds each whole call (None: only ``network_timeout``,
    which counts from the last byte moved, so large transfers are not cut off).
    """

    trackers: Sequence[str | tuple[str, int] | ServerAddr]  # stored as ServerAddr
    connect_timeout: float = 5.0
    network_timeout: float = 30.0
    call_timeout: float | None = None
    max_idle_per_server: int = 8
    idle_timeout: float = 60.0
    fast_reads: bool = True  # small reads of normal files in the caller's thread
    extra: Mapping[str, Any] = field(default_factory=dict)  # passed to the trio Client

    def __post_init__(self) -> None:
        trackers = self.trackers
        if isinstance(trackers, str):
            trackers = [t for t in trackers.split(",") if t.strip()]
        object.__setattr__(self, "trackers", tuple(parse_server_addr(t) for t in trackers))
        if not self.trackers:
            raise ValueError("at least one tracker address is needed")
        if self.call_timeout is not None and self.call_timeout <= 0:
            raise ValueError("call_timeout must be positive")

    @classmethod
    def from_conf(cls, path: str | os.PathLike[str], **overrides: Any) -> ClientConfig:
        """Trackers and timeouts of a FastDFS client.conf; keyword arguments win."""
        conf = read_client_conf(path)
        kwargs: dict[str, Any] = {"trackers": tuple(conf.trackers)}
        if conf.connect_timeout is not None:
            kwargs["connect_timeout"] = conf.connect_timeout
        if conf.network_timeout is not None:
            kwargs["network_timeout"] = conf.network_timeout
        kwargs.update(overrides)
        return cls(**kwargs)

    def with_changes(self, **changes: Any) -> ClientConfig:
        return replace(self, **changes)


class _Call:
    """One submitted call: its future, and the cancel scope it runs in on the loop."""

    __slots__ = ("future", "scope")

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.scope: trio.CancelScope | None = None


class LoopThread:
    """A trio loop in a daemon thread that runs submitted async calls as tasks."""

    def __init__(self, name: str) -> None:
        self.pid = os.getpid()
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._closing = False
        self._crash: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()
        if self._crash is not None:
            raise ClientClosed(f"the client's event loop did not start: {self._crash}")

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._crash = exc
            log.exception("the blocking client's event loop died")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, fn: Callable[[], Awaitable[T]], call: _Call) -> None:
        """Start ``fn`` on the loop as ``call``.

        The caller makes the `_Call` first and submits and waits inside one
        ``try`` that cancels it: an interrupt (a signal handler's exception) that
        lands anywhere after the hand-over still finds the call to cancel,
        instead of leaving it running on the loop with nobody waiting.
        """

        def spawn() -> None:
            if self._nursery is None or self._closing:
                call.future.set_exception(ClientClosed("the client is closed"))
                return
            self._nursery.start_soon(self._execute, call, fn)

        if self._token is None or not self.thread.is_alive():
            raise ClientClosed("the client is closed")
        try:
            self._token.run_sync_soon(spawn)
        except trio.RunFinishedError:
            raise ClientClosed("the client is closed") from None

    async def _execute(self, call: _Call, fn: Callable[[], Awaitable[Any]]) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        with trio.CancelScope() as scope:
            call.scope = scope
            try:
                result = await fn()
            except Exception as exc:
                call.future.set_exception(exc)
                return
            except BaseException:
                if not call.future.done():
                    call.future.set_exception(ClientClosed("the client was closed mid-call"))
                raise
            call.future.set_result(result)
            return
        if not call.future.done():
            call.future.set_exception(CallCancelled("the call was cancelled"))

    def wait(self, call: _Call) -> Any:
        """The call's result in the caller's thread.

        The caller cancels the call if this is interrupted: one ``try`` from before
        `submit` to after this covers the whole life of the call.
        """
        return call.future.result()

    def cancel(self, call: _Call) -> None:
        def do_cancel() -> None:
            if call.scope is not None:
                call.scope.cancel()
            elif not call.future.done():
                call.future.cancel()

        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(do_cancel)

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self.in_loop_thread:
            raise RuntimeError(
                "a blocking Client method was called from its own event loop thread; "
                "use the trio Client there"
            )
        call = _Call()
        try:
            self.submit(fn, call)
            return self.wait(call)  # type: ignore[no-any-return]
        except BaseException:
            if not call.future.done():
                self.cancel(call)
            raise

    def stop(self) -> None:
        """Cancel what still runs, end the loop and join the thread."""
        if os.getpid() != self.pid or self._token is None:
            return
        self._closing = True

        def set_stop() -> None:
            if self._stop is not None:
                self._stop.set()

        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(set_stop)
        if not self.in_loop_thread:
            self.thread.join(_JOIN_TIMEOUT)
            if self.thread.is_alive():
                log.error("the blocking client's loop thread did not stop")


def _shutdown(loop: LoopThread, client: TrioClient) -> None:
    """Close the pool on the loop, then stop the loop (also run by the finalizer)."""
    if os.getpid() != loop.pid or not loop.thread.is_alive():
        return
    try:
        if not loop.in_loop_thread:
            loop.run(client.aclose)
    except (ClientClosed, CallCancelled):
        pass
    finally:
        loop.stop()


#: Each live client's "the parent's loop is gone" method, called in a forked child.
_fork_hooks: list[weakref.WeakMethod[Callable[[], None]]] = []
_fork_hooks_lock = threading.Lock()


def _add_fork_hook(method: Callable[[], None]) -> None:
    with _fork_hooks_lock:
        _fork_hooks[:] = [h for h in _fork_hooks if h() is not None]
        _fork_hooks.append(weakref.WeakMethod(method))


def _after_fork_in_child() -> None:
    global _fork_hooks_lock
    _fork_hooks_lock = threading.Lock()  # another thread may have held it at fork time
    hooks = [hook() for hook in _fork_hooks]
    _fork_hooks[:] = [h for h, live in zip(_fork_hooks, hooks, strict=True) if live is not None]
    for hook in hooks:
        if hook is not None:
            hook()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Client:
    """A blocking, thread-safe FastDFS client (``with Client(["10.0.0.5:22122"]) as c``).

    ``config``: a `ClientConfig`, a tracker list (``"host:port"``, tuples or a
    comma-separated string) or keyword arguments of `ClientConfig`. Method
    names follow the trio client; the classic ``fdfs_client`` names
    (``upload_by_buffer``, ``download_to_buffer``, ...) are there too.
    """

    def __init__(
        self,
        config: ClientConfig | Sequence[str | tuple[str, int] | ServerAddr] | str,
        **options: Any,
    ) -> None:
        if not isinstance(config, ClientConfig):
            config = ClientConfig(config, **options)
        elif options:
            config = config.with_changes(**options)
        self.config = config
        self._lock = threading.Lock()
        self._loop: LoopThread | None = None
        self._client: TrioClient | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False
        self._fast: FastReads | None = None
        if config.fast_reads:
            timeouts = [config.network_timeout, config.call_timeout or config.network_timeout]
            self._fast = FastReads(
                [parse_server_addr(t) for t in config.trackers],
                connect_timeout=min(config.connect_timeout, *timeouts),
                network_timeout=min(timeouts),
                max_idle_per_server=config.max_idle_per_server,
            )
        self._start()
        _add_fork_hook(self._forget_parent_loop)

    @classmethod
    def from_conf(cls, path: str | os.PathLike[str], **overrides: Any) -> Client:
        """A client configured from a FastDFS client.conf (keyword arguments win)."""
        return cls(ClientConfig.from_conf(path, **overrides))

    def _start(self) -> None:
        loop = LoopThread(f"fdfs-client-{id(self):x}")
        config = self.config

        async def make() -> TrioClient:
            return TrioClient(
                list(config.trackers),
                connect_timeout=config.connect_timeout,
                network_timeout=config.network_timeout,
                max_idle_per_server=config.max_idle_per_server,
                idle_timeout=config.idle_timeout,
                **config.extra,
            )

        try:
            client = loop.run(make)
        except BaseException:
            loop.stop()
            raise
        self._loop, self._client = loop, client
        self._finalizer = weakref.finalize(self, _shutdown, loop, client)

    def _forget_parent_loop(self) -> None:
        """In a forked child: the parent's loop thread is gone; start anew on next use."""
        self._lock = threading.Lock()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._loop = None
        self._client = None

    def _ready(self) -> tuple[LoopThread, TrioClient]:
        loop, client = self._loop, self._client
        if loop is not None and client is not None and loop.pid == os.getpid():
            return loop, client
        with self._lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            if self._loop is None or self._loop.pid != os.getpid():
                log.debug("starting a fresh event loop for the client in process %d", os.getpid())
                self._start()
            assert self._loop is not None and self._client is not None
            return self._loop, self._client

    def _call(self, fn: Callable[[TrioClient], Awaitable[T]], what: str) -> T:
        """Run ``await fn(trio_client)`` on the loop, within ``call_timeout``."""
        loop, client = self._ready()
        return loop.run(partial(self._bounded, fn, client, what))

    async def _bounded(
        self, fn: Callable[[TrioClient], Awaitable[T]], client: TrioClient, what: str
    ) -> T:
        seconds = self.config.call_timeout
        if seconds is None:
            return await fn(client)
        try:
            with trio.fail_after(seconds):
                return await fn(client)
        except trio.TooSlowError:
            raise Timeout(f"{what}: not done within call_timeout={seconds:g}s") from None

    def _run(self, method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Call the trio client's ``method`` with these arguments."""
        name = method.__name__

        def invoke(client: TrioClient) -> Awaitable[T]:
            return cast(Awaitable[T], getattr(client, name)(*args, **kwargs))

        return self._call(invoke, name)

    def close(self) -> None:
        """Close pooled connections and stop the loop thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            finalizer, self._finalizer = self._finalizer, None
        if self._fast is not None:
            self._fast.close()
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def trio_client(self) -> TrioClient:
        """The trio client underneath (only for use on its loop thread)."""
        return self._ready()[1]

    def run_async(self, fn: Callable[[TrioClient], Awaitable[T]]) -> T:
        """Run ``await fn(trio_client)`` on the loop, for what the blocking API lacks."""
        return self._call(fn, getattr(fn, "__name__", "call"))

    # ============================================================ uploads

    def upload(
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
        """Upload bytes, a path (`os.PathLike`) or a binary file; returns the file ID."""
        return self._with_data(
            "upload",
            data,
            size,
            lambda c, d, s: c.upload(
                d,
                size=s,
                ext=ext,
                group=group,
                meta=meta,
                appender=appender,
                store_path_index=store_path_index,
            ),
        )

    def upload_slave(
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
        return self._with_data(
            "upload_slave",
            data,
            size,
            lambda c, d, s: c.upload_slave(master, d, prefix=prefix, ext=ext, size=s, meta=meta),
        )

    def append(self, file_id: FileId | str, data: Data, *, size: int | None = None) -> None:
        """Append to an appender file."""
        self._with_data("append", data, size, lambda c, d, s: c.append(file_id, d, size=s))

    def modify(
        self, file_id: FileId | str, offset: int, data: Data, *, size: int | None = None
    ) -> None:
        """Overwrite part of an appender file; writing at its end grows it."""
        self._with_data("modify", data, size, lambda c, d, s: c.modify(file_id, offset, d, size=s))

    def _with_data(
        self,
        what: str,
        data: Data,
        size: int | None,
        send: Callable[[TrioClient, Data, int | None], Awaitable[T]],
    ) -> T:
        """Hand ``data`` to the loop; a socket-like file is read in this thread instead."""
        if isinstance(data, bytes | bytearray | memoryview | os.PathLike) or not hasattr(
            data, "read"
        ):
            return self._call(lambda c: send(c, data, size), what)
        file: BinaryIO = data  # type: ignore[assignment]
        if _is_local_file(file):
            return self._call(lambda c: send(c, file, size), what)
        if size is None:
            # The size must be sent first: spool here, then the loop reads the spool.
            with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) as spool:
                while chunk := file.read(_PUMP_CHUNK):
                    spool.write(chunk)
                spool.seek(0)
                return self._call(lambda c: send(c, spool, None), what)  # type: ignore[arg-type]
        return self._pumped(what, file, size, send)

    def _pumped(
        self,
        what: str,
        file: BinaryIO,
        size: int,
        send: Callable[[TrioClient, Data, int | None], Awaitable[T]],
    ) -> T:
        """Stream ``size`` bytes of ``file``, read in this thread, into a call on the loop."""
        loop, _client = self._ready()
        sender, receiver = trio.open_memory_channel[bytes](2)

        async def consume(client: TrioClient) -> T:
            async with receiver:
                return await send(client, _ChannelChunks(receiver), size)

        call = _Call()
        try:
            loop.submit(partial(self._bounded, consume, _client, what), call)
            left = size
            while left > 0:
                chunk = file.read(min(_PUMP_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                try:
                    loop.run(partial(sender.send, chunk))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # the upload ended early; its error follows
            loop.run(sender.aclose)
            return loop.wait(call)  # type: ignore[no-any-return]
        except BaseException:
            loop.cancel(call)
            raise

    # ============================================================ downloads

    def download(
        self, file_id: FileId | str, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        """The file's bytes (or ``length`` bytes from ``offset``; None = to the end)."""
        if self._fast is not None:
            data = self._fast.read(_parse(file_id), offset, length)
            if data is not None:
                return data
        # The trio client hands back its receive buffer (a bytearray); this API says bytes.
        return bytes(self._run(TrioClient.download, file_id, offset=offset, length=length))

    def read_range(
        self,
        file_id: FileId | str,
        offset: int,
        length: int,
        *,
        servers: Sequence[ServerAddr] | None = None,
    ) -> bytes:
        """Up to ``length`` bytes at ``offset``; b"" at or past the end of the file."""
        if self._fast is not None and length > 0:
            data = self._fast.read(_parse(file_id), offset, length, servers)
            if data is not None:
                return data
        return bytes(self._run(TrioClient.read_range, file_id, offset, length, servers=servers))

    def download_to(
        self,
        file_id: FileId | str,
        dest: str | os.PathLike[str] | BinaryIO,
        *,
        offset: int = 0,
        length: int | None = None,
    ) -> int:
        """Stream the file into ``dest`` (a path, created or truncated, or a binary file).

        A path is removed again if the download fails. Returns the bytes written.
        """
        if isinstance(dest, str | os.PathLike):
            path = os.fspath(dest)
            return self._run(TrioClient.download_to, file_id, path, offset=offset, length=length)
        written = 0
        for chunk in self.iter_download(file_id, offset=offset, length=length):
            dest.write(chunk)
            written += len(chunk)
        return written

    def iter_download(
        self, file_id: FileId | str, *, offset: int = 0, length: int | None = None
    ) -> Generator[bytes, None, None]:
        """The file's bytes as chunks of at most 256 KiB, streamed over one request.

        Stopping early (``break``, closing the generator) cancels the transfer.
        """
        loop, client = self._ready()
        sender, receiver = trio.open_memory_channel[bytes](_DOWNLOAD_QUEUE)

        async def produce() -> None:
            async with (
                sender,
                client.download_stream(file_id, offset=offset, length=length) as chunks,
            ):
                async for chunk in chunks:
                    await sender.send(chunk)

        call = _Call()
        try:
            loop.submit(produce, call)
            while True:
                try:
                    chunk = loop.run(receiver.receive)
                except trio.EndOfChannel:
                    break
                yield chunk
            loop.wait(call)
        finally:
            if not call.future.done():
                loop.cancel(call)
                with contextlib.suppress(ClientClosed, CallCancelled):
                    loop.run(receiver.aclose)

    def open(self, file_id: FileId | str, *, buffer_size: int = 1 << 20) -> io.BufferedReader:
        """A read-only, seekable file object over the stored file (ranged reads)."""
        return io.BufferedReader(RemoteFile(self, file_id), buffer_size=buffer_size)

    def fetch_servers(self, file_id: FileId | str) -> list[ServerAddr]:
        return self._run(TrioClient.fetch_servers, file_id)

    def update_server(self, file_id: FileId | str) -> ServerAddr:
        return self._run(TrioClient.update_server, file_id)

    # ============================================================ inspecting

    def info(
        self,
        file_id: FileId | str,
        *,
        calc_crc32: bool = True,
        servers: Sequence[ServerAddr] | None = None,
    ) -> FileInfo:
        """QUERY_FILE_INFO: size, mtime, crc32 and source IP.

        Replicas are eventually consistent: ask ``servers=[update_server(fid)]``
        (the file's source) to read what was just written.
        """
        return self._run(TrioClient.info, file_id, calc_crc32=calc_crc32, servers=servers)

    def exists(self, file_id: FileId | str) -> bool:
        return self._run(TrioClient.exists, file_id)

    def get_metadata(
        self, file_id: FileId | str, *, servers: Sequence[ServerAddr] | None = None
    ) -> dict[str, str]:
        """The file's metadata ({} when none); ``servers``: ask these, in turn (see `info`)."""
        return self._run(TrioClient.get_metadata, file_id, servers=servers)

    # ============================================================ changing

    def delete(self, file_id: FileId | str) -> None:
        self._run(TrioClient.delete, file_id)

    def set_metadata(
        self, file_id: FileId | str, meta: Mapping[str, str], *, overwrite: bool = False
    ) -> None:
        """Merge ``meta`` into the file's metadata, or replace it all (``overwrite``)."""
        self._run(TrioClient.set_metadata, file_id, meta, overwrite=overwrite)

    def truncate(self, file_id: FileId | str, size: int = 0) -> None:
        self._run(TrioClient.truncate, file_id, size)

    def regenerate_appender_name(self, file_id: FileId | str) -> FileId:
        return self._run(TrioClient.regenerate_appender_name, file_id)

    # ============================================================ cluster

    def list_groups(self) -> list[GroupStat]:
        return self._run(TrioClient.list_groups)

    def group(self, name: str) -> GroupStat:
        return self._run(TrioClient.group, name)

    def list_storages(self, group: str, storage_id: str | None = None) -> list[StorageStat]:
        return self._run(TrioClient.list_storages, group, storage_id)

    def list_files(self, group: str) -> list[FileId]:
        """Every file ID of a group, from its storages' binlogs (cmd 26)."""
        loop, client = self._ready()

        async def collect() -> list[FileId]:
            async with client.list_files(group) as files:
                return [fid async for fid in files]

        return loop.run(collect)

    # ============================================================ classic names
    # The names and argument orders of the ``fdfs_client`` (Fdfs_client) API;
    # they return this library's values (a FileId, bytes, dicts, records).

    def upload_by_buffer(
        self,
        filebuffer: bytes,
        file_ext_name: str | None = None,
        meta_dict: Mapping[str, str] | None = None,
    ) -> FileId:
        return self.upload(filebuffer, ext=file_ext_name or "", meta=meta_dict)

    def upload_by_filename(
        self, filename: str | os.PathLike[str], meta_dict: Mapping[str, str] | None = None
    ) -> FileId:
        path = os.fspath(filename)
        return self.upload(_as_path(path), ext=split_ext(path), meta=meta_dict)

    def upload_appender_by_buffer(
        self,
        filebuffer: bytes,
        file_ext_name: str | None = None,
        meta_dict: Mapping[str, str] | None = None,
    ) -> FileId:
        return self.upload(filebuffer, ext=file_ext_name or "", meta=meta_dict, appender=True)

    def upload_appender_by_filename(
        self, filename: str | os.PathLike[str], meta_dict: Mapping[str, str] | None = None
    ) -> FileId:
        path = os.fspath(filename)
        return self.upload(_as_path(path), ext=split_ext(path), meta=meta_dict, appender=True)

    def upload_slave_by_filename(
        self,
        filename: str | os.PathLike[str],
        remote_file_id: FileId | str,
        prefix_name: str,
        meta_dict: Mapping[str, str] | None = None,
    ) -> FileId:
        path = os.fspath(filename)
        return self.upload_slave(
            remote_file_id, _as_path(path), prefix=prefix_name, ext=split_ext(path), meta=meta_dict
        )

    def upload_slave_by_buffer(
        self,
        filebuffer: bytes,
        remote_file_id: FileId | str,
        prefix_name: str,
        file_ext_name: str | None = None,
        meta_dict: Mapping[str, str] | None = None,
    ) -> FileId:
        return self.upload_slave(
            remote_file_id, filebuffer, prefix=prefix_name, ext=file_ext_name or "", meta=meta_dict
        )

    def download_to_buffer(
        self, remote_file_id: FileId | str, offset: int = 0, down_bytes: int = 0
    ) -> bytes:
        """``down_bytes`` 0 means to the end, as in the classic client."""
        return self.download(remote_file_id, offset=offset, length=down_bytes or None)

    def download_to_file(
        self,
        local_filename: str | os.PathLike[str],
        remote_file_id: FileId | str,
        offset: int = 0,
        down_bytes: int = 0,
    ) -> int:
        return self.download_to(
            remote_file_id, local_filename, offset=offset, length=down_bytes or None
        )

    def delete_file(self, remote_file_id: FileId | str) -> None:
        self.delete(remote_file_id)

    def get_meta_data(self, remote_file_id: FileId | str) -> dict[str, str]:
        return self.get_metadata(remote_file_id)

    def set_meta_data(
        self, remote_file_id: FileId | str, meta_dict: Mapping[str, str], op_flag: str = "O"
    ) -> None:
        """``op_flag`` "O" overwrites (the classic default), "M" merges."""
        if op_flag not in ("O", "M"):
            raise ValueError(f"op_flag must be 'O' (overwrite) or 'M' (merge), not {op_flag!r}")
        self.set_metadata(remote_file_id, meta_dict, overwrite=op_flag == "O")

    def append_by_buffer(self, file_buffer: bytes, remote_fileid: FileId | str) -> None:
        self.append(remote_fileid, file_buffer)

    def append_by_filename(
        self, local_filename: str | os.PathLike[str], remote_fileid: FileId | str
    ) -> None:
        self.append(remote_fileid, _as_path(os.fspath(local_filename)))

    def modify_by_buffer(
        self, filebuffer: bytes, appender_fileid: FileId | str, offset: int = 0
    ) -> None:
        self.modify(appender_fileid, offset, filebuffer)

    def modify_by_filename(
        self, filename: str | os.PathLike[str], appender_fileid: FileId | str, offset: int = 0
    ) -> None:
        self.modify(appender_fileid, offset, _as_path(os.fspath(filename)))

    def truncate_file(self, truncated_filesize: int, appender_fileid: FileId | str) -> None:
        self.truncate(appender_fileid, truncated_filesize)

    def list_all_groups(self) -> list[GroupStat]:
        return self.list_groups()

    def list_one_group(self, group_name: str) -> GroupStat:
        return self.group(group_name)

    def list_servers(self, group_name: str, storage_ip: str | None = None) -> list[StorageStat]:
        servers = self.list_storages(group_name)
        if storage_ip is not None:
            servers = [s for s in servers if storage_ip in (s.ip_addr, s.storage_id)]
        return servers


class RemoteFile(io.RawIOBase):
    """A read-only, seekable raw file over a stored file; each read is one ranged request."""

    def __init__(self, client: Client, file_id: FileId | str) -> None:
        super().__init__()
        self._client = client
        self.file_id = file_id
        self._pos = 0
        self._size: int | None = decode_file_id(file_id).size

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = self._client.info(self.file_id, calc_crc32=False).size
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        data = self._client.read_range(self.file_id, self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


class _ChannelChunks:
    """An async iterable over a receive channel (an upload body fed from a thread)."""

    def __init__(self, receiver: trio.MemoryReceiveChannel[bytes]) -> None:
        self._receiver = receiver

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._receiver:
            yield chunk


def _parse(file_id: FileId | str) -> FileId:
    return file_id if isinstance(file_id, FileId) else parse_file_id(file_id)


def _is_local_file(file: BinaryIO) -> bool:
    """A regular file on a local file system: the loop may read it without stalling."""
    try:
        return stat.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _as_path(path: str) -> os.PathLike[str]:
    from pathlib import Path

    return Path(path)


__all__ = ["CallCancelled", "Client", "ClientClosed", "ClientConfig", "RemoteFile"]
