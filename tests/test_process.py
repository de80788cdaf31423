"""harness.process: children start bounded, die by process group, and never leak."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from waiting import wait_until

from harness.process import (
    ChildExited,
    ChildProcess,
    StartupTimeout,
    live_children,
    pick_free_port,
    port_is_free,
    port_is_listening,
    processes_mentioning,
)

pytestmark = pytest.mark.processes  # starts servers, mounts or programs


def python_child(code: str, tmp_path: Path, **kwargs: object) -> ChildProcess:
    # A unique marker in argv lets the test find the child (and its children) in /proc.
    marker = f"harness-test-{uuid.uuid4().hex}"
    return ChildProcess(
        [sys.executable, "-c", code, marker],
        name="dummy",
        log_dir=tmp_path / "node",
        **kwargs,  # type: ignore[arg-type]
    )


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def process_state(pid: int) -> str:
    return process_state_of(f"/proc/{pid}/stat")


READY_THEN_SLEEP = "print('READY 1', flush=True); import time; time.sleep(60)"


def test_ready_line_then_terminate(tmp_path: Path) -> None:
    child = python_child(READY_THEN_SLEEP, tmp_path)
    child.start()
    assert child.ready_match is not None and child.ready_match.group(1) == "1"
    pid = child.pid
    assert pid is not None and child.running
    assert os.getpgid(pid) == pid, "child must lead its own process group"
    assert os.getsid(pid) == pid, "child must lead its own session"
    assert child in live_children()
    child.terminate()
    assert not child.running
    assert child.returncode == -signal.SIGTERM
    assert_gone(pid)
    assert child not in live_children()
    assert (tmp_path / "node" / "stdout.log").read_text() == "READY 1\n"
    child.terminate()  # idempotent


def test_child_dying_early_reports_stderr(tmp_path: Path) -> None:
    child = python_child(
        "import sys; sys.stderr.write('boom: bad config\\n'); sys.exit(3)", tmp_path
    )
    with pytest.raises(ChildExited) as info:
        child.start()
    assert "status 3" in str(info.value)
    assert "boom: bad config" in str(info.value)
    assert not info.value.address_in_use
    assert child not in live_children()


def test_startup_timeout_kills_child(tmp_path: Path) -> None:
    child = python_child("import time; time.sleep(60)", tmp_path, startup_timeout=0.5)
    with pytest.raises(StartupTimeout):
        child.start()
    assert child.pid is not None
    assert_gone(child.pid)


@pytest.mark.expect_log_warnings
def test_sigterm_ignored_escalates_to_sigkill(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('READY 7', flush=True); time.sleep(60)"
    )
    child = python_child(code, tmp_path, terminate_timeout=0.5)
    child.start()
    assert child.pid is not None
    child.terminate()
    assert child.returncode == -signal.SIGKILL
    assert_gone(child.pid)


def test_grandchildren_die_with_the_group(tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', sys.argv[1]]);"
        "print('READY 1', flush=True); time.sleep(60)"
    )
    child = python_child(code, tmp_path)
    child.start()
    marker = child.argv[-1]
    def child_and_grandchild() -> list[int] | None:
        found = processes_mentioning(marker)
        return found if len(found) == 2 else None

    family = wait_until(child_and_grandchild, timeout=5, what="the child and its grandchild")
    assert family is not None
    child.terminate()
    for pid in family:
        assert_gone(pid)
    assert processes_mentioning(marker) == []


def test_stop_cont_kill(tmp_path: Path) -> None:
    child = python_child(READY_THEN_SLEEP, tmp_path)
    with child:
        assert child.pid is not None
        pid: int = child.pid
        child.stop()
        wait_until(lambda: process_state(pid) == "T", what="the child to stop")
        child.cont()
        wait_until(lambda: process_state(pid) == "S", what="the child to sleep again")
        child.kill()
        assert child.returncode == -signal.SIGKILL
        assert_gone(pid)
        # A killed child can be started again.
        child.start()
        assert child.running and child.pid != pid
        pid = child.pid
    assert pid is not None
    assert_gone(pid)


BUSY_THREADS = (
    "import threading, time\n"
    "def spin():\n"
    "    while True: pass\n"
    "for _ in range(3): threading.Thread(target=spin, daemon=True).start()\n"
    "print('READY 1', flush=True); time.sleep(60)"
)


def test_stop_returns_once_every_thread_is_frozen(tmp_path: Path) -> None:
    # Threads busy on the CPUs take a moment to act on SIGSTOP; a node said to be
    # stopped must not answer a request sent right after.
    child = python_child(BUSY_THREADS, tmp_path)
    with child:
        assert child.pid is not None
        pid: int = child.pid
        for _ in range(20):
            child.stop()
            states = {
                process_state_of(f"/proc/{pid}/task/{tid}/stat")
                for tid in os.listdir(f"/proc/{pid}/task")
            }
            assert states == {"T"}
            child.cont()


def process_state_of(stat_path: str) -> str:
    return Path(stat_path).read_text().rsplit(")", 1)[1].split()[0]


def test_stopped_child_still_terminates(tmp_path: Path) -> None:
    child = python_child(READY_THEN_SLEEP, tmp_path, terminate_timeout=5)
    child.start()
    child.stop()
    child.terminate()
    # Not escalated to SIGKILL: the SIGTERM was followed by a SIGCONT, so it took effect.
    assert child.returncode == -signal.SIGTERM


def test_ready_probe(tmp_path: Path) -> None:
    port = pick_free_port("127.0.0.1")
    code = (
        "import socket, sys, time; s = socket.socket();"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
        f"time.sleep(0.3); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)"
    )

    def probe() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    child = python_child(code, tmp_path, ready_line=None, ready_probe=probe)
    with child:
        assert port_is_listening("127.0.0.1", port)
    assert not port_is_listening("127.0.0.1", port)


def test_address_in_use_is_recognised(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code = f"import socket; socket.socket().bind(('127.0.0.1', {port}))"
        with pytest.raises(ChildExited) as info:
            python_child(code, tmp_path).start()
    assert info.value.address_in_use


def test_pick_free_port() -> None:
    ports = {pick_free_port("127.0.0.2") for _ in range(20)}
    assert len(ports) == 20
    assert all(port_is_free("127.0.0.2", p) for p in ports)
    with pytest.raises(ValueError):
        pick_free_port("0.0.0.0")


def test_children_die_with_a_sigkilled_owner(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a child started from a thread that ended still dies with its owner."""
    script = (
        "import sys, threading, time\n"
        "from pathlib import Path\n"
        "from harness.process import ChildProcess\n"
        "child = ChildProcess([sys.executable, '-c', sys.argv[2], sys.argv[3]], name='c',\n"
        "                     log_dir=Path(sys.argv[1]))\n"
        "t = threading.Thread(target=child.start)\n"
        "t.start(); t.join()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    marker = f"harness-test-{uuid.uuid4().hex}"
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "node"), READY_THEN_SLEEP, marker],
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        try:
            assert owner.stdout is not None
            pid = int(owner.stdout.readline())
            os.kill(pid, 0)  # alive although the thread that started it ended
            owner.kill()
            owner.wait(timeout=30)
        finally:
            owner.kill()
    wait_until(
        lambda: not processes_mentioning(marker),
        timeout=20,
        what="the child to die with its SIGKILLed owner",
    )
