"""The builtin tracker's remembered replies follow every change of its registry.

The tracker answers a fetch query it answered before with the same bytes while
its registry is unchanged, and a store query with the bytes it sent before for
the same pick. These tests drive one `TrackerServer` in-process
over a socket pair and change its registry between queries (a replica joins and
catches up, a storage's link closes, one goes quiet), so a stale reply would
name the wrong storages.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fdfsmount.proto import tracker as T
from fdfsmount.proto.constants import HEADER_SIZE, Cmd
from fdfsmount.proto.fileid import make_remote_name
from fdfsmount.proto.wire import decode_header
from harness.tracker import TrackerServer

GROUP = "group1"
SOURCE, REPLICA = "100001", "100002"
ADDRESSES = {SOURCE: ("127.0.0.41", 23001), REPLICA: ("127.0.0.42", 23002)}


class Served:
    """A tracker's connection thread on one end of a socket pair; queries on the other."""

    def __init__(self, server: TrackerServer) -> None:
        self.server = server
        self.client, theirs = socket.socketpair()
        self.thread = threading.Thread(target=self._serve, args=(theirs,), daemon=True)
        self.thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            self.server.handle(sock, "127.0.0.1")

    def fetch(self, cmd: int, remote: str) -> tuple[int, list[tuple[str, int]]]:
        self.client.sendall(T.query_fetch_request(cmd, GROUP, remote).encode())
        header = decode_header(self.client.recv(HEADER_SIZE, socket.MSG_WAITALL))
        body = self.client.recv(header.length, socket.MSG_WAITALL) if header.length else b""
        if header.status:
            return header.status, []
        return 0, [(s.host, s.port) for s in T.decode_fetch_reply(body).servers]

    def store(self, *, all_servers: bool = False) -> tuple[list[tuple[str, int]], int]:
        """Where an upload without a group goes: (servers, store path index)."""
        self.client.sendall(T.query_store_request(all_servers=all_servers).encode())
        header = decode_header(self.client.recv(HEADER_SIZE, socket.MSG_WAITALL))
        body = self.client.recv(header.length, socket.MSG_WAITALL) if header.length else b""
        assert header.status == 0, header.status
        target = T.decode_store_reply(body)
        return [(s.host, s.port) for s in target.servers], target.store_path_index

    def close(self) -> None:
        self.client.close()
        self.thread.join(timeout=5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    served = Served(TrackerServer("127.0.0.40", 0, tmp_path, offline_after=30.0))
    try:
        yield served
    finally:
        served.close()


def join_and_beat(server: TrackerServer, storage_id: str, link: object, **beat: object) -> None:
    ip, port = ADDRESSES[storage_id]
    with server.lock:
        registry = server.registry
        node = registry.join({"group": GROUP, "id": storage_id, "ip": ip, "port": port}, link)
        registry.beat(node, dict(beat))


def beat(server: TrackerServer, storage_id: str, **info: object) -> None:
    with server.lock:
        registry = server.registry
        registry.beat(registry.group(GROUP).storages[storage_id], dict(info))


def a_file_of(source: str) -> str:
    return make_remote_name(source=int(source), create_time=int(time.time()) - 60, size=10, crc32=1)


def test_a_fetch_reply_is_reused_only_while_the_registry_is_unchanged(served: Served) -> None:
    server = served.server
    source_link, replica_link = object(), object()
    join_and_beat(server, SOURCE, source_link)
    remote = a_file_of(SOURCE)
    only_source = [ADDRESSES[SOURCE]]
    for _ in range(3):  # asked again: the remembered reply, and the same answer
        assert served.fetch(Cmd.QUERY_FETCH_ALL, remote) == (0, only_source)
        assert served.fetch(Cmd.QUERY_FETCH_ONE, remote) == (0, only_source)

    # A replica joins; once it reports having synced past the file, it holds it too.
    join_and_beat(server, REPLICA, replica_link)
    assert served.fetch(Cmd.QUERY_FETCH_ALL, remote) == (0, only_source)
    beat(server, REPLICA, synced={SOURCE: int(time.time())})
    both = sorted(ADDRESSES.values())
    assert sorted(served.fetch(Cmd.QUERY_FETCH_ALL, remote)[1]) == both
    # Two holders: reads take them in turn, not the first answer over and over.
    picked = {tuple(served.fetch(Cmd.QUERY_FETCH_ONE, remote)[1][0]) for _ in range(4)}
    assert sorted(picked) == both
    # Changes go to the source.
    assert served.fetch(Cmd.QUERY_UPDATE, remote) == (0, only_source)

    # The source's link closes: it is offline, and only the replica is named.
    with server.lock:
        server.registry.link_closed(source_link)
    assert served.fetch(Cmd.QUERY_FETCH_ALL, remote) == (0, [ADDRESSES[REPLICA]])
    assert served.fetch(Cmd.QUERY_FETCH_ONE, remote) == (0, [ADDRESSES[REPLICA]])


def test_a_storage_gone_quiet_is_dropped_from_remembered_replies(tmp_path: Path) -> None:
    served = Served(TrackerServer("127.0.0.40", 0, tmp_path, offline_after=0.2))
    try:
        server = served.server
        join_and_beat(server, SOURCE, object())
        remote = a_file_of(SOURCE)
        assert served.fetch(Cmd.QUERY_FETCH_ONE, remote) == (0, [ADDRESSES[SOURCE]])
        time.sleep(0.3)
        with server.lock:
            server.registry.expire()  # what the tracker's expiry task does every quarter second
        status, servers = served.fetch(Cmd.QUERY_FETCH_ONE, remote)
        assert (status, servers) == (errno.ENOENT, [])
    finally:
        served.close()


def test_store_replies_follow_the_pick_and_the_registry(served: Served) -> None:
    server = served.server
    links = {SOURCE: object(), REPLICA: object()}

    def join(storage_id: str, **beat_info: object) -> None:
        ip, port = ADDRESSES[storage_id]
        info = {"group": GROUP, "id": storage_id, "ip": ip, "port": port, "store_path_count": 2}
        with server.lock:
            node = server.registry.join(info, links[storage_id])
            server.registry.beat(node, {"total_mb": 1000, "free_mb": 900, **beat_info})

    join(SOURCE)
    source, replica = [ADDRESSES[SOURCE]], [ADDRESSES[REPLICA]]
    # One storage: its two store paths in turn, asked again and again.
    assert [served.store() for _ in range(4)] == [(source, 0), (source, 1)] * 2
    # (On both store paths: whichever one the source's turn comes to below, a
    # reply for it was sent before the replica joined.)
    assert [served.store(all_servers=True) for _ in range(2)] == [(source, 0), (source, 1)]

    # A second storage, active once caught up: uploads go to each in turn.
    join(REPLICA)
    beat(server, REPLICA, synced={SOURCE: int(time.time())})
    picks = [served.store() for _ in range(4)]
    assert sorted(servers[0] for servers, _ in picks) == sorted((source + replica) * 2)
    assert sorted(served.store(all_servers=True)[0]) == sorted(source + replica)

    # The source's link closes: only the replica is named, whatever was sent before.
    with server.lock:
        server.registry.link_closed(links[SOURCE])
    assert {tuple(served.store()[0]) for _ in range(4)} == {tuple(replica)}
    assert served.store(all_servers=True)[0] == replica
