"""Control of a running mount: ``fdfsmount ctl MNT refresh [GROUP]`` and ``drop-caches``, only
for root and the user who mounted (another uid is refused, by the socket's mode and by
SO_PEERCRED); SIGHUP reopens the log and refreshes instead of unmounting; ``status`` into a
closed pipe prints no traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mounthelp import upload_bytes
from waiting import wait_until

from fdfsmount import mount_cli
from fdfsmount.mountproc import MountProcess, fuse_available, is_mounted, mounted
from fdfsmount.proto import FileId
from fdfsmount.status import locate
from harness.cluster import Cluster

pytestmark = [
    pytest.mark.processes,
    pytest.mark.mount,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3"),
]

NOBODY = 65534


def fdfsmount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fdfsmount", *args], capture_output=True, text=True, timeout=120
    )


def run_as(uid: int, argv: list[str]) -> tuple[int, str, str]:
    """`fdfsmount ARGV` in a forked child that has become `uid` (the interpreter lives under
    /root, out of another user's reach, so the child runs the already imported code)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd, name in ((1, "stdout"), (2, "stderr")):
                raw = os.fdopen(fd, "wb", buffering=0, closefd=False)
                setattr(sys, name, io.TextIOWrapper(raw, write_through=True))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            code = mount_cli.main(argv)
        except BaseException as exc:
            os.write(2, f"child failed: {exc!r}\n".encode())
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stdout, stderr


def status(mountpoint: Path) -> dict[str, object]:
    done = fdfsmount("status", os.fspath(mountpoint), "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def counters(mountpoint: Path) -> dict[str, int]:
    result = status(mountpoint)["counters"]
    assert isinstance(result, dict)
    return result


def unlisted_upload(cluster: Cluster, mnt: Path) -> tuple[FileId, Path]:
    """A file uploaded behind the mount's back, after its listing of that directory."""
    for _ in range(3):
        late = upload_bytes(cluster, b"uploaded after the listing")
        hi, lo = late.subdirs
        leaf = mnt / late.group / f"M{late.store_path_index:02X}" / f"{hi:02X}" / f"{lo:02X}"
        if late.name not in os.listdir(leaf):  # a listing pass that started before it
            return late, leaf
    raise AssertionError("every upload was listed at once: is list_ttl ignored?")


@contextlib.contextmanager
def mount(cluster: Cluster, tmp_path: Path, *options: str) -> Iterator[MountProcess]:
    opts = ["timeout=10", f"cache_dir={tmp_path / 'cache'}", *options]
    with mounted(cluster.trackers, tmp_path / "mnt", opts) as proc:
        yield proc


def test_refresh_and_drop_caches(fdfs_cluster: Cluster, tmp_path: Path) -> None:
    # Listings are kept an hour: only a refresh shows a file uploaded behind the mount's back.
    with mount(fdfs_cluster, tmp_path, "list_ttl=1h") as proc:
        mnt = proc.mountpoint
        fid = upload_bytes(fdfs_cluster, os.urandom(300_000))
        late, late_leaf = unlisted_upload(fdfs_cluster, mnt)
        done = fdfsmount("ctl", os.fspath(mnt), "refresh", "group1")
        assert done.returncode == 0, done.stderr
        assert "group1" in done.stdout and "files" in done.stdout
        assert late.name in os.listdir(late_leaf)

        done = fdfsmount("ctl", os.fspath(mnt), "refresh")  # every group
        assert done.returncode == 0 and "group2" in done.stdout, done.stderr
        done = fdfsmount("ctl", os.fspath(mnt), "refresh", "nosuchgroup")
        assert done.returncode == 1 and "no group nosuchgroup" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1

        # drop-caches: what was read is cached, then not.
        with open(mnt / str(fid), "rb") as f:
            assert len(f.read()) == 300_000
        assert counters(mnt)["cache_bytes"] > 0
        done = fdfsmount("ctl", os.fspath(mnt), "drop-caches")
        assert done.returncode == 0 and "dropped" in done.stdout, done.stderr
        assert counters(mnt)["cache_bytes"] == 0
        assert is_mounted(mnt)


def test_another_user_is_refused(fdfs_cluster: Cluster, tmp_path: Path) -> None:
    """Not root, not the mounting user: the socket's mode keeps it out; made reachable,
    the daemon still refuses the action from SO_PEERCRED (but answers status)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    tmp_path.chmod(0o755)  # the other user resolves the mount point
    with mount(fdfs_cluster, tmp_path) as proc:
        mnt = os.fspath(proc.mountpoint)
        code, out, err = run_as(NOBODY, ["ctl", mnt, "drop-caches"])
        assert code == 1 and out == "", err
        assert "permission denied" in err and "uid 0" in err and f"uid {NOBODY}" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        # Second line of defence: the daemon checks who is asking.
        _entry, state = locate(mnt)
        socket_path = Path(str(state["socket"]))
        assert socket_path.stat().st_mode & 0o777 == 0o600
        socket_path.chmod(0o666)
        try:
            code, out, err = run_as(NOBODY, ["ctl", mnt, "refresh"])
            assert code == 1 and out == "", err
            assert "only root and the user who mounted it (uid 0)" in err, err
            assert f"you are uid {NOBODY}" in err
            code, out, err = run_as(NOBODY, ["status", mnt])
            assert code == 0 and f"pid {proc.pid}" in out, err
        finally:
            socket_path.chmod(0o600)
        # Root (the mounting user here) may.
        code, out, err = run_as(0, ["ctl", mnt, "drop-caches"])
        assert code == 0 and "dropped" in out, err
        log = proc.log()
        assert f"refused refresh from uid {NOBODY}" in log


@pytest.mark.expect_log_warnings
def test_sighup_reopens_the_log_and_refreshes_instead_of_unmounting(
    fdfs_cluster: Cluster, tmp_path: Path
) -> None:
    log_file = tmp_path / "fdfsmount.log"
    with mount(fdfs_cluster, tmp_path, "list_ttl=1h", f"log_file={log_file}") as proc:
        mnt = proc.mountpoint
        late, leaf = unlisted_upload(fdfs_cluster, mnt)
        rotated = log_file.with_suffix(".log.1")
        log_file.rename(rotated)  # as logrotate does
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(
            lambda: log_file.exists() and "SIGHUP" in log_file.read_text(), what="a new log"
        )
        wait_until(lambda: late.name in os.listdir(leaf), what="the listing refresh")
        assert is_mounted(mnt) and proc.process.poll() is None
        assert "mounted" in rotated.read_text()


def test_status_into_a_closed_pipe_is_quiet(fdfs_cluster: Cluster, tmp_path: Path) -> None:
    """`fdfsmount status MNT | head -c 10` when head is gone before status writes."""
    with mount(fdfs_cluster, tmp_path) as proc:
        for extra in ([], ["--json"]):
            read_end, write_end = os.pipe()
            os.close(read_end)  # the reader is gone: every write gets EPIPE
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "fdfsmount", "status", os.fspath(proc.mountpoint),
                     *extra],
                    stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                )  # fmt: skip
            finally:
                os.close(write_end)
            assert done.stderr == "" and done.returncode == 0, done.stderr
        # And through a real `head`, as people type it.
        for command in ("status {} | head -n 1", "status {} --json | head -c 10"):
            shell = subprocess.run(
                f"{sys.executable} -m fdfsmount " + command.format(proc.mountpoint),
                shell=True, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert shell.stderr == "" and shell.stdout, shell.stderr
