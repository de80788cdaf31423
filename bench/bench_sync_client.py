"""The blocking client's cost over the trio client, on a local cluster, in one run.

Measures, interleaved over ``--rounds`` rounds (best and median reported), 4 KiB
downloads of a 4 KiB file:
  * one caller: ``download()`` (a tracker query plus the storage request) and
    ``read_range(servers=...)`` (the storage request alone), each made ``--ops``
    times in a row by the trio client (the anchor) and by the blocking client
    from a plain thread;
  * ``--threads`` callers at once: that many trio tasks on one trio client,
    against that many threads sharing one blocking client;
  * ``download-via-loop``: the blocking client with ``fast_reads=False``, every
    call handed to its loop thread (the cost of the thread hop alone).
Ratios are blocking / trio of the same round's medians.

Usage: .venv/bin/python bench/bench_sync_client.py [--backend builtin|native]
           [--rounds 5] [--ops 2000] [--threads 16]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from fdfsmount.proto import FileId, ServerAddr
from fdfsmount.proto.client import Client as TrioClient
from fdfsmount.proto.sync import Client as BlockingClient
from harness.cluster import Cluster

SMALL = 4096


async def trio_ops(call: Callable[[], Awaitable[object]], count: int, tasks: int) -> float:
    per_task = count // tasks

    async def worker() -> None:
        for _ in range(per_task):
            await call()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    return per_task * tasks / (time.perf_counter() - started)


def blocking_ops(call: Callable[[], object], count: int, threads: int) -> float:
    per_thread = count // threads
    barrier = threading.Barrier(threads + 1)

    def worker() -> None:
        barrier.wait()
        for _ in range(per_thread):
            call()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    return per_thread * threads / (time.perf_counter() - started)


async def run(cluster: Cluster, args: argparse.Namespace) -> dict[str, object]:
    rates: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        rates.setdefault(name, []).append(value)

    data = bytes(range(256)) * (SMALL // 256)
    async with TrioClient(cluster.trackers) as aclient:
        blocking = BlockingClient(cluster.trackers)
        loop_only = BlockingClient(cluster.trackers, fast_reads=False)
        try:
            fid: FileId = await aclient.upload(data, ext="bin")
            servers: list[ServerAddr] = await aclient.fetch_servers(fid)
            assert await aclient.download(fid) == data
            assert await trio.to_thread.run_sync(blocking.download, fid) == data
            cases: list[tuple[str, Callable[[], Awaitable[object]], Callable[[], object]]] = [
                ("download", lambda: aclient.download(fid), lambda: blocking.download(fid)),
                (
                    "read_range",
                    lambda: aclient.read_range(fid, 0, SMALL, servers=servers),
                    lambda: blocking.read_range(fid, 0, SMALL, servers=servers),
                ),
                # The same through the loop thread only (fast_reads=False).
                (
                    "download-via-loop",
                    lambda: aclient.download(fid),
                    lambda: loop_only.download(fid),
                ),
            ]
            # Warm both pools up to the thread count before timing.
            await trio_ops(cases[0][1], args.threads * 4, args.threads)
            for _name, _acall, bcall in cases:
                await trio.to_thread.run_sync(blocking_ops, bcall, args.threads * 4, args.threads)
            for _ in range(args.rounds):
                for name, acall, bcall in cases:
                    for callers in (1, args.threads):
                        label = f"{name} x{callers}"
                        record(f"trio {label}", await trio_ops(acall, args.ops, callers))
                        record(
                            f"blocking {label}",
                            await trio.to_thread.run_sync(blocking_ops, bcall, args.ops, callers),
                        )
            await aclient.delete(fid)
        finally:
            await trio.to_thread.run_sync(blocking.close)
            await trio.to_thread.run_sync(loop_only.close)

    results: dict[str, object] = {}
    for name, values in rates.items():
        results[f"{name} ops/s"] = {
            "best": round(max(values), 1),
            "median": round(statistics.median(values), 1),
        }
    ratios: dict[str, float] = {}
    for name in {n.split(" ", 1)[1] for n in rates}:
        per_round = [
            b / a for a, b in zip(rates[f"trio {name}"], rates[f"blocking {name}"], strict=True)
        ]
        ratios[name] = round(statistics.median(per_round), 3)
    results["blocking/trio (median of per-round ratios)"] = ratios
    results["backend"] = args.backend
    results["ops"] = args.ops
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=("builtin", "native"), default="builtin")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    with Cluster({"group1": 1}, backend=args.backend) as cluster:
        results = trio.run(run, cluster, args)
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
