"""Speed of the protocol client against references, on a local cluster, in one run.

Measures, interleaved over ``--rounds`` rounds (best and median reported):
  * downloading one ``--size-mib`` MiB file: ``Client.download`` (bytes in
    memory), ``Client.download_to`` (/dev/null, streamed through one reused
    buffer), a raw blocking socket doing the same DOWNLOAD_FILE with
    ``recv_into`` a reused buffer (the ceiling for Python), and with
    ``--backend native`` upstream's ``fdfs_download_file`` (the C client);
  * small operations per second on pooled connections: QUERY_FILE_INFO with
    ``Client.info`` (a tracker query plus the storage request), a 4 KiB
    ``Client.read_range`` on known replicas (one storage request), and a raw
    blocking socket sending QUERY_FILE_INFO on one kept-open connection.

Usage: .venv/bin/python bench/bench_client.py [--backend builtin|native]
           [--size-mib 256] [--rounds 3] [--ops 3000]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from fdfsmount.proto import FileId, ServerAddr
from fdfsmount.proto import storage as st
from fdfsmount.proto.client import Client
from fdfsmount.proto.wire import decode_header
from harness.cluster import Cluster

MIB = 1024 * 1024


def raw_download(addr: ServerAddr, fid: FileId, size: int) -> float:
    """Seconds for a blocking socket to DOWNLOAD_FILE into a reused 1 MiB buffer."""
    request = st.download_request(fid.group, fid.remote_name).encode()
    buf = bytearray(MIB)
    view = memoryview(buf)
    with socket.create_connection((addr.host, addr.port)) as sock:
        started = time.perf_counter()
        sock.sendall(request)
        header = decode_header(sock.recv(10, socket.MSG_WAITALL))
        assert header.status == 0 and header.length == size, header
        left = header.length
        while left:
            left -= sock.recv_into(view[: min(left, MIB)])
        return time.perf_counter() - started


def raw_file_info_ops(addr: ServerAddr, fid: FileId, count: int) -> float:
    """QUERY_FILE_INFO per second on one kept-open blocking socket."""
    request = st.query_file_info_request(fid.group, fid.remote_name).encode()
    with socket.create_connection((addr.host, addr.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        for _ in range(count):
            sock.sendall(request)
            reply = sock.recv(50, socket.MSG_WAITALL)  # header + 40-byte file info
            assert len(reply) == 50 and reply[9] == 0, reply
        return count / (time.perf_counter() - started)


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def ops_per_second(call: Callable[[], Awaitable[object]], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await call()
    return count / (time.perf_counter() - started)


def summary(values: list[float], unit: str) -> dict[str, float | str]:
    return {
        "best": round(max(values), 1),
        "median": round(statistics.median(values), 1),
        "unit": unit,
    }


async def run(cluster: Cluster, args: argparse.Namespace) -> dict[str, object]:
    size = args.size_mib * MIB
    data = bytes(range(256)) * (size // 256)
    rates: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        rates.setdefault(name, []).append(value)

    async with Client(cluster.trackers) as client:
        fid = await client.upload(data, ext="bin")
        small = await client.upload(b"x" * 4096, ext="txt")
        servers = await client.fetch_servers(small)
        source = (await client.fetch_servers(fid))[0]
        del data
        c_tool = shutil.which("fdfs_download_file") if args.backend == "native" else None
        for _ in range(args.rounds):
            mib = size / MIB
            record("download() MiB/s", mib / await timed(lambda: client.download(fid)))
            record(
                "download_to(/dev/null) MiB/s",
                mib / await timed(lambda: client.download_to(fid, "/dev/null")),
            )
            record(
                "raw socket recv_into MiB/s",
                mib / await trio.to_thread.run_sync(raw_download, source, fid, size),
            )
            if c_tool:
                conf = str(cluster.client_conf)
                started = time.perf_counter()
                await trio.run_process([c_tool, conf, str(fid), "/dev/null"])
                record("fdfs_download_file (C) MiB/s", mib / (time.perf_counter() - started))
            record("info() ops/s", await ops_per_second(lambda: client.info(small), args.ops))
            record(
                "read_range(4 KiB) ops/s",
                await ops_per_second(
                    lambda: client.read_range(small, 0, 4096, servers=servers), args.ops
                ),
            )
            record(
                "raw QUERY_FILE_INFO ops/s",
                await trio.to_thread.run_sync(raw_file_info_ops, servers[0], small, args.ops),
            )
        await client.delete(fid)
        await client.delete(small)
    results: dict[str, object] = {
        name: summary(values, name.rsplit(" ", 1)[1]) for name, values in rates.items()
    }
    results["backend"] = args.backend
    results["size_mib"] = args.size_mib
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("builtin", "native"), default="builtin")
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=3000)
    args = parser.parse_args()
    with Cluster({"group1": 1}, backend=args.backend) as cluster:
        results = trio.run(run, cluster, args)
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
