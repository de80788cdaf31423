"""Builtin servers: replication inside a group, read routing, restarts, disk full, other clients.

Requests are encoded with the project's codec and sent over plain sockets,
so these tests depend on the servers only.
"""

from __future__ import annotations

import errno
import os
import time
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from builtin_nodes import Addr, BuiltinNodes, StorageNode, StorageSpec, exchange
from waiting import wait_until

from fdfsmount.proto import storage as S
from fdfsmount.proto import tracker as T
from fdfsmount.proto.constants import Cmd, StorageStatus
from fdfsmount.proto.wire import decode_header

pytestmark = [pytest.mark.processes, pytest.mark.slow]

GROUP = "group1"


def call(addr: Addr, request: bytes) -> tuple[int, bytes]:
    response, _ = exchange(addr, request)
    header = decode_header(response[:10])
    return header.status, response[10:]


def upload(node: StorageNode, data: bytes, *, ext: str = "bin", appender: bool = False) -> str:
    status, body = call(
        node.addr, S.upload_request(len(data), ext, appender=appender).encode() + data
    )
    assert status == 0, status
    return S.decode_file_id_reply(body).remote_name


def download(addr: Addr, remote: str) -> bytes | int:
    status, body = call(addr, S.download_request(GROUP, remote).encode())
    return body if status == 0 else status


def holds(node: StorageNode, remote: str, expected: bytes) -> bool:
    """Whether ``node`` serves exactly ``expected`` for ``remote``."""
    return download(node.addr, remote) == expected


def fetch_all(nodes: BuiltinNodes, remote: str) -> list[Addr]:
    status, body = call(
        nodes.tracker, T.query_fetch_request(Cmd.QUERY_FETCH_ALL, GROUP, remote).encode()
    )
    if status:
        return []
    return [(s.host, s.port) for s in T.decode_fetch_reply(body).servers]


def eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    wait_until(check, timeout=timeout, what=what)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[BuiltinNodes]:
    specs = [StorageSpec(GROUP, "127.0.0.21", "100001"), StorageSpec(GROUP, "127.0.0.22", "100002")]
    with BuiltinNodes(
        tmp_path, specs, tracker_host="127.0.0.20", tracker_args=("--offline-after", "1.5")
    ) as nodes:
        nodes.wait_synced()
        yield nodes


def test_new_files_replicate_and_fetch_routes_only_to_holders(pair: BuiltinNodes) -> None:
    source, replica = pair.storages
    remotes = []
    for i in range(20):
        data = os.urandom(1000 + i)
        remote = upload(source if i % 2 else replica, data)
        remotes.append((remote, data))
        # Every server the tracker names must already serve the file.
        for addr in fetch_all(pair, remote):
            assert download(addr, remote) == data
    for remote, data in remotes:

        def on_both(remote: str = remote) -> bool:
            return len(fetch_all(pair, remote)) == 2

        eventually(on_both, what=f"{remote} on 2 servers")
        for node in pair.storages:
            assert download(node.addr, remote) == data


def test_appender_changes_rename_metadata_and_delete_replicate(pair: BuiltinNodes) -> None:
    source, replica = pair.storages
    remote = upload(source, b"0123456789", ext="log", appender=True)
    changes = [
        S.append_request(remote, 5).encode() + b"ABCDE",
        S.modify_request(remote, 2, 3).encode() + b"xyz",
        S.truncate_request(remote, 8).encode(),
        S.truncate_request(remote, 12).encode(),
        S.append_request(remote, 4).encode() + b"tail",
    ]
    for request in changes:
        assert call(source.addr, request)[0] == 0
    expected = b"01xyz567" + b"\0" * 4 + b"tail"
    assert download(source.addr, remote) == expected
    eventually(lambda: download(replica.addr, remote) == expected, what="appender replicated")

    meta = S.set_metadata_request(GROUP, remote, {"b": "2", "a": "1"}, overwrite=True).encode()
    assert call(source.addr, meta)[0] == 0
    get_meta = S.get_metadata_request(GROUP, remote).encode()
    eventually(lambda: call(replica.addr, get_meta) == (0, b"a\x021\x01b\x022"), what="metadata")

    status, body = call(source.addr, S.regenerate_appender_request(remote).encode())
    assert status == 0
    renamed = S.decode_file_id_reply(body).remote_name
    eventually(lambda: download(replica.addr, renamed) == expected, what="rename replicated")
    assert download(replica.addr, remote) == errno.ENOENT

    set_meta = S.set_metadata_request(GROUP, renamed, {"c": "3"}, overwrite=True).encode()
    assert call(source.addr, set_meta)[0] == 0
    renamed_meta = S.get_metadata_request(GROUP, renamed).encode()
    eventually(lambda: call(replica.addr, renamed_meta)[0] == 0, what="metadata replicated")

    def meta_files(node: StorageNode) -> list[Path]:
        return list(node.base_dir.rglob(renamed.rsplit("/", 1)[1] + "-m"))

    assert meta_files(source) and meta_files(replica)
    assert call(source.addr, S.delete_request(GROUP, renamed).encode())[0] == 0
    eventually(lambda: download(replica.addr, renamed) == errno.ENOENT, what="delete replicated")
    # The metadata goes with the file, here and on the replica.
    assert not meta_files(source)
    eventually(lambda: not meta_files(replica), what="metadata delete replicated")


def test_replication_resumes_after_restarts(pair: BuiltinNodes) -> None:
    source, replica = pair.storages
    before = upload(source, b"before")
    eventually(lambda: download(replica.addr, before) == b"before", what="first file")

    replica.proc.terminate()
    while_down = upload(source, b"while the replica was down")
    appender = upload(source, b"abc", appender=True)
    assert call(source.addr, S.append_request(appender, 3).encode() + b"def")[0] == 0
    pair.start_storage(replica)
    eventually(lambda: download(replica.addr, while_down) == b"while the replica was down")
    eventually(lambda: download(replica.addr, appender) == b"abcdef", what="append after restart")

    pair.restart_storage(source)
    after = upload(source, b"after the source restarted")
    eventually(lambda: download(replica.addr, after) == b"after the source restarted")
    # Marks were persisted: nothing was copied twice.
    lines = (replica.base_dir / "sync" / "binlog").read_text().splitlines()
    created = [line.split()[2] for line in lines if line.split()[1] == "c"]
    assert len(created) == len(set(created)) == 4


def test_reads_move_to_the_replica_when_the_source_dies(pair: BuiltinNodes) -> None:
    source, replica = pair.storages
    data = os.urandom(5000)
    remote = upload(source, data)
    eventually(lambda: len(fetch_all(pair, remote)) == 2, what="replicated")
    source.proc.kill()

    def only_replica() -> bool:
        return fetch_all(pair, remote) == [replica.addr]

    eventually(only_replica, what="tracker drops the dead source")
    statuses = {r.storage_id: r.status for r in pair.list_storages(GROUP)}
    assert statuses == {"100001": StorageStatus.OFFLINE, "100002": StorageStatus.ACTIVE}
    assert download(replica.addr, remote) == data
    status, body = call(
        pair.tracker, T.query_fetch_request(Cmd.QUERY_UPDATE, GROUP, remote).encode()
    )
    assert status == 0 and T.decode_fetch_reply(body).servers[0].port == replica.port


def test_disk_full_flag_refuses_uploads(pair: BuiltinNodes) -> None:
    node = pair.storages[0]
    (node.base_dir / ".full").write_text("")
    eventually(
        lambda: call(pair.tracker, T.query_store_request(GROUP).encode())[0] == errno.ENOSPC,
        what="tracker sees the full disk",
    )
    # The storage goes by what it reported, as upstream's does: from that beat on
    # it refuses uploads itself too, and the connection stays usable (the payload
    # is consumed), for an upload taken whole as for one streamed.
    for payload in (b"abc", os.urandom(1 << 20)):
        request = S.upload_request(len(payload), "txt").encode() + payload
        response, closed = exchange(node.addr, request)
        assert decode_header(response[:10]).status == errno.ENOSPC
        assert not closed
    (node.base_dir / ".full").unlink()
    eventually(lambda: call(pair.tracker, T.query_store_request(GROUP).encode())[0] == 0)
    assert call(node.addr, S.upload_request(3, "txt").encode() + b"abc")[0] == 0


@pytest.mark.parametrize("client", ["fdfs_client", "fastdfs_client"])
def test_third_party_clients(tmp_path: Path, client: str) -> None:
    """Upload, download, delete with the PyPI clients (each with its own quirks)."""
    specs = [StorageSpec(GROUP, "127.0.0.21", "100001"), StorageSpec(GROUP, "127.0.0.22", "100002")]
    # fastdfs_client expects 45-byte IP fields (response_ip_addr_size = IPv6).
    ip_size = "46" if client == "fastdfs_client" else "16"
    with BuiltinNodes(tmp_path, specs, "127.0.0.20", ("--ip-size", ip_size)) as nodes:
        host, port = nodes.tracker
        if client == "fdfs_client":
            from fdfs_client.client import Fdfs_client

            conf = tmp_path / "client.conf"
            conf.write_text(
                f"connect_timeout=10\nnetwork_timeout=30\ntracker_server={host}:{port}\n"
            )
            fdfs = Fdfs_client(str(conf))
        else:
            import fastdfs_client.client as fc

            fdfs = fc.FastdfsClient(fc.Config.create((host,), port))
        for i in range(3):
            data = os.urandom(10000 + i)
            file_id = fdfs.upload_by_buffer(data, "bin")["Remote file_id"]
            key = file_id.encode() if client == "fdfs_client" else file_id
            assert fdfs.download_to_buffer(key)["Content"] == data
            assert fdfs.delete_file(key)[0] == "Delete file successed."
        appender = fdfs.upload_appender_by_buffer(b"abc", "log")["Remote file_id"]
        assert "/M00/" in appender


def test_large_payloads_round_trip_and_replicate(pair: BuiltinNodes) -> None:
    """Payloads big enough for the pipelined receive path, including an append."""
    source, replica = pair.storages
    first, more = os.urandom(20 << 20), os.urandom(9 << 20)
    remote = upload(source, first, appender=True)
    assert call(source.addr, S.append_request(remote, len(more)).encode() + more)[0] == 0
    modified = os.urandom(9 << 20)
    assert (
        call(source.addr, S.modify_request(remote, 1000, len(modified)).encode() + modified)[0] == 0
    )
    changed = bytearray(first + more)
    changed[1000 : 1000 + len(modified)] = modified
    expected = bytes(changed)
    assert download(source.addr, remote) == expected
    eventually(lambda: download(replica.addr, remote) == expected, timeout=20, what="big file")
    info = S.decode_file_info_reply(
        call(source.addr, S.query_file_info_request(GROUP, remote).encode())[1]
    )
    assert info.size == len(expected)
    assert info.crc32 == zlib.crc32(expected)


def test_storages_rejoin_a_restarted_tracker(pair: BuiltinNodes) -> None:
    source, _ = pair.storages
    remote = upload(source, b"known before the restart")
    eventually(lambda: len(fetch_all(pair, remote)) == 2, what="replicated")
    tracker = pair.tracker_proc
    assert tracker is not None
    tracker.terminate()
    port_at = tracker.argv.index("--port") + 1
    tracker.argv[port_at] = str(pair.tracker[1])
    tracker.start()
    pair.wait_active(timeout=10)
    eventually(lambda: len(fetch_all(pair, remote)) == 2, what="progress reported again")


def routed(pair: BuiltinNodes, cmd: int, remote: str) -> Addr | int:
    """The storage the tracker names for ``remote`` (or the tracker's error status)."""
    status, body = call(pair.tracker, T.query_fetch_request(cmd, GROUP, remote).encode())
    if status:
        return status
    server = T.decode_fetch_reply(body).servers[0]
    return (server.host, server.port)


def change_via_tracker(
    pair: BuiltinNodes, remote: str, request: bytes, *, timeout: float = 20.0
) -> Addr:
    """Send a change where the tracker routes updates, retrying until one acknowledges it.

    Appends are not idempotent, so only refusals that leave the file alone are
    retried: the tracker's or the storage's EAGAIN, the tracker's ENOENT.
    """

    def attempt() -> Addr | None:
        target = routed(pair, Cmd.QUERY_UPDATE, remote)
        if isinstance(target, int):
            assert target in (errno.EAGAIN, errno.ENOENT), target
            return None
        status, _ = call(target, request)
        assert status in (0, errno.EAGAIN), f"change refused with {errno.errorcode[status]}"
        return target if status == 0 else None

    return wait_until(attempt, timeout=timeout, what=f"a storage taking the change of {remote}")


def reported_synced(pair: BuiltinNodes, storage_id: str) -> int:
    for record in pair.list_storages(GROUP):
        if record.storage_id == storage_id:
            return int(record.counters.get("last_synced_timestamp", 0))
    return 0


def test_no_stale_appender_read_while_the_source_is_down(pair: BuiltinNodes) -> None:
    """A replica that missed an acknowledged append is never offered for reads."""
    source, replica = pair.storages
    old = os.urandom(4096)
    remote = upload(source, old, appender=True)
    eventually(lambda: download(replica.addr, remote) == old, what="appender replicated")
    # By timestamps alone the replica now looks caught up with the source.
    created = int(time.time())
    eventually(
        lambda: reported_synced(pair, replica.spec.server_id) > created,
        what="replica reports progress past the upload",
    )
    new = os.urandom(4096)
    replica.proc.stop()  # it cannot pull the append below
    try:
        assert call(source.addr, S.append_request(remote, len(new)).encode() + new)[0] == 0
        source.proc.kill()
    finally:
        replica.proc.cont()
    eventually(
        lambda: (
            {r.storage_id: r.status for r in pair.list_storages(GROUP)}[source.spec.server_id]
            == StorageStatus.OFFLINE
        ),
        what="tracker sees the source OFFLINE",
    )
    # Long enough for the replica to report (it beats every 0.5 s).
    for _ in range(40):  # some 2 s: the replica reports twice meanwhile
        target = routed(pair, Cmd.QUERY_FETCH_ONE, remote)
        if not isinstance(target, int):
            assert download(target, remote) == old + new, "a stale version was served"
        time.sleep(0.05)
    pair.start_storage(source)
    pair.wait_active()
    for node in pair.storages:
        eventually(partial(holds, node, remote, old + new), what=f"{node.addr}")
    target = routed(pair, Cmd.QUERY_FETCH_ONE, remote)
    assert not isinstance(target, int) and download(target, remote) == old + new


def test_changes_taken_while_the_source_was_down_survive_its_return(
    pair: BuiltinNodes,
) -> None:
    """Writes on the replica, then on the restarted source: nothing acknowledged is lost.

    The replica is frozen while the source restarts, so the source cannot pull
    the replica's changes before clients can reach it again.
    """
    source, replica = pair.storages
    base = os.urandom(4096)
    remote = upload(source, base, appender=True)
    eventually(lambda: download(replica.addr, remote) == base, what="appender replicated")
    created = int(time.time())
    eventually(
        lambda: reported_synced(pair, replica.spec.server_id) > created,
        what="replica reports progress past the upload",
    )
    source.proc.kill()
    while_down = os.urandom(4096)
    taker = change_via_tracker(pair, remote, S.append_request(remote, 4096).encode() + while_down)
    assert taker == replica.addr
    patch = os.urandom(100)
    change_via_tracker(pair, remote, S.modify_request(remote, 10, 100).encode() + patch)
    after = os.urandom(4096)
    replica.proc.stop()
    try:
        pair.start_storage(source)
        # While the replica is frozen the source must not take changes yet.
        for _ in range(10):
            target = routed(pair, Cmd.QUERY_UPDATE, remote)
            if target == source.addr:
                status, _ = call(source.addr, S.append_request(remote, 4096).encode() + after)
                assert status != 0, "the restarted source took a change before catching up"
            time.sleep(0.05)
    finally:
        replica.proc.cont()
    assert (
        change_via_tracker(pair, remote, S.append_request(remote, 4096).encode() + after)
        == source.addr
    )
    expected = bytearray(base + while_down + after)
    expected[10:110] = patch
    for node in pair.storages:
        eventually(partial(holds, node, remote, bytes(expected)), what=f"{node.addr}")


@pytest.fixture
def slow_pair(tmp_path: Path) -> Iterator[BuiltinNodes]:
    """A pair whose leases outlast a frozen tracker for a few seconds."""
    specs = [StorageSpec(GROUP, "127.0.0.23", "100003"), StorageSpec(GROUP, "127.0.0.24", "100004")]
    with BuiltinNodes(
        tmp_path, specs, tracker_host="127.0.0.25", tracker_args=("--offline-after", "4")
    ) as nodes:
        nodes.wait_synced()
        yield nodes


def _holds_one_of(node: StorageNode, remote: str, allowed: list[bytes]) -> bool:
    return download(node.addr, remote) in allowed


def test_a_change_the_trackers_never_learned_of_cannot_undo_later_ones(
    slow_pair: BuiltinNodes,
) -> None:
    """The source logs an append the tracker never hears of, then freezes; the replica
    takes the file over and acknowledges an append; the source returns.

    The source's unreported append must not be acknowledged (nothing would keep
    it), and when the source returns, its log must not be replayed over the
    replica's acknowledged change: every storage ends with every acknowledged byte.
    """
    pair = slow_pair
    source, replica = pair.storages
    tracker = pair.tracker_proc
    assert tracker is not None
    base = os.urandom(4096)
    remote = upload(source, base, appender=True)
    eventually(lambda: download(replica.addr, remote) == base, what="appender replicated")
    created = int(time.time())
    eventually(
        lambda: reported_synced(pair, replica.spec.server_id) > created,
        what="replica reports progress past the upload",
    )
    unreported = os.urandom(4096)
    tracker.stop()
    replica.proc.stop()  # it cannot pull the append below
    try:
        # A beat is now awaiting the tracker's reply, so the append's report
        # cannot even be sent; the source's lease (3.7 s) is still valid.
        time.sleep(0.8)
        status, _ = call(source.addr, S.append_request(remote, 4096).encode() + unreported)
        assert status in (0, errno.EIO, errno.EAGAIN), status
        source.proc.stop()
    finally:
        replica.proc.cont()
        tracker.cont()
    try:
        eventually(
            lambda: (
                {r.storage_id: r.status for r in pair.list_storages(GROUP)}[source.spec.server_id]
                == StorageStatus.OFFLINE
            ),
            what="tracker sees the frozen source OFFLINE",
        )
        taken = os.urandom(4096)
        taker = change_via_tracker(pair, remote, S.append_request(remote, 4096).encode() + taken)
        assert taker == replica.addr
    finally:
        source.proc.cont()
    pair.wait_active()
    # Unacknowledged, the source's append may or may not survive; acknowledged, it must.
    allowed = (
        [base + unreported + taken] if status == 0 else [base + taken, base + unreported + taken]
    )
    for node in pair.storages:
        eventually(partial(_holds_one_of, node, remote, allowed), what=f"{node.addr}")
    assert download(source.addr, remote) == download(replica.addr, remote)
