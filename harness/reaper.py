"""Clean up after a harness owner that died without tearing down (SIGKILL, OOM kill).

Usage (started by `harness.process.Reaper`, not by hand)::

    python -m harness.reaper < pipe

# Strategy
The owner keeps the write end of a pipe whose read end is our stdin, and
writes one command per line:

* ``pgid N``: a node's process group (each node leads its own session);
* ``dir PATH``: a directory to remove if the owner dies;
* ``done``: the owner tore everything down itself; exit quietly.

The kernel closes the owner's end when it dies however it dies, so EOF
without ``done`` means nobody else will clean up: we SIGKILL each group (the
nodes also get SIGKILL from ``PR_SET_PDEATHSIG``; this covers anything they
forked), wait until the groups are empty, kill strays that still name a path
in a registered directory, and remove the directories. We run in our own
session with only stdlib imports, so the owner's death does not reach us and
we start fast.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GROUP_WAIT = 10.0
_POLL = 0.05


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _pids_mentioning(text: str) -> list[int]:
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def reap(pgids: set[int], dirs: list[Path]) -> None:
    """Kill the groups and strays, then remove the directories."""
    for pgid in pgids:
        _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + GROUP_WAIT
    while any(_signal_group(p, 0) for p in pgids) and time.monotonic() < deadline:
        time.sleep(_POLL)
    for directory in dirs:
        for pid in _pids_mentioning(f"{directory}{os.sep}"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    remove_trees(dirs)


def remove_trees(dirs: list[Path]) -> None:
    """Remove directory trees, their subdirectories side by side, never failing.

    A storage's store path holds 256 x 256 data directories. ``rm -rf`` removes them
    several times faster than ``shutil.rmtree`` and, in processes of its own, in
    parallel; without ``rm`` (or when it leaves something) ``shutil.rmtree`` finishes.
    """
    parts = [
        p for d in dirs if d.is_dir() for p in d.iterdir() if p.is_dir() and not p.is_symlink()
    ]
    rm = shutil.which("rm")
    if rm is not None and parts:
        removers = []
        for path in parts:
            try:
                removers.append(
                    subprocess.Popen(
                        [rm, "-rf", "--one-file-system", "--", os.fspath(path)],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            except OSError:
                break
        for remover in removers:
            remover.wait()
    leftover = [p for p in parts if p.exists()]
    if leftover:
        with ThreadPoolExecutor(max_workers=min(len(leftover), 8)) as pool:
            for path in leftover:
                pool.submit(shutil.rmtree, path, ignore_errors=True)
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    # A Ctrl-C meant for the owner's terminal must not stop the cleanup.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pgids: set[int] = set()
    dirs: list[Path] = []
    for raw in sys.stdin.buffer:
        command, _, arg = raw.decode(errors="replace").strip().partition(" ")
        if command == "done":
            return 0
        if command == "pgid" and arg.isdigit():
            pgids.add(int(arg))
        elif command == "forget" and arg.isdigit():
            pgids.discard(int(arg))
        elif command == "dir" and arg:
            dirs.append(Path(arg))
    reap(pgids, dirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
