"""Writing through a real mount with real programs: echo >>, cp, dd conv=notrunc, truncate,
rm, mv, setfattr/getfattr and os.setxattr -- each checked through the client on the source
storage and, once replicated, on the other storage of the group; a property test against a
local reference file (also after a remount); a storage stopped under a writer; SIGTERM with
unflushed writes; read-only mounts."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mounthelp import check_everywhere, client_run, content_on, run, source_node

from fdfsmount.mountproc import MountProcess, fuse_available, is_mounted, mounted
from fdfsmount.proto import FileId, parse_file_id
from fdfsmount.proto.fileid import slave_remote_name
from harness.cluster import Cluster
from harness.pytest_plugin import ClusterFactory

pytestmark = [
    pytest.mark.processes,
    pytest.mark.mount,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3"),
]

MIB = 1024 * 1024
OPTIONS = ["timeout=5", "attr_timeout=1", "entry_timeout=1"]


@pytest.fixture(scope="module")
def cluster(fdfs_cluster: Cluster) -> Cluster:
    """The session's shared cluster: group1 has two storages, so replicas can be checked."""
    if len(fdfs_cluster.storages_of("group1")) < 2:
        pytest.skip("needs group1 with two storages")
    return fdfs_cluster


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def mount(
    cluster: Cluster, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MountProcess]:
    mountpoint = tmp_path_factory.mktemp("wmount") / "mnt"
    with mounted(cluster.trackers, mountpoint, [*OPTIONS, f"cache_dir={cache_dir}"]) as proc:
        yield proc
    assert not is_mounted(mountpoint)


@pytest.fixture
def mnt(mount: MountProcess) -> Path:
    return mount.mountpoint


def sh(script: str) -> str:
    return run("sh", "-c", script)


def file_id_of(path: Path) -> FileId:
    """The file ID behind a path, as getfattr shows it."""
    value = run("getfattr", "--only-values", "-n", "user.fdfs.file_id", path)
    assert os.getxattr(path, "user.fdfs.file_id").decode() == value
    return parse_file_id(value)


# ---------------------------------------------------------------- programs


def test_echo_creates_and_appends(cluster: Cluster, mnt: Path) -> None:
    log = mnt / "group1/echo.log"
    sh(f"echo one > {log}")
    sh(f"echo two >> {log}; echo three >> {log}")
    assert log.read_bytes() == b"one\ntwo\nthree\n"
    fid = file_id_of(log)
    assert run("stat", "-c", "%s %a", log).split() == ["14", "644"]
    assert "echo.log" in run("ls", mnt / "group1").split()
    check_everywhere(cluster, fid, b"one\ntwo\nthree\n")
    # The file-ID path is the same file.
    sh(f"echo four >> {mnt / str(fid)}")
    check_everywhere(cluster, fid, b"one\ntwo\nthree\nfour\n")


def test_echo_appends_to_an_appender_made_elsewhere(cluster: Cluster, mnt: Path) -> None:
    fid = client_run(
        cluster, lambda c: c.upload(b"by the client\n", ext="log", appender=True, group="group1")
    )
    sh(f"echo appended >> {mnt / str(fid)}")
    check_everywhere(cluster, fid, b"by the client\nappended\n")


def test_cp_into_a_group(cluster: Cluster, mnt: Path, tmp_path: Path) -> None:
    data = os.urandom(5 * MIB + 123)
    src = tmp_path / "photo.jpg"
    src.write_bytes(data)
    run("cp", src, mnt / "group1/")
    copy = mnt / "group1/photo.jpg"
    run("cmp", src, copy)
    fid = file_id_of(copy)
    assert fid.remote_name.endswith(".jpg")
    check_everywhere(cluster, fid, data)


def test_dd_conv_notrunc_seek_modifies_in_place(cluster: Cluster, mnt: Path) -> None:
    target = mnt / "group1/dd.bin"
    sh(f"printf 0123456789 > {target}")
    sh(f"printf AB | dd of={target} bs=1 seek=3 conv=notrunc status=none")
    sh(f"printf XYZ | dd of={target} bs=1 seek=8 conv=notrunc status=none")  # across the end
    sh(f"printf Q | dd of={target} bs=1 seek=15 conv=notrunc status=none")  # past the end
    expected = b"012AB567XYZ" + bytes(4) + b"Q"
    assert target.read_bytes() == expected
    check_everywhere(cluster, file_id_of(target), expected)


def test_truncate_shrinks_and_grows(cluster: Cluster, mnt: Path) -> None:
    target = mnt / "group1/sized.txt"
    sh(f"printf 'some text here' > {target}")
    run("truncate", "-s", "4", target)
    fid = file_id_of(target)
    check_everywhere(cluster, fid, b"some")
    run("truncate", "-s", "10", target)
    assert target.stat().st_size == 10
    check_everywhere(cluster, fid, b"some" + bytes(6))
    sh(f"printf new > {target}")  # O_TRUNC
    check_everywhere(cluster, fid, b"new")


def test_rm_deletes_everywhere(cluster: Cluster, mnt: Path) -> None:
    target = mnt / "group1/doomed.txt"
    sh(f"echo bye > {target}")
    fid = file_id_of(target)
    check_everywhere(cluster, fid, b"bye\n")
    run("rm", target)
    assert "doomed.txt" not in run("ls", mnt / "group1").split()
    check_everywhere(cluster, fid, None)
    other = client_run(cluster, lambda c: c.upload(b"by id", ext="txt", group="group1"))
    check_everywhere(cluster, other, b"by id")
    run("rm", mnt / str(other))
    check_everywhere(cluster, other, None)
    with pytest.raises(subprocess.CalledProcessError):
        run("rm", mnt / str(other))


def test_mv_renames_an_alias(cluster: Cluster, mnt: Path, mount: MountProcess) -> None:
    old, new = mnt / "group1/before.log", mnt / "group1/after.log"
    sh(f"echo kept > {old}")
    fid = file_id_of(old)
    requests_before = mount.log().count("renamed")
    run("mv", old, new)
    names = run("ls", mnt / "group1").split()
    assert "after.log" in names and "before.log" not in names
    assert file_id_of(new) == fid
    assert mount.log().count("renamed") == requests_before + 1
    check_everywhere(cluster, fid, b"kept\n")  # the file itself is untouched
    with pytest.raises(subprocess.CalledProcessError) as info:
        run("mv", mnt / str(fid), mnt / "group1/from-id.log")
    assert b"not permitted" in info.value.stderr


def test_setfattr_and_os_setxattr_edit_metadata(cluster: Cluster, mnt: Path) -> None:
    target = mnt / "group1/meta.txt"
    sh(f"echo meta > {target}")
    fid = file_id_of(target)
    run("setfattr", "-n", "user.owner", "-v", "ops", target)
    os.setxattr(target, "user.kind", b"log")
    dump = run("getfattr", "-d", "--absolute-names", target)
    assert 'user.owner="ops"' in dump and 'user.kind="log"' in dump
    check_everywhere(cluster, fid, b"meta\n", {"owner": "ops", "kind": "log"})
    run("setfattr", "-x", "user.owner", target)
    assert os.listxattr(target).count("user.owner") == 0
    check_everywhere(cluster, fid, b"meta\n", {"kind": "log"})
    with pytest.raises(OSError) as info:
        os.setxattr(target, "user.fdfs.type", b"normal")
    assert info.value.errno == errno.ENOTSUP
    with pytest.raises(OSError) as info:
        os.setxattr(target, "trusted.x", b"1")
    assert info.value.errno in (errno.ENOTSUP, errno.EPERM)  # the kernel may refuse trusted.*


def test_cp_to_a_slave_name_uploads_a_slave(cluster: Cluster, mnt: Path, tmp_path: Path) -> None:
    master = client_run(cluster, lambda c: c.upload(b"master image", ext="jpg", group="group1"))
    slave = parse_file_id(f"group1/{slave_remote_name(master.remote_name, '_150x150', 'jpg')}")
    thumb = tmp_path / "thumb.jpg"
    thumb.write_bytes(b"a thumbnail")
    run("cp", thumb, mnt / str(slave))
    assert (mnt / str(slave)).read_bytes() == b"a thumbnail"
    assert run("stat", "-c", "%a", mnt / str(slave)).strip() == "444"
    check_everywhere(cluster, slave, b"a thumbnail")
    with pytest.raises(subprocess.CalledProcessError):
        run("cp", thumb, mnt / str(master.group) / master.remote_name[:10] / "plain.jpg")


def test_refusals_with_real_programs(mnt: Path, cluster: Cluster) -> None:
    normal = client_run(cluster, lambda c: c.upload(b"fixed", ext="txt", group="group1"))
    for script in (
        f"echo x >> {mnt / str(normal)}",
        f"mkdir {mnt}/group1/dir",
        f"ln -s x {mnt}/group1/link",
        f"chmod 600 {mnt / str(normal)}",
        f"touch {mnt}/newfile",
    ):
        done = subprocess.run(["sh", "-c", script], capture_output=True, timeout=60)
        assert done.returncode != 0 and b"not permitted" in done.stderr, script


def test_read_only_mount(cluster: Cluster, tmp_path: Path) -> None:
    with mounted(cluster.trackers, tmp_path / "mnt", [*OPTIONS, "ro"]) as proc:
        done = subprocess.run(
            ["sh", "-c", f"echo x > {proc.mountpoint}/group1/new.txt"], capture_output=True
        )
        assert done.returncode != 0 and b"Read-only file system" in done.stderr


# ---------------------------------------------------------------- random writes vs a reference

Op = tuple[str, int, bytes]
_data = st.binary(min_size=1, max_size=300)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("eof"), st.just(0), _data),
        st.tuples(st.just("inside"), st.integers(0, 10_000), _data),
        st.tuples(st.just("past"), st.sampled_from([1, 100, 5000, 2 * MIB]), _data),
        st.tuples(st.just("truncate"), st.integers(0, 3000), st.just(b"")),
        st.tuples(st.just("fsync"), st.just(0), st.just(b"")),
    ),
    min_size=1,
    max_size=12,
)


class Reference:
    """What a plain local file would hold."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, offset: int, data: bytes) -> None:
        if offset > len(self.data):
            self.data.extend(bytes(offset - len(self.data)))
        self.data[offset : offset + len(data)] = data

    def truncate(self, size: int) -> None:
        del self.data[size:]
        self.data.extend(bytes(size - len(self.data)))


def _whole(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size + 1, 0)


def test_random_writes_match_a_local_file_and_survive_a_remount(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = tmp_path_factory.mktemp("prop-cache")
    mountpoint = tmp_path_factory.mktemp("prop") / "mnt"
    options = [*OPTIONS, f"cache_dir={cache}"]
    written: dict[str, bytes] = {}

    with mounted(cluster.trackers, mountpoint, options):

        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(ops=_ops)
        def apply(ops: list[Op]) -> None:
            name = f"prop-{len(written)}.bin"
            path = mountpoint / "group1" / name
            ref = Reference()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                fid = parse_file_id(os.getxattr(path, "user.fdfs.file_id").decode())
                for kind, arg, data in [*ops, ("fsync", 0, b"")]:
                    size = len(ref.data)
                    if kind == "eof":
                        offset = size
                    elif kind == "inside":
                        offset = arg % size if size else 0
                    elif kind == "past":
                        offset = size + arg
                    if kind in ("eof", "inside", "past"):
                        assert os.pwrite(fd, data, offset) == len(data)
                        ref.write(offset, data)
                    elif kind == "truncate":
                        os.ftruncate(fd, arg)
                        ref.truncate(arg)
                    else:
                        os.fsync(fd)
                        assert _whole(fd) == ref.data
                        # Acknowledged by the source storage: read it there.
                        on_source = client_run(
                            cluster,
                            lambda c: content_on(c, source_node(cluster, fid), fid),
                        )
                        assert on_source == bytes(ref.data)
            finally:
                os.close(fd)
            written[name] = bytes(ref.data)

        apply()

    assert written
    with mounted(cluster.trackers, mountpoint, options):
        for name, data in written.items():
            assert (mountpoint / "group1" / name).read_bytes() == data, name


# ---------------------------------------------------------------- failures and shutdown

WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.write(fd, b"acknowledged\n")
os.fsync(fd)
print("synced", flush=True)
sys.stdin.readline()
os.write(fd, b"unacknowledged\n")
for step in ("fsync", "close"):
    try:
        os.fsync(fd) if step == "fsync" else os.close(fd)
        print(step, "ok", flush=True)
    except OSError as exc:
        print(step, exc.errno, flush=True)
"""


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the writer did not answer"
    return proc.stdout.readline().decode().strip()


def test_a_stopped_storage_fails_the_writer_and_keeps_what_was_acknowledged(
    tmp_path: Path, fdfs_cluster_factory: ClusterFactory
) -> None:
    cluster = fdfs_cluster_factory(groups={"group1": 1})
    (storage,) = cluster.storages
    with mounted(cluster.trackers, tmp_path / "mnt", ["timeout=3", f"cache_dir={tmp_path}"]) as m:
        path = m.mountpoint / "group1/fragile.log"
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert _read_line(writer, 60) == "synced"
            fid = file_id_of(path)
            cluster.stop(storage)
            try:
                assert writer.stdin is not None
                writer.stdin.write(b"go\n")
                writer.stdin.flush()
                # Bounded: the mount gives up after its timeout (3 s); 60 s only guards a hang.
                results = [_read_line(writer, 60), _read_line(writer, 60)]
            finally:
                cluster.cont(storage)
            assert writer.wait(60) == 0
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        assert f"fsync {errno.EIO}" in results or f"close {errno.EIO}" in results, results
        data = client_run(cluster, lambda c: content_on(c, storage, fid))
        assert data is not None and data.startswith(b"acknowledged\n")
        assert "write-back of" in m.log()


def test_sigterm_stores_unflushed_writes_before_unmounting(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Idle write-back far away: only the shutdown can send these bytes.
    options = [*OPTIONS, f"cache_dir={tmp_path}", "write_idle=1h"]
    with mounted(cluster.trackers, tmp_path / "mnt", options) as proc:
        path = proc.mountpoint / "group1/at-exit.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fid = parse_file_id(os.getxattr(path, "user.fdfs.file_id").decode())
            os.write(fd, b"never fsynced\n")
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.process.wait(60) == 0
        finally:
            with contextlib.suppress(OSError):  # the mount is gone
                os.close(fd)
        assert "storing pending writes of 1 files" in proc.log()
    check_everywhere(cluster, fid, b"never fsynced\n")
