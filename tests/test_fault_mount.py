"""The mount under concurrency and faults: random operations through two real mounts compared
with a local model (seeded, replayable), the same while storages are frozen, killed and
restarted, write-back memory with a frozen storage, changes made elsewhere seen at the next
open, and fio's own verification through the mount.

The short versions run here; ``python bench/fault_campaign.py --seeds 20 --ops 5000`` runs
the long one. ``FDFS_FAULT_SEED=N`` replays one seed, ``FDFS_FAULT_OPS=N`` sets the length.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_model import run_model
from mounthelp import client_run, run

from fdfsmount.mountproc import MountProcess, fuse_available, mounted
from fdfsmount.options import MountOptions
from fdfsmount.proto import parse_file_id
from harness.cluster import Cluster
from harness.pytest_plugin import ClusterFactory

pytestmark = [
    pytest.mark.processes,
    pytest.mark.mount,
    pytest.mark.fault,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3"),
]

MIB = 1024 * 1024
OPTIONS = ["timeout=5", "attr_timeout=1", "entry_timeout=1"]
SEEDS = [int(os.environ["FDFS_FAULT_SEED"])] if "FDFS_FAULT_SEED" in os.environ else [1, 2]
OPS = int(os.environ.get("FDFS_FAULT_OPS", "250"))


@pytest.fixture(scope="module")
def two_mounts(
    fdfs_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MountProcess, MountProcess]]:
    """Two mounts of the session's cluster, as two hosts would have them."""
    if len(fdfs_cluster.storages_of("group1")) < 2:
        pytest.skip("needs group1 with two storages")
    base = tmp_path_factory.mktemp("two")
    with (
        mounted(fdfs_cluster.trackers, base / "a", [*OPTIONS, f"cache_dir={base}/ca"]) as a,
        mounted(fdfs_cluster.trackers, base / "b", [*OPTIONS, f"cache_dir={base}/cb"]) as b,
    ):
        yield a, b


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("seed", SEEDS)
def test_random_operations_through_a_mount_match_the_model(
    fdfs_cluster: Cluster, two_mounts: tuple[MountProcess, MountProcess], seed: int
) -> None:
    a, _ = two_mounts
    report = run_model(seed, fdfs_cluster, a.mountpoint, ops=OPS)
    assert report.reads_checked > 0 and report.failed_calls == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_random_operations_through_two_mounts_match_the_model(
    fdfs_cluster: Cluster, two_mounts: tuple[MountProcess, MountProcess], seed: int
) -> None:
    a, b = two_mounts
    report = run_model(seed, fdfs_cluster, a.mountpoint, b.mountpoint, ops=OPS)
    assert report.reads_checked > 0 and report.failed_calls == 0


@pytest.mark.slow
@pytest.mark.expect_log_warnings
@pytest.mark.parametrize("seed", SEEDS)
def test_acknowledged_bytes_survive_frozen_and_killed_storages(
    fdfs_cluster_factory: ClusterFactory, tmp_path: Path, seed: int
) -> None:
    cluster = fdfs_cluster_factory(groups={"group1": 2})
    with mounted(cluster.trackers, tmp_path / "a", [*OPTIONS, f"cache_dir={tmp_path}/c"]) as a:
        # Every replica ends with every acknowledged byte (ReplicaDiverged otherwise).
        report = run_model(
            seed, cluster, a.mountpoint, None, ops=OPS, faults=True, long_faults=False
        )
    assert report.faults > 0


def test_reads_of_this_hosts_writes_while_an_append_is_in_flight(
    two_mounts: tuple[MountProcess, MountProcess],
) -> None:
    """The sequence that read short or failed with EINVAL: the bytes past what the storage
    holds come from this host (pending writes, zeros in the hole), every time."""
    a, _ = two_mounts
    for attempt in range(10):
        path = a.mountpoint / "group1" / f"in-flight-{os.getpid()}-{attempt}.bin"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            model = bytearray(os.urandom(121_567))
            os.write(fd, model)
            os.fsync(fd)
            more = os.urandom(8_265)
            os.write(fd, more)
            model += more
            far = len(model) + MIB + 1_000
            tail = os.urandom(2_796)
            os.pwrite(fd, tail, far)
            model += bytes(far - len(model)) + tail
            assert os.pread(fd, 4096, 126_976) == bytes(model[126_976:131_072])
            os.fsync(fd)
            assert os.pread(fd, 4096, 126_976) == bytes(model[126_976:131_072])
        finally:
            os.close(fd)
        assert path.read_bytes() == bytes(model)
        path.unlink()


# ---------------------------------------------------------------- memory


def _rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


@pytest.mark.slow
@pytest.mark.expect_log_warnings
def test_write_back_memory_is_bounded_for_the_whole_mount_with_a_frozen_storage(
    fdfs_cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """96 writers, the storage frozen: the daemon waits instead of buffering without end
    (its peak RSS stays under cache_size + write-back bound + 100 MiB, with the default
    options), and holds no more than that once the writers are done."""
    cluster = fdfs_cluster_factory(groups={"group1": 1})
    (storage,) = cluster.storages
    defaults = MountOptions()
    bound = defaults.write_buffer * defaults.write_buffers
    limit_kib = (defaults.cache_size + bound + 100 * MIB) // 1024
    with mounted(
        cluster.trackers, tmp_path / "mnt", ["timeout=4", f"cache_dir={tmp_path}/c"]
    ) as proc:
        paths = [proc.mountpoint / "group1" / f"w{i}.bin" for i in range(96)]
        fds = [os.open(p, os.O_WRONLY | os.O_CREAT, 0o644) for p in paths]
        before = _rss_kib(proc.pid)
        chunk = os.urandom(MIB)
        errors: list[int] = []

        def writer(fd: int) -> None:
            for _ in range(8):  # 768 MiB in all: far more than the bound
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    errors.append(exc.errno or 0)

        cluster.stop(storage)
        try:
            threads = [threading.Thread(target=writer, args=(fd,)) for fd in fds]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            cluster.cont(storage)
        during = _rss_kib(proc.pid)
        for fd in fds:
            try:
                os.close(fd)
            except OSError as exc:
                errors.append(exc.errno or 0)
        after = _rss_kib(proc.pid)
        assert errors, "a frozen storage made no write fail"
        assert during["VmHWM"] < limit_kib, (before, during, limit_kib)
        assert after["VmRSS"] <= during["VmHWM"] and after["VmRSS"] < limit_kib, (before, after)


# ---------------------------------------------------------------- two writers


def test_changes_made_elsewhere_are_seen_at_the_next_open(
    fdfs_cluster: Cluster, two_mounts: tuple[MountProcess, MountProcess]
) -> None:
    """A same-size overwrite within one second, by `fdfs modify` and by another mount,
    is what the next open reads."""
    a, b = two_mounts
    path_a = a.mountpoint / "group1" / f"coherent-{os.getpid()}.txt"
    path_a.write_bytes(b"version 1\n")
    fid = parse_file_id(os.getxattr(path_a, "user.fdfs.file_id").decode())
    path_b = b.mountpoint / str(fid)
    assert path_b.read_bytes() == b"version 1\n"  # B caches it
    assert path_a.read_bytes() == b"version 1\n"
    fdfs = Path(sys.executable).parent / "fdfs"
    for n in (2, 3):
        data = f"version {n}\n".encode()
        run(fdfs, "--tracker", ",".join(fdfs_cluster.trackers), "modify", str(fid), "0", "-",
            input=data)  # fmt: skip
        assert client_run(fdfs_cluster, lambda c: c.download(fid)) == data
        assert path_a.read_bytes() == data
        assert path_b.read_bytes() == data
    with open(path_b, "r+b") as f:  # B writes, A reads
        f.write(b"version 4\n")
    assert path_a.read_bytes() == b"version 4\n"
    path_a.unlink()


# ---------------------------------------------------------------- fio


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("fio") is None, reason="needs fio (apt package fio)")
@pytest.mark.parametrize("pattern", ["write", "randwrite", "readwrite", "randrw"])
def test_fio_verifies_what_it_wrote_through_the_mount(
    two_mounts: tuple[MountProcess, MountProcess], pattern: str
) -> None:
    a, _ = two_mounts
    name = f"fio-{pattern}-{os.getpid()}.bin"
    path = a.mountpoint / "group1" / name
    try:
        out = run(
            "fio", "--name=verify", f"--filename={path}", f"--rw={pattern}", "--bs=64k",
            "--size=24m", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
            "--ioengine=psync", "--end_fsync=1", "--verify_state_save=0",
            "--output-format=terse", timeout=300,
        )  # fmt: skip
        assert "verify" not in out.lower() or "fail" not in out.lower(), out
    finally:
        path.unlink(missing_ok=True)
