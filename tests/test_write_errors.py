"""How failures reach applications: one errno and one log line per failed call, whatever
shape the failure had inside (several parts failing together), and EIO rather than ENOENT
for a file that is open for writing here when a storage says it does not have it."""

from __future__ import annotations

import errno
import logging
import os

import pyfuse3
import pytest
import trio
from opshelp import CTX, Env, expect_errno, make_env, walk
from waiting import eventually

from fdfsmount.fs import errno_for
from fdfsmount.proto import FileNotFound, Timeout, decode_file_id
from fdfsmount.proto.errors import ServerError
from fdfsmount.writeback import WriteBackFailed
from harness.pytest_plugin import ClusterFactory


def test_failures_of_several_parts_are_one_errno() -> None:
    timeouts = ExceptionGroup(
        "blocks",
        [Timeout("download_file f on storage 127.0.0.5:23000: no answer within 2s")] * 2,
    )
    assert errno_for(timeouts) == errno.EIO
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [ServerError(errno.ENOSPC)])])
    assert errno_for(nested) == errno.ENOSPC
    assert errno_for(ExceptionGroup("mixed", [Timeout("t"), ValueError("bug")])) is None
    assert errno_for(ServerError(errno.EAGAIN, "download_file f")) == errno.EIO
    assert errno_for(WriteBackFailed.of(FileNotFound("append_file f"), "f")) == errno.EIO  # type: ignore[arg-type]


@pytest.mark.expect_log_warnings
async def test_a_read_whose_blocks_fail_together_logs_one_line(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    fid = await env.client.upload(b"x" * 1000, ext="bin", group="group1")
    ino = (await walk(env.ops, str(fid))).st_ino
    fi = await env.ops.open(ino, os.O_RDONLY, CTX)
    failures = ExceptionGroup(
        "blocks",
        [
            Timeout(f"download_file {fid} on storage 127.0.0.5:23000: no answer within 2s"),
            Timeout(f"download_file {fid} on storage 127.0.0.6:23000: no answer within 2s"),
        ],
    )
    with caplog.at_level(logging.INFO, logger="fdfsmount"):
        error = env.ops.fuse_error("read", (fi.fh, 0, 4096), failures)
    await env.ops.release(fi.fh)
    assert error.errno == errno.EIO
    records = [r for r in caplog.records if r.name.startswith("fdfsmount.fs")]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert str(fid) in record.getMessage() and "127.0.0.5:23000" in record.getMessage()
    assert "\n" not in record.getMessage()


@pytest.mark.expect_log_warnings
async def test_a_file_deleted_under_a_writer_is_eio_not_enoent(env: Env) -> None:
    fid = await env.client.upload(b"start|", ext="log", appender=True, group="group1")
    ino = (await walk(env.ops, str(fid))).st_ino
    fi = await env.ops.open(ino, os.O_WRONLY, CTX)
    await env.ops.write(fi.fh, 6, b"more")
    await env.ops.fsync(fi.fh, False)
    await env.client.delete(fid)  # elsewhere: the storage no longer has it
    await env.ops.write(fi.fh, 10, b"lost")
    await expect_errno(errno.EIO, env.ops.fsync(fi.fh, False))
    # The size is asked again before the next change: the storage does not have it.
    await expect_errno(errno.EIO, env.ops.write(fi.fh, 10, b"again"))
    await env.ops.release(fi.fh)


@pytest.mark.expect_log_warnings
async def test_a_name_outlives_a_lookup_while_its_source_is_down(
    nursery: trio.Nursery, fdfs_cluster_factory: ClusterFactory
) -> None:
    """While the source of a file not yet replicated is down, the tracker says no storage
    of the group holds it (ENOENT): that is not "deleted elsewhere", and the name stays."""
    cluster = await fdfs_cluster_factory.start_async(groups={"group1": 2})
    async for env in make_env(cluster, nursery, timeout=3.0):
        group = await walk(env.ops, "group1")
        fi, _ = await env.ops.create(group.st_ino, b"kept.log", 0o644, os.O_WRONLY, CTX)
        fid = env.parts.table.alias_target("group1", "kept.log")
        assert fid is not None
        source = next(n for n in cluster.storages if decode_file_id(fid).source in
                      (n.storage_id, n.host))  # fmt: skip
        cluster.kill(source)  # before the other storage has the file
        await env.ops.release(fi.fh)
        env.ops.stats.invalidate(fid)
        try:
            try:  # (found when the other storage got the file first)
                await env.ops.lookup(group.st_ino, b"kept.log", CTX)
            except pyfuse3.FUSEError as failed:
                assert failed.errno in (errno.ENOENT, errno.EIO)
        finally:
            await trio.to_thread.run_sync(cluster.restart, source)
        assert env.parts.table.alias_target("group1", "kept.log") == fid

        async def found(ops: pyfuse3.Operations = env.ops, inode: int = group.st_ino) -> bool:
            try:
                await ops.lookup(inode, b"kept.log", CTX)
            except pyfuse3.FUSEError:
                return False
            return True

        await eventually(found, interval=0.2, what="the file back with its source")
