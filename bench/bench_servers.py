"""Small-request speed of the builtin servers against upstream's, in one run.

Starts a one-storage builtin cluster and a native one (upstream
``fdfs_trackerd``/``fdfs_storaged``), then measures on both, interleaved over
``--rounds`` rounds:

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
same machine load). Exits 1 if a ratio is below ``--min-ratio`` (default 0:
report only). Needs the upstream servers; without them it says so and exits 2.

Usage: .venv/bin/python bench/bench_servers.py [--rounds 3] [--ops 400] [--small-kib 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

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


def split_write_uploads(address: str, size: int, count: int) -> tuple[float, list[str]]:
    payload = b"s" * size
    client = SplitWriteClient(address)
    try:
        names = []
        started = time.perf_counter()
        for _ in range(count):
            body = client.exchange(st.upload_request(size, "bin"), payload)
            names.append(st.decode_file_id_reply(body).remote_name)
        return count / (time.perf_counter() - started), names
    finally:
        client.close()


def split_write_downloads(address: str, group: str, names: list[str], size: int) -> float:
    client = SplitWriteClient(address)
    try:
        started = time.perf_counter()
        for name in names:
            body = client.exchange(st.download_request(group, name))
            assert len(body) == size
        return len(names) / (time.perf_counter() - started)
    finally:
        client.close()


def connection_per_request_info(address: str, group: str, names: list[str]) -> float:
    """File info on a new connection each (upstream's C client without its pool)."""
    started = time.perf_counter()
    for name in names:
        client = SplitWriteClient(address)
        try:
            client.exchange(st.query_file_info_request(group, name))
        finally:
            client.close()
    return len(names) / (time.perf_counter() - started)


async def client_ops(client: Client, count: int) -> dict[str, float]:
    data = b"c" * 4096
    fids: list[FileId] = []

    async def each(op: Callable[[FileId], Awaitable[object]]) -> float:
        started = time.perf_counter()
        for fid in fids:
            await op(fid)
        return count / (time.perf_counter() - started)

    started = time.perf_counter()
    for _ in range(count):
        fids.append(await client.upload(data, ext="txt"))
    rates = {"upload": count / (time.perf_counter() - started)}
    rates["download"] = await each(client.download)
    rates["info"] = await each(client.info)
    rates["delete"] = await each(client.delete)
    return rates


async def one_round(
    clusters: dict[str, Cluster], clients: dict[str, Client], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    size = args.small_kib * 1024
    got: dict[str, dict[str, float]] = {}
    for backend, cluster in clusters.items():
        address = cluster.storages[0].address
        rate, names = await trio.to_thread.run_sync(split_write_uploads, address, size, args.ops)
        rates = {f"split-write {args.small_kib} KiB upload": rate}
        rates[f"split-write {args.small_kib} KiB download"] = await trio.to_thread.run_sync(
            split_write_downloads, address, "group1", names, size
        )
        rates["new connection per info"] = await trio.to_thread.run_sync(
            connection_per_request_info, address, "group1", names
        )
        async with Client(cluster.trackers) as cleaner:
            for name in names:
                await cleaner.delete(FileId("group1", name))
        for op, value in (await client_ops(clients[backend], args.ops)).items():
            rates[f"client 4 KiB {op}"] = value
        got[backend] = rates
    return got


async def run(clusters: dict[str, Cluster], args: argparse.Namespace) -> list[dict]:
    rounds = []
    async with (
        Client(clusters["builtin"].trackers) as ours,
        Client(clusters["native"].trackers) as theirs,
    ):
        clients = {"builtin": ours, "native": theirs}
        await client_ops(ours, 20)  # warm up pools and page caches
        await client_ops(theirs, 20)
        for _ in range(args.rounds):
            rounds.append(await one_round(clusters, clients, args))
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
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
    print(f"{args.rounds} interleaved rounds of {args.ops} requests; ops/s are medians")
    print(f"{'workload':32} {'builtin':>9} {'upstream':>9} {'ratio':>6}")
    worst = float("inf")
    for name in rounds[0]["builtin"]:
        ours = statistics.median(r["builtin"][name] for r in rounds)
        theirs = statistics.median(r["native"][name] for r in rounds)
        ratio = statistics.median(r["builtin"][name] / r["native"][name] for r in rounds)
        worst = min(worst, ratio)
        print(f"{name:32} {ours:9.0f} {theirs:9.0f} {ratio:6.2f}")
    return 1 if worst < args.min_ratio else 0


if __name__ == "__main__":
    sys.exit(main())
