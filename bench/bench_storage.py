"""Throughput of the builtin storage against raw loopback sockets, in the same run.

Usage: ``python bench/bench_storage.py [--size-mib 256] [--rounds 5] [--dir DIR]``

Starts a builtin tracker and one storage (real processes on loopback),
uploads and downloads one file of ``--size-mib`` MiB with plain blocking
sockets, and compares them with a raw loopback transfer of the same size
between two sockets of this process (sendall from memory, recv_into a
reused buffer), interleaved over ``--rounds`` rounds. Prints the best MiB/s
of each, the ratios of the bests and the per-round median ratios; exits 1
if a median ratio is below ``--min-ratio`` (default 0: report only).

The storage keeps its files under ``--dir``, by default on tmpfs
(``/dev/shm``) when there is one: what is measured is the server, not the
disk (on a throttled virtual disk, writing 256 MiB can be slower than any
socket).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fdfsmount.proto import storage as S  # noqa: E402
from fdfsmount.proto.wire import decode_header  # noqa: E402
from harness.process import ChildProcess  # noqa: E402

MIB = 1 << 20
CHUNK = 1 * MIB
HOST = "127.0.0.1"


def recv_exact_discard(sock: socket.socket, size: int, buf: memoryview) -> int:
    crc = 0
    remaining = size
    while remaining:
        n = sock.recv_into(buf[: min(remaining, len(buf))])
        if n == 0:
            raise ConnectionError("closed early")
        remaining -= n
    return crc


def raw_loopback(payload: memoryview) -> float:
    """Seconds to move the payload between two loopback sockets."""
    size = len(payload)
    with socket.create_server((HOST, 0)) as server:
        port = server.getsockname()[1]
        done = threading.Event()
        elapsed = [0.0]

        def receiver() -> None:
            conn, _ = server.accept()
            with conn:
                buf = memoryview(bytearray(256 * 1024))
                recv_exact_discard(conn, size, buf)
                conn.sendall(b"k")
            done.set()

        thread = threading.Thread(target=receiver)
        thread.start()
        with socket.create_connection((HOST, port)) as client:
            start = time.perf_counter()
            client.sendall(payload)
            assert client.recv(1) == b"k"
            elapsed[0] = time.perf_counter() - start
        thread.join()
    return elapsed[0]


def upload(addr: tuple[str, int], payload: memoryview) -> tuple[float, str]:
    with socket.create_connection(addr) as sock:
        start = time.perf_counter()
        sock.sendall(S.upload_request(len(payload), "bin").encode())
        sock.sendall(payload)
        header = decode_header(_recv_exact(sock, 10))
        body = _recv_exact(sock, header.length)
        elapsed = time.perf_counter() - start
    assert header.status == 0, header
    return elapsed, S.decode_file_id_reply(body).remote_name


def download(addr: tuple[str, int], group: str, remote: str, size: int) -> float:
    buf = memoryview(bytearray(256 * 1024))
    with socket.create_connection(addr) as sock:
        start = time.perf_counter()
        sock.sendall(S.download_request(group, remote).encode())
        header = decode_header(_recv_exact(sock, 10))
        assert header.status == 0 and header.length == size, header
        recv_exact_discard(sock, size, buf)
        return time.perf_counter() - start


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return bytes(data)


def start_nodes(root: Path) -> tuple[list[ChildProcess], tuple[str, int]]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    py = sys.executable
    tracker = ChildProcess(
        [py, "-m", "harness.tracker", "--bind", HOST, "--port", "0", "--base-dir", str(root / "t")],
        name="tracker", log_dir=root / "t", cwd=REPO, env=env,
    ).start()  # fmt: skip
    assert tracker.ready_match is not None
    tport = tracker.ready_match.group(1)
    storage = ChildProcess(
        [
            py, "-m", "harness.storage", "--group", "group1", "--bind", HOST, "--port", "0",
            "--base-dir", str(root / "s"), "--tracker", f"{HOST}:{tport}",
        ],
        name="storage", log_dir=root / "s" / "log", cwd=REPO, env=env,
    )  # fmt: skip
    procs = [tracker]
    try:
        storage.start()
    except BaseException:
        tracker.terminate()
        raise
    procs.append(storage)
    assert storage.ready_match is not None
    return procs, (HOST, int(storage.ready_match.group(1)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-ratio", type=float, default=0.0)
    shm = Path("/dev/shm")
    default_dir = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    parser.add_argument("--dir", default=default_dir, help="where the storage keeps files")
    args = parser.parse_args()
    size = args.size_mib * MIB
    payload = memoryview(os.urandom(size))
    zlib.crc32(payload)  # touch every page before timing
    with tempfile.TemporaryDirectory(prefix="fdfs-bench-", dir=args.dir) as tmp:
        procs, addr = start_nodes(Path(tmp))
        try:
            raws, ups, downs = [], [], []
            # Interleaved, so each round's ratios compare runs made under the
            # same machine load.
            for _ in range(args.rounds):
                raws.append(raw_loopback(payload))
                elapsed, remote = upload(addr, payload)
                ups.append(elapsed)
                downs.append(download(addr, "group1", remote, size))
        finally:
            for proc in reversed(procs):
                proc.terminate()
    mib = size / MIB
    raw_rate, up_rate, down_rate = mib / min(raws), mib / min(ups), mib / min(downs)
    up_ratios = sorted(r / u for r, u in zip(raws, ups, strict=True))
    down_ratios = sorted(r / d for r, d in zip(raws, downs, strict=True))
    where = args.dir or "/tmp"
    print(f"file size            {mib:.0f} MiB, {args.rounds} interleaved rounds, files in {where}")
    print(f"raw loopback socket  {raw_rate:8.0f} MiB/s (best)")
    print(
        f"storage upload       {up_rate:8.0f} MiB/s (best)   ratio {up_rate / raw_rate:.2f}"
        f" of best, per-round median {statistics.median(up_ratios):.2f}"
    )
    print(
        f"storage download     {down_rate:8.0f} MiB/s (best)   ratio {down_rate / raw_rate:.2f}"
        f" of best, per-round median {statistics.median(down_ratios):.2f}"
    )
    worst = min(statistics.median(up_ratios), statistics.median(down_ratios))
    return 1 if worst < args.min_ratio else 0


if __name__ == "__main__":
    sys.exit(main())
