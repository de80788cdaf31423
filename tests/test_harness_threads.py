"""Builtin servers: state shared by connection threads and the trio loop.

Client connections are served by their own threads while replication,
heartbeats and some commands run in trio. These tests check the pieces both
sides share: per-file locks, binlog wake-ups and ordering, and the servers
under many concurrent connections (in-process, no OS processes).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import trio
from waiting import wait_until

from fdfsmount.proto import storage as S
from fdfsmount.proto.wire import decode_header
from harness import serverutil
from harness.binlog import SOURCE_OPS, Binlog
from harness.inprocess import start_inprocess_cluster
from harness.storage import FileLocks

GROUP = "group1"


async def test_a_name_held_by_a_thread_waits_a_task_and_back() -> None:
    locks = FileLocks()
    locks.bind(trio.lowlevel.current_trio_token())
    order: list[str] = []
    thread_has_it = threading.Event()
    release_thread = threading.Event()

    def thread_side() -> None:
        with locks.hold_blocking("M00/00/00/a"):
            order.append("thread")
            thread_has_it.set()
            release_thread.wait(10)
        with locks.hold_blocking("M00/00/00/a"):  # waits for the task below
            order.append("thread again")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, thread_side)
        await trio.to_thread.run_sync(thread_has_it.wait, 10)
        waiting = trio.Event()

        async def task_side() -> None:
            waiting.set()
            async with locks.hold("M00/00/00/a"):
                order.append("task")
                release_thread.set()  # the thread now queues behind us
                await trio.sleep(0.05)
                order.append("task done")

        nursery.start_soon(task_side)
        await waiting.wait()
        await trio.sleep(0.02)
        assert order == ["thread"]  # the task waits while the thread holds the name
        release_thread.set()
    assert order == ["thread", "task", "task done", "thread again"]


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    locks = FileLocks()
    locks.bind(trio.lowlevel.current_trio_token())
    async with locks.hold("x"):
        with trio.move_on_after(0.05):
            async with locks.hold("x"):
                pytest.fail("took a name that was held")
    # Had the cancelled waiter stayed queued, the name would never be free again.
    with trio.fail_after(5):
        async with locks.hold("x"):
            pass
        await trio.to_thread.run_sync(_hold_and_release, locks, "x")


def _hold_and_release(locks: FileLocks, name: str) -> None:
    with locks.hold_blocking(name):
        pass


async def test_an_append_from_a_thread_wakes_a_follower(tmp_path: Path) -> None:
    binlog = Binlog(tmp_path)
    binlog.bind(trio.lowlevel.current_trio_token())
    start = binlog.size
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(binlog.wait_for_growth, start)
            await trio.sleep(0.02)  # the follower waits now
            await trio.to_thread.run_sync(binlog.record_source, "C", "M00/00/00/f")
    assert binlog.size > start
    binlog.close()


def _exchange(address: str, request: bytes, *, split: bool = False) -> tuple[int, bytes]:
    """One request on a new connection; ``split`` sends the header alone first, so the
    server sees the message arrive in parts."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        if split:
            sock.sendall(request[:10])
            time.sleep(0.005)
            request = request[10:]
        sock.sendall(request)
        head = _recv(sock, 10)
        header = decode_header(head)
        return header.status, _recv(sock, header.length)


def _recv(sock: socket.socket, size: int) -> bytes:
    data = sock.recv(size, socket.MSG_WAITALL) if size else b""
    assert len(data) == size
    return data


@pytest.mark.deadline(120)
async def test_concurrent_uploads_keep_the_binlog_in_time_order(tmp_path: Path) -> None:
    """Uploads from many connection threads at once: every file kept in its place, lines
    in order, no temp file left. Some uploads arrive whole, some in parts (the two ways
    the storage takes an upload)."""
    writers, each = 8, 25

    def writer(address: str, k: int) -> list[str]:
        names = []
        for i in range(each):
            data = f"{k}-{i}".encode() * 50
            request = S.upload_request(len(data), "txt").encode() + data
            status, body = _exchange(address, request, split=i % 5 == 0)
            assert status == 0
            names.append(S.decode_file_id_reply(body).remote_name)
        return names

    async with trio.open_nursery() as nursery:
        cluster = await start_inprocess_cluster(nursery, tmp_path, {GROUP: 1})
        node = cluster.storages[0]
        results: list[list[str]] = []

        async def run_writer(k: int) -> None:
            results.append(await trio.to_thread.run_sync(writer, node.address, k))

        async with trio.open_nursery() as writers_nursery:
            for k in range(writers):
                writers_nursery.start_soon(run_writer, k)
        names = [name for names in results for name in names]
        assert len(set(names)) == writers * each
        for name in names[:: each // 5]:
            request = S.download_request(GROUP, name).encode()
            status, _ = await trio.to_thread.run_sync(_exchange, node.address, request)
            assert status == 0
        lines = (node.base_dir / "sync" / "binlog").read_text().splitlines()
        source = [line.split() for line in lines if line.split()[1] in SOURCE_OPS]
        stamps = [int(fields[0]) for fields in source]
        assert stamps == sorted(stamps)
        assert {fields[2] for fields in source if fields[1] == "C"} >= set(names)
        # 200 files: two data subdirectories of 100, every file in the one its name says.
        data = node.base_dir / "store0" / "data"
        on_disk = {f"M00/{p.relative_to(data)}" for p in data.rglob("*") if p.is_file()}
        assert on_disk == set(names)
        assert {name[:9] for name in names} == {"M00/00/00", "M00/00/01"}
        assert not any((node.base_dir / "store0" / "tmp").iterdir())
        nursery.cancel_scope.cancel()


def test_accepting_threads_serve_each_connection_where_it_was_accepted() -> None:
    """A connection-per-request client is served by the threads already waiting in
    accept, not a new thread per connection; connections held open do not queue
    the next ones; shutting the listener down ends every waiting thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    served: list[int] = []
    release = threading.Event()

    def serve(sock: socket.socket, peer: str) -> None:
        served.append(threading.get_native_id())  # never reused soon, unlike get_ident
        if sock.recv(1) == b"h":  # hold this connection until released
            release.wait(10)
        sock.sendall(b"k")
        sock.recv(1)  # as the servers do: serve until the client closes
        sock.close()

    def ours() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "fdfs-connection"]

    threads = serverutil.AcceptingThreads(listener, serve)
    threads.start()
    try:
        for _ in range(10):
            with socket.create_connection(address) as c:
                c.sendall(b"q")
                assert c.recv(1) == b"k"
            # The next connection comes only once this one's thread waits again.
            wait_until(
                lambda: threads.waiting == serverutil.SPARE_ACCEPTORS, what="the thread to wait"
            )
        # Served where they were accepted: no thread started beyond the first ones.
        assert len(set(served)) <= serverutil.SPARE_ACCEPTORS
        assert len(ours()) == serverutil.SPARE_ACCEPTORS

        # Reconnecting at once (as the C client does) reaches a thread while the
        # last one is still closing: a few threads take turns (more on a loaded
        # machine, never more than wait at most plus those closing), none start
        # and end per connection.
        served.clear()
        for _ in range(100):
            with socket.create_connection(address) as c:
                c.sendall(b"q")
                assert c.recv(1) == b"k"
        assert len(set(served)) <= serverutil.MAX_WAITING + serverutil.SPARE_ACCEPTORS

        held = [socket.create_connection(address) for _ in range(4)]
        for c in held:
            c.sendall(b"h")
        with socket.create_connection(address) as c:  # served though four are held
            c.sendall(b"q")
            c.settimeout(10)
            assert c.recv(1) == b"k"
        release.set()
        for c in held:
            c.settimeout(10)
            assert c.recv(1) == b"k"
            c.close()
        # Threads beyond MAX_WAITING end; the others wait for the next connections.
        wait_until(lambda: len(ours()) == threads.waiting, what="served threads to wait again")
        assert threads.waiting <= serverutil.MAX_WAITING
    finally:
        release.set()
        threads.close()
        wait_until(lambda: not ours(), what="the waiting threads to end")
        listener.close()


@pytest.mark.expect_log_warnings
def test_connections_wait_for_a_free_thread_when_none_can_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When the system refuses another thread, a connection waits in the backlog for
    a thread to finish its own, instead of the server losing it."""
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    release = threading.Event()

    def serve(sock: socket.socket, peer: str) -> None:
        if sock.recv(1) == b"h":
            release.wait(10)
        sock.sendall(b"k")
        sock.recv(1)
        sock.close()

    threads = serverutil.AcceptingThreads(listener, serve)
    threads.start()
    try:
        wait_until(lambda: threads.waiting == serverutil.SPARE_ACCEPTORS, what="spares")

        def refuse(self: threading.Thread) -> None:
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(threading.Thread, "start", refuse)
        held = [socket.create_connection(address) for _ in range(serverutil.SPARE_ACCEPTORS)]
        for c in held:
            c.sendall(b"h")
        wait_until(lambda: "no new connection thread" in caplog.text, what="the refusal")
        with socket.create_connection(address) as late:
            late.sendall(b"q")
            release.set()
            for c in held:  # the held connections end; a freed thread takes the late one
                c.settimeout(10)
                assert c.recv(1) == b"k"
                c.close()
            late.settimeout(10)
            assert late.recv(1) == b"k"
    finally:
        release.set()
        monkeypatch.undo()
        threads.close()
        listener.close()


async def test_connection_threads_get_nodelay_the_peer_and_their_own_buffer() -> None:
    """Accepted sockets have TCP_NODELAY (from the listener, without a call per
    connection), the handler is told the peer's address, and a thread serving one
    connection after another receives into the same buffer each time."""
    seen: list[tuple[int, str, int, int]] = []

    def handler(sock: socket.socket, peer: str) -> None:
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        buffer = serverutil.thread_buffer(4096)
        seen.append((threading.get_ident(), peer, nodelay, id(buffer)))
        sock.sendall(b"k")
        sock.recv(1)  # until the client closes, as the servers do

    def clients(port: int) -> None:
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", port)) as c:
                assert c.recv(1) == b"k"

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serverutil.serve_in_threads, handler, "127.0.0.1", 0)
        await trio.to_thread.run_sync(clients, port)
        nursery.cancel_scope.cancel()
    assert len(seen) == 30
    assert {(peer, nodelay) for _, peer, nodelay, _ in seen} == {("127.0.0.1", 1)}
    buffers: dict[int, set[int]] = {}
    for thread, _, _, buffer in seen:
        buffers.setdefault(thread, set()).add(buffer)
    assert len(buffers) < 30, "no thread served a second connection"
    assert all(len(ids) == 1 for ids in buffers.values())
