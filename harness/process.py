"""Child processes for harness nodes: start, wait until ready, signal, and always reap.

# Strategy
Modelled on mirakuru's executors. Every child runs in its own session, so its
pid is also its process group id and one ``killpg`` reaches anything it forked.
A child is registered for cleanup (``atexit`` and the context manager) before
it is spawned, so no failure after that point can leak it. Readiness is either
a line on the child's stdout (``READY <port>``) or a probe callable; the wait is
bounded and notices a child that died, quoting the tail of its stderr log.
A reader thread keeps draining stdout into a log file after the ready line, so a
chatty child can never block on a full pipe.

Dying with the owner: a SIGKILLed owner runs no ``finally`` and no
``atexit``. Each child asks the kernel (``PR_SET_PDEATHSIG``) for SIGKILL when
its parent *thread* exits, so every child is spawned by one long-lived
launcher thread rather than by the short-lived worker that asked for it. A
`Reaper` (a tiny process in its own session, `harness.reaper`) notices the
owner's death as EOF on a pipe and kills the registered process groups and
removes the registered directories.

Ports: ``pick_free_port`` hands out ports below the kernel's ephemeral range, so
the outgoing connections between nodes cannot grab a listening port between the
moment it is picked and the moment the child binds it (or binds it again on a
restart). The remaining race (another program taking the port) surfaces as
`ChildExited` with ``address_in_use`` set; callers retry with a new port.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

log = logging.getLogger(__name__)

#: Readiness line printed by the builtin servers.
READY_LINE = r"^READY (\d+)\s*$"

_POLL_INTERVAL = 0.05
#: How long `ChildProcess.stop` waits for every thread of the child to stop.
STOP_WAIT = 2.0
_STDERR_TAIL_LINES = 20
_ADDRESS_IN_USE_MARKERS = (
    "Address already in use",
    "EADDRINUSE",
    f"errno: {errno.EADDRINUSE},",  # upstream FastDFS log lines
    f"[Errno {errno.EADDRINUSE}]",
)


class ProcessError(RuntimeError):
    """A harness child could not be started or did not become ready."""

    def __init__(self, message: str, *, name: str = "", stderr_tail: str = "") -> None:
        if stderr_tail:
            message = f"{message}\n--- last lines of {name or 'child'} stderr ---\n{stderr_tail}"
        super().__init__(message)
        self.name = name
        self.stderr_tail = stderr_tail

    @property
    def address_in_use(self) -> bool:
        """The child failed because its port was taken (worth a retry elsewhere)."""
        return any(marker in self.stderr_tail for marker in _ADDRESS_IN_USE_MARKERS)


class ChildExited(ProcessError):
    """The child exited before it was ready."""


class StartupTimeout(ProcessError):
    """The child did not become ready in time (it has been terminated)."""


# ------------------------------------------------------------------ ports

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(host: str, port: int) -> bool:
    """Nothing listens on ``host:port`` and nothing else holds it bound.

    Binds without SO_REUSEADDR, so a port with connections in TIME_WAIT also
    counts as taken: stricter than what a server needs, which is the point.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_is_listening(host: str, port: int) -> bool:
    """Some socket listens on ``host:port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # With SO_REUSEADDR a bind fails only against a listener or a live bind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def pick_free_port(host: str = "127.0.0.1", *more_hosts: str) -> int:
    """A port free on ``host`` (and on each of ``more_hosts``), never the same twice here.

    Several hosts: upstream trackers in IP mode want every storage of a group
    on the same port, each on its own IP.
    """
    hosts = (host, *more_hosts)
    for h in hosts:
        if not h.startswith("127."):
            raise ValueError(f"harness nodes bind only loopback addresses, not {h!r}")
    low, _high = _ephemeral_range()
    with _ports_lock:
        if low > 12000:
            for _ in range(200):
                port = random.randrange(10000, low)
                if port not in _handed_out and all(port_is_free(h, port) for h in hosts):
                    _handed_out.add(port)
                    return port
        # Odd ephemeral range: let the kernel choose (bind port 0, read it back).
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out and all(port_is_free(h, port) for h in more_hosts):
                _handed_out.add(port)
                return port
    raise ProcessError(f"no free port found on {', '.join(hosts)}")


# ------------------------------------------------- dying with the owner

_PR_SET_PDEATHSIG = 1
try:
    # Loaded here: a forked child must not load libraries before exec.
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _libc = None
_T = TypeVar("_T")


def _die_with_owner(owner_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: SIGKILL this child when the spawning thread's process goes."""

    def preexec() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != owner_pid:
            os._exit(1)  # the owner died before the request took effect

    return preexec


class _Launcher:
    """One daemon thread that lives as long as the process and spawns every child.

    ``PR_SET_PDEATHSIG`` fires when the thread that forked the child exits,
    so spawning from a thread pool's worker would kill the child as soon as
    the pool shuts down.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[tuple[Callable[[], object], Future[object]]] = []
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._pid = 0

    def run(self, work: Callable[[], _T]) -> _T:
        future: Future[object] = Future()
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._queue = []
                self._thread = threading.Thread(
                    target=self._serve, name="harness-launcher", daemon=True
                )
                self._thread.start()
            self._queue.append((work, future))
            self._wake.notify()
        return future.result()  # type: ignore[return-value]

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                work, future = self._queue.pop(0)
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work())
                except BaseException as exc:
                    future.set_exception(exc)


_launcher = _Launcher()


class Reaper:
    """Kills registered process groups and removes registered directories if we die.

    A child process (`harness.reaper`) reads commands from a pipe; our end
    closes when we die, however we die. `close` tells it that we cleaned up
    ourselves. Without the helper (it failed to start) this is a no-op.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("reaper.py"))],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            log.warning("no reaper for harness processes: %s", exc)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc is None or self._proc.stdin is None:
                return
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                log.warning("the harness reaper is gone; a crash would leave processes behind")
                self._proc.stdin = None

    def watch_group(self, pgid: int) -> None:
        self._send(f"pgid {pgid}")

    def forget_group(self, pgid: int) -> None:
        self._send(f"forget {pgid}")

    def watch_dir(self, path: Path) -> None:
        self._send(f"dir {path}")

    def close(self) -> None:
        """We cleaned up ourselves: let the reaper exit without doing anything."""
        self._send("done")
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -------------------------------------------------------------- processes

_live: set[ChildProcess] = set()
_live_lock = threading.Lock()


@atexit.register
def _terminate_all_children() -> None:
    with _live_lock:
        children = list(_live)
    for child in children:
        with contextlib.suppress(Exception):
            child.terminate(timeout=2.0)


def unwind_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread, if nothing else handles it.

    By default SIGTERM ends Python without running ``finally`` blocks or
    ``atexit``, and our children, each in its own session, would outlive it
    (``timeout pytest`` in CI does exactly that). As KeyboardInterrupt it
    unwinds: pytest runs fixture teardown, context managers close clusters,
    ``atexit`` reaps the rest. A second SIGTERM kills at once. No-op outside
    the main thread or when a handler is installed already.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


def _sigterm_to_interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    log.warning("SIGTERM received: unwinding to tear down harness processes")
    raise KeyboardInterrupt("SIGTERM")


def live_children() -> list[ChildProcess]:
    """Children started by this process and not yet reaped."""
    with _live_lock:
        return list(_live)


class ChildProcess:
    """One child process in its own session, with bounded startup and reliable teardown.

    ``ready_line`` is a regular expression matched against each stdout line;
    ``ready_probe`` a callable returning True once the child serves. With
    neither, the child counts as ready as soon as it runs. ``poll_hook`` is
    called on each turn of the readiness loop and may raise to abandon the
    start (the trio wrapper uses it to notice cancellation).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_dir: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready_line: str | None = READY_LINE,
        ready_probe: Callable[[], bool] | None = None,
        startup_timeout: float = 30.0,
        terminate_timeout: float = 10.0,
        extra_logs: Sequence[Path] = (),
        reaper: Reaper | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.reaper = reaper
        self.name = name
        self.log_dir = Path(log_dir)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.ready_line = re.compile(ready_line) if ready_line else None
        self.ready_probe = ready_probe
        self.startup_timeout = startup_timeout
        self.terminate_timeout = terminate_timeout
        #: Logs the child writes itself (upstream servers), quoted on failure too.
        self.extra_logs = list(extra_logs)
        self.stdout_log = self.log_dir / "stdout.log"
        self.stderr_log = self.log_dir / "stderr.log"
        self.ready_match: re.Match[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        self._group_gone = True

    def __repr__(self) -> str:
        return f"<ChildProcess {self.name} pid={self.pid} running={self.running}>"

    # -------------------------------------------------------- state

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    @property
    def running(self) -> bool:
        """The child was started and has not exited (a stopped child is running)."""
        return self._proc is not None and self._proc.poll() is None

    # -------------------------------------------------------- start

    def start(self, poll_hook: Callable[[], None] | None = None) -> ChildProcess:
        """Spawn the child and wait until it is ready; on any failure it is gone again."""
        if self.running:
            raise ProcessError(f"{self.name} is already running")
        unwind_on_sigterm()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._ready.clear()
        self.ready_match = None
        with _live_lock:
            _live.add(self)
        try:
            self._spawn()
            self._wait_ready(poll_hook)
        except BaseException:
            self.terminate()
            raise
        log.debug("%s ready (pid %s)", self.name, self.pid)
        return self

    def _spawn(self) -> None:
        marker = f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(self.argv)}\n"
        owner = os.getpid()
        with open(self.stderr_log, "ab") as stderr:
            stderr.write(marker.encode())
            stderr.flush()
            self._proc = _launcher.run(
                lambda: subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=_die_with_owner(owner),
                )
            )
        self._group_gone = False
        if self.reaper is not None:
            self.reaper.watch_group(self._proc.pid)
        log.debug("%s spawned pid %d: %s", self.name, self._proc.pid, " ".join(self.argv))
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._drain_stdout,
            args=(self._proc.stdout,),
            name=f"stdout-{self.name}",
            daemon=True,
        )
        self._reader.start()

    def _drain_stdout(self, stream: IO[bytes]) -> None:
        with open(self.stdout_log, "ab") as out:
            for raw in iter(stream.readline, b""):
                out.write(raw)
                out.flush()
                if self.ready_line is not None and not self._ready.is_set():
                    match = self.ready_line.match(raw.decode(errors="replace").rstrip("\r\n"))
                    if match:
                        self.ready_match = match
                        self._ready.set()
        stream.close()

    def _wait_ready(self, poll_hook: Callable[[], None] | None) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if poll_hook is not None:
                poll_hook()
            if self._proc.poll() is not None:
                if self._reader is not None:
                    self._reader.join(timeout=1.0)
                raise ChildExited(
                    f"{self.name} exited with status {self._proc.returncode} before it was"
                    f" ready ({' '.join(self.argv)})",
                    name=self.name,
                    stderr_tail=self.stderr_tail(),
                )
            if self._is_ready():
                return
            if time.monotonic() >= deadline:
                raise StartupTimeout(
                    f"{self.name} was not ready after {self.startup_timeout:g}s"
                    f" ({' '.join(self.argv)})",
                    name=self.name,
                    stderr_tail=self.stderr_tail(),
                )
            if self.ready_line is not None:
                self._ready.wait(_POLL_INTERVAL)
            else:
                time.sleep(_POLL_INTERVAL)

    def _is_ready(self) -> bool:
        if self.ready_line is not None and not self._ready.is_set():
            return False
        if self.ready_probe is not None:
            try:
                return bool(self.ready_probe())
            except OSError:
                return False
        return True

    def stderr_tail(self, lines: int = _STDERR_TAIL_LINES) -> str:
        """The last lines the child wrote to stderr (and to its own logs), for errors."""
        parts = []
        for path in [self.stderr_log, *self.extra_logs]:
            try:
                text = path.read_bytes()[-16384:].decode(errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            if tail.strip():
                parts.append(tail if path == self.stderr_log else f"[{path.name}]\n{tail}")
        return "\n".join(parts)

    # -------------------------------------------------------- signals

    def _signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the child's process group; False once the group is gone."""
        if self._proc is None or self._group_gone:
            return False
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            # Never signal this number again: it may be reused by someone else.
            self._group_gone = True
            return False
        return True

    def stop(self) -> None:
        """Freeze the child's whole process group (SIGSTOP); return once it is frozen.

        ``kill`` returns before every thread has stopped: a thread that was
        running, or that a request had just woken, may still answer for a
        moment. This waits (up to `STOP_WAIT`) until each thread of the child
        shows the stopped state, so a request sent afterwards is not served.
        """
        self._require_running("stop")
        if not self._signal_group(signal.SIGSTOP):
            return
        assert self._proc is not None
        deadline = time.monotonic() + STOP_WAIT
        while not threads_stopped(self._proc.pid):
            if time.monotonic() > deadline:
                log.warning("%s: not every thread stopped within %.1fs", self.name, STOP_WAIT)
                return
            time.sleep(0.001)

    def cont(self) -> None:
        """Resume a stopped child (SIGCONT)."""
        self._require_running("continue")
        self._signal_group(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the process group at once and reap the child (a crash, no cleanup)."""
        self._signal_group(signal.SIGKILL)
        self._reap(timeout=self.terminate_timeout)

    def terminate(self, timeout: float | None = None) -> int | None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left.

        Idempotent; returns the child's exit status (None if never started).
        """
        if self._proc is None:
            self._unregister()
            return None
        timeout = self.terminate_timeout if timeout is None else timeout
        if self._signal_group(signal.SIGTERM):
            # A stopped process only acts on SIGTERM once continued.
            self._signal_group(signal.SIGCONT)
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.1fs; sending SIGKILL", self.name, timeout)
        self._reap(timeout=timeout)
        return self._proc.returncode

    def _reap(self, timeout: float) -> None:
        """Kill and wait until neither the child nor anything in its group is left."""
        assert self._proc is not None
        self._signal_group(signal.SIGKILL)
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) survived SIGKILL for %.1fs", self.name, self._proc.pid, timeout)
        deadline = time.monotonic() + timeout
        # Grandchildren in the group are reaped by init; wait until the group is empty.
        while self._signal_group(0):
            self._signal_group(signal.SIGKILL)
            if time.monotonic() >= deadline:
                log.error("process group %d of %s survived SIGKILL", self._proc.pid, self.name)
                break
            time.sleep(_POLL_INTERVAL)
        if self._reader is not None:
            self._reader.join(timeout=1.0)
        if self._proc.poll() is not None:
            if self.reaper is not None and self._group_gone:
                self.reaper.forget_group(self._proc.pid)
            self._unregister()

    def _unregister(self) -> None:
        with _live_lock:
            _live.discard(self)

    def _require_running(self, what: str) -> None:
        if not self.running:
            raise ProcessError(f"cannot {what} {self.name}: it is not running")

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit by itself."""
        if self._proc is None:
            raise ProcessError(f"{self.name} was never started")
        return self._proc.wait(timeout=timeout)

    # -------------------------------------------------------- context manager

    def __enter__(self) -> ChildProcess:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()


# ------------------------------------------------------------ inspection


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (zombies excluded).

    Used to prove that teardown left nothing behind, and to sweep up strays.
    """
    found = []
    needle = text.encode()
    for entry in _proc_entries():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state in ("Z", "X"):
            continue
        if needle in cmdline.replace(b"\0", b" "):
            found.append(int(entry.name))
    return found


def _proc_entries() -> Iterator[Path]:
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            yield entry


def kill_processes_mentioning(text: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process whose command line contains ``text``; returns their pids."""
    victims = processes_mentioning(text)
    for pid in victims:
        log.warning("killing stray harness process %d (command line mentions %s)", pid, text)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while victims and processes_mentioning(text) and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL)
    return victims


def threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is in the stopped state (True once it has gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return True
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue  # that thread has ended
        # The state follows the command name, which is in parentheses and may hold any byte.
        after_name = stat.rfind(b")") + 2
        state = stat[after_name : after_name + 1]
        if state not in (b"T", b"t", b"Z", b"X"):
            return False
    return True


# ---------------------------------------------------------------- memory of a process


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of process `pid` in MiB (VmRSS); ProcessLookupError once it has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    raise ProcessLookupError(f"no process {pid} (or no memory of its own: a zombie)")


class RssSampler:
    """Peak resident memory of a process, sampled every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_mib = max(self.peak_mib, rss_mib(self.pid))
            except ProcessLookupError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
