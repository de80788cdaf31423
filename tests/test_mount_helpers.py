"""Mount helpers and the demo never unmount a live mount that is not theirs: a mount is
cleared only when its daemon is gone."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from fdfsmount.demo import InUse, choose_mountpoint
from fdfsmount.mountproc import (
    MountFailed,
    MountState,
    fuse_available,
    is_mounted,
    mount_state,
    mounted,
    unmount,
)
from harness.cluster import Cluster

pytestmark = [
    pytest.mark.processes,
    pytest.mark.mount,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3"),
]


def test_free_and_live_states(cluster: Cluster, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert mount_state(mnt) is MountState.FREE
    with mounted(cluster.trackers, mnt, ["timeout=5"]):
        assert mount_state(mnt) is MountState.LIVE
    assert mount_state(mnt) is MountState.FREE


def test_a_second_mount_refuses_and_leaves_the_live_one_alone(
    cluster: Cluster, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    with mounted(cluster.trackers, mnt, ["timeout=5"]) as first:
        with (
            pytest.raises(MountFailed, match="already mounted"),
            mounted(cluster.trackers, mnt, ["timeout=5"]),
        ):
            pytest.fail("a second mount over a live one")
        assert is_mounted(mnt) and first.process.poll() is None
        assert "group1" in os.listdir(mnt)


def test_a_mount_whose_daemon_died_is_stale_and_cleared(cluster: Cluster, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    with mounted(cluster.trackers, mnt, ["timeout=5"]) as dead:
        os.killpg(dead.process.pid, signal.SIGKILL)
        dead.process.wait(10)
        assert mount_state(mnt) is MountState.STALE
        # A new mount at the same place clears the dead one first.
        with mounted(cluster.trackers, mnt, ["timeout=5"]) as again:
            assert "group1" in os.listdir(mnt)
            assert again.process.poll() is None
    assert not is_mounted(mnt)


def test_unmount_after_our_daemon_failed_leaves_a_live_mount(
    cluster: Cluster, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    with (
        mounted(cluster.trackers, mnt, ["timeout=5"]),
        mounted(cluster.trackers, tmp_path / "other", ["timeout=5"]) as other,
    ):
        # Our daemon is gone; whatever is mounted at `mnt` is not ours to clear.
        os.killpg(other.process.pid, signal.SIGKILL)
        other.process.wait(10)
        other.mountpoint = mnt
        unmount(other)
        assert mount_state(mnt) is MountState.LIVE
        other.mountpoint = tmp_path / "other"


def test_a_second_demo_picks_another_directory_or_refuses(
    cluster: Cluster, tmp_path: Path
) -> None:
    default = tmp_path / "fdfs-demo" / "mnt"
    with mounted(cluster.trackers, default, ["timeout=5"]):
        chosen = choose_mountpoint(default, explicit=False)
        assert chosen == tmp_path / "fdfs-demo-2" / "mnt"
        with pytest.raises(InUse, match="in use by fdfsmount pid"):
            choose_mountpoint(default, explicit=True)
        assert mount_state(default) is MountState.LIVE
        assert "group1" in os.listdir(default)
