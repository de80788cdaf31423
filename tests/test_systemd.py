"""systemd: the unit files verify, the service's command line parses, and the daemon speaks
sd_notify -- READY=1 only once the mount answers, STOPPING=1 on SIGTERM, pending writes
flushed before it exits."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from waiting import wait_until

from fdfsmount.mount_cli import parse_command_line
from fdfsmount.mountproc import MountProcess, fuse_available, is_mounted, unmount
from fdfsmount.proto.client import Client
from fdfsmount.sdnotify import notify
from fdfsmount.status import ask, escape_path
from harness.cluster import Cluster

pytestmark = pytest.mark.processes  # starts servers, mounts or programs

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICE = UNITS / "fdfsmount@.service"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """KEY -> values of a unit file (comments and section headers dropped)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


# ---------------------------------------------------------------- the unit files


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    "unit", ["fdfsmount@mnt-fdfs.service", "mnt-fdfs.mount", "mnt-fdfs.automount"]
)
def test_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    """Each unit as shipped (the template through an instance), no warning either."""
    for path in UNITS.iterdir():
        if path.suffix in (".service", ".mount", ".automount"):
            shutil.copy(path, tmp_path / path.name)
    done = subprocess.run(
        ["systemd-analyze", "verify", f"./{unit}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit naming a missing program does not verify."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze")
    broken = SERVICE.read_text().replace("/usr/bin/env fdfsmount", "/nonexistent/fdfsmount")
    (tmp_path / SERVICE.name).write_text(broken)
    done = subprocess.run(
        ["systemd-analyze", "verify", "./fdfsmount@mnt-fdfs.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "nonexistent" in done.stderr


def test_service_command_line_parses_with_the_example_settings() -> None:
    """ExecStart as systemd expands it, with the example env file: a valid foreground mount."""
    settings = unit_settings(SERVICE)
    env = {}
    for default in settings["Environment"]:
        key, _, value = default.partition("=")
        env[key] = value
    for line in (UNITS / "fdfsmount.conf.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    (exec_start,) = settings["ExecStart"]
    words = [
        re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], w).replace("%f", "/mnt/fdfs")
        for w in exec_start.split()
    ]
    assert words[:2] == ["/usr/bin/env", "fdfsmount"]
    opts = parse_command_line(words[2:])
    assert opts.foreground and opts.mountpoint == "/mnt/fdfs"
    assert opts.trackers == ("10.0.0.5:22122", "10.0.0.6:22122")
    assert opts.metrics == ("127.0.0.1", 9108) and opts.allow_other
    # The default FDFS_OPTIONS, for an env file that sets only FDFS_SOURCE.
    assert parse_command_line(["10.0.0.5:22122", "/mnt/fdfs", "-f", "-o", "defaults"]).foreground


def test_service_type_and_lifecycle() -> None:
    settings = unit_settings(SERVICE)
    single = {key: values[-1] for key, values in settings.items()}
    assert single["Type"] == "notify" and single["NotifyAccess"] == "main"
    assert single["Restart"] == "on-failure" and single["KillMode"] == "mixed"
    assert "network-online.target" in single["After"] and "network-online.target" in single["Wants"]
    assert single["EnvironmentFile"] == "/etc/fdfsmount/%i.conf"
    assert " -f " in single["ExecStart"] + " "


#: Settings that give the service a mount namespace of its own: its FUSE mount
#: would then be invisible to everybody else.
NAMESPACING = {
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
    "ProtectProc", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths", "ExecPaths",
    "NoExecPaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "MountFlags",
    "RootDirectory", "RootImage", "PrivateUsers",
}  # fmt: skip


def test_hardening_keeps_the_mount_visible_and_fuse_usable() -> None:
    settings = unit_settings(SERVICE)
    assert not NAMESPACING & settings.keys()
    assert "/dev/fuse rw" in settings["DeviceAllow"]
    assert "CAP_SYS_ADMIN" in settings["CapabilityBoundingSet"][0].split()
    assert settings["NoNewPrivileges"] == ["yes"]


def test_mount_unit_names_its_mount_point() -> None:
    mount = unit_settings(UNITS / "mnt-fdfs.mount")
    assert mount["Type"] == ["fuse.fdfsmount"]
    assert "_netdev" in mount["Options"][0].split(",")
    assert escape_path(mount["Where"][0]) + ".mount" == "mnt-fdfs.mount"
    assert unit_settings(UNITS / "mnt-fdfs.automount")["Where"] == mount["Where"]


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="needs systemd-escape")
def test_escape_path_is_systemd_escape() -> None:
    paths = ["/mnt/fdfs", "/", "/srv/fdfs data/ü-1", "/.hidden/a.b", "//mnt//x/", "/a-b/c_d:e"]
    for path in paths:
        expected = subprocess.run(
            ["systemd-escape", "-p", path], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert escape_path(path) == expected, path


# ---------------------------------------------------------------- sd_notify


def _datagram_socket(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_notify_to_a_path_and_to_the_abstract_namespace(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with _datagram_socket(os.fspath(path)) as sock:
        assert notify("READY=1", environ={"NOTIFY_SOCKET": os.fspath(path)})
        assert sock.recv(4096) == b"READY=1"
    name = f"fdfsmount-test-{os.getpid()}"
    with _datagram_socket(b"\0" + name.encode()) as sock:
        assert notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


@pytest.mark.expect_log_warnings
def test_notify_without_a_manager_does_nothing(tmp_path: Path) -> None:
    assert not notify("READY=1", environ={})
    # A manager that went away is logged, never raised.
    assert not notify("READY=1", environ={"NOTIFY_SOCKET": os.fspath(tmp_path / "gone")})
    assert not notify("READY=1", environ={"NOTIFY_SOCKET": "relative/path"})


# ---------------------------------------------------------------- the daemon under Type=notify


def _client_run(cluster: Cluster, work):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        async with Client(cluster.trackers) as client:
            with trio.fail_after(60):
                return await work(client)

    return trio.run(main)


class Notifications:
    """The test's end of $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = _datagram_socket(os.fspath(path))

    def next(self, timeout: float, proc: MountProcess) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(0.2)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                if proc.process.poll() is not None:
                    raise AssertionError(f"daemon exited before notifying:\n{proc.log()}") from None
                if time.monotonic() > deadline:
                    raise AssertionError(f"no notification in {timeout}s:\n{proc.log()}") from None
                continue
            return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[Notifications]:
    notifications = Notifications(tmp_path / "notify.sock")
    try:
        yield notifications
    finally:
        notifications.close()


def start_daemon(
    cluster: Cluster,
    mountpoint: Path,
    notify_path: Path,
    options: list[str],
    env: dict[str, str] | None = None,
) -> MountProcess:
    mountpoint.mkdir(parents=True, exist_ok=True)
    log_path = mountpoint.with_name("daemon.log")
    env = {**os.environ, "NOTIFY_SOCKET": os.fspath(notify_path), **(env or {})}
    with open(log_path, "ab") as log_out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fdfsmount", ",".join(cluster.trackers), os.fspath(mountpoint),
             "-f", "-o", ",".join(options)],
            stdin=subprocess.DEVNULL, stdout=log_out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env,
        )  # fmt: skip
    return MountProcess(mountpoint, process, log_path)


def fuse_type(mountpoint: Path) -> str | None:
    target = os.path.realpath(mountpoint)
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[1] == target:
                return fields[2]
    return None


@pytest.mark.mount
def test_ready_only_once_the_mount_answers_and_stopping_on_sigterm(
    fdfs_cluster: Cluster, tmp_path: Path, notify_socket: Notifications
) -> None:
    if not fuse_available():
        pytest.skip("needs /dev/fuse and fusermount3")
    mountpoint = tmp_path / "mnt"
    proc = start_daemon(fdfs_cluster, mountpoint, notify_socket.path, ["timeout=10"])
    try:
        ready = notify_socket.next(60, proc)
        # At the moment READY=1 arrives, the mount is there and answers.
        assert ready.get("READY") == "1", ready
        assert fuse_type(mountpoint) == "fuse.fdfsmount"
        assert os.stat(mountpoint).st_dev != os.stat(tmp_path).st_dev
        assert "group1" in os.listdir(mountpoint)
        assert "Mounted" in ready.get("STATUS", "")
        os.kill(proc.pid, signal.SIGTERM)
        stopping = notify_socket.next(30, proc)
        assert stopping == {"STOPPING": "1"}
        assert proc.process.wait(30) == 0
        assert not is_mounted(mountpoint)
    finally:
        unmount(proc)


def test_no_ready_when_the_mount_cannot_start(tmp_path: Path, notify_socket: Notifications) -> None:
    """A daemon that cannot reach its cluster exits 1 and never says READY=1."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    env = {**os.environ, "NOTIFY_SOCKET": os.fspath(notify_socket.path)}
    done = subprocess.run(
        [sys.executable, "-m", "fdfsmount", "127.0.0.2:1", os.fspath(mountpoint), "-f",
         "-o", "timeout=2"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 1 and "cannot reach the FastDFS cluster" in done.stderr
    notify_socket.sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        notify_socket.sock.recv(4096)


@pytest.mark.mount
def test_sigterm_flushes_pending_writes(
    fdfs_cluster: Cluster, tmp_path: Path, notify_socket: Notifications
) -> None:
    """Data written to a still-open file is on the storage after SIGTERM."""
    if not fuse_available():
        pytest.skip("needs /dev/fuse and fusermount3")
    mountpoint = tmp_path / "mnt"
    # Writes stay buffered for a minute unless something flushes them.
    # Its own alias catalog: the name created here stays out of other tests' mounts.
    options = ["timeout=10", "write_idle=60", f"cache_dir={tmp_path / 'cache'}"]
    proc = start_daemon(fdfs_cluster, mountpoint, notify_socket.path, options)
    payload = os.urandom(200_000)
    try:
        assert notify_socket.next(60, proc).get("READY") == "1"
        alias = mountpoint / "group1" / f"flush-on-term-{os.getpid()}.log"
        fd = os.open(alias, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.write(fd, payload)
            file_id = os.getxattr(alias, "user.fdfs.file_id").decode()
            # Asked in-process: a child process would close its copy of `fd` at exec,
            # and that close flushes the writes.
            assert ask(os.fspath(mountpoint))["counters"]["pending_write_files"] == 1
            assert len(_client_run(fdfs_cluster, lambda c: c.download(file_id))) < len(payload)
            os.kill(proc.pid, signal.SIGTERM)  # while the file is still open
            assert notify_socket.next(30, proc) == {"STOPPING": "1"}
            assert proc.process.wait(60) == 0, proc.log()
        finally:
            # The daemon is gone, so close() cannot reach it: ENOTCONN is expected.
            with contextlib.suppress(OSError):
                os.close(fd)
    finally:
        unmount(proc)

    async def download_and_delete(client: Client) -> bytes:
        data = await client.download(file_id)
        await client.delete(file_id)
        return bytes(data)

    assert _client_run(fdfs_cluster, download_and_delete) == payload


@pytest.mark.expect_log_warnings
def test_readiness_waits_for_a_different_file_system(tmp_path: Path) -> None:
    """A plain directory never counts as the mount answering; the failure is reported."""
    from fdfsmount.sdnotify import when_mount_answers

    answered: list[bool] = []
    failures: list[str] = []
    (tmp_path / "mnt").mkdir()
    thread = when_mount_answers(
        os.fspath(tmp_path / "mnt"), lambda: answered.append(True), on_failure=failures.append,
        timeout=0.3,
    )  # fmt: skip
    thread.join(5)
    assert not answered and failures and "did not appear" in failures[0]
    answered.clear()
    failures.clear()
    thread = when_mount_answers(
        os.fspath(tmp_path / "gone"), lambda: answered.append(True), on_failure=failures.append
    )
    thread.join(5)
    assert not answered and "does not answer" in failures[0]


def test_sigterm_before_the_mount_is_up_gives_up_cleanly(tmp_path: Path) -> None:
    """A stop while the cluster is still being asked: exit 1 at once, nothing left behind."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    run_dir = tmp_path / "run"
    with socket.socket() as silent_tracker:  # accepts connections, never answers
        silent_tracker.bind(("127.0.0.2", 0))
        silent_tracker.listen()
        port = silent_tracker.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "fdfsmount", f"127.0.0.2:{port}", os.fspath(mountpoint),
             "-f", "-o", "timeout=30"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "FDFSMOUNT_RUNTIME_DIR": os.fspath(run_dir)},
        )  # fmt: skip
        try:
            try:
                wait_until(
                    lambda: any(run_dir.glob("*.sock")) or process.poll() is not None,
                    what="the status socket",
                )
            except AssertionError:
                process.kill()
                output = process.communicate()[0]
                raise AssertionError(f"no status socket; output: {output}") from None
            assert process.poll() is None, process.communicate()[0]
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 1 and "interrupted by SIGTERM" in output, output
    assert not is_mounted(mountpoint) and not list(run_dir.iterdir())


# ---------------------------------------------------------------- the watchdog


def test_watchdog_interval_follows_systemd_rules() -> None:
    from fdfsmount.sdnotify import watchdog_interval

    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 60.0
    assert watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}) == 0.5
    # Meant for another process (our parent, before a fork), or switched off.
    assert watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def _drain(sock: socket.socket) -> list[bytes]:
    got = []
    sock.setblocking(False)
    while True:
        try:
            got.append(sock.recv(4096))
        except BlockingIOError:
            return got


def wedge_the_loop(seconds: float) -> None:
    """Block the calling thread -- called from a trio task, the whole event loop."""
    time.sleep(seconds)


def test_a_wedged_event_loop_sends_no_watchdog_pings(tmp_path: Path) -> None:
    """Pings come from the event loop: none before the mount serves, none while the loop is
    blocked, and they resume when it runs again."""
    from fdfsmount.managed import feed_watchdog

    path = tmp_path / "notify.sock"
    environ = {"NOTIFY_SOCKET": os.fspath(path)}
    with _datagram_socket(os.fspath(path)) as sock:

        async def wait_for_ping() -> None:
            await trio.lowlevel.wait_readable(sock)
            got = _drain(sock)
            assert got and set(got) == {b"WATCHDOG=1"}

        async def main() -> None:
            serving = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: feed_watchdog(0.05, serving, environ=environ))
                await trio.sleep(0.2)
                assert _drain(sock) == []  # not serving yet: no pings
                serving.set()
                with trio.fail_after(10):
                    await wait_for_ping()
                    await wait_for_ping()  # and again
                _drain(sock)
                wedge_the_loop(0.5)  # ten ping intervals pass...
                assert _drain(sock) == []  # ...and not one ping went out
                with trio.fail_after(10):
                    await wait_for_ping()  # the loop runs again: so do the pings
                nursery.cancel_scope.cancel()

        trio.run(main)


@pytest.mark.mount
def test_the_daemon_feeds_the_watchdog_only_while_it_runs(
    fdfs_cluster: Cluster, tmp_path: Path, notify_socket: Notifications
) -> None:
    """Under WatchdogSec= the mounted daemon pings; stopped (SIGSTOP), it does not."""
    if not fuse_available():
        pytest.skip("needs /dev/fuse and fusermount3")
    mountpoint = tmp_path / "mnt"
    proc = start_daemon(
        fdfs_cluster, mountpoint, notify_socket.path, ["timeout=10"],
        env={"WATCHDOG_USEC": "400000"},
    )  # fmt: skip
    try:
        assert notify_socket.next(60, proc).get("READY") == "1"
        assert notify_socket.next(30, proc) == {"WATCHDOG": "1"}
        assert notify_socket.next(30, proc) == {"WATCHDOG": "1"}
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            _drain(notify_socket.sock)  # what was sent before it stopped
            time.sleep(1.0)  # five ping intervals
            assert _drain(notify_socket.sock) == []
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert notify_socket.next(30, proc) == {"WATCHDOG": "1"}
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.process.wait(30) == 0
    finally:
        unmount(proc)


def test_ending_the_fuse_loop_after_the_unmount_is_a_no_op() -> None:
    """A readiness check that fails because a signal unmounted first asks to end the
    loop after the session is closed: that must not reach pyfuse3 (SIGSEGV)."""
    from fdfsmount.mount import end_fuse_loop

    assert end_fuse_loop() is False  # no session open in this process
