"""The fstab path: ``mount -t fuse.fdfsmount SOURCE DIR -o ...`` -> mount.fuse3 -> fdfsmount,
for real, plus the calling convention and the install-helper step it needs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostlock import usr_local_bin_locked
from mounthelp import upload_bytes
from waiting import wait_until

from fdfsmount.helper import DEFAULT_PREFIX, installed_script, is_ours
from fdfsmount.mount_cli import parse_command_line
from fdfsmount.mountproc import fuse_available, is_mounted
from fdfsmount.status import find_mount, locate
from harness.cluster import Cluster

pytestmark = pytest.mark.processes  # starts servers, mounts or programs

#: What fstab, systemd and mount(8) may hand a helper that means nothing to fdfsmount.
GENERIC = [
    "_netdev", "nofail", "x-systemd.automount", "x-systemd.idle-timeout=10min",
    "x-systemd.requires=network-online.target", "x-systemd.mount-timeout=30", "rw", "auto",
    "noauto", "defaults", "user", "users", "nouser", "exec", "dev", "suid", "nosuid", "nodev",
    "comment=systemd.automount",
]  # fmt: skip


def fdfsmount(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fdfsmount", *args], capture_output=True, text=True, timeout=timeout
    )


# ---------------------------------------------------------------- the calling convention


def test_mount_fuse3_calling_convention() -> None:
    """mount.fuse3 runs ``fdfsmount SOURCE MOUNTPOINT -o OPTS`` (no -f): a daemonizing mount."""
    opts = parse_command_line(
        [
            "10.0.0.5:22122,10.0.0.6:22122",
            "/mnt/fdfs",
            "-o",
            "rw,nosuid,nodev,allow_other,timeout=5",
        ]
    )
    assert not opts.foreground and opts.allow_other and opts.timeout == 5
    assert opts.trackers == ("10.0.0.5:22122", "10.0.0.6:22122")


def test_generic_mount_options_are_ignored() -> None:
    plain = parse_command_line(["10.0.0.5:22122", "/mnt/fdfs"])
    opts = parse_command_line(["10.0.0.5:22122", "/mnt/fdfs", "-o", ",".join(GENERIC)])
    assert opts == plain
    # Flags that change what the kernel does go to FUSE; they are not errors either.
    passed = parse_command_line(["10.0.0.5:22122", "/mnt/fdfs", "-o", "noexec,relatime,noatime"])
    assert {"noexec", "relatime", "noatime"} <= passed.fuse_options
    # mount(8)'s own flags to helpers: sloppy, fake, no-mtab, verbose, type.
    flags = ["10.0.0.5:22122", "/mnt/fdfs", "-s", "-n", "-v", "-t", "fuse.fdfsmount"]
    assert parse_command_line(flags) == plain


# ---------------------------------------------------------------- install-helper


def test_install_helper_links_this_installation(tmp_path: Path) -> None:
    prefix = tmp_path / "bin"
    done = fdfsmount("install-helper", "--prefix", os.fspath(prefix))
    assert done.returncode == 0, done.stderr
    helper = prefix / "fdfsmount"
    script = installed_script()
    if script is not None:
        assert helper.is_symlink() and Path(os.readlink(helper)) == script
    # Not on the PATH mount(8) gives helpers: said so.
    assert "PATH" in done.stderr
    version = subprocess.run([helper, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "fdfsmount" in version.stdout
    again = fdfsmount("install-helper", "--prefix", os.fspath(prefix))
    assert again.returncode == 0 and "already" in again.stdout
    assert fdfsmount("install-helper", "--prefix", os.fspath(prefix), "--remove").returncode == 0
    assert not helper.exists() and not helper.is_symlink()


def test_install_helper_leaves_other_programs_alone(tmp_path: Path) -> None:
    prefix = tmp_path / "bin"
    prefix.mkdir()
    foreign = prefix / "fdfsmount"
    foreign.write_text("#!/bin/sh\necho something else\n")
    done = fdfsmount("install-helper", "--prefix", os.fspath(prefix))
    assert done.returncode == 1 and "--force" in done.stderr
    removed = fdfsmount("install-helper", "--prefix", os.fspath(prefix), "--remove")
    assert removed.returncode == 1 and foreign.read_text().endswith("something else\n")
    forced = fdfsmount("install-helper", "--prefix", os.fspath(prefix), "--force")
    assert forced.returncode == 0 and is_ours(foreign, installed_script())


# ---------------------------------------------------------------- mount -t fuse.fdfsmount


@contextlib.contextmanager
def helper_where_mount_finds_it() -> Iterator[None]:
    """``fdfsmount`` in /usr/local/bin for the test (mount(8) runs helpers without our PATH).

    Installed with ``install-helper`` and removed afterwards unless it was there
    before; `usr_local_bin_locked` keeps concurrent tests from removing it under
    each other or seeing it appear.
    """
    target = Path(DEFAULT_PREFIX) / "fdfsmount"
    with usr_local_bin_locked():
        present = target.exists() or target.is_symlink()
        if present and not is_ours(target, installed_script()):
            pytest.skip(f"{target} exists and belongs to another installation")
        if not present:
            done = fdfsmount("install-helper")
            assert done.returncode == 0, done.stderr
        try:
            yield
        finally:
            if not present:
                fdfsmount("install-helper", "--remove")


@pytest.mark.mount
@pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3")
@pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) of a non-fstab FUSE mount needs root")
@pytest.mark.skipif(
    shutil.which("mount.fuse3", path="/sbin:/usr/sbin") is None, reason="needs mount.fuse3"
)
def test_mount_t_fuse_fdfsmount_then_umount(fdfs_cluster: Cluster, tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    file_id = str(upload_bytes(fdfs_cluster, payload))
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    log = tmp_path / "daemon.log"
    source = ",".join(fdfs_cluster.trackers)
    options = [*GENERIC[:6], "allow_other", "timeout=10", f"log_file={log}"]
    pid: int | None = None
    with helper_where_mount_finds_it():
        try:
            done = subprocess.run(
                ["mount", "-t", "fuse.fdfsmount", source, os.fspath(mountpoint),
                 "-o", ",".join(options)],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr + log.read_text(errors="replace")
            # mount returned, so the mount answers now: no waiting.
            assert (mountpoint / file_id).read_bytes() == payload
            entry = find_mount(os.fspath(mountpoint))
            assert entry is not None and entry.fstype == "fuse.fdfsmount"
            assert entry.source == source and "allow_other" in entry.options
            pid = locate(os.fspath(mountpoint))[1]["pid"]
            done = subprocess.run(
                ["umount", os.fspath(mountpoint)], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            assert not is_mounted(mountpoint)
            wait_until(lambda: not _alive(pid), what="the daemon to end with its mount")
            assert "unmounted" in log.read_text()
        finally:
            if is_mounted(mountpoint):
                subprocess.run(["fusermount3", "-u", "-z", os.fspath(mountpoint)], check=False)
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent, mount's child, exited long ago).
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True
