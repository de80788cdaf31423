"""Small-request speed of the builtin servers against upstream's, in one run.

Starts a one-storage builtin cluster and a native one (upstream
``fdfs_trackerd``/``fdfs_storaged``), then measures on both over ``--rounds``
rounds. Within a round each workload runs ``--slice`` requests on one backend,
then as many on the other, and so on to ``--ops`` requests each, so that the
two sides compared meet the machine's load of the same moments (who goes first
alternates from slice to slice); a workload's time on a backend is the sum of
its slices:

  * a client that behaves like upstream's C client and most other outside
    clients: a blocking socket with Nagle left on (no ``TCP_NODELAY``), one
    persistent connection, every request written as a header write followed
    by a body write -- ``--small-kib`` KiB uploads, then downloads of them;
  * the same client's file info on a new connection per request (upstream's
    C client with its default ``use_connection_pool = false``);
  * our client (`fdfsmount.proto.client.Client`, one task): 4 KiB upload,
    download, info and delete.

The clusters keep their files under ``--dir``, by default on tmpfs
(``/dev/shm``) when it has room: what is compared is the servers' cost per
request, which a shared disk's file creation (from about 50 us to over 1 ms
a file, changing from one minute to the next, for both backends alike) would
bury. ``--dir /tmp`` (or any directory on a disk) measures on that disk.

Prints ops/s for both backends and builtin / upstream per workload (median of
the per-round ratios), and the CPU the servers spent per operation (tracker and
storage together, from ``/proc/<pid>/stat``): where the builtin servers lose
time, it is there. Exits 1 if a ratio is below ``--min-ratio`` (default 0:
report only). Needs the upstream servers; without them it says so and exits 2.

Usage: .venv/bin/python bench/bench_servers.py [--rounds 4] [--ops 400] [--slice 20]
       [--small-kib 5] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from fdfsmount.proto import FileId
from fdfsmount.proto import storage as st
from fdfsmount.proto.client import Client
from fdfsmount.proto.constants import HEADER_SIZE
from fdfsmount.proto.message import Request
from fdfsmount.proto.wire import decode_header
from harness.cluster import Cluster
from harness.native import native_available, unavailable_reason


class SplitWriteClient:
    """One persistent blocking connection, Nagle on, header and body written separately."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)))
        # Deliberately no TCP_NODELAY: that is what the C client does.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)

    def close(self) -> None:
        self.sock.close()

    def exchange(self, request: Request, payload: bytes = b"") -> bytes:
        raw = request.encode()
        self.sock.sendall(raw[:HEADER_SIZE])
        self.sock.sendall(raw[HEADER_SIZE:] + payload)
        header = decode_header(self._recv(HEADER_SIZE))
        body = self._recv(header.length)
        if header.status:
            raise OSError(header.status, f"cmd {request.cmd} refused")
        return body

    def _recv(self, size: int) -> bytes:
        data = self.sock.recv(size, socket.MSG_WAITALL) if size else b""
        if len(data) != size:
            raise ConnectionError("server closed the connection")
        return data


def split_write_uploads(client: SplitWriteClient, size: int, count: int) -> list[str]:
    payload = b"s" * size
    names = []
    for _ in range(count):
        body = client.exchange(st.upload_request(size, "bin"), payload)
        names.append(st.decode_file_id_reply(body).remote_name)
    return names


def split_write_downloads(
    client: SplitWriteClient, group: str, names: list[str], size: int
) -> None:
    for name in names:
        body = client.exchange(st.download_request(group, name))
        assert len(body) == size


def connection_per_request_info(address: str, group: str, names: list[str]) -> None:
    """File info on a new connection each (upstream's C client without its pool)."""
    for name in names:
        client = SplitWriteClient(address)
        try:
            client.exchange(st.query_file_info_request(group, name))
        finally:
            client.close()


#: One workload's result: operations per second, and the servers' CPU per operation (s).
Result = tuple[float, float]

T = TypeVar("T")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerCpu:
    """CPU time the server processes of one cluster have used (user + system, all threads).

    From ``/proc/<pid>/stat``, which counts the threads that have ended too
    (the builtin servers' connection threads come and go).
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    @classmethod
    def of(cls, cluster: Cluster) -> ServerCpu:
        return cls([node.pid for node in cluster.nodes if node.pid is not None])

    def seconds(self) -> float:
        ticks = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / CLOCK_TICKS


def timed(fn: Callable[..., T], *args: object) -> tuple[float, T]:
    """``fn(*args)`` and the seconds it took (run in a worker thread, timed there)."""
    started = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - started, value


@dataclass
class Backend:
    """One cluster under test, and the files this round's workloads made on it."""

    cluster: Cluster
    client: Client
    cpu: ServerCpu
    split: SplitWriteClient | None = None  # the split-write client's one connection
    names: list[str] = field(default_factory=list)  # the split-write client's uploads
    fids: list[FileId] = field(default_factory=list)  # our client's uploads

    @property
    def address(self) -> str:
        return self.cluster.storages[0].address

    def split_client(self) -> SplitWriteClient:
        if self.split is None:
            self.split = SplitWriteClient(self.address)
        return self.split

    def close_split(self) -> None:
        if self.split is not None:
            self.split.close()
            self.split = None


#: One slice of a workload: runs requests ``first`` .. ``first + count - 1`` on a
#: backend (``size``: the small files' size) and returns the seconds they took.
Slice = Callable[[Backend, int, int, int], Awaitable[float]]


async def split_upload(b: Backend, first: int, count: int, size: int) -> float:
    client = b.split_client()
    elapsed, names = await trio.to_thread.run_sync(timed, split_write_uploads, client, size, count)
    b.names.extend(names)
    return elapsed


async def split_download(b: Backend, first: int, count: int, size: int) -> float:
    names = b.names[first : first + count]
    work = partial(split_write_downloads, b.split_client(), "group1", names, size)
    return (await trio.to_thread.run_sync(timed, work))[0]


async def new_connection_info(b: Backend, first: int, count: int, size: int) -> float:
    names = b.names[first : first + count]
    work = partial(connection_per_request_info, b.address, "group1", names)
    return (await trio.to_thread.run_sync(timed, work))[0]


async def client_upload(b: Backend, first: int, count: int, size: int) -> float:
    data = b"c" * 4096
    client = b.client
    started = time.perf_counter()
    fids = [await client.upload(data, ext="txt") for _ in range(count)]
    elapsed = time.perf_counter() - started
    b.fids.extend(fids)
    return elapsed


def client_each(op: Callable[[Client, FileId], Awaitable[object]]) -> Slice:
    """Our client's ``op`` on each file `client_upload` made."""

    async def workload(b: Backend, first: int, count: int, size: int) -> float:
        client = b.client
        fids = b.fids[first : first + count]
        started = time.perf_counter()
        for fid in fids:
            await op(client, fid)
        return time.perf_counter() - started

    return workload


def workloads(small_kib: int) -> dict[str, Slice]:
    """In the order they run: each uses the files the ones before it made."""
    split = f"split-write {small_kib} KiB"
    return {
        f"{split} upload": split_upload,
        f"{split} download": split_download,
        "new connection per info": new_connection_info,
        "client 4 KiB upload": client_upload,
        "client 4 KiB download": client_each(Client.download),
        "client 4 KiB info": client_each(Client.info),
        "client 4 KiB delete": client_each(Client.delete),  # last: it removes the files
    }


async def interleaved(
    backends: dict[str, Backend], run_slice: Slice, ops: int, step: int, size: int, number: int
) -> dict[str, Result]:
    """One workload on every backend, ``step`` requests on one and then the same on
    the other, so that both meet the machine's load of the same moments (who goes
    first alternates); per backend its rate and its servers' CPU per request."""
    names = list(backends)
    seconds = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    for k, first in enumerate(range(0, ops, step)):
        count = min(step, ops - first)
        for name in names if (number + k) % 2 == 0 else reversed(names):
            b = backends[name]
            cpu_before = b.cpu.seconds()
            seconds[name] += await run_slice(b, first, count, size)
            cpu[name] += b.cpu.seconds() - cpu_before
    return {name: (ops / seconds[name], cpu[name] / ops) for name in names}


async def one_round(
    backends: dict[str, Backend], args: argparse.Namespace, number: int
) -> dict[str, dict[str, Result]]:
    """Every workload, interleaved on both backends slice by slice (`interleaved`)."""
    results: dict[str, dict[str, Result]] = {name: {} for name in backends}
    size = args.small_kib * 1024
    for workload, run_slice in workloads(args.small_kib).items():
        by_backend = await interleaved(backends, run_slice, args.ops, args.slice, size, number)
        for name, result in by_backend.items():
            results[name][workload] = result
        if run_slice is new_connection_info:
            for b in backends.values():  # not measured: the split-write files are done with
                b.close_split()
                for name in b.names:
                    await b.client.delete(FileId("group1", name))
                b.names.clear()
    for b in backends.values():
        b.fids.clear()
    return results


async def run(clusters: dict[str, Cluster], args: argparse.Namespace) -> list[dict]:
    rounds = []
    async with (
        Client(clusters["builtin"].trackers) as ours,
        Client(clusters["native"].trackers) as theirs,
    ):
        backends = {
            name: Backend(cluster, client, ServerCpu.of(cluster))
            for (name, cluster), client in zip(clusters.items(), (ours, theirs), strict=True)
        }
        for b in backends.values():  # warm up pools and page caches
            for workload, run_slice in workloads(args.small_kib).items():
                if workload.startswith("client"):
                    await run_slice(b, 0, 20, 4096)
            b.fids.clear()
        try:
            for number in range(args.rounds):
                rounds.append(await one_round(backends, args, number))
        finally:
            for b in backends.values():
                b.close_split()
    return rounds


def ram_dir() -> Path | None:
    """``/dev/shm`` if it is writable and has 4 GiB free (a container's small one is
    not used: each store path holds 65,536 directories), else None."""
    shm = Path("/dev/shm")
    try:
        vfs = os.statvfs(shm)
    except OSError:
        return None
    if os.access(shm, os.W_OK) and vfs.f_bavail * vfs.f_frsize >= 4 << 30:
        return shm
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=4, help="an even number: each backend goes first as often"
    )
    parser.add_argument("--ops", type=int, default=400, help="requests per workload and round")
    parser.add_argument(
        "--slice", type=int, default=20,
        help="requests on one backend before the other takes over (within a workload)",
    )  # fmt: skip
    parser.add_argument("--small-kib", type=int, default=5)
    parser.add_argument("--min-ratio", type=float, default=0.0)
    parser.add_argument(
        "--dir", type=Path, default=ram_dir(),
        help="where the clusters keep their files (default: /dev/shm when it is writable with"
        " 4 GiB free, as the test command picks it, else the temp directory)",
    )  # fmt: skip
    args = parser.parse_args()
    for option in ("rounds", "ops", "slice", "small_kib"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if not native_available():
        print(f"bench_servers: needs the upstream servers: {unavailable_reason()}")
        return 2
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"--dir {args.dir}: no such directory")
    with (
        tempfile.TemporaryDirectory(prefix="fdfs-bench-", dir=args.dir) as tmp,
        Cluster({"group1": 1}, backend="builtin", base_dir=Path(tmp, "builtin")) as builtin,
        Cluster({"group1": 1}, backend="native", base_dir=Path(tmp, "native")) as native,
    ):
        rounds = trio.run(run, {"builtin": builtin, "native": native}, args)
    print(
        f"{args.rounds} interleaved rounds of {args.ops} requests; rates are medians;"
        f" files in {Path(tmp).parent}"
    )
    print(
        f"{'workload':32} {'builtin':>9} {'upstream':>9} {'ratio':>6}"
        f"   server CPU per op, builtin / upstream"
    )
    worst = float("inf")
    for name in rounds[0]["builtin"]:
        ours = statistics.median(r["builtin"][name][0] for r in rounds)
        theirs = statistics.median(r["native"][name][0] for r in rounds)
        ratio = statistics.median(r["builtin"][name][0] / r["native"][name][0] for r in rounds)
        # Over all rounds: /proc counts CPU in clock ticks (10 ms), too coarse for one round.
        our_cpu = statistics.fmean(r["builtin"][name][1] for r in rounds) * 1e6
        their_cpu = statistics.fmean(r["native"][name][1] for r in rounds) * 1e6
        worst = min(worst, ratio)
        print(
            f"{name:32} {ours:9.0f} {theirs:9.0f} {ratio:6.2f}"
            f"   {our_cpu:5.0f} / {their_cpu:3.0f} µs"
        )
    step = 1e6 / CLOCK_TICKS / (args.rounds * args.ops)
    print(
        "(ops/s; server CPU: the tracker's and the storage's together, mean over the rounds,"
        f" in steps of {step:.0f} µs: /proc counts clock ticks)"
    )
    return 1 if worst < args.min_ratio else 0


if __name__ == "__main__":
    sys.exit(main())
