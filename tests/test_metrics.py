"""Live numbers: Prometheus metrics scraped during reads move by the right amounts,
``fdfsmount status`` shows the same, and repeated log lines are rate-limited."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mounthelp import upload_bytes
from prometheus_client.parser import text_string_to_metric_families

from fdfsmount.logsetup import EXEMPT, JournalFormatter, LogControl, RateLimitFilter
from fdfsmount.mountproc import fuse_available, mounted
from fdfsmount.status import escape_path
from harness.cluster import Cluster

pytestmark = pytest.mark.processes  # starts servers, mounts or programs

MIB = 1024 * 1024

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------- log flood control


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("fdfsmount.fs", level, __file__, 1, msg, args, None)


def test_rate_limit_passes_a_burst_then_summarizes() -> None:
    clock = FakeClock()
    limit = RateLimitFilter(interval=10, burst=3, clock=clock)
    template = "read %s failed: %s on storage 127.0.0.10:23000"
    passed = [
        limit.filter(_record(template, f"group1/M00/00/00/f{i}", "timeout")) for i in range(50)
    ]
    assert passed == [True] * 3 + [False] * 47
    assert limit.summaries() == []  # the window is still open
    clock.now += 10
    (summary,) = limit.summaries()
    assert summary.level == logging.WARNING and summary.logger == "fdfsmount.fs"
    assert "repeated 47 times" in summary.text and "f49" in summary.text
    # A new window lets a burst through again.
    assert limit.filter(_record(template, "group1/M00/00/00/g", "timeout"))


def test_rate_limit_drops_exact_repeats_and_spares_debug_and_other_kinds() -> None:
    clock = FakeClock()
    limit = RateLimitFilter(interval=10, burst=5, clock=clock)
    assert limit.filter(_record("read %s failed", "x"))
    assert not limit.filter(_record("read %s failed", "x"))  # the kernel retrying the same read
    assert limit.filter(_record("read %s failed", "y"))
    assert limit.filter(_record("lookup %s failed", "x"))  # another kind of message
    assert all(limit.filter(_record("trace %d", i, level=logging.DEBUG)) for i in range(100))
    exempt = _record("read %s failed", "x")
    setattr(exempt, EXEMPT, True)
    assert limit.filter(exempt)
    assert "repeated 1 times" in limit.summaries(everything=True)[0].text


@pytest.mark.expect_log_warnings
def test_summaries_are_logged_through_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    limit = RateLimitFilter(interval=60, burst=1)
    control = LogControl(limit)
    logger = logging.getLogger("fdfsmount.test_rate")
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(limit)
    logger.addHandler(handler)
    try:
        for i in range(4):
            logger.warning("storage %d down", i)
        control.emit_summaries(everything=True)
    finally:
        logger.removeHandler(handler)
    assert seen[0] == "storage 0 down" and "repeated 3 times" in seen[1] and len(seen) == 2


def test_journal_lines_carry_the_priority() -> None:
    line = JournalFormatter("%(name)s: %(message)s").format(_record("read %s failed", "x"))
    assert line == "<4>fdfsmount.fs: read x failed"


# ---------------------------------------------------------------- metrics and status, for real


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def fdfsmount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fdfsmount", *args], capture_output=True, text=True, timeout=60
    )


needs_fuse = pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3")


@pytest.mark.mount
@needs_fuse
def test_small_files_are_read_from_the_page_cache_from_their_first_open(
    fdfs_cluster: Cluster, tmp_path: Path
) -> None:
    small = [os.urandom(n) for n in (1, 4096, 60_000)]
    big = os.urandom(300_000)  # more than one block: read through the daemon
    small_ids = [str(upload_bytes(fdfs_cluster, data)) for data in small]
    big_id = str(upload_bytes(fdfs_cluster, big))
    port = free_port()
    options = ["timeout=10", f"metrics=127.0.0.1:{port}"]
    with mounted(fdfs_cluster.trackers, tmp_path / "mnt", options) as proc:
        mnt = proc.mountpoint
        before = scrape(port)
        for fid, data in zip(small_ids, small, strict=True):
            assert (mnt / fid).read_bytes() == data  # looked up (downloaded whole), opened
        first = scrape(port)
        for fid, data in zip(small_ids, small, strict=True):
            assert (mnt / fid).read_bytes() == data
            assert os.stat(mnt / fid).st_size == len(data)
        second = scrape(port)
        assert (mnt / big_id).read_bytes() == big
        third = scrape(port)

    def delta(a: Samples, b: Samples, op: str) -> float:
        return value(b, "fdfsmount_fuse_requests_total", op=op) - value(
            a, "fdfsmount_fuse_requests_total", op=op
        )

    assert value(first, "fdfsmount_page_cache_stores_total") == len(small)
    # The kernel answered every read of the small files, and, since no READ reached
    # the daemon, kept trusting their attributes on this read-write mount.
    assert delta(before, first, "read") == 0 and delta(before, first, "open") == len(small)
    assert delta(first, second, "read") == 0 and delta(first, second, "getattr") == 0
    assert delta(second, third, "read") > 0
    assert value(third, "fdfsmount_page_cache_stores_total") == len(small)


@needs_fuse
def test_metrics_move_by_what_was_read(fdfs_cluster: Cluster, tmp_path: Path) -> None:
    size = 5 * MIB + 12345
    payload = os.urandom(size)
    file_id = str(upload_bytes(fdfs_cluster, payload))
    port = free_port()
    options = ["timeout=10", f"metrics=127.0.0.1:{port}"]
    with mounted(fdfs_cluster.trackers, tmp_path / "mnt", options) as proc:
        path = proc.mountpoint / file_id
        os.stat(path)
        before = scrape(port)
        assert value(before, "fdfsmount_up") == 1
        with open(path, "rb") as f:
            head = f.read(2 * MIB)
            during = scrape(port)
            rest = f.read()
        assert head + rest == payload
        after = scrape(port)

        # While the file was open and read sequentially.
        assert value(during, "fdfsmount_open_files") == 1
        assert value(during, "fdfsmount_readahead_window_bytes") >= 1 * MIB
        assert value(during, "fdfsmount_read_bytes_total") - value(
            before, "fdfsmount_read_bytes_total"
        ) >= len(head)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        # Every byte of the file went through read() exactly once.
        assert delta("fdfsmount_read_bytes_total") == size
        assert delta("fdfsmount_fuse_requests_total", op="read") >= size / (1 * MIB)
        assert delta("fdfsmount_fuse_requests_total", op="open") == 1
        assert delta("fdfsmount_downloaded_bytes_total") >= size
        assert delta("fdfsmount_client_requests_total", op="download_file") >= 1
        assert delta("fdfsmount_client_received_bytes_total") >= size
        assert (
            total(after, "fdfsmount_server_request_seconds_count")
            - total(before, "fdfsmount_server_request_seconds_count")
        ) >= delta("fdfsmount_client_requests_total", op="download_file")
        # Histograms per server and command, and per FUSE operation.
        downloads = sum(
            v for (n, labels), v in after.items()
            if n == "fdfsmount_server_request_seconds_count" and ("op", "download_file") in labels
        )  # fmt: skip
        assert downloads >= delta("fdfsmount_client_requests_total", op="download_file")
        assert value(after, "fdfsmount_fuse_request_seconds_count", op="read") == value(
            after, "fdfsmount_fuse_requests_total", op="read"
        )
        assert value(after, "fdfsmount_fuse_request_seconds_bucket", op="read", le="+Inf") == value(
            after, "fdfsmount_fuse_request_seconds_count", op="read"
        )
        lookups = delta("fdfsmount_cache_hits_total") + delta("fdfsmount_cache_misses_total")
        assert lookups >= size // (128 * 1024)
        assert value(after, "fdfsmount_written_bytes_total") == 0
        assert total(after, "fdfsmount_fuse_errors_total") == total(
            before, "fdfsmount_fuse_errors_total"
        )

        # status reads the same counters through the mount's unix socket.
        done = fdfsmount("status", os.fspath(proc.mountpoint), "--json")
        assert done.returncode == 0, done.stderr
        snap = json.loads(done.stdout)
        assert snap["pid"] == proc.pid and snap["metrics"] == f"http://127.0.0.1:{port}/metrics"
        assert snap["source"] == ",".join(fdfs_cluster.trackers)
        assert snap["counters"]["fuse_bytes_read"] == value(after, "fdfsmount_read_bytes_total")
        human = fdfsmount("status", os.fspath(proc.mountpoint))
        assert human.returncode == 0, human.stderr
        assert f"pid {proc.pid}" in human.stdout and "download_file" in human.stdout
        assert "5.0 MiB" in human.stdout  # what was read


@pytest.mark.mount
@needs_fuse
def test_status_without_metrics_and_of_a_dead_daemon(
    fdfs_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The killed daemon cannot remove its state file: keep it out of /run.
    monkeypatch.setenv("FDFSMOUNT_RUNTIME_DIR", os.fspath(tmp_path / "run"))
    with mounted(fdfs_cluster.trackers, tmp_path / "mnt", ["timeout=5"]) as proc:
        done = fdfsmount("status", os.fspath(proc.mountpoint))
        assert done.returncode == 0, done.stderr
        assert "metrics     off" in done.stdout and "source      127.0.0.2:" in done.stdout
        os.kill(proc.pid, signal.SIGKILL)
        proc.process.wait(30)
        dead = fdfsmount("status", os.fspath(proc.mountpoint))
        assert dead.returncode == 1 and "fusermount3 -u -z" in dead.stderr, dead.stderr
    assert (tmp_path / "run" / f"{escape_path(os.fspath(proc.mountpoint))}.json").exists()


def test_status_says_what_is_not_an_fdfsmount_mount(tmp_path: Path) -> None:
    done = fdfsmount("status", os.fspath(tmp_path))
    assert done.returncode == 1 and "nothing is mounted there" in done.stderr
    done = fdfsmount("status", "/proc")
    assert done.returncode == 1 and "not an fdfsmount mount" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_busy_metrics_port_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = fdfsmount(
            "127.0.0.2:1", os.fspath(tmp_path / "mnt"), "-f", "-o", f"metrics=127.0.0.1:{port}"
        )
    assert done.returncode == 1 and "cannot listen there" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.mount
@needs_fuse
def test_metrics_move_by_what_was_written(fdfs_cluster: Cluster, tmp_path: Path) -> None:
    port = free_port()
    # Its own alias catalog: the name created here stays out of other tests' mounts.
    options = ["timeout=10", f"metrics=127.0.0.1:{port}", f"cache_dir={tmp_path / 'cache'}"]
    payload = os.urandom(300_000)
    with mounted(fdfs_cluster.trackers, tmp_path / "mnt", options) as proc:
        before = scrape(port)
        alias = proc.mountpoint / "group1" / f"metrics-{os.getpid()}.log"
        with open(alias, "wb") as f:
            f.write(payload[:100_000])
            f.flush()
            f.write(payload[100_000:])
        after = scrape(port)
        alias.unlink()  # deletes the file on the storage too

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("fdfsmount_written_bytes_total") == len(payload)
    assert delta("fdfsmount_write_sent_bytes_total") == len(payload)  # close() sent it all
    assert delta("fdfsmount_fuse_requests_total", op="create") == 1
    assert delta("fdfsmount_fuse_requests_total", op="write") >= 2
    assert delta("fdfsmount_write_requests_total") >= 1
    assert value(after, "fdfsmount_pending_write_files") == 0


def test_entries_of_dead_daemons_are_swept(tmp_path: Path) -> None:
    from fdfsmount.status import StatePaths, sweep_stale, write_state

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = StatePaths.for_mount("/mnt/old", tmp_path)
    write_state(stale, {"pid": gone.pid, "socket": os.fspath(stale.socket)})
    stale.socket.touch()
    live = StatePaths.for_mount("/mnt/live", tmp_path)
    write_state(live, {"pid": os.getpid(), "socket": os.fspath(live.socket)})
    orphan = tmp_path / "killed-before-mounting.sock"
    with socket.socket(socket.AF_UNIX) as closed:
        closed.bind(os.fspath(orphan))  # bound, never listening: connections are refused
    starting = tmp_path / "still-starting.sock"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(os.fspath(starting))
        listening.listen()
        assert sweep_stale(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnt-live.json", "still-starting.sock"]


# ---------------------------------------------------------------- latency histograms


def test_latency_histograms_per_server_and_operation_render_for_prometheus() -> None:
    from collections.abc import Iterator

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import Metric

    from fdfsmount.metrics import metric_families
    from fdfsmount.proto.stats import ClientStats, LatencyHistogram

    stats = ClientStats()
    for seconds in (0.0004, 0.003, 0.003, 0.2, 40.0):
        stats.observe_latency("127.0.0.10:23000", seconds, "download_file")
    stats.observe_latency("127.0.0.2:22122", 0.001, "query_fetch_one")
    fuse = LatencyHistogram()
    fuse.observe(0.002)
    snap = {
        "state": "mounted",
        "counters": {name: 0 for name in COUNTER_NAMES},
        "cache_capacity": 0,
        "readahead_max": 0,
        "fuse": {"requests": {"read": 1}, "errors": {}, "latency": {"read": fuse.as_dict()}},
        "client": {
            "requests": {}, "errors": {}, "latency": {},
            "latency_histograms": {
                server: {op: hist.as_dict()} for (server, op), hist in stats.latency.items()
            },
            "connections_opened": 0, "connections_reused": 0,
        },
    }  # fmt: skip

    class Fixed:
        def collect(self) -> Iterator[Metric]:
            return metric_families(snap)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    storage = {"server": "127.0.0.10:23000", "op": "download_file"}
    name = "fdfsmount_server_request_seconds"
    assert value(samples, f"{name}_count", **storage) == 5
    assert value(samples, f"{name}_bucket", le="0.0005", **storage) == 1
    assert value(samples, f"{name}_bucket", le="0.005", **storage) == 3
    assert value(samples, f"{name}_bucket", le="30.0", **storage) == 4  # 40 s is beyond
    assert value(samples, f"{name}_bucket", le="+Inf", **storage) == 5
    assert value(samples, f"{name}_sum", **storage) == pytest.approx(40.2064)
    tracker = {"server": "127.0.0.2:22122", "op": "query_fetch_one"}
    assert value(samples, f"{name}_count", **tracker) == 1
    assert value(samples, "fdfsmount_fuse_request_seconds_bucket", op="read", le="0.0025") == 1
    assert not any(n.endswith("_quantile") or "quantile" in dict(lbl) for n, lbl in samples)
    # status reads quantiles off the same buckets.
    merged = stats.latency[("127.0.0.10:23000", "download_file")].as_dict()
    assert LatencyHistogram.quantile(merged, 0.5) == 0.005
    assert LatencyHistogram.quantile(merged, 0.99) == float("inf")


COUNTER_NAMES = (
    "fuse_bytes_read", "fuse_bytes_written", "cache_hits", "cache_misses", "cache_evictions",
    "cache_bytes", "read_downloads", "read_bytes_downloaded", "read_prefetch_chunks",
    "read_prefetch_failures", "readahead_window", "open_files", "pending_write_files", "inodes",
    "client_bytes_sent", "client_bytes_received", "page_cache_stores",
)  # fmt: skip
