"""Run ``fdfsmount -f`` as a child (tests, benches, demo): wait for the mount, always unmount.

`mounted` is a context manager: it starts the daemon in its own session,
waits (bounded) until the kernel lists the mount -- failing early if the
daemon dies -- and on the way out, however it is left, unmounts lazily with
``fusermount3 -u -z`` and then ends the daemon's process group (SIGTERM,
then SIGKILL).

A mount that is not ours is unmounted only when it is stale: its daemon is
gone (``Transport endpoint is not connected``, or the pid in its state file is
dead). A live mount in the way is an error, never cleared (`mount_state`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .status import pid_alive

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class MountFailed(RuntimeError):
    """The daemon did not mount (its log tail is in the message)."""


@dataclass
class MountProcess:
    mountpoint: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def fuse_available() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


def is_mounted(mountpoint: str | os.PathLike[str]) -> bool:
    """True while /proc/mounts lists `mountpoint`."""
    target = os.path.realpath(mountpoint)
    with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace("\\040", " ") == target:
                return True
    return False


class MountState(enum.Enum):
    FREE = "free"  # nothing mounted there
    STALE = "stale"  # a mount whose daemon is gone: safe to clear
    LIVE = "live"  # a mount that answers, or that we cannot prove dead: leave it


def state_file_pid(mountpoint: str | os.PathLike[str]) -> int | None:
    """The daemon pid an fdfsmount mount recorded for `mountpoint` (None: no state file)."""
    from .status import StatusError, locate

    try:
        _entry, state = locate(os.path.realpath(mountpoint))
    except (StatusError, OSError):
        return None
    pid = state.get("pid")
    return pid if isinstance(pid, int) else None


def mount_state(mountpoint: str | os.PathLike[str]) -> MountState:
    """Whether `mountpoint` is free, a stale mount or a live one."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return MountState.STALE
        return MountState.LIVE if is_mounted(mountpoint) else MountState.FREE
    if not is_mounted(mountpoint):
        return MountState.FREE
    pid = state_file_pid(mountpoint)
    if pid is not None and not pid_alive(pid):
        return MountState.STALE
    return MountState.LIVE


def clear_stale(mountpoint: str | os.PathLike[str]) -> bool:
    """Lazily unmount `mountpoint` if it is stale; True if it was."""
    if mount_state(mountpoint) is not MountState.STALE:
        return False
    subprocess.run(
        ["fusermount3", "-u", "-z", os.fspath(mountpoint)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return True


def fdfsmount_command(
    trackers: Sequence[str], mountpoint: str | os.PathLike[str], options: Sequence[str] = ()
) -> list[str]:
    cmd = [sys.executable, "-m", "fdfsmount", ",".join(trackers), os.fspath(mountpoint), "-f"]
    if options:
        cmd += ["-o", ",".join(options)]
    return cmd


def wait_for_mount(proc: MountProcess, timeout: float = READY_TIMEOUT) -> None:
    """Return once the kernel has the mount; `MountFailed` if the daemon exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not is_mounted(proc.mountpoint):
        if proc.process.poll() is not None:
            raise MountFailed(
                f"fdfsmount exited with {proc.process.returncode} before mounting:\n{proc.log()}"
            )
        if time.monotonic() > deadline:
            raise MountFailed(f"not mounted after {timeout:g}s:\n{proc.log()}")
        time.sleep(0.05)


def unmount(proc: MountProcess) -> None:
    """Lazy-unmount, then end the daemon's process group; never raises.

    Once our daemon has exited, a live mount at the mountpoint is someone
    else's and stays.
    """
    ours = proc.process.poll() is None or mount_state(proc.mountpoint) is MountState.STALE
    if ours and is_mounted(proc.mountpoint):
        subprocess.run(
            ["fusermount3", "-u", "-z", os.fspath(proc.mountpoint)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        if proc.process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.process.wait(wait)


@contextlib.contextmanager
def mounted(
    trackers: Sequence[str],
    mountpoint: str | os.PathLike[str],
    options: Sequence[str] = (),
    *,
    log_path: str | os.PathLike[str] | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[MountProcess]:
    """``with mounted(cluster.trackers, tmp_path / "mnt", ["timeout=5"]) as m: ...``

    Without a ``cache_dir=`` option the mount keeps its catalog and listing index
    in ``<mountpoint>.cache`` beside the mount point, not in the user's cache.
    """
    mountpoint = Path(mountpoint)
    mountpoint.mkdir(parents=True, exist_ok=True)
    if not any(o.startswith("cache_dir=") for o in options):
        options = [*options, f"cache_dir={mountpoint.with_name(mountpoint.name + '.cache')}"]
    clear_stale(mountpoint)
    if mount_state(mountpoint) is MountState.LIVE:
        pid = state_file_pid(mountpoint)
        raise MountFailed(
            f"{mountpoint} is already mounted" + (f" (fdfsmount pid {pid})" if pid else "")
        )
    log_file = Path(log_path) if log_path else mountpoint.with_name(mountpoint.name + ".log")
    with open(log_file, "ab") as log_out:
        process = subprocess.Popen(
            fdfsmount_command(trackers, mountpoint, options),
            stdin=subprocess.DEVNULL,
            stdout=log_out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = MountProcess(mountpoint, process, log_file)
    try:
        wait_for_mount(proc, ready_timeout)
        yield proc
    finally:
        unmount(proc)
