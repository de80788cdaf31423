"""`bench/bench_servers.py`: its meter of the servers' CPU (on processes of our own), and
how it interleaves the two backends."""

from __future__ import annotations

import subprocess
import sys

import trio

from bench.bench_servers import Backend, ServerCpu, interleaved

#: A process that spends CPU in a thread that then ends, says so, and waits.
SPINNER = """
import sys, threading, time
def spin():
    end = time.thread_time() + float(sys.argv[1])
    while time.thread_time() < end:
        pass
worker = threading.Thread(target=spin)
worker.start()
worker.join()
print("spun", flush=True)
sys.stdin.read()
"""


def test_the_meter_counts_every_process_and_threads_that_ended() -> None:
    spinners = [
        subprocess.Popen(
            [sys.executable, "-c", SPINNER, seconds],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for seconds in ("0.3", "0.5")
    ]
    try:
        for spinner in spinners:
            assert spinner.stdout is not None
            assert spinner.stdout.readline() == "spun\n"
        first, second = (ServerCpu([s.pid]).seconds() for s in spinners)
        both = ServerCpu([s.pid for s in spinners]).seconds()
        # CPU time, not wall time: at least what each spun, counted in 10 ms ticks.
        assert first >= 0.28 and second >= 0.48
        assert both >= first + second - 0.02
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


class CountingCpu:
    """A meter that reads one more second of CPU each time it is asked."""

    def __init__(self) -> None:
        self.read = 0.0

    def seconds(self) -> float:
        self.read += 1.0
        return self.read


def test_workloads_alternate_slice_by_slice_and_sum_each_side() -> None:
    backends = {
        name: Backend(cluster=None, client=None, cpu=CountingCpu())  # type: ignore[arg-type]
        for name in ("builtin", "native")
    }
    calls: list[tuple[str, int, int]] = []

    async def one_slice(b: Backend, first: int, count: int, size: int) -> float:
        name = "builtin" if b is backends["builtin"] else "native"
        calls.append((name, first, count))
        return 0.5 if name == "builtin" else 0.25

    results = trio.run(interleaved, backends, one_slice, 120, 50, 4096, 1)
    # Slices of 50, the last one short; who goes first changes from slice to slice.
    assert calls == [
        ("native", 0, 50), ("builtin", 0, 50),
        ("builtin", 50, 50), ("native", 50, 50),
        ("native", 100, 20), ("builtin", 100, 20),
    ]  # fmt: skip
    # A side's rate is over the sum of its slices; its CPU is what its meter moved.
    assert results["builtin"] == (120 / 1.5, 3 / 120)
    assert results["native"] == (120 / 0.75, 3 / 120)
