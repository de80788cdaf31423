"""Read path without servers: readahead decisions, block cache, ReadPath over a fake client."""

from __future__ import annotations

import errno
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

import pytest
import trio
import trio.testing
from waiting import eventually

from fdfsmount.blockcache import Block, BlockCache
from fdfsmount.proto import (
    FileId,
    GroupStat,
    ServerAddr,
    StorageStat,
    decode_file_id,
    parse_file_id,
)
from fdfsmount.proto.errors import FileNotFound, ServerError, Timeout
from fdfsmount.proto.fileid import make_remote_name
from fdfsmount.proto.health import ServerHealth
from fdfsmount.proto.replicas import HOLDERS_RETRY, HOLDERS_TTL
from fdfsmount.proto.storage import FileInfo
from fdfsmount.readpath import DOWN_MEMORY, MIB, WHOLE_FILE_LIMIT, OpenFile, Readahead, ReadPath

BLOCK = 128 * 1024


# ---------------------------------------------------------------- Readahead


def test_readahead_starts_only_once_a_reader_proved_sequential() -> None:
    ra = Readahead(maximum=64 * MIB)
    # One read proves nothing: a 4 KiB file's only read must not start readahead.
    assert ra.on_read(0, BLOCK) is None
    assert not ra.sequential
    # The next read continues it: now a 1 MiB window.
    assert ra.on_read(BLOCK, 2 * BLOCK) == (2 * BLOCK, 2 * BLOCK + MIB)
    assert ra.window == MIB


def test_window_doubles_on_sequential_reads_up_to_the_maximum() -> None:
    ra = Readahead(maximum=8 * MIB)
    windows = []
    offset = 0
    for _ in range(400):
        ahead = ra.on_read(offset, offset + BLOCK)
        if ahead is not None:
            windows.append(ra.window)
            assert ahead[0] >= offset + BLOCK  # never re-fetches what was asked for
        offset += BLOCK
    assert windows[:5] == [MIB, 2 * MIB, 4 * MIB, 8 * MIB, 8 * MIB]
    assert max(windows) == 8 * MIB
    # Prefetch keeps at least half a window ahead of the reader.
    assert ra.prefetched_to - offset >= 4 * MIB - BLOCK


def test_prefetched_ranges_are_contiguous() -> None:
    ra = Readahead(maximum=4 * MIB)
    end = None
    for i in range(200):
        ahead = ra.on_read(i * BLOCK, (i + 1) * BLOCK)
        if ahead:
            if end is not None:
                assert ahead[0] == end
            end = ahead[1]


def test_random_reads_reset_and_fetch_nothing_extra() -> None:
    ra = Readahead(maximum=64 * MIB)
    ra.on_read(0, BLOCK)
    ra.on_read(BLOCK, 2 * BLOCK)
    assert ra.on_read(500 * MIB, 500 * MIB + 4096) is None
    assert ra.window == 0
    rng = random.Random(1)
    for _ in range(100):
        offset = rng.randrange(100, 10_000) * MIB
        assert ra.on_read(offset, offset + 4096) is None


def test_slightly_out_of_order_reads_stay_sequential() -> None:
    ra = Readahead(maximum=64 * MIB)
    ra.on_read(0, BLOCK)
    ra.on_read(2 * BLOCK, 3 * BLOCK)  # the kernel's async reads may swap
    ra.on_read(BLOCK, 2 * BLOCK)
    assert ra.sequential


def test_zero_maximum_disables_readahead() -> None:
    assert Readahead(maximum=0).on_read(0, BLOCK) is None


# ---------------------------------------------------------------- BlockCache


def test_cache_is_bounded_in_bytes_and_evicts_lru() -> None:
    cache = BlockCache(capacity=3 * BLOCK, block_size=BLOCK)
    key = ("g/f", None)
    for i in range(3):
        cache.put(key, i, Block.of(bytes(BLOCK)))
    assert cache.get(key, 0) is not None  # 0 is now the most recent
    cache.put(key, 3, Block.of(bytes(BLOCK)))
    assert cache.size == 3 * BLOCK
    assert cache.get(key, 1) is None and cache.get(key, 0) is not None
    assert cache.stats.evictions == 1


def test_blocks_of_one_buffer_are_charged_once_until_the_last_goes() -> None:
    cache = BlockCache(capacity=10 * BLOCK, block_size=BLOCK)
    chunk = bytes(4 * BLOCK)
    key = ("g/f", None)
    for i in range(4):
        cache.put(key, i, Block(chunk, i * BLOCK, (i + 1) * BLOCK))
    assert cache.size == 4 * BLOCK and len(cache) == 4
    for i in range(3):
        cache.discard(key, i)
    assert cache.size == 4 * BLOCK  # one block still pins the whole buffer
    cache.discard(key, 3)
    assert cache.size == 0
    # A pinned buffer counts against the bound: older blocks go to make room.
    cache.put(key, 0, Block(chunk, 0, BLOCK))
    for i in range(1, 8):
        cache.put(("g/other", None), i, Block.of(bytes(BLOCK)))
    assert cache.size <= 10 * BLOCK


def test_cache_drops_every_version_of_a_file() -> None:
    cache = BlockCache(capacity=10 * BLOCK, block_size=BLOCK)
    cache.put(("a", (1, 1)), 0, Block.of(b"x"))
    cache.put(("a", (2, 2)), 0, Block.of(b"y"))
    cache.put(("b", None), 0, Block.of(b"z"))
    assert cache.drop_file("a") == 2
    assert len(cache) == 1 and cache.size == 1


def test_zero_capacity_caches_nothing() -> None:
    cache = BlockCache(capacity=0)
    cache.put(("a", None), 0, Block.of(b"x"))
    assert len(cache) == 0


# ---------------------------------------------------------------- ReadPath


class FakeClient:
    """Serves `read_range` from memory, counting requests; optionally slow or failing.

    Like the real client, it notes servers that time out in its `health`.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, int, int, tuple[ServerAddr, ...] | None]] = []
        self.delay = 0.0
        self.fail: Exception | None = None
        self.frozen: set[ServerAddr] = set()
        self.health = ServerHealth()
        self.fetches: list[str] = []
        # (server, file) -> what a replica that has not caught up yet serves instead.
        self.lagging: dict[tuple[ServerAddr | None, str], bytes] = {}
        # What the tracker names as holding a file's newest version (source first).
        self.holders = [ServerAddr("127.0.0.10", 23000), ServerAddr("127.0.0.11", 23001)]
        self.tracker_down = False

    def add(self, data: bytes, *, appender: bool = False) -> FileId:
        remote = make_remote_name(
            source=100001, create_time=1_600_000_000, size=len(data), crc32=0,
            appender=appender, ext="bin",
        )  # fmt: skip
        fid = parse_file_id(f"group1/{remote}")
        self.files[str(fid)] = data
        return fid

    async def read_range(
        self,
        file_id: FileId | str,
        offset: int,
        length: int,
        *,
        servers: Sequence[ServerAddr] | None = None,
    ) -> bytes:
        self.requests.append((str(file_id), offset, length, tuple(servers) if servers else None))
        if self.delay:
            await trio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        served_by: ServerAddr | None = None
        for addr in servers or ():
            if addr not in self.frozen:
                served_by = addr
                break
            self.health.failed(addr)  # timed out: the client fails over to the next
        else:
            if servers:
                raise Timeout(f"every replica of {file_id} timed out")
        data = self.lagging.get((served_by, str(file_id)), self.files.get(str(file_id)))
        if data is None:
            raise FileNotFound(str(file_id))
        return data[offset : offset + length]

    async def list_storages(self, group: str, storage_id: str | None = None) -> list[StorageStat]:
        return [
            StorageStat(7, "100001", "127.0.0.10", storage_port=23000),
            StorageStat(7, "100002", "127.0.0.11", storage_port=23001),
        ]

    async def fetch_servers(self, file_id: FileId | str) -> list[ServerAddr]:
        # The tracker: asked for appender files only (normal ones go by the group's list).
        self.fetches.append(str(file_id))
        if self.tracker_down:
            raise Timeout("query_fetch_all on tracker 127.0.0.2:22122: no answer within 2s")
        return list(self.holders)

    # The rest of ReadClient: the read path never calls these.
    async def info(self, file_id: FileId | str, *, calc_crc32: bool = True) -> FileInfo:
        raise AssertionError("not used by the read path")

    async def get_metadata(self, file_id: FileId | str) -> dict[str, str]:
        raise AssertionError("not used by the read path")

    async def list_groups(self) -> list[GroupStat]:
        raise AssertionError("not used by the read path")

    def list_files(self, group: str) -> AbstractAsyncContextManager[AsyncIterator[FileId]]:
        raise AssertionError("not used by the read path")


SOURCE = ServerAddr("127.0.0.10", 23000)
REPLICA = ServerAddr("127.0.0.11", 23001)


def _open(rp: ReadPath, fid: FileId, size: int, *, appender: bool = False) -> OpenFile:
    return rp.open(fid, decode_file_id(fid), size, immutable=not appender)


async def test_random_reads_fetch_one_aligned_block() -> None:
    client = FakeClient()
    data = random.Random(2).randbytes(10 * MIB)
    fid = client.add(data)
    rp = ReadPath(client, BlockCache(64 * MIB), readahead=8 * MIB, timeout=5)
    f = _open(rp, fid, len(data))
    offset = 5 * MIB + 1000
    assert await rp.read(f, offset, 4096) == data[offset : offset + 4096]
    assert [(o, n) for _, o, n, _ in client.requests] == [(5 * MIB, BLOCK)]
    # The same block again: from the cache.
    assert await rp.read(f, offset + 4096, 4096) == data[offset + 4096 : offset + 8192]
    assert len(client.requests) == 1


async def test_reads_past_eof_and_of_empty_files_cost_nothing() -> None:
    client = FakeClient()
    fid = client.add(b"abc")
    empty = client.add(b"")
    rp = ReadPath(client, BlockCache(MIB), readahead=MIB, timeout=5)
    f = _open(rp, fid, 3)
    assert await rp.read(f, 0, 100) == b"abc"
    assert await rp.read(f, 3, 100) == b""
    assert await rp.read(f, 1000, 100) == b""
    assert await rp.read(_open(rp, empty, 0), 0, 4096) == b""
    assert len(client.requests) == 1


async def test_sequential_reader_gets_prefetched_blocks(nursery: trio.Nursery) -> None:
    client = FakeClient()
    data = random.Random(3).randbytes(40 * MIB + 123)
    fid = client.add(data)
    cache = BlockCache(64 * MIB)
    rp = ReadPath(client, cache, readahead=16 * MIB, timeout=5, nursery=nursery)
    f = _open(rp, fid, len(data))
    got = bytearray()
    while chunk := await rp.read(f, len(got), 256 * 1024):
        got += chunk
    assert got == data
    # Readahead fetched large chunks, not one request per read, spread over both replicas.
    assert len(client.requests) < 40
    assert max(n for _, _, n, _ in client.requests) >= 2 * MIB
    assert {s[0] for *_, s in client.requests if s} == {
        ServerAddr("127.0.0.10", 23000),
        ServerAddr("127.0.0.11", 23001),
    }
    assert sum(n for _, _, n, _ in client.requests) <= len(data) + 2 * MIB
    # Consumed blocks were dropped behind the reader.
    assert rp.cache.size <= 16 * MIB + BLOCK


async def test_concurrent_readers_share_one_download() -> None:
    client = FakeClient()
    client.delay = 0.05
    data = random.Random(4).randbytes(MIB)
    fid = client.add(data)
    rp = ReadPath(client, BlockCache(8 * MIB), readahead=0, timeout=5)
    results: list[bytes] = []

    async def reader() -> None:
        f = _open(rp, fid, len(data))
        results.append(bytes(await rp.read(f, 200 * 1024, 4096)))

    async with trio.open_nursery() as n:
        for _ in range(5):
            n.start_soon(reader)
    assert results == [data[200 * 1024 : 200 * 1024 + 4096]] * 5
    assert len(client.requests) == 1


async def test_appender_blocks_follow_the_version_seen_at_open() -> None:
    client = FakeClient()
    fid = client.add(b"x" * 1000, appender=True)
    rp = ReadPath(client, BlockCache(8 * MIB), readahead=0, timeout=5)
    f1 = rp.open(fid, decode_file_id(fid), 1000, immutable=False, mtime=1)
    assert await rp.read(f1, 0, 4096) == b"x" * 1000
    client.files[str(fid)] += b"y" * 500
    # A short last block of an appender file is never cached: the same open sees growth.
    assert await rp.read(f1, 0, 4096) == b"x" * 1000 + b"y" * 500
    f2 = rp.open(fid, decode_file_id(fid), 1500, immutable=False, mtime=2)
    assert await rp.read(f2, 1000, 4096) == b"y" * 500


async def test_appender_reads_skip_a_lagging_replica_after_the_source_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A source that timed out a moment ago goes last for immutable files; but an
    appender file's replica may lack its newest changes: only the storages the
    tracker names as holding them are asked, the source first."""
    client = FakeClient()
    fid = client.add(b"new" * 1000, appender=True)
    client.lagging[(REPLICA, str(fid))] = b"old" * 900
    client.holders = [SOURCE]  # the tracker: the replica has not caught up
    rp = ReadPath(client, BlockCache(8 * MIB), readahead=0, timeout=5, health=client.health)
    client.health.failed(SOURCE)  # e.g. it was frozen a moment ago
    f = rp.open(fid, decode_file_id(fid), 3000, immutable=False)
    assert await rp.read(f, 0, 4096) == b"new" * 1000
    assert client.requests[-1][3] == (SOURCE,)
    assert client.fetches == [str(fid)]
    # The source is gone and the replica caught up: the tracker names only the replica.
    await trio.sleep(HOLDERS_TTL)
    client.holders = [REPLICA]
    client.lagging.clear()
    client.files[str(fid)] += b"more"
    f = rp.open(fid, decode_file_id(fid), 3004, immutable=False)
    assert await rp.read(f, 0, 4096) == b"new" * 1000 + b"more"
    assert client.requests[-1][3] == (REPLICA,)


async def test_appender_reads_go_by_the_group_list_while_the_tracker_does_not_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = FakeClient()
    fid = client.add(b"z" * 5000, appender=True)
    client.tracker_down = True
    rp = ReadPath(client, BlockCache(8 * MIB), readahead=0, timeout=5, health=client.health)
    f = rp.open(fid, decode_file_id(fid), 5000, immutable=False)
    for _ in range(3):
        assert await rp.read(f, 0, 4096) == b"z" * 4096
    asked = [servers for (_, _, _, servers) in client.requests]
    assert asked == [(SOURCE, REPLICA)] * 3
    assert len(client.fetches) == 1  # not one tracker timeout per read
    await trio.sleep(HOLDERS_RETRY)
    client.tracker_down = False
    client.holders = [SOURCE]
    assert await rp.read(f, 0, 4096) == b"z" * 4096
    asked = [servers for (_, _, _, servers) in client.requests]
    assert asked[-1] == (SOURCE,) and len(client.fetches) == 2


async def test_failed_prefetch_lets_the_reader_try_itself(nursery: trio.Nursery) -> None:
    client = FakeClient()
    data = random.Random(5).randbytes(4 * MIB)
    fid = client.add(data)
    cache = BlockCache(64 * MIB)
    rp = ReadPath(client, cache, readahead=4 * MIB, timeout=5, nursery=nursery)
    f = _open(rp, fid, len(data))
    assert await rp.read(f, 0, BLOCK) == data[:BLOCK]
    assert await rp.read(f, BLOCK, BLOCK) == data[BLOCK : 2 * BLOCK]  # schedules readahead...
    client.fail = ServerError(errno.EIO, "disk error")  # ...which then fails
    with trio.fail_after(5):
        await eventually(lambda: rp.stats.prefetch_failures, interval=0.001)
    client.fail = None
    assert await rp.read(f, 2 * BLOCK, BLOCK) == data[2 * BLOCK : 3 * BLOCK]


async def test_a_server_the_client_saw_time_out_goes_last_for_every_reader() -> None:
    client = FakeClient()
    data = random.Random(6).randbytes(MIB)
    fid = client.add(data)
    # One owner of server health: the client's, handed to the read path.
    rp = ReadPath(client, BlockCache(8 * MIB), readahead=0, timeout=5, health=client.health)
    f = _open(rp, fid, len(data))
    client.frozen = {SOURCE}
    assert await rp.read(f, 0, 4096) == data[:4096]
    assert client.requests[-1][3] == (SOURCE, REPLICA)
    # The next read asks the replica first, whatever timeout the client used.
    assert await rp.read(f, 4 * BLOCK, 4096) == data[4 * BLOCK : 4 * BLOCK + 4096]
    assert client.requests[-1][3] == (REPLICA, SOURCE)


async def test_after_every_replica_failed_reads_fail_fast_for_a_moment(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = FakeClient()
    data = random.Random(7).randbytes(MIB)
    fid = client.add(data)
    rp = ReadPath(client, BlockCache(8 * MIB), readahead=0, timeout=5)
    f = _open(rp, fid, len(data))
    client.fail = Timeout("no answer")
    with pytest.raises(Timeout):
        await rp.read(f, 0, 4096)
    asked = len(client.requests)
    # The kernel retries a failed page read at once: no second round of timeouts.
    with pytest.raises(Timeout, match="every replica failed just now"):
        await rp.read(f, 0, 4096)
    assert len(client.requests) == asked
    client.fail = None
    await trio.sleep(DOWN_MEMORY + 0.1)
    assert await rp.read(f, 0, 4096) == data[:4096]


async def test_fail_fast_memory_is_per_file() -> None:
    client = FakeClient()
    failed = client.add(random.Random(17).randbytes(MIB))
    data = random.Random(18).randbytes(MIB)
    healthy = client.add(data + b"other")
    rp = ReadPath(client, BlockCache(8 * MIB), readahead=0, timeout=5)
    client.fail = Timeout("no answer")
    with pytest.raises(Timeout):
        await rp.read(_open(rp, failed, MIB), 0, 4096)
    client.fail = None  # the storage is back
    # A file that never failed, on the same servers, is read at once.
    f = _open(rp, healthy, len(data) + 5)
    assert await rp.read(f, 0, 4096) == data[:4096]
    # The one that failed still fails fast for a moment.
    with pytest.raises(Timeout, match="every replica failed just now"):
        await rp.read(_open(rp, failed, MIB), 0, 4096)


async def test_first_read_downloads_its_block_inline_without_readahead(
    nursery: trio.Nursery,
) -> None:
    client = FakeClient()
    data = random.Random(9).randbytes(8 * MIB)
    fid = client.add(data)
    rp = ReadPath(client, BlockCache(64 * MIB), readahead=8 * MIB, timeout=5, nursery=nursery)
    f = _open(rp, fid, len(data))
    assert await rp.read(f, 0, 4096) == data[:4096]
    await trio.testing.wait_all_tasks_blocked()
    assert [(o, n) for _, o, n, _ in client.requests] == [(0, BLOCK)]
    assert rp.stats.prefetch_chunks == 0
    # The second read proves the reader sequential: readahead starts past its blocks.
    assert await rp.read(f, BLOCK, BLOCK) == data[BLOCK : 2 * BLOCK]
    await trio.testing.wait_all_tasks_blocked()
    assert client.requests[1][1:3] == (BLOCK, BLOCK)
    assert all(o >= 2 * BLOCK for _, o, _, _ in client.requests[2:])
    assert rp.stats.prefetch_chunks > 0 and rp.stats.waited_on_prefetch == 0


async def test_small_files_are_fetched_whole_by_their_first_read() -> None:
    client = FakeClient()
    data = random.Random(10).randbytes(WHOLE_FILE_LIMIT - 1000)
    fid = client.add(data)
    rp = ReadPath(client, BlockCache(64 * MIB), readahead=0, timeout=5)
    f = _open(rp, fid, len(data))
    got = bytearray()
    while chunk := await rp.read(f, len(got), 4096):
        got += chunk
    assert got == data
    assert [(o, n) for _, o, n, _ in client.requests] == [(0, len(data))]


async def test_appender_blocks_are_not_shared_between_opens() -> None:
    # A same-size rewrite elsewhere within the same second has the same (size, mtime).
    client = FakeClient()
    fid = client.add(b"a" * (2 * BLOCK), appender=True)
    rp = ReadPath(client, BlockCache(8 * MIB), readahead=0, timeout=5)
    f1 = rp.open(fid, decode_file_id(fid), 2 * BLOCK, immutable=False, mtime=7)
    assert await rp.read(f1, 0, 4096) == b"a" * 4096
    client.files[str(fid)] = b"b" * (2 * BLOCK)
    f2 = rp.open(fid, decode_file_id(fid), 2 * BLOCK, immutable=False, mtime=7)
    assert await rp.read(f2, 0, 4096) == b"b" * 4096


async def test_appender_readahead_stops_at_the_size_seen_at_open(nursery: trio.Nursery) -> None:
    client = FakeClient()
    data = random.Random(8).randbytes(300 * 1024)
    fid = client.add(data, appender=True)
    rp = ReadPath(client, BlockCache(64 * MIB), readahead=8 * MIB, timeout=5, nursery=nursery)
    f = rp.open(fid, decode_file_id(fid), len(data), immutable=False, mtime=1)
    got = bytearray()
    while chunk := await rp.read(f, len(got), BLOCK):
        got += chunk
    assert got == data
    await trio.testing.wait_all_tasks_blocked()  # readahead too has done what it will
    assert all(offset < len(data) for _, offset, _, _ in client.requests)
