"""`bench/bench_servers.py`'s meter of the servers' CPU, on processes of our own."""

from __future__ import annotations

import subprocess
import sys

from bench.bench_servers import ServerCpu

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
