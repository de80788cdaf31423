"""Every read/write speed of the mount and the client against its strongest anchor, in one run.

For each backend (the builtin servers, and upstream FastDFS when installed) a
cluster with one group of two storages is started on loopback and, in one
run, interleaved where it matters:

  * 256 MiB sequential read through a long-lived mount (``dd bs=1M``, pages
    dropped first) vs our client streaming the file (``download_to``) and
    upstream's C ``fdfs_download_file`` -- the faster of the two is the anchor;
    the null filesystem's same ``dd`` (bytes from memory, no network) is shown
    too: the most any pyfuse3 daemon gets through FUSE on this machine;
  * warm re-read from the page cache (``cat``) vs ``cat`` of a local copy, each
    with the same history (pages dropped, read once with dd); the null
    filesystem's same re-read is shown too: the kernel's FUSE page-cache ceiling;
  * 4 KiB and 64 KiB files, open-read-close, cold and warm, vs a null pyfuse3
    filesystem (``bench/nullfs.py``, read-only) serving the same paths from
    memory; a fresh set of files per run, the three mounts interleaved, and the
    same for an ``-o ro`` mount (the anchor is read-only: no flush, no atime);
  * ``dd bs=1M conv=fsync`` of 256 MiB into a new file vs our client doing the
    same: an empty appender file plus 8 MiB appends; the same ``dd`` into a
    null filesystem that discards the bytes is shown too (``--writable``);
  * client 4 KiB download, one task, vs PyPI ``fdfs-client-py3``;
  * client ``info()`` vs a bare socket loop on one persistent connection;
  * ``download()`` of 256 MiB into memory vs ``recv_into`` one fresh bytearray;
  * the daemon's peak RSS while ``dd`` streams a 1 GiB file (aim < 150 MiB).

Prints the table with ratios (ours / anchor; medians over ``--runs``) and
writes a PNG plot of cold-read throughput vs file size for the mount, the
client and the null filesystem (needs matplotlib: the ``bench`` extra).

Usage: python -m bench [--backends builtin,native] [--runs 3] [--size-mib 256]
                       [--rss-gib 1] [--plot bench-throughput.png] [--json FILE]
Needs root and /dev/fuse (it mounts). Numbers are noisy on a shared machine:
compare ratios, not absolute values, and note the load average printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from fdfsmount.mountproc import is_mounted, mounted
from fdfsmount.proto import FileId, ServerAddr
from fdfsmount.proto import storage as st
from fdfsmount.proto.client import Client
from fdfsmount.proto.constants import HEADER_SIZE
from fdfsmount.proto.wire import decode_header
from harness.cluster import BackendUnavailable, Cluster, make_backend
from harness.process import RssSampler

MIB = 1024 * 1024
SMALL_SIZES = (4096, 64 * 1024)
PLOT_SIZES = (4096, 64 * 1024, 1 * MIB, 16 * MIB)
APPEND_CHUNK = 8 * MIB
NULLFS = Path(__file__).with_name("nullfs.py")


@dataclass
class Row:
    what: str
    ours: list[float]
    anchor_name: str
    anchor: list[float]
    unit: str
    aim: str

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.anchor)


@dataclass
class Results:
    backend: str
    rows: list[Row] = field(default_factory=list)
    plot: dict[str, dict[int, float]] = field(default_factory=dict)  # series -> size -> MiB/s
    rss_peak_mib: float = 0.0
    rss_long_lived_mib: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)


# ---------------------------------------------------------------- helpers


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(*args: str | os.PathLike[str]) -> None:
    subprocess.run([os.fspath(a) for a in args], check=True, stdout=subprocess.DEVNULL)


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cat(path: Path) -> None:
    with open(os.devnull, "wb") as out:
        subprocess.run(["cat", os.fspath(path)], check=True, stdout=out)


def open_read_close(paths: list[Path]) -> float:
    """Files per second."""
    started = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
    return len(paths) / (time.perf_counter() - started)


async def repeated(chunk: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield chunk


def local_file(path: Path, size: int) -> Path:
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(left, MIB)
            out.write(os.urandom(n))
            left -= n
    return path


@contextmanager
def null_mount(where: Path, files: dict[str, int], *, writable: bool = False) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    spec = where.with_suffix(".json")
    spec.write_text(json.dumps(files))
    flags = ["--writable"] if writable else []
    proc = subprocess.Popen(
        [sys.executable, os.fspath(NULLFS), *flags, os.fspath(where), os.fspath(spec)]
    )
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(where):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the null filesystem did not mount")
            time.sleep(0.05)
        yield where
    finally:
        subprocess.run(["fusermount3", "-u", os.fspath(where)], check=False)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        spec.unlink(missing_ok=True)


# ---------------------------------------------------------------- raw-socket anchors


def raw_exchange_loop(addr: ServerAddr, request: bytes, count: int) -> float:
    """Requests per second on one kept-open blocking socket (the reply read whole)."""
    buf = bytearray(64 * 1024)
    view = memoryview(buf)
    with socket.create_connection((addr.host, addr.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        for _ in range(count):
            sock.sendall(request)
            got = 0
            while got < HEADER_SIZE:
                got += sock.recv_into(view[got:])
            header = decode_header(view[:HEADER_SIZE])
            assert header.status == 0, header
            while got < HEADER_SIZE + header.length:
                got += sock.recv_into(view[got:])
        return count / (time.perf_counter() - started)


def raw_download_fresh(addr: ServerAddr, fid: FileId, size: int) -> float:
    """Seconds to DOWNLOAD_FILE with ``recv_into`` one fresh bytearray of the file's size."""
    request = st.download_request(fid.group, fid.remote_name).encode()
    with socket.create_connection((addr.host, addr.port)) as sock:
        started = time.perf_counter()
        sock.sendall(request)
        header = decode_header(sock.recv(HEADER_SIZE, socket.MSG_WAITALL))
        assert header.status == 0 and header.length == size, header
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            got += sock.recv_into(view[got:])
        return time.perf_counter() - started


# ---------------------------------------------------------------- one backend


@dataclass
class Uploaded:
    big: FileId
    huge: FileId | None
    small: dict[int, list[list[FileId]]]  # size -> one set of files per run
    plot: dict[int, list[FileId]]


async def upload_all(
    trackers: list[str], big_path: Path, huge_size: int, small_count: int, runs: int
) -> Uploaded:
    async with Client(trackers) as client:
        big = await client.upload(big_path, ext="bin", group="group1")
        huge = None
        if huge_size:
            huge = await client.upload(
                repeated(os.urandom(MIB), huge_size // MIB), size=huge_size, ext="bin",
                group="group1",
            )  # fmt: skip
        small = {
            size: [
                [
                    await client.upload(os.urandom(size), ext="dat", group="group1")
                    for _ in range(small_count if size <= 4096 else small_count // 2)
                ]
                for _ in range(runs)
            ]
            for size in SMALL_SIZES
        }
        plot = {size: sets[0] for size, sets in small.items()}
        for size in PLOT_SIZES:
            if size not in plot:
                count = max(2, min(32, (64 * MIB) // size))
                plot[size] = [
                    await client.upload(os.urandom(size), ext="dat", group="group1")
                    for _ in range(count)
                ]
        return Uploaded(big, huge, small, plot)


async def client_download_to(trackers: list[str], fid: FileId) -> float:
    async with Client(trackers) as client:
        await client.info(fid)  # warm the pool, as the long-lived mount is
        with await trio.to_thread.run_sync(open, os.devnull, "wb") as out:
            started = time.perf_counter()
            await client.download_to(fid, out)
            return time.perf_counter() - started


async def client_download_memory(trackers: list[str], fid: FileId) -> float:
    async with Client(trackers) as client:
        await client.info(fid)
        started = time.perf_counter()
        data = await client.download(fid)
        seconds = time.perf_counter() - started
        del data
        return seconds


async def client_appends(trackers: list[str], src: Path) -> float:
    async with Client(trackers) as client:
        await client.list_groups()
        started = time.perf_counter()
        fid = await client.upload(b"", ext="bin", group="group1", appender=True)
        async with await trio.open_file(src, "rb") as f:
            while chunk := await f.read(APPEND_CHUNK):
                await client.append(fid, chunk)
        return time.perf_counter() - started


async def client_small_ops(trackers: list[str], fids: list[FileId], what: str) -> float:
    """Operations per second, one task, pooled connections (after one warm-up call).

    The client reads through its replica directory, as the mount's does (one
    round trip per call instead of a tracker query first).
    """
    async with Client(trackers, replica_directory=True) as client:
        if what == "download":
            await client.download(fids[0])
            started = time.perf_counter()
            for fid in fids:
                await client.download(fid)
        else:
            await client.info(fids[0])
            started = time.perf_counter()
            for fid in fids:
                await client.info(fid)
        return len(fids) / (time.perf_counter() - started)


async def client_plot(trackers: list[str], fids: list[FileId], size: int) -> float:
    """MiB/s of ``download()`` of each file in turn."""
    async with Client(trackers, replica_directory=True) as client:
        await client.list_groups()
        started = time.perf_counter()
        for fid in fids:
            await client.download(fid)
        return len(fids) * size / MIB / (time.perf_counter() - started)


async def storage_of(trackers: list[str], fid: FileId) -> ServerAddr:
    async with Client(trackers) as client:
        return (await client.tracker_pick(fid))[0]


def pypi_client_downloads(tracker: str, tmp: Path, fids: list[FileId]) -> float | None:
    try:
        from fdfs_client.client import Fdfs_client
    except ImportError:
        return None
    conf = tmp / "pypi-client.conf"
    conf.write_text(f"connect_timeout=10\nnetwork_timeout=30\ntracker_server={tracker}\n")
    fdfs = Fdfs_client(os.fspath(conf))
    fdfs.download_to_buffer(str(fids[0]).encode())
    started = time.perf_counter()
    for fid in fids:
        fdfs.download_to_buffer(str(fid).encode())
    return len(fids) / (time.perf_counter() - started)


def measure(backend: str, args: argparse.Namespace, tmp: Path) -> Results:
    size = args.size_mib * MIB
    res = Results(backend)
    with Cluster(groups={"group1": 2}, backend=backend) as cluster:
        trackers = cluster.trackers
        big_local = local_file(tmp / "big.bin", size)
        up = trio.run(
            upload_all, trackers, big_local, args.rss_gib * 1024 * MIB, args.small, args.runs
        )
        addr = trio.run(storage_of, trackers, up.big)
        conf = cluster.client_conf
        print(f"[{backend}] uploaded; tracker {trackers[0]}, first storage {addr}", flush=True)

        mount_read: list[float] = []
        client_stream: list[float] = []
        upstream: list[float] = []
        to_memory: list[float] = []
        fresh_recv: list[float] = []
        warm_mount: list[float] = []
        warm_local: list[float] = []
        mount_write: list[float] = []
        client_write: list[float] = []
        null_write: list[float] = []
        warm_null: list[float] = []
        null_read: list[float] = []
        small: dict[tuple[int, str], list[float]] = {}
        null_files = {str(f): s for s, fids in up.plot.items() for f in fids}
        null_files[str(up.big)] = size
        null_files.update(
            (str(f), fsize) for fsize, sets in up.small.items() for fids in sets for f in fids
        )
        with contextlib.ExitStack() as stack:
            proc = stack.enter_context(mounted(trackers, tmp / "mnt", ["timeout=30"]))
            ro = stack.enter_context(mounted(trackers, tmp / "mnt-ro", ["timeout=30", "ro"]))
            null = stack.enter_context(null_mount(tmp / "null", null_files))
            sink = stack.enter_context(null_mount(tmp / "null-w", {}, writable=True))
            mnt = proc.mountpoint
            big = mnt / str(up.big)
            # Small files first, each run on files none of the three mounts has seen
            # (cold: the daemon fetches each), interleaved with the null filesystem.
            for run_index in range(args.runs):
                for fsize in SMALL_SIZES:
                    fids = up.small[fsize][run_index]
                    for name, root in (("", mnt), ("ro-", ro.mountpoint), ("null-", null)):
                        paths = [root / str(f) for f in fids]
                        small.setdefault((fsize, f"{name}cold"), []).append(
                            open_read_close(paths)
                        )
                        small.setdefault((fsize, f"{name}warm"), []).append(
                            open_read_close(paths)
                        )
            for series, root in (("mount", mnt), ("null filesystem", null)):
                res.plot[series] = {}
                for psize, fids in up.plot.items():
                    paths = [root / str(f) for f in fids]
                    for p in paths:
                        drop_page_cache(p)
                    res.plot[series][psize] = open_read_close(paths) * psize / MIB
            null_big = null / str(up.big)
            for _ in range(args.runs):
                # The same history for the three warm re-reads: pages dropped, read
                # once with dd, then cat.
                drop_page_cache(big)
                mount_read.append(
                    timed(lambda: run("dd", f"if={big}", "of=/dev/null", "bs=1M", "status=none"))
                )
                warm_mount.append(timed(lambda: cat(big)))
                for path, cold, warm in (
                    (big_local, None, warm_local),
                    (null_big, null_read, warm_null),
                ):
                    drop_page_cache(path)
                    took = timed(lambda p=path: run(  # type: ignore[misc]
                        "dd", f"if={p}", "of=/dev/null", "bs=1M", "status=none"
                    ))  # fmt: skip
                    if cold is not None:
                        cold.append(took)
                    warm.append(timed(lambda p=path: cat(p)))  # type: ignore[misc]
                client_stream.append(trio.run(client_download_to, trackers, up.big))
                if shutil.which("fdfs_download_file"):
                    upstream.append(
                        timed(lambda: run("fdfs_download_file", conf, str(up.big), "/dev/null"))
                    )
                to_memory.append(trio.run(client_download_memory, trackers, up.big))
                fresh_recv.append(raw_download_fresh(addr, up.big, size))
            for i in range(args.runs):
                dest = mnt / "group1" / f"bench-write-{i}.bin"
                mount_write.append(
                    timed(lambda d=dest: run(  # type: ignore[misc]
                        "dd", f"if={big_local}", f"of={d}", "bs=1M", "conv=fsync", "status=none"
                    ))
                )  # fmt: skip
                client_write.append(trio.run(client_appends, trackers, big_local))
                null_write.append(
                    timed(lambda d=sink / f"sink-{i}.bin": run(  # type: ignore[misc]
                        "dd", f"if={big_local}", f"of={d}", "bs=1M", "conv=fsync", "status=none"
                    ))
                )  # fmt: skip
            if up.huge is not None:
                # The same after all of the above (writes included), for information.
                with RssSampler(proc.pid) as rss:
                    run("dd", f"if={mnt / str(up.huge)}", "of=/dev/null", "bs=1M", "status=none")
                res.rss_long_lived_mib = rss.peak_mib
        if up.huge is not None:
            # A fresh daemon streaming 1 GiB: what the read path holds.
            with mounted(trackers, tmp / "mnt-rss", ["timeout=30"]) as proc:
                with RssSampler(proc.pid) as rss:
                    run("dd", f"if={proc.mountpoint / str(up.huge)}", "of=/dev/null", "bs=1M",
                        "status=none")  # fmt: skip
                res.rss_peak_mib = rss.peak_mib
        big_local.unlink()

        res.plot["client download()"] = {
            psize: trio.run(client_plot, trackers, fids, psize) for psize, fids in up.plot.items()
        }

        ops = up.small[4096][0]
        dl_ours = trio.run(client_small_ops, trackers, ops, "download")
        dl_pypi = pypi_client_downloads(trackers[0], tmp, ops)
        info_ours = trio.run(client_small_ops, trackers, ops, "info")
        info_req = st.query_file_info_request(up.big.group, up.big.remote_name).encode()
        info_raw = raw_exchange_loop(addr, info_req, len(ops))

    mib = size / MIB

    def rate(times: list[float]) -> list[float]:
        return [mib / t for t in times]

    seq_anchor, seq_name = rate(client_stream), "client download_to"
    if upstream and statistics.median(rate(upstream)) > statistics.median(seq_anchor):
        seq_anchor, seq_name = rate(upstream), "C fdfs_download_file"
    rows = res.rows
    rows.append(Row(f"{args.size_mib} MiB seq read, mount (dd bs=1M)", rate(mount_read),
                    seq_name, seq_anchor, "MiB/s", ">= 0.8"))  # fmt: skip
    if upstream:
        rows.append(Row("  (same, vs the other anchor)", rate(mount_read),
                        "client download_to" if seq_name != "client download_to"
                        else "C fdfs_download_file",
                        rate(client_stream) if seq_name != "client download_to"
                        else rate(upstream), "MiB/s", "info"))  # fmt: skip
    rows.append(Row("  (same, vs the null pyfuse3 fs: the FUSE ceiling)", rate(mount_read),
                    "null fs, same dd, bytes from memory", rate(null_read), "MiB/s",
                    "info"))  # fmt: skip
    rows.append(Row("warm re-read from page cache (cat)", rate(warm_mount),
                    "cat of a local file", rate(warm_local), "MiB/s", ">= 0.85"))  # fmt: skip
    rows.append(Row("  (null pyfuse3 fs, the same re-read)", rate(warm_null),
                    "cat of a local file", rate(warm_local), "MiB/s", "info"))  # fmt: skip
    for fsize in SMALL_SIZES:
        for temp, aim in (("cold", ">= 0.6"), ("warm", ">= 0.8")):
            rows.append(Row(f"{fsize // 1024} KiB files open-read-close, {temp}",
                            small[(fsize, temp)], f"null pyfuse3 fs (ro), {temp}",
                            small[(fsize, f"null-{temp}")], "files/s", aim))  # fmt: skip
            rows.append(Row("  (same, -o ro mount)", small[(fsize, f"ro-{temp}")],
                            f"null pyfuse3 fs (ro), {temp}", small[(fsize, f"null-{temp}")],
                            "files/s", "info"))  # fmt: skip
    rows.append(Row(f"dd bs=1M conv=fsync {args.size_mib} MiB new file", rate(mount_write),
                    "client appender + 8 MiB appends", rate(client_write), "MiB/s",
                    ">= 0.8"))  # fmt: skip
    rows.append(Row("  (same, vs a null pyfuse3 fs that discards the bytes)", rate(mount_write),
                    "null fs, same dd", rate(null_write), "MiB/s", "info"))  # fmt: skip
    if dl_pypi is not None:
        rows.append(Row("client 4 KiB download, one task", [dl_ours], "PyPI fdfs-client-py3",
                        [dl_pypi], "ops/s", ">= 1.5"))  # fmt: skip
    rows.append(Row("client info(), one task", [info_ours], "bare socket loop, one connection",
                    [info_raw], "ops/s", ">= 0.5"))  # fmt: skip
    rows.append(Row(f"download() {args.size_mib} MiB into memory", rate(to_memory),
                    "recv_into one fresh bytearray", rate(fresh_recv), "MiB/s",
                    ">= 0.8"))  # fmt: skip
    load = os.getloadavg()
    res.load = (load[0], load[1])
    return res


# ---------------------------------------------------------------- output


def print_table(res: Results) -> None:
    print(f"\n## {res.backend} servers (load average {res.load[0]:.1f} / {res.load[1]:.1f})\n")
    print("| what | fdfsmount | anchor, same run | ratio | aim |")
    print("|---|---|---|---|---|")
    for r in res.rows:
        ours, anchor = statistics.median(r.ours), statistics.median(r.anchor)
        print(f"| {r.what} | {ours:.0f} {r.unit} | {r.anchor_name} {anchor:.0f} | "
              f"**{r.ratio:.2f}** | {r.aim} |")  # fmt: skip
    if res.rss_peak_mib:
        print(f"| daemon peak RSS streaming 1 GiB, fresh mount | {res.rss_peak_mib:.0f} MiB "
              f"| after every row above in one daemon: {res.rss_long_lived_mib:.0f} MiB "
              "| | < 150 MiB |")  # fmt: skip


def write_plot(results: list[Results], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: matplotlib is not installed; pip install '.[bench]')")
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        for series, points in sorted(res.plot.items()):
            sizes = sorted(points)
            ax.plot(sizes, [points[s] for s in sizes], marker="o", label=series)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("file size (bytes)")
        ax.set_ylabel("cold open-read-close throughput (MiB/s)")
        ax.set_title(f"{res.backend} servers")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument("--backends", default="builtin,native",
                        help="comma-separated; native is skipped when not installed")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=300, help="number of 4 KiB files")
    parser.add_argument("--rss-gib", type=int, default=1, help="0: skip the RSS check")
    parser.add_argument("--plot", type=Path, default=Path("bench-throughput.png"))
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print("python -m bench: needs root and /dev/fuse (it mounts)", file=sys.stderr)
        return 2
    results: list[Results] = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        try:
            make_backend(backend).check_available()
        except BackendUnavailable as exc:
            print(f"[{backend}] skipped: {exc}")
            continue
        with tempfile.TemporaryDirectory(prefix="fdfs-bench-") as tmp:
            res = measure(backend, args, Path(tmp))
        print_table(res)
        results.append(res)
    if not results:
        return 1
    write_plot(results, args.plot)
    if args.json:
        args.json.write_text(json.dumps([
            {"backend": r.backend, "load": r.load, "rss_peak_mib": r.rss_peak_mib,
             "rss_long_lived_mib": r.rss_long_lived_mib,
             "rows": [{"what": x.what, "ours": x.ours, "anchor": x.anchor_name,
                       "anchor_values": x.anchor, "ratio": x.ratio, "aim": x.aim}
                      for x in r.rows],
             "plot": {k: {str(s): v for s, v in p.items()} for k, p in r.plot.items()}}
            for r in results
        ], indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
