"""The write side through `Operations` called directly (no kernel), against a real harness
cluster: each POSIX call and the FastDFS request it becomes, coalescing, read-your-writes,
created files and aliases, slaves, deletes, renames, metadata, refusals and failures."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pyfuse3
import pytest
import trio
from opshelp import (
    CTX,
    MIB,
    ClusterView,
    Env,
    expect_errno,
    inprocess_cluster,
    listdir,
    make_env,
    read_all,
    walk,
)
from waiting import eventually

from fdfsmount.catalog import AliasCatalog
from fdfsmount.proto import FdfsError, FileId, parse_file_id
from fdfsmount.proto.client import Client
from fdfsmount.proto.fileid import slave_remote_name
from harness.pytest_plugin import ClusterFactory

ALL_FIELDS = ("update_size", "update_mode", "update_uid", "update_gid",
              "update_atime", "update_mtime", "update_ctime")  # fmt: skip


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> ClusterView:
    """The builtin servers as tasks of this test (tests that stop storages use processes)."""
    return await inprocess_cluster(nursery, tmp_path / "servers")


def fields(**set_: bool) -> pyfuse3.SetattrFields:
    """A `SetattrFields` stand-in (pyfuse3's own cannot be built outside a request)."""
    return SimpleNamespace(**{name: set_.get(name, False) for name in ALL_FIELDS})  # type: ignore[return-value]


def attrs(**values: int) -> pyfuse3.EntryAttributes:
    attr = pyfuse3.EntryAttributes()
    for name, value in values.items():
        setattr(attr, name, value)
    return attr


def sent(client: Client, op: str) -> int:
    """Requests of one wire operation the client has sent so far."""
    return client.stats.requests.get(op, 0)


class Counter:
    """Requests per wire operation since it was made."""

    OPS = ("append_file", "modify_file", "truncate_file", "upload_appender_file", "delete_file")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.start = {op: sent(client, op) for op in self.OPS}

    def __call__(self) -> dict[str, int]:
        now = {op: sent(self.client, op) - self.start[op] for op in self.OPS}
        return {op: n for op, n in now.items() if n}


async def create(env: Env, name: str, group: str = "group1") -> tuple[int, int, FileId]:
    """Create `name` in /<group>/: (file handle, inode, file ID)."""
    g = await walk(env.ops, group)
    fi, attr = await env.ops.create(g.st_ino, name.encode(), 0o644, os.O_WRONLY | os.O_CREAT, CTX)
    fid = parse_file_id((await env.ops.getxattr(attr.st_ino, b"user.fdfs.file_id", CTX)).decode())
    return fi.fh, attr.st_ino, fid


async def stored(env: Env, fid: FileId) -> bytes:
    return bytes(await env.client.download(fid))


# ---------------------------------------------------------------- creating and writing


async def test_create_uploads_an_appender_and_keeps_an_alias(
    env: Env, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, "fdfsmount")
    fh, ino, fid = await create(env, "report.log")
    # The file exists on the storage by the time create returns.
    assert (await env.client.info(fid)).size == 0
    assert f"created group1/report.log -> {fid}" in caplog.text
    assert await env.ops.getxattr(ino, b"user.fdfs.type", CTX) == b"appender"
    assert fid.remote_name.endswith(".log")
    g = await walk(env.ops, "group1")
    entries = await listdir(env.ops, g.st_ino, monkeypatch)
    assert "report.log" in entries and "M00" in entries
    # The alias and the file-ID path are one inode.
    assert (await walk(env.ops, "group1/report.log")).st_ino == ino
    assert (await walk(env.ops, str(fid))).st_ino == ino
    await env.ops.write(fh, 0, b"line 1\n")
    await env.ops.release(fh)
    assert await stored(env, fid) == b"line 1\n"
    attr = await walk(env.ops, "group1/report.log")
    assert (attr.st_size, stat.S_IMODE(attr.st_mode)) == (7, 0o644)


async def test_aliases_persist_across_remounts(
    cluster: ClusterView, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async for env in make_env(cluster, nursery, cache_dir=str(tmp_path)):
        fh, _, fid = await create(env, "kept.txt")
        await env.ops.release(fh)
    async for env in make_env(cluster, nursery, cache_dir=str(tmp_path)):
        attr = await walk(env.ops, "group1/kept.txt")
        assert await env.ops.getxattr(attr.st_ino, b"user.fdfs.file_id", CTX) == str(fid).encode()
    async for env in make_env(cluster, nursery, cache_dir=str(tmp_path / "elsewhere")):
        await expect_errno(errno.ENOENT, walk(env.ops, "group1/kept.txt"))


def test_each_cluster_has_its_own_catalog(tmp_path: Path) -> None:
    fid = parse_file_id("group1/M00/00/00/oYYBAGsDA7aEXyT5AAAAAAAAAAA332.log")
    one = AliasCatalog.for_cluster(tmp_path, ["10.0.0.1:22122", "10.0.0.2:22122"])
    same = AliasCatalog.for_cluster(tmp_path, ["10.0.0.2:22122", "10.0.0.1:22122"])
    other = AliasCatalog.for_cluster(tmp_path, ["10.0.0.3:22122"])
    assert one.path is not None and one.path == same.path != other.path
    assert one.load() == [] and not one.path.exists()  # nothing written for nothing
    one.add("group1", "a.log", fid)
    one.rename("group1", "a.log", "b.log")
    one.flush()  # changes are written by the catalog's own thread
    assert same.load() == [("group1", "b.log", fid)]
    assert other.load() == []
    one.remove("group1", "b.log")
    one.flush()
    assert same.load() == []
    for catalog in (one, same, other):
        catalog.close()


async def test_write_at_eof_appends_and_small_writes_are_coalesced(env: Env) -> None:
    fh, _, fid = await create(env, "coalesced.bin")
    count = Counter(env.client)
    chunks = [bytes([i]) * 100 for i in range(200)]
    offset = 0
    for chunk in chunks:
        assert await env.ops.write(fh, offset, chunk) == len(chunk)
        offset += len(chunk)
    assert count() == {}  # nothing sent yet: all in the buffer
    await env.ops.fsync(fh, False)
    assert count() == {"append_file": 1}
    assert await stored(env, fid) == b"".join(chunks)
    await env.ops.release(fh)


async def test_write_inside_modifies_and_across_the_end_also_appends(env: Env) -> None:
    fh, _, fid = await create(env, "patched.bin")
    await env.ops.write(fh, 0, b"0123456789")
    await env.ops.fsync(fh, False)
    count = Counter(env.client)
    await env.ops.write(fh, 2, b"ab")
    await env.ops.fsync(fh, False)
    assert count() == {"modify_file": 1}
    assert await stored(env, fid) == b"01ab456789"
    count = Counter(env.client)
    await env.ops.write(fh, 8, b"XYZW")  # 2 bytes inside, 2 past the end
    await env.ops.fsync(fh, False)
    assert count() == {"modify_file": 1, "append_file": 1}
    assert await stored(env, fid) == b"01ab4567XYZW"
    await env.ops.release(fh)


async def test_writes_past_the_end_leave_a_zero_filled_gap(env: Env) -> None:
    fh, ino, fid = await create(env, "holes.bin")
    await env.ops.write(fh, 0, b"head")
    await env.ops.fsync(fh, False)
    count = Counter(env.client)
    await env.ops.write(fh, 10, b"small gap")  # sent as zeros with the data
    await env.ops.fsync(fh, False)
    assert count() == {"append_file": 1}
    count = Counter(env.client)
    far = 19 + 3 * MIB
    await env.ops.write(fh, far, b"far")  # left to the storage: TRUNCATE grows with zeros
    await env.ops.fsync(fh, False)
    assert count() == {"truncate_file": 1, "append_file": 1}
    expected = b"head" + bytes(6) + b"small gap" + bytes(far - 19) + b"far"
    assert await stored(env, fid) == expected
    assert (await env.ops.getattr(ino, CTX)).st_size == len(expected)
    await env.ops.release(fh)


async def test_o_append_writes_go_to_the_end(env: Env) -> None:
    fh, ino, fid = await create(env, "appended.log")
    await env.ops.write(fh, 0, b"first\n")
    await env.ops.release(fh)
    await env.client.append(fid, b"elsewhere\n")  # another host appended meanwhile
    fi = await env.ops.open(ino, os.O_WRONLY | os.O_APPEND, CTX)
    count = Counter(env.client)
    await env.ops.write(fi.fh, 0, b"second\n")  # the kernel's offset does not matter
    await env.ops.release(fi.fh)
    assert count() == {"append_file": 1}
    assert await stored(env, fid) == b"first\nelsewhere\nsecond\n"


async def test_truncate_shrinks_and_grows_and_o_trunc_empties(env: Env) -> None:
    fh, ino, fid = await create(env, "sized.bin")
    await env.ops.write(fh, 0, b"0123456789")
    count = Counter(env.client)
    await env.ops.setattr(ino, attrs(st_size=4), fields(update_size=True), fh, CTX)
    # Pending bytes go first, then the truncate.
    assert count() == {"append_file": 1, "truncate_file": 1}
    assert await stored(env, fid) == b"0123"
    attr = await env.ops.setattr(ino, attrs(st_size=8), fields(update_size=True), None, CTX)
    assert attr.st_size == 8
    assert await stored(env, fid) == b"0123" + bytes(4)
    assert await env.ops.read(fh, 0, 100) == b"0123" + bytes(4)
    await env.ops.release(fh)
    # Path truncate with no open handle.
    await env.ops.setattr(ino, attrs(st_size=2), fields(update_size=True), None, CTX)
    assert await stored(env, fid) == b"01"
    assert (await env.ops.getattr(ino, CTX)).st_size == 2
    count = Counter(env.client)
    fi = await env.ops.open(ino, os.O_WRONLY | os.O_TRUNC, CTX)
    assert count() == {"truncate_file": 1}
    assert await stored(env, fid) == b""
    await env.ops.write(fi.fh, 0, b"new")
    await env.ops.release(fi.fh)
    assert await stored(env, fid) == b"new"


async def test_reads_and_stat_see_pending_writes_at_once(env: Env) -> None:
    fid = await env.client.upload(b"stored part|", ext="log", appender=True, group="group1")
    ino = (await walk(env.ops, str(fid))).st_ino
    assert await read_all(env.ops, ino) == b"stored part|"  # warms the block cache
    fi = await env.ops.open(ino, os.O_RDWR, CTX)
    await env.ops.write(fi.fh, 12, b"pending")
    assert await env.client.download(fid) == b"stored part|"  # not sent yet
    assert await env.ops.read(fi.fh, 0, 100) == b"stored part|pending"
    assert (await env.ops.getattr(ino, CTX)).st_size == 19
    await env.ops.write(fi.fh, 0, b"S")  # elsewhere: the first extent is sent now
    assert await env.ops.read(fi.fh, 0, 100) == b"Stored part|pending"
    assert await env.ops.read(fi.fh, 11, 4) == b"|pen"
    # Another handle, read-only, sees them too.
    assert await read_all(env.ops, ino) == b"Stored part|pending"
    await env.ops.release(fi.fh)
    assert await env.client.download(fid) == b"Stored part|pending"
    assert await read_all(env.ops, ino) == b"Stored part|pending"


async def test_reads_inside_pending_writes_are_exact_while_an_append_is_in_flight(
    env: Env,
) -> None:
    """Bytes past what the storage holds come from this host: pending extents, and zeros
    only in the hole between them -- never a download past the stored end."""
    fh, _, fid = await create(env, "in-flight.bin")
    model = bytearray(os.urandom(121_567))
    await env.ops.write(fh, 0, bytes(model))
    await env.ops.fsync(fh, False)
    more = os.urandom(8_265)
    await env.ops.write(fh, len(model), more)
    model += more
    far = len(model) + MIB + 4_321
    tail = os.urandom(2_796)
    await env.ops.write(fh, far, tail)  # seals the 8,265 bytes: their append is under way
    model += bytes(far - len(model)) + tail
    count = Counter(env.client)
    downloads = sent(env.client, "download_file") + sent(env.client, "query_file_info")
    # Wholly past what the storage holds: from this host alone, no request at all.
    assert await env.ops.read(fh, 126_976, 4096) == bytes(model[126_976:131_072])
    assert sent(env.client, "download_file") + sent(env.client, "query_file_info") == downloads
    assert count() == {}
    for offset, size in ((126_976, 4096), (121_000, 65_536), (129_000, 8192), (far - 10, 100)):
        assert await env.ops.read(fh, offset, size) == bytes(model[offset : offset + size])
    await env.ops.fsync(fh, False)
    assert await env.ops.read(fh, 126_976, 4096) == bytes(model[126_976:131_072])
    await env.ops.release(fh)
    assert await stored(env, fid) == bytes(model)


async def test_buffers_are_sent_when_full_and_when_idle(
    cluster: ClusterView, nursery: trio.Nursery
) -> None:
    async for env in make_env(cluster, nursery, write_buffer=64 * 1024, write_idle=0.2):
        fh, _, fid = await create(env, "streamed.bin")
        count = Counter(env.client)
        block = os.urandom(16 * 1024)
        for i in range(16):  # 256 KiB: four full buffers
            await env.ops.write(fh, i * len(block), block)

        def three_appends(count: Counter = count) -> bool:
            return count().get("append_file", 0) >= 3

        with trio.fail_after(10):
            await eventually(three_appends, interval=0.01)
        await env.ops.write(fh, 16 * len(block), b"tail")  # then nothing: sent when idle

        async def all_sent(env: Env = env, fid: FileId = fid, size: int = 16 * len(block)) -> bool:
            return len(await stored(env, fid)) >= size + 4

        with trio.fail_after(10):
            await eventually(all_sent)
        assert await stored(env, fid) == block * 16 + b"tail"
        await env.ops.release(fh)


async def test_flush_all_stores_pending_writes(env: Env) -> None:
    """What the mount's shutdown does before unmounting (SIGTERM included)."""
    fh, _, fid = await create(env, "at-exit.log")
    await env.ops.write(fh, 0, b"unflushed")
    assert env.parts.writer.pending_files() == 1
    await env.parts.writer.flush_all()
    assert await stored(env, fid) == b"unflushed"
    assert env.parts.writer.pending_files() == 0
    await env.ops.release(fh)


# ---------------------------------------------------------------- slaves


async def test_create_next_to_a_master_uploads_a_slave_with_that_id(env: Env) -> None:
    master = await env.client.upload(b"master image", ext="jpg", group="group1")
    hi, lo = master.subdirs
    leaf = await walk(env.ops, f"group1/M00/{hi:02X}/{lo:02X}")
    name = slave_remote_name(master.remote_name, "_150x150", "jpg")[10:]
    # As `cp` does: the name is looked up first, and is not there yet.
    await expect_errno(errno.ENOENT, env.ops.lookup(leaf.st_ino, name.encode(), CTX))
    fi, attr = await env.ops.create(leaf.st_ino, name.encode(), 0o644, os.O_WRONLY, CTX)
    slave = parse_file_id(f"{master.group}/{master.remote_name[:10]}{name}")
    await env.ops.write(fi.fh, 0, b"thumb")
    await env.ops.write(fi.fh, 5, b"nail")
    assert await env.ops.read(fi.fh, 0, 100) == b"thumbnail"
    assert not await env.client.exists(slave)  # spooled until flush
    await env.ops.flush(fi.fh)
    assert await env.client.download(slave) == b"thumbnail"
    # Written once: now a read-only slave.
    await expect_errno(errno.EPERM, env.ops.write(fi.fh, 9, b"more"))
    await env.ops.release(fi.fh)
    attr = await walk(env.ops, str(slave))
    assert (attr.st_size, stat.S_IMODE(attr.st_mode)) == (9, 0o444)
    assert await env.ops.getxattr(attr.st_ino, b"user.fdfs.type", CTX) == b"slave"
    await expect_errno(errno.EPERM, env.ops.open(attr.st_ino, os.O_WRONLY, CTX))
    # Another extension: the master is found in the directory (looked up, or listed).
    await walk(env.ops, str(master))
    other = slave_remote_name(master.remote_name, "-big", "png")[10:]
    fi, _ = await env.ops.create(leaf.st_ino, other.encode(), 0o644, os.O_WRONLY, CTX)
    await env.ops.write(fi.fh, 0, b"png bytes")
    await env.ops.release(fi.fh)
    assert await env.client.download(f"group1/{master.remote_name[:10]}{other}") == b"png bytes"


async def test_create_under_store_paths_needs_a_master(env: Env) -> None:
    master = await env.client.upload(b"m", ext="jpg", group="group1")
    hi, lo = master.subdirs
    leaf = await walk(env.ops, f"group1/M00/{hi:02X}/{lo:02X}")
    for name in (b"plain.txt", master.name.encode()):
        await expect_errno(errno.EPERM, env.ops.create(leaf.st_ino, name, 0o644, 0, CTX))
    # A slave name of a master that does not exist.
    ghost = slave_remote_name(master.remote_name.replace(master.name[:5], "AAAAA"), "_s", "jpg")
    await expect_errno(errno.EPERM, env.ops.create(leaf.st_ino, ghost[10:].encode(), 0o644, 0, CTX))
    for path in ("", "group1/M00", f"group1/M00/{hi:02X}"):
        d = await walk(env.ops, path)
        await expect_errno(errno.EPERM, env.ops.create(d.st_ino, b"x.txt", 0o644, 0, CTX))
    g = await walk(env.ops, "group1")
    await expect_errno(errno.EPERM, env.ops.create(g.st_ino, b"M07", 0o644, 0, CTX))


# ---------------------------------------------------------------- deleting and renaming


async def test_unlink_deletes_by_alias_or_file_id(env: Env) -> None:
    fh, _, fid = await create(env, "doomed.log")
    await env.ops.release(fh)
    g = await walk(env.ops, "group1")
    count = Counter(env.client)
    await env.ops.unlink(g.st_ino, b"doomed.log", CTX)
    assert count() == {"delete_file": 1}
    assert not await env.client.exists(fid)
    await expect_errno(errno.ENOENT, walk(env.ops, "group1/doomed.log"))
    await expect_errno(errno.ENOENT, env.ops.unlink(g.st_ino, b"doomed.log", CTX))
    normal = await env.client.upload(b"bye", ext="txt", group="group1")
    hi, lo = normal.subdirs
    leaf = await walk(env.ops, f"group1/M00/{hi:02X}/{lo:02X}")
    await env.ops.unlink(leaf.st_ino, normal.name.encode(), CTX)
    assert not await env.client.exists(normal)
    await expect_errno(errno.ENOENT, env.ops.unlink(leaf.st_ino, normal.name.encode(), CTX))
    await expect_errno(errno.ENOENT, env.ops.unlink(leaf.st_ino, b"not-a-file-id", CTX))


async def test_deleting_the_file_id_path_removes_its_aliases(env: Env) -> None:
    fh, _, fid = await create(env, "twice.log")
    await env.ops.release(fh)
    hi, lo = fid.subdirs
    leaf = await walk(env.ops, f"group1/M00/{hi:02X}/{lo:02X}")
    await env.ops.unlink(leaf.st_ino, fid.name.encode(), CTX)
    await expect_errno(errno.ENOENT, walk(env.ops, "group1/twice.log"))
    assert env.parts.table.alias_target("group1", "twice.log") is None


async def test_alias_of_a_file_deleted_elsewhere_goes_away(env: Env) -> None:
    fh, _, fid = await create(env, "gone.log")
    await env.ops.release(fh)
    await env.client.delete(fid)
    env.parts.ops.stats.invalidate(fid)
    await expect_errno(errno.ENOENT, walk(env.ops, "group1/gone.log"))
    assert env.parts.table.alias_target("group1", "gone.log") is None


async def test_rename_between_aliases_of_a_group_only(env: Env) -> None:
    fh, ino, fid = await create(env, "old.log")
    await env.ops.release(fh)
    fh2, _, other = await create(env, "other.log")
    await env.ops.release(fh2)
    g1 = await walk(env.ops, "group1")
    g2 = await walk(env.ops, "group2")
    before = sum(env.client.stats.requests.values())
    await env.ops.rename(g1.st_ino, b"old.log", g1.st_ino, b"new.log", 0, CTX)
    assert sum(env.client.stats.requests.values()) == before  # catalog only
    assert (await walk(env.ops, "group1/new.log")).st_ino == ino
    await expect_errno(errno.ENOENT, walk(env.ops, "group1/old.log"))
    await expect_errno(
        errno.EEXIST, env.ops.rename(g1.st_ino, b"new.log", g1.st_ino, b"other.log", 1, CTX)
    )
    await env.ops.rename(g1.st_ino, b"new.log", g1.st_ino, b"other.log", 0, CTX)  # replaces
    assert (await walk(env.ops, "group1/other.log")).st_ino == ino
    assert await env.client.exists(other)  # the replaced alias's file stays
    await expect_errno(
        errno.EXDEV, env.ops.rename(g1.st_ino, b"other.log", g2.st_ino, b"x.log", 0, CTX)
    )
    m00 = await walk(env.ops, "group1/M00")
    await expect_errno(
        errno.EPERM, env.ops.rename(g1.st_ino, b"other.log", m00.st_ino, b"x.log", 0, CTX)
    )
    await expect_errno(
        errno.EPERM, env.ops.rename(g1.st_ino, b"other.log", g1.st_ino, b"M01", 0, CTX)
    )
    hi, lo = fid.subdirs
    leaf = await walk(env.ops, f"group1/M00/{hi:02X}/{lo:02X}")
    await expect_errno(
        errno.EPERM, env.ops.rename(leaf.st_ino, fid.name.encode(), g1.st_ino, b"y.log", 0, CTX)
    )
    await expect_errno(errno.EPERM, env.ops.rename(g1.st_ino, b"M00", g1.st_ino, b"z", 0, CTX))


# ---------------------------------------------------------------- metadata


async def test_setxattr_merges_and_removexattr_rewrites_the_rest(env: Env) -> None:
    fid = await env.client.upload(b"m", ext="txt", group="group1", meta={"a": "1", "b": "2"})
    ino = (await walk(env.ops, str(fid))).st_ino
    await env.ops.setxattr(ino, b"user.c", b"3", CTX)
    await env.ops.setxattr(ino, b"user.a", "één".encode(), CTX)
    assert await env.client.get_metadata(fid) == {"a": "één", "b": "2", "c": "3"}
    assert await env.ops.getxattr(ino, b"user.c", CTX) == b"3"
    await env.ops.removexattr(ino, b"user.b", CTX)
    assert await env.client.get_metadata(fid) == {"a": "één", "c": "3"}
    await expect_errno(pyfuse3.ENOATTR, env.ops.getxattr(ino, b"user.b", CTX))
    await expect_errno(pyfuse3.ENOATTR, env.ops.removexattr(ino, b"user.b", CTX))
    for name in (b"user.fdfs.file_id", b"user.fdfs.type", b"user.fdfs.new"):
        await expect_errno(errno.ENOTSUP, env.ops.setxattr(ino, name, b"x", CTX))
        await expect_errno(errno.ENOTSUP, env.ops.removexattr(ino, name, CTX))
    for name in (b"security.selinux", b"trusted.x", b"system.posix_acl_access"):
        await expect_errno(errno.ENOTSUP, env.ops.setxattr(ino, name, b"x", CTX))
    await expect_errno(errno.ERANGE, env.ops.setxattr(ino, b"user.big", b"v" * 257, CTX))
    await expect_errno(errno.ERANGE, env.ops.setxattr(ino, b"user." + b"k" * 65, b"v", CTX))
    d = await walk(env.ops, "group1")
    await expect_errno(errno.EPERM, env.ops.setxattr(d.st_ino, b"user.a", b"1", CTX))


async def test_every_listed_xattr_of_a_file_being_written_has_a_value(env: Env) -> None:
    """`getfattr -d` lists, then reads every name: a listed name without a value fails it."""
    fh, ino, _ = await create(env, "listed.log")
    await env.ops.write(fh, 0, b"pending bytes")
    try:
        await env.ops.setxattr(ino, b"user.owner", b"me", CTX)
        names = await env.ops.listxattr(ino, CTX)
        assert b"user.owner" in names
        for name in names:
            assert await env.ops.getxattr(ino, name, CTX)
        for name in (b"user.fdfs.file_id", b"user.fdfs.type"):
            assert await env.ops.getxattr(ino, name, CTX)
    finally:
        await env.ops.release(fh)


# ---------------------------------------------------------------- refusals


async def test_refusals(env: Env) -> None:
    normal = await env.client.upload(b"x", ext="txt", group="group1")
    master = await env.client.upload(b"m", ext="jpg", group="group1")
    slave = await env.client.upload_slave(master, b"s", prefix="_s", ext="jpg")
    f = await walk(env.ops, str(normal))
    s = await walk(env.ops, str(slave))
    g = await walk(env.ops, "group1")
    ops = env.ops
    for ino in (f.st_ino, s.st_ino):
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND):
            await expect_errno(errno.EPERM, ops.open(ino, flags, CTX))
        await expect_errno(
            errno.EPERM, ops.setattr(ino, attrs(st_size=0), fields(update_size=True), None, CTX)
        )
    await expect_errno(errno.EPERM, ops.mkdir(g.st_ino, b"d", 0o755, CTX))
    await expect_errno(errno.EPERM, ops.rmdir(g.st_ino, b"M00", CTX))
    await expect_errno(errno.EPERM, ops.symlink(g.st_ino, b"l", b"target", CTX))
    await expect_errno(errno.EPERM, ops.link(f.st_ino, g.st_ino, b"hard", CTX))
    await expect_errno(errno.EPERM, ops.mknod(g.st_ino, b"n", stat.S_IFREG | 0o644, 0, CTX))
    fh, ino, _ = await create(env, "modes.log")
    # While it is being written here (rsync's temporary file): any mode, not kept.
    chmod = fields(update_mode=True)
    kept = await ops.setattr(ino, attrs(st_mode=stat.S_IFREG | 0o600), chmod, None, CTX)
    assert stat.S_IMODE(kept.st_mode) == 0o644
    await env.ops.release(fh)
    await expect_errno(
        errno.EPERM, ops.setattr(ino, attrs(st_mode=0o600), fields(update_mode=True), None, CTX)
    )
    await expect_errno(
        errno.EPERM, ops.setattr(ino, attrs(st_uid=4321), fields(update_uid=True), None, CTX)
    )
    await expect_errno(
        errno.EPERM, ops.setattr(ino, attrs(st_gid=4321), fields(update_gid=True), None, CTX)
    )
    # Setting what is shown already is no change (cp -p); times are not kept.
    current = await ops.getattr(ino, CTX)
    same = attrs(st_mode=current.st_mode, st_uid=current.st_uid, st_gid=current.st_gid)
    both = fields(update_mode=True, update_uid=True, update_gid=True, update_mtime=True)
    assert (await ops.setattr(ino, same, both, None, CTX)).st_ino == ino
    # cp -a / rsync -a of a read-only file into a group ask for 0444: fewer write bits
    # lose nothing (the file keeps taking writes); more would promise what FastDFS lacks.
    mode = fields(update_mode=True)
    for perm in (0o444, 0o440 | (current.st_mode & 0o004), 0o644 & ~0o020):
        wanted = attrs(st_mode=stat.S_IFREG | (current.st_mode & 0o555) | (perm & 0o222))
        assert (await ops.setattr(ino, wanted, mode, None, CTX)).st_mode == current.st_mode
    await expect_errno(errno.EPERM, ops.setattr(ino, attrs(st_mode=0o666), mode, None, CTX))
    await expect_errno(errno.EPERM, ops.setattr(f.st_ino, attrs(st_mode=0o644), mode, None, CTX))


async def test_read_only_mount_refuses_every_change_with_erofs(
    cluster: ClusterView, nursery: trio.Nursery
) -> None:
    appender = await _upload_appender(cluster)
    async for env in make_env(cluster, nursery, read_only=True):
        ops = env.ops
        g = await walk(ops, "group1")
        a = await walk(ops, str(appender))
        hi, lo = appender.subdirs
        leaf = await walk(ops, f"group1/M00/{hi:02X}/{lo:02X}")
        calls = [
            ops.create(g.st_ino, b"n", 0o644, os.O_WRONLY, CTX),
            ops.open(a.st_ino, os.O_WRONLY, CTX),
            ops.unlink(leaf.st_ino, appender.name.encode(), CTX),
            ops.setattr(a.st_ino, attrs(st_size=0), fields(update_size=True), None, CTX),
            ops.setxattr(a.st_ino, b"user.a", b"1", CTX),
            ops.removexattr(a.st_ino, b"user.a", CTX),
            ops.rename(g.st_ino, b"a", g.st_ino, b"b", 0, CTX),
            ops.mkdir(g.st_ino, b"d", 0o755, CTX),
            ops.symlink(g.st_ino, b"l", b"t", CTX),
        ]
        for call in calls:
            await expect_errno(errno.EROFS, call)
        assert await env.client.download(appender) == b"ro"


async def _upload_appender(cluster: ClusterView) -> FileId:
    async with Client(cluster.trackers) as client:
        return await client.upload(b"ro", ext="log", appender=True, group="group1")


# ---------------------------------------------------------------- failures


@pytest.mark.expect_log_warnings
async def test_a_stopped_storage_fails_fsync_in_time_and_loses_nothing_acknowledged(
    nursery: trio.Nursery, fdfs_cluster_factory: ClusterFactory, tmp_path: object
) -> None:
    cluster = await fdfs_cluster_factory.start_async(groups={"group1": 1})
    (storage,) = cluster.storages
    async for env in make_env(cluster, nursery, timeout=3.0):
        fh, ino, fid = await create(env, "fragile.log")
        await env.ops.write(fh, 0, b"acknowledged\n")
        await env.ops.fsync(fh, False)
        await env.ops.write(fh, 13, b"in flight\n")
        cluster.stop(storage)
        try:
            with trio.fail_after(30):  # generous: the error comes after the 3 s timeout
                await expect_errno(errno.EIO, env.ops.fsync(fh, False))
        finally:
            cluster.cont(storage)
        # Reported once; then the file is usable again, at the size the storage has
        # (the request that timed out may still have been carried out).
        await env.ops.fsync(fh, False)

        # until the tracker lists the storage as active again
        async def answers(env: Env = env, fid: FileId = fid) -> bool:
            return await _answers(env.client, fid)

        with trio.fail_after(30):
            await eventually(answers, interval=0.2)
        data = await env.client.download(fid)
        assert data.startswith(b"acknowledged\n")
        size = (await env.ops.getattr(ino, CTX)).st_size
        await env.ops.write(fh, size, b"after\n")
        await env.ops.release(fh)
        data = await env.client.download(fid)
        assert data.startswith(b"acknowledged\n") and b"after\n" in data


async def _answers(client: Client, fid: FileId) -> bool:
    try:
        await client.info(fid)
    except FdfsError:
        return False
    return True
