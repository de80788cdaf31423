"""A real mount in a subprocess, used by real programs: ls, stat, cat, cmp, sha256sum, dd,
find, tar, grep, getfattr, Python file objects; replica failover; EIO when all replicas are
down; clean unmounts (fusermount, SIGTERM, SIGINT, daemon mode)."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mounthelp import client_run, run, source_node, wait_replicated
from waiting import wait_until

from fdfsmount.mountproc import MountProcess, fuse_available, is_mounted, mounted
from fdfsmount.proto import FileId
from fdfsmount.proto.client import Client
from fdfsmount.status import ask
from harness.cluster import Cluster
from harness.pytest_plugin import ClusterFactory

pytestmark = [
    pytest.mark.processes,
    pytest.mark.mount,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3"),
]

MIB = 1024 * 1024
BIG_SIZE = 256 * MIB
NEEDLE = b"the quick brown fdfs fox"
OPTIONS = ["timeout=5", "attr_timeout=1", "entry_timeout=1"]


@dataclass
class Files:
    text: FileId
    text_data: bytes
    empty: FileId
    appender: FileId
    big: FileId
    big_path: Path
    big_sha256: str
    leaf: list[FileId]  # several files in one leaf directory (group1)


@pytest.fixture(scope="module")
def cluster(fdfs_cluster: Cluster) -> Cluster:
    """The session's shared cluster (group1 with 2 storages, group2 with 1)."""
    if set(fdfs_cluster.groups) < {"group1", "group2"}:
        pytest.skip("needs the default groups group1 and group2")
    return fdfs_cluster


@pytest.fixture(scope="module")
def files(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    big_path = tmp_path_factory.mktemp("data") / "big.bin"
    digest = hashlib.sha256()
    with open(big_path, "wb") as out:
        for _ in range(BIG_SIZE // MIB):
            chunk = os.urandom(MIB)
            digest.update(chunk)
            out.write(chunk)
    text = b"line one\n" + NEEDLE + b"\nline three\n"

    async def upload(client: Client) -> Files:
        leaf = [await client.upload(b"leaf %d\n" % i, ext="txt", group="group1") for i in range(3)]
        # Same leaf directory for all: the builtin storages pick 00/00 for small clusters;
        # keep only those that share the first one's directory.
        leaf = [f for f in leaf if f.subdirs == leaf[0].subdirs]
        return Files(
            text=await client.upload(text, ext="txt", group="group1"),
            text_data=text,
            empty=await client.upload(b"", ext="txt", group="group1"),
            appender=await client.upload(
                b"log start\n",
                ext="log",
                appender=True,
                group="group2",
                meta={"owner": "ops", "kind": "log"},
            ),
            big=await client.upload(big_path, ext="bin", group="group1"),
            big_path=big_path,
            big_sha256=digest.hexdigest(),
            leaf=leaf,
        )

    try:
        yield client_run(cluster, upload)
    finally:
        big_path.unlink(missing_ok=True)  # 256 MiB: not left for pytest's retention


@pytest.fixture(scope="module")
def mnt(cluster: Cluster, files: Files, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mountpoint = tmp_path_factory.mktemp("mount") / "mnt"
    with mounted(cluster.trackers, mountpoint, OPTIONS) as proc:
        yield proc.mountpoint
    assert not is_mounted(mountpoint)


def path_of(mnt: Path, fid: FileId) -> Path:
    return mnt / str(fid)


# ---------------------------------------------------------------- reading with real programs


def test_ls_stat_cat(mnt: Path, files: Files) -> None:
    assert run("ls", mnt).split() == ["group1", "group2"]
    assert run("ls", mnt / "group1").split() == ["M00"]
    assert len(run("ls", mnt / "group1/M00").split()) == 256
    text = path_of(mnt, files.text)
    assert run("stat", "-c", "%s %a %F", text).strip() == f"{len(files.text_data)} 444 regular file"
    assert run("stat", "-c", "%a %F", mnt / "group1/M00").strip() == "755 directory"
    assert run("cat", text).encode() == files.text_data
    assert run("cat", path_of(mnt, files.empty)) == ""
    log = path_of(mnt, files.appender)
    assert run("stat", "-c", "%s %a", log).strip() == "10 644"


def test_ls_recursive_and_find_on_a_leaf(mnt: Path, files: Files) -> None:
    hi, lo = files.leaf[0].subdirs
    leaf = mnt / f"group1/M00/{hi:02X}/{lo:02X}"
    listing = run("ls", "-R", mnt / f"group1/M00/{hi:02X}")
    for fid in files.leaf:
        assert fid.name in listing
    found = set(run("find", leaf, "-type", "f").split())
    assert {str(leaf / f.name) for f in files.leaf} <= found
    assert str(leaf) in run("find", mnt / "group1/M00", "-maxdepth", "2", "-name", f"{lo:02X}",
                            "-path", f"*/{hi:02X}/*")  # fmt: skip


def test_whole_tree_with_sparse_find_ls_tar(cluster: Cluster, files: Files, tmp_path: Path) -> None:
    """With -o sparse only non-empty HH directories are listed, so whole-tree walks are quick."""
    with mounted(cluster.trackers, tmp_path / "mnt", [*OPTIONS, "sparse"]) as proc:
        mnt = proc.mountpoint
        found = set(run("find", mnt, "-type", "f").split())
        for fid in (files.text, files.empty, files.appender, files.big, *files.leaf):
            assert str(path_of(mnt, fid)) in found
        listing = run("ls", "-R", mnt / "group2")
        assert files.appender.name in listing
        archive = tmp_path / "group2.tar"
        run("tar", "cf", archive, "--exclude=*.bin", "-C", mnt, "group2")
        assert str(files.appender) in run("tar", "tf", archive).split()


def test_sha256_and_cmp_of_a_256_mib_file(mnt: Path, files: Files) -> None:
    big = path_of(mnt, files.big)
    assert run("stat", "-c", "%s", big).strip() == str(BIG_SIZE)
    assert run("sha256sum", big).split()[0] == files.big_sha256
    run("cmp", big, files.big_path)


def test_dd_with_skip(mnt: Path, files: Files) -> None:
    out = subprocess.run(
        ["dd", f"if={path_of(mnt, files.big)}", "bs=1M", "skip=100", "count=7", "status=none"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    with open(files.big_path, "rb") as src:
        src.seek(100 * MIB)
        assert out == src.read(7 * MIB)


def test_random_seeks_match_the_source(mnt: Path, files: Files) -> None:
    rng = random.Random(42)
    with open(path_of(mnt, files.big), "rb") as mounted_file, open(files.big_path, "rb") as src:
        for _ in range(200):
            offset = rng.randrange(0, BIG_SIZE + 4096)
            size = rng.choice([1, 100, 4096, 65536, 1 << 20])
            mounted_file.seek(offset)
            src.seek(offset)
            assert mounted_file.read(size) == src.read(size), offset


def test_tar_and_grep(mnt: Path, files: Files, tmp_path: Path) -> None:
    hi, lo = files.leaf[0].subdirs
    rel = f"group1/M00/{hi:02X}/{lo:02X}"
    archive = tmp_path / "leaf.tar"
    run("tar", "cf", archive, "-C", mnt, rel)
    members = run("tar", "tf", archive).split()
    assert {f"{rel}/{f.name}" for f in files.leaf} <= set(members)
    text = path_of(mnt, files.text)
    assert run("grep", "-c", NEEDLE.decode(), text).strip() == "1"
    assert str(text) in run("grep", "-rl", NEEDLE.decode(), text.parent)


def test_getfattr_and_os_getxattr(mnt: Path, files: Files) -> None:
    log = path_of(mnt, files.appender)
    dump = run("getfattr", "-d", "--absolute-names", log)
    assert 'user.owner="ops"' in dump and 'user.kind="log"' in dump
    assert "user.fdfs." not in dump  # facts are read by name, not copied by tools
    named = run("getfattr", "-n", "user.fdfs.type", "--absolute-names", log)
    assert 'user.fdfs.type="appender"' in named
    assert os.getxattr(log, "user.fdfs.file_id") == str(files.appender).encode()
    assert os.getxattr(path_of(mnt, files.text), "user.fdfs.type") == b"normal"
    assert re.fullmatch(rb"[0-9a-f]{8}", os.getxattr(path_of(mnt, files.text), "user.fdfs.crc32"))
    with pytest.raises(OSError) as info:
        os.getxattr(log, "user.nothing")
    assert info.value.errno == errno.ENODATA
    assert set(os.listxattr(log)) == {"user.owner", "user.kind"}


def test_appender_growth_visible_on_reopen(cluster: Cluster, mnt: Path, files: Files) -> None:
    log = path_of(mnt, files.appender)
    assert log.read_bytes() == b"log start\n"
    client_run(cluster, lambda c: c.append(files.appender, b"more\n"))
    assert log.read_bytes() == b"log start\nmore\n"
    assert log.stat().st_size == 15


def test_unlisted_ids_and_errors(mnt: Path, files: Files) -> None:
    missing = mnt / "group1/M00/00/00/definitely-not-a-file-id"
    assert not missing.exists()
    with pytest.raises(FileNotFoundError):
        (mnt / "nogroup").stat()
    with pytest.raises(PermissionError), open(path_of(mnt, files.text), "ab"):
        pass
    with pytest.raises(OSError) as info:
        (mnt / "group1/newdir").mkdir()
    assert info.value.errno in (errno.EPERM, errno.EACCES)


def test_statfs_reports_cluster_space(mnt: Path) -> None:
    st = os.statvfs(mnt)
    assert st.f_bsize == 4096 and st.f_blocks > 0 and st.f_bavail <= st.f_blocks


def test_debug_traces_every_request(cluster: Cluster, files: Files, tmp_path: Path) -> None:
    with mounted(cluster.trackers, tmp_path / "mnt", [*OPTIONS, "debug"]) as proc:
        assert path_of(proc.mountpoint, files.text).read_bytes() == files.text_data
        # The small text file went to the page cache at open; an appender file's
        # reads reach the daemon.
        path_of(proc.mountpoint, files.appender).read_bytes()
        # The kernel sends release after close returns, on its own time; an unmount
        # right after the close can overtake it.
        wait_until(lambda: proc.log().count(" DEBUG fdfsmount.fs: release ") >= 2,
                   what="the releases")  # fmt: skip
    log = proc.log()
    # Every FUSE request on its way in, and every server request on its way out.
    for op in ("lookup", "getattr", "open", "read", "release"):
        assert re.search(rf" DEBUG fdfsmount\.fs: {op} ", log), (op, log)
    assert re.search(rf" DEBUG fdfsmount\.proto\.\w+: download_file {files.text}\b", log), log
    assert "Traceback" not in log


# ---------------------------------------------------------------- replicas going away


def test_reads_survive_one_stopped_replica(
    tmp_path: Path, fdfs_cluster_factory: ClusterFactory
) -> None:
    data = random.Random(9).randbytes(24 * MIB + 5)
    src = tmp_path / "data.bin"
    src.write_bytes(data)
    cluster = fdfs_cluster_factory(groups={"group1": 2})
    fids = client_run(cluster, lambda c: _upload_many(c, [data, data[: 3 * MIB], b"small file\n"]))
    for fid in fids:
        wait_replicated(cluster, fid, len(data) if fid == fids[0] else 1)
    with mounted(cluster.trackers, tmp_path / "mnt", OPTIONS) as proc:
        source = source_node(cluster, fids[0])
        cluster.stop(source)
        try:
            run("cmp", path_of(proc.mountpoint, fids[0]), src, timeout=120)
            assert path_of(proc.mountpoint, fids[1]).read_bytes() == data[: 3 * MIB]
            assert path_of(proc.mountpoint, fids[2]).read_bytes() == b"small file\n"
        finally:
            cluster.cont(source)


def test_small_files_cost_one_download_each_and_ro_mounts_stop_flushes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Through the kernel: a cold small file is one DOWNLOAD_FILE and no QUERY_FILE_INFO
    (its lookup fetched it), and on an ``-o ro`` mount the kernel sends one flush in all
    (answered ENOSYS), however many files are closed."""
    blobs = [os.urandom(3000 + i) for i in range(4)]
    fids = client_run(cluster, lambda c: _upload_many(c, blobs))
    with mounted(cluster.trackers, tmp_path / "mnt", ["timeout=10", "ro"]) as proc:
        for _ in range(2):
            for fid, blob in zip(fids, blobs, strict=True):
                assert path_of(proc.mountpoint, fid).read_bytes() == blob
        snap = ask(os.fspath(proc.mountpoint))
    client = snap["client"]["requests"]
    assert client.get("download_file", 0) == len(fids)
    assert client.get("query_file_info", 0) == 0
    fuse = snap["fuse"]
    assert fuse["requests"].get("flush", 0) == 1
    assert fuse["errors"].get("flush") == {"ENOSYS": 1}


async def _upload_many(client: Client, blobs: list[bytes]) -> list[FileId]:
    return [await client.upload(b, ext="bin", group="group1") for b in blobs]


def test_eio_within_the_timeout_when_every_replica_is_stopped(
    tmp_path: Path, fdfs_cluster_factory: ClusterFactory
) -> None:
    cluster = fdfs_cluster_factory(groups={"group1": 2})
    # Bigger than what a lookup fetches whole: the read itself goes to the storages.
    content = b"unreachable" * 7000
    (fid,) = client_run(cluster, lambda c: _upload_many(c, [content]))
    wait_replicated(cluster, fid, len(content))
    with mounted(cluster.trackers, tmp_path / "mnt", ["timeout=3"]) as proc:
        target = path_of(proc.mountpoint, fid)
        assert target.stat().st_size == len(content)
        nodes = cluster.storages_of("group1")
        for node in nodes:
            cluster.stop(node)
        try:
            # EIO after the timeout (3 s); the kernel's one retry fails at once.
            with pytest.raises(OSError) as info:
                target.read_bytes()
            assert info.value.errno == errno.EIO
        finally:
            for node in nodes:
                cluster.cont(node)
        # One line names the operation, the file ID and a server that did not answer.
        failed = [line for line in proc.log().splitlines() if f"read {fid} failed" in line]
        assert failed and any(f"{n.host}:{n.port}" in failed[0] for n in nodes), proc.log()
        # The mount is usable again once the storages are (after a short back-off).
        def reads_again() -> bool:
            try:
                return target.read_bytes() == content
            except OSError:
                return False

        wait_until(reads_again, timeout=20, interval=0.5, what="the mount to read again")


# ---------------------------------------------------------------- lifecycle


def test_fixture_unmounts_even_when_the_body_fails(cluster: Cluster, tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    holder: list[MountProcess] = []
    with (
        pytest.raises(RuntimeError, match="boom"),
        mounted(cluster.trackers, mountpoint, OPTIONS) as proc,
    ):
        holder.append(proc)
        assert is_mounted(mountpoint)
        raise RuntimeError("boom")
    assert not is_mounted(mountpoint)
    assert holder[0].process.poll() is not None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly(cluster: Cluster, tmp_path: Path, sig: signal.Signals) -> None:
    mountpoint = tmp_path / "mnt"
    with mounted(cluster.trackers, mountpoint, OPTIONS) as proc:
        os.kill(proc.pid, sig)
        assert proc.process.wait(30) == 0
        assert not is_mounted(mountpoint)
        assert "unmounted" in proc.log()


def test_daemon_mode_returns_once_mounted(cluster: Cluster, tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    log = tmp_path / "daemon.log"
    cmd = [sys.executable, "-m", "fdfsmount", ",".join(cluster.trackers), str(mountpoint),
           "-o", f"logfile={log},timeout=5"]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        # Returned, so the mount is live now, not later.
        assert is_mounted(mountpoint)
        assert (mountpoint / "group1").is_dir()
        pid = int(re.search(rb" (\d+) INFO fdfsmount.mount: mounted", log.read_bytes())[1])  # type: ignore[index]
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not is_mounted(mountpoint), what="SIGTERM to unmount")
    finally:
        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def test_demo_mounts_samples_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    mountpoint = tmp_path / "demo" / "mnt"
    demo = subprocess.Popen(
        [sys.executable, "-m", "fdfsmount.demo", "--mountpoint", str(mountpoint)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        shown = ""
        deadline = time.monotonic() + 90
        while "Press Ctrl-C" not in shown:
            line = demo.stdout.readline().decode()
            assert line and time.monotonic() < deadline, shown
            shown += line
        tracker = re.search(r"tracker (\S+:\d+)", shown)[1]  # type: ignore[index]
        text_id = re.search(r"text +(\S+)", shown)[1]  # type: ignore[index]
        log_id = re.search(r"appender +(\S+)", shown)[1]  # type: ignore[index]
        assert {"group1", "group2"} <= set(os.listdir(mountpoint))
        assert (mountpoint / text_id).read_bytes().startswith(b"Hello from FastDFS!")
        assert os.getxattr(mountpoint / log_id, "user.owner") == b"demo"
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
        assert not is_mounted(mountpoint)
        host, port = tracker.rsplit(":", 1)
        with pytest.raises(OSError):  # the cluster is stopped too
            socket.create_connection((host, int(port)), timeout=2).close()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGTERM)
            demo.wait(60)
        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def test_one_line_errors(tmp_path: Path, cluster: Cluster) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()

    def fdfsmount(*args: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "fdfsmount", *args], capture_output=True, timeout=60
        )
        return done.returncode, done.stderr.decode()

    tracker = cluster.trackers[0]
    unreachable = tracker.rsplit(":", 1)[0] + ":1"
    cases = {
        ("not-a-tracker", str(mountpoint)): "bad SOURCE",
        (tracker, str(tmp_path / "missing")): "does not exist",
        (tracker, str(mountpoint), "-o", "nonsense"): "unknown mount option",
        (unreachable, str(mountpoint), "-o", "timeout=3"): "cannot reach the FastDFS cluster",
    }
    for args, message in cases.items():
        code, err = fdfsmount(*args)
        assert code == 1 and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with mounted(cluster.trackers, mountpoint, OPTIONS):
        code, err = fdfsmount(tracker, str(mountpoint))
        assert code == 1 and "busy" in err
    assert not is_mounted(mountpoint)


INNER_TEST = """
from harness.cluster import Cluster
from fdfsmount.mountproc import mounted

def test_fails_while_mounted(tmp_path):
    with Cluster(groups={"group1": 1}) as cluster:
        with mounted(cluster.trackers, MOUNTPOINT, ["timeout=5"]) as proc:
            (tmp_path / "pid").write_text(str(proc.pid))
            assert (MOUNTPOINT / "group1").is_dir()
            assert False, "a failing test body"
"""


def test_no_mount_is_left_after_a_failed_test(tmp_path: Path) -> None:
    """A whole pytest run whose mounted test fails leaves no mount and no daemon behind."""
    mountpoint = tmp_path / "inner-mnt"
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(
        f"from pathlib import Path\nMOUNTPOINT = Path({str(mountpoint)!r})\n" + INNER_TEST
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file),
         "--basetemp", str(tmp_path / "inner")],
        capture_output=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout.decode()
    assert b"a failing test body" in done.stdout
    assert not is_mounted(mountpoint)
    with open("/proc/mounts") as mounts:
        assert str(mountpoint) not in mounts.read()
    pid = int((tmp_path / "inner/test_fails_while_mounted0/pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
