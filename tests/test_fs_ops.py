"""`Operations` called directly (no kernel) against a real harness cluster: lookup, getattr,
readdir, open/read, xattrs, statfs, forget, and refusals."""

from __future__ import annotations

import errno
import os
import random
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pyfuse3
import pytest
import trio
from opshelp import (
    CTX,
    MIB,
    ROOT,
    ClusterView,
    Env,
    expect_errno,
    fake_id,
    inprocess_cluster,
    listdir,
    make_env,
    read_all,
    requests,
    walk,
)
from waiting import eventually

from fdfsmount import listing as listing_mod
from fdfsmount.kernelcache import KernelCache
from fdfsmount.listing import Listing
from fdfsmount.namespace import Kind
from fdfsmount.proto import FileId, ServerAddr
from fdfsmount.proto.binlog import BinlogRecord
from harness.pytest_plugin import ClusterFactory

# ---------------------------------------------------------------- namespace


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> ClusterView:
    """The builtin servers as tasks of this test (tests that stop storages use processes)."""
    return await inprocess_cluster(nursery, tmp_path / "servers")


async def test_root_lists_groups_and_levels_follow_group_stats(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = env.ops
    assert set(await listdir(ops, ROOT, monkeypatch)) == {"group1", "group2"}
    group = await walk(ops, "group1")
    assert stat.S_ISDIR(group.st_mode) and stat.S_IMODE(group.st_mode) == 0o755
    assert list(await listdir(ops, group.st_ino, monkeypatch)) == ["M00"]
    m00 = await walk(ops, "group1/M00")
    level1 = await listdir(ops, m00.st_ino, monkeypatch)
    assert list(level1) == [f"{i:02X}" for i in range(256)]
    hh = await walk(ops, "group1/M00/7F")
    assert len(await listdir(ops, hh.st_ino, monkeypatch)) == 256
    leaf = await walk(ops, "group1/M00/7F/FF")
    assert stat.S_ISDIR(leaf.st_mode)


@pytest.mark.parametrize(
    "path",
    [
        "nogroup", ".hidden", "group1/M01", "group1/m00", "group1/M0", "group1/M00/100",
        "group1/M00/0g", "group1/M00/0a", "group1/M00/00/00/short.jpg",
        "group1/M00/00/00/" + "!" * 40, "group1/M00/00/00/.hidden",
        "group1/M00/00/00/x" + "A" * 200,
    ],
)  # fmt: skip
async def test_invalid_names_are_enoent_without_a_server_call(env: Env, path: str) -> None:
    await walk(env.ops, "group1/M00/00/00")  # warm the group list
    before = requests(env.client)
    await expect_errno(errno.ENOENT, walk(env.ops, path))
    assert requests(env.client) == before


async def test_trust_ids_resolves_a_normal_id_from_the_id_alone(
    cluster: ClusterView, nursery: trio.Nursery
) -> None:
    async for env in make_env(cluster, nursery, trust_ids=True):
        fid = fake_id(size=4321)
        await walk(env.ops, "group1")
        before = requests(env.client)
        attr = await walk(env.ops, str(fid))
        assert requests(env.client) == before
        assert attr.st_size == 4321 and attr.st_mtime_ns == 1_700_000_000 * 10**9
        assert stat.S_IMODE(attr.st_mode) == 0o444 and stat.S_ISREG(attr.st_mode)
        # Existence is confirmed lazily: reading it fails.
        with pytest.raises(pyfuse3.FUSEError):
            await read_all(env.ops, attr.st_ino)


async def test_a_made_up_id_is_enoent_and_asked_once(env: Env) -> None:
    """A well-formed ID of no file: ENOENT from the cluster, and the answer is kept
    briefly, so a storm of requests for it costs one query."""
    fid = fake_id(size=77)
    await walk(env.ops, "group1/M00/12/34")
    before = requests(env.client)
    await expect_errno(errno.ENOENT, walk(env.ops, str(fid)))
    asked = requests(env.client) - before
    assert asked >= 1
    for _ in range(20):
        await expect_errno(errno.ENOENT, walk(env.ops, str(fid)))
    assert requests(env.client) - before == asked


async def test_an_existing_file_is_confirmed_once_per_exists_ttl(env: Env) -> None:
    fid = await env.client.upload(b"present", ext="txt")
    await walk(env.ops, "group1")
    before = requests(env.client)
    assert (await walk(env.ops, str(fid))).st_size == 7
    asked = requests(env.client) - before
    assert asked >= 1
    for _ in range(10):
        assert (await walk(env.ops, str(fid))).st_size == 7
    assert requests(env.client) - before == asked


async def test_a_small_file_is_confirmed_by_downloading_it_whole(env: Env) -> None:
    """Looking up a small file downloads it (no QUERY_FILE_INFO), and opening and
    reading it then need no server; a bigger one is confirmed by a query."""
    small = random.Random(1).randbytes(5000)
    big = random.Random(2).randbytes(100_000)
    small_id, big_id = [await env.client.upload(d, ext="bin") for d in (small, big)]
    await walk(env.ops, str(small_id).rsplit("/", 1)[0])
    await walk(env.ops, str(big_id).rsplit("/", 1)[0])
    counts = env.client.stats.requests
    before = dict(counts)
    attr = await walk(env.ops, str(small_id))
    assert counts.get("download_file", 0) - before.get("download_file", 0) == 1
    assert counts.get("query_file_info", 0) == before.get("query_file_info", 0)
    asked = requests(env.client)
    assert await read_all(env.ops, attr.st_ino) == small
    assert (await env.ops.getattr(attr.st_ino, CTX)).st_size == len(small)
    assert requests(env.client) == asked
    before = dict(counts)
    await walk(env.ops, str(big_id))
    assert counts.get("query_file_info", 0) - before.get("query_file_info", 0) == 1
    assert counts.get("download_file", 0) == before.get("download_file", 0)


async def test_a_small_file_deleted_before_its_lookup_is_enoent(env: Env) -> None:
    fid = await env.client.upload(b"short-lived", ext="txt")
    await env.client.delete(fid)
    await expect_errno(errno.ENOENT, walk(env.ops, str(fid)))


async def test_verify_exists_is_the_default_now(
    cluster: ClusterView, nursery: trio.Nursery
) -> None:
    async for env in make_env(cluster, nursery, verify_exists=True):
        await expect_errno(errno.ENOENT, walk(env.ops, str(fake_id())))
        fid = await env.client.upload(b"present", ext="txt")
        assert (await walk(env.ops, str(fid))).st_size == 7


async def test_a_file_deleted_elsewhere_is_enoent_within_exists_ttl(
    cluster: ClusterView, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for env in make_env(cluster, nursery, exists_ttl=0.2):
        fid = await env.client.upload(b"soon gone", ext="txt")
        attr = await walk(env.ops, str(fid))
        leaf = await walk(env.ops, str(fid).rsplit("/", 1)[0])
        assert fid.name in await listdir(env.ops, leaf.st_ino, monkeypatch)
        assert await read_all(env.ops, attr.st_ino) == b"soon gone"
        await env.client.delete(fid)

        async def gone(env: Env = env, path: str = str(fid)) -> bool:
            try:  # the positive answer ages out after exists_ttl
                await walk(env.ops, path)
            except pyfuse3.FUSEError as exc:
                assert exc.errno == errno.ENOENT
                return True
            return False

        await eventually(gone, what=f"{fid} to be ENOENT")
        # The kernel may still hold the inode: getattr and open say ENOENT too.
        await expect_errno(errno.ENOENT, env.ops.getattr(attr.st_ino, CTX))
        await expect_errno(errno.ENOENT, env.ops.open(attr.st_ino, os.O_RDONLY, CTX))
        # ... and `ls` of its directory no longer shows it.
        assert fid.name not in await listdir(env.ops, leaf.st_ino, monkeypatch)


async def test_a_descriptor_open_on_a_deleted_file_gets_an_error_from_read(env: Env) -> None:
    data = random.Random(9).randbytes(300_000)
    fid = await env.client.upload(data, ext="bin")
    attr = await walk(env.ops, str(fid))
    fi = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    try:
        await env.client.delete(fid)
        await expect_errno(errno.ESTALE, env.ops.read(fi.fh, 0, 128 * 1024))
        await expect_errno(errno.ESTALE, env.ops.read(fi.fh, 200_000, 4096))
    finally:
        await env.ops.release(fi.fh)
    await expect_errno(errno.ENOENT, walk(env.ops, str(fid)))


async def test_a_group_that_does_not_exist_is_enoent(env: Env) -> None:
    fid = fake_id(group="nosuchgroup")
    await expect_errno(errno.ENOENT, walk(env.ops, "nosuchgroup"))
    await expect_errno(errno.ENOENT, walk(env.ops, str(fid)))


async def test_inode_numbers_are_stable_and_forget_bounds_the_table(
    cluster: ClusterView, nursery: trio.Nursery
) -> None:
    async for env in make_env(cluster, nursery, trust_ids=True):
        await _inode_numbers_are_stable(env)


async def _inode_numbers_are_stable(env: Env) -> None:
    fid = await env.client.upload(b"stable", ext="txt")
    first = await walk(env.ops, str(fid))
    again = await walk(env.ops, str(fid))
    assert first.st_ino == again.st_ino
    table = env.parts.table
    size_with_file = len(table)
    node = table.get(first.st_ino)
    assert node.kind is Kind.FILE and node.lookups == 2
    await env.ops.forget([(first.st_ino, 2)])
    assert len(table) == size_with_file - 1
    # Forgotten and looked up again: the same number (derived from the file ID).
    assert (await walk(env.ops, str(fid))).st_ino == first.st_ino
    # Many unlisted IDs, all forgotten: the table is back to its size.
    await walk(env.ops, "group1/M00/12/34")
    baseline = len(table)
    looked = [await walk(env.ops, str(fake_id(size=i))) for i in range(200)]
    assert len(table) == baseline + 200
    await env.ops.forget([(a.st_ino, 1) for a in looked])
    assert len(table) == baseline


async def test_dot_and_dotdot(env: Env) -> None:
    leaf = await walk(env.ops, "group1/M00/00/01")
    assert (await env.ops.lookup(leaf.st_ino, b".", CTX)).st_ino == leaf.st_ino
    parent = await walk(env.ops, "group1/M00/00")
    assert (await env.ops.lookup(leaf.st_ino, b"..", CTX)).st_ino == parent.st_ino


# ---------------------------------------------------------------- listing


async def listed_within(
    env: Env, fid: FileId, monkeypatch: pytest.MonkeyPatch, seconds: float = 15
) -> dict[str, pyfuse3.EntryAttributes]:
    """The leaf's entries once they include `fid` (storages flush their binlogs about
    once a second, and the listing refreshes after its TTL)."""
    hi, lo = fid.subdirs
    leaf = await walk(env.ops, f"{fid.group}/M00/{hi:02X}/{lo:02X}")

    async def listed() -> dict[str, pyfuse3.EntryAttributes] | None:
        entries = await listdir(env.ops, leaf.st_ino, monkeypatch)
        return entries if fid.name in entries else None

    with trio.fail_after(seconds):
        entries = await eventually(listed, interval=0.2, what=f"{fid} listed")
    assert entries is not None
    return entries


async def test_leaf_readdir_lists_uploaded_files(
    cluster: ClusterView, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for env in make_env(cluster, nursery, list_ttl=0.5):
        fids = [await env.client.upload(f"file {i}".encode(), ext="txt") for i in range(5)]
        appender = await env.client.upload(b"grows", ext="log", appender=True)
        for fid in [*fids, appender]:
            entries = await listed_within(env, fid, monkeypatch)
            attr = entries[fid.name]
            assert stat.S_ISREG(attr.st_mode)
            if fid == appender:
                # Not asked per entry: a placeholder the kernel must not cache.
                assert attr.attr_timeout == 0
            else:
                assert attr.st_size == len(f"file {fids.index(fid)}")
            # The inode readdir handed out is the one lookup gives.
            assert (await walk(env.ops, str(fid))).st_ino == attr.st_ino


async def test_listing_is_cached_and_refreshed_in_the_background(
    cluster: ClusterView, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for env in make_env(cluster, nursery, list_ttl=3.0):

        def streams(env: Env = env) -> int:
            return env.client.stats.requests.get("fetch_one_path_binlog", 0)

        first = await env.client.upload(b"one", ext="txt", group="group1")
        hi, lo = first.subdirs
        leaf = await walk(env.ops, f"group1/M00/{hi:02X}/{lo:02X}")
        await listed_within(env, first, monkeypatch)
        # Within the TTL, listings come from the cached index: no binlog stream.
        streamed = streams()
        for _ in range(3):
            assert first.name in await listdir(env.ops, leaf.st_ino, monkeypatch)
        assert streams() == streamed
        second = await env.client.upload(b"two", ext="txt", group="group1")
        if second.subdirs != first.subdirs:
            pytest.skip("the two uploads landed in different directories")

        # Stale after the TTL: served at once, refreshed meanwhile.
        async def refreshed(
            env: Env = env, leaf: pyfuse3.EntryAttributes = leaf, name: str = second.name
        ) -> bool:
            return name in await listdir(env.ops, leaf.st_ino, monkeypatch)

        with trio.fail_after(15):
            await eventually(refreshed, interval=0.2, what="the refreshed listing")
        assert streams() > streamed


@pytest.mark.expect_log_warnings
async def test_a_slow_listing_holds_up_no_other_operation(
    cluster: ClusterView, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for env in make_env(cluster, nursery, list_ttl=0.5):
        await _check_a_stalled_listing(env, monkeypatch)


async def _check_a_stalled_listing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    fid = await env.client.upload(b"not waiting", ext="txt", group="group1")
    hi, lo = fid.subdirs
    leaf = await walk(env.ops, f"group1/M00/{hi:02X}/{lo:02X}")
    release = trio.Event()
    real_fetch_binlog = env.client.fetch_binlog
    passes_started, pass_started = trio.open_memory_channel[None](10)

    @asynccontextmanager
    async def stalled_fetch_binlog(
        server: ServerAddr, group: str, index: int
    ) -> AsyncIterator[AsyncIterator[BinlogRecord]]:
        passes_started.send_nowait(None)
        await release.wait()  # a storage streaming a huge group, slowly
        async with real_fetch_binlog(server, group, index) as records:
            yield records

    monkeypatch.setattr(env.client, "fetch_binlog", stalled_fetch_binlog)
    listed: list[str] = []

    async def list_leaf() -> None:
        listed.extend(await listdir(env.ops, leaf.st_ino, monkeypatch))

    async with trio.open_nursery() as waiting:
        waiting.start_soon(list_leaf)  # the first listing of the group: it waits
        await pass_started.receive()
        # Meanwhile everything else answers, while the listing is still held up.
        attr = await walk(env.ops, str(fid))
        assert await read_all(env.ops, attr.st_ino) == b"not waiting"
        assert await env.ops.getxattr(attr.st_ino, b"user.fdfs.type", CTX) == b"normal"
        await env.ops.statfs(CTX)
        assert stat.S_ISDIR((await walk(env.ops, "group2/M00/00/00")).st_mode)
        assert not listed
        release.set()
    assert fid.name in listed
    while True:  # the first pass read every storage of the group
        try:
            pass_started.receive_nowait()
        except trio.WouldBlock:
            break
    # A stale listing is served at once while its refresh is held up.
    release = trio.Event()
    await trio.sleep(0.6)
    assert fid.name in await listdir(env.ops, leaf.st_ino, monkeypatch)
    await pass_started.receive()  # the refresh has begun, and is held up
    assert fid.name in await listdir(env.ops, leaf.st_ino, monkeypatch)
    release.set()


async def test_nolist_shows_only_names_used_here(
    cluster: ClusterView, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for env in make_env(cluster, nursery, no_list=True):
        a = await env.client.upload(b"a", ext="txt", group="group1")
        b = await env.client.upload(b"b", ext="txt", group="group1")
        hi, lo = a.subdirs
        leaf = await walk(env.ops, f"group1/M00/{hi:02X}/{lo:02X}")
        before = requests(env.client)
        assert await listdir(env.ops, leaf.st_ino, monkeypatch) == {}
        assert requests(env.client) == before
        await walk(env.ops, str(a))
        names = await listdir(env.ops, leaf.st_ino, monkeypatch)
        assert a.name in names and b.name not in names


def test_deletions_are_not_remembered_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deleted file is hidden from the listing until the next pass; without passes
    (nolist, or nobody listing) that memory must stay bounded."""
    monkeypatch.setattr(listing_mod, "KNOWN_NAMES_LIMIT", 100)
    off = Listing(None, enabled=False, ttl=1, first_wait=1, clock=lambda: 0.0)  # type: ignore[arg-type]
    on = Listing(None, enabled=True, ttl=1, first_wait=1, clock=lambda: 0.0)  # type: ignore[arg-type]
    for i in range(1000):
        fid = fake_id(size=i)
        for listing in (off, on):
            listing.note_file(fid)
            listing.forget_file(fid)
            assert not listing.has_file(fid)
    assert off.remembered_deletions == 0 and on.remembered_deletions == 100


async def test_sparse_hides_empty_subdirectories(
    cluster: ClusterView, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for env in make_env(cluster, nursery, sparse=True, list_ttl=0.5):
        fid = await env.client.upload(b"x", ext="txt", group="group1")
        hi, lo = fid.subdirs
        await listed_within(env, fid, monkeypatch)
        m00 = await walk(env.ops, "group1/M00")
        level1 = await listdir(env.ops, m00.st_ino, monkeypatch)
        assert f"{hi:02X}" in level1 and len(level1) < 256
        level2 = await listdir(env.ops, (await walk(env.ops, f"group1/M00/{hi:02X}")).st_ino,
                               monkeypatch)  # fmt: skip
        assert f"{lo:02X}" in level2
        # Hidden, not gone: any directory still resolves.
        await walk(env.ops, "group1/M00/FE/FE")


# ---------------------------------------------------------------- attributes and reads


async def test_attributes_of_normal_appender_and_empty_files(env: Env) -> None:
    normal = await env.client.upload(b"0123456789", ext="txt")
    empty = await env.client.upload(b"", ext="txt")
    appender = await env.client.upload(b"abc", ext="log", appender=True)
    a = await walk(env.ops, str(normal))
    assert (a.st_size, stat.S_IMODE(a.st_mode), a.st_nlink) == (10, 0o444, 1)
    assert (a.st_uid, a.st_gid) == (os.getuid(), os.getgid())
    assert a.attr_timeout > 0
    e = await walk(env.ops, str(empty))
    assert e.st_size == 0 and await read_all(env.ops, e.st_ino) == b""
    p = await walk(env.ops, str(appender))
    assert (p.st_size, stat.S_IMODE(p.st_mode), p.attr_timeout) == (3, 0o644, 0)
    got = await env.ops.getattr(p.st_ino, CTX)
    assert got.st_size == 3 and got.st_ino == p.st_ino


async def test_slave_files_are_asked_once_and_immutable(env: Env) -> None:
    master = await env.client.upload(b"master image", ext="jpg", group="group1")
    slave = await env.client.upload_slave(master, b"thumbnail", prefix="_150x150", ext="jpg")
    before = requests(env.client)
    attr = await walk(env.ops, str(slave))
    assert (attr.st_size, stat.S_IMODE(attr.st_mode)) == (9, 0o444)
    assert attr.attr_timeout > 0
    asked = requests(env.client) - before
    assert asked >= 1  # QUERY_FILE_INFO: the ID does not carry a slave's size
    await env.ops.getattr(attr.st_ino, CTX)
    assert requests(env.client) - before == asked  # cached: slaves never change
    assert await env.ops.getxattr(attr.st_ino, b"user.fdfs.type", CTX) == b"slave"
    fi = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert fi.keep_cache
    assert await env.ops.read(fi.fh, 0, 100) == b"thumbnail"
    await env.ops.release(fi.fh)


async def test_uid_gid_umask_options(cluster: ClusterView, nursery: trio.Nursery) -> None:
    async for env in make_env(cluster, nursery, uid=1234, gid=5678, umask=0o027):
        fid = await env.client.upload(b"x", ext="txt")
        f = await walk(env.ops, str(fid))
        d = await walk(env.ops, "group1")
        assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (1234, 5678, 0o440)
        assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode)) == (1234, 5678, 0o750)


def _recording_kernel(env: Env) -> list[tuple[int, int, bytes]]:
    """Attach a kernel stand-in to `env.ops` that records page cache stores."""
    stored: list[tuple[int, int, bytes]] = []

    def store(inode: int, offset: int, data: bytes) -> None:
        stored.append((inode, offset, bytes(data)))

    env.ops.kernel = KernelCache(store=store)
    env.ops.kernel.attached = True
    return stored


async def test_a_small_file_goes_to_the_page_cache_before_its_first_open_is_answered(
    env: Env,
) -> None:
    stored = _recording_kernel(env)
    data = random.Random(3).randbytes(4096)
    fid = await env.client.upload(data, ext="jpg")
    attr = await walk(env.ops, str(fid))  # confirmed by downloading it whole
    first = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert first.keep_cache
    assert stored == [(attr.st_ino, 0, data)]
    # Another open while one is open: a read of the first may hold the pages.
    second = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    await env.ops.release(first.fh)
    await env.ops.release(second.fh)
    # Later opens: the kernel keeps the pages with the inode (keep_cache).
    third = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    await env.ops.release(third.fh)
    assert len(stored) == 1 and env.ops.kernel.stored == 1
    # Once the kernel forgets the inode, its pages went with it: stored again.
    await env.ops.forget([(attr.st_ino, 1)])
    attr = await walk(env.ops, str(fid))
    fi = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    await env.ops.release(fi.fh)
    assert stored[1:] == [(attr.st_ino, 0, data)]
    assert env.parts.counters()["page_cache_stores"] == 2


async def test_no_page_cache_store_while_a_handle_is_open(env: Env) -> None:
    stored = _recording_kernel(env)
    fid = await env.client.upload(b"x" * 5000, ext="txt")
    attr = await walk(env.ops, str(fid))
    first = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert len(stored) == 1
    # The kernel never forgets an open inode; if it did, the open handle (whose
    # reads may hold pages) must still keep the store away.
    await env.ops.forget([(attr.st_ino, 1)])
    attr = await walk(env.ops, str(fid))
    second = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert len(stored) == 1
    assert await env.ops.read(second.fh, 0, 8192) == b"x" * 5000
    await env.ops.release(first.fh)
    await env.ops.release(second.fh)


async def test_large_appender_and_unread_files_are_not_stored(
    env: Env, cluster: ClusterView, nursery: trio.Nursery
) -> None:
    stored = _recording_kernel(env)
    big = await env.client.upload(random.Random(4).randbytes(200_000), ext="bin")
    log_file = await env.client.upload(b"line\n", ext="log", appender=True)
    for fid in (big, log_file):
        attr = await walk(env.ops, str(fid))
        fi = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
        await env.ops.release(fi.fh)
    async for trusting in make_env(cluster, nursery, trust_ids=True):
        stored_too = _recording_kernel(trusting)
        small = await trusting.client.upload(b"y" * 100, ext="txt")
        attr = await walk(trusting.ops, str(small))  # trusted: nothing downloaded
        fi = await trusting.ops.open(attr.st_ino, os.O_RDONLY, CTX)
        assert await trusting.ops.read(fi.fh, 0, 4096) == b"y" * 100
        await trusting.ops.release(fi.fh)
        assert stored_too == []
    assert stored == []


async def test_reads_ranges_and_past_eof(env: Env) -> None:
    data = random.Random(7).randbytes(3 * MIB + 777)
    fid = await env.client.upload(data, ext="bin")
    attr = await walk(env.ops, str(fid))
    assert attr.st_size == len(data)
    fi = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert fi.keep_cache and not fi.direct_io
    rng = random.Random(8)
    for _ in range(50):
        off = rng.randrange(0, len(data) + 1000)
        size = rng.choice([1, 4096, 100_000, 300_000])
        assert await env.ops.read(fi.fh, off, size) == data[off : off + size]
    assert await env.ops.read(fi.fh, len(data), 4096) == b""
    assert await env.ops.read(fi.fh, len(data) + 10 * MIB, 4096) == b""
    await env.ops.release(fi.fh)
    assert await read_all(env.ops, attr.st_ino, chunk=256 * 1024) == data
    counters = env.parts.counters()
    assert counters["read_bytes_read"] >= len(data) and counters["client_requests"] > 0
    assert counters["cache_hits"] > 0 and counters["open_files"] == 0


async def test_appender_growth_is_seen_after_reopen(env: Env) -> None:
    fid = await env.client.upload(b"first line\n", ext="log", appender=True)
    attr = await walk(env.ops, str(fid))
    fi = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert not fi.keep_cache
    assert await env.ops.read(fi.fh, 0, 4096) == b"first line\n"
    await env.ops.release(fi.fh)
    await env.client.append(fid, b"second line\n")
    # Close-to-open: the next open asks the storage again, whatever was cached.
    fi = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert (await env.ops.getattr(attr.st_ino, CTX)).st_size == 23
    assert await env.ops.read(fi.fh, 0, 4096) == b"first line\nsecond line\n"
    await env.ops.release(fi.fh)
    await env.client.truncate(fid, 5)
    assert await read_all(env.ops, attr.st_ino) == b"first"


async def test_deleted_files_are_enoent(env: Env) -> None:
    appender = await env.client.upload(b"bye", ext="log", appender=True)
    normal = await env.client.upload(b"bye", ext="txt")
    await env.client.delete(appender)
    await env.client.delete(normal)
    await expect_errno(errno.ENOENT, walk(env.ops, str(appender)))
    await expect_errno(errno.ENOENT, walk(env.ops, str(normal)))  # confirmed with the cluster


async def test_directories_cannot_be_opened_or_read_as_files(env: Env) -> None:
    d = await walk(env.ops, "group1/M00")
    await expect_errno(errno.EISDIR, env.ops.open(d.st_ino, os.O_RDONLY, CTX))
    fid = await env.client.upload(b"f", ext="txt")
    f = await walk(env.ops, str(fid))
    await expect_errno(errno.ENOTDIR, env.ops.opendir(f.st_ino, CTX))


async def test_statfs_sums_the_groups(env: Env) -> None:
    groups = await env.client.list_groups()
    st = await env.ops.statfs(CTX)
    assert st.f_bsize == st.f_frsize == 4096
    assert st.f_blocks == sum(g.total_mb for g in groups) * 256
    assert st.f_bavail == st.f_bfree == sum(g.free_mb for g in groups) * 256


# ---------------------------------------------------------------- xattrs


async def test_xattrs_from_metadata_and_the_file_id(env: Env) -> None:
    fid = await env.client.upload(
        b"meta", ext="log", appender=True, meta={"author": "ana", "size": "big"}, group="group2"
    )
    ino = (await walk(env.ops, str(fid))).st_ino
    names = await env.ops.listxattr(ino, CTX)
    # The user.fdfs.* facts are read by name; copying tools see only the metadata.
    assert list(names) == [b"user.author", b"user.size"]
    get = env.ops.getxattr
    assert await get(ino, b"user.author", CTX) == b"ana"
    assert await get(ino, b"user.fdfs.file_id", CTX) == str(fid).encode()
    assert await get(ino, b"user.fdfs.type", CTX) == b"appender"
    info = await env.client.info(fid)
    assert await get(ino, b"user.fdfs.crc32", CTX) == f"{info.crc32:08x}".encode()
    (storage,) = env.cluster.storages_of("group2")
    assert await get(ino, b"user.fdfs.source", CTX) in (
        str(storage.storage_id).encode(),
        storage.host.encode(),
    )
    await expect_errno(pyfuse3.ENOATTR, get(ino, b"user.missing", CTX))
    await expect_errno(pyfuse3.ENOATTR, get(ino, b"user.fdfs.other", CTX))
    before = requests(env.client)
    await expect_errno(pyfuse3.ENOATTR, get(ino, b"security.capability", CTX))
    await expect_errno(pyfuse3.ENOATTR, get(ino, b"system.posix_acl_access", CTX))
    assert requests(env.client) == before


async def test_xattrs_of_normal_files_and_directories(env: Env) -> None:
    fid = await env.client.upload(b"plain", ext="txt")
    ino = (await walk(env.ops, str(fid))).st_ino
    assert await env.ops.getxattr(ino, b"user.fdfs.type", CTX) == b"normal"
    assert list(await env.ops.listxattr(ino, CTX)) == []
    d = await walk(env.ops, "group1/M00")
    assert list(await env.ops.listxattr(d.st_ino, CTX)) == []
    await expect_errno(pyfuse3.ENOATTR, env.ops.getxattr(d.st_ino, b"user.fdfs.file_id", CTX))


async def test_fdfs_xattrs_accept_their_own_value_and_refuse_others(env: Env) -> None:
    """`setfattr --restore` of a dump is harmless; a new value is refused with ENOTSUP,
    which `cp -a` and `mv` leave unreported and `setfattr` reports."""
    fid = await env.client.upload(b"facts", ext="txt", meta={"k": "v"})
    ino = (await walk(env.ops, str(fid))).st_ino
    for name in (b"user.fdfs.file_id", b"user.fdfs.type", b"user.fdfs.source"):
        value = await env.ops.getxattr(ino, name, CTX)
        await env.ops.setxattr(ino, name, value, CTX)
        await expect_errno(errno.ENOTSUP, env.ops.setxattr(ino, name, value + b"x", CTX))
        await expect_errno(errno.ENOTSUP, env.ops.removexattr(ino, name, CTX))
    other = await env.client.upload(b"other", ext="txt")
    await expect_errno(
        errno.ENOTSUP, env.ops.setxattr(ino, b"user.fdfs.file_id", str(other).encode(), CTX)
    )
    assert await env.client.get_metadata(fid) == {"k": "v"}


# ---------------------------------------------------------------- refusals and failures


async def test_changes_are_refused(env: Env) -> None:
    """The write side's own refusals are tested in test_write_ops."""
    fid = await env.client.upload(b"x", ext="txt")
    f = await walk(env.ops, str(fid))
    g = await walk(env.ops, "group1")
    ops = env.ops
    await expect_errno(errno.EPERM, ops.open(f.st_ino, os.O_WRONLY, CTX))
    await expect_errno(errno.EPERM, ops.open(f.st_ino, os.O_RDWR, CTX))
    await expect_errno(errno.EPERM, ops.mkdir(g.st_ino, b"d", 0o755, CTX))
    await expect_errno(errno.ENOTSUP, ops.setxattr(f.st_ino, b"user.fdfs.type", b"1", CTX))


async def test_read_only_mount_refuses_with_erofs(
    cluster: ClusterView, nursery: trio.Nursery
) -> None:
    async for env in make_env(cluster, nursery, read_only=True):
        g = await walk(env.ops, "group1")
        await expect_errno(errno.EROFS, env.ops.create(g.st_ino, b"n", 0o644, os.O_WRONLY, CTX))


async def test_read_only_mount_answers_flush_with_enosys(
    cluster: ClusterView, nursery: trio.Nursery
) -> None:
    """ENOSYS makes the kernel stop sending flush: nothing is ever written on ro mounts."""
    async for env in make_env(cluster, nursery, read_only=True):
        fid = await env.client.upload(b"read me", ext="txt")
        attr = await walk(env.ops, str(fid))
        fi = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
        await expect_errno(errno.ENOSYS, env.ops.flush(fi.fh))
        assert await env.ops.read(fi.fh, 0, 100) == b"read me"
        await env.ops.release(fi.fh)
        assert env.ops.open_files == 0


@pytest.mark.expect_log_warnings
async def test_eio_within_the_timeout_when_every_replica_is_stopped(
    nursery: trio.Nursery, fdfs_cluster_factory: ClusterFactory
) -> None:
    cluster = await fdfs_cluster_factory.start_async(groups={"group1": 1})
    async for env in make_env(cluster, nursery, timeout=2.0):
        # Too big to be fetched whole by the lookup: the read goes to the storage.
        fid = await env.client.upload(b"frozen" * 20_000, ext="bin")
        attr = await walk(env.ops, str(fid))
        fi = await env.ops.open(attr.st_ino, os.O_RDONLY, CTX)
        (storage,) = cluster.storages
        cluster.stop(storage)
        try:
            with trio.fail_after(10):  # generous: EIO comes at about 2 s
                await expect_errno(errno.EIO, env.ops.read(fi.fh, 0, 4096))
        finally:
            cluster.cont(storage)
        # Once it answers again, so does the mount (after a short back-off).
        with trio.fail_after(15):
            while True:
                try:
                    assert await env.ops.read(fi.fh, 0, 6) == b"frozen"
                    break
                except pyfuse3.FUSEError:
                    await trio.sleep(0.5)
