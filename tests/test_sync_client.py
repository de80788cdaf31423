"""The blocking client: many threads at once against a harness cluster, typed errors,
lifecycle (no leaked thread), fork, and data sources read in the caller's thread.
"""

from __future__ import annotations

import contextlib
import errno
import io
import multiprocessing
import os
import random
import signal
import socket
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from waiting import wait_until

from fdfsmount.proto import (
    FdfsError,
    FileId,
    FileNotFound,
    FileType,
    InvalidFileId,
    ServerError,
    Timeout,
    sync,
)
from fdfsmount.proto.fileid import decode_file_id
from fdfsmount.proto.sync import Client, ClientClosed, ClientConfig
from harness.cluster import Cluster

THREADS = 16


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fdfs-client-")]


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    before = set(loop_threads())
    with Client(cluster.trackers) as c:
        yield c
    assert set(loop_threads()) <= before, "the loop thread outlived close()"


class PipeLike:
    """A file object that only reads, like a WSGI request body (not seekable, no fileno)."""

    def __init__(self, data: bytes, step: int = 10_000) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step
        self.reader_threads: set[str] = set()

    def read(self, n: int = -1) -> bytes:
        self.reader_threads.add(threading.current_thread().name)
        n = self._step if n < 0 else min(n, self._step)
        chunk = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(chunk)
        return chunk


def worker_cycle(client: Client, index: int, group: str) -> None:
    """Every kind of operation, every byte checked; errors must be the typed ones."""
    rng = random.Random(index)
    data = rng.randbytes(rng.randrange(1, 300_000))
    fid = client.upload(data, ext="bin", group=group, meta={"worker": str(index)})
    info = decode_file_id(fid)
    assert info.size == len(data) and info.crc32 == zlib.crc32(data)
    assert client.download(fid) == data
    assert client.read_range(fid, 7, 1000) == data[7:1007]
    assert client.download_to_buffer(fid, 3, 10) == data[3:13]
    assert b"".join(client.iter_download(fid)) == data
    sink = io.BytesIO()
    assert client.download_to(fid, sink) == len(data) and sink.getvalue() == data
    # Replicas catch up asynchronously: read the metadata back from the source.
    source = [client.update_server(fid)]
    assert client.get_metadata(fid, servers=source) == {"worker": str(index)}
    client.set_metadata(fid, {"color": "red"})
    assert client.get_metadata(fid, servers=source) == {"worker": str(index), "color": "red"}
    client.set_meta_data(fid, {"only": "this"})  # the classic default overwrites
    assert client.get_metadata(fid, servers=source) == {"only": "this"}
    with client.open(fid) as remote:
        remote.seek(-5, os.SEEK_END)
        assert remote.read() == data[-5:]

    # The appender cycle, through the classic names.
    app = client.upload_appender_by_buffer(b"head-", "log")
    assert decode_file_id(app).file_type is FileType.APPENDER
    client.append_by_buffer(f"{index}-tail".encode(), app)
    client.modify_by_buffer(b"HEAD", app, 0)
    # Changes reach the replicas later: read them back from the source.
    app_source = [client.update_server(app)]

    def appender_bytes() -> bytes:
        return client.read_range(app, 0, 1 << 20, servers=app_source)

    assert appender_bytes() == f"HEAD-{index}-tail".encode()
    client.truncate_file(4, app)
    assert appender_bytes() == b"HEAD"
    tail = rng.randbytes(50_000)
    stream = PipeLike(tail)
    client.append(app, cast(BinaryIO, stream), size=len(tail))  # pumped from this thread
    assert stream.reader_threads == {threading.current_thread().name}
    assert appender_bytes() == b"HEAD" + tail

    # A body of unknown size, read (and spooled) in this thread.
    piped = client.upload(cast(BinaryIO, PipeLike(data)), ext="bin", group=group)
    assert client.download(piped) == data

    with pytest.raises(ServerError) as refused:
        client.append(fid, b"x")  # not an appender file
    assert refused.value.errno == errno.EINVAL

    for gone in (fid, app, piped):
        where = [client.update_server(gone)]
        client.delete_file(gone)
        with pytest.raises(FileNotFound):
            client.info(gone, servers=where)
        with pytest.raises(FileNotFound):
            client.delete(gone)


def test_sixteen_threads_share_one_client(client: Client) -> None:
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            worker_cycle(client, index, "group1" if index % 2 else "group2")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    assert len(loop_threads()) >= 1  # one loop thread served all sixteen


def test_cluster_listing_and_classic_names(client: Client, cluster: Cluster) -> None:
    groups = {g.group_name for g in client.list_all_groups()}
    assert {"group1", "group2"} <= groups
    assert client.list_one_group("group1").group_name == "group1"
    servers = client.list_servers("group1")
    assert len(servers) == len(cluster.storages_of("group1"))
    assert client.list_servers("group1", servers[0].ip_addr)
    fid = client.upload_by_buffer(b"listed", "txt")
    try:
        # Upstream storages write their binlog (what the listing reads) once a second.
        wait_until(lambda: fid in client.list_files(fid.group), what=f"{fid} listed")
    finally:
        client.delete_file(fid)


def test_files_by_name_and_slaves(client: Client, tmp_path: Path) -> None:
    local = tmp_path / "photo.jpg"
    local.write_bytes(b"master bytes" * 1000)
    master = client.upload_by_filename(str(local), {"kind": "master"})
    assert master.remote_name.endswith(".jpg")
    thumb = tmp_path / "thumb.jpg"
    thumb.write_bytes(b"thumb")
    slave = client.upload_slave_by_filename(str(thumb), master, "_small")
    assert str(slave).endswith("_small.jpg")
    out = tmp_path / "out.jpg"
    assert client.download_to_file(str(out), master) == local.stat().st_size
    assert out.read_bytes() == local.read_bytes()
    assert client.download(slave) == b"thumb"
    with pytest.raises(FileNotFound):
        client.download_to_file(
            str(tmp_path / "none"), FileId(master.group, slave.remote_name[:-4] + "x.jpg")
        )
    assert not (tmp_path / "none").exists()
    for f in (slave, master):
        client.delete(f)


def test_typed_errors_without_a_server() -> None:
    with Client(["127.0.0.1:1"], connect_timeout=1) as c:
        with pytest.raises(InvalidFileId):
            c.download("not-an-id")
        with pytest.raises(TypeError):
            c.upload("a str is ambiguous")  # type: ignore[arg-type]


def test_call_timeout_on_a_silent_tracker() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host, port = silent.getsockname()
        with (
            Client([f"{host}:{port}"], call_timeout=0.5) as c,
            pytest.raises(Timeout, match="call_timeout"),
        ):
            c.list_groups()


def test_close_stops_the_thread_and_refuses_calls(cluster: Cluster) -> None:
    before = set(loop_threads())
    c = Client.from_conf(cluster.client_conf)
    assert c.list_groups()
    assert len(set(loop_threads()) - before) == 1
    c.close()
    c.close()  # idempotent
    assert set(loop_threads()) <= before
    with pytest.raises(ClientClosed):
        c.list_groups()


def test_config_from_conf_and_overrides(cluster: Cluster) -> None:
    config = ClientConfig.from_conf(cluster.client_conf, network_timeout=7)
    assert [str(t) for t in config.trackers] == [
        str(t) for t in ClientConfig(cluster.trackers).trackers
    ]
    assert config.network_timeout == 7 and config.connect_timeout == 5
    with pytest.raises(ValueError):
        ClientConfig(())


def _child_uses_inherited(client: Client, conn: multiprocessing.connection.Connection) -> None:
    try:
        fid = client.upload(b"from the child")
        conn.send((str(fid), client.download(fid)))
        client.delete(fid)
        client.close()
    except BaseException as exc:
        conn.send(("error", repr(exc).encode()))


def test_fork_child_gets_a_fresh_loop(client: Client) -> None:
    """A client created before fork (gunicorn --preload) works in the child and the parent."""
    assert client.list_groups()  # the parent's pool holds connections now
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        proc = ctx.Process(target=_child_uses_inherited, args=(client, child_end))
        proc.start()
    try:
        assert parent_end.poll(60)
        fid, data = parent_end.recv()
        assert data == b"from the child", data
        proc.join(30)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert not client.exists(fid)
    fid2 = client.upload(b"parent still fine")
    assert client.download(fid2) == b"parent still fine"
    client.delete(fid2)


def outcome(call: Callable[[], bytes]) -> bytes | tuple[type[BaseException], int | None]:
    try:
        return call()
    except FdfsError as exc:
        return type(exc), getattr(exc, "errno", None)


def test_fast_reads_agree_with_the_loop_path(cluster: Cluster) -> None:
    """Small reads done in the caller's thread answer exactly as the trio client does."""
    with Client(cluster.trackers) as fast, Client(cluster.trackers, fast_reads=False) as slow:
        data = os.urandom(5000)
        fid = fast.upload(data, ext="bin", group="group2")
        app = fast.upload(b"appender", appender=True, group="group2")
        gone = fast.upload(b"gone", group="group2")
        fast.delete(gone)
        servers = fast.fetch_servers(fid)
        cases: list[tuple[FileId, int, int | None]] = [
            (fid, 0, None),
            (fid, 0, 4096),
            (fid, 4000, 4096),  # runs past the end: clipped
            (fid, 4999, 1),
            (fid, 5000, 10),  # at the end
            (fid, 5001, 10),  # past the end
            (app, 0, None),
            (app, 3, 2),
            (gone, 0, None),
        ]
        for file_id, offset, length in cases:
            want = outcome(partial(slow.download, file_id, offset=offset, length=length))
            got = outcome(partial(fast.download, file_id, offset=offset, length=length))
            assert got == want, (file_id, offset, length)
            if length is not None:
                want = outcome(partial(slow.read_range, file_id, offset, length))
                got = outcome(partial(fast.read_range, file_id, offset, length))
                assert got == want, ("read_range", file_id, offset, length)
        assert fast.read_range(fid, 10, 20, servers=servers) == data[10:30]
        assert fast.download(fid) == data
        fast.delete(fid)
        fast.delete(app)


def test_stopping_a_download_early_cancels_it(client: Client) -> None:
    data = os.urandom(3 << 20)
    fid = client.upload(data, group="group2")
    chunks = client.iter_download(fid)
    first = next(chunks)
    assert data.startswith(first) and len(first) < len(data)
    chunks.close()  # the transfer is cancelled on the loop; its connection is dropped
    assert client.download(fid, offset=len(data) - 10) == data[-10:]
    client.delete(fid)


def test_blocking_call_from_the_loop_thread_is_refused(client: Client) -> None:
    async def nested(_trio_client: object) -> object:
        return client.list_groups()  # would wait for the loop it blocks

    with pytest.raises(RuntimeError, match="own event loop thread"):
        client.run_async(nested)
    assert client.list_groups()  # the client is still fine


def test_trackers_as_one_string() -> None:
    config = ClientConfig("127.0.0.1:22122, 127.0.0.2")
    assert [str(t) for t in config.trackers] == ["127.0.0.1:22122", "127.0.0.2:22122"]


class Interrupted(Exception):
    """Raised by a signal handler in the main thread, as Ctrl-C would raise KeyboardInterrupt."""


@contextlib.contextmanager
def silent_server(
    on_request: Callable[[], None],
) -> Iterator[tuple[str, threading.Thread, threading.Event]]:
    """A server (its address and thread, not started) that takes one request, calls
    ``on_request``, never answers, and sets the event once the client closes the
    connection (not within 30 s: left unset)."""
    saw_eof = threading.Event()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host, port = silent.getsockname()

        def serve() -> None:
            conn, _ = silent.accept()
            with conn:
                conn.settimeout(30)
                conn.recv(100)  # the request; never answered
                on_request()
                try:
                    while conn.recv(100):
                        pass
                    saw_eof.set()
                except ConnectionResetError:  # closed too, abortively
                    saw_eof.set()
                except OSError:  # the timeout: still open
                    pass

        yield f"{host}:{port}", threading.Thread(target=serve), saw_eof


def test_an_interrupted_caller_cancels_its_call() -> None:
    """A signal while the caller waits cancels the call on the loop: its connection is
    closed instead of left waiting for a silent server."""

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    main = threading.get_ident()
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        # Without the cancel, the silent server would hold the call for 300 s.
        with (
            silent_server(lambda: signal.pthread_kill(main, signal.SIGALRM)) as (
                address,
                server,
                saw_eof,
            ),
            Client([address], network_timeout=300) as c,
        ):
            server.start()
            with pytest.raises(Interrupted):
                c.list_groups()
            server.join(35)
            assert saw_eof.is_set()
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_an_interrupt_right_after_the_hand_over_still_cancels_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The interrupt lands after the call reached the loop but before the caller
    started waiting (a loaded machine can run the whole request in that gap): the
    call is cancelled all the same, so its connection is closed."""
    got_request = threading.Event()
    real_submit = sync.LoopThread.submit

    def submit_then_interrupt(loop: object, fn: object, call: object) -> None:
        real_submit(loop, fn, call)  # type: ignore[arg-type]
        if got_request.wait(10):  # the request is on the wire: now the signal lands
            raise Interrupted

    with (
        silent_server(got_request.set) as (address, server, saw_eof),
        Client([address], network_timeout=300) as c,
    ):
        server.start()
        with monkeypatch.context() as patched, pytest.raises(Interrupted):
            patched.setattr(sync.LoopThread, "submit", submit_then_interrupt)
            c.list_groups()
        server.join(35)
        assert saw_eof.is_set()
