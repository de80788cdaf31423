"""harness.cluster against real processes: readiness, fault controls, CLI, and no leaks.

Every test runs on each backend that is available; the native one (upstream
fdfs_trackerd/fdfs_storaged) is marked ``native`` and skipped without binaries.
Native clusters use 16 subdirs per store path: upstream creates all of them
(256 x 256 by default) before it listens, which costs seconds on slow disks.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from waiting import wait_until

from fdfsmount.mountproc import fuse_available, is_mounted
from fdfsmount.proto.client import Client
from fdfsmount.proto.constants import StorageStatus
from fdfsmount.proto.errors import ServerError
from harness.cluster import (
    BuiltinBackend,
    Cluster,
    ClusterError,
    Launch,
    Node,
    NotReady,
    Unsupported,
    parse_groups,
    tracker_storages,
)
from harness.process import ChildExited, port_is_listening, processes_mentioning

pytestmark = pytest.mark.processes  # starts servers, mounts or programs

ROOT = Path(__file__).resolve().parent.parent
ACTIVE = StorageStatus.ACTIVE

BACKENDS = [
    "builtin",
    pytest.param("native", marks=[pytest.mark.native, pytest.mark.slow]),
]


def cluster_kwargs(backend: str, **kwargs: Any) -> dict[str, Any]:
    kwargs["backend"] = backend
    if backend == "native":
        kwargs.setdefault("subdirs", 16)
    return kwargs


# ---------------------------------------------------------------- leak checks


@dataclass
class Footprint:
    """What a cluster occupied: checked to be entirely gone after teardown."""

    pids: list[int]
    ports: list[tuple[str, int]]
    base_dir: Path

    @classmethod
    def of(cls, cluster: Cluster) -> Footprint:
        pids = [n.pid for n in cluster.nodes if n.pid is not None]
        assert len(pids) == len(cluster.nodes)
        return cls(pids, [(n.host, n.port) for n in cluster.nodes], cluster.base_dir)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Footprint:
        return cls(
            [int(p) for p in data["pids"]],
            [(h, int(p)) for h, p in data["ports"]],
            Path(data["base_dir"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {"pids": self.pids, "ports": self.ports, "base_dir": str(self.base_dir)}

    def assert_gone(self, *, dir_removed: bool = True) -> None:
        for pid in self.pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)  # nothing left in its process group either
        assert processes_mentioning(str(self.base_dir)) == []
        for host, port in self.ports:
            assert not port_is_listening(host, port), f"{host}:{port} still listening"
        if dir_removed:
            assert not self.base_dir.exists()


def wait_gone(footprint: Footprint, timeout: float = 30.0) -> None:
    """``assert_gone`` once it holds, within ``timeout`` (cleanup after a SIGKILL is async)."""

    def gone() -> bool:
        try:
            footprint.assert_gone()
        except (AssertionError, pytest.fail.Exception):
            return False
        return True

    try:
        wait_until(gone, timeout=timeout, what="the cluster's footprint to vanish")
    except AssertionError:
        footprint.assert_gone()  # fails again, saying what is left
        raise


def all_statuses(cluster: Cluster) -> dict[str, list[int | None]]:
    """Per storage, its status on each tracker."""
    return {
        node.name: [cluster.storage_status(node, t) for t in cluster.trackers]
        for node in cluster.storages
    }


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster(backend: str) -> Iterator[Cluster]:
    """A 2+1 cluster per test (fault tests must not touch the shared session cluster)."""
    with Cluster(**cluster_kwargs(backend)) as c:
        footprint = Footprint.of(c)
        yield c
    footprint.assert_gone()


# ------------------------------------------------------------------ coming up


def test_cluster_comes_up_with_every_storage_active(backend: str) -> None:
    with Cluster(**cluster_kwargs(backend, groups={"group1": 2, "group2": 1})) as c:
        footprint = Footprint.of(c)
        assert [n.name for n in c.storages] == [
            "group1-storage1",
            "group1-storage2",
            "group2-storage1",
        ]
        assert len(c.trackers) == 1 and c.trackers[0].startswith("127.0.0.2:")
        assert c.nodes == [*c.tracker_nodes, *c.storages]
        assert all(n.running and n.base_dir.is_dir() for n in c.nodes)
        assert len({n.host for n in c.storages}) == 3, "one IP per storage"
        for group in ("group1", "group2"):
            listed = tracker_storages(c.trackers[0], group)
            expected = c.storages_of(group)
            assert sorted(s.storage_id for s in listed) == sorted(
                str(n.storage_id) for n in expected
            )
            assert {(s.ip_addr, s.storage_port) for s in listed} == {
                (n.host, n.port) for n in expected
            }
            assert all(s.status == ACTIVE for s in listed)
        conf = c.client_conf.read_text()
        assert f"tracker_server = {c.trackers[0]}\n" in conf
        assert "connect_timeout = " in conf and "network_timeout = " in conf
        described = json.loads(json.dumps(c.describe()))
        assert described["trackers"] == c.trackers
        assert [s["port"] for s in described["storages"]] == [n.port for n in c.storages]
    footprint.assert_gone()


def test_ip_mode_two_trackers(backend: str) -> None:
    kwargs = cluster_kwargs(backend, groups={"g1": 2}, trackers=2, storage_id_mode=False)
    with Cluster(**kwargs) as c:
        footprint = Footprint.of(c)
        assert len(c.trackers) == 2
        first, second = c.storages
        assert first.host != second.host, "IP mode: file IDs carry the IP"
        assert first.storage_id == first.host
        assert first.port == second.port, "upstream wants one storage port per group"
        # Upstream's trackers exchange their storage lists after both said ACTIVE, and
        # under load one may show a storage WAIT_SYNC again for a moment: they converge.
        want = {n.name: [ACTIVE, ACTIVE] for n in c.storages}
        wait_until(lambda: all_statuses(c) == want, timeout=30, what="ACTIVE on both trackers")
        assert f"tracker_server = {c.trackers[1]}" in c.client_conf.read_text()
    footprint.assert_gone()


def test_storages_sharing_an_ip_need_storage_ids(backend: str) -> None:
    with Cluster(**cluster_kwargs(backend, groups={"group1": 2}, share_ip=True)) as c:
        footprint = Footprint.of(c)
        first, second = c.storages
        assert first.host == second.host and first.port != second.port
        ids = c.storage_ids_conf.read_text()
        assert f"{first.storage_id} " in ids and f"{first.host}:{first.port}" in ids
        assert all_statuses(c) == {n.name: [ACTIVE] for n in c.storages}
    footprint.assert_gone()


def test_explicit_base_dir_is_kept(tmp_path: Path) -> None:
    base = tmp_path / "cluster"
    with Cluster(groups={"group1": 1}, base_dir=base) as c:
        footprint = Footprint.of(c)
        assert c.base_dir == base and (base / "group1-storage1").is_dir()
    footprint.assert_gone(dir_removed=False)
    assert (base / "tracker1" / "stderr.log").exists(), "logs stay for inspection"
    with pytest.raises(ClusterError, match="not empty"):
        Cluster(groups={"group1": 1}, base_dir=base).start()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Cluster(groups={"group1": 0})
    with pytest.raises(ValueError):
        Cluster(groups={"bad-name": 1})
    with pytest.raises(ValueError):
        Cluster(share_ip=True, storage_id_mode=False)
    with pytest.raises(ValueError):
        Cluster(backend="nonsense")
    assert parse_groups("group1:2,group2") == {"group1": 2, "group2": 1}
    with pytest.raises(ValueError):
        parse_groups("group1:zero")


# ---------------------------------------------------------------------- leaks


def test_no_leak_when_the_body_raises(backend: str) -> None:
    footprint = None
    with (
        pytest.raises(RuntimeError, match="test body failed"),
        Cluster(**cluster_kwargs(backend)) as c,
    ):
        footprint = Footprint.of(c)
        raise RuntimeError("test body failed")
    assert footprint is not None
    footprint.assert_gone()


async def test_no_leak_when_an_async_body_raises() -> None:
    footprint = None
    with trio.fail_after(60):
        with pytest.raises(RuntimeError, match="async body failed"):
            async with Cluster(groups={"group1": 2}) as c:
                footprint = Footprint.of(c)
                assert all_statuses(c) == {n.name: [ACTIVE] for n in c.storages}
                raise RuntimeError("async body failed")
    assert footprint is not None
    footprint.assert_gone()


async def test_cancelled_start_leaves_nothing() -> None:
    cluster = Cluster(groups={"group1": 2, "group2": 2})
    with trio.move_on_after(0.15) as scope:
        async with cluster:
            pytest.fail("the start should have been cancelled")
    assert scope.cancelled_caught
    assert cluster.base_dir.name.startswith("fdfs-cluster-")
    assert not cluster.base_dir.exists()
    assert processes_mentioning(str(cluster.base_dir)) == []
    for node in cluster.nodes:
        assert not node.running


class _DyingStorageBackend(BuiltinBackend):
    """The last storage exits at once with a message, as a misconfigured server would."""

    def launch(self, cluster: Cluster, node: Node) -> Launch:
        launch = super().launch(cluster, node)
        if node is cluster.storages[-1]:
            code = "import sys; sys.stderr.write('bad store path\\n'); sys.exit(3)"
            return Launch([sys.executable, "-c", code, str(node.base_dir)], ready_line="READY")
        return launch


class _LostStorageBackend(BuiltinBackend):
    """The last storage reports to a tracker that does not exist: never ACTIVE."""

    def launch(self, cluster: Cluster, node: Node) -> Launch:
        launch = super().launch(cluster, node)
        if node is cluster.storages[-1]:
            argv = list(launch.argv)
            argv[argv.index("--tracker") + 1] = "127.0.0.2:9"
            return Launch(argv, ready_line=launch.ready_line, env=launch.env)
        return launch


def test_no_leak_when_a_node_dies_during_setup() -> None:
    cluster = Cluster(groups={"group1": 2, "group2": 1}, backend=_DyingStorageBackend())
    with pytest.raises(ChildExited, match="bad store path") as info:
        cluster.start()
    assert "status 3" in str(info.value)
    assert not cluster.base_dir.exists()
    assert processes_mentioning(str(cluster.base_dir)) == []
    for node in cluster.nodes:
        assert not node.running
        assert not port_is_listening(node.host, node.port)


def test_no_leak_when_readiness_times_out() -> None:
    cluster = Cluster(groups={"group1": 2}, backend=_LostStorageBackend(), ready_timeout=2)
    with pytest.raises(NotReady, match="group1-storage2@tracker1=absent"):
        cluster.start()
    assert not cluster.base_dir.exists()
    assert processes_mentioning(str(cluster.base_dir)) == []
    assert not any(node.running for node in cluster.nodes)


def test_no_leak_after_a_failing_pytest_test(tmp_path: Path) -> None:
    """The fixtures tear down after a failing test: run one in a child pytest."""
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import json, os

            def footprint(cluster):
                return {
                    "pids": [n.pid for n in cluster.nodes],
                    "ports": [(n.host, n.port) for n in cluster.nodes],
                    "base_dir": str(cluster.base_dir),
                }

            def test_fails(fdfs_cluster, fdfs_cluster_factory):
                custom = fdfs_cluster_factory(groups={"g": 1})
                with open(os.environ["FOOTPRINT_FILE"], "w") as out:
                    json.dump([footprint(fdfs_cluster), footprint(custom)], out)
                raise AssertionError("deliberately failing test body")
            """
        )
    )
    footprint_file = tmp_path / "footprint.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        env={**os.environ, "FOOTPRINT_FILE": str(footprint_file)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "deliberately failing test body" in result.stdout
    footprints = [Footprint.from_json(f) for f in json.loads(footprint_file.read_text())]
    assert len(footprints) == 2
    for footprint in footprints:
        footprint.assert_gone()


@pytest.mark.mount
def test_mount_fixture_shows_the_session_cluster(fdfs_mount: Any, fdfs_cluster: Cluster) -> None:
    root = Path(fdfs_mount.mountpoint)
    assert is_mounted(root)
    assert sorted(os.listdir(root)) == sorted(fdfs_cluster.groups)

    async def upload() -> str:
        async with Client(fdfs_cluster.trackers) as client:
            return str(await client.upload(b"through the fixture\n", ext="txt"))

    fid = trio.run(upload)
    assert (root / fid).read_bytes() == b"through the fixture\n"
    os.unlink(root / fid)  # DELETE_FILE


@pytest.mark.mount
def test_mount_fixture_unmounts_after_a_failing_test(tmp_path: Path) -> None:
    """Run a failing test with fdfs_mount in a child pytest: no mount, no daemon left."""
    if not fuse_available():
        pytest.skip("FUSE is not available")
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import json, os
            import pytest

            @pytest.mark.fdfs_mount_options("nolist")
            def test_fails(fdfs_mount):
                with open(os.environ["FOOTPRINT_FILE"], "w") as out:
                    json.dump([str(fdfs_mount.mountpoint), fdfs_mount.pid], out)
                assert os.listdir(fdfs_mount.mountpoint)
                raise AssertionError("deliberately failing test body")
            """
        )
    )
    footprint_file = tmp_path / "footprint.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        env={**os.environ, "FOOTPRINT_FILE": str(footprint_file)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "deliberately failing test body" in result.stdout
    mountpoint, pid = json.loads(footprint_file.read_text())
    assert not is_mounted(mountpoint)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_no_leak_when_the_owner_gets_sigterm(tmp_path: Path) -> None:
    """``timeout pytest`` sends SIGTERM: the harness must still reap its children."""
    script = textwrap.dedent(
        """
        import json, sys, time
        from harness.cluster import Cluster
        with Cluster(groups={"group1": 2}) as c:
            print(json.dumps({
                "pids": [n.pid for n in c.nodes],
                "ports": [(n.host, n.port) for n in c.nodes],
                "base_dir": str(c.base_dir),
            }), flush=True)
            time.sleep(120)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as owner:
        try:
            line = read_line(owner, timeout=60)
            footprint = Footprint.from_json(json.loads(line))
            owner.send_signal(signal.SIGTERM)
            owner.wait(timeout=30)
        finally:
            owner.kill()
    footprint.assert_gone()


OWNER_SCRIPT = """
import json, sys, threading, time
from harness.cluster import Cluster
c = Cluster(groups={"group1": 2}, **json.loads(sys.argv[1]))
# Started from a thread that ends at once: its children must outlive it.
starter = threading.Thread(target=c.start)
starter.start()
starter.join()
print(json.dumps({
    "pids": [n.pid for n in c.nodes],
    "ports": [(n.host, n.port) for n in c.nodes],
    "base_dir": str(c.base_dir),
}), flush=True)
time.sleep(120)
"""


def test_nothing_left_when_the_owner_is_sigkilled(backend: str) -> None:
    """No ``finally``, no ``atexit``: the nodes die with their owner, the dir goes too."""
    with subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, json.dumps(cluster_kwargs(backend))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as owner:
        try:
            footprint = Footprint.from_json(json.loads(read_line(owner, timeout=90)))
            for pid in footprint.pids:
                os.kill(pid, 0)  # alive after the starting thread ended
            owner.kill()
            owner.wait(timeout=30)
        finally:
            owner.kill()
    wait_gone(footprint)


def test_cli_up_sigkilled_leaves_nothing() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "harness", "up", "--groups", "group1:2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        try:
            info = json.loads(read_line(proc, timeout=90))
            tracker_host, tracker_port = info["trackers"][0].rsplit(":", 1)
            footprint = Footprint(
                [s["pid"] for s in info["storages"]],
                [(s["host"], s["port"]) for s in info["storages"]]
                + [(tracker_host, int(tracker_port))],
                Path(info["base_dir"]),
            )
            proc.kill()
            proc.wait(timeout=30)
        finally:
            proc.kill()
    wait_gone(footprint)


# ------------------------------------------------------------- fault controls


def test_kill_then_restart_a_storage(cluster: Cluster) -> None:
    node = cluster.storages_of("group1")[0]
    pid, port, base_dir = node.pid, node.port, node.base_dir
    assert pid is not None
    cluster.kill(node)
    assert not node.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not port_is_listening(node.host, port)
    cluster.wait_offline([node], timeout=30)
    assert cluster.storage_status(node) != ACTIVE
    cluster.restart(node)
    assert node.running and node.pid != pid
    assert node.port == port and node.base_dir == base_dir
    assert port_is_listening(node.host, port)
    assert all_statuses(cluster) == {n.name: [ACTIVE] for n in cluster.storages}


def test_stop_and_cont_a_storage(cluster: Cluster) -> None:
    node = cluster.storages_of("group2")[0]
    assert node.pid is not None
    pid: int = node.pid
    cluster.stop(node)
    try:
        wait_until(lambda: process_state(pid) == "T", what="the storage to stop")
        # The tracker notices the silence after its offline timeout.
        cluster.wait_offline([node], timeout=30)
    finally:
        cluster.cont(node)
    assert process_state(node.pid) in ("S", "R")
    cluster.wait_active([node], timeout=60)


def test_restart_a_stopped_storage(cluster: Cluster) -> None:
    node = cluster.storages[-1]
    old_pid = node.pid
    cluster.stop(node)
    cluster.restart(node)  # SIGTERM reaches a stopped process only with SIGCONT
    assert node.pid != old_pid
    assert cluster.storage_status(node) == ACTIVE


def test_restart_the_tracker(cluster: Cluster) -> None:
    tracker = cluster.tracker_nodes[0]
    old_pid, address = tracker.pid, tracker.address
    cluster.restart(tracker)
    assert tracker.pid != old_pid and tracker.address == address
    assert all_statuses(cluster) == {n.name: [ACTIVE] for n in cluster.storages}


async def test_restart_keeps_the_data_dir(backend: str) -> None:
    client_module = pytest.importorskip("fdfsmount.proto.client")
    with trio.fail_after(180):
        async with Cluster(**cluster_kwargs(backend, groups={"group1": 1})) as c:
            node = c.storages[0]
            async with client_module.Client(c.trackers) as client:
                file_id = await client.upload(b"survives a restart", ext="txt")
            await c.restart_async(node)
            async with client_module.Client(c.trackers) as client:
                assert await client.download(file_id) == b"survives a restart"


def mounts_under(path: Path) -> list[str]:
    """Mount points below ``path`` in /proc/mounts (blanks there are escaped; ours have none)."""
    prefix = f"{path}{os.sep}"
    with open("/proc/mounts") as mounts:
        return [fields[1] for line in mounts if (fields := line.split())[1].startswith(prefix)]


@contextlib.contextmanager
def started_or_skipped(cluster: Cluster) -> Iterator[Cluster]:
    """``with cluster``, but skip the test where its tmpfs disks cannot be mounted."""
    try:
        cluster.start()
    except Unsupported as exc:
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.close()


def test_fill_disk(backend: str) -> None:
    kwargs = cluster_kwargs(backend, groups={"group1": 1})
    if backend == "native":
        kwargs["disk_mb"] = 16
    with started_or_skipped(Cluster(**kwargs)) as c:
        node = c.storages[0]

        def free_mb() -> int:
            (stat,) = tracker_storages(c.trackers[0], "group1")
            return stat.free_mb

        assert free_mb() > 0
        c.fill_disk(node)  # returns once the tracker has seen it
        assert free_mb() == 0
        c.unfill_disk(node)
        assert free_mb() > 0


@pytest.mark.native
@pytest.mark.slow
async def test_native_full_disk_refuses_uploads_until_freed() -> None:
    """A really full store path (a tmpfs): upstream's tracker answers ENOSPC for the group."""
    cluster = Cluster(groups={"group1": 1, "group2": 1}, backend="native", disk_mb=16)
    with trio.fail_after(120):
        with started_or_skipped(cluster) as c:
            footprint = Footprint.of(c)
            node = c.storages_of("group1")[0]
            mounts = mounts_under(c.base_dir)
            assert mounts == [str(n.base_dir / "store0") for n in c.storages]
            async with Client(c.trackers) as client:
                before = await client.upload(b"before", ext="txt", group="group1")
                await c.fill_disk_async(node)
                with pytest.raises(ServerError) as refused:
                    await client.upload(b"refused", ext="txt", group="group1")
                assert refused.value.errno == errno.ENOSPC
                # Without a group the tracker picks one that has room.
                elsewhere = await client.upload(b"elsewhere", ext="txt")
                assert elsewhere.group == "group2"
                await c.unfill_disk_async(node)
                after = await client.upload(b"after", ext="txt", group="group1")
                assert await client.download(before) == b"before"
                assert await client.download(after) == b"after"
    footprint.assert_gone()
    assert mounts_under(footprint.base_dir) == []


@pytest.mark.native
@pytest.mark.slow
def test_native_small_disks_are_unmounted_when_the_body_raises() -> None:
    footprint = None
    cluster = Cluster(groups={"group1": 1}, backend="native", subdirs=16, disk_mb=8)
    with (
        pytest.raises(RuntimeError, match="test body failed"),
        started_or_skipped(cluster) as c,
    ):
        footprint = Footprint.of(c)
        assert len(mounts_under(c.base_dir)) == 1
        c.fill_disk(c.storages[0])
        raise RuntimeError("test body failed")
    assert footprint is not None
    footprint.assert_gone()
    assert mounts_under(footprint.base_dir) == []


@pytest.mark.native
@pytest.mark.slow
def test_native_fill_disk_needs_disk_mb() -> None:
    with Cluster(groups={"group1": 1}, backend="native", subdirs=16) as c:
        assert mounts_under(c.base_dir) == []
        with pytest.raises(Unsupported, match=r"disk_mb"):
            c.fill_disk(c.storages[0])


@pytest.mark.native
def test_native_disk_mb_without_mount_permission_is_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where mounting is refused, start says why and leaves nothing behind."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mount").write_text("#!/bin/sh\necho 'mount: permission denied' >&2\nexit 32\n")
    (fake / "mount").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    base = tmp_path / "cluster"
    with pytest.raises(Unsupported, match=r"disk_mb needs a tmpfs.*permission denied"):
        Cluster(groups={"group1": 1}, backend="native", base_dir=base, disk_mb=8).start()
    assert mounts_under(base) == []
    assert processes_mentioning(str(base)) == []


def test_fault_controls_take_node_names(cluster: Cluster) -> None:
    name = cluster.storages[0].name
    cluster.stop(name)
    cluster.cont(name)
    with pytest.raises(KeyError):
        cluster.kill("no-such-node")


# ------------------------------------------------------------------------ CLI


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no output within {timeout}s")
    return proc.stdout.readline()


def run_harness(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        **kwargs,
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_up_prints_json_and_tears_down(backend: str, stop_signal: int) -> None:
    args = ["--groups", "group1:2,group2:1"]
    if backend == "native":
        args += ["--backend", "native", "--subdirs", "16"]
    with subprocess.Popen(
        [sys.executable, "-m", "harness", "up", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        try:
            line = read_line(proc, timeout=90)
            info = json.loads(line)
            assert set(info) >= {"trackers", "client_conf", "storages"}
            assert len(info["storages"]) == 3
            conf = Path(info["client_conf"]).read_text()
            for tracker in info["trackers"]:
                assert f"tracker_server = {tracker}" in conf
            for storage in info["storages"]:
                listed = tracker_storages(info["trackers"][0], storage["group"])
                (record,) = [s for s in listed if s.storage_id == storage["storage_id"]]
                assert record.status == ACTIVE
                assert (record.ip_addr, record.storage_port) == (storage["host"], storage["port"])
            tracker_host, tracker_port = info["trackers"][0].rsplit(":", 1)
            footprint = Footprint(
                [s["pid"] for s in info["storages"]],
                [(s["host"], s["port"]) for s in info["storages"]]
                + [(tracker_host, int(tracker_port))],
                Path(info["base_dir"]),
            )
            proc.send_signal(stop_signal)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert out == "", "exactly one line on stdout"
    assert "torn down" in err
    assert "Traceback" not in err
    footprint.assert_gone()
    assert processes_mentioning(str(footprint.base_dir)) == []


def test_cli_sigterm_during_startup_leaves_nothing() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "harness", "up", "--groups", "group1:3,group2:3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        try:
            assert proc.stderr is not None
            base_dir = None
            for _ in range(50):
                line = proc.stderr.readline()
                if "cluster directory: " in line:
                    base_dir = Path(line.split("cluster directory: ", 1)[1].strip())
                if "starting group1-storage1" in line:
                    break
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert out == "", "nothing printed when not ready"
    assert base_dir is not None and base_dir.name.startswith("fdfs-cluster-")
    assert processes_mentioning(str(base_dir)) == []
    assert not base_dir.exists()


def test_cli_help_teaches() -> None:
    result = run_harness("up", "--help")
    assert result.returncode == 0
    for text in ("--groups", "--backend", "client_conf", "SIGTERM", "examples:", "--ip-mode"):
        assert text in result.stdout
    assert run_harness("--help").returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--groups", "group1:x"], "bad storage count"),
        (["up", "--trackers", "0"], "at least 1"),
        (["up", "--trackers", "9"], "between 1 and 8 trackers"),
        (["up", "--timeout", "-1"], "positive number of seconds"),
        (["up", "--subdirs", "300"], "within 1..256"),
        (["up", "--disk-mb", "1"], "within 4..4096"),
        (["up", "--backend", "nfs"], "invalid choice"),
        (["down"], "invalid choice"),
    ],
)
def test_cli_bad_arguments_are_one_line(args: list[str], message: str) -> None:
    result = run_harness(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_cli_missing_native_backend_is_one_line(tmp_path: Path) -> None:
    result = run_harness(
        "up", "--backend", "native", env={**os.environ, "FDFS_BIN_DIR": str(tmp_path)}
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        f"harness: error: native backend: fdfs_trackerd, fdfs_storaged not found in"
        f" $FDFS_BIN_DIR ({tmp_path})"
    ]
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------- pytest plugin


def test_session_cluster_fixture(fdfs_cluster: Cluster, pytestconfig: pytest.Config) -> None:
    expected = parse_groups(
        pytestconfig.getoption("--fdfs-groups") or str(pytestconfig.getini("fdfs_groups"))
    )
    assert fdfs_cluster.groups == expected
    active = [ACTIVE] * len(fdfs_cluster.trackers)
    assert all_statuses(fdfs_cluster) == {n.name: active for n in fdfs_cluster.storages}


async def test_client_fixture(fdfs_client: Any, fdfs_cluster: Cluster) -> None:
    group = next(iter(fdfs_cluster.groups))
    with trio.fail_after(30):
        storages = await fdfs_client.list_storages(group)
    assert {s.storage_id for s in storages} == {
        n.storage_id for n in fdfs_cluster.storages_of(group)
    }
    assert all(s.status == ACTIVE for s in storages)


async def test_cluster_factory_async(fdfs_cluster_factory: Any) -> None:
    with trio.fail_after(60):
        c = await fdfs_cluster_factory.start_async(groups={"solo": 1})
    assert c.storage_status(c.storages[0]) == ACTIVE


def test_native_marker_skips_cleanly_without_binaries(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(
        "import pytest\n\n@pytest.mark.native\ndef test_needs_upstream():\n    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        env={**os.environ, "FDFS_BIN_DIR": str(tmp_path)},  # no binaries there
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "native backend: fdfs_trackerd, fdfs_storaged not found" in result.stdout


def test_start_retries_when_a_port_is_taken(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A port grabbed by someone else between picking and binding: start again elsewhere."""
    import harness.cluster

    real_pick = harness.cluster.pick_free_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.2", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        monkeypatch.setattr(
            harness.cluster, "pick_free_port", lambda *hosts: next(picks, None) or real_pick(*hosts)
        )
        caplog.set_level(logging.INFO, logger="harness.cluster")
        with Cluster(groups={"group1": 1}) as c:
            footprint = Footprint.of(c)
            assert c.tracker_nodes[0].port != taken
            assert "a port was taken meanwhile" in caplog.text
            assert c.storage_status(c.storages[0]) == ACTIVE
    footprint.assert_gone()
