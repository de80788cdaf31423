"""The client end to end over trio memory streams, against scripted peers.

The peers replay replies captured from real FastDFS 6.16.1 servers; unless a
test queues its own answer, a request is only answered when its bytes equal
the captured request, so these tests also check what the client sends.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_
from scripted_peer import (
    Close,
    Cut,
    Hang,
    Refuse,
    Reply,
    ScriptedNetwork,
    ScriptedServer,
    golden_reply,
    load_golden,
    reply,
)

from fdfsmount.proto import (
    ConnectError,
    FdfsError,
    FileExists,
    FileNotFound,
    NoStorage,
    ProtocolError,
    ServerAddr,
    ServerError,
    Timeout,
)
from fdfsmount.proto import storage as st
from fdfsmount.proto import tracker as tr
from fdfsmount.proto.binlog import BinlogRecord, encode_binlog_lines, encode_binlog_trailer
from fdfsmount.proto.client import Client
from fdfsmount.proto.clientconf import read_client_conf
from fdfsmount.proto.constants import BINLOG_STREAM_LENGTH, Cmd, StorageStatus
from fdfsmount.proto.fileid import make_remote_name, parse_file_id
from fdfsmount.proto.records import GroupStat, StorageStat
from fdfsmount.proto.storage import FileInfo

G = load_golden("storage-id-mode")
GIP = load_golden("ip-mode")

S0 = ServerAddr("127.0.0.1", 23000)
S1 = ServerAddr("127.0.0.1", 23001)
S2 = ServerAddr("127.0.0.1", 23002)
HELLO = "group1/M00/00/46/ooYBAGsC84mAaQSoAAAAEIZVgyU123.txt"
HELLO_BYTES = b"Hello, FastDFS!\n"
EMPTY = "group1/M00/00/46/oYYBAGsC84uAJgo8AAAAAAAAAAA339.txt"
MASTER = "group1/M00/00/46/ooYBAGsC85yAe5BMAAAAJnyf03c317.jpg"
MASTER_BYTES = b"fake jpeg bytes for master/slave test\n"
APPENDER = "group1/M00/00/46/oYYBAGsC87CETlZmAAAAAKaEx8Y099.log"
BIG = "group1/M00/00/46/ooYBAGsC84qAUZ-KAAMgAL_w-v0642.bin"
BIG_BYTES = bytes((7 * i + i // 256) % 256 for i in range(204800))
MISSING = "group1/M00/00/46/oYYBAGsC84qASNMpAAAAFT6cIgk0171326"
DEADLINE = 10


@pytest.fixture
async def client(net: ScriptedNetwork) -> AsyncIterator[Client]:
    async with Client(["127.0.0.1:22122"], connect=net.connect, network_timeout=5) as c:
        yield c


def fetch_one(server: ServerAddr) -> Reply:
    return Reply(reply(0, tr.encode_fetch_reply(tr.FetchTarget("group1", (server,)))))


def fetch_all(*servers: ServerAddr) -> Reply:
    return Reply(reply(0, tr.encode_fetch_reply(tr.FetchTarget("group1", servers))))


def file_info(size: int) -> Reply:
    return Reply(reply(0, st.encode_file_info_reply(FileInfo(size, 1795355529, 0, "127.0.0.1"))))


# ================================================================ uploads


async def test_upload_bytes_sends_the_c_clients_bytes(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.add_golden(G["query_store_without_group_one"])
    s1.add_golden(G["upload_file_with_ext"])
    with trio.fail_after(DEADLINE):
        fid = await client.upload(HELLO_BYTES, ext="txt")
    assert str(fid) == HELLO
    assert client.stats.requests == {"query_store_without_group_one": 1, "upload_file": 1}
    assert client.stats.bytes_sent == 10 + len(G["upload_file_with_ext"].request)


async def test_upload_path_streams_in_chunks(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer, tmp_path: Path
) -> None:
    tracker.add_golden(G["query_store_without_group_one"])
    s1.add_golden(G["upload_file_200k"])
    src = tmp_path / "data.bin"
    src.write_bytes(BIG_BYTES)
    with trio.fail_after(DEADLINE):
        assert str(await client.upload(src, ext="bin")) == BIG


async def test_upload_async_stream_without_size_is_spooled(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.add_golden(G["query_store_without_group_one"])
    s1.add_golden(G["upload_file_200k"])

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(BIG_BYTES), 7000):
            yield BIG_BYTES[i : i + 7000]

    with trio.fail_after(DEADLINE):
        assert str(await client.upload(chunks(), ext=".bin")) == BIG
        # With a size the stream goes out as it comes.
        assert str(await client.upload(chunks(), ext="bin", size=len(BIG_BYTES))) == BIG


async def test_upload_with_meta_then_slave(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.add_golden(G["query_store_without_group_one"], G["query_update"])
    s1.add_golden(G["upload_file_master"], G["set_metadata_overwrite"], G["upload_slave_file"])
    meta = {"ext_name": "jpg", "width": "160", "height": "80", "file_size": "115120"}
    with trio.fail_after(DEADLINE):
        fid = await client.upload(MASTER_BYTES, ext="jpg", meta=meta)
        assert str(fid) == MASTER
        slave = await client.upload_slave(fid, MASTER_BYTES, prefix="_big", ext="jpg")
    assert str(slave) == MASTER.replace(".jpg", "_big.jpg")
    # The metadata went over the upload's connection, as fdfs_test does.
    assert s1.connections == 1


@pytest.mark.expect_log_warnings
async def test_upload_fails_over_to_another_storage_of_the_group(
    client: Client, tracker: ScriptedServer, s0: ScriptedServer, s1: ScriptedServer
) -> None:
    s1.refuse = True
    tracker.add_golden(G["query_store_with_group_one"], G["query_store_with_group_all"])
    s0.add_golden(G["upload_file_with_ext"])
    with trio.fail_after(DEADLINE):
        assert str(await client.upload(HELLO_BYTES, ext="txt", group="group1")) == HELLO
    assert tracker.commands() == [Cmd.QUERY_STORE_WITH_GROUP_ONE, Cmd.QUERY_STORE_WITH_GROUP_ALL]


async def test_storage_refusing_an_upload_early_gives_its_status(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.add_golden(G["query_store_without_group_one"])
    s1.queue(Cmd.UPLOAD_FILE, Refuse(reply(errno.ENOSPC)))
    with trio.fail_after(DEADLINE), pytest.raises(ServerError) as info:
        await client.upload(b"x" * (4 << 20), ext="bin")
    assert info.value.errno == errno.ENOSPC
    assert f"upload_file on storage {S1}" in str(info.value)


async def test_upload_without_storage_is_nostorage(client: Client, tracker: ScriptedServer) -> None:
    tracker.queue(Cmd.QUERY_STORE_WITHOUT_GROUP_ONE, Reply(reply(errno.ENOENT)))
    with trio.fail_after(DEADLINE), pytest.raises(NoStorage):
        await client.upload(b"x")


async def test_upload_to_unknown_group_is_file_not_found(
    client: Client, tracker: ScriptedServer
) -> None:
    tracker.add_golden(
        G["query_store_with_group_one_unknown_group"], G["list_one_group_unknown_group"]
    )
    with trio.fail_after(DEADLINE), pytest.raises(FileNotFound, match="nosuchgroup"):
        await client.upload(b"x", group="nosuchgroup")


async def test_slave_exists_is_file_exists_and_keeps_the_connection(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.add_golden(G["query_update"])
    s1.add_golden(G["upload_slave_file_exists"], G["upload_slave_file"])
    with trio.fail_after(DEADLINE):
        with pytest.raises(FileExists) as info:
            await client.upload_slave(MASTER, b"DUPE", prefix="_big", ext="jpg")
        assert info.value.errno == errno.EEXIST
        assert "upload_slave_file" in str(info.value) and str(S1) in str(info.value)
        await client.upload_slave(MASTER, MASTER_BYTES, prefix="_big", ext="jpg")
    assert s1.connections == 1


# ================================================================ downloads


async def test_download_whole_and_ranges(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.add_golden(G["query_fetch_one"])
    s1.add_golden(
        G["download_file_whole"],
        G["download_file_offset_length"],
        G["download_file_length_past_eof"],
        G["download_file_offset_only"],
    )
    with trio.fail_after(DEADLINE):
        assert await client.download(HELLO) == HELLO_BYTES
        assert await client.download(HELLO, offset=7, length=6) == HELLO_BYTES[7:13]
        assert await client.download(HELLO, offset=10, length=100) == HELLO_BYTES[10:]
        assert await client.download(HELLO, offset=7) == HELLO_BYTES[7:]
    assert s1.connections == 1  # pooled


async def test_download_at_end_needs_no_server(client: Client, net: ScriptedNetwork) -> None:
    # Real servers refuse offset >= size (even for empty files); the ID tells the size.
    with trio.fail_after(DEADLINE):
        assert await client.download(EMPTY) == b""
        assert await client.download(HELLO, offset=16) == b""
        assert await client.read_range(HELLO, 100, 10) == b""
        with pytest.raises(ServerError) as info:
            await client.download(HELLO, offset=17)
    assert info.value.errno == errno.EINVAL
    assert net.servers == {}


async def test_read_range_past_end_of_appender_asks_the_size(
    client: Client, s1: ScriptedServer
) -> None:
    s1.queue(Cmd.DOWNLOAD_FILE, Reply(reply(errno.EINVAL), close=True))
    s1.queue(Cmd.QUERY_FILE_INFO, file_info(12))
    with trio.fail_after(DEADLINE):
        assert await client.read_range(APPENDER, 12, 4096, servers=[S1]) == b""
    assert s1.commands() == [Cmd.DOWNLOAD_FILE, Cmd.QUERY_FILE_INFO]
    assert s1.connections == 2  # the storage closes after EINVAL: never reused


async def test_download_appender(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1))
    s1.add_golden(G["download_appender_file"])
    with trio.fail_after(DEADLINE):
        assert await client.download(APPENDER) == b"01xyz567\0\0\0\0"


async def test_download_to_file_and_stream(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer, tmp_path: Path
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1), fetch_one(S1))
    s1.add_golden(G["download_file_200k"])
    seen: list[int] = []
    with trio.fail_after(DEADLINE):
        n = await client.download_to(BIG, tmp_path / "out", progress=seen.append)
        assert n == len(BIG_BYTES) and (tmp_path / "out").read_bytes() == BIG_BYTES
        assert seen[-1] == len(BIG_BYTES)
        async with client.download_stream(BIG) as chunks:
            got = [chunk async for chunk in chunks]
    assert b"".join(got) == BIG_BYTES and max(map(len, got)) <= 256 * 1024


@pytest.mark.expect_log_warnings
async def test_download_to_removes_a_partial_file(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer, tmp_path: Path
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1))
    tracker.queue(Cmd.QUERY_FETCH_ALL, fetch_all(S1))
    s1.queue(Cmd.DOWNLOAD_FILE, Cut(G["download_file_200k"].response[:100_000]))
    with trio.fail_after(DEADLINE), pytest.raises(ProtocolError):
        await client.download_to(BIG, tmp_path / "out")
    assert not (tmp_path / "out").exists()


async def test_abandoned_stream_is_not_reused(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1), fetch_one(S1))
    s1.add_golden(G["download_file_200k"], G["download_file_whole"])
    with trio.fail_after(DEADLINE):
        async with client.download_stream(BIG) as chunks:
            async for _chunk in chunks:
                break
        assert client.pool.idle_count(S1) == 0
        assert await client.download(HELLO) == HELLO_BYTES
    assert s1.connections == 2


# ================================================================ replicas


@pytest.mark.expect_log_warnings
async def test_read_falls_back_to_a_replica_that_answers(
    client: Client,
    tracker: ScriptedServer,
    s0: ScriptedServer,
    s1: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s1.refuse = True
    tracker.add_golden(G["query_fetch_one"])
    tracker.queue(Cmd.QUERY_FETCH_ALL, golden_reply(G["query_fetch_all"]))
    s0.add_golden(G["download_file_whole"])
    with trio.fail_after(DEADLINE):
        assert await client.download(HELLO) == HELLO_BYTES
    assert tracker.commands() == [Cmd.QUERY_FETCH_ONE, Cmd.QUERY_FETCH_ALL]
    assert any("23001" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.expect_log_warnings
async def test_read_skips_a_replica_that_times_out(
    client: Client,
    tracker: ScriptedServer,
    s0: ScriptedServer,
    s1: ScriptedServer,
    autojump_clock: trio.testing.MockClock,
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ALL, fetch_all(S1, S0), fetch_all(S1, S0))
    s1.queue(Cmd.DOWNLOAD_FILE, Hang())
    s0.add_golden(G["download_file_offset_length"])
    with trio.fail_after(DEADLINE):
        assert await client.read_range(HELLO, 7, 6) == HELLO_BYTES[7:13]
        # The replica that failed is tried last for a while.
        assert await client.read_range(HELLO, 7, 6) == HELLO_BYTES[7:13]
    assert len(s1.requests) == 1


async def test_enoent_on_one_replica_is_not_the_answer(
    client: Client, tracker: ScriptedServer, s0: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1))
    tracker.queue(Cmd.QUERY_FETCH_ALL, fetch_all(S0, S1))
    s1.queue(Cmd.QUERY_FILE_INFO, Reply(reply(errno.ENOENT)))  # not replicated yet
    s0.add_golden(G["query_file_info_normal"])
    with trio.fail_after(DEADLINE):
        info = await client.info(HELLO)
    assert info == FileInfo(16, 1795355529, 0x86558325, "127.0.0.1")


async def test_missing_everywhere_is_file_not_found(
    client: Client, tracker: ScriptedServer, s0: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1))
    tracker.queue(Cmd.QUERY_FETCH_ALL, fetch_all(S0, S1))
    for server in (s0, s1):
        server.add_golden(G["download_file_missing"])
    with trio.fail_after(DEADLINE), pytest.raises(FileNotFound) as info:
        await client.download(MISSING)
    assert info.value.errno == errno.ENOENT
    assert MISSING in str(info.value) and "23000" in str(info.value)


@pytest.mark.expect_log_warnings
async def test_midstream_failure_resumes_on_another_replica(
    client: Client, tracker: ScriptedServer, s0: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ALL, fetch_all(S1, S0))
    s1.queue(Cmd.DOWNLOAD_FILE, Cut(G["download_file_200k"].response[: 10 + 150_000]))
    s0.queue(Cmd.DOWNLOAD_FILE, Reply(reply(0, BIG_BYTES[150_000:])))
    with trio.fail_after(DEADLINE):
        assert await client.read_range(BIG, 0, len(BIG_BYTES)) == BIG_BYTES
    resumed = st.parse_download_body(s0.requests[0].body)
    assert resumed[:2] == (150_000, len(BIG_BYTES) - 150_000)


# ================================================================ trackers


@pytest.mark.expect_log_warnings
async def test_tracker_that_refuses_is_skipped(net: ScriptedNetwork) -> None:
    dead = net.add("127.0.0.2", 22122)
    dead.refuse = True
    live = net.add("127.0.0.1", 22122, [G["list_all_groups"]])
    async with Client(["127.0.0.2:22122", "127.0.0.1:22122"], connect=net.connect) as client:
        with trio.fail_after(DEADLINE):
            groups = await client.list_groups()
            assert [g.group_name for g in groups] == ["group1", "group2"]
            for _ in range(3):
                await client.list_groups()
    assert len(live.requests) == 4
    assert live.connections == 1


@pytest.mark.expect_log_warnings
async def test_tracker_that_hangs_times_out_then_the_next_answers(
    net: ScriptedNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    slow = net.add("127.0.0.2", 22122)
    slow.queue(Cmd.SERVER_LIST_ALL_GROUPS, Hang())
    net.add("127.0.0.1", 22122, [G["list_all_groups"]])
    async with Client(
        ["127.0.0.2:22122", "127.0.0.1:22122"], connect=net.connect, network_timeout=3
    ) as client:
        with trio.fail_after(DEADLINE):
            start = trio.current_time()
            assert len(await client.list_groups()) == 2
            assert 3 <= trio.current_time() - start < 4
    assert client.stats.errors == {"server_list_all_groups": 1}


@pytest.mark.expect_log_warnings
async def test_all_trackers_down(net: ScriptedNetwork) -> None:
    async with Client(["127.0.0.2:22122", "127.0.0.3:22122"], connect=net.connect) as client:
        with trio.fail_after(DEADLINE), pytest.raises(ConnectError) as info:
            await client.list_groups()
    assert "127.0.0.2:22122" in str(info.value) and "127.0.0.3:22122" in str(info.value)


async def test_connect_timeout(
    net: ScriptedNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.add("127.0.0.1", 22122).hang_on_connect = True
    async with Client(["127.0.0.1:22122"], connect=net.connect, connect_timeout=2) as client:
        with trio.fail_after(DEADLINE), pytest.raises(Timeout, match="connecting"):
            await client.list_groups()


# ================================================================ broken replies


async def test_reply_cut_short_is_protocol_error_and_not_reused(
    client: Client, tracker: ScriptedServer
) -> None:
    tracker.queue(Cmd.SERVER_LIST_ALL_GROUPS, Cut(G["list_all_groups"].response[:100]))
    tracker.add_golden(G["list_all_groups"])
    with trio.fail_after(DEADLINE):
        with pytest.raises(ProtocolError, match="22122"):
            await client.list_groups()
        assert client.pool.idle_count() == 0
        assert len(await client.list_groups()) == 2
    assert tracker.connections == 2


async def test_header_cut_short(client: Client, tracker: ScriptedServer) -> None:
    tracker.queue(Cmd.SERVER_LIST_ALL_GROUPS, Cut(G["list_all_groups"].response[:4]))
    with trio.fail_after(DEADLINE), pytest.raises(ProtocolError):
        await client.list_groups()


async def test_reply_that_never_comes_is_timeout(
    client: Client, tracker: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    tracker.queue(Cmd.SERVER_LIST_ALL_GROUPS, Hang(G["list_all_groups"].response[:50]))
    tracker.add_golden(G["list_all_groups"])
    with trio.fail_after(DEADLINE):
        with pytest.raises(Timeout) as info:
            await client.list_groups()
        assert "server_list_all_groups on tracker 127.0.0.1:22122" in str(info.value)
        assert client.pool.idle_count() == 0
        assert len(await client.list_groups()) == 2
    assert tracker.connections == 2


async def test_malformed_reply_is_protocol_error_and_not_reused(
    client: Client, tracker: ScriptedServer
) -> None:
    tracker.queue(Cmd.SERVER_LIST_ALL_GROUPS, Reply(reply(0, b"x" * 7)))
    tracker.queue(Cmd.SERVER_LIST_ALL_GROUPS, Reply(b"\0" * 8 + b"\x0b\0"))  # not command 100
    tracker.add_golden(G["list_all_groups"])
    with trio.fail_after(DEADLINE):
        for _ in range(2):
            with pytest.raises(ProtocolError):
                await client.list_groups()
        assert len(await client.list_groups()) == 2
    assert tracker.connections == 3


async def test_cancelled_mid_request_is_not_reused(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1), fetch_one(S1))
    s1.queue(Cmd.DOWNLOAD_FILE, Hang(G["download_file_200k"].response[:5000]))
    s1.add_golden(G["download_file_whole"])
    with trio.fail_after(DEADLINE):
        with trio.move_on_after(0.2) as scope:
            await client.download(BIG)
        assert scope.cancelled_caught
        assert client.pool.idle_count(S1) == 0
        assert await client.download(HELLO) == HELLO_BYTES
    assert s1.connections == 2


async def test_cancelled_before_the_reply_header(
    client: Client, tracker: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    tracker.queue(Cmd.SERVER_LIST_ALL_GROUPS, Hang())
    tracker.add_golden(G["list_all_groups"])
    with trio.fail_after(DEADLINE):
        with trio.move_on_after(1):
            await client.list_groups()
        assert client.pool.idle_count() == 0
        await client.list_groups()
    assert tracker.connections == 2


async def test_stale_pooled_connection_is_replaced(client: Client, tracker: ScriptedServer) -> None:
    # The tracker closes the connection after its reply, as an idle timeout would.
    tracker.queue(Cmd.SERVER_LIST_ALL_GROUPS, Reply(G["list_all_groups"].response, close=True))
    tracker.add_golden(G["list_all_groups"])
    with trio.fail_after(DEADLINE):
        await client.list_groups()
        await trio.testing.wait_all_tasks_blocked()
        assert client.pool.idle_count() == 1
        assert len(await client.list_groups()) == 2
    assert tracker.connections == 2


# ================================================================ status codes


async def test_tracker_enoent_keeps_the_connection(client: Client, tracker: ScriptedServer) -> None:
    tracker.add_golden(G["list_one_group_unknown_group"], G["list_one_group"])
    with trio.fail_after(DEADLINE):
        with pytest.raises(FileNotFound) as info:
            await client.group("nosuchgroup")
        assert info.value.errno == errno.ENOENT
        assert (await client.group("group1")).store_path_count == 1
    assert tracker.connections == 1


async def test_storage_einval_closes_the_connection(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.queue(Cmd.QUERY_UPDATE, fetch_one(S1), fetch_one(S1))
    s1.add_golden(G["modify_file_offset_past_size"], G["truncate_file_shrink"])
    with trio.fail_after(DEADLINE):
        with pytest.raises(ServerError) as info:
            await client.modify(APPENDER, 30, b"QQ")
        assert info.value.errno == errno.EINVAL
        assert f"modify_file {APPENDER} on storage {S1}" in str(info.value)
        await client.truncate(APPENDER, 8)
    assert s1.connections == 2


async def test_unexpected_status(client: Client, tracker: ScriptedServer) -> None:
    tracker.queue(Cmd.SERVER_LIST_ALL_GROUPS, Reply(reply(errno.EBUSY)), Reply(reply(250)))
    with trio.fail_after(DEADLINE):
        with pytest.raises(ServerError) as info:
            await client.list_groups()
        assert info.value.errno == errno.EBUSY
        with pytest.raises(ServerError, match="status 250"):
            await client.list_groups()


async def test_fetch_query_for_group_without_storage_is_nostorage(
    client: Client, tracker: ScriptedServer
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, Reply(reply(errno.ENOENT)))
    down = GroupStat("group1", 100, 50, storage_count=2, readable_count=0, writable_count=0)
    tracker.queue(Cmd.SERVER_LIST_ONE_GROUP, Reply(reply(0, down.encode())))
    with trio.fail_after(DEADLINE), pytest.raises(NoStorage, match="no readable storage"):
        await client.download(HELLO)


async def test_fetch_query_enoent_with_readable_storages_is_file_not_found(
    client: Client, tracker: ScriptedServer
) -> None:
    # Trackers that follow replication say ENOENT when no storage holds the file.
    tracker.queue(Cmd.QUERY_FETCH_ONE, Reply(reply(errno.ENOENT)))
    tracker.add_golden(G["list_one_group"])
    with trio.fail_after(DEADLINE), pytest.raises(FileNotFound) as info:
        await client.download(HELLO)
    assert str(info.value) == (
        f"query_fetch_one {HELLO} on tracker 127.0.0.1:22122: no storage server of the group "
        "holds it: ENOENT (No such file or directory)"
    )


async def test_appender_ops_refuse_normal_files_locally(
    client: Client, net: ScriptedNetwork
) -> None:
    with trio.fail_after(DEADLINE):
        for call in (
            client.append(HELLO, b"x"),
            client.modify(HELLO, 0, b"x"),
            client.truncate(HELLO, 0),
        ):
            with pytest.raises(ServerError, match="not an appender") as info:
                await call
            assert info.value.errno == errno.EINVAL
    assert net.servers == {}


# ================================================================ appender files


async def test_appender_lifecycle(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.add_golden(G["query_store_without_group_one"])
    tracker.queue(Cmd.QUERY_UPDATE, *[fetch_one(S1)] * 6)
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1))
    s1.add_golden(
        G["upload_appender_file"],
        G["append_file"],
        G["modify_file"],
        G["modify_file_offset_eq_size"],
        G["truncate_file_shrink"],
        G["truncate_file_grow"],
        G["download_appender_file"],
        G["regenerate_appender_filename"],
    )
    with trio.fail_after(DEADLINE):
        fid = await client.upload(b"0123456789", ext="log", appender=True)
        assert str(fid) == APPENDER
        await client.append(fid, b"ABCDE")
        await client.modify(fid, 2, b"xyz")
        await client.modify(fid, 15, b"xyz")
        await client.truncate(fid, 8)
        await client.truncate(fid, 12)
        assert await client.download(fid) == b"01xyz567\0\0\0\0"
        new = await client.regenerate_appender_name(fid)
    assert str(new) == "group1/M00/00/46/oYYBAGsC87aAPZ0aAAAADDlvU94099.log"
    assert s1.connections == 1


async def test_info_of_appender_without_crc(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1))
    s1.add_golden(G["query_file_info_appender_no_crc"])
    with trio.fail_after(DEADLINE):
        info = await client.info(APPENDER, calc_crc32=False)
    assert (info.size, info.crc32) == (10, 0)


# ================================================================ metadata, existence


async def test_metadata(client: Client, tracker: ScriptedServer, s1: ScriptedServer) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, *[fetch_one(S1)] * 3)
    tracker.queue(Cmd.QUERY_UPDATE, *[fetch_one(S1)] * 2)
    s1.add_golden(
        G["get_metadata"],
        G["set_metadata_merge"],
        G["get_metadata_after_merge"],
        G["set_metadata_overwrite_single"],
        G["get_metadata_after_overwrite"],
    )
    with trio.fail_after(DEADLINE):
        assert await client.get_metadata(MASTER) == {
            "ext_name": "jpg",
            "file_size": "115120",
            "height": "80",
            "width": "160",
        }
        await client.set_metadata(MASTER, {"width": "1024", "color": "blue"})
        assert (await client.get_metadata(MASTER))["width"] == "1024"
        await client.set_metadata(MASTER, {"author": "golden"}, overwrite=True)
        assert await client.get_metadata(MASTER) == {"author": "golden"}


async def test_no_metadata_is_empty_but_missing_file_is_not(
    client: Client, tracker: ScriptedServer, s1: ScriptedServer
) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1), fetch_one(S1))
    tracker.queue(Cmd.QUERY_FETCH_ALL, fetch_all(S1))
    s1.queue(Cmd.GET_METADATA, golden_reply(G["get_metadata_none"]), Reply(reply(errno.ENOENT)))
    s1.queue(Cmd.QUERY_FILE_INFO, file_info(16), Reply(reply(errno.ENOENT)))
    with trio.fail_after(DEADLINE):
        assert await client.get_metadata(HELLO) == {}
        with pytest.raises(FileNotFound):
            await client.get_metadata(MISSING)


async def test_exists(client: Client, tracker: ScriptedServer, s1: ScriptedServer) -> None:
    tracker.queue(Cmd.QUERY_FETCH_ONE, fetch_one(S1), fetch_one(S1))
    tracker.queue(Cmd.QUERY_FETCH_ALL, fetch_all(S1))
    s1.queue(Cmd.QUERY_FILE_INFO, golden_reply(G["query_file_info_normal"]), Reply(reply(2)))
    with trio.fail_after(DEADLINE):
        assert await client.exists(HELLO)
        assert not await client.exists(MISSING)
    # Existence checks neither compute a crc32 nor make the server log.
    assert {r.status for r in s1.requests} == {3}


async def test_delete(client: Client, tracker: ScriptedServer, s1: ScriptedServer) -> None:
    tracker.queue(Cmd.QUERY_UPDATE, fetch_one(S1), fetch_one(S1))
    s1.add_golden(G["delete_file"], G["delete_file_missing"])
    with trio.fail_after(DEADLINE):
        await client.delete(MISSING)
        with pytest.raises(FileNotFound):
            await client.delete(MISSING)


# ================================================================ cluster, listing


async def test_groups_and_storages(client: Client, tracker: ScriptedServer) -> None:
    tracker.add_golden(
        G["list_all_groups"],
        G["list_one_group"],
        G["list_storage_group1"],
        G["list_storage_with_id"],
        G["list_storage_unknown_id"],
    )
    with trio.fail_after(DEADLINE):
        groups = await client.list_groups()
        assert [(g.group_name, g.storage_count) for g in groups] == [("group1", 2), ("group2", 1)]
        assert (await client.group("group1")).total_mb == groups[0].total_mb
        storages = await client.list_storages("group1")
        assert [(s.storage_id, s.storage_port) for s in storages] == [
            ("100001", 23000),
            ("100002", 23001),
        ]
        assert [s.storage_id for s in await client.list_storages("group1", "100002")] == ["100002"]
        with pytest.raises(FileNotFound):
            await client.list_storages("group1", "999999")


async def test_fetch_binlog_golden(client: Client, net: ScriptedNetwork) -> None:
    net.add("127.0.0.1", 23002, [G["fetch_one_path_binlog"]])
    with trio.fail_after(DEADLINE):
        async with client.fetch_binlog(S2, "group2", 0) as records:
            got = [r async for r in records]
    assert len(got) == 164 and {r.op for r in got} == {"C"}


async def test_fetch_binlog_bad_index(client: Client, net: ScriptedNetwork) -> None:
    net.add("127.0.0.1", 23002, [G["fetch_one_path_binlog_bad_path_index"]])
    with trio.fail_after(DEADLINE), pytest.raises(ServerError) as info:
        async with client.fetch_binlog(S2, "group2", 5) as records:
            [r async for r in records]
    assert info.value.errno == errno.EINVAL


async def test_fetch_binlog_cut_short(client: Client, net: ScriptedNetwork) -> None:
    net.add("127.0.0.1", 23002).queue(
        Cmd.FETCH_ONE_PATH_BINLOG, Cut(G["fetch_one_path_binlog"].response[:3000])
    )
    with trio.fail_after(DEADLINE), pytest.raises(ProtocolError):
        async with client.fetch_binlog(S2, "group2", 0) as records:
            [r async for r in records]


async def test_list_files_skips_metadata_files(net: ScriptedNetwork) -> None:
    tracker = net.add("127.0.0.3", 22200, [GIP["list_storage"]])
    net.add("127.0.0.3", 23100, [GIP["fetch_one_path_binlog"]])
    async with Client(["127.0.0.3:22200"], connect=net.connect) as client:
        with trio.fail_after(DEADLINE):
            async with client.list_files("groupip") as files:
                got = [str(f) async for f in files]
    assert len(got) == len(set(got)) > 0
    assert not any(f.endswith("-m") for f in got)
    assert "groupip/M00/00/00/fwAAA2sC8ziALBcyAAAAEIZVgyU838.txt" in got
    assert tracker.commands() == [Cmd.SERVER_LIST_STORAGE]


def _binlog_stream(records: list[BinlogRecord]) -> Reply:
    lines = encode_binlog_lines(records)
    head = b"%s" % (BINLOG_STREAM_LENGTH.to_bytes(8, "big") + bytes((100, 0)))
    return Reply(head + lines + encode_binlog_trailer(len(lines)), close=True)


async def test_list_files_merges_replicas_without_duplicates(
    client: Client, tracker: ScriptedServer, s0: ScriptedServer, s1: ScriptedServer
) -> None:
    def name(source: int | str, n: int) -> str:
        return make_remote_name(source=source, create_time=1795355000 + n, size=n, crc32=n)

    a, b, orphan = name(100001, 1), name(100002, 2), name(100009, 3)
    storages = [
        StorageStat(StorageStatus.ACTIVE, "100001", "127.0.0.1", storage_port=23000),
        StorageStat(StorageStatus.ACTIVE, "100002", "127.0.0.1", storage_port=23001),
        StorageStat(StorageStatus.OFFLINE, "100009", "127.0.0.9", storage_port=23000),
    ]
    tracker.queue(Cmd.SERVER_LIST_STORAGE, Reply(reply(0, tr.encode_storages_reply(storages))))
    s0.queue(
        Cmd.FETCH_ONE_PATH_BINLOG,
        _binlog_stream(
            [BinlogRecord(1, "C", a), BinlogRecord(2, "c", b), BinlogRecord(3, "c", orphan)]
        ),
    )
    s1.queue(
        Cmd.FETCH_ONE_PATH_BINLOG,
        _binlog_stream(
            [BinlogRecord(1, "c", a), BinlogRecord(2, "C", b), BinlogRecord(3, "c", orphan)]
        ),
    )
    with trio.fail_after(DEADLINE):
        async with client.list_files("group1") as files:
            got = sorted([f.remote_name async for f in files])
    assert got == sorted([a, b, orphan])


# ================================================================ configuration


def test_client_conf(tmp_path: Path) -> None:
    conf = tmp_path / "client.conf"
    conf.write_text(
        "# FastDFS client\nconnect_timeout = 3\nnetwork_timeout=20\nbase_path = /tmp\n"
        "tracker_server = 10.0.0.1:22122\ntracker_server=10.0.0.2\n"
    )
    parsed = read_client_conf(conf)
    assert parsed.trackers == [ServerAddr("10.0.0.1", 22122), ServerAddr("10.0.0.2", 22122)]
    client = Client.from_conf(conf, network_timeout=7)
    assert (client.connect_timeout, client.network_timeout) == (3, 7)
    conf.write_text("tracker_server 10.0.0.1\n")
    with pytest.raises(ValueError, match=":1:"):
        read_client_conf(conf)


def test_file_ids_accepted_as_strings_or_parsed() -> None:
    assert parse_file_id(HELLO).group == "group1"
    with pytest.raises(ValueError):
        Client([])


async def test_close_stops_pooling(net: ScriptedNetwork) -> None:
    tracker = net.add("127.0.0.1", 22122, [G["tracker_active_test"], G["list_all_groups"]])
    client = Client(["127.0.0.1:22122"], connect=net.connect)
    with trio.fail_after(DEADLINE):
        await client.list_groups()
        assert client.pool.idle_count() == 1
        await client.aclose()
        assert client.pool.idle_count() == 0
        await trio.testing.wait_all_tasks_blocked()
    assert tracker.open_connections == 0


async def test_unexpected_request_is_caught_by_the_peer(net: ScriptedNetwork) -> None:
    server = net.add("127.0.0.1", 22122)
    server.queue(Cmd.SERVER_LIST_ALL_GROUPS, Close())
    async with Client(["127.0.0.1:22122"], connect=net.connect) as client:
        with trio.fail_after(DEADLINE), pytest.raises(ProtocolError, match="without replying"):
            await client.list_groups()


# ================================================================ any reply at all


def _mutations(record: str) -> st_.SearchStrategy[bytes]:
    golden = G[record].response
    return st_.one_of(
        st_.binary(max_size=120),
        st_.integers(0, len(golden)).map(lambda n: golden[:n]),
        st_.tuples(st_.integers(0, max(len(golden) - 1, 0)), st_.integers(0, 255)).map(
            lambda m: golden[: m[0]] + bytes([m[1]]) + golden[m[0] + 1 :]
        ),
        st_.binary(max_size=40).map(lambda extra: golden + extra),
    )


_TRACKER_OPS: dict[str, tuple[str, Callable[[Client], Awaitable[object]]]] = {
    "list_groups": ("list_all_groups", lambda c: c.list_groups()),
    "group": ("list_one_group", lambda c: c.group("group1")),
    "list_storages": ("list_storage_group1", lambda c: c.list_storages("group1")),
    "upload": ("query_store_without_group_one", lambda c: c.upload(b"x")),
    "fetch_servers": ("query_fetch_all", lambda c: c.fetch_servers(HELLO)),
}
_STORAGE_OPS: dict[str, tuple[str, Callable[[Client], Awaitable[object]]]] = {
    "read_range": ("download_appender_file", lambda c: c.read_range(APPENDER, 0, 99, servers=[S1])),
    "info": ("query_file_info_appender", lambda c: c.info(APPENDER)),
    "get_metadata": ("get_metadata", lambda c: c.get_metadata(MASTER)),
    "binlog": ("fetch_one_path_binlog", lambda c: _drain_binlog(c)),
}


async def _drain_binlog(client: Client) -> None:
    async with client.fetch_binlog(S1, "group1", 0) as records:
        async for _record in records:
            pass


@pytest.mark.expect_log_warnings
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st_.data(), op=st_.sampled_from(sorted(_TRACKER_OPS) + sorted(_STORAGE_OPS)))
def test_any_reply_gives_a_result_or_an_fdfs_error(data: st_.DataObject, op: str) -> None:
    """Whatever bytes come back, a call returns or raises FdfsError, and never hangs."""
    on_tracker = op in _TRACKER_OPS
    record, call = _TRACKER_OPS[op] if on_tracker else _STORAGE_OPS[op]
    reply_bytes = data.draw(_mutations(record), label="reply")

    async def scenario() -> None:
        net = ScriptedNetwork()
        tracker = net.add("127.0.0.1", 22122)
        storage = net.add("127.0.0.1", 23001)
        target = tracker if on_tracker else storage
        target.queue(G[record].cmd, Reply(reply_bytes, close=True))
        tracker.queue(Cmd.QUERY_FETCH_ONE, *[fetch_one(S1)] * 3)
        tracker.queue(Cmd.QUERY_FETCH_ALL, fetch_all(S1))
        async with Client(["127.0.0.1:22122"], connect=net.connect, network_timeout=2) as c:
            with trio.fail_after(DEADLINE), contextlib.suppress(FdfsError):
                await call(c)

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
