"""Small-request speed of the builtin servers against upstream's, in one run.

Starts a one-storage builtin cluster and a native one (upstream
``fdfs_trackerd``/``fdfs_storaged``), then measures on both, interleaved over
``--rounds`` rounds (each backend goes first in every other round):

  * a client that behaves like upstream's C client and most other outside
    clients: a blocking socket with Nagle left on (no ``TCP_NODELAY``), one
    persistent connection, every request written as a header write followed
    by a body write -- ``--small-kib`` KiB uploads, then downloads of them;
  * the same client's file info on a new connection per request (upstream's
    C client with its default ``use_connection_pool = false``);
  * our client (`fdfsmount.proto.client.Client`, one task): 4 KiB upload,
    download, info and delete.

Prints ops/s for both backends and builtin / upstream per workload (median of
the per-round ratios, each round runs both backends back to back under the
same machine load), and the CPU the servers spent per operation (tracker and
storage together, from ``/proc/<pid>/stat``): where the builtin servers lose
time, it is there. Exits 1 if a ratio is below ``--min-ratio`` (default 0:
report only). Needs the upstream servers; without them it says so and exits 2.

Usage: .venv/bin/python bench/bench_servers.py [--rounds 4] [--ops 400] [--small-kib 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
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


def split_write_uploads(address: str, size: int, count: int) -> list[str]:
    payload = b"s" * size
    client = SplitWriteClient(address)
    try:
        names = []
        for _ in range(count):
            body = client.exchange(st.upload_request(size, "bin"), payload)
            names.append(st.decode_file_id_reply(body).remote_name)
        return names
    finally:
        client.close()


def split_write_downloads(address: str, group: str, names: list[str], size: int) -> None:
    client = SplitWriteClient(address)
    try:
        for name in names:
            body = client.exchange(st.download_request(group, name))
            assert len(body) == size
    finally:
        client.close()


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


async def measured(
    cpu: ServerCpu, count: int, work: Callable[[], Awaitable[T]]
) -> tuple[Result, T]:
    """Run ``work`` (``count`` operations): its rate, the servers' CPU per operation, its value."""
    cpu_before = cpu.seconds()
    started = time.perf_counter()
    value = await work()
    elapsed = time.perf_counter() - started
    return (count / elapsed, (cpu.seconds() - cpu_before) / count), value


def in_thread(fn: Callable[..., T], *args: object) -> Callable[[], Awaitable[T]]:
    """``fn(*args)`` as work run in a worker thread (the blocking split-write client)."""
    return partial(trio.to_thread.run_sync, partial(fn, *args))


async def client_ops(client: Client, count: int, cpu: ServerCpu) -> dict[str, Result]:
    data = b"c" * 4096
    fids: list[FileId] = []

    async def upload_all() -> None:
        for _ in range(count):
            fids.append(await client.upload(data, ext="txt"))

    def each(op: Callable[[FileId], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for fid in fids:
                await op(fid)

        return run

    results = {"upload": (await measured(cpu, count, upload_all))[0]}
    ops: dict[str, Callable[[FileId], Awaitable[object]]] = {
        "download": client.download,
        "info": client.info,
        "delete": client.delete,
    }
    for name, op in ops.items():  # delete last: it removes the files the others use
        results[name] = (await measured(cpu, count, each(op)))[0]
    return results


async def one_round(
    clusters: dict[str, Cluster],
    clients: dict[str, Client],
    args: argparse.Namespace,
    number: int,
) -> dict[str, dict[str, Result]]:
    """Every workload on both backends, back to back; who goes first alternates by round,
    so that neither always runs after the other's writes and wake-ups."""
    order = list(clusters) if number % 2 == 0 else list(reversed(clusters))
    return {
        backend: await backend_round(clusters[backend], clients[backend], args) for backend in order
    }


async def backend_round(
    cluster: Cluster, client: Client, args: argparse.Namespace
) -> dict[str, Result]:
    size = args.small_kib * 1024
    cpu = ServerCpu.of(cluster)
    address = cluster.storages[0].address
    split = f"split-write {args.small_kib} KiB"
    results: dict[str, Result] = {}
    results[f"{split} upload"], names = await measured(
        cpu, args.ops, in_thread(split_write_uploads, address, size, args.ops)
    )
    results[f"{split} download"], _ = await measured(
        cpu, args.ops, in_thread(split_write_downloads, address, "group1", names, size)
    )
    results["new connection per info"], _ = await measured(
        cpu, args.ops, in_thread(connection_per_request_info, address, "group1", names)
    )
    async with Client(cluster.trackers) as cleaner:
        for name in names:
            await cleaner.delete(FileId("group1", name))
    for op, result in (await client_ops(client, args.ops, cpu)).items():
        results[f"client 4 KiB {op}"] = result
    return results


async def run(clusters: dict[str, Cluster], args: argparse.Namespace) -> list[dict]:
    rounds = []
    async with (
        Client(clusters["builtin"].trackers) as ours,
        Client(clusters["native"].trackers) as theirs,
    ):
        clients = {"builtin": ours, "native": theirs}
        for backend, client in clients.items():  # warm up pools and page caches
            await client_ops(client, 20, ServerCpu.of(clusters[backend]))
        for number in range(args.rounds):
            rounds.append(await one_round(clusters, clients, args, number))
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=4, help="an even number: each backend goes first as often"
    )
    parser.add_argument("--ops", type=int, default=400, help="requests per workload and round")
    parser.add_argument("--small-kib", type=int, default=5)
    parser.add_argument("--min-ratio", type=float, default=0.0)
    args = parser.parse_args()
    if not native_available():
        print(f"bench_servers: needs the upstream servers: {unavailable_reason()}")
        return 2
    with (
        Cluster({"group1": 1}, backend="builtin") as builtin,
        Cluster({"group1": 1}, backend="native") as native,
    ):
        rounds = trio.run(run, {"builtin": builtin, "native": native}, args)
    print(f"{args.rounds} interleaved rounds of {args.ops} requests; rates are medians")
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
